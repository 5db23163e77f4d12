//! Wire types of the server HTTP API (`POST /api/<method>`, docs/protocol.md "Server HTTP API"),
//! and in `wire` and `grpc` the gRPC server API's messages and their translation to it.
//!
//! Requests ignore unknown fields. Results follow the reference: maps and
//! arrays the reference lists as always present are emitted even when empty,
//! never as `null`; everything else empty is omitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::code::ErrorCode;
use crate::raw::RawJson;
use crate::reply::{ClientInfo, Publication, StreamPosition};

pub mod grpc;
pub mod wire;

/// The `error` object of an API reply: no `temporary` field, unlike the
/// client protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u32,
    #[serde(default)]
    pub message: String,
}

impl ApiError {
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.code(),
            message: message.into(),
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code: code.code(),
            message: code.message().to_owned(),
        }
    }
}

/// `{"result": ...}` or `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiReply<T> {
    Result(T),
    Error(ApiError),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiPublishRequest {
    pub channel: String,
    #[serde(deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    pub b64data: String,
    pub skip_history: bool,
    pub tags: BTreeMap<String, String>,
    pub idempotency_key: String,
    /// Delta delivery to subscribers that negotiated delta compression.
    pub delta: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiBroadcastRequest {
    pub channels: Vec<String>,
    #[serde(deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
    pub b64data: String,
    pub skip_history: bool,
    pub tags: BTreeMap<String, String>,
    pub idempotency_key: String,
    /// Delta delivery to subscribers that negotiated delta compression.
    pub delta: bool,
}

/// `{"offset":N,"epoch":"E"}`; `{}` for a channel without history.
pub type ApiPublishResult = StreamPosition;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiBroadcastResult {
    pub responses: Vec<ApiReply<ApiPublishResult>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiSubscribeRequest {
    pub channel: String,
    pub user: String,
    pub client: String,
    pub session: String,
    /// Becomes the subscription's `chan_info`.
    #[serde(deserialize_with = "crate::raw::present")]
    pub info: Option<RawJson>,
    /// Sent to the client with the subscribe push.
    #[serde(deserialize_with = "crate::raw::present")]
    pub data: Option<RawJson>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiUnsubscribeRequest {
    pub channel: String,
    pub user: String,
    pub client: String,
    pub session: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiDisconnect {
    pub code: u16,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiDisconnectRequest {
    pub user: String,
    pub client: String,
    pub session: String,
    pub whitelist: Vec<String>,
    pub disconnect: Option<ApiDisconnect>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiRefreshRequest {
    pub user: String,
    pub client: String,
    pub session: String,
    pub expired: bool,
    /// Unix seconds; 0 = no expiry.
    pub expire_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiChannelRequest {
    pub channel: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiHistoryRequest {
    pub channel: String,
    pub limit: i64,
    pub since: Option<StreamPosition>,
    pub reverse: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiPresenceResult {
    pub presence: BTreeMap<String, ClientInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiPresenceStatsResult {
    pub num_clients: u32,
    pub num_users: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiHistoryResult {
    pub publications: Vec<Publication>,
    pub epoch: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiChannelsRequest {
    /// Glob (`*` any run of characters); empty = every channel.
    pub pattern: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiChannelInfo {
    pub num_clients: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiChannelsResult {
    pub channels: BTreeMap<String, ApiChannelInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiNodeResult {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub num_clients: u64,
    pub num_users: u64,
    pub num_channels: u64,
    pub num_subs: u64,
    pub uptime: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiInfoResult {
    pub nodes: Vec<ApiNodeResult>,
}

/// Revocation by token id, beyond Centrifugo OSS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiRevokeTokenRequest {
    pub uid: String,
    /// Unix seconds until which the revocation is kept (the token's `exp`);
    /// 0 = the server's maximum.
    pub expire_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiInvalidateUserTokensRequest {
    pub user: String,
    /// Tokens issued (`iat`) before this unix time are refused; 0 = now.
    pub issued_before: u64,
    /// Unix seconds until which the rule is kept; 0 = the server's maximum.
    pub expire_at: u64,
    pub channel: String,
}

/// An empty result: `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiEmpty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_present_fields_are_emitted_empty() {
        let json = |v: &dyn erased::Json| v.to_json();
        assert_eq!(json(&ApiPresenceResult::default()), r#"{"presence":{}}"#);
        assert_eq!(
            json(&ApiPresenceStatsResult::default()),
            r#"{"num_clients":0,"num_users":0}"#
        );
        assert_eq!(
            json(&ApiHistoryResult::default()),
            r#"{"publications":[],"epoch":"","offset":0}"#
        );
        assert_eq!(json(&ApiChannelsResult::default()), r#"{"channels":{}}"#);
        assert_eq!(json(&ApiInfoResult::default()), r#"{"nodes":[]}"#);
        assert_eq!(
            json(&ApiNodeResult::default()),
            r#"{"uid":"","name":"","version":"","num_clients":0,"num_users":0,"num_channels":0,"num_subs":0,"uptime":0}"#
        );
        assert_eq!(json(&ApiPublishResult::default()), "{}");
        assert_eq!(json(&ApiEmpty {}), "{}");
    }

    #[test]
    fn replies_wrap_result_or_error() {
        let ok: ApiReply<ApiEmpty> = ApiReply::Result(ApiEmpty {});
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"result":{}}"#);
        let err: ApiReply<ApiEmpty> = ApiReply::Error(ErrorCode::UnknownChannel.into());
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":102,"message":"unknown channel"}}"#
        );
    }

    #[test]
    fn requests_ignore_unknown_fields_and_keep_data_exact() {
        let req: ApiPublishRequest = serde_json::from_str(
            r#"{"channel":"a","data":{"x": [1, 2]},"future":true,"tags":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(req.channel, "a");
        assert_eq!(req.data.unwrap().get(), r#"{"x": [1, 2]}"#);
        assert_eq!(req.tags["k"], "v");
        let req: ApiPublishRequest = serde_json::from_str(r#"{"channel":"a"}"#).unwrap();
        assert!(req.data.is_none());
    }

    mod erased {
        pub(super) trait Json {
            fn to_json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn to_json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
