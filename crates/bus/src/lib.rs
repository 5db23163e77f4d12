//! The Broker, presence and history abstraction, and its engines.
//!
//! The gateway receives these traits; it never knows which engine is behind
//! them. `memory` is the single-node default; `redis` connects any number of
//! nodes through Redis (standalone, sharded, or Redis Cluster).
//!
//! Events flow the other way through [`BrokerEvents`], which the node's Hub
//! implements: an engine hands every publication, join and leave of a channel
//! this node subscribed to (through [`Broker::subscribe`]) to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::{ClientInfo, Publication, RawJson, StreamPosition};
use serde::{Deserialize, Serialize};

pub mod integrity;
pub mod memory;
pub mod redis;
pub mod seal;

/// What can go wrong inside an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The backing store cannot be reached now; the caller may retry.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// `since` names an epoch the stream no longer has.
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    /// Stored records that cannot be opened: sealed with a history key that
    /// was removed (crypto-shredded), or tampered with. Recovery answers
    /// `recovered: false`, as for a lost position.
    #[error("history records cannot be opened")]
    Undecryptable,
    #[error("engine error: {0}")]
    Internal(String),
}

/// History settings of the channel a publication goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Publications kept (the stream is trimmed to this many).
    pub size: usize,
    /// The stream expires this long after its last publication.
    pub ttl: Duration,
    /// Epoch and top offset live this long after the last touch.
    pub meta_ttl: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// `None`: the publication is not kept and gets no offset.
    pub history: Option<HistoryOptions>,
    /// API publishes: a repeated key within 5 minutes returns the first
    /// result without publishing again.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Publications after this position (exclusive). `None`: from the start
    /// (or from the end with `reverse`).
    pub since: Option<StreamPosition>,
    /// `Some(0)`: only the stream top; `None`: no limit.
    pub limit: Option<usize>,
    pub reverse: bool,
    /// Refreshes the stream meta with this TTL. A read never creates a
    /// stream: one nobody published to answers offset 0 and the epoch its
    /// first publish will take.
    pub meta_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub publications: Vec<Publication>,
    /// The stream top: last offset and current epoch.
    pub position: StreamPosition,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    pub num_clients: u32,
    pub num_users: u32,
}

/// A cluster-wide command: every node, this one included, applies it to its
/// own clients. An empty `client` matches every client of `user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlCommand {
    Disconnect {
        user: String,
        #[serde(default)]
        client: String,
        /// Client ids left connected.
        #[serde(default)]
        whitelist: Vec<String>,
        code: u16,
        reason: String,
    },
    Unsubscribe {
        user: String,
        channel: String,
        #[serde(default)]
        client: String,
    },
    Subscribe {
        user: String,
        channel: String,
        #[serde(default)]
        client: String,
        /// The subscription's `chan_info`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<RawJson>,
        /// Sent to the client with the subscribe push.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<RawJson>,
    },
    Refresh {
        user: String,
        #[serde(default)]
        client: String,
        /// Disconnect now as expired.
        #[serde(default)]
        expired: bool,
        /// New expiry (unix seconds); `None` = never.
        #[serde(default)]
        expire_at: Option<u64>,
    },
    /// Close every connection authenticated with the token `token_id` (jti).
    RevokeToken { token_id: String },
    /// Close every connection of `user` whose token was issued (iat) before
    /// `issued_before` (unix seconds); a token without iat counts as old.
    InvalidateUserTokens { user: String, issued_before: u64 },
}

/// What became of commands routed to another node's emulated connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emulated {
    /// The connection took them.
    Delivered,
    /// The node answered: it has no connection with that session.
    NoSession,
    /// No live node has that uid.
    UnknownNode,
}

/// [`BrokerEvents::on_emulation`]'s answer.
pub type EmulationFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// A question every node answers about itself (cluster-wide API calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SurveyRequest {
    /// Channels with local subscribers, and how many.
    Channels,
}

/// One node's answer to a [`SurveyRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SurveyReply {
    Channels { channels: BTreeMap<String, u32> },
}

/// Running totals an engine keeps (`herald_bus_rejected_envelopes_total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerCounters {
    /// Messages from other nodes that could not be decoded.
    pub messages_rejected: u64,
    /// Messages dropped because a delivery queue was full.
    pub messages_dropped: u64,
    /// Envelopes refused by the integrity check, by reason label
    /// (`herald_bus_rejected_envelopes_total{reason}`).
    pub envelopes_rejected: Vec<(&'static str, u64)>,
    /// History records read back that could not be opened.
    pub history_undecryptable: u64,
    /// History streams the engine keeps now, where it counts them (the
    /// memory engine; Redis keeps its own).
    pub streams: Option<u64>,
    /// Streams evicted by the engine's stream limit.
    pub streams_evicted: u64,
}

/// This node's clock against the engine's (Redis `TIME`), measured with every
/// heartbeat: `herald_engine_clock_skew_seconds` and `/ready` read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// This node's clock minus the engine's, in milliseconds (positive: this
    /// node is ahead), taken at the midpoint of one round trip.
    pub skew_ms: i64,
    /// The envelope window of the signed bus ([`integrity::MAX_CLOCK_SKEW_MS`])
    /// while this node checks envelopes (it holds bus keys), else `None`.
    pub window_ms: Option<u64>,
}

impl ClockReading {
    /// Past the envelope window: this node refuses the envelopes of every node
    /// in step with the engine, and they refuse its own.
    pub fn outside_window(&self) -> bool {
        self.window_ms
            .is_some_and(|window| self.skew_ms.unsigned_abs() > window)
    }

    /// Past half the window (whether or not envelopes are checked): a node
    /// as far off the other way would refuse this one's envelopes.
    pub fn past_half_window(&self) -> bool {
        self.skew_ms.unsigned_abs() > integrity::MAX_CLOCK_SKEW_MS / 2
    }
}

/// One node as the registry knows it (heartbeat content, `/api/info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeInfo {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub num_clients: u64,
    pub num_users: u64,
    pub num_channels: u64,
    pub num_subs: u64,
    /// Seconds since the node started.
    pub uptime: u64,
}

/// Publishing, node subscriptions and history.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes to every node subscribed to `channel`. With history, the
    /// engine assigns the next offset atomically with storing and delivery, and
    /// the publication handed to [`BrokerEvents::on_publication`] carries it.
    /// Returns the position (`offset` 0 and empty epoch without history).
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BusError>;

    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), BusError>;

    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), BusError>;

    /// This node starts receiving the channel's events. Idempotent.
    async fn subscribe(&self, channel: &str) -> Result<(), BusError>;

    /// This node stops receiving the channel's events. Idempotent.
    async fn unsubscribe(&self, channel: &str) -> Result<(), BusError>;

    async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, BusError>;

    async fn remove_history(&self, channel: &str) -> Result<(), BusError>;

    /// Delivers a control command to every node, this one included, through
    /// [`BrokerEvents::on_control`].
    async fn publish_control(&self, command: &ControlCommand) -> Result<(), BusError>;

    /// The nodes seen alive recently, this one included.
    fn nodes(&self) -> Vec<NodeInfo>;

    /// Asks every live node, this one included, and returns the answers that
    /// came within the engine's survey timeout.
    async fn survey(&self, request: &SurveyRequest) -> Result<Vec<SurveyReply>, BusError>;

    /// Hands client commands to the emulated connection `session` on the
    /// other node `node` (the control path), and waits until it took them
    /// or the engine's command timeout passed. An engine without other
    /// nodes knows none.
    async fn emulate(
        &self,
        node: &str,
        session: &str,
        data: Vec<u8>,
    ) -> Result<Emulated, BusError> {
        let _ = (node, session, data);
        Ok(Emulated::UnknownNode)
    }

    /// False while the backing store cannot be reached.
    fn healthy(&self) -> bool;

    /// Refuses the token `token_id` (jti) until `until` (unix seconds).
    async fn revoke_token(&self, token_id: &str, until: u64) -> Result<(), BusError>;

    /// Refuses `user`'s tokens issued before `issued_before` until `until`.
    async fn invalidate_user_tokens(
        &self,
        user: &str,
        issued_before: u64,
        until: u64,
    ) -> Result<(), BusError>;

    /// Whether a token is refused: its id revoked, or its user's tokens
    /// invalidated after it was issued.
    async fn token_revoked(
        &self,
        token_id: Option<&str>,
        user: &str,
        issued_at: Option<u64>,
        now: u64,
    ) -> Result<bool, BusError>;

    /// This node leaves the cluster (graceful shutdown): the others drop it
    /// from their registries at once.
    async fn leave(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// Running totals for metrics.
    fn counters(&self) -> BrokerCounters {
        BrokerCounters::default()
    }

    /// The last measurement of this node's clock against the engine's; `None`
    /// for an engine without a clock of its own (memory) or before the first.
    fn clock(&self) -> Option<ClockReading> {
        None
    }

    /// The ids of the keys the engine holds, never their material: the bus
    /// signing keys (a Redis engine) and the history sealing keys.
    fn key_ids(&self) -> EngineKeyIds {
        EngineKeyIds::default()
    }
}

/// Which keys of a keyring are held and which one is active (ids only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyIds {
    /// The key new signatures or seals use; `None`: signing or sealing is off.
    pub active: Option<String>,
    /// Every key id held, sorted (the active one included).
    pub ids: Vec<String>,
}

/// [`Broker::key_ids`]: `None` for a keyring the engine does not use (the
/// memory engine has no bus).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineKeyIds {
    pub bus: Option<KeyIds>,
    pub history: Option<KeyIds>,
}

/// Who is in a channel, across every node.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds or refreshes a client's entry; it expires after `ttl` unless refreshed.
    async fn add_presence(
        &self,
        channel: &str,
        info: ClientInfo,
        ttl: Duration,
    ) -> Result<(), BusError>;

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BusError>;

    /// client id -> info
    async fn presence(&self, channel: &str) -> Result<BTreeMap<String, ClientInfo>, BusError>;

    /// Users are counted once however many connections they hold.
    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, BusError>;
}

/// Implemented by the node's Hub: where an engine delivers channel events.
///
/// Called from engine tasks; implementations must not block.
pub trait BrokerEvents: Send + Sync + 'static {
    /// `epoch` is empty for channels without history.
    fn on_publication(&self, channel: &str, publication: Publication, epoch: &str);
    fn on_join(&self, channel: &str, info: ClientInfo);
    fn on_leave(&self, channel: &str, info: ClientInfo);

    /// A control command published by any node (this one included).
    fn on_control(&self, command: ControlCommand);

    /// Publications of `channel` may have been lost (for example across a
    /// pub/sub reconnect): positioned subscribers must recover from history.
    fn on_gap(&self, channel: &str);

    /// This node's current figures, for heartbeats and the node registry.
    fn node_info(&self) -> NodeInfo;

    /// Client commands for the emulated connection `session` of this node
    /// (bidirectional emulation, routed here from the node that took the
    /// HTTP request). Resolves once the connection has taken them: true, or
    /// false when no connection of this node has that session. The default
    /// has no connections.
    fn on_emulation(&self, session: &str, data: Vec<u8>) -> EmulationFuture {
        let _ = (session, data);
        Box::pin(std::future::ready(false))
    }

    /// This node's answer to a survey. The default knows no channels (for
    /// implementations without local subscribers, such as test recorders).
    fn on_survey(&self, request: &SurveyRequest) -> SurveyReply {
        match request {
            SurveyRequest::Channels => SurveyReply::Channels {
                channels: BTreeMap::new(),
            },
        }
    }
}

/// A running engine: both halves, shareable.
#[derive(Clone)]
pub struct Engine {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceStore>,
}
