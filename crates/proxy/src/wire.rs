//! What herald sends to the backend and how its answers are read (Centrifugo
//! v6's proxy protocol, docs/proxy.md): `{"result":…}`, `{"error":{"code",
//! "message"}}` with a code in [400, 1999], or `{"disconnect":{"code",
//! "reason"}}` with a code in [4000, 4999]. Anything else is a [`Failure`].

use std::collections::BTreeMap;

use base64::Engine as _;
use herald_auth::ChannelOverride;
use herald_protocol::RawJson;
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};

/// Which proxy a call is: names its metrics label, its gRPC method and the
/// protobuf messages of a gRPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    SubRefresh,
    Rpc,
}

impl ProxyKind {
    pub fn label(self) -> &'static str {
        match self {
            ProxyKind::Connect => "connect",
            ProxyKind::Refresh => "refresh",
            ProxyKind::Subscribe => "subscribe",
            ProxyKind::Publish => "publish",
            ProxyKind::SubRefresh => "sub_refresh",
            ProxyKind::Rpc => "rpc",
        }
    }
}

/// What every call says of the connection it is about.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Caller<'a> {
    pub client: &'a str,
    /// `websocket`, `http_stream`, `sse`, … (the `transport` label).
    pub transport: &'a str,
    /// `json` or `protobuf`.
    pub protocol: &'a str,
    /// `json`, or `binary` with the proxy's `binary_encoding`: payloads go
    /// as `b64data` (standard base64).
    pub encoding: &'static str,
    /// Absent in a connect call (nobody is known yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The connection's `meta` (from the connect proxy's result), with the
    /// proxy's `include_connection_meta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a RawJson>,
}

/// A payload sent to the backend: `data` (JSON), or `b64data` (base64 of
/// the bytes) when the call's encoding is `binary` or the payload is the
/// bytes of a binary channel.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub payload: &'a RawJson,
    pub binary_encoding: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        if self.payload.is_binary() {
            // Already a JSON string of standard base64.
            let text = self.payload.get().trim_matches('"');
            map.serialize_entry("b64data", text)?;
        } else if self.binary_encoding {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(self.payload.get().as_bytes());
            map.serialize_entry("b64data", &encoded)?;
        } else {
            map.serialize_entry("data", self.payload)?;
        }
        map.end()
    }
}

/// A client RPC call (`rpc` proxy).
#[derive(Debug, Serialize)]
pub struct RpcCall<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub method: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub data: Option<Outgoing<'a>>,
}

/// A client's connect without a token (`client.proxy.connect`).
#[derive(Debug, Serialize)]
pub struct ConnectCall<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub version: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub data: Option<Outgoing<'a>>,
}

/// A connection's expiry came (`client.proxy.refresh`).
#[derive(Debug, Serialize)]
pub struct RefreshCall<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
}

/// A subscribe without a subscription token (`channel.proxy.subscribe`).
#[derive(Debug, Serialize)]
pub struct SubscribeCall<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub channel: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub data: Option<Outgoing<'a>>,
}

/// A client publication (`channel.proxy.publish`).
#[derive(Debug, Serialize)]
pub struct PublishCall<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub channel: &'a str,
    #[serde(flatten)]
    pub data: Outgoing<'a>,
}

/// A subscription's expiry came (`channel.proxy.sub_refresh`).
#[derive(Debug, Serialize)]
pub struct SubRefreshCall<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub channel: &'a str,
}

/// A payload the backend sent: JSON (`data`, `info`), or bytes (`b64data`,
/// `b64info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Json(RawJson),
    Bytes(Vec<u8>),
}

impl Payload {
    /// As JSON (a connection's or subscription's `info`, a JSON channel's
    /// data): bytes must be JSON text.
    pub fn into_json(self) -> Result<RawJson, Failure> {
        match self {
            Payload::Json(json) => Ok(json),
            Payload::Bytes(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| RawJson::from_str(text).ok())
                .ok_or_else(|| Failure::Invalid("a b64 payload is not JSON".into())),
        }
    }

    /// As the data of a channel: bytes for a binary channel (any), JSON
    /// otherwise.
    pub fn into_data(self, binary_channel: bool) -> Result<RawJson, Failure> {
        match (self, binary_channel) {
            (Payload::Bytes(bytes), true) => Ok(RawJson::binary(&bytes)),
            (Payload::Json(json), true) => Ok(RawJson::binary(json.get().as_bytes())),
            (payload, false) => payload.into_json(),
        }
    }
}

/// `data`/`b64data` (or `info`/`b64info`) of an answer: the JSON one wins.
fn payload(json: Option<RawJson>, b64: Option<String>) -> Result<Option<Payload>, String> {
    if let Some(json) = json {
        return Ok(Some(Payload::Json(json)));
    }
    match b64 {
        Some(text) if !text.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|bytes| Some(Payload::Bytes(bytes)))
            .map_err(|e| format!("b64 field: {e}")),
        _ => Ok(None),
    }
}

/// One server-side subscription of a connect result (`subs`), or what a
/// subscribe result grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawGrant")]
pub struct SubscriptionGrant {
    pub info: Option<Payload>,
    pub data: Option<Payload>,
    pub override_: ChannelOverride,
    /// Unix seconds; 0 or absent: never (subscribe results only).
    pub expire_at: Option<u64>,
}

#[derive(Deserialize)]
#[serde(default)]
#[derive(Default)]
struct RawGrant {
    #[serde(deserialize_with = "present")]
    info: Option<RawJson>,
    b64info: Option<String>,
    #[serde(deserialize_with = "present")]
    data: Option<RawJson>,
    b64data: Option<String>,
    #[serde(rename = "override")]
    override_: Option<ChannelOverride>,
    expire_at: Option<u64>,
}

impl TryFrom<RawGrant> for SubscriptionGrant {
    type Error = String;
    fn try_from(raw: RawGrant) -> Result<Self, String> {
        Ok(Self {
            info: payload(raw.info, raw.b64info)?,
            data: payload(raw.data, raw.b64data)?,
            override_: raw.override_.unwrap_or_default(),
            expire_at: raw.expire_at.filter(|at| *at > 0),
        })
    }
}

/// Who the backend says a connection is (`result` of the connect proxy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConnectGrant")]
pub struct ConnectGrant {
    /// `""`: anonymous.
    pub user: String,
    /// Unix seconds; 0 or absent: never.
    pub expire_at: Option<u64>,
    pub info: Option<Payload>,
    pub data: Option<Payload>,
    /// Server-side subscriptions.
    pub channels: Vec<String>,
    /// Server-side subscriptions with their options; they win over
    /// `channels`.
    pub subs: BTreeMap<String, SubscriptionGrant>,
    /// The connection's `meta`: sent to proxies with
    /// `include_connection_meta`, never to clients.
    pub meta: Option<RawJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConnectGrant {
    user: Option<String>,
    expire_at: Option<u64>,
    #[serde(deserialize_with = "present")]
    info: Option<RawJson>,
    b64info: Option<String>,
    #[serde(deserialize_with = "present")]
    data: Option<RawJson>,
    b64data: Option<String>,
    channels: Vec<String>,
    subs: BTreeMap<String, SubscriptionGrant>,
    #[serde(deserialize_with = "present")]
    meta: Option<RawJson>,
}

impl TryFrom<RawConnectGrant> for ConnectGrant {
    type Error = String;
    fn try_from(raw: RawConnectGrant) -> Result<Self, String> {
        Ok(Self {
            // Absent is `""`, the anonymous user, as protobuf (and
            // Centrifugo) read it.
            user: raw.user.unwrap_or_default(),
            expire_at: raw.expire_at,
            info: payload(raw.info, raw.b64info)?,
            data: payload(raw.data, raw.b64data)?,
            channels: raw.channels,
            subs: raw.subs,
            meta: raw.meta.filter(|m| !m.is_null()),
        })
    }
}

/// The `result` of the refresh and sub_refresh proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRefreshGrant")]
pub struct RefreshGrant {
    /// The connection (subscription) is over: 3005 (unsubscribe 2502…).
    pub expired: bool,
    /// The new expiry, unix seconds; 0 or absent: never.
    pub expire_at: Option<u64>,
    pub info: Option<Payload>,
    /// The connection's new `meta` (refresh proxy).
    pub meta: Option<RawJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRefreshGrant {
    expired: bool,
    expire_at: Option<u64>,
    #[serde(deserialize_with = "present")]
    info: Option<RawJson>,
    b64info: Option<String>,
    #[serde(deserialize_with = "present")]
    meta: Option<RawJson>,
}

impl TryFrom<RawRefreshGrant> for RefreshGrant {
    type Error = String;
    fn try_from(raw: RawRefreshGrant) -> Result<Self, String> {
        Ok(Self {
            expired: raw.expired,
            expire_at: raw.expire_at.filter(|at| *at > 0),
            info: payload(raw.info, raw.b64info)?,
            meta: raw.meta.filter(|m| !m.is_null()),
        })
    }
}

/// The `result` of the publish proxy: what to publish instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPublishGrant")]
pub struct PublishGrant {
    /// Replaces the client's data.
    pub data: Option<Payload>,
    pub skip_history: bool,
    pub tags: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    /// Delta delivery to subscribers that negotiated delta compression.
    pub delta: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPublishGrant {
    #[serde(deserialize_with = "present")]
    data: Option<RawJson>,
    b64data: Option<String>,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    delta: bool,
}

impl TryFrom<RawPublishGrant> for PublishGrant {
    type Error = String;
    fn try_from(raw: RawPublishGrant) -> Result<Self, String> {
        Ok(Self {
            data: payload(raw.data, raw.b64data)?,
            skip_history: raw.skip_history,
            tags: raw.tags,
            idempotency_key: Some(raw.idempotency_key).filter(|k| !k.is_empty()),
            delta: raw.delta,
        })
    }
}

/// The `result` of the RPC proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRpcReply")]
pub struct RpcReply {
    pub data: Option<Payload>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRpcReply {
    #[serde(deserialize_with = "present")]
    data: Option<RawJson>,
    b64data: Option<String>,
}

impl TryFrom<RawRpcReply> for RpcReply {
    type Error = String;
    fn try_from(raw: RawRpcReply) -> Result<Self, String> {
        Ok(Self {
            data: payload(raw.data, raw.b64data)?,
        })
    }
}

/// The backend's answer, with the proxy's result type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T = RpcReply> {
    /// The `result` object.
    Result(T),
    /// An error for the client, code in [400, 1999].
    Error {
        code: u32,
        message: String,
        temporary: bool,
    },
    /// Close the connection, code in [4000, 4999].
    Disconnect { code: u16, reason: String },
}

impl<T> Answer<T> {
    /// The same answer with its result passed through `f`; a result `f`
    /// cannot take makes the whole answer a failure.
    pub fn try_map<U>(self, f: impl FnOnce(T) -> Result<U, Failure>) -> Result<Answer<U>, Failure> {
        Ok(match self {
            Answer::Result(result) => Answer::Result(f(result)?),
            Answer::Error {
                code,
                message,
                temporary,
            } => Answer::Error {
                code,
                message,
                temporary,
            },
            Answer::Disconnect { code, reason } => Answer::Disconnect { code, reason },
        })
    }
}

/// Why there is no answer: each is an unexpected failure (error 100 for
/// the client, which retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("backend request failed: {0}")]
    Transport(String),
    #[error("backend answered HTTP {0}")]
    Status(u16),
    /// A gRPC backend answered with a status other than OK (the code).
    #[error("backend answered gRPC status {0}")]
    GrpcStatus(i32),
    #[error("backend answer is not a proxy answer: {0}")]
    Invalid(String),
    #[error("backend answered code {0}, outside the allowed range")]
    CodeOutOfRange(u32),
    /// Not asked: the proxy's breaker pauses calls after repeated failures.
    #[error("proxy paused after repeated failures")]
    Paused,
}

impl Failure {
    /// Whether it says the backend is down or overloaded (no connection, a
    /// timeout, a 5xx, a gRPC status): what the breaker counts.
    pub fn is_outage(&self) -> bool {
        match self {
            Failure::Transport(_) | Failure::GrpcStatus(_) => true,
            Failure::Status(status) => *status >= 500,
            Failure::Invalid(_) | Failure::CodeOutOfRange(_) | Failure::Paused => false,
        }
    }

    /// The `result` label of the proxy metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Transport(e) if e == "timed out" => "timeout",
            Failure::Transport(_) => "unreachable",
            Failure::Status(_) | Failure::GrpcStatus(_) => "status",
            Failure::Invalid(_) | Failure::CodeOutOfRange(_) => "invalid",
            Failure::Paused => "paused",
        }
    }
}

#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Envelope<T> {
    #[serde(default)]
    result: Option<T>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default)]
    disconnect: Option<DisconnectBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    temporary: bool,
}

#[derive(Deserialize)]
struct DisconnectBody {
    code: u32,
    #[serde(default)]
    reason: String,
}

/// A present `null` is the payload `null`, not an absent one.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(deserializer).map(Some)
}

/// Reads an answer body.
pub(crate) fn answer<T: DeserializeOwned>(body: &[u8]) -> Result<Answer<T>, Failure> {
    let envelope: Envelope<T> =
        serde_json::from_slice(body).map_err(|e| Failure::Invalid(e.to_string()))?;
    if let Some(error) = envelope.error {
        if !(400..=1999).contains(&error.code) {
            return Err(Failure::CodeOutOfRange(error.code));
        }
        return Ok(Answer::Error {
            code: error.code,
            message: error.message,
            temporary: error.temporary,
        });
    }
    if let Some(disconnect) = envelope.disconnect {
        let code = u16::try_from(disconnect.code)
            .ok()
            .filter(|c| (4000..=4999).contains(c))
            .ok_or(Failure::CodeOutOfRange(disconnect.code))?;
        // A close frame's reason is at most 123 bytes; Centrifugo asks for 32.
        let mut reason = disconnect.reason;
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        return Ok(Answer::Disconnect { code, reason });
    }
    match envelope.result {
        Some(result) => Ok(Answer::Result(result)),
        None => Err(Failure::Invalid("none of result, error, disconnect".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_the_proxy_protocol() {
        let data = |text: &str| RpcReply {
            data: Some(Payload::Json(RawJson::from_str(text).unwrap())),
        };
        assert_eq!(
            answer(br#"{"result":{"data":{"a":[1,2]}}}"#),
            Ok(Answer::Result(data(r#"{"a":[1,2]}"#)))
        );
        assert_eq!(
            answer::<RpcReply>(br#"{"result":{}}"#),
            Ok(Answer::Result(RpcReply::default()))
        );
        let grant: Answer<ConnectGrant> =
            answer(br#"{"result":{"user":"alice","expire_at":9,"channels":["a"],"info":{"x":1}}}"#)
                .unwrap();
        let Answer::Result(grant) = grant else {
            panic!("{grant:?}")
        };
        assert_eq!((grant.user.as_str(), grant.expire_at), ("alice", Some(9)));
        assert_eq!(grant.channels, vec!["a".to_owned()]);
        assert!(matches!(
            answer::<ConnectGrant>(br#"{"result":{"user":1}}"#),
            Err(Failure::Invalid(_))
        ));
        assert_eq!(
            answer::<RpcReply>(br#"{"error":{"code":1000,"message":"no"}}"#),
            Ok(Answer::Error {
                code: 1000,
                message: "no".into(),
                temporary: false
            })
        );
        assert_eq!(
            answer::<RpcReply>(br#"{"disconnect":{"code":4501,"reason":"bye"}}"#),
            Ok(Answer::Disconnect {
                code: 4501,
                reason: "bye".into()
            })
        );
        assert_eq!(
            answer::<RpcReply>(br#"{"error":{"code":100}}"#),
            Err(Failure::CodeOutOfRange(100))
        );
        assert_eq!(
            answer::<RpcReply>(br#"{"disconnect":{"code":3000}}"#),
            Err(Failure::CodeOutOfRange(3000))
        );
        for bad in [&b"<html>"[..], b"{}", b"[1]"] {
            assert!(matches!(answer::<RpcReply>(bad), Err(Failure::Invalid(_))));
        }
    }

    #[test]
    fn a_call_is_the_documented_json() {
        let data = RawJson::from_str(r#"{"x":1}"#).unwrap();
        let caller = Caller {
            client: "c",
            transport: "websocket",
            protocol: "json",
            encoding: "json",
            user: Some("u"),
            meta: None,
        };
        let call = RpcCall {
            caller,
            method: "m",
            data: Some(Outgoing {
                payload: &data,
                binary_encoding: false,
            }),
        };
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"client":"c","transport":"websocket","protocol":"json","encoding":"json","user":"u","method":"m","data":{"x":1}}"#
        );
        // binary_encoding: b64data, and the caller says so.
        let meta = RawJson::from_str(r#"{"m":1}"#).unwrap();
        let call = PublishCall {
            caller: Caller {
                encoding: "binary",
                meta: Some(&meta),
                ..caller
            },
            channel: "ch",
            data: Outgoing {
                payload: &data,
                binary_encoding: true,
            },
        };
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"client":"c","transport":"websocket","protocol":"json","encoding":"binary","user":"u","meta":{"m":1},"channel":"ch","b64data":"eyJ4IjoxfQ=="}"#
        );
        // The bytes of a binary channel are base64 whatever the encoding.
        let bytes = RawJson::binary(&[0, 1, 2]);
        let call = SubscribeCall {
            caller,
            channel: "bin",
            data: Some(Outgoing {
                payload: &bytes,
                binary_encoding: false,
            }),
        };
        assert!(serde_json::to_string(&call)
            .unwrap()
            .ends_with(r#""channel":"bin","b64data":"AAEC"}"#));
    }

    #[test]
    fn results_read_json_and_b64_payloads() {
        let Ok(Answer::Result(grant)) = answer::<ConnectGrant>(
            br#"{"result":{"user":"","b64info":"eyJhIjoxfQ==","subs":{"s":{"data":{"d":1},"override":{"presence":{"value":true}}}},"meta":{"k":"v"}}}"#,
        ) else {
            panic!("connect result not read")
        };
        assert_eq!(grant.user, "");
        let info = grant.info.unwrap().into_json().unwrap();
        assert_eq!(info.get(), r#"{"a":1}"#);
        assert_eq!(grant.subs["s"].override_.presence, Some(true));
        assert_eq!(grant.meta.unwrap().get(), r#"{"k":"v"}"#);
        // No user is the anonymous one.
        assert!(matches!(
            answer::<ConnectGrant>(br#"{"result":{}}"#),
            Ok(Answer::Result(ConnectGrant { ref user, .. })) if user.is_empty()
        ));
        assert!(matches!(
            answer::<RpcReply>(br#"{"result":{"b64data":"***"}}"#),
            Err(Failure::Invalid(_))
        ));
        let Ok(Answer::Result(publish)) = answer::<PublishGrant>(
            br#"{"result":{"b64data":"AAEC","skip_history":true,"tags":{"t":"1"},"idempotency_key":"k","delta":true}}"#,
        ) else {
            panic!("publish result not read")
        };
        assert!(publish.skip_history);
        assert!(publish.delta);
        assert_eq!(publish.idempotency_key.as_deref(), Some("k"));
        let data = publish.data.unwrap();
        assert!(data.clone().into_json().is_err());
        assert_eq!(
            data.into_data(true).unwrap().binary_bytes(),
            Some(vec![0, 1, 2])
        );
        let Ok(Answer::Result(refresh)) =
            answer::<RefreshGrant>(br#"{"result":{"expired":false,"expire_at":0}}"#)
        else {
            panic!("refresh result not read")
        };
        assert_eq!((refresh.expired, refresh.expire_at), (false, None));
    }
}
