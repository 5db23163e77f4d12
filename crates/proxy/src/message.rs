//! The protobuf messages of the gRPC proxies (crates/proxy/proto/proxy.proto,
//! Centrifugo v6's field numbers) and their mapping to the JSON of the HTTP
//! proxies, which stays the one source of the shapes: a call is serialized
//! to JSON as for HTTP and read into the request message of its kind; a
//! response is written out as the JSON answer envelope and read by
//! [`crate::wire`] as an HTTP answer is.
//!
//! The mapping is protobuf's JSON mapping with two herald rules: `bytes`
//! payloads (`data`, `info`, `meta`) carry JSON text (herald's payloads are
//! JSON), so a call's JSON value becomes its text and an answer's bytes are
//! embedded as JSON (bytes that are not JSON make the answer invalid); 64-bit
//! integers are JSON numbers. Fields at their default are left out of the
//! envelope, as protobuf's JSON mapping does. A call field with no place in
//! its message is refused, so a call shape and this file cannot drift apart
//! unnoticed.

use std::collections::BTreeMap;

use prost::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::wire::{Failure, ProxyKind};

/// The protobuf request of `kind` for a call's JSON.
pub(crate) fn request(kind: ProxyKind, call: &[u8]) -> Result<Vec<u8>, Failure> {
    match kind {
        ProxyKind::Connect => encode::<ConnectRequest>(call),
        ProxyKind::Refresh => encode::<RefreshRequest>(call),
        ProxyKind::Subscribe => encode::<SubscribeRequest>(call),
        ProxyKind::Publish => encode::<PublishRequest>(call),
        ProxyKind::SubRefresh => encode::<SubRefreshRequest>(call),
        ProxyKind::Rpc => encode::<RpcRequest>(call),
    }
}

/// The JSON answer envelope of a protobuf response of `kind`.
pub(crate) fn envelope(kind: ProxyKind, response: &[u8]) -> Result<Vec<u8>, Failure> {
    match kind {
        ProxyKind::Connect => decode::<ConnectResponse>(response),
        ProxyKind::Refresh => decode::<RefreshResponse>(response),
        ProxyKind::Subscribe => decode::<SubscribeResponse>(response),
        ProxyKind::Publish => decode::<PublishResponse>(response),
        ProxyKind::SubRefresh => decode::<SubRefreshResponse>(response),
        ProxyKind::Rpc => decode::<RpcResponse>(response),
    }
}

fn encode<M: Message + DeserializeOwned>(call: &[u8]) -> Result<Vec<u8>, Failure> {
    let message: M = serde_json::from_slice(call)
        .map_err(|e| Failure::Invalid(format!("the call has no protobuf form: {e}")))?;
    Ok(message.encode_to_vec())
}

fn decode<M: Message + Default + Serialize>(response: &[u8]) -> Result<Vec<u8>, Failure> {
    let message = M::decode(response)
        .map_err(|e| Failure::Invalid(format!("not a protobuf response: {e}")))?;
    serde_json::to_vec(&message).map_err(|e| Failure::Invalid(e.to_string()))
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct Error {
    #[prost(uint32, tag = "1")]
    pub(crate) code: u32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(bool, tag = "3")]
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) temporary: bool,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct Disconnect {
    #[prost(uint32, tag = "1")]
    pub(crate) code: u32,
    #[prost(string, tag = "2")]
    pub(crate) reason: String,
}

/// `XResponse { XResult result = 1; Error error = 2; Disconnect disconnect = 3; }`
/// (prost's derive takes no type parameters).
macro_rules! response {
    ($name:ident, $result:ty) => {
        #[derive(Clone, PartialEq, Message, Serialize)]
        pub(crate) struct $name {
            #[prost(message, optional, tag = "1")]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub(crate) result: Option<$result>,
            #[prost(message, optional, tag = "2")]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub(crate) error: Option<Error>,
            #[prost(message, optional, tag = "3")]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub(crate) disconnect: Option<Disconnect>,
        }
    };
}

response!(ConnectResponse, ConnectResult);
response!(RefreshResponse, RefreshResult);
response!(SubscribeResponse, SubscribeResult);
response!(PublishResponse, PublishResult);
response!(SubRefreshResponse, SubRefreshResult);
response!(RpcResponse, RpcResult);

#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ConnectRequest {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) transport: String,
    #[prost(string, tag = "3")]
    pub(crate) protocol: String,
    #[prost(string, tag = "4")]
    pub(crate) encoding: String,
    #[prost(bytes = "vec", tag = "10")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "11")]
    pub(crate) b64data: String,
    #[prost(string, tag = "12")]
    pub(crate) name: String,
    #[prost(string, tag = "13")]
    pub(crate) version: String,
    #[prost(string, repeated, tag = "14")]
    pub(crate) channels: Vec<String>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct ConnectResult {
    #[prost(string, tag = "1")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) user: String,
    #[prost(int64, tag = "2")]
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) expire_at: i64,
    #[prost(bytes = "vec", tag = "3")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) info: Vec<u8>,
    #[prost(string, tag = "4")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64info: String,
    #[prost(bytes = "vec", tag = "5")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "6")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64data: String,
    #[prost(string, repeated, tag = "7")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) channels: Vec<String>,
    #[prost(btree_map = "string, message", tag = "8")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) subs: BTreeMap<String, SubscribeOptions>,
    #[prost(bytes = "vec", tag = "9")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) meta: Vec<u8>,
}

/// A server-side subscription of a connect result (`subs`).
#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct SubscribeOptions {
    #[prost(int64, tag = "1")]
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) expire_at: i64,
    #[prost(bytes = "vec", tag = "2")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) info: Vec<u8>,
    #[prost(string, tag = "3")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64info: String,
    #[prost(bytes = "vec", tag = "4")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "5")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64data: String,
    #[prost(message, optional, tag = "6")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) r#override: Option<SubscribeOptionOverride>,
    #[prost(bool, tag = "8")]
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) cache_recover: bool,
}

/// Channel options a subscribe answer overrides; an absent one is not
/// overridden, so a present `{"value":false}` is kept.
#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct SubscribeOptionOverride {
    #[prost(message, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) presence: Option<BoolValue>,
    #[prost(message, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) join_leave: Option<BoolValue>,
    #[prost(message, optional, tag = "3")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) force_recovery: Option<BoolValue>,
    #[prost(message, optional, tag = "4")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) force_positioning: Option<BoolValue>,
    #[prost(message, optional, tag = "5")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) force_push_join_leave: Option<BoolValue>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct BoolValue {
    #[prost(bool, tag = "1")]
    pub(crate) value: bool,
}

#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) transport: String,
    #[prost(string, tag = "3")]
    pub(crate) protocol: String,
    #[prost(string, tag = "4")]
    pub(crate) encoding: String,
    #[prost(string, tag = "10")]
    pub(crate) user: String,
    #[prost(bytes = "vec", tag = "11")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) meta: Vec<u8>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct RefreshResult {
    #[prost(bool, tag = "1")]
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) expired: bool,
    #[prost(int64, tag = "2")]
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) expire_at: i64,
    #[prost(bytes = "vec", tag = "3")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) info: Vec<u8>,
    #[prost(string, tag = "4")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64info: String,
    #[prost(bytes = "vec", tag = "5")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) meta: Vec<u8>,
}

#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SubscribeRequest {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) transport: String,
    #[prost(string, tag = "3")]
    pub(crate) protocol: String,
    #[prost(string, tag = "4")]
    pub(crate) encoding: String,
    #[prost(string, tag = "10")]
    pub(crate) user: String,
    #[prost(string, tag = "11")]
    pub(crate) channel: String,
    #[prost(string, tag = "12")]
    pub(crate) token: String,
    #[prost(bytes = "vec", tag = "13")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) meta: Vec<u8>,
    #[prost(bytes = "vec", tag = "14")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "15")]
    pub(crate) b64data: String,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct SubscribeResult {
    #[prost(int64, tag = "1")]
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) expire_at: i64,
    #[prost(bytes = "vec", tag = "2")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) info: Vec<u8>,
    #[prost(string, tag = "3")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64info: String,
    #[prost(bytes = "vec", tag = "4")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "5")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64data: String,
    #[prost(message, optional, tag = "6")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) r#override: Option<SubscribeOptionOverride>,
}

#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PublishRequest {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) transport: String,
    #[prost(string, tag = "3")]
    pub(crate) protocol: String,
    #[prost(string, tag = "4")]
    pub(crate) encoding: String,
    #[prost(string, tag = "10")]
    pub(crate) user: String,
    #[prost(string, tag = "11")]
    pub(crate) channel: String,
    #[prost(bytes = "vec", tag = "12")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "13")]
    pub(crate) b64data: String,
    #[prost(bytes = "vec", tag = "14")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) meta: Vec<u8>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct PublishResult {
    #[prost(bytes = "vec", tag = "1")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "2")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64data: String,
    #[prost(bool, tag = "3")]
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) skip_history: bool,
    #[prost(btree_map = "string, string", tag = "4")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) tags: BTreeMap<String, String>,
    #[prost(string, tag = "5")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) idempotency_key: String,
    #[prost(bool, tag = "6")]
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) delta: bool,
    #[prost(uint64, tag = "7")]
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) version: u64,
    #[prost(string, tag = "8")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) version_epoch: String,
}

#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SubRefreshRequest {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) transport: String,
    #[prost(string, tag = "3")]
    pub(crate) protocol: String,
    #[prost(string, tag = "4")]
    pub(crate) encoding: String,
    #[prost(string, tag = "10")]
    pub(crate) user: String,
    #[prost(string, tag = "11")]
    pub(crate) channel: String,
    #[prost(bytes = "vec", tag = "12")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) meta: Vec<u8>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct SubRefreshResult {
    #[prost(bool, tag = "1")]
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) expired: bool,
    #[prost(int64, tag = "2")]
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) expire_at: i64,
    #[prost(bytes = "vec", tag = "3")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) info: Vec<u8>,
    #[prost(string, tag = "4")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64info: String,
}

/// `RPCRequest`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RpcRequest {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) transport: String,
    #[prost(string, tag = "3")]
    pub(crate) protocol: String,
    #[prost(string, tag = "4")]
    pub(crate) encoding: String,
    #[prost(string, tag = "10")]
    pub(crate) user: String,
    #[prost(string, tag = "11")]
    pub(crate) method: String,
    #[prost(bytes = "vec", tag = "12")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "13")]
    pub(crate) b64data: String,
    #[prost(bytes = "vec", tag = "14")]
    #[serde(deserialize_with = "json_text")]
    pub(crate) meta: Vec<u8>,
}

/// `RPCResult`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub(crate) struct RpcResult {
    #[prost(bytes = "vec", tag = "1")]
    #[serde(serialize_with = "json_of", skip_serializing_if = "Vec::is_empty")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "2")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) b64data: String,
}

/// A JSON value of the call, as the text a `bytes` field carries.
fn json_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    Ok(raw.get().as_bytes().to_vec())
}

/// A `bytes` payload of the answer, embedded as the JSON it must be.
fn json_of<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let raw: Box<RawValue> = serde_json::from_slice(bytes)
        .map_err(|e| serde::ser::Error::custom(format!("a bytes payload is not JSON text: {e}")))?;
    raw.serialize(serializer)
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero<N: Default + PartialEq>(value: &N) -> bool {
    *value == N::default()
}

#[cfg(test)]
mod tests {
    use herald_protocol::RawJson;
    use serde_json::json;

    use super::*;
    use crate::wire::{self, Answer, ConnectCall, ConnectGrant, RpcCall, RpcReply};

    fn call_of<M: Message + Default>(kind: ProxyKind, call: &impl Serialize) -> M {
        let bytes = request(kind, &serde_json::to_vec(call).unwrap()).unwrap();
        M::decode(bytes.as_slice()).unwrap()
    }

    fn answer_of<T: DeserializeOwned>(
        kind: ProxyKind,
        response: &impl Message,
    ) -> Result<Answer<T>, Failure> {
        wire::answer(&envelope(kind, &response.encode_to_vec())?)
    }

    #[test]
    fn calls_become_their_request_messages() {
        let common = |user: Option<&str>| {
            let mut call =
                json!({"client":"c","transport":"websocket","protocol":"json","encoding":"json"});
            if let Some(user) = user {
                call["user"] = json!(user);
            }
            call
        };
        // Payloads keep their exact JSON text (spacing, number spelling).
        let data =
            RawJson::from_str(r#"{"n": 1.50, "big": 123456789012345678901234567890}"#).unwrap();
        let connect = ConnectCall {
            caller: crate::wire::Caller {
                client: "c",
                transport: "websocket",
                protocol: "json",
                encoding: "json",
                user: None,
                meta: None,
            },
            name: "js",
            version: "5",
            data: Some(crate::wire::Outgoing {
                payload: &data,
                binary_encoding: false,
            }),
        };
        let message: ConnectRequest = call_of(ProxyKind::Connect, &connect);
        assert_eq!(message.data, data.get().as_bytes());
        assert_eq!(
            (
                message.client.as_str(),
                message.name.as_str(),
                message.version.as_str()
            ),
            ("c", "js", "5")
        );
        let mut with_channels = common(None);
        with_channels["channels"] = json!(["a", "b"]);
        with_channels["b64data"] = json!("AAE=");
        let message: ConnectRequest = call_of(ProxyKind::Connect, &with_channels);
        assert_eq!(message.channels, ["a", "b"]);
        assert_eq!((message.b64data.as_str(), message.data.len()), ("AAE=", 0));

        let rpc = RpcCall {
            caller: crate::wire::Caller {
                client: "c",
                transport: "sse",
                protocol: "protobuf",
                encoding: "json",
                user: Some("u"),
                meta: None,
            },
            method: "ns:m",
            data: Some(crate::wire::Outgoing {
                payload: &data,
                binary_encoding: false,
            }),
        };
        let message: RpcRequest = call_of(ProxyKind::Rpc, &rpc);
        assert_eq!(
            (
                message.user.as_str(),
                message.method.as_str(),
                message.transport.as_str()
            ),
            ("u", "ns:m", "sse")
        );
        assert_eq!(message.data, data.get().as_bytes());

        let mut refresh = common(Some("u"));
        refresh["meta"] = json!({"plan": "pro"});
        let message: RefreshRequest = call_of(ProxyKind::Refresh, &refresh);
        assert_eq!(
            (message.user.as_str(), message.meta.as_slice()),
            ("u", &br#"{"plan":"pro"}"#[..])
        );

        let mut subscribe = common(Some("u"));
        subscribe["channel"] = json!("news");
        subscribe["token"] = json!("t");
        subscribe["data"] = json!(null);
        let message: SubscribeRequest = call_of(ProxyKind::Subscribe, &subscribe);
        assert_eq!(
            (
                message.channel.as_str(),
                message.token.as_str(),
                message.data.as_slice()
            ),
            ("news", "t", &b"null"[..])
        );

        let mut publish = common(Some("u"));
        publish["channel"] = json!("chat");
        publish["data"] = json!("hi");
        let message: PublishRequest = call_of(ProxyKind::Publish, &publish);
        assert_eq!(
            (message.channel.as_str(), message.data.as_slice()),
            ("chat", &br#""hi""#[..])
        );

        let mut sub_refresh = common(Some("u"));
        sub_refresh["channel"] = json!("news");
        let message: SubRefreshRequest = call_of(ProxyKind::SubRefresh, &sub_refresh);
        assert_eq!(
            (message.user.as_str(), message.channel.as_str()),
            ("u", "news")
        );

        // A call field the message has no place for is refused, not dropped.
        let mut stray = common(Some("u"));
        stray["channel"] = json!("news");
        for (kind, field) in [
            (ProxyKind::Connect, "user"),
            (ProxyKind::Rpc, "channel"),
            (ProxyKind::SubRefresh, "data"),
        ] {
            let mut call = stray.clone();
            call[field] = json!("x");
            let call = serde_json::to_vec(&call).unwrap();
            assert!(
                matches!(request(kind, &call), Err(Failure::Invalid(_))),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn responses_become_answers() {
        let connect = ConnectResponse {
            result: Some(ConnectResult {
                user: "alice".into(),
                expire_at: 9,
                info: br#"{"x":1}"#.to_vec(),
                data: b"[1, 2]".to_vec(),
                channels: vec!["news".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let Answer::Result(grant) =
            answer_of::<ConnectGrant>(ProxyKind::Connect, &connect).unwrap()
        else {
            panic!("not a result")
        };
        assert_eq!((grant.user.as_str(), grant.expire_at), ("alice", Some(9)));
        assert_eq!(grant.info.unwrap().into_json().unwrap().get(), r#"{"x":1}"#);
        assert_eq!(grant.data.unwrap().into_json().unwrap().get(), "[1, 2]");
        assert_eq!(grant.channels, ["news"]);

        // An empty result is a result; its absent payloads are absent.
        let anonymous = ConnectResponse {
            result: Some(ConnectResult::default()),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<ConnectGrant>(ProxyKind::Connect, &anonymous),
            Ok(Answer::Result(ConnectGrant::default()))
        );

        // The whole connect result, as JSON: subs with overrides, meta.
        let mut subs = BTreeMap::new();
        subs.insert(
            "news".to_owned(),
            SubscribeOptions {
                info: br#"{"a":1}"#.to_vec(),
                r#override: Some(SubscribeOptionOverride {
                    presence: Some(BoolValue { value: false }),
                    ..Default::default()
                }),
                cache_recover: true,
                ..Default::default()
            },
        );
        let full = ConnectResponse {
            result: Some(ConnectResult {
                user: "u".into(),
                subs,
                meta: br#"{"m":true}"#.to_vec(),
                b64info: "AAE=".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<serde_json::Value>(ProxyKind::Connect, &full),
            Ok(Answer::Result(json!({
                "user": "u", "b64info": "AAE=", "meta": {"m": true},
                "subs": {"news": {"info": {"a": 1}, "override": {"presence": {"value": false}}, "cache_recover": true}}
            })))
        );

        let rpc_error = RpcResponse {
            error: Some(Error {
                code: 1000,
                message: "no".into(),
                temporary: true,
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<RpcReply>(ProxyKind::Rpc, &rpc_error),
            Ok(Answer::Error {
                code: 1000,
                message: "no".into(),
                temporary: true
            })
        );
        let rpc = RpcResponse {
            result: Some(RpcResult {
                data: br#"{"ok":1}"#.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Answer::Result(reply) = answer_of::<RpcReply>(ProxyKind::Rpc, &rpc).unwrap() else {
            panic!("not a result")
        };
        assert_eq!(
            reply.data.unwrap().into_json().unwrap().get(),
            r#"{"ok":1}"#
        );

        let subscribe = SubscribeResponse {
            disconnect: Some(Disconnect {
                code: 4501,
                reason: "bye".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<serde_json::Value>(ProxyKind::Subscribe, &subscribe),
            Ok(Answer::Disconnect {
                code: 4501,
                reason: "bye".into()
            })
        );
        let subscribe = SubscribeResponse {
            result: Some(SubscribeResult {
                expire_at: 100,
                data: b"\"d\"".to_vec(),
                r#override: Some(SubscribeOptionOverride {
                    join_leave: Some(BoolValue { value: true }),
                    force_recovery: Some(BoolValue { value: true }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<serde_json::Value>(ProxyKind::Subscribe, &subscribe),
            Ok(Answer::Result(json!({
                "expire_at": 100, "data": "d",
                "override": {"join_leave": {"value": true}, "force_recovery": {"value": true}}
            })))
        );

        let mut tags = BTreeMap::new();
        tags.insert("k".to_owned(), "v".to_owned());
        let publish = PublishResponse {
            result: Some(PublishResult {
                data: b"{}".to_vec(),
                skip_history: true,
                tags,
                idempotency_key: "i".into(),
                delta: true,
                version: u64::MAX,
                version_epoch: "e".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<serde_json::Value>(ProxyKind::Publish, &publish),
            Ok(Answer::Result(json!({
                "data": {}, "skip_history": true, "tags": {"k": "v"}, "idempotency_key": "i",
                "delta": true, "version": u64::MAX, "version_epoch": "e"
            })))
        );

        let refresh = RefreshResponse {
            result: Some(RefreshResult {
                expired: true,
                expire_at: 5,
                info: b"1".to_vec(),
                b64info: "AA==".into(),
                meta: b"{}".to_vec(),
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<serde_json::Value>(ProxyKind::Refresh, &refresh),
            Ok(Answer::Result(json!({
                "expired": true, "expire_at": 5, "info": 1, "b64info": "AA==", "meta": {}
            })))
        );
        let sub_refresh = SubRefreshResponse {
            result: Some(SubRefreshResult {
                expire_at: 7,
                info: b"null".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<serde_json::Value>(ProxyKind::SubRefresh, &sub_refresh),
            Ok(Answer::Result(json!({"expire_at": 7, "info": null})))
        );
    }

    #[test]
    fn responses_that_are_not_answers_are_failures() {
        // Range checks are wire's, as over HTTP.
        let code_100 = RpcResponse {
            error: Some(Error {
                code: 100,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<RpcReply>(ProxyKind::Rpc, &code_100),
            Err(Failure::CodeOutOfRange(100))
        );
        let close_3000 = RpcResponse {
            disconnect: Some(Disconnect {
                code: 3000,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answer_of::<RpcReply>(ProxyKind::Rpc, &close_3000),
            Err(Failure::CodeOutOfRange(3000))
        );
        // Nothing set, payload bytes that are not JSON, not protobuf.
        assert!(matches!(
            answer_of::<RpcReply>(ProxyKind::Rpc, &RpcResponse::default()),
            Err(Failure::Invalid(_))
        ));
        let not_json = RpcResponse {
            result: Some(RpcResult {
                data: b"not json".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            answer_of::<RpcReply>(ProxyKind::Rpc, &not_json),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            envelope(ProxyKind::Rpc, b"\xff\xff\xff"),
            Err(Failure::Invalid(_))
        ));
        // A negative expire_at has no place in a grant.
        let negative = ConnectResponse {
            result: Some(ConnectResult {
                expire_at: -1,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            answer_of::<ConnectGrant>(ProxyKind::Connect, &negative),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn field_numbers_are_centrifugos() {
        // Hand-encoded: RPCRequest{user=10, method=11, data=12, meta=14}.
        let call = br#"{"user":"u","method":"m","data":1,"meta":{}}"#;
        assert_eq!(
            request(ProxyKind::Rpc, call).unwrap(),
            b"\x52\x01u\x5a\x01m\x62\x011\x72\x02{}"
        );
        // ConnectResponse{error=2{code=1, message=2}, disconnect=3{code=1}}.
        let response = b"\x12\x06\x08\xe8\x07\x12\x01e\x1a\x03\x08\xa5\x23";
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(
                &envelope(ProxyKind::Connect, response).unwrap()
            )
            .unwrap(),
            json!({"error": {"code": 1000, "message": "e"}, "disconnect": {"code": 4517, "reason": ""}})
        );
    }
}
