//! The Redis engine against real `redis-server` processes: two engines are
//! two herald nodes; what one publishes the other's `BrokerEvents` receive.
//!
//! Standalone, sharded (several independent servers), Redis Cluster (sharded
//! pub/sub), Sentinel (discovery and failover), TLS, ACL, a Redis restart and
//! garbage on the pub/sub channels.
//! Every test starts its own servers; every wait is bounded.

mod support;

#[path = "redis/access.rs"]
mod access;
#[path = "redis/cluster.rs"]
mod cluster;
#[path = "redis/control.rs"]
mod control;
#[path = "redis/failure.rs"]
mod failure;
#[path = "redis/integrity.rs"]
mod integrity;
#[path = "redis/sealed.rs"]
mod sealed;
#[path = "redis/sentinel.rs"]
mod sentinel;
#[path = "redis/sharded.rs"]
mod sharded;
#[path = "redis/standalone.rs"]
mod standalone;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bus::integrity::{BusKey, BusKeyring, Integrity, Rejection};
use herald_bus::redis::{RedisConfig, RedisEngine};
use herald_bus::seal::{HistoryKey, HistoryKeyring};
use herald_bus::{
    Broker, BrokerEvents, BusError, ControlCommand, HistoryOptions, HistoryQuery, NodeInfo,
    PresenceStats, PresenceStore, PublishOptions,
};
use herald_protocol::{ClientInfo, Publication, RawJson, StreamPosition};
use parking_lot::Mutex;
use support::{RedisCluster, RedisServer, SentinelSetup, TlsMaterial};

// ---------------------------------------------------------------------------
// A recording Hub

#[derive(Debug, Clone)]
enum Event {
    Publication {
        channel: String,
        publication: Publication,
        epoch: String,
    },
    Join {
        channel: String,
        info: ClientInfo,
    },
    Leave {
        channel: String,
        info: ClientInfo,
    },
    Control(ControlCommand),
    Gap {
        channel: String,
        at: Instant,
    },
}

/// Collects everything an engine hands to the node's Hub.
struct Recorder {
    uid: String,
    events: Mutex<Vec<Event>>,
    /// How long `on_publication` takes: a Hub that cannot keep up.
    publication_delay: Duration,
}

impl Recorder {
    fn new(uid: &str) -> Arc<Self> {
        Self::slow(uid, Duration::ZERO)
    }

    fn slow(uid: &str, publication_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            uid: uid.to_owned(),
            events: Mutex::new(Vec::new()),
            publication_delay,
        })
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// (publication, epoch) of `channel`, in arrival order.
    fn publications(&self, channel: &str) -> Vec<(Publication, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Publication {
                    channel: c,
                    publication,
                    epoch,
                } if c == channel => Some((publication, epoch)),
                _ => None,
            })
            .collect()
    }

    /// The data of `channel`'s publications, in arrival order.
    fn data(&self, channel: &str) -> Vec<String> {
        self.publications(channel)
            .into_iter()
            .map(|(p, _)| p.data.get().to_owned())
            .collect()
    }

    fn joins(&self, channel: &str) -> Vec<ClientInfo> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Join { channel: c, info } if c == channel => Some(info),
                _ => None,
            })
            .collect()
    }

    fn leaves(&self, channel: &str) -> Vec<ClientInfo> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Leave { channel: c, info } if c == channel => Some(info),
                _ => None,
            })
            .collect()
    }

    fn controls(&self) -> Vec<ControlCommand> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Control(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn gaps(&self, channel: &str) -> usize {
        self.gap_times(channel).len()
    }

    /// When `on_gap(channel)` was called.
    fn gap_times(&self, channel: &str) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Gap { channel: c, at } if c == channel => Some(at),
                _ => None,
            })
            .collect()
    }
}

impl BrokerEvents for Recorder {
    fn on_publication(&self, channel: &str, publication: Publication, epoch: &str) {
        if !self.publication_delay.is_zero() {
            std::thread::sleep(self.publication_delay);
        }
        self.events.lock().push(Event::Publication {
            channel: channel.to_owned(),
            publication,
            epoch: epoch.to_owned(),
        });
    }

    fn on_join(&self, channel: &str, info: ClientInfo) {
        self.events.lock().push(Event::Join {
            channel: channel.to_owned(),
            info,
        });
    }

    fn on_leave(&self, channel: &str, info: ClientInfo) {
        self.events.lock().push(Event::Leave {
            channel: channel.to_owned(),
            info,
        });
    }

    fn on_control(&self, command: ControlCommand) {
        self.events.lock().push(Event::Control(command));
    }

    fn on_gap(&self, channel: &str) {
        self.events.lock().push(Event::Gap {
            channel: channel.to_owned(),
            at: Instant::now(),
        });
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            uid: self.uid.clone(),
            name: format!("name-{}", self.uid),
            version: "test".into(),
            num_clients: 3,
            ..NodeInfo::default()
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Polls `condition` every 10 ms; panics with `what` and `state()` after
/// `secs` seconds.
async fn wait_until<S: std::fmt::Debug>(
    what: &str,
    secs: f64,
    mut condition: impl FnMut() -> bool,
    state: impl Fn() -> S,
) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if condition() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {secs}s waiting for {what}; state: {:?}",
                state()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `f` (a blocking support call, e.g. redis-cli) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A prefix no other test uses.
fn prefix(test: &str) -> String {
    format!("t{}_{test}", std::process::id())
}

/// Short timings so failures and expiries show within a second or two.
fn config(addresses: Vec<String>, prefix: &str) -> RedisConfig {
    RedisConfig {
        addresses,
        prefix: prefix.to_owned(),
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        node_ttl: Duration::from_secs(1),
        pubsub_connections: 2,
        pubsub_workers: 2,
        ..RedisConfig::default()
    }
}

fn cluster_config(cluster: &RedisCluster, prefix: &str) -> RedisConfig {
    RedisConfig {
        cluster_addresses: cluster.addresses(),
        ..config(Vec::new(), prefix)
    }
}

/// A node: an engine and what its Hub received.
struct Node {
    engine: Arc<RedisEngine>,
    events: Arc<Recorder>,
}

impl std::ops::Deref for Node {
    type Target = RedisEngine;
    fn deref(&self) -> &RedisEngine {
        &self.engine
    }
}

async fn node(config: RedisConfig, uid: &str) -> Node {
    node_with(config, Recorder::new(uid)).await
}

async fn node_with(config: RedisConfig, events: Arc<Recorder>) -> Node {
    let uid = events.uid.clone();
    let engine = RedisEngine::connect(config, events.clone())
        .await
        .unwrap_or_else(|e| panic!("node {uid} failed to connect: {e}"));
    Node { engine, events }
}

/// A node that has reported healthy (connections up, control subscribed).
async fn healthy_node(config: RedisConfig, uid: &str) -> Node {
    let node = node(config, uid).await;
    let engine = node.engine.clone();
    wait_until(
        &format!("node {uid} to be healthy"),
        5.0,
        || engine.healthy(),
        || (),
    )
    .await;
    node
}

fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Some(RawJson::from_str(r#"{"device":"phone"}"#).unwrap()),
        chan_info: None,
    }
}

fn publication(data: &str) -> Publication {
    Publication {
        data: RawJson::from_str(data).unwrap_or_else(|e| panic!("{data}: {e}")),
        info: Some(info("publisher", "pub-client")),
        offset: 0,
        tags: [("k".to_string(), "v".to_string())].into(),
        delta: false,
    }
}

fn history_options(size: usize) -> PublishOptions {
    PublishOptions {
        history: Some(HistoryOptions {
            size,
            ttl: Duration::from_secs(60),
            meta_ttl: Duration::from_secs(300),
        }),
        idempotency_key: None,
    }
}

fn query(since: Option<StreamPosition>, limit: Option<usize>, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since,
        limit,
        reverse,
        meta_ttl: Duration::from_secs(300),
    }
}

fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications.iter().map(|p| p.offset).collect()
}

fn uids(node: &RedisEngine) -> Vec<String> {
    let mut uids: Vec<String> = node.nodes().into_iter().map(|n| n.uid).collect();
    uids.sort();
    uids
}

/// Data with odd spacing, escapes and non-ASCII text, to check byte-exactness.
fn odd_data(n: u64) -> String {
    format!(r#"{{"n":{n},  "text" : "h\u00e9llo \"q\" é",   "list":[1 ,2,{{}}]}}"#)
}

// Shared by several topics (signed nodes, control commands, history keys).

fn disconnect(user: &str) -> ControlCommand {
    ControlCommand::Disconnect {
        user: user.into(),
        client: String::new(),
        whitelist: vec!["keep-me".into()],
        code: 3001,
        reason: "bye".into(),
    }
}

fn bus_key(id: &str, byte: u8) -> BusKey {
    BusKey {
        id: id.into(),
        secret: zeroize::Zeroizing::new(vec![byte; 32]),
    }
}

fn keyring(active: &str, keys: &[(&str, u8)]) -> BusKeyring {
    BusKeyring::new(active, keys.iter().map(|(id, b)| bus_key(id, *b)).collect()).unwrap()
}

/// A healthy node with a bus keyring and a history keyring.
async fn keyed_node(
    config: RedisConfig,
    uid: &str,
    bus: BusKeyring,
    history: HistoryKeyring,
) -> Node {
    let events = Recorder::new(uid);
    let engine = RedisEngine::connect_with_keys(config, events.clone(), bus, history)
        .await
        .unwrap_or_else(|e| panic!("node {uid} failed to connect: {e}"));
    let probe = engine.clone();
    wait_until(
        &format!("node {uid} to be healthy"),
        5.0,
        || probe.healthy(),
        || (),
    )
    .await;
    Node { engine, events }
}

async fn signed_node(config: RedisConfig, uid: &str, ring: BusKeyring) -> Node {
    keyed_node(config, uid, ring, HistoryKeyring::off()).await
}

fn refused(node: &RedisEngine) -> BTreeMap<&'static str, u64> {
    Rejection::ALL
        .iter()
        .zip(node.stats().envelopes_rejected)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.as_str(), n))
        .collect()
}

fn history_keyring(active: &str, keys: &[(&str, u8)]) -> HistoryKeyring {
    HistoryKeyring::new(
        active,
        keys.iter()
            .map(|(id, b)| HistoryKey {
                id: (*id).into(),
                key: zeroize::Zeroizing::new(vec![*b; 32]),
            })
            .collect(),
    )
    .unwrap()
}
