//! The gRPC server API in terms of the HTTP API (docs/protocol.md, "gRPC
//! server API"): each gRPC method is one HTTP API method; its protobuf
//! request becomes that method's JSON params, and the JSON result (or the
//! error) becomes its `XResponse{error, result}`. What a method does is
//! decided once, by the HTTP API's dispatcher; this module only translates.
//!
//! Payload fields (`bytes data`, `info`, `conn_info`, ...) carry JSON text
//! both ways. A publish `data` that is not JSON is passed on as `b64data`
//! (bytes): a binary channel takes it, a JSON channel answers error 107.

use base64::Engine as _;
use prost::Message as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use super::wire;
use super::{
    ApiBroadcastRequest, ApiBroadcastResult, ApiChannelRequest, ApiChannelsRequest,
    ApiChannelsResult, ApiDisconnect, ApiDisconnectRequest, ApiError, ApiHistoryRequest,
    ApiHistoryResult, ApiInfoResult, ApiInvalidateUserTokensRequest, ApiPresenceResult,
    ApiPresenceStatsResult, ApiPublishRequest, ApiPublishResult, ApiRefreshRequest, ApiReply,
    ApiRevokeTokenRequest, ApiSubscribeRequest, ApiUnsubscribeRequest,
};
use crate::code::ErrorCode;
use crate::raw::RawJson;
use crate::reply::{ClientInfo, Publication, StreamPosition};

/// The service's full name, the first part of every route.
pub const SERVICE: &str = "centrifugal.centrifugo.api.CentrifugoApi";

/// What a route of the service calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Method(Method),
    Batch,
}

impl Route {
    /// The route of a request path, `/centrifugal.centrifugo.api.CentrifugoApi/Publish`.
    pub fn from_path(path: &str) -> Option<Self> {
        let name = path
            .strip_prefix('/')?
            .strip_prefix(SERVICE)?
            .strip_prefix('/')?;
        if name == "Batch" {
            return Some(Self::Batch);
        }
        Method::ALL
            .into_iter()
            .find(|m| m.grpc_name() == name)
            .map(Self::Method)
    }
}

/// The methods besides `Batch`, each one HTTP API method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Publish,
    Broadcast,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Presence,
    PresenceStats,
    History,
    HistoryRemove,
    Info,
    Refresh,
    Channels,
    RevokeToken,
    InvalidateUserTokens,
}

/// A request decoded, as the HTTP API would have received it.
pub type Params = Result<Box<RawValue>, ApiError>;

impl Method {
    pub const ALL: [Method; 14] = [
        Self::Publish,
        Self::Broadcast,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Disconnect,
        Self::Presence,
        Self::PresenceStats,
        Self::History,
        Self::HistoryRemove,
        Self::Info,
        Self::Refresh,
        Self::Channels,
        Self::RevokeToken,
        Self::InvalidateUserTokens,
    ];

    /// The rpc's name in the service.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::Publish => "Publish",
            Self::Broadcast => "Broadcast",
            Self::Subscribe => "Subscribe",
            Self::Unsubscribe => "Unsubscribe",
            Self::Disconnect => "Disconnect",
            Self::Presence => "Presence",
            Self::PresenceStats => "PresenceStats",
            Self::History => "History",
            Self::HistoryRemove => "HistoryRemove",
            Self::Info => "Info",
            Self::Refresh => "Refresh",
            Self::Channels => "Channels",
            Self::RevokeToken => "RevokeToken",
            Self::InvalidateUserTokens => "InvalidateUserTokens",
        }
    }

    /// The HTTP API method it is (`POST /api/<name>`).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Broadcast => "broadcast",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Disconnect => "disconnect",
            Self::Presence => "presence",
            Self::PresenceStats => "presence_stats",
            Self::History => "history",
            Self::HistoryRemove => "history_remove",
            Self::Info => "info",
            Self::Refresh => "refresh",
            Self::Channels => "channels",
            Self::RevokeToken => "revoke_token",
            Self::InvalidateUserTokens => "invalidate_user_tokens",
        }
    }

    /// Decodes the method's protobuf request into its JSON params. A message
    /// that is not the request is a `DecodeError`; a request whose fields
    /// the API cannot take (a payload that is not JSON, a negative time) is
    /// an API error, answered in the response.
    pub fn params(self, request: &[u8]) -> Result<Params, prost::DecodeError> {
        Ok(match self {
            Self::Publish => publish_params(wire::PublishRequest::decode(request)?),
            Self::Broadcast => broadcast_params(wire::BroadcastRequest::decode(request)?),
            Self::Subscribe => subscribe_params(wire::SubscribeRequest::decode(request)?),
            Self::Unsubscribe => unsubscribe_params(wire::UnsubscribeRequest::decode(request)?),
            Self::Disconnect => disconnect_params(wire::DisconnectRequest::decode(request)?),
            Self::Presence | Self::PresenceStats | Self::HistoryRemove => {
                channel_params(wire::ChannelRequest::decode(request)?)
            }
            Self::History => history_params(wire::HistoryRequest::decode(request)?),
            Self::Info => {
                wire::InfoRequest::decode(request)?;
                json(&super::ApiEmpty {})
            }
            Self::Refresh => refresh_params(wire::RefreshRequest::decode(request)?),
            Self::Channels => channels_params(wire::ChannelsRequest::decode(request)?),
            Self::RevokeToken => revoke_token_params(wire::RevokeTokenRequest::decode(request)?),
            Self::InvalidateUserTokens => {
                invalidate_params(wire::InvalidateUserTokensRequest::decode(request)?)
            }
        })
    }

    /// The encoded `XResponse` of an outcome of the method. `outcome` is the
    /// HTTP API's JSON result; `binary` says the channel's publications are
    /// bytes (`history` of a binary channel), sent as such.
    pub fn response(self, outcome: Result<&RawValue, &ApiError>, binary: bool) -> Vec<u8> {
        let reply = self.reply(outcome, binary);
        let error = reply.error.clone();
        let mut buf = Vec::new();
        // Each arm encodes the method's own result type as field 2.
        macro_rules! respond {
            ($field:ident) => {
                wire::Response {
                    error,
                    result: reply.$field,
                }
                .encode(&mut buf)
            };
        }
        let encoded = match self {
            Self::Publish => respond!(publish),
            Self::Broadcast => respond!(broadcast),
            Self::Subscribe => respond!(subscribe),
            Self::Unsubscribe => respond!(unsubscribe),
            Self::Disconnect => respond!(disconnect),
            Self::Presence => respond!(presence),
            Self::PresenceStats => respond!(presence_stats),
            Self::History => respond!(history),
            Self::HistoryRemove => respond!(history_remove),
            Self::Info => respond!(info),
            Self::Refresh => respond!(refresh),
            Self::Channels => respond!(channels),
            Self::RevokeToken => respond!(revoke_token),
            Self::InvalidateUserTokens => respond!(invalidate_user_tokens),
        };
        // Invariant: a Vec grows, so encoding into it cannot run out of room.
        encoded.expect("encoding into a Vec never fails");
        buf
    }

    /// The batch `Reply` of an outcome of the method: `error`, or the
    /// method's result field.
    pub fn reply(self, outcome: Result<&RawValue, &ApiError>, binary: bool) -> wire::Reply {
        let json = match outcome {
            Ok(json) => json.get(),
            Err(error) => return error_reply(error),
        };
        // A result that is not what this method returns is a defect of the
        // dispatcher, answered as an internal error rather than a wrong result.
        self.result_reply(json, binary)
            .unwrap_or_else(|_| error_reply(&ErrorCode::Internal.into()))
    }

    fn result_reply(self, json: &str, binary: bool) -> Result<wire::Reply, serde_json::Error> {
        let empty = Some(wire::Empty {});
        let reply = wire::Reply::default();
        Ok(match self {
            Self::Publish => wire::Reply {
                publish: Some(publish_result(result(json)?)),
                ..reply
            },
            Self::Broadcast => wire::Reply {
                broadcast: Some(broadcast_result(result(json)?)),
                ..reply
            },
            Self::Subscribe => wire::Reply {
                subscribe: empty,
                ..reply
            },
            Self::Unsubscribe => wire::Reply {
                unsubscribe: empty,
                ..reply
            },
            Self::Disconnect => wire::Reply {
                disconnect: empty,
                ..reply
            },
            Self::Presence => wire::Reply {
                presence: Some(presence_result(result(json)?)),
                ..reply
            },
            Self::PresenceStats => {
                let stats: ApiPresenceStatsResult = result(json)?;
                wire::Reply {
                    presence_stats: Some(wire::PresenceStatsResult {
                        num_clients: stats.num_clients,
                        num_users: stats.num_users,
                    }),
                    ..reply
                }
            }
            Self::History => wire::Reply {
                history: Some(history_result(result(json)?, binary)),
                ..reply
            },
            Self::HistoryRemove => wire::Reply {
                history_remove: empty,
                ..reply
            },
            Self::Info => wire::Reply {
                info: Some(info_result(result(json)?)),
                ..reply
            },
            Self::Refresh => wire::Reply {
                refresh: empty,
                ..reply
            },
            Self::Channels => wire::Reply {
                channels: Some(channels_result(result(json)?)),
                ..reply
            },
            Self::RevokeToken => wire::Reply {
                revoke_token: empty,
                ..reply
            },
            Self::InvalidateUserTokens => wire::Reply {
                invalidate_user_tokens: empty,
                ..reply
            },
        })
    }
}

/// The commands of a `BatchRequest`, each its method and params (or the
/// error it is answered with), and `parallel`.
pub struct Batch {
    pub commands: Vec<wire::Command>,
    pub parallel: bool,
}

impl Batch {
    pub fn decode(request: &[u8]) -> Result<Self, prost::DecodeError> {
        let request = wire::BatchRequest::decode(request)?;
        Ok(Self {
            commands: request.commands,
            parallel: request.parallel,
        })
    }
}

/// One command of a batch: its method and params. A command with no method
/// herald serves is error 104 (a method herald does not declare is skipped
/// on decode, so it looks empty); one with several is error 107.
pub fn command(command: wire::Command) -> Result<(Method, Params), ApiError> {
    let wire::Command {
        publish,
        broadcast,
        subscribe,
        unsubscribe,
        disconnect,
        presence,
        presence_stats,
        history,
        history_remove,
        info,
        refresh,
        channels,
        revoke_token,
        invalidate_user_tokens,
    } = command;
    let set = [
        publish.map(|r| (Method::Publish, publish_params(r))),
        broadcast.map(|r| (Method::Broadcast, broadcast_params(r))),
        subscribe.map(|r| (Method::Subscribe, subscribe_params(r))),
        unsubscribe.map(|r| (Method::Unsubscribe, unsubscribe_params(r))),
        disconnect.map(|r| (Method::Disconnect, disconnect_params(r))),
        presence.map(|r| (Method::Presence, channel_params(r))),
        presence_stats.map(|r| (Method::PresenceStats, channel_params(r))),
        history.map(|r| (Method::History, history_params(r))),
        history_remove.map(|r| (Method::HistoryRemove, channel_params(r))),
        info.map(|_| (Method::Info, json(&super::ApiEmpty {}))),
        refresh.map(|r| (Method::Refresh, refresh_params(r))),
        channels.map(|r| (Method::Channels, channels_params(r))),
        revoke_token.map(|r| (Method::RevokeToken, revoke_token_params(r))),
        invalidate_user_tokens.map(|r| (Method::InvalidateUserTokens, invalidate_params(r))),
    ];
    let mut set = set.into_iter().flatten();
    match (set.next(), set.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(ErrorCode::MethodNotFound.into()),
        (Some(_), Some(_)) => Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "each command holds exactly one method",
        )),
    }
}

/// The encoded `BatchResponse`.
pub fn batch_response(replies: Vec<wire::Reply>) -> Vec<u8> {
    wire::BatchResponse { replies }.encode_to_vec()
}

/// The `channel` of a method's JSON params, for the methods that name one.
pub fn channel_of(params: &RawValue) -> Option<String> {
    serde_json::from_str::<ApiChannelRequest>(params.get())
        .ok()
        .map(|r| r.channel)
        .filter(|c| !c.is_empty())
}

// ---------------------------------------------------------------------------
// Requests → JSON params

fn json<T: Serialize>(value: &T) -> Params {
    serde_json::value::to_raw_value(value)
        .map_err(|e| ApiError::with_message(ErrorCode::BadRequest, format!("bad request: {e}")))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::with_message(ErrorCode::BadRequest, message)
}

/// A `bytes` payload field that must hold JSON; empty = absent.
fn json_payload(bytes: &[u8], what: &str) -> Result<Option<RawJson>, ApiError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| RawJson::from_str(text).ok())
        .map(Some)
        .ok_or_else(|| bad_request(format!("{what} is not JSON")))
}

/// Publish `data`: JSON as `data`, anything else as `b64data` (bytes).
fn publish_payload(data: Vec<u8>, b64data: String) -> (Option<RawJson>, String) {
    if data.is_empty() {
        return (None, b64data);
    }
    match json_payload(&data, "data") {
        Ok(json) => (json, b64data),
        Err(_) => (
            None,
            base64::engine::general_purpose::STANDARD.encode(&data),
        ),
    }
}

/// Unix seconds given as `int64`; negative ones are refused.
fn unix_seconds(value: i64, what: &str) -> Result<u64, ApiError> {
    u64::try_from(value).map_err(|_| bad_request(format!("{what} must not be negative")))
}

fn publish_params(r: wire::PublishRequest) -> Params {
    let (data, b64data) = publish_payload(r.data, r.b64data);
    json(&ApiPublishRequest {
        channel: r.channel,
        data,
        b64data,
        skip_history: r.skip_history,
        tags: r.tags,
        idempotency_key: r.idempotency_key,
        delta: r.delta,
    })
}

fn broadcast_params(r: wire::BroadcastRequest) -> Params {
    let (data, b64data) = publish_payload(r.data, r.b64data);
    json(&ApiBroadcastRequest {
        channels: r.channels,
        data,
        b64data,
        skip_history: r.skip_history,
        tags: r.tags,
        idempotency_key: r.idempotency_key,
        delta: r.delta,
    })
}

fn subscribe_params(r: wire::SubscribeRequest) -> Params {
    json(&ApiSubscribeRequest {
        info: json_payload(&r.info, "info")?,
        data: json_payload(&r.data, "data")?,
        channel: r.channel,
        user: r.user,
        client: r.client,
        session: r.session,
    })
}

fn unsubscribe_params(r: wire::UnsubscribeRequest) -> Params {
    json(&ApiUnsubscribeRequest {
        channel: r.channel,
        user: r.user,
        client: r.client,
        session: r.session,
    })
}

fn disconnect_params(r: wire::DisconnectRequest) -> Params {
    let disconnect = match r.disconnect {
        None => None,
        Some(d) => Some(ApiDisconnect {
            code: u16::try_from(d.code)
                .map_err(|_| bad_request("disconnect code must be within 3000..4999"))?,
            reason: d.reason,
        }),
    };
    json(&ApiDisconnectRequest {
        user: r.user,
        client: r.client,
        session: r.session,
        whitelist: r.whitelist,
        disconnect,
    })
}

fn channel_params(r: wire::ChannelRequest) -> Params {
    json(&ApiChannelRequest { channel: r.channel })
}

fn history_params(r: wire::HistoryRequest) -> Params {
    json(&ApiHistoryRequest {
        channel: r.channel,
        limit: i64::from(r.limit),
        since: r.since.map(|s| StreamPosition {
            offset: s.offset,
            epoch: s.epoch,
        }),
        reverse: r.reverse,
    })
}

fn refresh_params(r: wire::RefreshRequest) -> Params {
    json(&ApiRefreshRequest {
        expire_at: unix_seconds(r.expire_at, "expire_at")?,
        user: r.user,
        client: r.client,
        session: r.session,
        expired: r.expired,
    })
}

fn channels_params(r: wire::ChannelsRequest) -> Params {
    json(&ApiChannelsRequest { pattern: r.pattern })
}

fn revoke_token_params(r: wire::RevokeTokenRequest) -> Params {
    json(&ApiRevokeTokenRequest {
        expire_at: unix_seconds(r.expire_at, "expire_at")?,
        uid: r.uid,
    })
}

fn invalidate_params(r: wire::InvalidateUserTokensRequest) -> Params {
    json(&ApiInvalidateUserTokensRequest {
        expire_at: unix_seconds(r.expire_at, "expire_at")?,
        issued_before: unix_seconds(r.issued_before, "issued_before")?,
        user: r.user,
        channel: r.channel,
    })
}

// ---------------------------------------------------------------------------
// JSON results → protobuf results

fn result<T: DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(json)
}

/// The batch `Reply` of a command answered with `error`.
pub fn error_reply(error: &ApiError) -> wire::Reply {
    wire::Reply {
        error: Some(error_of(error)),
        ..Default::default()
    }
}

fn error_of(error: &ApiError) -> wire::Error {
    wire::Error {
        code: error.code,
        message: error.message.clone(),
    }
}

fn publish_result(position: ApiPublishResult) -> wire::PublishResult {
    wire::PublishResult {
        offset: position.offset,
        epoch: position.epoch,
    }
}

fn broadcast_result(result: ApiBroadcastResult) -> wire::BroadcastResult {
    let responses = result
        .responses
        .into_iter()
        .map(|reply| match reply {
            ApiReply::Result(position) => wire::Response {
                error: None,
                result: Some(publish_result(position)),
            },
            ApiReply::Error(error) => wire::Response {
                error: Some(error_of(&error)),
                result: None,
            },
        })
        .collect();
    wire::BroadcastResult { responses }
}

fn payload_bytes(payload: Option<RawJson>) -> Vec<u8> {
    payload
        .map(|p| p.get().as_bytes().to_vec())
        .unwrap_or_default()
}

fn client_info(info: ClientInfo) -> wire::ClientInfo {
    wire::ClientInfo {
        user: info.user,
        client: info.client,
        conn_info: payload_bytes(info.conn_info),
        chan_info: payload_bytes(info.chan_info),
    }
}

fn presence_result(result: ApiPresenceResult) -> wire::PresenceResult {
    wire::PresenceResult {
        presence: result
            .presence
            .into_iter()
            .map(|(client, info)| (client, client_info(info)))
            .collect(),
    }
}

fn history_result(result: ApiHistoryResult, binary: bool) -> wire::HistoryResult {
    let publication = |p: Publication| {
        let mut data = p.data;
        if binary {
            data.mark_binary();
        }
        wire::Publication {
            // A binary channel's data is its bytes; JSON data is its text.
            data: data
                .binary_bytes()
                .unwrap_or_else(|| data.get().as_bytes().to_vec()),
            info: p.info.map(client_info),
            offset: p.offset,
            tags: p.tags,
        }
    };
    wire::HistoryResult {
        publications: result.publications.into_iter().map(publication).collect(),
        epoch: result.epoch,
        offset: result.offset,
    }
}

fn saturated(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn info_result(result: ApiInfoResult) -> wire::InfoResult {
    wire::InfoResult {
        nodes: result
            .nodes
            .into_iter()
            .map(|n| wire::NodeResult {
                uid: n.uid,
                name: n.name,
                version: n.version,
                num_clients: saturated(n.num_clients),
                num_users: saturated(n.num_users),
                num_channels: saturated(n.num_channels),
                uptime: saturated(n.uptime),
                num_subs: saturated(n.num_subs),
            })
            .collect(),
    }
}

fn channels_result(result: ApiChannelsResult) -> wire::ChannelsResult {
    wire::ChannelsResult {
        channels: result
            .channels
            .into_iter()
            .map(|(channel, info)| {
                (
                    channel,
                    wire::ChannelInfo {
                        num_clients: info.num_clients,
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
