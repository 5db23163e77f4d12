//! `uni_grpc`: the unidirectional stream over gRPC, on its own port —
//! `centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume(ConnectRequest)
//! returns (stream Push)` (schema: crates/protocol/proto/unistream.proto).
//!
//! The service is written by hand on tonic's server parts (no code
//! generation, so no `protoc`): a codec that decodes the request with
//! herald-protocol and writes each Push as the bytes already encoded for
//! the node's protobuf subscribers (one encoding per publication), and a
//! stream that reads the connection's Outbox.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, BufMut as _, Bytes};
use futures_channel::mpsc;
use futures_util::Stream;
use herald_protocol::protobuf::{decode_connect_request, delimited_parts, push_of_reply};
use herald_protocol::{ConnectRequest, Format};
use tonic::body::Body as ResponseBody;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::Status;

use crate::config::{GrpcTlsConfig, UniGrpcConfig};
use crate::conn::abort::AbortHandle;
use crate::conn::open::{open, Opened};
use crate::conn::session::{connect_command, Opening};
use crate::error::GatewayError;
use crate::format::{self, ClientMessage};
use crate::metrics;
use crate::node::{IpSlot, Node};
use crate::outbox::{Next, Outbox};
use crate::transport::Transport;

const SERVICE: &str = "centrifugal.centrifugo.unistream.CentrifugoUniStream";
const CONSUME: &str = "/centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume";

/// A running gRPC server (`uni_grpc`, `grpc_api`): where it listens, and how to stop it.
pub(crate) struct GrpcServer {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
}

/// Binds and starts the server on the current actix system. Sessions are
/// created on this arbiter (actors live on an actix arbiter; tonic's tasks
/// are plain tokio tasks).
pub(crate) fn start(node: Arc<Node>, config: &UniGrpcConfig) -> Result<GrpcServer, GatewayError> {
    let (listener, addr, mut builder) =
        bind("uni_grpc", &config.address, config.port, &config.tls)?;
    let admit_node = node.clone();
    let service = UniStream {
        node,
        arbiter: actix_rt::Arbiter::current(),
        max_message: config.max_receive_message_size,
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let router = builder.add_service(service);
    actix_web::rt::spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => return tracing::error!(error = %e, "uni_grpc cannot listen"),
        };
        let incoming = admitted(listener, admit_node);
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "uni_grpc server failed");
        }
    });
    tracing::info!(%addr, tls = config.tls.enabled, "uni_grpc listening");
    Ok(GrpcServer { addr, stop })
}

/// Binds `address:port` for a gRPC server and builds the server, with TLS
/// when `tls.enabled`; `section` names the config section in errors.
pub(crate) fn bind(
    section: &str,
    address: &str,
    port: u16,
    tls: &GrpcTlsConfig,
) -> Result<(std::net::TcpListener, SocketAddr, tonic::transport::Server), GatewayError> {
    let listener =
        std::net::TcpListener::bind((address, port)).map_err(|source| GatewayError::Bind {
            addr: format!("{address}:{port}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: section.into(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| GatewayError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let mut builder = tonic::transport::Server::builder();
    if tls.enabled {
        let read = |key: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| GatewayError::Config(format!("{section}.tls.{key} {path}: {e}")))
        };
        let cert = read("cert_pem_file", &tls.cert_pem_file)?;
        let key = read("key_pem_file", &tls.key_pem_file)?;
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        builder = builder
            .tls_config(tls)
            .map_err(|e| GatewayError::Config(format!("{section}.tls: {e}")))?;
    }
    Ok((listener, addr, builder))
}

/// The accepted connections, each holding its place in its address's
/// count (`client.connection_limit_per_ip`, as on the public listener); one
/// over the limit is closed at once.
fn admitted(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
) -> impl Stream<Item = std::io::Result<GrpcConnection>> {
    use futures_util::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let admitted = match accepted {
            Err(e) => Some(Err(e)),
            Ok(stream) => {
                let peer = stream.peer_addr().map(|a| a.ip());
                match peer.map(|ip| node.take_ip_slot(ip)) {
                    Ok(Ok(slot)) => Some(Ok(GrpcConnection {
                        stream,
                        _slot: slot,
                        abort: AbortHandle::default(),
                    })),
                    Ok(Err(())) => {
                        metrics::address_limit_refusal();
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            }
        };
        std::future::ready(admitted)
    })
}

/// One gRPC connection, its place in the per-address count, and its abort
/// switch (a stream whose reader stopped drops the connection after the
/// linger, as on the public listener).
struct GrpcConnection {
    stream: tokio::net::TcpStream,
    _slot: Option<IpSlot>,
    abort: AbortHandle,
}

/// What a `Consume` call learns of its connection (tonic puts it in the
/// request's extensions; under TLS inside `TlsConnectInfo`).
#[derive(Clone)]
struct GrpcConnectInfo {
    abort: AbortHandle,
}

impl tonic::transport::server::Connected for GrpcConnection {
    type ConnectInfo = GrpcConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        GrpcConnectInfo {
            abort: self.abort.clone(),
        }
    }
}

/// The abort switch of the connection a request came on.
fn abort_of<T>(request: &tonic::Request<T>) -> Option<AbortHandle> {
    let extensions = request.extensions();
    extensions
        .get::<GrpcConnectInfo>()
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<GrpcConnectInfo>>()
                .map(|tls| tls.get_ref())
        })
        .map(|info| info.abort.clone())
}

impl tokio::io::AsyncRead for GrpcConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.abort.guard(cx, read)
    }
}

impl tokio::io::AsyncWrite for GrpcConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.abort.guard(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        self.abort.guard(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.abort.guard(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The service: one route, `Consume`.
#[derive(Clone)]
struct UniStream {
    node: Arc<Node>,
    arbiter: actix_rt::ArbiterHandle,
    max_message: usize,
}

impl NamedService for UniStream {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for UniStream
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CONSUME {
            return Box::pin(
                async move { Ok(Status::unimplemented("no such method").into_http()) },
            );
        }
        let consume = Consume(self.clone());
        let max_message = self.max_message;
        Box::pin(async move {
            let mut grpc =
                Grpc::new(UniCodec).apply_max_message_size_config(Some(max_message), None);
            Ok(grpc.server_streaming(consume, req).await)
        })
    }
}

struct Consume(UniStream);

impl ServerStreamingService<ConnectRequest> for Consume {
    type Response = Bytes;
    type ResponseStream = PushStream;
    type Future = BoxFuture<tonic::Response<PushStream>, Status>;

    fn call(&mut self, request: tonic::Request<ConnectRequest>) -> Self::Future {
        let UniStream { node, arbiter, .. } = self.0.clone();
        Box::pin(async move {
            if node.is_draining() {
                metrics::transport_refused(Transport::UniGrpc, "draining");
                return Err(Status::unavailable("shutting down"));
            }
            let mut opening = Opening::new(Transport::UniGrpc, Format::Protobuf);
            opening.session = uuid::Uuid::new_v4().to_string();
            opening.abort = abort_of(&request);
            if opening.abort.is_none() {
                tracing::warn!("a uni_grpc stream without its connection's abort switch");
            }
            opening.commands = vec![connect_command(request.into_inner())];
            let (opened_tx, opened) = futures_channel::oneshot::channel::<Opened>();
            let spawned = arbiter.spawn(async move {
                let _ = opened_tx.send(open(node, opening));
            });
            if !spawned {
                return Err(Status::unavailable("shutting down"));
            }
            let opened = opened
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
            Ok(tonic::Response::new(PushStream {
                outbox: opened.outbox,
                pending: VecDeque::new(),
                ended: false,
                _inbound: opened.inbound,
            }))
        })
    }
}

/// The pushes of one connection, read from its Outbox. Dropped when the
/// client goes away, ending the Session (it holds the Session's inbound
/// channel).
struct PushStream {
    outbox: Arc<Outbox>,
    /// Pushes of a batch not yet handed to tonic.
    pending: VecDeque<Bytes>,
    ended: bool,
    _inbound: mpsc::Sender<ClientMessage>,
}

impl PushStream {
    /// Queues the Push messages inside a batch of varint-delimited replies.
    fn take(&mut self, payload: &Bytes) {
        let Ok(parts) = delimited_parts(payload) else {
            return;
        };
        for part in parts {
            if let Some(push) = push_of_reply(part) {
                // A sub-slice of the shared frame: no copy.
                let offset = push.as_ptr() as usize - payload.as_ptr() as usize;
                self.pending
                    .push_back(payload.slice(offset..offset + push.len()));
            }
        }
    }
}

impl Stream for PushStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(push) = this.pending.pop_front() {
                metrics::METRICS.bytes_sent.inc_by(push.len() as u64);
                return Poll::Ready(Some(Ok(push)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.outbox.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Next::Write(batch)) => {
                    let payload = batch.payload_bytes();
                    this.take(&payload);
                }
                Poll::Ready(Next::Close(disconnect)) => {
                    this.ended = true;
                    let push = format::frame_disconnect(Format::Protobuf, &disconnect);
                    this.take(&push.payload_bytes());
                }
            }
        }
    }
}

/// Decodes the request with herald-protocol; writes pushes as they are.
struct UniCodec;

impl Codec for UniCodec {
    type Encode = Bytes;
    type Decode = ConnectRequest;
    type Encoder = PushEncoder;
    type Decoder = ConnectDecoder;

    fn encoder(&mut self) -> PushEncoder {
        PushEncoder
    }

    fn decoder(&mut self) -> ConnectDecoder {
        ConnectDecoder
    }
}

struct PushEncoder;

impl Encoder for PushEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct ConnectDecoder;

impl Decoder for ConnectDecoder {
    type Item = ConnectRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ConnectRequest>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        decode_connect_request(&bytes).map(Some).map_err(|e| {
            metrics::transport_refused(Transport::UniGrpc, "bad_request");
            Status::invalid_argument(format!("not a ConnectRequest: {e}"))
        })
    }
}
