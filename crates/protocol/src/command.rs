//! Client -> server commands (docs/protocol.md, "Commands").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::code::is_false;
use crate::raw::RawJson;
use crate::reply::StreamPosition;

/// Subscribe `flag` bit asking for error 112 instead of `recovered: false`.
pub const SUBSCRIBE_FLAG_REJECT_UNRECOVERED: i64 = 2;

/// One decoded command: its id and the method it carries.
///
/// A command with id 0 that is not `send` is a pong, whatever it contains.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: u32,
    pub method: Method,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Connect(ConnectRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
    Publish(PublishRequest),
    Presence(PresenceRequest),
    PresenceStats(PresenceStatsRequest),
    History(HistoryRequest),
    Ping,
    Send(SendRequest),
    Rpc(RpcRequest),
    Refresh(RefreshRequest),
    SubRefresh(SubRefreshRequest),
    /// An id-less command other than `send`: the answer to a server ping.
    Pong,
    /// A command with an id but no method the server knows.
    Unknown,
    /// A command of a known method whose payload is not JSON (a protobuf
    /// `bytes` field: JSON clients of the same channel must never receive
    /// it). Answered with error 107 in its turn; `method` is the wire name.
    PayloadNotJson {
        method: &'static str,
    },
}

impl Method {
    /// The method's wire name, also the metric label value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Subscribe(_) => "subscribe",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::Publish(_) => "publish",
            Self::Presence(_) => "presence",
            Self::PresenceStats(_) => "presence_stats",
            Self::History(_) => "history",
            Self::Ping => "ping",
            Self::Send(_) => "send",
            Self::Rpc(_) => "rpc",
            Self::Refresh(_) => "refresh",
            Self::SubRefresh(_) => "sub_refresh",
            Self::Pong => "pong",
            Self::Unknown => "unknown",
            Self::PayloadNotJson { method } => method,
        }
    }

    /// A connect command, whether or not its payload is acceptable.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::PayloadNotJson { method: "connect" }
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeRequest>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub flag: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(skip_serializing_if = "is_false")]
    pub recover: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub join_leave: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub delta: String,
    /// Tags filter (docs/protocol.md, "Tags filter"); checked by
    /// `TagsFilter::new` when the subscribe is served, not when decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tf: Option<FilterNode>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub flag: i64,
}

/// One node of a subscribe's tags filter, as on the wire: a comparison
/// (`op` empty: `key`, `cmp`, `val` or `vals`) or a logical node (`op`
/// `and`, `or`, `not` over `nodes`). Any shape decodes; `crate::filter`
/// says which are valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterNode {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cmp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub val: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<FilterNode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub limit: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    #[serde(skip_serializing_if = "is_false")]
    pub reverse: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SendRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// The command as it is on the wire: every method optional.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WireCommand {
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub(crate) id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<ConnectRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<SubscribeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<UnsubscribeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<PublishRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_stats: Option<PresenceStatsRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<HistoryRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ping: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<SendRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc: Option<RpcRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<RefreshRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_refresh: Option<SubRefreshRequest>,
}

#[derive(Default, Serialize, Deserialize)]
struct Empty {}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl From<WireCommand> for Command {
    fn from(mut w: WireCommand) -> Self {
        let id = w.id;
        // `send` is the one id-less command; any other id-less one is a pong.
        if id == 0 {
            if let Some(send) = w.send.take() {
                return Command {
                    id,
                    method: Method::Send(send),
                };
            }
            return Command {
                id,
                method: Method::Pong,
            };
        }
        // First non-null method in the reference's order.
        let method = if let Some(r) = w.connect {
            Method::Connect(r)
        } else if let Some(r) = w.subscribe {
            Method::Subscribe(r)
        } else if let Some(r) = w.unsubscribe {
            Method::Unsubscribe(r)
        } else if let Some(r) = w.publish {
            Method::Publish(r)
        } else if let Some(r) = w.presence {
            Method::Presence(r)
        } else if let Some(r) = w.presence_stats {
            Method::PresenceStats(r)
        } else if let Some(r) = w.history {
            Method::History(r)
        } else if w.ping.is_some() {
            Method::Ping
        } else if let Some(r) = w.send {
            Method::Send(r)
        } else if let Some(r) = w.rpc {
            Method::Rpc(r)
        } else if let Some(r) = w.refresh {
            Method::Refresh(r)
        } else if let Some(r) = w.sub_refresh {
            Method::SubRefresh(r)
        } else {
            Method::Unknown
        };
        Command { id, method }
    }
}

impl From<&Command> for WireCommand {
    fn from(c: &Command) -> Self {
        let mut w = WireCommand {
            id: c.id,
            ..Default::default()
        };
        match &c.method {
            Method::Connect(r) => w.connect = Some(r.clone()),
            Method::Subscribe(r) => w.subscribe = Some(r.clone()),
            Method::Unsubscribe(r) => w.unsubscribe = Some(r.clone()),
            Method::Publish(r) => w.publish = Some(r.clone()),
            Method::Presence(r) => w.presence = Some(r.clone()),
            Method::PresenceStats(r) => w.presence_stats = Some(r.clone()),
            Method::History(r) => w.history = Some(r.clone()),
            Method::Ping => w.ping = Some(Empty {}),
            Method::Send(r) => w.send = Some(r.clone()),
            Method::Rpc(r) => w.rpc = Some(r.clone()),
            Method::Refresh(r) => w.refresh = Some(r.clone()),
            Method::SubRefresh(r) => w.sub_refresh = Some(r.clone()),
            Method::Pong | Method::Unknown | Method::PayloadNotJson { .. } => {}
        }
        w
    }
}

impl Command {
    /// Decodes one command (one line of a frame).
    pub fn decode(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<WireCommand>(line).map(Command::from)
    }

    /// Encodes one command as a single line (used by clients: bench, tests).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings, numbers and validated raw JSON cannot fail.
        serde_json::to_vec(&WireCommand::from(self)).unwrap_or_default()
    }
}
