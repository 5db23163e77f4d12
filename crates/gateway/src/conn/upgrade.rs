//! `GET /connection/websocket` on the raw upgraded connection: the
//! handshake's answer (ws/handshake.rs decides it), then one Session actor
//! and one socket task per connection.
//!
//! actix-http hands every `Connection: upgrade` request on the public
//! listener to [`upgrade`] with the stream itself, so herald writes the
//! handshake response and owns the socket from then on (see decisions.md D8):
//! no HTTP dispatcher buffers stay behind an idle connection.

use std::sync::Arc;
use std::time::Instant;

use actix_codec::Framed;
use actix_http::{h1, Request};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::open::open;
use super::session::{connect_command, Opening};
use super::socket::{ByteStream, Socket};
use crate::node::Node;
use crate::outbox::Outbox;
use herald_protocol::{ConnectRequest, Format};

use crate::tls;
use crate::transport::Transport;
use crate::ws::deflate::Deflate;
use crate::ws::handshake::{bearer_token, handshake, route, Route};

/// Most frames one fragmented message may take.
const MAX_FRAGMENTS: usize = 1024;

/// The echo route takes Autobahn's largest cases (16 MiB messages, 64-byte
/// fragments): its limits are the test suite's, not a client's.
const ECHO_MESSAGE_LIMIT: usize = 32 << 20;
const ECHO_MAX_FRAGMENTS: usize = 1 << 20;

/// What the public listener's upgrade service was built with.
#[derive(Debug, Clone)]
pub(crate) struct UpgradeSettings {
    pub(crate) echo: bool,
    /// `uni_websocket`, when enabled: its endpoint and message size limit.
    pub(crate) unidirectional: Option<(Arc<str>, usize)>,
    /// `websocket.compression`: how the client route (and the conformance
    /// echo) compress when a client offers permessage-deflate; None never
    /// negotiates it. `uni_websocket` does not compress.
    pub(crate) deflate: Option<Deflate>,
}

/// The 400 for a `cf_connect` that is not a connect request.
fn bad_cf_connect() -> Vec<u8> {
    let body = "cf_connect is not a JSON connect request";
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The 503 for a connection over `client.connection_limit` or
/// `client.connection_rate_limit`: the SDKs try again later.
fn over_node_limit() -> Vec<u8> {
    let body = "connection limit reached\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The connect request in a `cf_connect` query parameter: None without one.
fn uni_connect(query: Option<&str>) -> Result<Option<ConnectRequest>, ()> {
    #[derive(serde::Deserialize)]
    struct Query {
        cf_connect: Option<String>,
    }
    let Some(query) = query else {
        return Ok(None);
    };
    let query = actix_web::web::Query::<Query>::from_query(query).map_err(|_| ())?;
    match &query.cf_connect {
        None => Ok(None),
        Some(json) => serde_json::from_str(json).map(Some).map_err(|_| ()),
    }
}

/// Serves one upgrade request of the public listener to its end.
pub(crate) async fn upgrade<T>(
    node: Arc<Node>,
    req: Request,
    framed: Framed<T, h1::Codec>,
    settings: UpgradeSettings,
) where
    T: ByteStream + 'static,
{
    let started = Instant::now();
    let parts = framed.into_parts();
    let (mut io, read_ahead) = (parts.io, parts.read_buf);
    let uni_path = settings.unidirectional.as_ref().map(|(path, _)| &**path);
    let route = route(req.path(), settings.echo, uni_path);
    let decision = handshake(
        req.method(),
        req.version(),
        route,
        req.head().headers(),
        req.uri().query().unwrap_or(""),
        &node.client.allowed_origins,
        node.is_draining(),
    );
    // Non-browser clients may send their token on the upgrade instead of in
    // the connect command (browsers cannot set this header).
    let bearer = bearer_token(req.head().headers());
    // uni_websocket may carry its connect request in the query: one that
    // does not parse is refused before the upgrade.
    let uni_connect = match route {
        Some(Route::Unidirectional) if decision.is_ok() => uni_connect(req.uri().query()),
        _ => Ok(None),
    };
    // A client connection counts against the node's limits; the echo
    // route is no client.
    let over_limit = decision.is_ok()
        && uni_connect.is_ok()
        && route != Some(Route::Echo)
        && node.admit_connection().is_err();
    let status = match (&decision, &uni_connect) {
        (Err(refusal), _) => refusal.status().0,
        (Ok(_), Err(())) => 400,
        (Ok(_), Ok(_)) if over_limit => 503,
        (Ok(_), Ok(_)) => 101,
    };
    crate::access_log::log_request(req.method(), req.path(), status, started);
    if over_limit {
        let _ = io.write_all(&over_node_limit()).await;
        let _ = io.shutdown().await;
        return;
    }
    let header_user = node.header_user(req.head().headers());
    let Ok(uni_connect) = uni_connect else {
        crate::metrics::transport_refused(Transport::UniWebSocket, "bad_request");
        let _ = io.write_all(&bad_cf_connect()).await;
        let _ = io.shutdown().await;
        return;
    };
    let mut accepted = match decision {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::debug!(?refusal, "handshake refused");
            crate::metrics::METRICS
                .handshake_refusals
                .with_label_values(&[refusal.label()])
                .inc();
            let _ = io.write_all(&refusal.response()).await;
            let _ = io.shutdown().await;
            return;
        }
    };
    // permessage-deflate, when on, for the routes that speak it.
    let deflate = match (settings.deflate, route) {
        (Some(node_deflate), Some(route @ (Route::Client | Route::Echo))) => {
            accepted.negotiate_deflate(req.head().headers());
            accepted.deflate().map(|agreed| {
                let deflate = node_deflate.with_window(agreed.window_bits);
                // The echo compresses every message, as Autobahn's cases
                // expect of a compressed connection.
                if route == Route::Echo {
                    deflate.even_if_larger()
                } else {
                    deflate
                }
            })
        }
        _ => None,
    };
    if deflate.is_some() {
        crate::metrics::METRICS.deflate_negotiated.inc();
    }
    if io.write_all(&accepted.response()).await.is_err() {
        return;
    }
    // The dispatcher's buffers go; only bytes the client already sent stay.
    let unread = if read_ahead.is_empty() {
        BytesMut::new()
    } else {
        BytesMut::from(&read_ahead[..])
    };
    drop(read_ahead);
    drop(parts.write_buf);
    drop(parts.codec);
    // What a proxy forwards of the handshake's headers (a Cookie for the
    // connect proxy), before the request goes.
    let forwarded = node.proxies.forwarded(req.head().headers());
    drop(req);
    let (outbox, inbound, limit, fragments) = if route == Some(Route::Echo) {
        // The socket task echoes by itself: no Session, no channel.
        let mut outbox = Outbox::unbatched(2 * ECHO_MESSAGE_LIMIT);
        if let Some(deflate) = &deflate {
            outbox = outbox.compressing(deflate.min_size);
        }
        let outbox = Arc::new(outbox);
        (outbox, None, ECHO_MESSAGE_LIMIT, ECHO_MAX_FRAGMENTS)
    } else if route == Some(Route::Unidirectional) {
        let mut opening = Opening::new(Transport::UniWebSocket, Format::Json);
        opening.upgrade_token = bearer;
        opening.headers = forwarded;
        opening.session = uuid::Uuid::new_v4().to_string();
        opening.header_user = header_user;
        opening.commands = uni_connect.map(connect_command).into_iter().collect();
        let limit = settings
            .unidirectional
            .as_ref()
            .map_or(0, |(_, limit)| *limit);
        let opened = open(node, opening);
        let socket = Socket::new(
            io,
            unread,
            opened.outbox,
            Some(opened.inbound),
            limit,
            MAX_FRAGMENTS,
        )
        .unidirectional();
        actix_web::rt::spawn(socket);
        return;
    } else {
        let identity = if node.client.tls_identity_as_user {
            io.peer_certificate()
                .and_then(|der| tls::certificate_identity(der, &node.client.tls_identity_order))
        } else {
            None
        };
        let format = accepted.format();
        crate::metrics::upgraded(format);
        let mut opening = Opening::new(Transport::WebSocket, format);
        opening.tls_identity = identity;
        opening.header_user = header_user;
        opening.upgrade_token = bearer;
        opening.headers = forwarded;
        opening.compress_from = deflate.map(|d| d.min_size);
        let limit = node.client.message_size_limit;
        let opened = open(node, opening);
        (opened.outbox, Some(opened.inbound), limit, MAX_FRAGMENTS)
    };
    // Its own task, so the HTTP dispatcher's task (and its allocation) ends
    // here: a connection costs the socket task and the Session, nothing more.
    // The stream holds the connection's per-address place (listener.rs).
    let socket = Socket::new(io, unread, outbox, inbound, limit, fragments);
    match deflate {
        Some(deflate) => actix_web::rt::spawn(socket.compressing(deflate)),
        None => actix_web::rt::spawn(socket),
    };
}
