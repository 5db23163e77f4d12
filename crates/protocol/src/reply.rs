//! Server -> client replies, results and pushes (docs/protocol.md, "Results and pushes").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::code::{is_false, ErrorReply};
use crate::raw::RawJson;

/// One line of a server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A command's result: `{"id":N,"<method>":{...}}`.
    Result { id: u32, result: CommandResult },
    /// A command's error: `{"id":N,"error":{...}}`.
    Error { id: u32, error: ErrorReply },
    /// An asynchronous push: `{"push":{...}}`.
    Push(Push),
    /// The server's application-level ping: `{}`.
    Ping,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandResult {
    Connect(ConnectResult),
    Subscribe(SubscribeResult),
    Unsubscribe,
    Publish,
    Presence(PresenceResult),
    PresenceStats(PresenceStatsResult),
    History(HistoryResult),
    Ping,
    Rpc(RpcResult),
    Refresh(RefreshResult),
    SubRefresh(SubRefreshResult),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamPosition {
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

/// Who published or joined. `user` and `client` are always emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInfo {
    pub user: String,
    pub client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub conn_info: Option<RawJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub chan_info: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub data: RawJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// To a client: `data` is a fossil delta against the subscription's
    /// previous publication (a JSON string of it in the JSON format). In
    /// the engines: the publisher asked for delta delivery (namespace
    /// `delta_publish` or a publish call's `delta`); engines keep it on live
    /// publications only, never in what history reads return.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delta: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectResult {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    /// The connection's session id, for the transports that need one to
    /// address it (HTTP-streaming, SSE, the unidirectional ones).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// The node holding the connection (bidirectional emulation: where
    /// `/emulation` requests go).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// The server's time at connect, Unix milliseconds
    /// (`client.connect_include_server_time`); 0 = not sent.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub time: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeResult {
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
    /// Delta compression was negotiated (the subscribe asked for `fossil`
    /// and the namespace allows it).
    #[serde(skip_serializing_if = "is_false")]
    pub delta: bool,
}

/// `{"presence":{clientId: ClientInfo}}`; the map is always emitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceResult {
    pub presence: BTreeMap<String, ClientInfo>,
}

/// Both counts are always emitted, even 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsResult {
    pub num_clients: u32,
    pub num_users: u32,
}

/// All three fields are always emitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryResult {
    pub publications: Vec<Publication>,
    pub epoch: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshResult {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshResult {
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// `{"channel":"ch","<type>":{...}}`
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub channel: String,
    pub body: PushBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PushBody {
    Publication(Publication),
    Join(JoinPush),
    Leave(LeavePush),
    Unsubscribe(UnsubscribePush),
    Subscribe(SubscribePush),
    Message(MessagePush),
    /// The first push of a unidirectional connection: its connect result.
    Connect(ConnectResult),
    /// The server closes the connection (transports without close frames).
    Disconnect(DisconnectPush),
    /// The connection's expiry moved (unidirectional transports).
    Refresh(RefreshPush),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DisconnectPush {
    pub code: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshPush {
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinPush {
    pub info: ClientInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeavePush {
    pub info: ClientInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribePush {
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribePush {
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePush {
    pub data: RawJson,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Empty {}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct WirePush {
    #[serde(skip_serializing_if = "String::is_empty")]
    channel: String,
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    publication: Option<Publication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join: Option<JoinPush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leave: Option<LeavePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<UnsubscribePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<SubscribePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessagePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<ConnectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect: Option<DisconnectPush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<RefreshPush>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WireReply {
    #[serde(skip_serializing_if = "is_zero_u32")]
    id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorReply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<WirePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<ConnectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<SubscribeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_stats: Option<PresenceStatsResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<HistoryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ping: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc: Option<RpcResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<RefreshResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_refresh: Option<SubRefreshResult>,
}

impl Reply {
    /// Writes the reply as one JSON line (without the separator).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Plain structs of strings, numbers and validated raw JSON: writing them
        // into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &WireReply::from(self));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Decodes one reply line (clients: bench, tests).
    pub fn decode(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<WireReply>(line).map(Reply::from)
    }
}

impl From<&Reply> for WireReply {
    fn from(reply: &Reply) -> Self {
        let mut w = WireReply::default();
        match reply {
            Reply::Ping => {}
            Reply::Error { id, error } => {
                w.id = *id;
                w.error = Some(error.clone());
            }
            Reply::Push(push) => {
                let mut p = WirePush {
                    channel: push.channel.clone(),
                    ..Default::default()
                };
                match &push.body {
                    PushBody::Publication(x) => p.publication = Some(x.clone()),
                    PushBody::Join(x) => p.join = Some(x.clone()),
                    PushBody::Leave(x) => p.leave = Some(x.clone()),
                    PushBody::Unsubscribe(x) => p.unsubscribe = Some(x.clone()),
                    PushBody::Subscribe(x) => p.subscribe = Some(x.clone()),
                    PushBody::Message(x) => p.message = Some(x.clone()),
                    PushBody::Connect(x) => p.connect = Some(x.clone()),
                    PushBody::Disconnect(x) => p.disconnect = Some(x.clone()),
                    PushBody::Refresh(x) => p.refresh = Some(x.clone()),
                }
                w.push = Some(p);
            }
            Reply::Result { id, result } => {
                w.id = *id;
                match result {
                    CommandResult::Connect(r) => w.connect = Some(r.clone()),
                    CommandResult::Subscribe(r) => w.subscribe = Some(r.clone()),
                    CommandResult::Unsubscribe => w.unsubscribe = Some(Empty {}),
                    CommandResult::Publish => w.publish = Some(Empty {}),
                    CommandResult::Presence(r) => w.presence = Some(r.clone()),
                    CommandResult::PresenceStats(r) => w.presence_stats = Some(r.clone()),
                    CommandResult::History(r) => w.history = Some(r.clone()),
                    CommandResult::Ping => w.ping = Some(Empty {}),
                    CommandResult::Rpc(r) => w.rpc = Some(r.clone()),
                    CommandResult::Refresh(r) => w.refresh = Some(r.clone()),
                    CommandResult::SubRefresh(r) => w.sub_refresh = Some(r.clone()),
                }
            }
        }
        w
    }
}

impl From<WireReply> for Reply {
    fn from(w: WireReply) -> Self {
        let id = w.id;
        if let Some(error) = w.error {
            return Reply::Error { id, error };
        }
        if let Some(p) = w.push {
            let body = if let Some(x) = p.publication {
                PushBody::Publication(x)
            } else if let Some(x) = p.join {
                PushBody::Join(x)
            } else if let Some(x) = p.leave {
                PushBody::Leave(x)
            } else if let Some(x) = p.unsubscribe {
                PushBody::Unsubscribe(x)
            } else if let Some(x) = p.subscribe {
                PushBody::Subscribe(x)
            } else if let Some(x) = p.message {
                PushBody::Message(x)
            } else if let Some(x) = p.connect {
                PushBody::Connect(x)
            } else if let Some(x) = p.disconnect {
                PushBody::Disconnect(x)
            } else if let Some(x) = p.refresh {
                PushBody::Refresh(x)
            } else {
                return Reply::Ping;
            };
            return Reply::Push(Push {
                channel: p.channel,
                body,
            });
        }
        let result = if let Some(r) = w.connect {
            CommandResult::Connect(r)
        } else if let Some(r) = w.subscribe {
            CommandResult::Subscribe(r)
        } else if w.unsubscribe.is_some() {
            CommandResult::Unsubscribe
        } else if w.publish.is_some() {
            CommandResult::Publish
        } else if let Some(r) = w.presence {
            CommandResult::Presence(r)
        } else if let Some(r) = w.presence_stats {
            CommandResult::PresenceStats(r)
        } else if let Some(r) = w.history {
            CommandResult::History(r)
        } else if w.ping.is_some() {
            CommandResult::Ping
        } else if let Some(r) = w.rpc {
            CommandResult::Rpc(r)
        } else if let Some(r) = w.refresh {
            CommandResult::Refresh(r)
        } else if let Some(r) = w.sub_refresh {
            CommandResult::SubRefresh(r)
        } else {
            return Reply::Ping;
        };
        Reply::Result { id, result }
    }
}

#[derive(Serialize)]
struct PushRef<'a> {
    push: PushRefInner<'a>,
}

#[derive(Serialize)]
struct PushRefInner<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    channel: &'a str,
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    publication: Option<&'a Publication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join: Option<InfoRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leave: Option<InfoRef<'a>>,
}

#[derive(Serialize)]
struct InfoRef<'a> {
    info: &'a ClientInfo,
}

impl Push {
    /// Encodes a publication push without copying the publication: the Hub
    /// encodes once per publication and shares the bytes with every recipient.
    pub fn encode_publication(channel: &str, publication: &Publication) -> Vec<u8> {
        Self::encode_ref(PushRefInner {
            channel,
            publication: Some(publication),
            join: None,
            leave: None,
        })
    }

    pub fn encode_join(channel: &str, info: &ClientInfo) -> Vec<u8> {
        Self::encode_ref(PushRefInner {
            channel,
            publication: None,
            join: Some(InfoRef { info }),
            leave: None,
        })
    }

    pub fn encode_leave(channel: &str, info: &ClientInfo) -> Vec<u8> {
        Self::encode_ref(PushRefInner {
            channel,
            publication: None,
            join: None,
            leave: Some(InfoRef { info }),
        })
    }

    fn encode_ref(inner: PushRefInner<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        // Strings, numbers and validated raw JSON: writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &PushRef { push: inner });
        out
    }
}
