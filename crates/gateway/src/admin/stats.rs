//! The console's live figures. Every node with the console on publishes a
//! snapshot of itself into [`STATS_CHANNEL`] through the engine every
//! `admin.stats_interval`; a console page holds one SSE stream, [`stream`],
//! whose response is a Hub subscriber of that channel, so it gets every
//! node's snapshots through the same fan-out as any client, with the
//! `uni_sse` framing (`http/stream.rs`). Nothing polls.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use herald_bus::PublishOptions;
use herald_protocol::{Disconnect, Format, Publication, RawJson};
use serde::Serialize;

use crate::http::stream::{Framing, OutboxBody};
use crate::metrics::METRICS;
use crate::node::hub::{GapListener, Subscriber};
use crate::node::Node;
use crate::outbox::Outbox;

/// The internal channel of the snapshots. It starts with
/// `hub::INTERNAL_PREFIX`, a control character no client or API channel
/// name may hold, so only nodes publish there, only console streams
/// subscribe, and it is left out of the node's figures.
pub(crate) const STATS_CHANNEL: &str = "\u{1}herald.admin.stats";
const _: () = assert!(STATS_CHANNEL.as_bytes()[0] == crate::node::hub::INTERNAL_PREFIX as u8);

/// Bytes a console stream may fall behind before it is closed as slow.
const STREAM_QUEUE_BYTES: usize = 256 * 1024;

/// One node's figures, as a console draws them.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    uid: String,
    name: String,
    version: String,
    uptime: u64,
    clients: u64,
    users: u64,
    subscriptions: u64,
    channels: u64,
    /// Publications the node received from the engine, since it started.
    publications: u64,
    /// Publication pushes queued to this node's clients, since it started.
    deliveries: u64,
    engine: &'static str,
    draining: bool,
    /// Unix milliseconds.
    time: u64,
}

pub(crate) fn snapshot(node: &Node) -> Snapshot {
    let info = node.info();
    Snapshot {
        uid: info.uid,
        name: info.name,
        version: info.version,
        uptime: info.uptime,
        clients: info.num_clients,
        users: info.num_users,
        subscriptions: info.num_subs,
        channels: info.num_channels,
        publications: node.hub.publications_received(),
        deliveries: METRICS.sent_publication.get(),
        engine: if node.engine.broker.healthy() {
            "ok"
        } else {
            "unreachable"
        },
        draining: node.is_draining(),
        time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

/// Publishes this node's snapshot every `interval` until the node is gone.
/// A failed publish (the engine is down) is skipped: the next one tells.
pub(crate) fn publish_every(node: &Arc<Node>, interval: Duration) {
    let node = Arc::downgrade(node);
    actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(node) = node.upgrade() else { return };
            let data = match RawJson::from_value(&snapshot(&node)) {
                Ok(data) => data,
                Err(e) => {
                    tracing::error!(error = %e, "console snapshot does not serialize");
                    continue;
                }
            };
            let publication = Publication {
                data,
                info: None,
                offset: 0,
                tags: Default::default(),
                delta: false,
            };
            if let Err(e) = node
                .engine
                .broker
                .publish(STATS_CHANNEL, publication, &PublishOptions::default())
                .await
            {
                tracing::debug!(error = %e, "console snapshot not published");
            }
        }
    });
}

/// A live, unpositioned subscription: nothing to recover.
struct NoGaps;

impl GapListener for NoGaps {
    fn on_gap(&self, _channel: &str) {}
}

/// The SSE response of one console page: subscribed to [`STATS_CHANNEL`]
/// until the page goes away or `lasts` (the session's remaining life) ends.
pub(crate) async fn stream(node: Arc<Node>, lasts: Duration) -> HttpResponse {
    let outbox = Arc::new(Outbox::new(STREAM_QUEUE_BYTES));
    let session = node.next_session_id();
    let subscriber = Arc::new(Subscriber::new(
        session,
        STATS_CHANNEL.to_owned(),
        outbox.clone(),
        Format::Json,
        false,
        Arc::new(NoGaps),
    ));
    if let Err(e) = node.attach(STATS_CHANNEL, subscriber.clone()).await {
        tracing::warn!(error = %e, "console stream: engine subscribe failed");
        METRICS
            .admin_refused
            .with_label_values(&["engine_unreachable"])
            .inc();
        return HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(r#"{"reason":"engine_unreachable","message":"the engine cannot be reached"}"#);
    }
    subscriber.go_live(None);
    let expiry: Weak<Outbox> = Arc::downgrade(&outbox);
    actix_web::rt::spawn(async move {
        tokio::time::sleep(lasts).await;
        if let Some(outbox) = expiry.upgrade() {
            outbox.close(Disconnect::EXPIRED);
        }
    });
    let body = OutboxBody::new(outbox, Framing::UniSse, Subscribed { node, session });
    let mut response = HttpResponse::Ok();
    crate::admin::assets::secure(&mut response)
        .content_type("text/event-stream")
        .insert_header(("X-Accel-Buffering", "no"))
        .body(body)
}

/// Leaves the stats channel when the response is dropped (the page went
/// away, the stream ended).
struct Subscribed {
    node: Arc<Node>,
    session: u64,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        let node = self.node.clone();
        let session = self.session;
        actix_web::rt::spawn(async move { node.detach(STATS_CHANNEL, session).await });
    }
}
