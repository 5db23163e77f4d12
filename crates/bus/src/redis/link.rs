//! Connections to Redis: command connections and pub/sub links.
//!
//! Standalone servers are reached through `ConnectionManager`s (they
//! reconnect by themselves; pub/sub ones also resubscribe); a Redis Cluster
//! through `ClusterConnection`s, which follow the slot map and resubscribe
//! sharded channels after a failover; a master behind Sentinel through the
//! connections of its `MasterWatch` (sentinel.rs), replaced when the master
//! changes. Pub/sub uses RESP3 pushes on both, so
//! SSUBSCRIBE works and a resubscription is visible as a confirmation push
//! nobody asked for, which is how the engine learns that messages may have
//! been missed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, PushInfo, PushKind, RedisResult, Script, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::keys::{fnv1a64, Keys};
use super::sentinel::{Master, MasterWatch};
use crate::BrokerEvents;

/// Commands (scripts, PUBLISH, DEL) to one Redis server, one cluster, or
/// the current master of a Sentinel-described shard.
#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<MasterWatch>),
}

impl Commands {
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> RedisResult<T> {
        self.run_script(script, keys, args, false).await
    }

    /// Like [`Commands::script`] with one more argument last: the lineage
    /// of the master the script runs on (sentinel.rs), taken from the same
    /// connection the script is sent on so the two always match; in Redis
    /// Cluster the marker that has the script read it itself (the cluster
    /// routes by slot); empty for a standalone server.
    pub(crate) async fn script_with_lineage<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> RedisResult<T> {
        self.run_script(script, keys, args, true).await
    }

    async fn run_script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
        lineage: bool,
    ) -> RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        match self {
            Self::Single(c) => {
                if lineage {
                    invocation.arg("");
                }
                invocation.invoke_async(&mut c.clone()).await
            }
            Self::Cluster(c) => {
                if lineage {
                    invocation.arg(super::scripts::CLUSTER_LINEAGE);
                }
                invocation.invoke_async(&mut c.clone()).await
            }
            Self::Sentinel(watch) => {
                let master = watch.current().ok_or_else(no_master)?;
                if lineage {
                    invocation.arg(master.lineage.as_str());
                }
                let result = invocation.invoke_async(&mut master.commands.clone()).await;
                if let Err(e) = &result {
                    watch.report(&master, e);
                }
                result
            }
        }
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(&mut c.clone()).await,
            Self::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            Self::Sentinel(watch) => {
                let master = watch.current().ok_or_else(no_master)?;
                let result = cmd.query_async(&mut master.commands.clone()).await;
                if let Err(e) = &result {
                    watch.report(&master, e);
                }
                result
            }
        }
    }
}

fn no_master() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "no redis master: Sentinel named none that could be reached",
    ))
}

/// The pub/sub connection of a link to the master of a Sentinel-described
/// shard: replaced by a new one (and every channel subscribed again) each
/// time the `MasterWatch` moves to another master connection.
pub(crate) struct FollowingPubSub {
    masters: watch::Receiver<Option<Arc<Master>>>,
    /// The master generation `connection` was made for (0 = none).
    generation: u64,
    connection: Option<ConnectionManager>,
    /// The manager settings, push sender included.
    config: ConnectionManagerConfig,
}

impl FollowingPubSub {
    pub(crate) fn new(watch: &MasterWatch, config: ConnectionManagerConfig) -> Self {
        Self {
            masters: watch.subscribe(),
            generation: 0,
            connection: None,
            config,
        }
    }

    fn connection(&mut self) -> RedisResult<&mut ConnectionManager> {
        self.connection.as_mut().ok_or_else(no_master)
    }

    /// Moves to the current master if it is not the one in use; true when
    /// the connection was replaced (its channels must be subscribed again).
    fn follow(&mut self) -> bool {
        let master = self.masters.borrow_and_update().clone();
        let generation = master.as_ref().map_or(0, |m| m.generation);
        if generation == self.generation || generation == 0 {
            // No master known: keep the old connection, it may come back.
            return false;
        }
        let Some(master) = master else { return false };
        match super::sentinel::pubsub_to(&master, self.config.clone()) {
            Ok(connection) => {
                tracing::info!(master = %master.address, "pub/sub link follows the new redis master");
                self.connection = Some(connection);
                self.generation = generation;
                true
            }
            Err(e) => {
                tracing::warn!(master = %master.address, error = %e, "cannot open a pub/sub connection to the redis master");
                false
            }
        }
    }
}

/// The connection under one pub/sub link.
pub(crate) enum PubSubConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Box<FollowingPubSub>),
}

impl PubSubConnection {
    /// Resolves when the master changed (Sentinel only; never otherwise).
    async fn master_changed(&mut self) {
        match self {
            Self::Sentinel(following) => {
                if following.masters.changed().await.is_err() {
                    // The watch is gone with the engine.
                    std::future::pending::<()>().await;
                }
            }
            _ => std::future::pending().await,
        }
    }

    /// Moves a Sentinel link to the current master; true when it moved.
    fn follow(&mut self) -> bool {
        match self {
            Self::Sentinel(following) => following.follow(),
            _ => false,
        }
    }

    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channels).await,
            Self::Sentinel(c) => c.connection()?.subscribe(channels).await,
            // A sharded subscription names channels of one slot only.
            Self::Cluster(c) => {
                let calls = channels.iter().map(|channel| {
                    let mut c = c.clone();
                    async move { c.ssubscribe(channel).await }
                });
                futures_util::future::join_all(calls)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.unsubscribe(channels).await,
            Self::Sentinel(c) => c.connection()?.unsubscribe(channels).await,
            Self::Cluster(c) => {
                let calls = channels.iter().map(|channel| {
                    let mut c = c.clone();
                    async move { c.sunsubscribe(channel).await }
                });
                futures_util::future::join_all(calls)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    async fn ping(&mut self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
            Self::Sentinel(c) => cmd.query_async(c.connection()?).await,
        }
    }
}

/// Where incoming pub/sub messages go: decoded and handed to the Hub by a
/// few workers, each with a bounded queue. A channel always maps to the same
/// worker, so its messages keep their order.
pub(crate) struct Inbox {
    keys: Keys,
    control_channel: String,
    workers: Vec<mpsc::Sender<Incoming>>,
    events: Arc<dyn BrokerEvents>,
    /// Subscription confirmations we are waiting for, per pub/sub channel. A
    /// confirmation nobody waits for is a resubscription after a reconnect.
    expected: Mutex<HashMap<String, u32>>,
    /// Unsubscription confirmations we are waiting for, per pub/sub channel.
    /// One nobody waits for is the server dropping the channel: in Redis
    /// Cluster a master that loses a slot (a failover, a resharding)
    /// unsubscribes every client of the slot's sharded channels and keeps
    /// the connection, so nothing else tells.
    expected_unsubscribes: Mutex<HashMap<String, u32>>,
    pub(crate) dropped: AtomicU64,
    pub(crate) received: AtomicU64,
    /// When each channel was last told to recover because of a reconnect.
    recent_gaps: Mutex<HashMap<String, Instant>>,
}

/// Reconnect signals for one channel within this window and with no
/// disconnection in between are one event: the client library's own
/// resubscription and ours both follow one reconnect.
const GAP_DEDUPE: Duration = Duration::from_secs(2);

/// What a pub/sub connection's pushes tell its link task.
#[derive(Default)]
pub(crate) struct LinkSignals {
    pub(crate) healthy: AtomicBool,
    /// The connection dropped since the link last resubscribed everything.
    resync: AtomicBool,
    /// Channels the server unsubscribed on its own since the link last
    /// looked: subscribed again (on the slot's new owner), then their
    /// positioned subscribers told to recover.
    dropped: Mutex<Vec<String>>,
}

pub(crate) enum Incoming {
    Channel { channel: String, payload: Vec<u8> },
    Control(Vec<u8>),
}

impl Inbox {
    pub(crate) fn new(
        keys: Keys,
        workers: Vec<mpsc::Sender<Incoming>>,
        events: Arc<dyn BrokerEvents>,
    ) -> Self {
        Self {
            control_channel: keys.control_channel(),
            keys,
            workers,
            events,
            expected: Mutex::new(HashMap::new()),
            expected_unsubscribes: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            recent_gaps: Mutex::new(HashMap::new()),
        }
    }

    /// Tells the channel's positioned subscribers to recover after a
    /// reconnect, once per reconnect.
    fn reconnect_gap(&self, channel: &str) {
        let now = Instant::now();
        {
            let mut recent = self.recent_gaps.lock();
            if recent
                .get(channel)
                .is_some_and(|at| now.duration_since(*at) < GAP_DEDUPE)
            {
                return;
            }
            recent.retain(|_, at| now.duration_since(*at) < GAP_DEDUPE);
            recent.insert(channel.to_owned(), now);
        }
        tracing::debug!(channel, "resubscribed after a reconnect");
        self.events.on_gap(channel);
    }

    fn expect(&self, kind: OpKind, channels: &[String]) {
        let mut expected = self.awaited(kind).lock();
        for channel in channels {
            *expected.entry(channel.clone()).or_default() += 1;
        }
    }

    fn forget(&self, kind: OpKind, channels: &[String]) {
        let mut expected = self.awaited(kind).lock();
        for channel in channels {
            take_one(&mut expected, channel);
        }
    }

    fn awaited(&self, kind: OpKind) -> &Mutex<HashMap<String, u32>> {
        match kind {
            OpKind::Subscribe => &self.expected,
            OpKind::Unsubscribe => &self.expected_unsubscribes,
        }
    }

    /// Called by the connection driver for every push: must not block.
    fn on_push(&self, push: PushInfo, link: &LinkSignals) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(name), Some(payload)) = (data.next(), data.next()) else {
                    return;
                };
                let (Some(name), Some(payload)) = (bytes_of(name), bytes_of(payload)) else {
                    return;
                };
                let Ok(name) = String::from_utf8(name) else {
                    return;
                };
                self.received.fetch_add(1, Ordering::Relaxed);
                if name == self.control_channel {
                    self.hand_over(0, Incoming::Control(payload), None);
                } else if let Some(channel) = self.keys.channel_of(&name) {
                    let worker = (fnv1a64(channel.as_bytes()) % self.workers.len() as u64) as usize;
                    let channel = channel.to_owned();
                    self.hand_over(
                        worker,
                        Incoming::Channel {
                            channel: channel.clone(),
                            payload,
                        },
                        Some(&channel),
                    );
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                let Some(name) = push.data.into_iter().next().and_then(bytes_of) else {
                    return;
                };
                let Ok(name) = String::from_utf8(name) else {
                    return;
                };
                let awaited = take_one(&mut self.expected.lock(), &name);
                if !awaited {
                    if let Some(channel) = self.keys.channel_of(&name) {
                        self.reconnect_gap(channel);
                    }
                }
            }
            PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                let Some(name) = push.data.into_iter().next().and_then(bytes_of) else {
                    return;
                };
                let Ok(name) = String::from_utf8(name) else {
                    return;
                };
                if !take_one(&mut self.expected_unsubscribes.lock(), &name) {
                    tracing::warn!(channel = %name, "redis dropped a pub/sub subscription (slot moved?); subscribing again");
                    link.dropped.lock().push(name);
                }
            }
            PushKind::Disconnection => {
                link.healthy.store(false, Ordering::Relaxed);
                link.resync.store(true, Ordering::Relaxed);
                // A new reconnect: its resubscriptions must signal again.
                self.recent_gaps.lock().clear();
                // Confirmations lost with the connection never come; a late
                // one taken for the server's own unsubscribe costs at most a
                // needless resubscription.
                self.expected_unsubscribes.lock().clear();
                tracing::warn!("redis pub/sub connection lost; reconnecting");
            }
            _ => {}
        }
    }

    fn hand_over(&self, worker: usize, incoming: Incoming, channel: Option<&str>) {
        match self.workers[worker].try_send(incoming) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                // Subscribers that keep positions must not miss it silently.
                if let Some(channel) = channel {
                    self.events.on_gap(channel);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Takes one awaited confirmation of `name`; false when none was awaited.
fn take_one(awaited: &mut HashMap<String, u32>, name: &str) -> bool {
    match awaited.get_mut(name) {
        Some(n) => {
            *n -= 1;
            if *n == 0 {
                awaited.remove(name);
            }
            true
        }
        None => false,
    }
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Builds the push sender a pub/sub connection hands its pushes to.
pub(crate) fn push_sender(
    inbox: Arc<Inbox>,
    link: Arc<LinkSignals>,
) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
    move |push| {
        inbox.on_push(push, &link);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Subscribe,
    Unsubscribe,
}

struct Op {
    kind: OpKind,
    channel: String,
    done: oneshot::Sender<RedisResult<()>>,
}

/// One pub/sub connection and the task that runs its (un)subscriptions in
/// order, batching consecutive ones into one command.
pub(crate) struct Link {
    ops: mpsc::Sender<Op>,
    pub(crate) signals: Arc<LinkSignals>,
}

/// Most channels in one SUBSCRIBE.
const BATCH: usize = 512;

impl Link {
    pub(crate) fn spawn(
        connection: PubSubConnection,
        signals: Arc<LinkSignals>,
        inbox: Arc<Inbox>,
        permanent: Vec<String>,
        ping_interval: Duration,
        timeout: Duration,
    ) -> Self {
        let (ops, rx) = mpsc::channel(4096);
        let task = LinkTask {
            connection,
            inbox,
            signals: signals.clone(),
            desired: permanent.iter().cloned().collect(),
            stale: HashSet::new(),
            permanent,
            timeout,
        };
        tokio::spawn(task.run(rx, ping_interval));
        Self { ops, signals }
    }

    pub(crate) fn healthy(&self) -> bool {
        self.signals.healthy.load(Ordering::Relaxed)
    }

    pub(crate) async fn subscribe(&self, channel: String) -> RedisResult<()> {
        self.run(OpKind::Subscribe, channel).await
    }

    pub(crate) async fn unsubscribe(&self, channel: String) -> RedisResult<()> {
        self.run(OpKind::Unsubscribe, channel).await
    }

    async fn run(&self, kind: OpKind, channel: String) -> RedisResult<()> {
        let (done, result) = oneshot::channel();
        let op = Op {
            kind,
            channel,
            done,
        };
        if self.ops.send(op).await.is_err() {
            return Err(closed());
        }
        result.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "pub/sub link closed"))
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "pub/sub command timed out"))
}

struct LinkTask {
    connection: PubSubConnection,
    inbox: Arc<Inbox>,
    signals: Arc<LinkSignals>,
    /// Channels this link must hold: the permanent ones and every client
    /// channel subscribed and not unsubscribed since.
    desired: HashSet<String>,
    /// Channels whose UNSUBSCRIBE failed (Redis was down): unsubscribed
    /// again once the connection works, or the reconnect would keep them.
    stale: HashSet<String>,
    permanent: Vec<String>,
    timeout: Duration,
}

impl LinkTask {
    async fn run(mut self, mut ops: mpsc::Receiver<Op>, ping_interval: Duration) {
        let mut permanent_done = false;
        let mut ticker = tokio::time::interval(ping_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held: Option<Op> = None;
        loop {
            let first = match held.take() {
                Some(op) => op,
                None => {
                    tokio::select! {
                        op = ops.recv() => match op {
                            Some(op) => op,
                            None => return,
                        },
                        _ = ticker.tick() => {
                            self.check(&mut permanent_done).await;
                            continue;
                        }
                        _ = self.connection.master_changed() => {
                            if self.connection.follow() {
                                // A new connection: everything it held was
                                // on the old one.
                                self.signals.resync.store(true, Ordering::Relaxed);
                                self.stale.clear();
                                self.check(&mut permanent_done).await;
                            }
                            continue;
                        }
                    }
                }
            };
            let kind = first.kind;
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match ops.try_recv() {
                    Ok(op) if op.kind == kind => batch.push(op),
                    Ok(op) => {
                        held = Some(op);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let channels: Vec<String> = batch.iter().map(|op| op.channel.clone()).collect();
            let result = self.apply(kind, &channels).await;
            for channel in &channels {
                match kind {
                    OpKind::Subscribe if result.is_ok() => {
                        self.stale.remove(channel);
                        self.desired.insert(channel.clone());
                    }
                    OpKind::Subscribe => {}
                    OpKind::Unsubscribe => {
                        // The node forgets the channel either way.
                        self.desired.remove(channel);
                        if result.is_err() {
                            self.stale.insert(channel.clone());
                        }
                    }
                }
            }
            for op in batch {
                let _ = op.done.send(result.clone());
            }
        }
    }

    /// The periodic work: the permanent channels until they are held, a
    /// ping, the resubscription after a reconnect, the failed unsubscribes.
    async fn check(&mut self, permanent_done: &mut bool) {
        if self.connection.follow() {
            self.signals.resync.store(true, Ordering::Relaxed);
            self.stale.clear();
        }
        if !*permanent_done {
            let permanent = self.permanent.clone();
            *permanent_done = self.apply(OpKind::Subscribe, &permanent).await.is_ok();
        }
        let alive = matches!(
            tokio::time::timeout(self.timeout, self.connection.ping()).await,
            Ok(Ok(()))
        );
        if alive && self.signals.resync.swap(false, Ordering::Relaxed) {
            // Everything is subscribed again, the dropped channels with it.
            self.signals.dropped.lock().clear();
            self.resync().await;
        }
        if alive {
            self.subscribe_dropped().await;
        }
        if alive && !self.stale.is_empty() {
            let stale: Vec<String> = self.stale.iter().cloned().collect();
            if self.apply(OpKind::Unsubscribe, &stale).await.is_ok() {
                self.stale.clear();
            }
        }
        self.signals
            .healthy
            .store(alive && *permanent_done, Ordering::Relaxed);
    }

    /// After a reconnect: subscribe everything again (the client library
    /// resubscribes too, but does not report a failure of it), then have the
    /// positioned subscribers of every channel recover what the outage cost.
    async fn resync(&mut self) {
        let channels: Vec<String> = self.desired.iter().cloned().collect();
        for chunk in channels.chunks(BATCH) {
            if self.apply(OpKind::Subscribe, chunk).await.is_err() {
                // Try again at the next tick.
                self.signals.resync.store(true, Ordering::Relaxed);
                return;
            }
        }
        for name in &channels {
            if let Some(channel) = self.inbox.keys.channel_of(name) {
                self.inbox.reconnect_gap(channel);
            }
        }
    }

    /// The channels the server unsubscribed on its own: subscribed again
    /// (the cluster client routes them to the slot's owner now), then the
    /// positioned subscribers of each told to recover what they missed.
    async fn subscribe_dropped(&mut self) {
        let dropped: Vec<String> = std::mem::take(&mut *self.signals.dropped.lock());
        let mut channels: Vec<String> = dropped
            .into_iter()
            .filter(|name| self.desired.contains(name))
            .collect();
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return;
        }
        for chunk in channels.chunks(BATCH) {
            if self.apply(OpKind::Subscribe, chunk).await.is_err() {
                // Try again at the next tick.
                self.signals.dropped.lock().extend(chunk.iter().cloned());
                continue;
            }
            for name in chunk {
                if let Some(channel) = self.inbox.keys.channel_of(name) {
                    self.inbox.reconnect_gap(channel);
                }
            }
        }
    }

    async fn apply(&mut self, kind: OpKind, channels: &[String]) -> RedisResult<()> {
        apply(
            &mut self.connection,
            &self.inbox,
            kind,
            channels,
            self.timeout,
        )
        .await
    }
}

async fn apply(
    connection: &mut PubSubConnection,
    inbox: &Inbox,
    kind: OpKind,
    channels: &[String],
    timeout: Duration,
) -> RedisResult<()> {
    if channels.is_empty() {
        return Ok(());
    }
    inbox.expect(kind, channels);
    let result = match kind {
        OpKind::Subscribe => tokio::time::timeout(timeout, connection.subscribe(channels)).await,
        OpKind::Unsubscribe => {
            tokio::time::timeout(timeout, connection.unsubscribe(channels)).await
        }
    }
    .unwrap_or_else(|_| Err(timed_out()));
    if result.is_err() {
        inbox.forget(kind, channels);
    }
    if let Err(e) = &result {
        tracing::warn!(error = %e, ?kind, channels = channels.len(), "redis pub/sub command failed");
    }
    result
}
