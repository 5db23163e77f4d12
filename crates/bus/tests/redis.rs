//! The Redis engine against real `redis-server` processes: two engines are
//! two herald nodes; what one publishes the other's `BrokerEvents` receive.
//!
//! Standalone, sharded (several independent servers), Redis Cluster (sharded
//! pub/sub), TLS, ACL, a Redis restart and garbage on the pub/sub channels.
//! Every test starts its own servers; every wait is bounded.

mod support;

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
use support::{RedisCluster, RedisServer, TlsMaterial};

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

// ---------------------------------------------------------------------------
// Standalone: one Redis, two nodes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_reach_the_other_node_in_order_with_offsets_and_epoch() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("pubs");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("chat").await.unwrap();
    a.subscribe("news").await.unwrap();

    let mut positions = Vec::new();
    for n in 1..=3 {
        let position = b
            .publish("chat", publication(&odd_data(n)), &history_options(10))
            .await
            .unwrap();
        positions.push(position);
    }
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let epoch = positions[0].epoch.clone();
    assert!(!epoch.is_empty(), "a history publish returns an epoch");
    assert!(positions.iter().all(|p| p.epoch == epoch), "{positions:?}");

    let events = a.events.clone();
    wait_until(
        "3 publications on node A",
        5.0,
        || events.publications("chat").len() >= 3,
        || events.events(),
    )
    .await;
    let received = a.events.publications("chat");
    assert_eq!(received.len(), 3, "{received:?}");
    for (n, (p, e)) in (1..=3).zip(&received) {
        assert_eq!(p.offset, n, "{received:?}");
        assert_eq!(e, &epoch, "A got the epoch B's publish returned");
        assert_eq!(p.data.get(), odd_data(n), "payload byte-exact");
        assert_eq!(p.info, Some(info("publisher", "pub-client")));
        assert_eq!(p.tags.get("k").map(String::as_str), Some("v"));
    }

    // Without history: no offset, no epoch, on both sides.
    let position = b
        .publish(
            "news",
            publication(r#"{"plain":true}"#),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(position, StreamPosition::default());
    wait_until(
        "the unpositioned publication on node A",
        5.0,
        || !events.publications("news").is_empty(),
        || events.events(),
    )
    .await;
    let (p, e) = &a.events.publications("news")[0];
    assert_eq!((p.offset, e.as_str()), (0, ""));
    assert_eq!(p.data.get(), r#"{"plain":true}"#);
    // B subscribed nothing: it received nothing.
    assert!(b.events.publications("chat").is_empty());
    assert!(b.events.publications("news").is_empty());

    // Channel names with separators and non-ASCII text, and a large payload.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(512 * 1024));
    let odd_channels = [
        "ns:chat#42",
        "a.b.client.c",
        "caf\u{e9} \u{1f600}",
        "$private",
    ];
    for channel in odd_channels {
        a.subscribe(channel).await.unwrap();
        b.publish(channel, publication(&big), &history_options(10))
            .await
            .unwrap();
    }
    wait_until(
        "publications on channels with odd names",
        5.0,
        || {
            odd_channels
                .iter()
                .all(|c| events.publications(c).len() == 1)
        },
        || events.events().len(),
    )
    .await;
    for channel in odd_channels {
        assert_eq!(
            a.events.data(channel),
            std::slice::from_ref(&big),
            "{channel}"
        );
        let page = a.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(page.publications.len(), 1, "{channel}");
        assert_eq!(page.publications[0].data.get(), big, "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_cross_nodes() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("joinleave");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("room").await.unwrap();

    b.publish_join("room", info("u1", "c1")).await.unwrap();
    b.publish_leave("room", info("u1", "c1")).await.unwrap();
    let events = a.events.clone();
    wait_until(
        "join and leave on node A",
        5.0,
        || !events.joins("room").is_empty() && !events.leaves("room").is_empty(),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.joins("room"), [info("u1", "c1")]);
    assert_eq!(a.events.leaves("room"), [info("u1", "c1")]);
    assert!(a.events.publications("room").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_forward_reverse_limited_and_since() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("history");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;

    // A channel nobody published to: top 0 and a stable epoch.
    let empty = a
        .history("nothing", &query(None, None, false))
        .await
        .unwrap();
    assert!(empty.publications.is_empty());
    assert_eq!(empty.position.offset, 0);
    assert!(!empty.position.epoch.is_empty());
    let again = b
        .history("nothing", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(again.position, empty.position, "the epoch is kept");
    // A client that read the position first recovers from the first publication.
    let first = b
        .publish("nothing", publication("{}"), &history_options(10))
        .await
        .unwrap();
    assert_eq!(
        first,
        StreamPosition {
            offset: 1,
            epoch: empty.position.epoch.clone()
        },
        "the first publication keeps the epoch a history read created"
    );
    let page = a
        .history("nothing", &query(Some(empty.position.clone()), None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1]);

    let mut epoch = String::new();
    for n in 1..=5 {
        epoch = b
            .publish("h", publication(&odd_data(n)), &history_options(10))
            .await
            .unwrap()
            .epoch;
    }
    let top = StreamPosition {
        offset: 5,
        epoch: epoch.clone(),
    };

    let all = a.history("h", &query(None, None, false)).await.unwrap();
    assert_eq!(all.position, top);
    assert_eq!(offsets(&all.publications), [1, 2, 3, 4, 5]);
    for p in &all.publications {
        assert_eq!(p.data.get(), odd_data(p.offset), "byte-exact from history");
        assert_eq!(p.info, Some(info("publisher", "pub-client")));
        assert_eq!(p.tags.get("k").map(String::as_str), Some("v"));
    }

    let since = |offset| {
        Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        })
    };
    let page = a.history("h", &query(since(2), None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [3, 4, 5]);
    assert_eq!(page.position, top);

    let page = a
        .history("h", &query(since(1), Some(2), false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [2, 3]);

    let page = a.history("h", &query(since(5), None, false)).await.unwrap();
    assert!(page.publications.is_empty(), "{page:?}");
    assert_eq!(page.position, top);

    let page = a.history("h", &query(None, None, true)).await.unwrap();
    assert_eq!(offsets(&page.publications), [5, 4, 3, 2, 1]);

    let page = a.history("h", &query(None, Some(2), true)).await.unwrap();
    assert_eq!(offsets(&page.publications), [5, 4]);

    let page = a.history("h", &query(since(3), None, true)).await.unwrap();
    assert_eq!(offsets(&page.publications), [2, 1], "reverse before since");

    let page = a.history("h", &query(None, Some(3), false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1, 2, 3]);

    let page = a.history("h", &query(None, Some(0), false)).await.unwrap();
    assert!(
        page.publications.is_empty(),
        "limit 0 gives only the position"
    );
    assert_eq!(page.position, top);

    let wrong = Some(StreamPosition {
        offset: 2,
        epoch: format!("{epoch}x"),
    });
    match a.history("h", &query(wrong, None, false)).await {
        Err(BusError::UnrecoverablePosition) => {}
        other => panic!("a wrong epoch must be unrecoverable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_to_size_and_removable() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("trim");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;

    let mut epoch = String::new();
    for n in 1..=7 {
        epoch = a
            .publish("t", publication(&odd_data(n)), &history_options(3))
            .await
            .unwrap()
            .epoch;
    }
    let page = a.history("t", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [5, 6, 7], "trimmed to size 3");
    assert_eq!(page.position.offset, 7);
    assert_eq!(
        redis.cli(&["XLEN", &format!("{prefix}.stream.t")]).trim(),
        "3",
        "the stream itself holds 3 entries"
    );

    a.remove_history("t").await.unwrap();
    let page = a.history("t", &query(None, None, false)).await.unwrap();
    assert!(page.publications.is_empty(), "{page:?}");
    assert_eq!(
        redis.cli(&["EXISTS", &format!("{prefix}.stream.t")]).trim(),
        "0"
    );
    // Publishing again continues the stream.
    let position = a
        .publish("t", publication("{}"), &history_options(3))
        .await
        .unwrap();
    assert_eq!(position.epoch, epoch);
    let page = a.history("t", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [position.offset]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_returns_the_first_position_and_delivers_once() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("idem");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("orders").await.unwrap();

    let options = PublishOptions {
        idempotency_key: Some("key-1".into()),
        ..history_options(10)
    };
    let first = b
        .publish("orders", publication(r#"{"order":1}"#), &options)
        .await
        .unwrap();
    let repeated = b
        .publish("orders", publication(r#"{"order":1}"#), &options)
        .await
        .unwrap();
    let from_a = a
        .publish("orders", publication(r#"{"order":1}"#), &options)
        .await
        .unwrap();
    assert_eq!(first.offset, 1);
    assert_eq!(repeated, first, "a repeated key returns the first position");
    assert_eq!(from_a, first, "from any node");

    // Without history too.
    let plain = PublishOptions {
        idempotency_key: Some("key-2".into()),
        history: None,
    };
    let p1 = b
        .publish("orders", publication(r#"{"order":2}"#), &plain)
        .await
        .unwrap();
    let p2 = b
        .publish("orders", publication(r#"{"order":2}"#), &plain)
        .await
        .unwrap();
    assert_eq!(p1, p2);

    // A marker published after: once it arrives, any duplicate would have.
    b.publish(
        "orders",
        publication(r#"{"marker":true}"#),
        &history_options(10),
    )
    .await
    .unwrap();
    let events = a.events.clone();
    wait_until(
        "the marker on node A",
        5.0,
        || {
            events
                .data("orders")
                .contains(&r#"{"marker":true}"#.to_string())
        },
        || events.events(),
    )
    .await;
    assert_eq!(
        a.events.data("orders"),
        [r#"{"order":1}"#, r#"{"order":2}"#, r#"{"marker":true}"#],
        "each idempotent publication delivered once"
    );
    let page = a
        .history("orders", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1, 2], "stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_counted_removed_and_expires() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("presence");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let ttl = Duration::from_secs(60);

    a.add_presence("lobby", info("alice", "a-1"), ttl)
        .await
        .unwrap();
    b.add_presence("lobby", info("alice", "a-2"), ttl)
        .await
        .unwrap();
    b.add_presence("lobby", info("bob", "b-1"), ttl)
        .await
        .unwrap();
    let expected: BTreeMap<String, ClientInfo> = [
        ("a-1".to_string(), info("alice", "a-1")),
        ("a-2".to_string(), info("alice", "a-2")),
        ("b-1".to_string(), info("bob", "b-1")),
    ]
    .into();
    assert_eq!(a.presence("lobby").await.unwrap(), expected);
    assert_eq!(b.presence("lobby").await.unwrap(), expected);
    let stats = a.presence_stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));

    // Refreshing an entry does not duplicate it.
    a.add_presence("lobby", info("alice", "a-1"), ttl)
        .await
        .unwrap();
    assert_eq!(b.presence("lobby").await.unwrap().len(), 3);

    b.remove_presence("lobby", "a-1").await.unwrap();
    let left = a.presence("lobby").await.unwrap();
    assert_eq!(
        left.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a-2", "b-1"]
    );
    let stats = b.presence_stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));

    // An entry with a 1 s TTL disappears; the others stay.
    a.add_presence("lobby", info("carol", "c-1"), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(b.presence("lobby").await.unwrap().contains_key("c-1"));
    let started = Instant::now();
    let last = loop {
        let now = b.presence("lobby").await.unwrap();
        if !now.contains_key("c-1") {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a 1s presence entry is still there after 4s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        last.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a-2", "b-1"]
    );
    let stats = a.presence_stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    assert_eq!(
        a.presence_stats("empty").await.unwrap(),
        PresenceStats::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_entries_with_different_ttls_expire_independently() {
    // Nodes with different presence TTLs (a rolling config change) share a
    // channel: the short entry must not take the long ones with it.
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("presencettl");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.add_presence("mixed", info("long", "long-1"), Duration::from_secs(60))
        .await
        .unwrap();
    a.add_presence("mixed", info("short", "short-1"), Duration::from_secs(1))
        .await
        .unwrap();
    let added = Instant::now();
    loop {
        let now = a.presence("mixed").await.unwrap();
        assert!(
            now.contains_key("long-1"),
            "the 60s entry vanished {:?} after a 1s entry was added: {now:?} (key TTL {})",
            added.elapsed(),
            redis
                .cli(&["TTL", &format!("{prefix}.presence.data.mixed")])
                .trim()
        );
        if !now.contains_key("short-1") && added.elapsed() > Duration::from_millis(2500) {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(5),
            "the 1s entry is still there after 5s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_fails_calls_within_command_timeout() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("hung");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("h").await.unwrap();

    redis.pause();
    let paused = Resume(&redis);
    for (what, options) in [
        ("with history", history_options(10)),
        ("without history", PublishOptions::default()),
    ] {
        let started = Instant::now();
        match b.publish("h", publication("{}"), &options).await {
            Err(BusError::Unavailable(_)) => {}
            other => panic!("publish {what} to a hung Redis: {other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1800),
            "publish {what} gave up after {took:?}; command_timeout is 1s"
        );
    }
    let started = Instant::now();
    assert!(a.presence("h").await.is_err());
    assert!(started.elapsed() < Duration::from_millis(1800));
    let engine = a.engine.clone();
    wait_until("A unhealthy", 3.0, || !engine.healthy(), || ()).await;
    drop(paused); // SIGCONT

    wait_until("A healthy again", 10.0, || engine.healthy(), || ()).await;
    let started = Instant::now();
    loop {
        match b
            .publish(
                "h",
                publication(r#"{"back":1}"#),
                &PublishOptions::default(),
            )
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "publish 5s after Redis resumed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = a.events.clone();
    wait_until(
        "a publication after Redis resumed",
        5.0,
        || events.data("h").contains(&r#"{"back":1}"#.to_string()),
        || events.events(),
    )
    .await;
}

/// Resumes a paused server when dropped (also when the test panics).
struct Resume<'a>(&'a RedisServer);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("unsub");
    // One pub/sub connection and one worker: what A receives keeps the order
    // Redis delivered in, across channels, so a marker proves absence.
    let single = RedisConfig {
        pubsub_connections: 1,
        pubsub_workers: 1,
        ..config(vec![redis.url()], &prefix)
    };
    let a = healthy_node(single, "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("gone").await.unwrap();
    a.subscribe("stays").await.unwrap();
    a.subscribe("stays").await.unwrap(); // idempotent

    b.publish(
        "gone",
        publication(r#"{"m":1}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    let events = a.events.clone();
    wait_until(
        "the first publication",
        5.0,
        || events.data("gone").len() == 1,
        || events.events(),
    )
    .await;

    a.unsubscribe("gone").await.unwrap();
    a.unsubscribe("gone").await.unwrap(); // idempotent
    let client_channel = format!("{prefix}.client.gone");
    let numsub = redis.cli(&["PUBSUB", "NUMSUB", &client_channel]);
    assert_eq!(
        numsub.lines().nth(1).map(str::trim),
        Some("0"),
        "nobody subscribes {client_channel} in Redis any more: {numsub}"
    );
    b.publish("gone", publication(r#"{"m":2}"#), &history_options(10))
        .await
        .unwrap();
    b.publish(
        "gone",
        publication(r#"{"m":3}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    b.publish(
        "stays",
        publication(r#"{"marker":1}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    wait_until(
        "the marker",
        5.0,
        || !events.data("stays").is_empty(),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("gone"), [r#"{"m":1}"#]);
    assert_eq!(
        a.events.data("stays"),
        [r#"{"marker":1}"#],
        "delivered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_expires_after_ttl_and_the_epoch_after_meta_ttl() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("ttl");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let short_stream = PublishOptions {
        history: Some(HistoryOptions {
            size: 10,
            ttl: Duration::from_secs(1),
            meta_ttl: Duration::from_secs(300),
        }),
        idempotency_key: None,
    };
    let short_meta = PublishOptions {
        history: Some(HistoryOptions {
            size: 10,
            ttl: Duration::from_secs(1),
            meta_ttl: Duration::from_secs(1),
        }),
        idempotency_key: None,
    };
    let mut kept = StreamPosition::default();
    for _ in 0..2 {
        kept = a
            .publish("s", publication("{}"), &short_stream)
            .await
            .unwrap();
    }
    let lost = a
        .publish("m", publication("{}"), &short_meta)
        .await
        .unwrap();
    assert_eq!((kept.offset, lost.offset), (2, 1));

    // A history read refreshes the meta with the query's meta_ttl: read the
    // short-meta channel with a 1 s one too.
    let short_query = HistoryQuery {
        meta_ttl: Duration::from_secs(1),
        ..query(None, None, false)
    };
    let started = Instant::now();
    loop {
        let page = a.history("s", &query(None, None, false)).await.unwrap();
        if page.publications.is_empty() {
            assert_eq!(page.position, kept, "the position outlives the stream");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a stream with a 1s ttl still holds {page:?} after 4s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    loop {
        let exists = redis.cli(&["EXISTS", &format!("{prefix}.stream.meta.m")]);
        if exists.trim() == "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a meta with a 1s ttl still exists after 4s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = a.history("m", &short_query).await.unwrap();
    assert_ne!(
        page.position.epoch, lost.epoch,
        "a new epoch after meta_ttl"
    );
    assert_eq!(page.position.offset, 0);
    assert!(page.publications.is_empty());
    let next = a
        .publish("m", publication("{}"), &short_meta)
        .await
        .unwrap();
    // The read and the publish may fall on either side of a 1 s period
    // boundary (the read's epoch is checked against the publish's in
    // reads_of_streams_nobody_published_to_write_nothing, with a long TTL).
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, lost.epoch, "a new epoch after meta_ttl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_streams_nobody_published_to_write_nothing() {
    let mut redis = blocking(RedisServer::start).await;
    let prefix = prefix("fresh");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let keys = |redis: &RedisServer| -> Vec<String> {
        let mut keys = redis.scan(&format!("{prefix}.stream*"));
        keys.sort();
        keys
    };
    let before = keys(&redis);
    // A client probing fresh names: history reads, recoverable subscribes
    // (limit 0), recoveries from offset 0.
    let mut answers = Vec::new();
    for i in 0..500 {
        let name = format!("probe-{i}");
        let page = a.history(&name, &query(None, None, false)).await.unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.position.offset, 0);
        let top = a
            .history(&name, &query(None, Some(0), false))
            .await
            .unwrap();
        assert_eq!(top.position, page.position, "stable for {name}");
        let since = a
            .history(&name, &query(Some(page.position.clone()), None, false))
            .await
            .unwrap();
        assert_eq!(since.position, page.position);
        answers.push(page.position);
    }
    assert_eq!(keys(&redis), before, "reads created keys under the prefix");

    // Every node answers the same, and the first publish takes that epoch:
    // a subscriber positioned at (epoch, 0) stays positioned.
    let other = b
        .history("probe-7", &query(None, Some(0), false))
        .await
        .unwrap();
    assert_eq!(other.position, answers[7]);
    let first = b
        .publish("probe-7", publication("{}"), &history_options(10))
        .await
        .unwrap();
    assert_eq!(
        first,
        StreamPosition {
            offset: 1,
            epoch: answers[7].epoch.clone()
        }
    );
    let page = a
        .history("probe-7", &query(Some(answers[7].clone()), None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1]);

    // Redis restarted empty: the stream is gone, and it comes back with
    // another epoch, so a client holding (epoch, 1) is told, not misled.
    redis.stop();
    redis.wipe();
    redis.restart();
    wait_until(
        "node a to be healthy again",
        10.0,
        || a.engine.healthy(),
        || (),
    )
    .await;
    let after = loop {
        match a.history("probe-7", &query(None, Some(0), false)).await {
            Ok(page) => break page,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(after.position.offset, 0);
    assert_ne!(after.position.epoch, first.epoch);
    let recovery = a
        .history("probe-7", &query(Some(first.clone()), None, false))
        .await;
    assert!(
        matches!(recovery, Err(BusError::UnrecoverablePosition)),
        "{recovery:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_cannot_keep_up_loses_messages_counted_and_signalled() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("overflow");
    let slow = RedisConfig {
        pubsub_buffer: 1,
        pubsub_workers: 1,
        ..config(vec![redis.url()], &prefix)
    };
    let a = node_with(slow, Recorder::slow("node-a", Duration::from_millis(20))).await;
    let engine = a.engine.clone();
    wait_until("node A healthy", 5.0, || engine.healthy(), || ()).await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("flood").await.unwrap();
    for n in 1..=40 {
        b.publish(
            "flood",
            publication(&format!("{{\"n\":{n}}}")),
            &history_options(100),
        )
        .await
        .unwrap();
    }
    let events = a.events.clone();
    wait_until(
        "dropped messages and a gap signal",
        5.0,
        || engine.stats().messages_dropped > 0 && events.gaps("flood") > 0,
        || (engine.stats(), events.gaps("flood")),
    )
    .await;
    // Once the worker caught up, delivery goes on: publish until one gets
    // through (the first ones may still meet a full queue).
    let started = Instant::now();
    let mut next = 41;
    loop {
        b.publish(
            "flood",
            publication(&format!("{{\"n\":{next}}}")),
            &history_options(100),
        )
        .await
        .unwrap();
        let arrived = || {
            events
                .publications("flood")
                .iter()
                .any(|(p, _)| p.offset > 40)
        };
        let sent = Instant::now();
        while !arrived() && sent.elapsed() < Duration::from_millis(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if arrived() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nothing delivered for 5s after the flood: {:?}",
            engine.stats()
        );
        next += 1;
    }
    let received: Vec<u64> = a
        .events
        .publications("flood")
        .iter()
        .map(|(p, _)| p.offset)
        .collect();
    assert!(received.len() < 40, "some were dropped: {received:?}");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "what arrived is in order: {received:?}"
    );
    assert!(engine.stats().messages_received >= 41);
    // What was dropped is in history for the subscribers to recover.
    let page = a.history("flood", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), (1..=next).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Control channel and node registry

fn disconnect(user: &str) -> ControlCommand {
    ControlCommand::Disconnect {
        user: user.into(),
        client: String::new(),
        whitelist: vec!["keep-me".into()],
        code: 3001,
        reason: "bye".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands_reach_every_node_exactly_once() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("control");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;

    let first = disconnect("mallory");
    a.publish_control(&first).await.unwrap();
    // A applies its own command at once, before any round trip.
    assert_eq!(a.events.controls(), std::slice::from_ref(&first));

    // Markers published after A's command completed. Redis delivers the
    // control channel in publication order, so once B has A's marker (and A
    // has B's), a duplicate of A's command would already be there.
    let marker = |user: &str| ControlCommand::Refresh {
        user: user.into(),
        client: "c".into(),
        expired: false,
        expire_at: Some(4_000_000_000),
    };
    let (marker_a, marker_b) = (marker("marker-a"), marker("marker-b"));
    a.publish_control(&marker_a).await.unwrap();
    b.publish_control(&marker_b).await.unwrap();
    for (name, node, awaited) in [("A", &a, &marker_b), ("B", &b, &marker_a)] {
        let events = node.events.clone();
        wait_until(
            &format!("the other node's marker on node {name}"),
            5.0,
            || events.controls().contains(awaited),
            || events.controls(),
        )
        .await;
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let controls = node.events.controls();
        for command in [&first, &marker_a, &marker_b] {
            assert_eq!(
                controls.iter().filter(|c| *c == command).count(),
                1,
                "node {name} applied {command:?} exactly once: {controls:?}"
            );
        }
        assert_eq!(controls.len(), 3, "node {name}: {controls:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registry_lists_live_nodes_and_forgets_dropped_ones() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("registry");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let both = vec!["node-a".to_string(), "node-b".to_string()];
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "both nodes in the registry",
            5.0,
            || uids(&engine) == both,
            || engine.nodes(),
        )
        .await;
    }
    let seen_b = a
        .nodes()
        .into_iter()
        .find(|n| n.uid == "node-b")
        .expect("node-b listed");
    assert_eq!(seen_b.name, "name-node-b", "heartbeats carry the node info");
    assert_eq!(seen_b.num_clients, 3);

    let Node { engine, events: _ } = b;
    drop(engine);
    let dropped = Instant::now();
    let engine = a.engine.clone();
    wait_until(
        "node-b to leave A's registry after node_ttl",
        4.0,
        || uids(&engine) == ["node-a"],
        || engine.nodes(),
    )
    .await;
    // Not before its last heartbeat aged node_ttl (1 s), give or take one
    // heartbeat interval.
    assert!(
        dropped.elapsed() >= Duration::from_millis(700),
        "node-b vanished after {:?}, before node_ttl",
        dropped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_removes_the_node_at_once() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("leave");
    // A long node_ttl on A: only `leave` can remove C within the test.
    let a = healthy_node(
        RedisConfig {
            node_ttl: Duration::from_secs(60),
            ..config(vec![redis.url()], &prefix)
        },
        "node-a",
    )
    .await;
    let c = healthy_node(config(vec![redis.url()], &prefix), "node-c").await;
    let engine = a.engine.clone();
    wait_until(
        "node-c in A's registry",
        5.0,
        || uids(&engine) == ["node-a", "node-c"],
        || engine.nodes(),
    )
    .await;

    c.leave().await.unwrap();
    let Node {
        engine: c,
        events: _,
    } = c;
    drop(c);
    wait_until(
        "node-c to leave A's registry at once",
        1.0,
        || uids(&engine) == ["node-a"],
        || engine.nodes(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_stays_out_of_the_registry_while_it_drains() {
    // Graceful shutdown: the node calls leave() first, then keeps running
    // while its clients are disconnected over the drain period. The others
    // must not list it again in that time (Centrifugo stops heartbeats on
    // shutdown).
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("leavestay");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let c = healthy_node(config(vec![redis.url()], &prefix), "node-c").await;
    let engine = a.engine.clone();
    wait_until(
        "node-c in A's registry",
        5.0,
        || uids(&engine) == ["node-a", "node-c"],
        || engine.nodes(),
    )
    .await;
    c.leave().await.unwrap();
    wait_until(
        "node-c to leave A's registry",
        1.0,
        || uids(&engine) == ["node-a"],
        || engine.nodes(),
    )
    .await;
    // Five heartbeat intervals of node-c, still running.
    let left = Instant::now();
    while left.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            uids(&engine),
            ["node-a"],
            "node-c is listed again {:?} after leave() (its heartbeats go on)",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.healthy(), "node-c kept running");
}

// ---------------------------------------------------------------------------
// Sharded mode: several independent Redis servers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_mode_spreads_channels_over_servers() {
    let (s1, s2) = blocking(|| {
        std::thread::scope(|scope| {
            let one = scope.spawn(RedisServer::start);
            let two = scope.spawn(RedisServer::start);
            let join = |h: std::thread::ScopedJoinHandle<'_, RedisServer>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            };
            (join(one), join(two))
        })
    })
    .await;
    let prefix = prefix("sharded");
    let addresses = vec![s1.url(), s2.url()];
    let a = healthy_node(config(addresses.clone(), &prefix), "node-a").await;
    let b = healthy_node(config(addresses, &prefix), "node-b").await;

    let channels: Vec<String> = (0..50).map(|i| format!("ch{i}")).collect();
    for channel in &channels {
        a.subscribe(channel).await.unwrap();
    }
    for channel in &channels {
        let position = b
            .publish(
                channel,
                publication(&format!(r#"{{"ch":"{channel}"}}"#)),
                &history_options(10),
            )
            .await
            .unwrap();
        assert_eq!(position.offset, 1, "{channel}");
    }
    let events = a.events.clone();
    let all = channels.clone();
    wait_until(
        "every channel's publication on node A",
        10.0,
        || all.iter().all(|c| events.publications(c).len() == 1),
        || {
            all.iter()
                .filter(|c| events.publications(c).is_empty())
                .cloned()
                .collect::<Vec<_>>()
        },
    )
    .await;
    for channel in &channels {
        let (p, epoch) = &a.events.publications(channel)[0];
        assert_eq!(p.data.get(), format!(r#"{{"ch":"{channel}"}}"#));
        assert_eq!(p.offset, 1);
        assert!(!epoch.is_empty());
        let page = a.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(offsets(&page.publications), [1], "{channel}");
    }

    let pattern = format!("{prefix}.stream.*");
    let meta = format!("{prefix}.stream.meta.");
    let streams = |server: &RedisServer| -> Vec<String> {
        server
            .scan(&pattern)
            .into_iter()
            .filter(|k| !k.starts_with(&meta))
            .collect()
    };
    let (on1, on2) = (streams(&s1), streams(&s2));
    assert!(
        !on1.is_empty() && !on2.is_empty(),
        "both servers hold streams: {} and {}",
        on1.len(),
        on2.len()
    );
    for channel in &channels {
        let key = format!("{prefix}.stream.{channel}");
        let holders = [&on1, &on2].iter().filter(|s| s.contains(&key)).count();
        assert_eq!(holders, 1, "{key} lives on exactly one server");
    }
    assert_eq!(on1.len() + on2.len(), channels.len(), "{on1:?} {on2:?}");

    // Presence follows the same sharding, and both nodes agree.
    for channel in channels.iter().take(10) {
        a.add_presence(channel, info("u", "c"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(b.presence(channel).await.unwrap().len(), 1, "{channel}");
    }
    // The registry and control work over several shards too.
    let engine = b.engine.clone();
    wait_until(
        "both nodes in B's registry",
        5.0,
        || uids(&engine) == ["node-a", "node-b"],
        || engine.nodes(),
    )
    .await;
    for i in 0..4 {
        a.publish_control(&disconnect(&format!("u{i}")))
            .await
            .unwrap();
    }
    let events = b.events.clone();
    wait_until(
        "4 control commands on node B",
        5.0,
        || events.controls().len() >= 4,
        || events.controls(),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Redis Cluster

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_publishes_keeps_history_and_presence_across_nodes() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("cluster");
    let a = healthy_node(cluster_config(&cluster, &prefix), "node-a").await;
    let b = healthy_node(cluster_config(&cluster, &prefix), "node-b").await;

    let channels = ["alpha", "beta", "gamma", "delta", "odd{name}"];
    for channel in channels {
        a.subscribe(channel).await.unwrap();
    }
    let mut epochs = BTreeMap::new();
    for channel in channels {
        for n in 1..=3 {
            let position = b
                .publish(channel, publication(&odd_data(n)), &history_options(10))
                .await
                .unwrap();
            assert_eq!(position.offset, n, "{channel}");
            epochs.insert(channel, position.epoch);
        }
    }
    let events = a.events.clone();
    wait_until(
        "3 publications per channel on node A",
        10.0,
        || channels.iter().all(|c| events.publications(c).len() >= 3),
        || events.events(),
    )
    .await;
    for channel in channels {
        let received = a.events.publications(channel);
        assert_eq!(
            received.iter().map(|(p, _)| p.offset).collect::<Vec<_>>(),
            [1, 2, 3],
            "{channel}"
        );
        assert!(received.iter().all(|(_, e)| *e == epochs[channel]));
        let page = a.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(offsets(&page.publications), [1, 2, 3], "{channel}");
        assert_eq!(page.position.epoch, epochs[channel]);
        for p in &page.publications {
            assert_eq!(p.data.get(), odd_data(p.offset));
        }
    }
    // The channels' keys are spread over the masters.
    let holders = cluster
        .nodes
        .iter()
        .filter(|n| !n.scan(&format!("{prefix}.stream.*")).is_empty())
        .count();
    assert!(holders >= 2, "streams live on {holders} of 3 masters");

    b.publish_join("alpha", info("u1", "c1")).await.unwrap();
    wait_until(
        "a join on node A",
        5.0,
        || !events.joins("alpha").is_empty(),
        || events.events(),
    )
    .await;

    for (node, client) in [(&a, "ca"), (&b, "cb")] {
        node.add_presence("alpha", info("u1", client), Duration::from_secs(60))
            .await
            .unwrap();
    }
    for node in [&a, &b] {
        let presence = node.presence("alpha").await.unwrap();
        assert_eq!(
            presence.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ca", "cb"]
        );
        let stats = node.presence_stats("alpha").await.unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (2, 1));
    }

    let command = disconnect("eve");
    a.publish_control(&command).await.unwrap();
    let b_events = b.events.clone();
    wait_until(
        "the control command on node B",
        5.0,
        || b_events.controls() == [command.clone()],
        || b_events.controls(),
    )
    .await;
    let engine = a.engine.clone();
    wait_until(
        "both nodes in the registry",
        5.0,
        || uids(&engine) == ["node-a", "node-b"],
        || engine.nodes(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_uses_sharded_pubsub_for_client_channels() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("spublish");
    let a = healthy_node(cluster_config(&cluster, &prefix), "node-a").await;
    let b = healthy_node(cluster_config(&cluster, &prefix), "node-b").await;
    a.subscribe("sharded").await.unwrap();

    let client_channel = format!("{prefix}.client.{{sharded}}");
    let owner = cluster.node_for(&client_channel);
    let shardnumsub = owner.cli(&["PUBSUB", "SHARDNUMSUB", &client_channel]);
    assert_eq!(
        shardnumsub.lines().nth(1).map(str::trim),
        Some("1"),
        "node A holds a sharded subscription on the owning master: {shardnumsub}"
    );
    for node in &cluster.nodes {
        let numsub = node.cli(&["PUBSUB", "NUMSUB", &client_channel]);
        assert_eq!(
            numsub.lines().nth(1).map(str::trim),
            Some("0"),
            "no classic subscription to {client_channel}: {numsub}"
        );
    }

    let monitors: Vec<_> = cluster.nodes.iter().map(|n| n.monitor()).collect();
    let publish_before: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.command_calls("publish"))
        .sum();
    let spublish_before = owner.command_calls("spublish");

    for n in 1..=2 {
        b.publish(
            "sharded",
            publication(&odd_data(n)),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    b.publish("sharded", publication(&odd_data(3)), &history_options(10))
        .await
        .unwrap();
    b.publish_join("sharded", info("u", "c")).await.unwrap();
    let events = a.events.clone();
    wait_until(
        "3 publications and a join on node A",
        5.0,
        || events.publications("sharded").len() == 3 && events.joins("sharded").len() == 1,
        || events.events(),
    )
    .await;

    let owner_monitor = &monitors[cluster
        .nodes
        .iter()
        .position(|n| n.port() == owner.port())
        .unwrap()];
    wait_until(
        "4 SPUBLISH of the client channel in MONITOR",
        5.0,
        || owner_monitor.count("spublish", &client_channel) >= 4,
        || owner_monitor.lines(),
    )
    .await;
    for (node, monitor) in cluster.nodes.iter().zip(&monitors) {
        assert_eq!(
            monitor.count("publish", &client_channel),
            0,
            "classic PUBLISH of {client_channel} on port {}: {:?}",
            node.port(),
            monitor.lines()
        );
    }
    let publish_after: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.command_calls("publish"))
        .sum();
    assert_eq!(
        publish_after, publish_before,
        "no PUBLISH at all in cluster mode (cmdstat_publish)"
    );
    let spublish_after = owner.command_calls("spublish");
    assert!(
        spublish_after >= spublish_before + 4,
        "cmdstat_spublish on the owner went {spublish_before} -> {spublish_after}"
    );
}

// ---------------------------------------------------------------------------
// TLS and ACL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_publishes_and_receives() {
    let tls = TlsMaterial::generate();
    let ca_pem = tls.ca_pem.clone().into_bytes();
    let redis = blocking(move || RedisServer::start_tls(&tls)).await;
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let prefix = prefix("tls");
    let with_ca = RedisConfig {
        tls_ca_pem: Some(ca_pem),
        ..config(vec![redis.url()], &prefix)
    };
    let a = healthy_node(with_ca.clone(), "node-a").await;
    let b = healthy_node(with_ca, "node-b").await;
    a.subscribe("secure").await.unwrap();
    let position = b
        .publish("secure", publication(&odd_data(1)), &history_options(10))
        .await
        .unwrap();
    assert_eq!(position.offset, 1);
    let events = a.events.clone();
    wait_until(
        "the publication over TLS",
        5.0,
        || events.publications("secure").len() == 1,
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("secure"), [odd_data(1)]);
    let page = a
        .history("secure", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_ca_is_unavailable() {
    let tls = TlsMaterial::generate();
    let redis = blocking(move || RedisServer::start_tls(&tls)).await;
    let prefix = prefix("tlsnoca");
    // System roots do not know the test CA.
    let c = node(config(vec![redis.url()], &prefix), "node-c").await;
    let started = Instant::now();
    match c
        .publish("secure", publication("{}"), &PublishOptions::default())
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publishing without trusting the CA: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failing took {:?}",
        started.elapsed()
    );
    assert!(c
        .history("secure", &query(None, None, false))
        .await
        .is_err());
    assert_unhealthy_for(&c, Duration::from_millis(2500)).await;
}

/// Checks `healthy()` stays false for `window` (health is probed every
/// second, so this spans at least two probes).
async fn assert_unhealthy_for(node: &RedisEngine, window: Duration) {
    let started = Instant::now();
    while started.elapsed() < window {
        assert!(!node.healthy(), "healthy() turned true");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_credentials_in_the_url_or_the_fields_work() {
    let redis = blocking(|| RedisServer::start_acl("alice", "s3cret")).await;
    let anonymous = redis.cli_anonymous(&["PING"]);
    assert!(
        anonymous.contains("NOAUTH"),
        "the test server must refuse anonymous clients: {anonymous}"
    );
    let prefix = prefix("acl");
    let port = redis.port();
    let a = healthy_node(
        config(
            vec![format!("redis://alice:s3cret@127.0.0.1:{port}")],
            &prefix,
        ),
        "node-a",
    )
    .await;
    let b = healthy_node(
        RedisConfig {
            user: Some("alice".into()),
            password: Some("s3cret".into()),
            ..config(vec![redis.url()], &prefix)
        },
        "node-b",
    )
    .await;
    // The fields win over what the URL says.
    let c = healthy_node(
        RedisConfig {
            password: Some("s3cret".into()),
            ..config(
                vec![format!("redis://alice:wrong@127.0.0.1:{port}")],
                &prefix,
            )
        },
        "node-c",
    )
    .await;
    a.subscribe("acl").await.unwrap();
    b.subscribe("acl").await.unwrap();
    c.subscribe("acl").await.unwrap();
    b.publish("acl", publication(r#"{"from":"b"}"#), &history_options(10))
        .await
        .unwrap();
    a.publish("acl", publication(r#"{"from":"a"}"#), &history_options(10))
        .await
        .unwrap();
    c.publish("acl", publication(r#"{"from":"c"}"#), &history_options(10))
        .await
        .unwrap();
    for node in [&a, &b, &c] {
        let events = node.events.clone();
        wait_until(
            "3 publications on every node",
            5.0,
            || events.publications("acl").len() == 3,
            || events.events(),
        )
        .await;
    }
    let page = c.history("acl", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_wrong_password_is_unavailable_and_unhealthy() {
    let redis = blocking(|| RedisServer::start_acl("alice", "s3cret")).await;
    let prefix = prefix("aclbad");
    let port = redis.port();
    let wrong = node(
        config(
            vec![format!("redis://alice:nope@127.0.0.1:{port}")],
            &prefix,
        ),
        "node-w",
    )
    .await;
    let anonymous = node(config(vec![redis.url()], &prefix), "node-anon").await;
    for n in [&wrong, &anonymous] {
        let started = Instant::now();
        match n
            .publish("x", publication("{}"), &history_options(10))
            .await
        {
            Err(BusError::Unavailable(_)) => {}
            other => panic!("{}: publish with bad credentials: {other:?}", n.events.uid),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        match n.presence("x").await {
            Err(BusError::Unavailable(_)) => {}
            other => panic!("presence with bad credentials: {other:?}"),
        }
    }
    assert_unhealthy_for(&wrong, Duration::from_millis(2500)).await;
    assert!(!anonymous.healthy());
    // Nothing was written.
    assert!(redis.scan(&format!("{prefix}.*")).is_empty());
}

// ---------------------------------------------------------------------------
// Failure and recovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_with_gap_signal_and_epoch_change_on_data_loss() {
    let mut redis = blocking(RedisServer::start).await;
    let prefix = prefix("restart");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("live").await.unwrap();
    // Subscribed and left before the outage: must not come back.
    a.subscribe("old").await.unwrap();
    a.unsubscribe("old").await.unwrap();
    let before = b
        .publish("live", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "the first publication",
        5.0,
        || events.publications("live").len() == 1,
        || events.events(),
    )
    .await;
    assert_eq!(a.events.gaps("live"), 0, "no gap before any failure");

    // Down, data saved.
    redis = blocking(move || {
        redis.stop_saving();
        redis
    })
    .await;
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy() to turn false after Redis stopped",
            3.0,
            || !engine.healthy(),
            || (),
        )
        .await;
    }
    let started = Instant::now();
    match b
        .publish("live", publication(r#"{"n":0}"#), &history_options(10))
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish while Redis is down: {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "publish failed after {took:?}, command_timeout is 1s"
    );
    match b
        .publish(
            "live",
            publication(r#"{"n":0}"#),
            &PublishOptions::default(),
        )
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish without history while Redis is down: {other:?}"),
    }
    // A control command still acts on this node while Redis is down.
    let command = disconnect("during-outage");
    match a.publish_control(&command).await {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish_control while Redis is down: {other:?}"),
    }
    assert_eq!(a.events.controls(), [command], "applied locally anyway");

    // Back, with its data.
    redis = blocking(move || {
        redis.restart();
        redis
    })
    .await;
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy() again after Redis restarted",
            10.0,
            || engine.healthy(),
            || (),
        )
        .await;
    }
    wait_until(
        "on_gap for the subscribed channel after the resubscription",
        5.0,
        || events.gaps("live") >= 1,
        || events.events(),
    )
    .await;
    let after = b
        .publish("live", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    assert_eq!(after.epoch, before.epoch, "the saved stream came back");
    assert_eq!(after.offset, 2);
    wait_until(
        "a publication after the restart",
        5.0,
        || events.data("live").contains(&r#"{"n":2}"#.to_string()),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("live"), [r#"{"n":1}"#, r#"{"n":2}"#]);
    assert_eq!(a.events.gaps("old"), 0, "a channel left before is no gap");
    let numsub = redis.cli(&["PUBSUB", "NUMSUB", &format!("{prefix}.client.old")]);
    assert_eq!(
        numsub.lines().nth(1).map(str::trim),
        Some("0"),
        "a channel left before the outage is not resubscribed: {numsub}"
    );
    // The control channel came back too.
    let after_restart = disconnect("after-restart");
    a.publish_control(&after_restart).await.unwrap();
    let b_events = b.events.clone();
    wait_until(
        "a control command on node B after the restart",
        5.0,
        || b_events.controls().contains(&after_restart),
        || b_events.controls(),
    )
    .await;

    // Down again, data lost: the stream gets a new epoch.
    redis = blocking(move || {
        redis.stop();
        redis.wipe();
        redis.restart();
        redis
    })
    .await;
    let engine = a.engine.clone();
    wait_until(
        "healthy() after the empty restart",
        10.0,
        || engine.healthy(),
        || (),
    )
    .await;
    let page = a.history("live", &query(None, None, false)).await.unwrap();
    assert_ne!(
        page.position.epoch, before.epoch,
        "a lost stream has a new epoch"
    );
    assert!(page.publications.is_empty());
    match a
        .history(
            "live",
            &query(
                Some(StreamPosition {
                    offset: 2,
                    epoch: before.epoch.clone(),
                }),
                None,
                false,
            ),
        )
        .await
    {
        Err(BusError::UnrecoverablePosition) => {}
        other => panic!("recovering into a lost stream: {other:?}"),
    }
    // Still subscribed after the second restart.
    b.publish(
        "live",
        publication(r#"{"n":3}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    wait_until(
        "a publication after the empty restart",
        5.0,
        || events.data("live").contains(&r#"{"n":3}"#.to_string()),
        || events.events(),
    )
    .await;
    drop(redis);
}

// ---------------------------------------------------------------------------
// Garbage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_pubsub_is_rejected_and_counted() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("garbage");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("g").await.unwrap();
    let rejected_before = a.stats().messages_rejected;
    let client_channel = format!("{prefix}.client.g");
    let control = format!("{prefix}.control");
    let garbage: [&[u8]; 7] = [
        b"not-an-envelope",
        b"p1:x:y:{",
        b"p1:1:e:not json",
        b"j1:[",
        b"\xff\xfe\x00",
        b"",
        b"p1:0::{\"data\":",
    ];
    for bytes in garbage {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], bytes);
        assert_eq!(reply.trim(), "1", "one subscriber (node A) got {bytes:?}");
    }
    for bytes in [&b"c1:{}"[..], b"hello", b"c1:{\"node\":1}"] {
        let reply = redis.cli_stdin(&["PUBLISH", &control], bytes);
        assert_eq!(reply.trim(), "2", "both nodes got {bytes:?}");
    }
    let engine = a.engine.clone();
    wait_until(
        "10 rejected messages",
        5.0,
        || engine.stats().messages_rejected >= rejected_before + 10,
        || engine.stats(),
    )
    .await;
    assert!(a.engine.stats().messages_received >= 10);

    b.publish("g", publication(r#"{"valid":true}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a valid publication after the garbage",
        5.0,
        || !events.publications("g").is_empty(),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("g"), [r#"{"valid":true}"#]);
    assert!(a.events.controls().is_empty());
    assert!(a.healthy());
}

// ---------------------------------------------------------------------------
// Configuration errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_addresses_fail_at_connect() {
    for addresses in [vec!["nonsense://x".to_string()], Vec::new()] {
        let result =
            RedisEngine::connect(config(addresses.clone(), "bad"), Recorder::new("x")).await;
        match result {
            Err(BusError::Internal(message)) => {
                assert!(!message.is_empty())
            }
            Err(other) => panic!("{addresses:?}: {other:?}"),
            Ok(_) => panic!("{addresses:?}: connect succeeded"),
        }
    }
}

// ---------------------------------------------------------------------------
// More failure modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pubsub_connections_resubscribe_and_signal_a_gap() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("clientkill");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("k").await.unwrap();
    assert_eq!(a.events.gaps("k"), 0);

    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 4,
        "both nodes' pub/sub connections killed: {killed}"
    );
    let events = a.events.clone();
    wait_until(
        "on_gap for the subscribed channel",
        5.0,
        || events.gaps("k") >= 1,
        || events.events(),
    )
    .await;
    let numsub = redis.cli(&["PUBSUB", "NUMSUB", &format!("{prefix}.client.k")]);
    assert_eq!(numsub.lines().nth(1).map(str::trim), Some("1"), "{numsub}");
    b.publish(
        "k",
        publication(r#"{"after":"kill"}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    wait_until(
        "a publication after the reconnect",
        5.0,
        || events.data("k") == [r#"{"after":"kill"}"#],
        || events.events(),
    )
    .await;
    let command = disconnect("after-kill");
    b.publish_control(&command).await.unwrap();
    wait_until(
        "a control command after the reconnect",
        5.0,
        || events.controls() == [command.clone()],
        || events.controls(),
    )
    .await;
    let engine = a.engine.clone();
    wait_until("A healthy again", 5.0, || engine.healthy(), || ()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubsub_reconnect_signals_a_gap_even_two_close_together() {
    // Redis flapping: two reconnects a second apart may each lose messages,
    // so each must tell the positioned subscribers to recover.
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("flap");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.subscribe("k").await.unwrap();
    let client_channel = format!("{prefix}.client.k");
    let events = a.events.clone();
    let engine = a.engine.clone();
    let mut kills = Vec::new();
    for round in 1..=2 {
        let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed.trim().parse::<u32>().unwrap_or(0) >= 2, "{killed}");
        kills.push(Instant::now());
        // Back: subscribed again in Redis, and healthy.
        let started = Instant::now();
        loop {
            let numsub = redis.cli(&["PUBSUB", "NUMSUB", &client_channel]);
            if numsub.lines().nth(1).map(str::trim) == Some("1") && engine.healthy() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: not resubscribed after 5s: {numsub}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_until(
            &format!("gap signal number {round}"),
            3.0,
            || events.gaps("k") >= round,
            || (events.gaps("k"), kills[0].elapsed()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_left_during_an_outage_is_not_resubscribed() {
    // The last local subscriber leaves while Redis is down: the node must
    // not hold (and receive) that channel again once Redis is back.
    let mut redis = blocking(RedisServer::start).await;
    let prefix = prefix("leftdown");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.subscribe("kept").await.unwrap();
    a.subscribe("left").await.unwrap();
    redis = blocking(move || {
        redis.stop_saving();
        redis
    })
    .await;
    let engine = a.engine.clone();
    wait_until("A unhealthy", 3.0, || !engine.healthy(), || ()).await;
    // The gateway logs a failed unsubscribe and forgets the channel.
    let result = a.unsubscribe("left").await;
    redis = blocking(move || {
        redis.restart();
        redis
    })
    .await;
    wait_until("A healthy again", 10.0, || engine.healthy(), || ()).await;
    let events = a.events.clone();
    wait_until(
        "the resubscription of the kept channel",
        5.0,
        || events.gaps("kept") >= 1,
        || events.events(),
    )
    .await;
    let left = format!("{prefix}.client.left");
    let started = Instant::now();
    loop {
        let numsub = redis.cli(&["PUBSUB", "NUMSUB", &left]);
        if numsub.lines().nth(1).map(str::trim) == Some("0") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{left} is subscribed again after the reconnect (unsubscribe during the \
             outage returned {result:?}): {numsub}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_started_before_redis_connects_when_it_comes_up() {
    let mut redis = blocking(RedisServer::start).await;
    redis = blocking(move || {
        redis.stop();
        redis
    })
    .await;
    let prefix = prefix("late");
    let a = node(config(vec![redis.url()], &prefix), "node-a").await;
    assert!(!a.healthy());
    match a
        .publish("late", publication("{}"), &PublishOptions::default())
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish before Redis is up: {other:?}"),
    }
    redis = blocking(move || {
        redis.restart();
        redis
    })
    .await;
    let engine = a.engine.clone();
    wait_until("healthy once Redis is up", 10.0, || engine.healthy(), || ()).await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("late").await.unwrap();
    b.publish("late", publication(r#"{"late":1}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a publication",
        5.0,
        || events.data("late") == [r#"{"late":1}"#],
        || events.events(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_at_connect() {
    let port = support::free_port();
    let config = RedisConfig {
        cluster_addresses: vec![format!("redis://127.0.0.1:{port}")],
        ..config(Vec::new(), &prefix("nocluster"))
    };
    let started = Instant::now();
    match RedisEngine::connect(config, Recorder::new("x")).await {
        Err(BusError::Unavailable(_)) => {}
        Err(other) => panic!("unexpected error: {other:?}"),
        Ok(_) => panic!("connected to a cluster that does not exist"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_closes_its_connections() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("drop");
    let clients = || redis.cli(&["CLIENT", "LIST"]).lines().count();
    assert_eq!(clients(), 1, "only redis-cli itself");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.subscribe("x").await.unwrap();
    assert!(clients() >= 4, "commands and two pub/sub links");
    let Node { engine, events: _ } = a;
    drop(engine);
    let started = Instant::now();
    while clients() > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "connections left open after the engine was dropped:\n{}",
            redis.cli(&["CLIENT", "LIST"])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_mode_keeps_working_on_the_servers_that_are_up() {
    let (s1, mut s2) = blocking(|| {
        std::thread::scope(|scope| {
            let one = scope.spawn(RedisServer::start);
            let two = scope.spawn(RedisServer::start);
            let join = |h: std::thread::ScopedJoinHandle<'_, RedisServer>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            };
            (join(one), join(two))
        })
    })
    .await;
    let prefix = prefix("shardfail");
    let addresses = vec![s1.url(), s2.url()];
    let a = healthy_node(config(addresses.clone(), &prefix), "node-a").await;
    let b = healthy_node(config(addresses, &prefix), "node-b").await;
    let channels: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for channel in &channels {
        a.subscribe(channel).await.unwrap();
        b.publish(channel, publication("{}"), &history_options(10))
            .await
            .unwrap();
    }
    let on_s1: Vec<String> = channels
        .iter()
        .filter(|c| s1.cli(&["EXISTS", &format!("{prefix}.stream.{c}")]).trim() == "1")
        .cloned()
        .collect();
    assert!(
        !on_s1.is_empty() && on_s1.len() < channels.len(),
        "channels on both servers: {on_s1:?}"
    );
    let on_s2: Vec<String> = channels
        .iter()
        .filter(|c| !on_s1.contains(c))
        .cloned()
        .collect();

    s2 = blocking(move || {
        s2.stop();
        s2
    })
    .await;
    let engine = a.engine.clone();
    wait_until(
        "A unhealthy with one server down",
        3.0,
        || !engine.healthy(),
        || (),
    )
    .await;
    match b
        .publish(&on_s2[0], publication("{}"), &history_options(10))
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish to a channel of the stopped server: {other:?}"),
    }
    let live = &on_s1[0];
    b.publish(live, publication(r#"{"still":"up"}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a publication through the server that is up",
        5.0,
        || events.data(live).contains(&r#"{"still":"up"}"#.to_string()),
        || events.events(),
    )
    .await;
    // Control commands fall back to the server that is up.
    for i in 0..3 {
        b.publish_control(&disconnect(&format!("user-{i}")))
            .await
            .unwrap_or_else(|e| panic!("control publish {i} with one server down: {e}"));
    }
    wait_until(
        "3 control commands on node A",
        5.0,
        || events.controls().len() == 3,
        || events.controls(),
    )
    .await;
    drop(s2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_order_holds_under_concurrent_publishing() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("order");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let channels: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    for channel in &channels {
        a.subscribe(channel).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels.clone() {
        let engine = b.engine.clone();
        tasks.spawn(async move {
            for n in 1..=30u64 {
                let position = engine
                    .publish(&channel, publication(&odd_data(n)), &history_options(100))
                    .await
                    .unwrap();
                assert_eq!(position.offset, n);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let events = a.events.clone();
    let all = channels.clone();
    wait_until(
        "30 publications per channel",
        10.0,
        || all.iter().all(|c| events.publications(c).len() >= 30),
        || {
            all.iter()
                .map(|c| events.publications(c).len())
                .collect::<Vec<_>>()
        },
    )
    .await;
    for channel in &channels {
        let received: Vec<u64> = a
            .events
            .publications(channel)
            .iter()
            .map(|(p, _)| p.offset)
            .collect();
        assert_eq!(received, (1..=30).collect::<Vec<_>>(), "{channel}");
        for (p, _) in a.events.publications(channel) {
            assert_eq!(p.data.get(), odd_data(p.offset));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribe_and_unsubscribe_settle_in_call_order() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("churn");
    // One link and one worker, so a final marker proves absence.
    let single = RedisConfig {
        pubsub_connections: 1,
        pubsub_workers: 1,
        ..config(vec![redis.url()], &prefix)
    };
    let a = healthy_node(single, "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let engine = a.engine.clone();
        tasks.spawn(async move {
            let channel = format!("ch{i}");
            engine.subscribe(&channel).await.unwrap();
            engine.unsubscribe(&channel).await.unwrap();
            // The first 300 end subscribed, the last 100 not.
            if i < 300 {
                engine.subscribe(&channel).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let listed = redis.cli(&["PUBSUB", "CHANNELS", &format!("{prefix}.client.*")]);
    let mut listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("{prefix}.client.ch{i}")).collect();
    expected.sort();
    assert_eq!(listed, expected, "what Redis has subscribed");

    for i in 0..400 {
        b.publish(
            &format!("ch{i}"),
            publication(&format!("{{\"i\":{i}}}")),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    b.publish(
        "ch0",
        publication(r#"{"marker":true}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    let events = a.events.clone();
    wait_until(
        "the marker",
        10.0,
        || events.data("ch0").len() == 2,
        || events.data("ch0"),
    )
    .await;
    for i in 0..400 {
        let expected = match i {
            0 => 2, // and the marker
            1..300 => 1,
            _ => 0,
        };
        assert_eq!(
            a.events.publications(&format!("ch{i}")).len(),
            expected,
            "ch{i}"
        );
    }
    assert_eq!(a.events.gaps("ch0"), 0, "no gap without a reconnect");
}

// ---------------------------------------------------------------------------
// Redis Cluster: a master restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_survives_each_master_restarting() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("clusterrestart");
    // One channel on each master.
    let mut channels: Vec<(u16, String)> = Vec::new();
    for i in 0.. {
        let channel = format!("survivor{i}");
        let port = cluster
            .node_for(&format!("{prefix}.client.{{{channel}}}"))
            .port();
        if channels.iter().all(|(p, _)| *p != port) {
            channels.push((port, channel));
        }
        if channels.len() == 3 {
            break;
        }
        assert!(
            i < 200,
            "no channel name maps to every master: {channels:?}"
        );
    }
    let a = healthy_node(cluster_config(&cluster, &prefix), "node-a").await;
    let b = healthy_node(cluster_config(&cluster, &prefix), "node-b").await;
    let mut epochs = BTreeMap::new();
    for (_, channel) in &channels {
        a.subscribe(channel).await.unwrap();
        let position = b
            .publish(channel, publication(r#"{"n":0}"#), &history_options(100))
            .await
            .unwrap();
        epochs.insert(channel.clone(), position.epoch);
    }
    let events = a.events.clone();
    let mut cluster = cluster;
    // A round starts 2.5 s after the last gap signal of the channel it
    // restarts: the engine merges reconnect signals closer than 2 s (see
    // every_pubsub_reconnect_signals_a_gap_even_two_close_together); this
    // test is about each master's restart on its own.
    for (round, (port, restarted)) in channels.clone().into_iter().enumerate() {
        let round = round + 1;
        if let Some(at) = events.gap_times(&restarted).last() {
            let spacing = Duration::from_millis(2500);
            if at.elapsed() < spacing {
                tokio::time::sleep(spacing - at.elapsed()).await;
            }
        }
        let gaps_before = events.gaps(&restarted);
        cluster = blocking(move || {
            let node = cluster
                .nodes
                .iter_mut()
                .find(|n| n.port() == port)
                .expect("the master");
            node.stop_saving();
            node.restart();
            cluster
        })
        .await;
        let client_channel = format!("{prefix}.client.{{{restarted}}}");
        let engine = a.engine.clone();
        let watched = restarted.clone();
        wait_until(
            &format!("round {round}: on_gap for {restarted} after its master restarted"),
            10.0,
            || events.gaps(&watched) > gaps_before,
            || {
                let owner = cluster.node_for(&client_channel);
                (
                    events.gaps(&watched),
                    format!("A healthy: {}", engine.healthy()),
                    owner.cli(&["PUBSUB", "SHARDNUMSUB", &client_channel]),
                )
            },
        )
        .await;
        // Every channel delivers again (publish retried while the cluster
        // settles), in the same stream.
        for (_, channel) in &channels {
            let data = format!(r#"{{"round":{round}}}"#);
            let started = Instant::now();
            let position = loop {
                match b
                    .publish(channel, publication(&data), &history_options(100))
                    .await
                {
                    Ok(position) => break position,
                    Err(e) => assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "round {round}: publish to {channel} 10s after the restart: {e}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(position.epoch, epochs[channel], "{channel}: data kept");
            wait_until(
                &format!("round {round}: delivery on {channel}"),
                10.0,
                || events.data(channel).contains(&data),
                || events.data(channel),
            )
            .await;
        }
        // The control channel too.
        let command = disconnect(&format!("round-{round}"));
        b.publish_control(&command).await.unwrap();
        wait_until(
            &format!("round {round}: a control command on node A"),
            10.0,
            || events.controls().contains(&command),
            || events.controls(),
        )
        .await;
    }
    drop(cluster);
}

// ---------------------------------------------------------------------------
// Signed envelopes (SEC-BUS)

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

/// What an outsider with Redis access sees: subscribes to the Redis channel
/// `channel`, runs `publish`, and returns the first message that arrives.
async fn capture(
    redis: &RedisServer,
    channel: &str,
    publish: impl std::future::Future<Output = ()>,
) -> Vec<u8> {
    use futures_util::StreamExt as _;

    let outsider = redis::Client::open(redis.url()).unwrap();
    let mut listener = outsider.get_async_pubsub().await.unwrap();
    listener.subscribe(channel).await.unwrap();
    publish.await;
    let message = tokio::time::timeout(Duration::from_secs(5), listener.on_message().next())
        .await
        .expect("the outsider sees the real envelope")
        .unwrap();
    message.get_payload_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_tampered_envelopes_reach_no_subscriber() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("forged");
    let ring = || keyring("k1", &[("k1", 7)]);
    let a = signed_node(config(vec![redis.url()], &prefix), "node-a", ring()).await;
    let b = signed_node(config(vec![redis.url()], &prefix), "node-b", ring()).await;
    b.subscribe("news").await.unwrap();

    // An outsider with Redis access listens and captures a real envelope.
    let client_channel = format!("{prefix}.client.news");
    let captured = capture(&redis, &client_channel, async {
        a.publish("news", publication(r#"{"n":1}"#), &history_options(10))
            .await
            .unwrap();
    })
    .await;
    assert!(captured.starts_with(b"s1:"), "signed on the wire");
    let events = b.events.clone();
    wait_until(
        "the real publication",
        5.0,
        || events.data("news").len() == 1,
        || events.events(),
    )
    .await;

    // Crafted without a key, a replay, one bit flipped in the body, a
    // valid-looking envelope under a key id nobody holds.
    let mut flipped = captured.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x01;
    let foreign = {
        let outsider_ring = Integrity::new(keyring("k9", &[("k9", 9)]), "intruder");
        let body = br#"{"data":{"n":666}}"#;
        let mut e = outsider_ring.sign(client_channel.as_bytes(), b"p1", body, unix_ms());
        e.extend_from_slice(b"p1:0::");
        e.extend_from_slice(body);
        e
    };
    let crafted = br#"p1:2:x:{"data":{"n":666}}"#.to_vec();
    for (bytes, what) in [
        (&crafted, "crafted"),
        (&captured, "replay"),
        (&flipped, "bit flip"),
        (&foreign, "foreign key"),
    ] {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], bytes);
        assert_eq!(reply.trim(), "1", "{what}: node B got it");
    }
    let engine = b.engine.clone();
    wait_until(
        "four refusals",
        5.0,
        || engine.stats().envelopes_rejected.iter().sum::<u64>() >= 4,
        || refused(&engine),
    )
    .await;
    assert_eq!(
        refused(&b.engine),
        BTreeMap::from([
            ("bad_mac", 1),
            ("replay", 1),
            ("unknown_key", 1),
            ("unsigned", 1)
        ])
    );
    // Nothing reached node B's Hub but the one real publication.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.events.data("news"), [r#"{"n":1}"#]);
    assert_eq!(b.stats().messages_rejected, 0, "refused before decoding");
}

/// With sealed history the position is signed too (`s2:`): an outsider who
/// captured a publication cannot hand it, at another offset or epoch, to a
/// node that never saw the original (whose replay window knows nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sealed_history_a_captured_publication_cannot_be_moved() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("moved");
    let bus = || keyring("k1", &[("k1", 7)]);
    let history = || history_keyring("h1", &[("h1", 1)]);
    let a = keyed_node(
        config(vec![redis.url()], &prefix),
        "node-a",
        bus(),
        history(),
    )
    .await;
    let c = keyed_node(
        config(vec![redis.url()], &prefix),
        "node-c",
        bus(),
        history(),
    )
    .await;

    let client_channel = format!("{prefix}.client.news");
    let mut position = None;
    let captured = capture(&redis, &client_channel, async {
        position = Some(
            a.publish("news", publication(r#"{"n":1}"#), &history_options(10))
                .await
                .unwrap(),
        );
    })
    .await;
    let position = position.unwrap();
    assert!(captured.starts_with(b"s2:"), "the position is signed");

    // Node C subscribes only now: it never saw the original.
    c.subscribe("news").await.unwrap();
    let original = format!("p1:{}:{}:", position.offset, position.epoch);
    let at = captured
        .windows(original.len())
        .position(|w| w == original.as_bytes())
        .expect("the script wrote the position after the signature");
    let moved = |offset: u64, epoch: &str| {
        let mut bytes = captured[..at].to_vec();
        bytes.extend_from_slice(format!("p1:{offset}:{epoch}:").as_bytes());
        bytes.extend_from_slice(&captured[at + original.len()..]);
        bytes
    };
    for (bytes, what) in [
        (
            moved(position.offset + 1, &position.epoch),
            "another offset",
        ),
        (moved(position.offset, "forged-epoch"), "another epoch"),
    ] {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], &bytes);
        assert_eq!(reply.trim(), "1", "{what}: node C got it");
    }
    let engine = c.engine.clone();
    wait_until(
        "two refusals",
        5.0,
        || engine.stats().envelopes_rejected.iter().sum::<u64>() >= 2,
        || refused(&engine),
    )
    .await;
    assert_eq!(refused(&c.engine), BTreeMap::from([("bad_mac", 2)]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        c.events.data("news").is_empty(),
        "{:?}",
        c.events.data("news")
    );

    // Publications from node A still reach node C.
    a.publish("news", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    let events = c.events.clone();
    wait_until(
        "the next real publication on node C",
        5.0,
        || events.data("news") == [r#"{"n":2}"#],
        || events.data("news"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_step_rotation_mid_stream_loses_and_refuses_nothing() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("rotation");
    let a = signed_node(
        config(vec![redis.url()], &prefix),
        "node-a",
        keyring("k1", &[("k1", 1)]),
    )
    .await;
    let b = signed_node(
        config(vec![redis.url()], &prefix),
        "node-b",
        keyring("k1", &[("k1", 1)]),
    )
    .await;
    b.subscribe("chat").await.unwrap();
    a.subscribe("chat").await.unwrap();

    // Step 1 (k2 added everywhere, k1 signs), step 2 (k2 signs, node A
    // first), step 3 (k1 removed, node B first): each node mid-step while
    // messages flow; half of them kept in history (the Lua path), half not.
    let both = [("k1", 1), ("k2", 2)];
    let k2_only = [("k2", 2)];
    for n in 0..1000u32 {
        match n {
            200 => b.integrity().reload(keyring("k1", &both)),
            250 => a.integrity().reload(keyring("k1", &both)),
            400 => a.integrity().reload(keyring("k2", &both)),
            450 => b.integrity().reload(keyring("k2", &both)),
            700 => b.integrity().reload(keyring("k2", &k2_only)),
            750 => a.integrity().reload(keyring("k2", &k2_only)),
            _ => {}
        }
        let options = if n % 2 == 0 {
            history_options(2000)
        } else {
            PublishOptions::default()
        };
        a.publish("chat", publication(&format!(r#"{{"n":{n}}}"#)), &options)
            .await
            .unwrap();
    }
    for node in [&a, &b] {
        let events = node.events.clone();
        wait_until(
            "1,000 publications",
            10.0,
            || events.data("chat").len() >= 1000,
            || events.data("chat").len(),
        )
        .await;
        let want: Vec<String> = (0..1000).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        assert_eq!(
            node.events.data("chat"),
            want,
            "every message, in order, once"
        );
        assert_eq!(refused(&node.engine), BTreeMap::new(), "nothing refused");
    }
    // After step 3 a node still on k1 is refused.
    let old = signed_node(
        config(vec![redis.url()], &prefix),
        "node-old",
        keyring("k1", &[("k1", 1)]),
    )
    .await;
    old.publish(
        "chat",
        publication(r#"{"n":"old"}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    // (Its heartbeats on the control channel are refused too.)
    let engine = b.engine.clone();
    wait_until(
        "the k1 envelopes refused",
        5.0,
        || refused(&engine).get("unknown_key").is_some_and(|n| *n >= 1),
        || refused(&engine),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.events.data("chat").len(),
        1000,
        "the k1 publication did not arrive"
    );
    assert_eq!(
        refused(&b.engine).keys().copied().collect::<Vec<_>>(),
        ["unknown_key"]
    );
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------
// Least privilege (SEC-REDIS-1)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_works_as_the_documented_least_privileged_acl_user() {
    let prefix = prefix("leastpriv");
    let rules = herald_bus::redis::acl_rules(&prefix);
    let docs = include_str!("../../../docs/redis.md");
    assert!(
        docs.contains("herald_bus::redis::acl_rules")
            && docs.contains(&herald_bus::redis::acl_rules("herald")),
        "docs/redis.md shows the rules acl_rules(\"herald\") gives"
    );
    let redis = blocking({
        let rules = rules.clone();
        move || {
            RedisServer::launch(support::Options {
                acl: Some(("herald".into(), "least-s3cret".into())),
                acl_rules: Some(rules),
                ..Default::default()
            })
        }
    })
    .await;
    let node_config = || RedisConfig {
        user: Some("herald".into()),
        password: Some("least-s3cret".into()),
        ..config(vec![redis.url()], &prefix)
    };
    let ring = || keyring("k1", &[("k1", 3)]);
    let a = signed_node(node_config(), "node-a", ring()).await;
    let b = signed_node(node_config(), "node-b", ring()).await;

    // Everything a node does: pub/sub with and without history, idempotent
    // publish, join/leave, presence, history, control commands, the registry.
    b.subscribe("room").await.unwrap();
    a.publish("room", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    a.publish(
        "room",
        publication(r#"{"n":2}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    let idempotent = PublishOptions {
        idempotency_key: Some("once".into()),
        ..history_options(10)
    };
    a.publish("room", publication(r#"{"n":3}"#), &idempotent)
        .await
        .unwrap();
    a.publish_join("room", info("u1", "c1")).await.unwrap();
    a.add_presence("room", info("u1", "c1"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(b.presence_stats("room").await.unwrap().num_clients, 1);
    assert_eq!(b.presence("room").await.unwrap().len(), 1);
    a.remove_presence("room", "c1").await.unwrap();
    let page = b.history("room", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1, 2]);
    a.publish_control(&disconnect("u1")).await.unwrap();
    let events = b.events.clone();
    wait_until(
        "publications, join and control on node B",
        5.0,
        || events.data("room").len() == 3 && !events.controls().is_empty(),
        || events.events(),
    )
    .await;
    let engine = b.engine.clone();
    wait_until(
        "both nodes in the registry",
        5.0,
        || uids(&engine).len() == 2,
        || uids(&engine),
    )
    .await;
    b.remove_history("room").await.unwrap();
    assert!(a.healthy() && b.healthy());
    assert_eq!(refused(&b.engine), BTreeMap::new());

    // The same user may not do anything else.
    for command in [
        vec!["FLUSHALL"],
        vec!["KEYS", "*"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["GET", "someone-else:key"],
        vec!["SET", "someone-else:key", "x"],
        vec!["PUBLISH", "someone-else-channel", "x"],
        vec!["ACL", "LIST"],
    ] {
        let reply = redis.cli(&command);
        assert!(
            reply.contains("NOPERM"),
            "{command:?} must be refused: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privileged_acl_user_also_works_in_cluster_mode() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("leastprivcluster");
    let rules = herald_bus::redis::acl_rules(&prefix);
    for node in &cluster.nodes {
        let mut args = vec!["ACL", "SETUSER", "herald", "on", ">least-s3cret"];
        args.extend(rules.split(' '));
        assert_eq!(
            node.cli(&args).trim(),
            "OK",
            "ACL SETUSER on {}",
            node.port()
        );
    }
    let node_config = || RedisConfig {
        user: Some("herald".into()),
        password: Some("least-s3cret".into()),
        ..cluster_config(&cluster, &prefix)
    };
    let ring = || keyring("k1", &[("k1", 4)]);
    let a = signed_node(node_config(), "node-a", ring()).await;
    let b = signed_node(node_config(), "node-b", ring()).await;
    let channels = ["alpha", "beta", "gamma", "delta"];
    for channel in channels {
        b.subscribe(channel).await.unwrap();
    }
    for channel in channels {
        a.publish(channel, publication(r#"{"n":1}"#), &history_options(10))
            .await
            .unwrap();
        a.add_presence(channel, info("u1", "c1"), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(b.presence_stats(channel).await.unwrap().num_clients, 1);
        let page = b.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(offsets(&page.publications), [1]);
    }
    let events = b.events.clone();
    wait_until(
        "a publication on every channel",
        5.0,
        || channels.iter().all(|c| events.data(c).len() == 1),
        || events.events(),
    )
    .await;
    assert!(a.healthy() && b.healthy());
    assert_eq!(refused(&b.engine), BTreeMap::new());
}

// ---------------------------------------------------------------------------
// Sealed history (SEC-REST-1)

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

async fn sealing_node(config: RedisConfig, uid: &str, keys: HistoryKeyring) -> Node {
    keyed_node(config, uid, BusKeyring::off(), keys).await
}

/// Every value stored under `prefix`, read by its type.
fn every_stored_value(redis: &RedisServer, prefix: &str) -> String {
    let mut dump = String::new();
    for key in redis.scan(&format!("{prefix}*")) {
        let kind = redis.cli(&["TYPE", &key]);
        let value = match kind.trim() {
            "string" => redis.cli(&["GET", &key]),
            "hash" => redis.cli(&["HGETALL", &key]),
            "stream" => redis.cli(&["XRANGE", &key, "-", "+"]),
            "zset" => redis.cli(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
            "list" => redis.cli(&["LRANGE", &key, "0", "-1"]),
            "set" => redis.cli(&["SMEMBERS", &key]),
            other => panic!("{key}: unexpected type {other}"),
        };
        dump.push_str(&format!("{key} ({}): {value}\n", kind.trim()));
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_history_stores_no_plaintext_and_survives_concurrent_publishers() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("sealed");
    let keys = || history_keyring("h1", &[("h1", 1)]);
    let a = sealing_node(config(vec![redis.url()], &prefix), "node-a", keys()).await;
    let b = sealing_node(config(vec![redis.url()], &prefix), "node-b", keys()).await;
    b.subscribe("secret").await.unwrap();

    // Two nodes publish into one stream at once: each seals for the offset
    // it expects; the script refuses a record made for a taken offset and
    // the node seals again.
    let mut tasks = Vec::new();
    for (node, tag) in [(a.engine.clone(), "a"), (b.engine.clone(), "b")] {
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                let data = format!(r#"{{"text":"marker-9c1e {tag}{n}"}}"#);
                node.publish("secret", publication(&data), &history_options(200))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let page = a
        .history("secret", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), (1..=100).collect::<Vec<u64>>());
    let events = b.events.clone();
    wait_until(
        "100 live publications",
        5.0,
        || events.data("secret").len() == 100,
        || events.data("secret").len(),
    )
    .await;

    // Presence (user ids and connection info) is sealed the same way.
    let visitor = ClientInfo {
        user: "marker-9c1e-user".into(),
        client: "c-1".into(),
        conn_info: Some(RawJson::from_str(r#"{"name":"marker-9c1e"}"#).unwrap()),
        chan_info: None,
    };
    a.add_presence("secret", visitor.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let present = b.presence("secret").await.unwrap();
    assert_eq!(
        present.get("c-1"),
        Some(&visitor),
        "node B opens what node A sealed"
    );
    assert_eq!(b.presence_stats("secret").await.unwrap().num_users, 1);

    let dump = every_stored_value(&redis, &prefix);
    assert!(
        dump.contains(".stream."),
        "the stream is among the keys read: {dump}"
    );
    assert!(
        !dump.contains("marker-9c1e"),
        "plaintext stored in Redis:\n{dump}"
    );

    // A record moved to another channel's stream does not open there.
    let stream_key = |ch: &str| {
        redis
            .scan(&format!("{prefix}*"))
            .into_iter()
            .find(|k| k.contains(".stream.") && !k.contains(".stream.meta.") && k.ends_with(ch))
            .unwrap_or_else(|| panic!("no stream key for {ch}"))
    };
    a.publish("other", publication(r#"{"x":1}"#), &history_options(10))
        .await
        .unwrap();
    let source = stream_key("secret");
    let record = redis.cli(&["--no-raw", "XRANGE", &source, "1-0", "1-0"]);
    assert!(
        record.contains("e1:"),
        "sealed records start with e1: {record}"
    );
    let raw: Vec<u8> = {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(&source)
            .arg("1-0")
            .arg("1-0")
            .query_async(&mut connection)
            .await
            .unwrap();
        let target = stream_key("other");
        let _: String = redis::cmd("XADD")
            .arg(&target)
            .arg("2-0")
            .arg("d")
            .arg(&entries[0].1[0].1)
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg(target.replace(".stream.", ".stream.meta."))
            .arg("s")
            .arg(2)
            .query_async(&mut connection)
            .await
            .unwrap_or(0);
        entries[0].1[0].1.clone()
    };
    assert!(raw.starts_with(b"e1:"));
    let before = a.stats().history_undecryptable;
    assert!(matches!(
        a.history("other", &query(None, None, false)).await,
        Err(BusError::Undecryptable)
    ));
    assert_eq!(a.stats().history_undecryptable, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_history_key_shreds_what_it_sealed() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("shred");
    let a = sealing_node(
        config(vec![redis.url()], &prefix),
        "node-a",
        history_keyring("h1", &[("h1", 1)]),
    )
    .await;
    a.publish("log", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    // Rotation: h2 active, h1 kept to open older records.
    a.reload_history_keys(history_keyring("h2", &[("h1", 1), ("h2", 2)]));
    a.publish("log", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    let page = a.history("log", &query(None, None, false)).await.unwrap();
    assert_eq!(a.events.data("log").len(), 0, "not subscribed");
    assert_eq!(page.publications.len(), 2);
    // h1 removed: its record is gone for good; h2's still opens.
    a.reload_history_keys(history_keyring("h2", &[("h2", 2)]));
    assert!(matches!(
        a.history("log", &query(None, None, false)).await,
        Err(BusError::Undecryptable)
    ));
    assert_eq!(a.stats().history_undecryptable, 1);
    let since_one = query(
        Some(StreamPosition {
            offset: 1,
            epoch: page.position.epoch.clone(),
        }),
        None,
        false,
    );
    let newer = a.history("log", &since_one).await.unwrap();
    assert_eq!(offsets(&newer.publications), [2]);
    // The top is still known (recovery answers `recovered: false`).
    let top = a
        .history("log", &query(None, Some(0), false))
        .await
        .unwrap();
    assert_eq!(top.position.offset, 2);
}
