//! The messages of the gRPC server API (`package centrifugal.centrifugo.api`),
//! herald's own definitions (prost derive attributes, no `protoc`) with the
//! names and field numbers of Centrifugo v6's server API schema; the schema
//! herald ships is `crates/protocol/proto/api.proto`. Only the fields herald
//! serves are declared: others are skipped on decode, as protobuf requires
//! of unknown fields.

use std::collections::BTreeMap;

// The same messages, with the same numbers, as the client protocol's.
pub use crate::protobuf::wire::{ClientInfo, StreamPosition};

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Error {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    #[prost(message, optional, tag = "4")]
    pub publish: Option<PublishRequest>,
    #[prost(message, optional, tag = "5")]
    pub broadcast: Option<BroadcastRequest>,
    #[prost(message, optional, tag = "6")]
    pub subscribe: Option<SubscribeRequest>,
    #[prost(message, optional, tag = "7")]
    pub unsubscribe: Option<UnsubscribeRequest>,
    #[prost(message, optional, tag = "8")]
    pub disconnect: Option<DisconnectRequest>,
    #[prost(message, optional, tag = "9")]
    pub presence: Option<PresenceRequest>,
    #[prost(message, optional, tag = "10")]
    pub presence_stats: Option<PresenceStatsRequest>,
    #[prost(message, optional, tag = "11")]
    pub history: Option<HistoryRequest>,
    #[prost(message, optional, tag = "12")]
    pub history_remove: Option<HistoryRemoveRequest>,
    #[prost(message, optional, tag = "13")]
    pub info: Option<InfoRequest>,
    #[prost(message, optional, tag = "15")]
    pub refresh: Option<RefreshRequest>,
    #[prost(message, optional, tag = "16")]
    pub channels: Option<ChannelsRequest>,
    #[prost(message, optional, tag = "23")]
    pub revoke_token: Option<RevokeTokenRequest>,
    #[prost(message, optional, tag = "24")]
    pub invalidate_user_tokens: Option<InvalidateUserTokensRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
    #[prost(message, optional, tag = "4")]
    pub publish: Option<PublishResult>,
    #[prost(message, optional, tag = "5")]
    pub broadcast: Option<BroadcastResult>,
    #[prost(message, optional, tag = "6")]
    pub subscribe: Option<Empty>,
    #[prost(message, optional, tag = "7")]
    pub unsubscribe: Option<Empty>,
    #[prost(message, optional, tag = "8")]
    pub disconnect: Option<Empty>,
    #[prost(message, optional, tag = "9")]
    pub presence: Option<PresenceResult>,
    #[prost(message, optional, tag = "10")]
    pub presence_stats: Option<PresenceStatsResult>,
    #[prost(message, optional, tag = "11")]
    pub history: Option<HistoryResult>,
    #[prost(message, optional, tag = "12")]
    pub history_remove: Option<Empty>,
    #[prost(message, optional, tag = "13")]
    pub info: Option<InfoResult>,
    #[prost(message, optional, tag = "15")]
    pub refresh: Option<Empty>,
    #[prost(message, optional, tag = "16")]
    pub channels: Option<ChannelsResult>,
    #[prost(message, optional, tag = "23")]
    pub revoke_token: Option<Empty>,
    #[prost(message, optional, tag = "24")]
    pub invalidate_user_tokens: Option<Empty>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchRequest {
    #[prost(message, repeated, tag = "1")]
    pub commands: Vec<Command>,
    #[prost(bool, tag = "2")]
    pub parallel: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchResponse {
    #[prost(message, repeated, tag = "1")]
    pub replies: Vec<Reply>,
}

/// Every `XResponse`: `Error error = 1; XResult result = 2;`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response<R: prost::Message + Default + PartialEq + std::fmt::Debug> {
    #[prost(message, optional, tag = "1")]
    pub error: Option<Error>,
    #[prost(message, optional, tag = "2")]
    pub result: Option<R>,
}

/// The results without fields (`SubscribeResult`, `InfoRequest`, ...).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(string, tag = "3")]
    pub b64data: String,
    #[prost(bool, tag = "4")]
    pub skip_history: bool,
    #[prost(btree_map = "string, string", tag = "5")]
    pub tags: BTreeMap<String, String>,
    #[prost(string, tag = "6")]
    pub idempotency_key: String,
    #[prost(bool, tag = "7")]
    pub delta: bool,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PublishResult {
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    #[prost(string, tag = "2")]
    pub epoch: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BroadcastRequest {
    #[prost(string, repeated, tag = "1")]
    pub channels: Vec<String>,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(string, tag = "3")]
    pub b64data: String,
    #[prost(bool, tag = "4")]
    pub skip_history: bool,
    #[prost(btree_map = "string, string", tag = "5")]
    pub tags: BTreeMap<String, String>,
    #[prost(string, tag = "6")]
    pub idempotency_key: String,
    #[prost(bool, tag = "7")]
    pub delta: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BroadcastResult {
    #[prost(message, repeated, tag = "1")]
    pub responses: Vec<Response<PublishResult>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(bytes = "vec", tag = "4")]
    pub info: Vec<u8>,
    #[prost(string, tag = "6")]
    pub client: String,
    #[prost(bytes = "vec", tag = "7")]
    pub data: Vec<u8>,
    #[prost(string, tag = "11")]
    pub session: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnsubscribeRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(string, tag = "3")]
    pub client: String,
    #[prost(string, tag = "4")]
    pub session: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Disconnect {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DisconnectRequest {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(message, optional, tag = "2")]
    pub disconnect: Option<Disconnect>,
    #[prost(string, tag = "3")]
    pub client: String,
    #[prost(string, repeated, tag = "4")]
    pub whitelist: Vec<String>,
    #[prost(string, tag = "5")]
    pub session: String,
}

/// `PresenceRequest`, `PresenceStatsRequest`, `HistoryRemoveRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
}

pub type PresenceRequest = ChannelRequest;
pub type PresenceStatsRequest = ChannelRequest;
pub type HistoryRemoveRequest = ChannelRequest;
pub type InfoRequest = Empty;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceResult {
    #[prost(btree_map = "string, message", tag = "1")]
    pub presence: BTreeMap<String, ClientInfo>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PresenceStatsResult {
    #[prost(uint32, tag = "1")]
    pub num_clients: u32,
    #[prost(uint32, tag = "2")]
    pub num_users: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(int32, tag = "2")]
    pub limit: i32,
    #[prost(message, optional, tag = "3")]
    pub since: Option<StreamPosition>,
    #[prost(bool, tag = "4")]
    pub reverse: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Publication {
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub info: Option<ClientInfo>,
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    #[prost(btree_map = "string, string", tag = "5")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryResult {
    #[prost(message, repeated, tag = "1")]
    pub publications: Vec<Publication>,
    #[prost(string, tag = "2")]
    pub epoch: String,
    #[prost(uint64, tag = "3")]
    pub offset: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InfoResult {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<NodeResult>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NodeResult {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub version: String,
    #[prost(uint32, tag = "4")]
    pub num_clients: u32,
    #[prost(uint32, tag = "5")]
    pub num_users: u32,
    #[prost(uint32, tag = "6")]
    pub num_channels: u32,
    #[prost(uint32, tag = "7")]
    pub uptime: u32,
    #[prost(uint32, tag = "10")]
    pub num_subs: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RefreshRequest {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(string, tag = "2")]
    pub client: String,
    #[prost(bool, tag = "3")]
    pub expired: bool,
    #[prost(int64, tag = "4")]
    pub expire_at: i64,
    #[prost(string, tag = "6")]
    pub session: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelsRequest {
    #[prost(string, tag = "1")]
    pub pattern: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelsResult {
    #[prost(btree_map = "string, message", tag = "1")]
    pub channels: BTreeMap<String, ChannelInfo>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChannelInfo {
    #[prost(uint32, tag = "1")]
    pub num_clients: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RevokeTokenRequest {
    #[prost(int64, tag = "1")]
    pub expire_at: i64,
    #[prost(string, tag = "2")]
    pub uid: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InvalidateUserTokensRequest {
    #[prost(int64, tag = "1")]
    pub expire_at: i64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(int64, tag = "3")]
    pub issued_before: i64,
    #[prost(string, tag = "4")]
    pub channel: String,
}
