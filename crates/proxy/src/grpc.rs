//! The gRPC transport of proxies (`grpc://host:port` endpoints): a unary
//! call of `centrifugal.centrifugo.proxy.CentrifugoProxy`, one method per
//! proxy kind, over one HTTP/2 connection per proxy (tonic, rustls with the
//! aws-lc-rs provider when `grpc.tls.enabled`).
//!
//! The call is the same JSON as over HTTP, transcoded into the protobuf
//! request of its kind; the protobuf response is transcoded back into the
//! JSON answer envelope and read by [`wire::answer`], so both transports
//! share one set of shapes and range checks (crates/proxy/src/message.rs).
//!
//! The connection is made lazily, at the first call, and again after it
//! breaks: herald starts while the backend is down, and such a call fails
//! as "connection failed".

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf as _, BufMut as _, Bytes};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::config::{GrpcTls, ProxyEndpoint};
use crate::http::{ProxyBuildError, MAX_ANSWER};
use crate::message;
use crate::signing::ProxySigner;
use crate::wire::{self, Answer, Failure, ProxyKind};

/// The client of one gRPC proxy endpoint. Clones share the connection.
#[derive(Clone)]
pub struct GrpcProxy {
    endpoint: Endpoint,
    /// Made at the first call: tonic spawns the connection's task on the
    /// Tokio runtime of whoever makes it, and [`GrpcProxy::new`] may run
    /// outside one.
    channel: Arc<OnceLock<Channel>>,
    timeout: Duration,
    compression: bool,
    /// `grpc.static_metadata`, then the credentials pair: sent with every
    /// call.
    static_metadata: Arc<[(AsciiMetadataKey, AsciiMetadataValue)]>,
    credentials: Option<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// Signs every call (`proxy_signing`): the metadata
    /// `x-herald-signature` over `POST`, the method's path and the
    /// protobuf request bytes.
    signer: ProxySigner,
}

impl GrpcProxy {
    /// Checks the endpoint, the metadata and the TLS files; connects at the
    /// first call.
    pub fn new(config: &ProxyEndpoint) -> Result<Self, ProxyBuildError> {
        let fail = |reason: String| ProxyBuildError::new(&config.endpoint, reason);
        let authority = config
            .endpoint
            .strip_prefix("grpc://")
            .ok_or_else(|| fail("not a grpc://host:port endpoint".into()))?;
        let options = &config.grpc;
        let scheme = if options.tls.enabled { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| fail(e.to_string()))?
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true);
        if options.tls.enabled {
            endpoint = endpoint
                .tls_config(client_tls(&options.tls).map_err(fail)?)
                .map_err(|e| fail(format!("grpc.tls: {e}")))?;
        }
        let static_metadata = options
            .static_metadata
            .iter()
            .map(|(name, value)| {
                pair(name, value).map_err(|e| fail(format!("grpc.static_metadata: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = match options.credentials_key.is_empty() {
            true => None,
            false => Some(
                pair(&options.credentials_key, &options.credentials_value)
                    .map_err(|e| fail(format!("grpc.credentials_key: {e}")))?,
            ),
        };
        Ok(Self {
            endpoint,
            channel: Arc::default(),
            timeout: config.timeout,
            compression: options.compression,
            static_metadata: static_metadata.into(),
            credentials,
            signer: ProxySigner::default(),
        })
    }

    /// Signs every call with `signer`'s active key (none: unsigned).
    pub fn with_signer(mut self, signer: ProxySigner) -> Self {
        self.signer = signer;
        self
    }

    /// Calls the backend's method of `kind` with `request` (the JSON call of
    /// an HTTP proxy) and reads the answer, within the proxy's timeout.
    /// `metadata` is forwarded from the client's request (the proxy's
    /// `http_headers`/`grpc_metadata` allow-list, applied by the caller);
    /// names gRPC reserves and values metadata cannot carry are left out.
    pub async fn call<R: Serialize, T: DeserializeOwned>(
        &self,
        kind: ProxyKind,
        request: &R,
        metadata: &[(String, String)],
    ) -> Result<Answer<T>, Failure> {
        let call = serde_json::to_vec(request).map_err(|e| Failure::Invalid(e.to_string()))?;
        let message = message::request(kind, &call)?;
        let response = tokio::time::timeout(self.timeout, self.unary(kind, message, metadata))
            .await
            .map_err(|_| Failure::Transport("timed out".into()))??;
        wire::answer(&message::envelope(kind, &response)?)
    }

    async fn unary(
        &self,
        kind: ProxyKind,
        message: Vec<u8>,
        metadata: &[(String, String)],
    ) -> Result<Bytes, Failure> {
        let channel = self
            .channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone();
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_ANSWER);
        if self.compression {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = self.signer.sign("POST", method(kind), &message, now_unix);
        let mut request = tonic::Request::new(Bytes::from(message));
        // Tells the backend the deadline (`grpc-timeout`).
        request.set_timeout(self.timeout);
        self.fill(request.metadata_mut(), metadata);
        // Only herald's signature goes out: a forwarded or static one of
        // the same name is replaced or dropped.
        let key = AsciiMetadataKey::from_static(SIGNATURE_METADATA);
        request.metadata_mut().remove(SIGNATURE_METADATA);
        if let Some((_, value)) = signature {
            if let Ok(value) = AsciiMetadataValue::try_from(value) {
                request.metadata_mut().insert(key, value);
            }
        }
        grpc.unary(request, PathAndQuery::from_static(method(kind)), RawCodec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(failure_of)
    }

    /// Static metadata, then the forwarded (which win, as in Centrifugo),
    /// then the credentials (which nothing forwarded replaces).
    fn fill(&self, map: &mut MetadataMap, forwarded: &[(String, String)]) {
        for (name, value) in self.static_metadata.iter() {
            map.insert(name.clone(), value.clone());
        }
        for (name, value) in forwarded {
            if let Ok((name, value)) = pair(name, value) {
                map.insert(name, value);
            }
        }
        if let Some((name, value)) = &self.credentials {
            map.insert(name.clone(), value.clone());
        }
    }
}

/// The signature's metadata name: the HTTP header's, lowercase as gRPC
/// metadata must be.
const SIGNATURE_METADATA: &str = "x-herald-signature";

/// The path of the method that serves `kind`.
fn method(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Connect => "/centrifugal.centrifugo.proxy.CentrifugoProxy/Connect",
        ProxyKind::Refresh => "/centrifugal.centrifugo.proxy.CentrifugoProxy/Refresh",
        ProxyKind::Subscribe => "/centrifugal.centrifugo.proxy.CentrifugoProxy/Subscribe",
        ProxyKind::Publish => "/centrifugal.centrifugo.proxy.CentrifugoProxy/Publish",
        ProxyKind::SubRefresh => "/centrifugal.centrifugo.proxy.CentrifugoProxy/SubRefresh",
        ProxyKind::Rpc => "/centrifugal.centrifugo.proxy.CentrifugoProxy/RPC",
    }
}

/// Headers HTTP/2 or gRPC own; a forwarded or static one of these names
/// would break the call.
const RESERVED: [&str; 8] = [
    "content-type",
    "te",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// One metadata entry: a lower-cased ASCII name that is not reserved and
/// not binary (`-bin`), and a value of visible ASCII.
fn pair(name: &str, value: &str) -> Result<(AsciiMetadataKey, AsciiMetadataValue), String> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("grpc-") || RESERVED.contains(&lower.as_str()) {
        return Err(format!("{name:?} is a name gRPC reserves"));
    }
    let key = AsciiMetadataKey::from_bytes(lower.as_bytes())
        .map_err(|_| format!("{name:?} is not an ASCII metadata name"))?;
    let value = AsciiMetadataValue::try_from(value)
        .map_err(|_| format!("the value of {name:?} is not visible ASCII"))?;
    Ok((key, value))
}

/// The TLS of the connection: the server verified against `server_ca_pem`
/// or the system roots, a client certificate when `cert_pem` and `key_pem`
/// are set.
fn client_tls(tls: &GrpcTls) -> Result<ClientTlsConfig, String> {
    let mut config = ClientTlsConfig::new();
    config = match tls.server_ca_pem.is_empty() {
        true => config.with_native_roots(),
        false => config.ca_certificate(Certificate::from_pem(pem(
            &tls.server_ca_pem,
            "server_ca_pem",
        )?)),
    };
    match (tls.cert_pem.is_empty(), tls.key_pem.is_empty()) {
        (true, true) => {}
        (false, false) => {
            let cert = pem(&tls.cert_pem, "cert_pem")?;
            let key = pem(&tls.key_pem, "key_pem")?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        _ => return Err("grpc.tls.cert_pem and grpc.tls.key_pem go together".into()),
    }
    if !tls.server_name.is_empty() {
        config = config.domain_name(tls.server_name.clone());
    }
    Ok(config)
}

/// A PEM setting: the PEM text itself, or the path of a file holding it.
fn pem(value: &str, key: &str) -> Result<Vec<u8>, String> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|e| format!("grpc.tls.{key} {value}: {e}"))
}

/// The prefix of tonic's status for an answer over the decoding limit
/// (tonic's codec/decode.rs; a test pins it).
const TOO_LARGE: &str = "Error, decoded message length too large";

/// Why a call got no response message.
fn failure_of(status: Status) -> Failure {
    let mut source = std::error::Error::source(&status);
    let local = source.is_some();
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return Failure::Transport("connection failed".into());
        }
        if error.is::<tonic::TimeoutExpired>() {
            return Failure::Transport("timed out".into());
        }
        source = error.source();
    }
    // The backend enforcing the deadline herald sent (`grpc-timeout`):
    // grpc-go and grpcio answer DEADLINE_EXCEEDED, tonic CANCELLED.
    if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) {
        return Failure::Transport("timed out".into());
    }
    if status.message().starts_with(TOO_LARGE) {
        return Failure::Invalid(format!("answer larger than {MAX_ANSWER} bytes"));
    }
    if local {
        // The connection broke or spoke something else than gRPC.
        return Failure::Transport(status.message().to_owned());
    }
    Failure::GrpcStatus(status.code() as i32)
}

/// Messages as bytes, both ways: [`message`] does the protobuf.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use herald_protocol::RawJson;
    use prost::Message as _;
    use tonic::body::Body;
    use tonic::codegen::{http, BoxFuture, Service};
    use tonic::server::{Grpc, NamedService, UnaryService};

    use super::*;
    use crate::config::GrpcOptions;
    use crate::message::{
        ConnectRequest, ConnectResponse, ConnectResult, Disconnect, Error, PublishResponse,
        PublishResult, RpcRequest, RpcResponse, SubscribeResponse,
    };
    use crate::wire::{ConnectCall, ConnectGrant, RpcCall, RpcReply};

    /// What the test backend saw of a call: its method and metadata.
    type Seen = Arc<Mutex<Vec<(String, MetadataMap)>>>;

    /// A backend on tonic's server parts and herald's own messages:
    /// Connect answers a result for the `session` cookie, RPC an error 1000,
    /// Subscribe a disconnect 4501, Refresh too late, Publish 2 MB,
    /// SubRefresh the status PERMISSION_DENIED.
    #[derive(Clone, Default)]
    struct Backend {
        seen: Seen,
    }

    impl NamedService for Backend {
        const NAME: &'static str = "centrifugal.centrifugo.proxy.CentrifugoProxy";
    }

    impl Service<http::Request<Body>> for Backend {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let method = Method {
                name: request
                    .uri()
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                seen: self.seen.clone(),
            };
            Box::pin(async move {
                let mut grpc = Grpc::new(RawCodec)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip);
                Ok(grpc.unary(method, request).await)
            })
        }
    }

    struct Method {
        name: String,
        seen: Seen,
    }

    impl UnaryService<Bytes> for Method {
        type Response = Bytes;
        type Future = BoxFuture<tonic::Response<Bytes>, Status>;

        fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
            let name = self.name.clone();
            self.seen
                .lock()
                .unwrap()
                .push((name.clone(), request.metadata().clone()));
            let cookie = request
                .metadata()
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = request.into_inner();
            Box::pin(async move {
                let answer = match name.as_str() {
                    "Connect" => {
                        let call = ConnectRequest::decode(body).unwrap();
                        ConnectResponse {
                            result: Some(ConnectResult {
                                user: cookie.strip_prefix("session=").unwrap_or("").into(),
                                expire_at: 9,
                                info: call.data,
                                channels: vec![call.name],
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                        .encode_to_vec()
                    }
                    "RPC" => {
                        let call = RpcRequest::decode(body).unwrap();
                        RpcResponse {
                            error: Some(Error {
                                code: 1000,
                                message: call.method,
                                temporary: false,
                            }),
                            ..Default::default()
                        }
                        .encode_to_vec()
                    }
                    "Subscribe" => SubscribeResponse {
                        disconnect: Some(Disconnect {
                            code: 4501,
                            reason: "bye".into(),
                        }),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    "Refresh" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Vec::new()
                    }
                    "Publish" => PublishResponse {
                        result: Some(PublishResult {
                            data: format!("\"{}\"", "x".repeat(2 << 20)).into_bytes(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    _ => return Err(Status::permission_denied("no")),
                };
                Ok(tonic::Response::new(Bytes::from(answer)))
            })
        }
    }

    async fn start(backend: Backend) -> SocketAddr {
        start_with(tonic::transport::Server::builder(), backend).await
    }

    async fn start_with(mut server: tonic::transport::Server, backend: Backend) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(server.add_service(backend).serve_with_incoming(incoming));
        addr
    }

    fn endpoint(addr: SocketAddr, grpc: GrpcOptions) -> ProxyEndpoint {
        ProxyEndpoint {
            endpoint: format!("grpc://{addr}"),
            timeout: Duration::from_millis(500),
            grpc,
            ..Default::default()
        }
    }

    fn rpc_call(method: &str) -> RpcCall<'_> {
        RpcCall {
            caller: crate::wire::Caller {
                client: "c",
                transport: "websocket",
                protocol: "json",
                encoding: "json",
                user: Some("u"),
                meta: None,
            },
            method,
            data: None,
        }
    }

    #[tokio::test]
    async fn calls_are_signed_over_the_method_and_the_request_bytes() {
        let backend = Backend::default();
        let seen = backend.seen.clone();
        let addr = start(backend).await;
        let keyring = crate::signing::ProxySigningKeyring::new(
            "k1",
            vec![crate::signing::ProxySigningKey {
                id: "k1".into(),
                secret: zeroize::Zeroizing::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            }],
        )
        .unwrap();
        let signer = ProxySigner::new(keyring);
        let proxy = GrpcProxy::new(&endpoint(addr, GrpcOptions::default()))
            .unwrap()
            .with_signer(signer.clone());
        let call = rpc_call("ns:m");
        let forged = [("x-herald-signature".to_owned(), "v1,kid=client".to_owned())];
        let _: Result<Answer<RpcReply>, _> = proxy.call(ProxyKind::Rpc, &call, &forged).await;
        let (_, metadata) = seen.lock().unwrap().pop().unwrap();
        let values: Vec<_> = metadata.get_all("x-herald-signature").iter().collect();
        assert_eq!(values.len(), 1, "only herald's: {values:?}");
        let header = values[0].to_str().unwrap();
        let ts: u64 = header
            .split(',')
            .find_map(|part| part.strip_prefix("ts="))
            .unwrap()
            .parse()
            .unwrap();
        let bytes = message::request(ProxyKind::Rpc, &serde_json::to_vec(&call).unwrap()).unwrap();
        let (_, want) = signer
            .sign("POST", method(ProxyKind::Rpc), &bytes, ts)
            .unwrap();
        assert_eq!(
            header, want,
            "over POST, the method's path and the protobuf bytes"
        );
    }

    #[tokio::test]
    async fn a_backend_answers_over_grpc() {
        let backend = Backend::default();
        let seen = backend.seen.clone();
        let addr = start(backend).await;
        let options = GrpcOptions {
            credentials_key: "authorization".into(),
            credentials_value: "Bearer k".into(),
            static_metadata: BTreeMap::from([
                ("x-static".to_owned(), "s".to_owned()),
                ("cookie".to_owned(), "session=static".to_owned()),
            ]),
            ..Default::default()
        };
        for compression in [false, true] {
            let proxy = GrpcProxy::new(&endpoint(
                addr,
                GrpcOptions {
                    compression,
                    ..options.clone()
                },
            ))
            .unwrap();
            let data = RawJson::from_str(r#"{"hello": 1}"#).unwrap();
            let connect = ConnectCall {
                caller: crate::wire::Caller {
                    client: "c",
                    transport: "websocket",
                    protocol: "json",
                    encoding: "json",
                    user: None,
                    meta: None,
                },
                name: "js",
                version: "",
                data: Some(crate::wire::Outgoing {
                    payload: &data,
                    binary_encoding: false,
                }),
            };
            let forwarded = [
                ("Cookie".to_owned(), "session=alice".to_owned()),
                // Neither may replace what gRPC and the proxy own.
                ("Content-Type".to_owned(), "text/plain".to_owned()),
                ("Authorization".to_owned(), "Bearer client".to_owned()),
            ];
            let answer: Answer<ConnectGrant> = proxy
                .call(ProxyKind::Connect, &connect, &forwarded)
                .await
                .unwrap();
            let Answer::Result(grant) = answer else {
                panic!("{answer:?}")
            };
            assert_eq!((grant.user.as_str(), grant.expire_at), ("alice", Some(9)));
            assert_eq!(
                grant.info.unwrap().into_json().unwrap().get(),
                r#"{"hello": 1}"#
            );
            assert_eq!(grant.channels, ["js"]);
            let (method, metadata) = seen.lock().unwrap().pop().unwrap();
            assert_eq!(method, "Connect");
            let value = |name: &str| metadata.get(name).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(value("cookie").as_deref(), Some("session=alice"));
            assert_eq!(value("x-static").as_deref(), Some("s"));
            assert_eq!(value("authorization").as_deref(), Some("Bearer k"));
            assert!(value("grpc-timeout").is_some());
        }

        let proxy = GrpcProxy::new(&endpoint(addr, GrpcOptions::default())).unwrap();
        let answer: Result<Answer<RpcReply>, _> =
            proxy.call(ProxyKind::Rpc, &rpc_call("ns:m"), &[]).await;
        assert_eq!(
            answer,
            Ok(Answer::Error {
                code: 1000,
                message: "ns:m".into(),
                temporary: false
            })
        );
        let subscribe = serde_json::json!({"client": "c", "user": "u", "channel": "news"});
        let answer: Result<Answer<serde_json::Value>, _> =
            proxy.call(ProxyKind::Subscribe, &subscribe, &[]).await;
        assert_eq!(
            answer,
            Ok(Answer::Disconnect {
                code: 4501,
                reason: "bye".into()
            })
        );
    }

    #[tokio::test]
    async fn unexpected_failures_are_named() {
        let addr = start(Backend::default()).await;
        let proxy = GrpcProxy::new(&endpoint(addr, GrpcOptions::default())).unwrap();
        let call = serde_json::json!({"client": "c", "user": "u"});

        let started = Instant::now();
        let late: Result<Answer<serde_json::Value>, _> =
            proxy.call(ProxyKind::Refresh, &call, &[]).await;
        assert_eq!(late, Err(Failure::Transport("timed out".into())));
        assert_eq!(late.unwrap_err().label(), "timeout");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        let big: Result<Answer<serde_json::Value>, _> =
            proxy.call(ProxyKind::Publish, &call, &[]).await;
        assert_eq!(
            big,
            Err(Failure::Invalid(format!(
                "answer larger than {MAX_ANSWER} bytes"
            )))
        );

        let denied: Result<Answer<serde_json::Value>, _> =
            proxy.call(ProxyKind::SubRefresh, &call, &[]).await;
        assert_eq!(
            denied,
            Err(Failure::GrpcStatus(Code::PermissionDenied as i32))
        );
        assert_eq!(denied.unwrap_err().label(), "status");

        // The backend down: the port of a listener just closed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let down = GrpcProxy::new(&endpoint(closed_addr, GrpcOptions::default())).unwrap();
        let refused: Result<Answer<RpcReply>, _> =
            down.call(ProxyKind::Rpc, &rpc_call("m"), &[]).await;
        assert_eq!(refused, Err(Failure::Transport("connection failed".into())));
        assert_eq!(refused.unwrap_err().label(), "unreachable");
    }

    #[tokio::test]
    async fn a_backend_over_tls() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["backend.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(Identity::from_pem(cert.pem(), key.serialize_pem()));
        let server = tonic::transport::Server::builder().tls_config(tls).unwrap();
        let addr = start_with(server, Backend::default()).await;
        let call = rpc_call("m");
        let trusted = GrpcOptions {
            tls: GrpcTls {
                enabled: true,
                server_ca_pem: cert.pem(),
                server_name: "backend.test".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let proxy = GrpcProxy::new(&endpoint(addr, trusted.clone())).unwrap();
        let answer: Result<Answer<RpcReply>, _> = proxy.call(ProxyKind::Rpc, &call, &[]).await;
        assert!(
            matches!(answer, Ok(Answer::Error { code: 1000, .. })),
            "{answer:?}"
        );

        // The system roots do not know the backend's CA; nor does a name
        // other than the certificate's pass.
        let mut untrusted = trusted.clone();
        untrusted.tls.server_ca_pem.clear();
        let mut misnamed = trusted;
        misnamed.tls.server_name = "other.test".into();
        for options in [untrusted, misnamed] {
            let proxy = GrpcProxy::new(&endpoint(addr, options)).unwrap();
            let answer: Result<Answer<RpcReply>, _> = proxy.call(ProxyKind::Rpc, &call, &[]).await;
            assert_eq!(answer, Err(Failure::Transport("connection failed".into())));
        }
    }

    #[test]
    fn bad_settings_are_build_errors() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        // Outside a runtime: nothing is spawned before the first call.
        assert!(GrpcProxy::new(&endpoint(addr, GrpcOptions::default())).is_ok());
        for options in [
            GrpcOptions {
                static_metadata: BTreeMap::from([("grpc-timeout".to_owned(), "1S".to_owned())]),
                ..Default::default()
            },
            GrpcOptions {
                static_metadata: BTreeMap::from([("x-key".to_owned(), "a\nb".to_owned())]),
                ..Default::default()
            },
            GrpcOptions {
                credentials_key: "x-token-bin".into(),
                ..Default::default()
            },
            GrpcOptions {
                tls: GrpcTls {
                    enabled: true,
                    server_ca_pem: "/nonexistent/ca.pem".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(
                GrpcProxy::new(&endpoint(addr, options.clone())).is_err(),
                "{options:?}"
            );
        }
        let http = ProxyEndpoint {
            endpoint: "http://127.0.0.1:1/".into(),
            ..Default::default()
        };
        assert!(GrpcProxy::new(&http).is_err());
    }
}
