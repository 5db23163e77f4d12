//! `grpc_api`: the server API over gRPC, on its own port —
//! `centrifugal.centrifugo.api.CentrifugoApi` (schema:
//! crates/protocol/proto/api.proto; docs/protocol.md, "gRPC server API").
//!
//! Each call is one HTTP API call: herald-protocol's `api::grpc` turns the
//! request into the method's JSON params, `http::api::call_counted` runs
//! it (the same code, limits and metrics as `POST /api/<method>`), and the
//! JSON result or API error becomes the response's `result` or `error`. A
//! gRPC status is only for what never reaches the API: a wrong key
//! (UNAUTHENTICATED), an unknown method (UNIMPLEMENTED), no free place
//! (UNAVAILABLE), a message that is not the request (INVALID_ARGUMENT).
//!
//! Written by hand on tonic's server parts, like `grpc.rs`: no `protoc`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, BufMut as _, Bytes};
use futures_util::StreamExt as _;
use herald_protocol::api::grpc::{self as translate, Batch, Method, Route, SERVICE};
use herald_protocol::api::wire;
use herald_protocol::api::ApiError;
use herald_protocol::ErrorCode;
use serde_json::value::RawValue;
use tonic::body::Body as ResponseBody;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;

use crate::config::GrpcApiConfig;
use crate::error::GatewayError;
use crate::grpc::{bind, GrpcServer};
use crate::http::api::{self, ApiSettings, PARALLELISM};
use crate::metrics;
use crate::node::Node;

/// Binds and starts the server. `key` is the key calls must carry
/// (`GrpcApiConfig::effective_key`); `api` the HTTP API's settings, whose
/// places and batch limit the gRPC API shares.
pub(crate) fn start(
    node: Arc<Node>,
    api: Arc<ApiSettings>,
    key: &str,
    config: &GrpcApiConfig,
) -> Result<GrpcServer, GatewayError> {
    let (listener, addr, mut builder) =
        bind("grpc_api", &config.address, config.port, &config.tls)?;
    let service = CentrifugoApi {
        node,
        api,
        key: Arc::from(key),
        max_message: config.max_receive_message_size,
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let router = builder.add_service(service);
    actix_web::rt::spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => return tracing::error!(error = %e, "grpc_api cannot listen"),
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "grpc_api server failed");
        }
    });
    tracing::info!(%addr, tls = config.tls.enabled, "grpc_api listening");
    Ok(GrpcServer { addr, stop })
}

/// The service: every route of `CentrifugoApi` herald serves.
#[derive(Clone)]
struct CentrifugoApi {
    node: Arc<Node>,
    api: Arc<ApiSettings>,
    key: Arc<str>,
    max_message: usize,
}

impl NamedService for CentrifugoApi {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for CentrifugoApi
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
        let this = self.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let path = req.uri().path().to_owned();
            let response = this.serve(req).await;
            // An answer's status is in its trailers; a refusal's in its head.
            let status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            crate::access_log::log_grpc_request(&path, status, started);
            Ok(response)
        })
    }
}

impl CentrifugoApi {
    /// Key, route and place are checked from the request head; the message
    /// is read only after that, within `grpc_api.max_receive_message_size`.
    async fn serve<B>(self, req: http::Request<B>) -> http::Response<ResponseBody>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if !authorized(req.headers(), &self.key) {
            metrics::api_refused("unauthorized");
            return Status::unauthenticated("a valid API key is required").into_http();
        }
        let Some(route) = Route::from_path(req.uri().path()) else {
            metrics::api_refused("not_found");
            return Status::unimplemented("no such method").into_http();
        };
        let Some(place) = self.api.place().await else {
            metrics::api_refused("concurrency");
            return Status::unavailable(
                "too many concurrent API requests (http_api.max_concurrent_requests)",
            )
            .into_http();
        };
        let max_message = self.max_message;
        let mut grpc = Grpc::new(RawCodec).apply_max_message_size_config(Some(max_message), None);
        let response = grpc.unary(Unary { api: self, route }, req).await;
        drop(place);
        response
    }

    /// One method: its request as params, run as the HTTP API runs it.
    async fn method(
        &self,
        method: Method,
        params: translate::Params,
    ) -> (Result<Box<RawValue>, ApiError>, bool) {
        let name = method.api_name();
        let params = match params {
            Ok(params) => params,
            Err(error) => {
                // Refused before the dispatcher, as its own parsing would.
                metrics::api_command(name, std::time::Duration::ZERO, Some(&error));
                return (Err(error), false);
            }
        };
        let outcome = api::call_counted(&self.node, &self.api, name, params.get().as_bytes()).await;
        let binary = method == Method::History && outcome.is_ok() && self.binary_channel(&params);
        (outcome, binary)
    }

    /// Whether the channel the params name carries bytes
    /// (`publication_data_format = "binary"`).
    fn binary_channel(&self, params: &RawValue) -> bool {
        translate::channel_of(params)
            .and_then(|channel| {
                self.node
                    .policy
                    .resolve(&channel)
                    .ok()
                    .map(|resolved| resolved.options.binary_data())
            })
            .unwrap_or(false)
    }

    /// `Batch`: its commands as the HTTP batch runs them, one at a time or
    /// [`PARALLELISM`] at once with `parallel`; replies in command order.
    async fn batch(&self, batch: Batch) -> Result<Vec<u8>, Status> {
        let started = std::time::Instant::now();
        let limit = self.api.max_batch_size();
        if batch.commands.len() > limit {
            let error = ApiError::with_message(ErrorCode::BadRequest, "too many commands");
            metrics::api_command("batch", started.elapsed(), Some(&error));
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {limit} commands (http_api.max_batch_size)"
            )));
        }
        let width = if batch.parallel { PARALLELISM } else { 1 };
        let replies: Vec<wire::Reply> = futures_util::stream::iter(batch.commands)
            .map(|command| async move {
                match translate::command(command) {
                    Err(error) => translate::error_reply(&error),
                    Ok((method, params)) => {
                        let (outcome, binary) = self.method(method, params).await;
                        method.reply(outcome.as_deref(), binary)
                    }
                }
            })
            .buffered(width)
            .collect()
            .await;
        metrics::api_command("batch", started.elapsed(), None);
        Ok(translate::batch_response(replies))
    }
}

/// `authorization: apikey <key>`, compared in constant time (the HTTP
/// API's comparison). A gRPC client cannot send `X-API-Key` as HTTP does,
/// but metadata keys are headers, so `x-api-key` is taken too.
fn authorized(headers: &http::HeaderMap, key: &str) -> bool {
    let offered = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("apikey").then(|| rest.trim())
        });
    api::key_matches(offered, key)
}

/// One call of a route: the request message in, the response message out.
struct Unary {
    api: CentrifugoApi,
    route: Route,
}

impl UnaryService<Bytes> for Unary {
    type Response = Vec<u8>;
    type Future = BoxFuture<tonic::Response<Vec<u8>>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (api, route) = (self.api.clone(), self.route);
        Box::pin(async move {
            let message = request.into_inner();
            let response = match route {
                Route::Batch => {
                    let batch = Batch::decode(&message[..]).map_err(not_the_request)?;
                    api.batch(batch).await?
                }
                Route::Method(method) => {
                    let params = method.params(&message[..]).map_err(not_the_request)?;
                    let (outcome, binary) = api.method(method, params).await;
                    method.response(outcome.as_deref(), binary)
                }
            };
            Ok(tonic::Response::new(response))
        })
    }
}

fn not_the_request(e: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("not the method's request message: {e}"))
}

/// Messages as bytes both ways: the translation decodes and encodes them.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_as_apikey_authorization_or_x_api_key() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let key = "s3cret";
        assert!(authorized(
            &headers(&[("authorization", "apikey s3cret")]),
            key
        ));
        assert!(authorized(
            &headers(&[("authorization", "APIKEY s3cret")]),
            key
        ));
        assert!(authorized(&headers(&[("x-api-key", "s3cret")]), key));
        assert!(!authorized(
            &headers(&[("authorization", "apikey wrong")]),
            key
        ));
        assert!(!authorized(
            &headers(&[("authorization", "Bearer s3cret")]),
            key
        ));
        assert!(!authorized(&headers(&[]), key));
        // No key configured: nobody.
        assert!(!authorized(&headers(&[("authorization", "apikey ")]), ""));
    }
}
