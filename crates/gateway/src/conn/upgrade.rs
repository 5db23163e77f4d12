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

use actix::{Actor, AsyncContext};
use actix_codec::Framed;
use actix_http::{h1, Request};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::session::Session;
use super::socket::{Socket, Transport};
use crate::node::{Mailbox, Node};
use crate::outbox::Outbox;
use crate::tls;
use crate::ws::handshake::{bearer_token, handshake, route, Route};

/// Messages read ahead of the Session before reading pauses.
const INBOUND_QUEUE: usize = 8;

/// Most frames one fragmented message may take.
const MAX_FRAGMENTS: usize = 1024;

/// The echo route takes Autobahn's largest cases (16 MiB messages, 64-byte
/// fragments): its limits are the test suite's, not a client's.
const ECHO_MESSAGE_LIMIT: usize = 32 << 20;
const ECHO_MAX_FRAGMENTS: usize = 1 << 20;

/// What the public listener's upgrade service was built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpgradeSettings {
    pub(crate) echo: bool,
}

/// Serves one upgrade request of the public listener to its end.
pub(crate) async fn upgrade<T>(
    node: Arc<Node>,
    req: Request,
    framed: Framed<T, h1::Codec>,
    settings: UpgradeSettings,
) where
    T: Transport + 'static,
{
    let started = Instant::now();
    let parts = framed.into_parts();
    let (mut io, read_ahead) = (parts.io, parts.read_buf);
    let route = route(req.path(), settings.echo);
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
    crate::access_log::log_request(
        req.method(),
        req.path(),
        decision.as_ref().map_or_else(|r| r.status().0, |_| 101),
        started,
    );
    let accepted = match decision {
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
    drop(req);
    let (outbox, inbound, limit, fragments) = if route == Some(Route::Echo) {
        // The socket task echoes by itself: no Session, no channel.
        let outbox = Arc::new(Outbox::unbatched(2 * ECHO_MESSAGE_LIMIT));
        (outbox, None, ECHO_MESSAGE_LIMIT, ECHO_MAX_FRAGMENTS)
    } else {
        let (inbound, inbound_rx) = futures_channel::mpsc::channel(INBOUND_QUEUE);
        let identity = if node.client.tls_identity_as_user {
            io.peer_certificate()
                .and_then(|der| tls::certificate_identity(der, &node.client.tls_identity_order))
        } else {
            None
        };
        let format = accepted.format();
        crate::metrics::upgraded(format);
        let outbox = Arc::new(Outbox::new(node.client.queue_max_size));
        let limit = node.client.message_size_limit;
        let session_outbox = outbox.clone();
        let (mailbox, events) = Mailbox::new(outbox.clone());
        Session::create(move |ctx| {
            ctx.add_stream(inbound_rx);
            ctx.add_stream(events);
            Session::new(node, session_outbox, mailbox, format, identity, bearer)
        });
        (outbox, Some(inbound), limit, MAX_FRAGMENTS)
    };
    // Its own task, so the HTTP dispatcher's task (and its allocation) ends
    // here: a connection costs the socket task and the Session, nothing more.
    // The stream holds the connection's per-address place (listener.rs).
    actix_web::rt::spawn(Socket::new(io, unread, outbox, inbound, limit, fragments));
}
