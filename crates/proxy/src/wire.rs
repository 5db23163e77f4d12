//! What herald sends to the backend and how its answers are read (Centrifugo
//! v6's proxy protocol, docs/proxy.md): `{"result":…}`, `{"error":{"code",
//! "message"}}` with a code in [400, 1999], or `{"disconnect":{"code",
//! "reason"}}` with a code in [4000, 4999]. Anything else is a [`Failure`].

use herald_protocol::RawJson;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    /// The `proxy` label of the metrics (Centrifugo's proxy names).
    pub fn label(&self) -> &'static str {
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

/// An RPC call of a client (`rpc` proxy).
#[derive(Debug, Serialize)]
pub struct RpcCall<'a> {
    pub client: &'a str,
    /// `websocket`, `http_stream`, `sse`, … (the `transport` label).
    pub transport: &'a str,
    /// `json` or `protobuf`.
    pub protocol: &'a str,
    /// Payloads are always JSON here.
    pub encoding: &'static str,
    pub user: &'a str,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawJson>,
}

/// A client's connect without a token (`client.proxy.connect`).
#[derive(Debug, Serialize)]
pub struct ConnectCall<'a> {
    pub client: &'a str,
    pub transport: &'a str,
    pub protocol: &'a str,
    pub encoding: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawJson>,
}

/// Who the backend says a connection is (`result` of the connect proxy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ConnectGrant {
    /// `""`: anonymous.
    pub user: String,
    /// Unix seconds; 0 or absent: never.
    pub expire_at: Option<u64>,
    #[serde(deserialize_with = "present")]
    pub info: Option<RawJson>,
    #[serde(deserialize_with = "present")]
    pub data: Option<RawJson>,
    /// Server-side subscriptions.
    pub channels: Vec<String>,
}

/// The `result` of the RPC proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RpcReply {
    #[serde(deserialize_with = "present")]
    pub data: Option<RawJson>,
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
}

impl Failure {
    /// The `result` label of the proxy metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Transport(e) if e == "timed out" => "timeout",
            Failure::Transport(_) => "unreachable",
            Failure::Status(_) | Failure::GrpcStatus(_) => "status",
            Failure::Invalid(_) | Failure::CodeOutOfRange(_) => "invalid",
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
            data: Some(RawJson::from_str(text).unwrap()),
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
        let call = RpcCall {
            client: "c",
            transport: "websocket",
            protocol: "json",
            encoding: "json",
            user: "u",
            method: "m",
            data: Some(&data),
        };
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"client":"c","transport":"websocket","protocol":"json","encoding":"json","user":"u","method":"m","data":{"x":1}}"#
        );
    }
}
