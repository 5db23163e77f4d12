//! The Redis engine: publications, history, presence and node-to-node
//! control through Redis, so any number of herald nodes act as one.
//!
//! Four modes: one Redis server; several independent servers with channels
//! sharded over them by consistent hash (jump hash over FNV-1a-64); one Redis
//! Cluster, with hash-tagged keys and sharded pub/sub (SPUBLISH/SSUBSCRIBE);
//! one master found and followed through Sentinel (sentinel.rs).
//! docs/redis.md has the key layout and the delivery guarantees.

mod config;
mod envelope;
mod keys;
mod link;
mod scripts;
mod sentinel;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use herald_protocol::{ClientInfo, Publication, StreamPosition};
use parking_lot::Mutex;
use rand::distr::Alphabetic;
use rand::Rng;
use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClientBuilder;
use redis::io::tcp::TcpSettings;
use redis::{IntoConnectionInfo, ProtocolVersion, RedisError, TlsCertificates, Value};
use tokio::sync::mpsc;

pub use self::config::{acl_rules, RedisConfig, SentinelConfig, ACL_COMMANDS};
/// The stored JSON of a publication (no offset), shared with the memory engine.
use self::envelope::{ChannelMessage, ControlBody, ControlMessage};
use self::keys::{fnv1a64, shard_of, Keys};
use self::link::{Commands, FollowingPubSub, Inbox, Incoming, Link, LinkSignals, PubSubConnection};
use crate::integrity::{BusKeyring, Integrity, Rejection};
use crate::seal::HistoryKeyring;
use crate::{
    Broker, BrokerCounters, BrokerEvents, BusError, ClockReading, ControlCommand, Emulated, Engine,
    HistoryPage, HistoryQuery, NodeInfo, PresenceStats, PresenceStore, PublishOptions, SurveyReply,
    SurveyRequest,
};
use arc_swap::ArcSwap;

/// How long an idempotent publish is remembered.
const IDEMPOTENCY_TTL_SECS: u64 = 300;
/// How often every connection is checked (and, if down, reconnected).
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Publish attempts when other publishers keep taking the offset a sealed
/// record was made for.
const MAX_SEAL_ATTEMPTS: usize = 32;
/// History channels whose position is remembered; past it the map restarts.
const MAX_POSITIONS: usize = 65_536;
/// At most one log line per integrity refusal reason in this interval.
const REFUSAL_LOG_INTERVAL_MS: u64 = 10_000;
/// While this node's clock is off, the warning is repeated this often.
const CLOCK_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// A `TIME` round trip longer than this says too little about the clock.
const CLOCK_MAX_ROUND_TRIP_US: u64 = 1_000_000;

/// Figures for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Pub/sub messages received from Redis.
    pub messages_received: u64,
    /// Messages dropped because a worker queue was full.
    pub messages_dropped: u64,
    /// Messages that could not be decoded.
    pub messages_rejected: u64,
    /// Envelopes dropped by the integrity check, by [`Rejection::ALL`] order.
    pub envelopes_rejected: [u64; 6],
    /// History reads refused because a record could not be opened.
    pub history_undecryptable: u64,
}

pub struct RedisEngine {
    inner: Arc<Inner>,
    /// Runs connection drivers, pub/sub links, workers and heartbeats. Shut
    /// down (without blocking) when the engine is dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    config: RedisConfig,
    keys: Keys,
    shards: Vec<Shard>,
    events: Arc<dyn BrokerEvents>,
    node_uid: String,
    inbox: Arc<Inbox>,
    registry: Mutex<HashMap<String, (NodeInfo, Instant)>>,
    /// Surveys this node is collecting answers for, by id.
    surveys: Mutex<HashMap<String, mpsc::UnboundedSender<SurveyReply>>>,
    /// Emulation requests this node routed to another, waiting for the answer.
    emulations: Mutex<HashMap<String, tokio::sync::oneshot::Sender<bool>>>,
    rejected: AtomicU64,
    /// Signs what this node publishes and checks what arrives.
    integrity: Arc<Integrity>,
    /// Envelopes refused by `integrity`, by [`Rejection::ALL`] order.
    refused: [AtomicU64; 6],
    /// Seals history records (swapped on reload).
    history_keys: ArcSwap<HistoryKeyring>,
    /// The last (epoch, top offset) seen per history channel: where a sealed
    /// publish expects to land.
    positions: Mutex<HashMap<String, (String, u64)>>,
    /// History reads refused because a record could not be opened.
    undecryptable: AtomicU64,
    /// When a record that does not open was last logged (unix ms).
    unopened_logged: AtomicU64,
    /// When each refusal reason was last logged (unix ms).
    refusal_logged: [AtomicU64; 6],
    next_control_shard: AtomicUsize,
    /// Set by `leave`: heartbeats stop so the others do not list us again.
    left: AtomicBool,
    /// This node's clock minus Redis's (ms), measured with each heartbeat.
    clock_skew: Mutex<Option<i64>>,
    /// What was last logged about the clock, and when.
    clock_logged: Mutex<(ClockState, Option<Instant>)>,
}

/// How far off Redis's clock this node's is, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClockState {
    InStep,
    /// Past half the envelope window.
    Off,
    /// Past the window with envelopes checked: refused both ways.
    OutsideWindow,
}

impl ClockState {
    fn of(reading: &ClockReading) -> Self {
        if reading.outside_window() {
            Self::OutsideWindow
        } else if reading.past_half_window() {
            Self::Off
        } else {
            Self::InStep
        }
    }
}

/// One Redis server, or the whole cluster in Cluster mode.
struct Shard {
    commands: Commands,
    commands_healthy: Arc<AtomicBool>,
    links: Vec<Link>,
}

impl RedisEngine {
    /// Connects to Redis as `config` says and starts the background tasks.
    /// A bad address or CA fails here; an unreachable standalone Redis does
    /// not (the engine reports unhealthy and keeps reconnecting), an
    /// unreachable Redis Cluster does (its slot map is needed to start).
    pub async fn connect(
        config: RedisConfig,
        events: Arc<dyn BrokerEvents>,
    ) -> Result<Arc<Self>, BusError> {
        Self::connect_with_keyring(config, events, BusKeyring::off()).await
    }

    /// Like [`RedisEngine::connect_with_keyring`] without history sealing.
    pub async fn connect_with_keyring(
        config: RedisConfig,
        events: Arc<dyn BrokerEvents>,
        keyring: BusKeyring,
    ) -> Result<Arc<Self>, BusError> {
        Self::connect_with_keys(config, events, keyring, HistoryKeyring::off()).await
    }

    /// Like [`RedisEngine::connect`], signing and verifying every envelope
    /// with `keyring` (replace it later through [`RedisEngine::integrity`])
    /// and sealing history records with `history_keys`
    /// ([`RedisEngine::reload_history_keys`]).
    pub async fn connect_with_keys(
        config: RedisConfig,
        events: Arc<dyn BrokerEvents>,
        keyring: BusKeyring,
        history_keys: HistoryKeyring,
    ) -> Result<Arc<Self>, BusError> {
        // redis' rustls needs a process-wide provider; herald uses aws-lc-rs.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let workers = match config.pubsub_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(2))
            .thread_name("herald-redis")
            .enable_all()
            .build()
            .map_err(|e| BusError::Internal(format!("cannot start the redis runtime: {e}")))?;
        let started = runtime.spawn(Inner::start(config, events, workers, keyring, history_keys));
        let inner = match started.await {
            Ok(result) => result,
            Err(e) => Err(BusError::Internal(format!(
                "redis engine start failed: {e}"
            ))),
        };
        match inner {
            Ok(inner) => Ok(Arc::new(Self {
                inner,
                runtime: Some(runtime),
            })),
            Err(e) => {
                runtime.shutdown_background();
                Err(e)
            }
        }
    }

    pub fn engine(self: &Arc<Self>) -> Engine {
        Engine {
            broker: self.clone(),
            presence: self.clone(),
        }
    }

    pub fn stats(&self) -> RedisStats {
        RedisStats {
            messages_received: self.inner.inbox.received.load(Ordering::Relaxed),
            messages_dropped: self.inner.inbox.dropped.load(Ordering::Relaxed),
            messages_rejected: self.inner.rejected.load(Ordering::Relaxed),
            history_undecryptable: self.inner.undecryptable.load(Ordering::Relaxed),
            envelopes_rejected: std::array::from_fn(|i| {
                self.inner.refused[i].load(Ordering::Relaxed)
            }),
        }
    }

    /// The signing state: reload its keyring to rotate keys.
    pub fn integrity(&self) -> &Arc<Integrity> {
        &self.inner.integrity
    }

    /// Replaces the history keyring (rotation, crypto-shredding).
    pub fn reload_history_keys(&self, keys: HistoryKeyring) {
        self.inner.history_keys.store(Arc::new(keys));
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Inner {
    async fn start(
        config: RedisConfig,
        events: Arc<dyn BrokerEvents>,
        workers: usize,
        keyring: BusKeyring,
        history_keys: HistoryKeyring,
    ) -> Result<Arc<Self>, BusError> {
        let cluster = config.is_cluster();
        let keys = Keys::new(&config.prefix, cluster);
        let mut node_uid = events.node_info().uid;
        if node_uid.is_empty() {
            node_uid = random_id(16);
        }

        let mut queues = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel(config.pubsub_buffer.max(1));
            queues.push(tx);
            receivers.push(rx);
        }
        let inbox = Arc::new(Inbox::new(keys.clone(), queues, events.clone()));

        let links_per_shard = config.pubsub_connections.max(1);
        let control = keys.control_channel();
        let mut shards = Vec::new();
        if let Some(sentinel) = &config.sentinel {
            shards.push(sentinel_shard(
                &config, sentinel, &inbox, &keys, &node_uid, &control,
            )?);
        } else if cluster {
            shards.push(cluster_shard(&config, &inbox, &keys, &node_uid, &control).await?);
        } else {
            if config.addresses.is_empty() {
                return Err(BusError::Internal(
                    "engine.redis.address lists no Redis server".into(),
                ));
            }
            for (index, address) in config.addresses.iter().enumerate() {
                let client = standalone_client(&config, address)?;
                let commands = client
                    .get_connection_manager_lazy(manager_config(&config))
                    .map_err(|e| config_error(address, &e))?;
                let mut links = Vec::with_capacity(links_per_shard);
                for link in 0..links_per_shard {
                    let signals = Arc::new(LinkSignals::default());
                    let push = link::push_sender(inbox.clone(), signals.clone());
                    let pubsub = client
                        .get_connection_manager_lazy(
                            manager_config(&config)
                                .set_push_sender(push)
                                .set_automatic_resubscription(),
                        )
                        .map_err(|e| config_error(address, &e))?;
                    let mut permanent = vec![keys.link_channel(&node_uid, index * 1000 + link)];
                    if link == 0 {
                        permanent.push(control.clone());
                    }
                    links.push(Link::spawn(
                        PubSubConnection::Single(pubsub),
                        signals,
                        inbox.clone(),
                        permanent,
                        PING_INTERVAL,
                        config.command_timeout,
                    ));
                }
                shards.push(Shard {
                    commands: Commands::Single(commands),
                    commands_healthy: Arc::new(AtomicBool::new(false)),
                    links,
                });
            }
        }

        let integrity = Integrity::new(keyring, &node_uid);
        let inner = Arc::new(Self {
            keys,
            shards,
            events,
            node_uid,
            inbox,
            registry: Mutex::new(HashMap::new()),
            surveys: Mutex::new(HashMap::new()),
            emulations: Mutex::new(HashMap::new()),
            rejected: AtomicU64::new(0),
            integrity,
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            refusal_logged: std::array::from_fn(|_| AtomicU64::new(0)),
            history_keys: ArcSwap::from_pointee(history_keys),
            positions: Mutex::new(HashMap::new()),
            undecryptable: AtomicU64::new(0),
            unopened_logged: AtomicU64::new(0),
            next_control_shard: AtomicUsize::new(0),
            left: AtomicBool::new(false),
            clock_skew: Mutex::new(None),
            clock_logged: Mutex::new((ClockState::InStep, None)),
            config,
        });
        for rx in receivers {
            tokio::spawn(inner.clone().run_worker(rx));
        }
        tokio::spawn(inner.clone().run_health());
        tokio::spawn(inner.clone().run_heartbeats());
        Ok(inner)
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    fn link(&self, channel: &str) -> &Link {
        let shard = self.shard(channel);
        let index = (fnv1a64(channel.as_bytes()) % shard.links.len() as u64) as usize;
        &shard.links[index]
    }

    fn publish_command(&self) -> &'static str {
        if self.config.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs one engine call with the command timeout, mapping failures.
    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BusError> {
        match tokio::time::timeout(self.config.command_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(what, &e)),
            Err(_) => Err(BusError::Unavailable(format!("redis {what} timed out"))),
        }
    }

    /// Publishes an unsigned message (`p1:0::…`, `j1:…`, `l1:…`) on a client
    /// channel, signed when signing is on.
    async fn publish_raw(&self, channel: &str, inner: Vec<u8>) -> Result<(), BusError> {
        let name = self.keys.client_channel(channel);
        let payload = self.seal(name.as_bytes(), inner);
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(name).arg(payload);
        let commands = &self.shard(channel).commands;
        self.bounded("publish", commands.query::<()>(&cmd)).await
    }

    /// Whether a record that does not open may be logged now: at most one
    /// line per 10 s (a shredded key makes every read of its records fail).
    fn log_unopened(&self) -> bool {
        let now = unix_millis();
        let previous = self.unopened_logged.load(Ordering::Relaxed);
        now.saturating_sub(previous) >= REFUSAL_LOG_INTERVAL_MS
            && self
                .unopened_logged
                .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Notes where a history stream stands, for sealed publishes only:
    /// with sealing off nothing is locked or stored on the delivery path.
    fn remember_position(&self, channel: &str, epoch: &str, offset: u64) {
        if !self.history_keys.load().seals() {
            return;
        }
        let mut positions = self.positions.lock();
        if let Some(known) = positions.get_mut(channel) {
            if known.0 != epoch || known.1 < offset {
                *known = (epoch.to_owned(), offset);
            }
            return;
        }
        if positions.len() >= MAX_POSITIONS {
            positions.clear();
        }
        positions.insert(channel.to_owned(), (epoch.to_owned(), offset));
    }

    /// The signed form of an unsigned message for the Redis channel `name`.
    fn seal(&self, name: &[u8], inner: Vec<u8>) -> Vec<u8> {
        let Some((kind, body)) = crate::integrity::split_inner(&inner) else {
            return inner;
        };
        let mut payload = self.integrity.sign(name, kind, body, unix_millis());
        if payload.is_empty() {
            return inner;
        }
        payload.extend_from_slice(&inner);
        payload
    }

    /// The unsigned message inside an envelope that arrived on the Redis
    /// channel `name()`, or why the integrity check refused it (counted and
    /// logged). With signing off the name is never computed.
    fn open<'a>(
        &self,
        name: impl FnOnce() -> String,
        payload: &'a [u8],
    ) -> Result<&'a [u8], Rejection> {
        if !self.integrity.needs_check(payload) {
            return Ok(payload);
        }
        let name = name();
        let name = name.as_bytes();
        match self.integrity.open(name, payload, unix_millis()) {
            Ok(inner) => Ok(inner),
            Err(rejection) => {
                let total = self.refused[rejection.index()].fetch_add(1, Ordering::Relaxed) + 1;
                // Whoever can write to Redis can send these by the thousand:
                // one line per reason per 10 s, with the running count.
                let now = unix_millis();
                let last = &self.refusal_logged[rejection.index()];
                let previous = last.load(Ordering::Relaxed);
                if now.saturating_sub(previous) >= REFUSAL_LOG_INTERVAL_MS
                    && last
                        .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(channel = %String::from_utf8_lossy(name), reason = %rejection, total, "dropped an envelope that failed the integrity check");
                }
                Err(rejection)
            }
        }
    }

    async fn run_worker(self: Arc<Self>, mut rx: mpsc::Receiver<Incoming>) {
        while let Some(incoming) = rx.recv().await {
            match incoming {
                Incoming::Channel { channel, payload } => {
                    let name = || self.keys.client_channel(&channel);
                    let payload = match self.open(name, &payload) {
                        Ok(payload) => payload,
                        Err(Rejection::Stale) => {
                            // A real envelope (its tag passed) from a node whose
                            // clock is too far from ours: a publication of the
                            // channel may be lost, and positioned subscribers
                            // must recover it from the stream now rather than at
                            // the next publication that gets through, if any.
                            self.events.on_gap(&channel);
                            continue;
                        }
                        Err(_) => continue,
                    };
                    match envelope::decode_channel_message(payload) {
                        Ok(ChannelMessage::Publication { publication, epoch }) => {
                            if publication.offset > 0 {
                                // Others' publications tell where the stream is.
                                self.remember_position(&channel, &epoch, publication.offset);
                            }
                            self.events.on_publication(&channel, publication, &epoch)
                        }
                        Ok(ChannelMessage::Join(info)) => self.events.on_join(&channel, info),
                        Ok(ChannelMessage::Leave(info)) => self.events.on_leave(&channel, info),
                        Err(e) => {
                            self.rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(channel, error = %e, "dropped an undecodable message from redis");
                        }
                    }
                }
                Incoming::Control(payload) => {
                    let Ok(payload) = self.open(|| self.keys.control_channel(), &payload) else {
                        continue;
                    };
                    match envelope::decode_control(payload) {
                        Ok(message) => self.on_control(message),
                        Err(e) => {
                            self.rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "dropped an undecodable control message");
                        }
                    }
                }
            }
        }
    }

    fn on_control(self: &Arc<Self>, message: ControlMessage) {
        if message.node == self.node_uid {
            // Applied locally when sent; heartbeats of our own are not news.
            return;
        }
        match message.body {
            ControlBody::Heartbeat(mut info) => {
                info.uid = message.node.clone();
                self.registry
                    .lock()
                    .insert(message.node, (info, Instant::now()));
            }
            ControlBody::Command(command) => self.events.on_control(command),
            ControlBody::Leave => {
                self.registry.lock().remove(&message.node);
            }
            ControlBody::SurveyRequest { id, request } => {
                let reply = self.events.on_survey(&request);
                let inner = self.clone();
                tokio::spawn(async move {
                    let body = ControlBody::SurveyReply {
                        id,
                        to: message.node,
                        reply,
                    };
                    if let Err(e) = inner.send_control(body).await {
                        tracing::debug!(error = %e, "survey reply not sent");
                    }
                });
            }
            ControlBody::Emulation {
                id,
                to,
                session,
                data,
            } => {
                if to != self.node_uid {
                    return;
                }
                let Ok(data) = base64::engine::general_purpose::STANDARD.decode(data) else {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let taken = self.events.on_emulation(&session, data);
                let inner = self.clone();
                tokio::spawn(async move {
                    let found = taken.await;
                    let body = ControlBody::EmulationReply {
                        id,
                        to: message.node,
                        found,
                    };
                    if let Err(e) = inner.send_control(body).await {
                        tracing::debug!(error = %e, "emulation reply not sent");
                    }
                });
            }
            ControlBody::EmulationReply { id, to, found } => {
                if to == self.node_uid {
                    if let Some(waiting) = self.emulations.lock().remove(&id) {
                        let _ = waiting.send(found);
                    }
                }
            }
            ControlBody::SurveyReply { id, to, reply } => {
                if to == self.node_uid {
                    if let Some(answers) = self.surveys.lock().get(&id) {
                        let _ = answers.send(reply);
                    }
                }
            }
        }
    }

    async fn survey(&self, request: &SurveyRequest) -> Result<Vec<SurveyReply>, BusError> {
        let others = {
            let ttl = self.config.node_ttl;
            self.registry
                .lock()
                .values()
                .filter(|(_, seen)| seen.elapsed() < ttl)
                .count()
        };
        let mut replies = vec![self.events.on_survey(request)];
        if others == 0 {
            return Ok(replies);
        }
        let id = random_id(16);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.surveys.lock().insert(id.clone(), tx);
        let sent = self
            .send_control(ControlBody::SurveyRequest {
                id: id.clone(),
                request: request.clone(),
            })
            .await;
        if let Err(e) = sent {
            self.surveys.lock().remove(&id);
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + self.config.command_timeout;
        while replies.len() <= others {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => replies.push(reply),
                _ => break,
            }
        }
        self.surveys.lock().remove(&id);
        Ok(replies)
    }

    async fn emulate(
        &self,
        node: &str,
        session: &str,
        data: Vec<u8>,
    ) -> Result<Emulated, BusError> {
        let known = {
            let ttl = self.config.node_ttl;
            self.registry
                .lock()
                .get(node)
                .is_some_and(|(_, seen)| seen.elapsed() < ttl)
        };
        if !known {
            return Ok(Emulated::UnknownNode);
        }
        let id = random_id(16);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.emulations.lock().insert(id.clone(), tx);
        let sent = self
            .send_control(ControlBody::Emulation {
                id: id.clone(),
                to: node.to_owned(),
                session: session.to_owned(),
                data: base64::engine::general_purpose::STANDARD.encode(data),
            })
            .await;
        if let Err(e) = sent {
            self.emulations.lock().remove(&id);
            return Err(e);
        }
        let answer = tokio::time::timeout(self.config.command_timeout, rx).await;
        self.emulations.lock().remove(&id);
        match answer {
            Ok(Ok(true)) => Ok(Emulated::Delivered),
            Ok(Ok(false)) => Ok(Emulated::NoSession),
            _ => Err(BusError::Unavailable(
                "the node holding the session did not answer in time".into(),
            )),
        }
    }

    /// Publishes on the control channel through the first shard that works,
    /// starting with the next one in turn.
    async fn send_control(&self, body: ControlBody) -> Result<(), BusError> {
        let message = ControlMessage {
            node: self.node_uid.clone(),
            body,
        };
        let name = self.keys.control_channel();
        let payload = self.seal(name.as_bytes(), envelope::encode_control(&message));
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(name).arg(payload);
        let start = self.next_control_shard.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..self.shards.len() {
            let shard = &self.shards[(start + i) % self.shards.len()];
            match self
                .bounded("control publish", shard.commands.query::<()>(&cmd))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| BusError::Unavailable("no redis shard".into())))
    }

    async fn run_heartbeats(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.left.load(Ordering::Relaxed) {
                return;
            }
            self.measure_clock().await;
            let info = self.events.node_info();
            if let Err(e) = self.send_control(ControlBody::Heartbeat(info)).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
            let ttl = self.config.node_ttl;
            self.registry
                .lock()
                .retain(|_, (_, seen)| seen.elapsed() < ttl);
        }
    }

    /// Reads Redis's `TIME` (the first shard's) and keeps this node's offset
    /// from it; logs when the offset crosses half the envelope window or the
    /// window, and every minute while it stays past half.
    async fn measure_clock(&self) {
        let Some(shard) = self.shards.first() else {
            return;
        };
        let before = unix_micros();
        let time = self
            .bounded(
                "time",
                shard.commands.query::<(u64, u64)>(&redis::cmd("TIME")),
            )
            .await;
        let after = unix_micros();
        let skew = match time {
            Ok((secs, micros)) => clock_skew_ms(before, after, secs, micros),
            Err(e) => {
                tracing::debug!(error = %e, "redis clock not read");
                None
            }
        };
        let Some(skew_ms) = skew else {
            return;
        };
        *self.clock_skew.lock() = Some(skew_ms);
        let Some(reading) = self.clock() else {
            return;
        };
        let state = ClockState::of(&reading);
        let mut logged = self.clock_logged.lock();
        let due = logged.1.is_none_or(|at| at.elapsed() >= CLOCK_LOG_INTERVAL);
        if state == logged.0 && (state == ClockState::InStep || !due) {
            return;
        }
        *logged = (state, Some(Instant::now()));
        drop(logged);
        let skew_s = skew_ms as f64 / 1000.0;
        let window_s = crate::integrity::MAX_CLOCK_SKEW_MS / 1000;
        match state {
            ClockState::InStep => {
                tracing::info!(skew_s, "this node's clock is back in step with redis");
            }
            ClockState::Off => tracing::warn!(
                skew_s,
                window_s,
                "this node's clock is off redis's by more than half the signed bus's envelope window: a node as far off the other way refuses its envelopes"
            ),
            ClockState::OutsideWindow => tracing::error!(
                skew_s,
                window_s,
                "this node's clock is off redis's by more than the signed bus's envelope window: envelopes between it and the nodes in step are refused as stale, and /ready reports not ready"
            ),
        }
    }

    fn clock(&self) -> Option<ClockReading> {
        let skew_ms = (*self.clock_skew.lock())?;
        let window_ms = self
            .integrity
            .keyring()
            .requires_signatures()
            .then_some(crate::integrity::MAX_CLOCK_SKEW_MS);
        Some(ClockReading { skew_ms, window_ms })
    }

    async fn run_health(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(PING_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ping = redis::cmd("PING");
        loop {
            ticker.tick().await;
            for shard in &self.shards {
                let alive = self
                    .bounded("ping", shard.commands.query::<()>(&ping))
                    .await
                    .is_ok();
                if shard.commands_healthy.swap(alive, Ordering::Relaxed) != alive {
                    if alive {
                        tracing::info!("redis reachable");
                    } else {
                        tracing::warn!("redis unreachable");
                    }
                }
            }
        }
    }

    fn healthy(&self) -> bool {
        self.shards.iter().all(|shard| {
            shard.commands_healthy.load(Ordering::Relaxed) && shard.links.iter().all(Link::healthy)
        })
    }
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

fn standalone_client(config: &RedisConfig, address: &str) -> Result<redis::Client, BusError> {
    standalone_client_of(config, address).map_err(|e| config_error(address, &e))
}

/// A client of one server at `address` with the configured credentials,
/// RESP3 and CA.
fn standalone_client_of(config: &RedisConfig, address: &str) -> Result<redis::Client, RedisError> {
    client_of(
        address,
        Credentials {
            user: config.user.as_deref(),
            password: config.password.as_deref(),
            tls_ca_pem: config.tls_ca_pem.as_ref(),
        },
        ProtocolVersion::RESP3,
        Some(config.dead_link_timeout()),
    )
}

/// Who a client is and whom it trusts: the ACL user and password, which
/// override any in the address, and the CA of a `rediss://` server.
pub(super) struct Credentials<'a> {
    pub(super) user: Option<&'a str>,
    pub(super) password: Option<&'a str>,
    pub(super) tls_ca_pem: Option<&'a Vec<u8>>,
}

/// A client of the server at `address` (a data server or a Sentinel);
/// `dead_link`: the connection's `TCP_USER_TIMEOUT` (see
/// [`RedisConfig::dead_link_timeout`]).
pub(super) fn client_of(
    address: &str,
    credentials: Credentials<'_>,
    protocol: ProtocolVersion,
    dead_link: Option<Duration>,
) -> Result<redis::Client, RedisError> {
    let mut info = address.into_connection_info()?;
    if let Some(timeout) = dead_link {
        let tcp = with_dead_link(info.tcp_settings().clone(), timeout);
        info = info.set_tcp_settings(tcp);
    }
    let mut settings = info.redis_settings().clone();
    if let Some(user) = credentials.user {
        settings = settings.set_username(user);
    }
    if let Some(password) = credentials.password {
        settings = settings.set_password(password);
    }
    let info = info.set_redis_settings(settings.set_protocol(protocol));
    match credentials.tls_ca_pem {
        Some(ca) => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
}

/// `settings` with `TCP_USER_TIMEOUT` set to `timeout` (Linux only; other
/// systems keep TCP's own, much longer, limit).
fn with_dead_link(settings: TcpSettings, timeout: Duration) -> TcpSettings {
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(timeout);
    #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
    let _ = timeout;
    settings
}

async fn cluster_shard(
    config: &RedisConfig,
    inbox: &Arc<Inbox>,
    keys: &Keys,
    node_uid: &str,
    control: &str,
) -> Result<Shard, BusError> {
    let builder = |push: Option<_>| {
        let mut builder = ClusterClientBuilder::new(config.cluster_addresses.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.command_timeout)
            .use_protocol(ProtocolVersion::RESP3)
            .tcp_settings(with_dead_link(
                TcpSettings::default(),
                config.dead_link_timeout(),
            ));
        if let Some(user) = &config.user {
            builder = builder.username(user);
        }
        if let Some(password) = &config.password {
            builder = builder.password(password);
        }
        if let Some(ca) = &config.tls_ca_pem {
            builder = builder.certs(TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        if let Some(push) = push {
            builder = builder.push_sender(push);
        }
        builder.build()
    };
    let seeds = config.cluster_addresses.join(",");
    let client = builder(None).map_err(|e| config_error(&seeds, &e))?;
    let commands = tokio::time::timeout(config.connect_timeout * 5, client.get_async_connection())
        .await
        .map_err(|_| BusError::Unavailable(format!("redis cluster {seeds}: connect timed out")))?
        .map_err(|e| unavailable("cluster connect", &e))?;
    let mut links = Vec::new();
    for link in 0..config.pubsub_connections.max(1) {
        let signals = Arc::new(LinkSignals::default());
        let push = link::push_sender(inbox.clone(), signals.clone());
        let client = builder(Some(push)).map_err(|e| config_error(&seeds, &e))?;
        let connection =
            tokio::time::timeout(config.connect_timeout * 5, client.get_async_connection())
                .await
                .map_err(|_| {
                    BusError::Unavailable(format!("redis cluster {seeds}: connect timed out"))
                })?
                .map_err(|e| unavailable("cluster connect", &e))?;
        let mut permanent = vec![keys.link_channel(node_uid, link)];
        if link == 0 {
            permanent.push(control.to_owned());
        }
        links.push(Link::spawn(
            PubSubConnection::Cluster(connection),
            signals,
            inbox.clone(),
            permanent,
            PING_INTERVAL,
            config.command_timeout,
        ));
    }
    Ok(Shard {
        commands: Commands::Cluster(commands),
        commands_healthy: Arc::new(AtomicBool::new(false)),
        links,
    })
}

/// The shard of a master behind Sentinel: commands go to whichever master
/// the watch holds, pub/sub links follow it. Nothing is connected here; the
/// engine reports unhealthy until a master is found.
fn sentinel_shard(
    config: &RedisConfig,
    sentinel: &SentinelConfig,
    inbox: &Arc<Inbox>,
    keys: &Keys,
    node_uid: &str,
    control: &str,
) -> Result<Shard, BusError> {
    if sentinel.addresses.is_empty() || sentinel.master_name.is_empty() {
        return Err(BusError::Internal(
            "engine.redis.sentinel_address and sentinel_master_name are both needed".into(),
        ));
    }
    let watch = sentinel::MasterWatch::new(config, sentinel)
        .map_err(|(address, e)| config_error(&address, &e))?;
    let mut links = Vec::new();
    for link in 0..config.pubsub_connections.max(1) {
        let signals = Arc::new(LinkSignals::default());
        let push = link::push_sender(inbox.clone(), signals.clone());
        let following = FollowingPubSub::new(
            &watch,
            manager_config(config)
                .set_push_sender(push)
                .set_automatic_resubscription(),
        );
        let mut permanent = vec![keys.link_channel(node_uid, link)];
        if link == 0 {
            permanent.push(control.to_owned());
        }
        links.push(Link::spawn(
            PubSubConnection::Sentinel(Box::new(following)),
            signals,
            inbox.clone(),
            permanent,
            PING_INTERVAL,
            config.command_timeout,
        ));
    }
    tokio::spawn(watch.clone().run());
    Ok(Shard {
        commands: Commands::Sentinel(watch),
        commands_healthy: Arc::new(AtomicBool::new(false)),
        links,
    })
}

/// Redacts credentials: a Redis URL may hold a password.
fn redact(address: &str) -> String {
    match (address.find("://"), address.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &address[..scheme], &address[at + 1..])
        }
        _ => address.to_owned(),
    }
}

fn config_error(address: &str, e: &RedisError) -> BusError {
    BusError::Internal(format!("redis address {}: {e}", redact(address)))
}

fn unavailable(what: &str, e: &RedisError) -> BusError {
    BusError::Unavailable(format!("redis {what}: {e}"))
}

fn random_id(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphabetic)
        .take(len)
        .map(char::from)
        .collect()
}

/// Whole seconds for EXPIRE, rounding up so a sub-second TTL is not "none".
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// This node's clock minus Redis's (ms) from one `TIME` round trip: local
/// time before and after (µs since the epoch) against Redis's answer, taken
/// at the midpoint. `None` when the round trip took too long to tell, or the
/// local clock went back during it.
fn clock_skew_ms(before_us: u64, after_us: u64, secs: u64, micros: u64) -> Option<i64> {
    let round_trip = after_us.checked_sub(before_us)?;
    if round_trip > CLOCK_MAX_ROUND_TRIP_US {
        return None;
    }
    let local = i128::from(before_us) + i128::from(round_trip / 2);
    let remote = i128::from(secs) * 1_000_000 + i128::from(micros);
    i64::try_from((local - remote) / 1000).ok()
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait]
impl Broker for RedisEngine {
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BusError> {
        let inner = &self.inner;
        let body = crate::seal::publication_body(&publication);
        if options.history.is_none() && options.idempotency_key.is_none() {
            inner
                .publish_raw(channel, envelope::encode_unpositioned(&body))
                .await?;
            return Ok(StreamPosition::default());
        }
        let keys = &inner.keys;
        let (stream, meta, client) = (
            keys.stream(channel),
            keys.stream_meta(channel),
            keys.client_channel(channel),
        );
        let result = match &options.idempotency_key {
            Some(key) => keys.result(channel, key),
            None => meta.clone(),
        };
        let (size, ttl, meta_ttl) = match &options.history {
            Some(h) => (h.size.max(1) as u64, ttl_secs(h.ttl), ttl_secs(h.meta_ttl)),
            None => (0, 0, 0),
        };
        let idempotency_ttl = if options.idempotency_key.is_some() {
            IDEMPOTENCY_TTL_SECS
        } else {
            0
        };
        let (size, ttl, meta_ttl, idempotency_ttl) = (
            size.to_string(),
            ttl.to_string(),
            meta_ttl.to_string(),
            idempotency_ttl.to_string(),
        );
        let command = if inner.config.is_cluster() {
            "spublish"
        } else {
            "publish"
        };
        let sealing = options.history.is_some() && inner.history_keys.load().seals();
        // The script writes `p1:<offset>:<epoch>:` itself; the signature
        // covers the kind and the body (integrity.rs), and the position too
        // when sealing makes the script enforce it (signed per attempt below).
        let unpositioned = if sealing {
            Vec::new()
        } else {
            inner
                .integrity
                .sign(client.as_bytes(), b"p1", &body, unix_millis())
        };
        // A sealed record is bound to its offset and epoch, which only the
        // script assigns: seal for the position this node expects next, and
        // let the script refuse (answering the real one) when another
        // publisher got there first.
        let mut attempt = 0;
        // Whether the node sealed for a position it had seen: a guess made
        // without one (a stream this node has not seen, or one that does not
        // exist yet, whose epoch only the script derives) costs one round
        // trip that answers the real position, and no pause.
        let mut guessed = false;
        loop {
            attempt += 1;
            let (record, expected_epoch, expected_offset, positioned) = if sealing {
                let known = inner.positions.lock().get(channel).cloned();
                guessed = known.is_none();
                let (epoch, top) = known.unwrap_or_default();
                let offset = top + 1;
                let record = inner
                    .history_keys
                    .load()
                    .seal(channel, &epoch, offset, &body)
                    .unwrap_or_default();
                let signature = inner.integrity.sign_positioned(
                    client.as_bytes(),
                    offset,
                    &epoch,
                    &body,
                    unix_millis(),
                );
                (record, epoch, offset.to_string(), Some(signature))
            } else {
                (Vec::new(), String::new(), String::new(), None)
            };
            let signature = positioned.as_deref().unwrap_or(&unpositioned);
            let (offset, epoch, outcome) = inner
                .bounded(
                    "publish",
                    inner
                        .shard(channel)
                        .commands
                        .script_with_lineage::<(u64, String, u8)>(
                            &scripts::PUBLISH,
                            &[&stream, &meta, &result, &client],
                            &[
                                &body,
                                size.as_bytes(),
                                ttl.as_bytes(),
                                meta_ttl.as_bytes(),
                                command.as_bytes(),
                                idempotency_ttl.as_bytes(),
                                signature,
                                &record,
                                expected_epoch.as_bytes(),
                                expected_offset.as_bytes(),
                            ],
                        ),
                )
                .await?;
            if outcome != scripts::PUBLISH_CONFLICT {
                if options.history.is_some() {
                    inner.remember_position(channel, &epoch, offset);
                }
                return Ok(StreamPosition { offset, epoch });
            }
            // The stream moved on: `offset` and `epoch` are its top now.
            inner.remember_position(channel, &epoch, offset);
            if attempt >= MAX_SEAL_ATTEMPTS {
                return Err(BusError::Unavailable(format!(
                    "publish to {channel}: other publishers took the next offset {MAX_SEAL_ATTEMPTS} times in a row"
                )));
            }
            if guessed {
                continue;
            }
            // A publisher that just won answers first and would win the next
            // race too: step back a random moment so the loser gets a turn.
            let pause = rand::rng().random_range(0..=attempt.min(8) as u64 * 500);
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
    }

    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), BusError> {
        self.inner
            .publish_raw(channel, envelope::encode_join(&info))
            .await
    }

    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), BusError> {
        self.inner
            .publish_raw(channel, envelope::encode_leave(&info))
            .await
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BusError> {
        let inner = &self.inner;
        let name = inner.keys.client_channel(channel);
        inner
            .bounded("subscribe", inner.link(channel).subscribe(name))
            .await
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BusError> {
        let inner = &self.inner;
        let name = inner.keys.client_channel(channel);
        inner
            .bounded("unsubscribe", inner.link(channel).unsubscribe(name))
            .await
    }

    async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, BusError> {
        let inner = &self.inner;
        let (stream, meta) = (inner.keys.stream(channel), inner.keys.stream_meta(channel));
        let has_since = if query.since.is_some() { "1" } else { "0" };
        let since = query.since.as_ref().map_or(0, |s| s.offset).to_string();
        let limit = query
            .limit
            .map_or(-1, |l| l.min(i64::MAX as usize) as i64)
            .to_string();
        let reverse = if query.reverse { "1" } else { "0" };
        let meta_ttl = ttl_secs(query.meta_ttl).to_string();
        let reply = inner
            .bounded(
                "history",
                inner.shard(channel).commands.script_with_lineage::<Value>(
                    &scripts::HISTORY,
                    &[&stream, &meta],
                    &[
                        has_since.as_bytes(),
                        since.as_bytes(),
                        limit.as_bytes(),
                        reverse.as_bytes(),
                        meta_ttl.as_bytes(),
                    ],
                ),
            )
            .await?;
        let page = parse_history(
            reply,
            channel,
            &inner.history_keys.load(),
            &inner.undecryptable,
        )
        .inspect_err(|e| {
            if matches!(e, BusError::Undecryptable) && inner.log_unopened() {
                tracing::warn!(channel, "a history read failed: records that cannot be opened (key removed or record tampered)");
            }
        })?;
        if let Some(since) = &query.since {
            if !since.epoch.is_empty() && since.epoch != page.position.epoch {
                return Err(BusError::UnrecoverablePosition);
            }
        }
        Ok(page)
    }

    async fn remove_history(&self, channel: &str) -> Result<(), BusError> {
        let inner = &self.inner;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(inner.keys.stream(channel));
        inner
            .bounded(
                "remove history",
                inner.shard(channel).commands.query::<()>(&cmd),
            )
            .await
    }

    async fn publish_control(&self, command: &ControlCommand) -> Result<(), BusError> {
        // This node first: it must act even when Redis cannot be reached.
        self.inner.events.on_control(command.clone());
        self.inner
            .send_control(ControlBody::Command(command.clone()))
            .await
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let mut me = self.inner.events.node_info();
        me.uid = self.inner.node_uid.clone();
        let ttl = self.inner.config.node_ttl;
        let mut nodes = vec![me];
        nodes.extend(
            self.inner
                .registry
                .lock()
                .values()
                .filter(|(_, seen)| seen.elapsed() < ttl)
                .map(|(info, _)| info.clone()),
        );
        nodes
    }

    async fn survey(&self, request: &SurveyRequest) -> Result<Vec<SurveyReply>, BusError> {
        self.inner.survey(request).await
    }

    async fn emulate(
        &self,
        node: &str,
        session: &str,
        data: Vec<u8>,
    ) -> Result<Emulated, BusError> {
        self.inner.emulate(node, session, data).await
    }

    async fn leave(&self) -> Result<(), BusError> {
        self.inner.left.store(true, Ordering::Relaxed);
        self.inner.send_control(ControlBody::Leave).await
    }

    async fn revoke_token(&self, token_id: &str, until: u64) -> Result<(), BusError> {
        let inner = &self.inner;
        let key = inner.keys.revoked_token(token_id);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(1)
            .arg("EXAT")
            .arg(until.max(unix_now() + 1));
        inner
            .bounded("revoke", inner.shard(&key).commands.query::<()>(&cmd))
            .await
    }

    async fn invalidate_user_tokens(
        &self,
        user: &str,
        issued_before: u64,
        until: u64,
    ) -> Result<(), BusError> {
        let inner = &self.inner;
        let key = inner.keys.revoked_user(user);
        let (before, until) = (
            issued_before.to_string(),
            until.max(unix_now() + 1).to_string(),
        );
        inner
            .bounded(
                "invalidate",
                inner.shard(&key).commands.script::<u64>(
                    &scripts::INVALIDATE_USER,
                    &[&key],
                    &[before.as_bytes(), until.as_bytes()],
                ),
            )
            .await
            .map(|_| ())
    }

    async fn token_revoked(
        &self,
        token_id: Option<&str>,
        user: &str,
        issued_at: Option<u64>,
        _now: u64,
    ) -> Result<bool, BusError> {
        let inner = &self.inner;
        if let Some(id) = token_id {
            let key = inner.keys.revoked_token(id);
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(&key);
            let exists: u64 = inner
                .bounded("revocation check", inner.shard(&key).commands.query(&cmd))
                .await?;
            if exists > 0 {
                return Ok(true);
            }
        }
        if user.is_empty() {
            return Ok(false);
        }
        let key = inner.keys.revoked_user(user);
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let before: Option<u64> = inner
            .bounded("revocation check", inner.shard(&key).commands.query(&cmd))
            .await?;
        Ok(before.is_some_and(|before| issued_at.unwrap_or(0) < before))
    }

    fn healthy(&self) -> bool {
        self.inner.healthy()
    }

    fn clock(&self) -> Option<ClockReading> {
        self.inner.clock()
    }

    fn key_ids(&self) -> crate::EngineKeyIds {
        let bus = self.inner.integrity.keyring();
        let history = self.inner.history_keys.load();
        crate::EngineKeyIds {
            bus: Some(crate::KeyIds {
                active: bus.active_id().map(str::to_owned),
                ids: bus.ids(),
            }),
            history: Some(crate::KeyIds {
                active: history.active_id().map(str::to_owned),
                ids: history.ids(),
            }),
        }
    }

    fn counters(&self) -> BrokerCounters {
        let stats = self.stats();
        BrokerCounters {
            messages_rejected: stats.messages_rejected,
            messages_dropped: stats.messages_dropped,
            envelopes_rejected: Rejection::ALL
                .iter()
                .zip(stats.envelopes_rejected)
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            history_undecryptable: stats.history_undecryptable,
            ..Default::default()
        }
    }
}

/// Reads a HISTORY reply, opening sealed records; records that cannot be
/// opened are added to `undecryptable` and fail the whole read.
fn parse_history(
    reply: Value,
    channel: &str,
    keys: &HistoryKeyring,
    undecryptable: &AtomicU64,
) -> Result<HistoryPage, BusError> {
    let malformed = |what: &str| BusError::Internal(format!("malformed history reply: {what}"));
    let Value::Array(parts) = reply else {
        return Err(malformed("not an array"));
    };
    let mut parts = parts.into_iter();
    let (Some(top), Some(epoch), Some(entries)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("short"));
    };
    let top: u64 = redis::from_redis_value(top).map_err(|_| malformed("top offset"))?;
    let epoch: String = redis::from_redis_value(epoch).map_err(|_| malformed("epoch"))?;
    let entries = match entries {
        Value::Array(entries) => entries,
        Value::Nil => Vec::new(),
        _ => return Err(malformed("entries")),
    };
    let mut publications = Vec::with_capacity(entries.len());
    let mut unopened = 0;
    for entry in entries {
        let Value::Array(entry) = entry else {
            return Err(malformed("entry"));
        };
        let mut entry = entry.into_iter();
        let (Some(id), Some(fields)) = (entry.next(), entry.next()) else {
            return Err(malformed("entry"));
        };
        let id: String = redis::from_redis_value(id).map_err(|_| malformed("entry id"))?;
        let offset = id
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<u64>().ok())
            .ok_or_else(|| malformed("entry id"))?;
        let fields: Vec<Vec<u8>> =
            redis::from_redis_value(fields).map_err(|_| malformed("entry fields"))?;
        let Some(body) = fields
            .chunks(2)
            .find(|pair| pair.len() == 2 && pair[0] == b"d")
            .map(|pair| &pair[1])
        else {
            return Err(malformed("entry without data"));
        };
        let body = match keys.open(channel, &epoch, offset, body) {
            Ok(body) => body,
            Err(e) => {
                tracing::debug!(channel, offset, error = ?e, "a history record cannot be opened");
                unopened += 1;
                continue;
            }
        };
        let mut publication = envelope::decode_publication(&body)
            .map_err(|e| malformed(&format!("publication {offset}: {e}")))?;
        publication.offset = offset;
        // The publisher's delta request concerns live delivery only.
        publication.delta = false;
        publications.push(publication);
    }
    if unopened > 0 {
        undecryptable.fetch_add(unopened, Ordering::Relaxed);
        return Err(BusError::Undecryptable);
    }
    Ok(HistoryPage {
        publications,
        position: StreamPosition { offset: top, epoch },
    })
}

#[async_trait]
impl PresenceStore for RedisEngine {
    async fn add_presence(
        &self,
        channel: &str,
        info: ClientInfo,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let inner = &self.inner;
        let (data, expire) = (
            inner.keys.presence_data(channel),
            inner.keys.presence_expire(channel),
        );
        let ttl = ttl_secs(ttl).max(1);
        let json = serde_json::to_vec(&info).expect("client info always serializes");
        // User ids and connection info are sealed like history records.
        let json = inner
            .history_keys
            .load()
            .seal_presence(channel, &info.client, &json)
            .unwrap_or(json);
        let expire_at = (unix_now() + ttl).to_string();
        let key_ttl = ttl.to_string();
        inner
            .bounded(
                "presence add",
                inner.shard(channel).commands.script::<()>(
                    &scripts::PRESENCE_ADD,
                    &[&data, &expire],
                    &[
                        info.client.as_bytes(),
                        &json,
                        expire_at.as_bytes(),
                        key_ttl.as_bytes(),
                    ],
                ),
            )
            .await
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BusError> {
        let inner = &self.inner;
        let (data, expire) = (
            inner.keys.presence_data(channel),
            inner.keys.presence_expire(channel),
        );
        inner
            .bounded(
                "presence remove",
                inner.shard(channel).commands.script::<()>(
                    &scripts::PRESENCE_REMOVE,
                    &[&data, &expire],
                    &[client.as_bytes()],
                ),
            )
            .await
    }

    async fn presence(&self, channel: &str) -> Result<BTreeMap<String, ClientInfo>, BusError> {
        let inner = &self.inner;
        let (data, expire) = (
            inner.keys.presence_data(channel),
            inner.keys.presence_expire(channel),
        );
        let now = unix_now().to_string();
        let flat = inner
            .bounded(
                "presence",
                inner.shard(channel).commands.script::<Vec<Vec<u8>>>(
                    &scripts::PRESENCE_GET,
                    &[&data, &expire],
                    &[now.as_bytes()],
                ),
            )
            .await?;
        let mut members = BTreeMap::new();
        for pair in flat.chunks(2) {
            let [client, json] = pair else { continue };
            let Ok(client) = String::from_utf8(client.clone()) else {
                continue;
            };
            let keys = inner.history_keys.load();
            let json = match keys.open_presence(channel, &client, json) {
                Ok(json) => json,
                Err(e) => {
                    if inner.log_unopened() {
                        tracing::warn!(channel, error = ?e, "skipped a presence entry that cannot be opened");
                    }
                    continue;
                }
            };
            match serde_json::from_slice::<ClientInfo>(&json) {
                Ok(info) => {
                    members.insert(client, info);
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "skipped an undecodable presence entry")
                }
            }
        }
        Ok(members)
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, BusError> {
        let members = self.presence(channel).await?;
        let users: HashSet<&str> = members.values().map(|info| info.user.as_str()).collect();
        Ok(PresenceStats {
            num_clients: members.len().try_into().unwrap_or(u32::MAX),
            num_users: users.len().try_into().unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_addresses() {
        assert_eq!(
            redact("redis://alice:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://h:1"), "rediss://h:1");
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::ZERO), 0);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(3001)), 4);
    }

    #[test]
    fn clock_skew_is_taken_at_the_round_trip_midpoint() {
        let redis = 1_700_000_000_u64;
        // 40 s ahead, a 2 ms round trip: Redis answered at our midpoint.
        let before = (redis + 40) * 1_000_000 - 1_000;
        assert_eq!(
            clock_skew_ms(before, before + 2_000, redis, 0),
            Some(40_000)
        );
        // 20.5 s behind.
        let before = redis * 1_000_000 - 20_500_000;
        assert_eq!(clock_skew_ms(before, before, redis, 0), Some(-20_500));
        // In step, Redis's microseconds count.
        assert_eq!(
            clock_skew_ms(
                redis * 1_000_000 + 250_000,
                redis * 1_000_000 + 250_000,
                redis,
                250_000
            ),
            Some(0)
        );
        // Too slow a round trip, or the clock went back: no reading.
        assert_eq!(clock_skew_ms(0, 1_000_001, 0, 0), None);
        assert_eq!(clock_skew_ms(10, 9, 0, 0), None);
        // Absurd answers do not overflow.
        assert_eq!(clock_skew_ms(0, 0, u64::MAX, 999_999), None);
    }

    #[test]
    fn clock_states_follow_the_envelope_window() {
        let reading = |skew_ms, signed: bool| ClockReading {
            skew_ms,
            window_ms: signed.then_some(crate::integrity::MAX_CLOCK_SKEW_MS),
        };
        assert_eq!(ClockState::of(&reading(14_000, true)), ClockState::InStep);
        assert_eq!(ClockState::of(&reading(-20_000, true)), ClockState::Off);
        assert_eq!(ClockState::of(&reading(20_000, false)), ClockState::Off);
        assert_eq!(
            ClockState::of(&reading(40_000, true)),
            ClockState::OutsideWindow
        );
        assert_eq!(
            ClockState::of(&reading(-40_000, true)),
            ClockState::OutsideWindow
        );
        // Without bus keys nothing is refused: only the warning.
        assert_eq!(ClockState::of(&reading(40_000, false)), ClockState::Off);
    }
}
