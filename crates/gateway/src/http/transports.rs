//! The HTTP transports on the public listener: bidirectional emulation
//! (`http_stream`, `sse`, and `/emulation` for the commands that follow)
//! and the unidirectional `uni_sse` and `uni_http_stream`. Each opens a
//! Session like a WebSocket does and streams its Outbox back
//! (`http/stream.rs`); the rules are the connection machine's.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use herald_bus::Emulated;
use herald_protocol::{ConnectRequest, Format};
use prost::Message as _;
use serde::Deserialize;

use super::body::read_limited;
use super::cors::{self, Cors};
use super::stream::{Framing, OutboxBody};
use crate::config::{TransportsConfig, UniHttpConfig};
use crate::conn::abort::AbortHandle;
use crate::conn::open::open;
use crate::conn::session::{connect_command, Opening};
use crate::format::{self, ClientMessage};
use crate::metrics;
use crate::node::Node;
use crate::transport::Transport;

/// `Content-Type` that selects protobuf on `http_stream` and `/emulation`.
const PROTOBUF_CONTENT_TYPE: &str = "application/octet-stream";

/// Registers the enabled transports' routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig, transports: &TransportsConfig) {
    let data = web::Data::new(transports.clone());
    cfg.app_data(data);
    if transports.http_stream.enabled {
        let limit = transports.http_stream.max_request_body_size;
        cfg.service(web::resource(&transports.http_stream.handler_prefix).to(
            move |req, payload, node| emulated(Transport::HttpStream, req, payload, node, limit),
        ));
    }
    if transports.sse.enabled {
        let limit = transports.sse.max_request_body_size;
        cfg.service(
            web::resource(&transports.sse.handler_prefix)
                .to(move |req, payload, node| emulated(Transport::Sse, req, payload, node, limit)),
        );
    }
    if transports.emulation_enabled() {
        cfg.service(web::resource(&transports.emulation.handler_prefix).to(emulation));
    }
    for (settings, transport) in [
        (&transports.uni_sse, Transport::UniSse),
        (&transports.uni_http_stream, Transport::UniHttpStream),
    ] {
        if settings.enabled {
            let owned = Arc::new(settings.clone());
            cfg.service(
                web::resource(&settings.handler_prefix).to(move |req, payload, node| {
                    let settings = owned.clone();
                    async move { unidirectional(transport, req, payload, node, &settings).await }
                }),
            );
        }
    }
}

/// The checks every transport request goes through before its body is
/// read: origin, preflight, method, draining. Err is the answer.
fn admit(
    req: &HttpRequest,
    node: &Node,
    transport: Transport,
    methods: &'static str,
) -> Result<Cors, Box<HttpResponse>> {
    let cors = match cors::check(req, &node.client.allowed_origins) {
        Ok(cors) => cors,
        Err(forbidden) => {
            metrics::transport_refused(transport, "origin");
            return Err(Box::new(forbidden.response()));
        }
    };
    if req.method() == Method::OPTIONS {
        return Err(Box::new(cors.preflight(req, methods)));
    }
    if !methods.split(", ").any(|m| m == req.method().as_str()) {
        metrics::transport_refused(transport, "method");
        return Err(Box::new(
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, methods))
                .finish(),
        ));
    }
    if node.is_draining() {
        metrics::transport_refused(transport, "draining");
        return Err(Box::new(
            HttpResponse::ServiceUnavailable().body("shutting down\n"),
        ));
    }
    if node.admit_connection().is_err() {
        // Counted by limit (herald_client_connection_limit_refusals_total).
        return Err(Box::new(
            HttpResponse::ServiceUnavailable().body("connection limit reached\n"),
        ));
    }
    Ok(cors)
}

/// Reads the body; Err is the answer (413, 408, 400), counted.
async fn body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    transport: Transport,
) -> Result<Bytes, HttpResponse> {
    read_limited(req, payload, limit)
        .await
        .inspect_err(|response| {
            let reason = if response.status() == 413 {
                "too_large"
            } else {
                "bad_request"
            };
            metrics::transport_refused(transport, reason);
        })
}

fn bad_request(transport: Transport, why: &str) -> HttpResponse {
    metrics::transport_refused(transport, "bad_request");
    tracing::debug!(
        transport = transport.label(),
        why,
        "transport request refused"
    );
    HttpResponse::BadRequest()
        .content_type("text/plain; charset=utf-8")
        .body(format!("{why}\n"))
}

fn is_protobuf(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROTOBUF_CONTENT_TYPE))
}

/// The `cf_connect` query parameter, decoded.
fn cf_connect(req: &HttpRequest) -> Option<String> {
    #[derive(Deserialize)]
    struct Query {
        cf_connect: String,
    }
    web::Query::<Query>::from_query(req.query_string())
        .ok()
        .map(|q| q.into_inner().cf_connect)
}

/// The headers of every streamed response: nothing may cache or buffer it.
fn streaming(cors: &Cors, content_type: &'static str) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    cors.apply(&mut response);
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((
            header::CACHE_CONTROL,
            "private, no-cache, no-store, must-revalidate, max-age=0",
        ))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header(("expire", "0"))
        .insert_header(("x-accel-buffering", "no"));
    response
}

/// Opens an emulated connection with its first commands and streams it;
/// 400 when they do not decode.
fn open_emulated(
    req: &HttpRequest,
    node: Arc<Node>,
    transport: Transport,
    format: Format,
    commands: Bytes,
    cors: &Cors,
) -> HttpResponse {
    let message = match format {
        Format::Json => ClientMessage::Text(commands),
        Format::Protobuf => ClientMessage::Binary(commands),
    };
    let Ok(commands) = format::decode(format, &message) else {
        return bad_request(transport, "the body is not a frame of commands");
    };
    let session = uuid::Uuid::new_v4().to_string();
    let mut opening = Opening::new(transport, format);
    opening.emulation = Some(node.emulation.register(&session));
    opening.session = session;
    opening.commands = commands;
    opening.header_user = node.header_user(req.headers());
    opening.headers = node.proxies.forwarded(req.headers());
    opening.abort = req.conn_data::<AbortHandle>().cloned();
    let opened = open(node, opening);
    let (framing, content_type) = match (transport, format) {
        (Transport::Sse, _) => (Framing::Sse, "text/event-stream; charset=utf-8"),
        (_, Format::Protobuf) => (Framing::HttpStream(Format::Protobuf), PROTOBUF_CONTENT_TYPE),
        (_, Format::Json) => (Framing::HttpStream(Format::Json), "application/json"),
    };
    streaming(cors, content_type).body(OutboxBody::new(opened.outbox, framing, opened.inbound))
}

/// The request that opens a stream, checked and read: the origin, the
/// method, then what it carries (`first_request`). Err is the answer.
async fn opening_request(
    req: &HttpRequest,
    payload: web::Payload,
    node: &Node,
    transport: Transport,
    limit: usize,
) -> Result<(Cors, Bytes), HttpResponse> {
    // SSE (an `EventSource` can only GET) may carry its request in the query.
    let sse = matches!(transport, Transport::Sse | Transport::UniSse);
    let methods = if sse {
        "GET, POST, OPTIONS"
    } else {
        "POST, OPTIONS"
    };
    let cors = admit(req, node, transport, methods).map_err(|response| *response)?;
    let bytes = first_request(req, payload, limit, transport).await?;
    Ok((cors, bytes))
}

/// What the opening request carries: `cf_connect` of a GET, the body of a
/// POST.
async fn first_request(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    transport: Transport,
) -> Result<Bytes, HttpResponse> {
    if req.method() != Method::GET {
        return body(req, payload, limit, transport).await;
    }
    let Some(query) = cf_connect(req) else {
        return Err(bad_request(
            transport,
            "cf_connect query parameter required",
        ));
    };
    if query.len() > limit {
        metrics::transport_refused(transport, "too_large");
        return Err(HttpResponse::PayloadTooLarge().finish());
    }
    Ok(Bytes::from(query))
}

/// `POST /connection/http_stream` (the body holds the first commands: JSON
/// lines, or varint-delimited protobuf with `Content-Type:
/// application/octet-stream`) and `GET /connection/sse?cf_connect=…` or
/// `POST` (JSON only).
async fn emulated(
    transport: Transport,
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<Arc<Node>>,
    limit: usize,
) -> HttpResponse {
    let (cors, commands) = match opening_request(&req, payload, &node, transport, limit).await {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    if commands.is_empty() {
        return bad_request(transport, "the request must hold the connect command");
    }
    let format = if transport == Transport::HttpStream && is_protobuf(&req) {
        Format::Protobuf
    } else {
        Format::Json
    };
    open_emulated(
        &req,
        node.get_ref().clone(),
        transport,
        format,
        commands,
        &cors,
    )
}

/// The JSON body of `/emulation`.
#[derive(Deserialize)]
struct EmulationJson {
    session: String,
    node: String,
    /// The commands, as the client would have written them on a socket.
    data: String,
}

/// The session, node and commands of an `/emulation` body (JSON, or
/// protobuf `EmulationRequest`); None unless all three are there.
pub(crate) fn emulation_request(raw: &[u8], protobuf: bool) -> Option<(String, String, Bytes)> {
    let (session, node, data) = if protobuf {
        let r = herald_protocol::protobuf::wire::EmulationRequest::decode(raw).ok()?;
        (r.session, r.node, Bytes::from(r.data))
    } else {
        let r = serde_json::from_slice::<EmulationJson>(raw).ok()?;
        (r.session, r.node, Bytes::from(r.data))
    };
    (!session.is_empty() && !node.is_empty() && !data.is_empty()).then_some((session, node, data))
}

/// `POST /emulation`: commands for an emulated connection, on this node or
/// routed to the one holding it.
async fn emulation(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<Arc<Node>>,
    transports: web::Data<TransportsConfig>,
) -> HttpResponse {
    let cors = match cors::check(&req, &node.client.allowed_origins) {
        Ok(cors) => cors,
        Err(forbidden) => {
            metrics::emulation_request("origin");
            return forbidden.response();
        }
    };
    if req.method() == Method::OPTIONS {
        return cors.preflight(&req, "POST, OPTIONS");
    }
    if req.method() != Method::POST {
        metrics::emulation_request("method");
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST, OPTIONS"))
            .finish();
    }
    let limit = transports.emulation.max_request_body_size;
    let raw = match read_limited(&req, payload, limit).await {
        Ok(raw) => raw,
        Err(response) => {
            let result = if response.status() == 413 {
                "too_large"
            } else {
                "bad_request"
            };
            metrics::emulation_request(result);
            return response;
        }
    };
    let Some((session, target, data)) = emulation_request(&raw, is_protobuf(&req)) else {
        metrics::emulation_request("bad_request");
        tracing::debug!("emulation request refused: not a {{session, node, data}} body");
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body("expected {\"session\",\"node\",\"data\"}\n");
    };
    let mut response = if target == node.uid {
        let taken = node.emulation.deliver(&session, data).await;
        metrics::emulation_request(if taken { "local" } else { "no_session" });
        HttpResponse::NoContent()
    } else {
        match node
            .engine
            .broker
            .emulate(&target, &session, data.to_vec())
            .await
        {
            Ok(Emulated::Delivered) => {
                metrics::emulation_request("forwarded");
                HttpResponse::NoContent()
            }
            // The connection ended: its stream has ended too, the client
            // reconnects from there.
            Ok(Emulated::NoSession) => {
                metrics::emulation_request("no_session");
                HttpResponse::NoContent()
            }
            Ok(Emulated::UnknownNode) => {
                metrics::emulation_request("unknown_node");
                HttpResponse::NotFound()
            }
            Err(e) => {
                tracing::warn!(error = %e, "an emulation request could not be routed");
                metrics::emulation_request("failed");
                HttpResponse::InternalServerError()
            }
        }
    };
    cors.apply(&mut response);
    response.finish()
}

/// `GET /connection/uni_sse?cf_connect=…` or `POST`, and `POST
/// /connection/uni_http_stream`, with a ConnectRequest.
async fn unidirectional(
    transport: Transport,
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<Arc<Node>>,
    settings: &UniHttpConfig,
) -> HttpResponse {
    let limit = settings.max_request_body_size;
    let (cors, request) = match opening_request(&req, payload, &node, transport, limit).await {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    let node = node.get_ref().clone();
    open_unidirectional(&req, node, transport, &request, settings, &cors).await
}

/// Opens a unidirectional connection with `request` (a JSON
/// ConnectRequest; an empty body is an empty request) and streams it, or
/// answers a failed connect with the configured HTTP status.
async fn open_unidirectional(
    req: &HttpRequest,
    node: Arc<Node>,
    transport: Transport,
    request: &[u8],
    settings: &UniHttpConfig,
    cors: &Cors,
) -> HttpResponse {
    let connect: ConnectRequest = if request.iter().all(u8::is_ascii_whitespace) {
        ConnectRequest::default()
    } else {
        match serde_json::from_slice(request) {
            Ok(connect) => connect,
            Err(_) => return bad_request(transport, "the body must be a JSON connect request"),
        }
    };
    let (outcome_tx, outcome) = futures_channel::oneshot::channel();
    let mut opening = Opening::new(transport, Format::Json);
    opening.session = uuid::Uuid::new_v4().to_string();
    opening.commands = vec![connect_command(connect)];
    opening.outcome = Some(outcome_tx);
    opening.header_user = node.header_user(req.headers());
    opening.headers = node.proxies.forwarded(req.headers());
    opening.abort = req.conn_data::<AbortHandle>().cloned();
    let opened = open(node, opening);
    // The connect runs now (a JWT checks in the same turn); a failure the
    // config maps to an HTTP status is answered with it, anything else is
    // told in the stream.
    if let Ok(Err(code)) = outcome.await {
        if let Some(to) = settings.connect_code_to_http_response.response_for(code) {
            let status = actix_web::http::StatusCode::from_u16(to.status_code)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = HttpResponse::build(status);
            cors.apply(&mut response);
            return response.body(to.body.clone());
        }
    }
    let (framing, content_type) = match transport {
        Transport::UniSse => (Framing::UniSse, "text/event-stream; charset=utf-8"),
        _ => (Framing::UniHttpStream, "application/json"),
    };
    streaming(cors, content_type).body(OutboxBody::new(opened.outbox, framing, opened.inbound))
}
