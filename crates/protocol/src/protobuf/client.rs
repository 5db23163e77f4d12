//! The client's side of the protobuf format, for clients written in Rust
//! (herald-bench, the tests): commands onto the wire, replies off it. The
//! conversions mirror the server's in `protobuf.rs`, so a round trip through
//! both is the identity (the property tests check it).

use prost::Message as _;

use super::{
    bytes, encode_delimited, json, split_delimited, wire, ClientInfo, Command, CommandResult,
    ConnectResult, ErrorReply, FrameError, HistoryResult, Method, PresenceResult,
    PresenceStatsResult, Publication, Push, PushBody, RawJson, RefreshResult, Reply,
    SubRefreshResult, SubscribeRequest, SubscribeResult,
};
use crate::reply::{
    DisconnectPush, JoinPush, LeavePush, MessagePush, RefreshPush, RpcResult, SubscribePush,
    UnsubscribePush,
};

/// Encodes `command`, length-prefixed, onto `out`.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    encode_delimited(&command_to_wire(command), out);
}

/// Decodes one binary server message into its replies. A reply whose
/// payload is not JSON, or that carries nothing herald sends, is an error.
pub fn decode_replies(message: &[u8]) -> Result<Vec<Reply>, FrameError> {
    split_delimited(message)?
        .into_iter()
        .map(|body| {
            let reply =
                wire::Reply::decode(body).map_err(|_| FrameError::Protobuf("not a Reply"))?;
            reply_from_wire(reply).ok_or(FrameError::Protobuf("not a reply herald sends"))
        })
        .collect()
}

fn command_to_wire(command: &Command) -> wire::Command {
    let mut w = wire::Command {
        id: command.id,
        ..Default::default()
    };
    match &command.method {
        Method::Connect(r) => {
            w.connect = Some(wire::ConnectRequest {
                token: r.token.clone(),
                data: bytes(r.data.as_ref()),
                subs: r
                    .subs
                    .iter()
                    .map(|(c, s)| wire::SubscribeRequestEntry {
                        key: c.clone(),
                        value: Some(subscribe_to_wire(s)),
                    })
                    .collect(),
                name: r.name.clone(),
                version: r.version.clone(),
                headers: r.headers.clone().into_iter().collect(),
                flag: r.flag,
            })
        }
        Method::Subscribe(r) => w.subscribe = Some(subscribe_to_wire(r)),
        Method::Unsubscribe(r) => {
            w.unsubscribe = Some(wire::UnsubscribeRequest {
                channel: r.channel.clone(),
            })
        }
        Method::Publish(r) => {
            w.publish = Some(wire::PublishRequest {
                channel: r.channel.clone(),
                data: bytes(r.data.as_ref()),
            })
        }
        Method::Presence(r) => {
            w.presence = Some(wire::PresenceRequest {
                channel: r.channel.clone(),
            })
        }
        Method::PresenceStats(r) => {
            w.presence_stats = Some(wire::PresenceStatsRequest {
                channel: r.channel.clone(),
            })
        }
        Method::History(r) => {
            w.history = Some(wire::HistoryRequest {
                channel: r.channel.clone(),
                limit: r.limit,
                since: r.since.as_ref().map(|s| wire::StreamPosition {
                    offset: s.offset,
                    epoch: s.epoch.clone(),
                }),
                reverse: r.reverse,
            })
        }
        Method::Ping => w.ping = Some(wire::Empty {}),
        Method::Send(r) => {
            w.send = Some(wire::SendRequest {
                data: bytes(r.data.as_ref()),
            })
        }
        Method::Rpc(r) => {
            w.rpc = Some(wire::RpcRequest {
                data: bytes(r.data.as_ref()),
                method: r.method.clone(),
            })
        }
        Method::Refresh(r) => {
            w.refresh = Some(wire::RefreshRequest {
                token: r.token.clone(),
            })
        }
        Method::SubRefresh(r) => {
            w.sub_refresh = Some(wire::SubRefreshRequest {
                channel: r.channel.clone(),
                token: r.token.clone(),
            })
        }
        Method::Pong | Method::Unknown | Method::PayloadNotJson { .. } => {}
    }
    w
}

fn subscribe_to_wire(r: &SubscribeRequest) -> wire::SubscribeRequest {
    wire::SubscribeRequest {
        channel: r.channel.clone(),
        token: r.token.clone(),
        recover: r.recover,
        epoch: r.epoch.clone(),
        offset: r.offset,
        data: bytes(r.data.as_ref()),
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
        delta: r.delta.clone(),
        tf: r.tf.as_ref().map(super::filter_to_wire),
        flag: r.flag,
    }
}

/// A payload that may be absent: Some(None) for empty bytes, None for
/// bytes that are not JSON.
fn optional(bytes: &[u8]) -> Option<Option<RawJson>> {
    if bytes.is_empty() {
        return Some(None);
    }
    json(bytes).map(Some)
}

/// A herald reply back from the wire; None when a payload is not JSON or
/// the reply carries nothing herald sends.
pub fn reply_from_wire(w: wire::Reply) -> Option<Reply> {
    if let Some(error) = w.error {
        return Some(Reply::Error {
            id: w.id,
            error: ErrorReply {
                code: error.code,
                message: error.message,
                temporary: error.temporary,
            },
        });
    }
    if let Some(push) = w.push {
        return push_from_wire(push).map(Reply::Push);
    }
    let id = w.id;
    let result = if let Some(r) = w.connect {
        CommandResult::Connect(ConnectResult {
            client: r.client,
            version: r.version,
            expires: r.expires,
            ttl: r.ttl,
            data: optional(&r.data)?,
            subs: r
                .subs
                .into_iter()
                .map(|e| {
                    Some((
                        e.key,
                        subscribe_result_from_wire(e.value.unwrap_or_default())?,
                    ))
                })
                .collect::<Option<_>>()?,
            ping: r.ping,
            pong: r.pong,
            session: r.session,
            node: r.node,
            time: r.time,
        })
    } else if let Some(r) = w.subscribe {
        CommandResult::Subscribe(subscribe_result_from_wire(r)?)
    } else if w.unsubscribe.is_some() {
        CommandResult::Unsubscribe
    } else if w.publish.is_some() {
        CommandResult::Publish
    } else if let Some(r) = w.presence {
        CommandResult::Presence(PresenceResult {
            presence: r
                .presence
                .into_iter()
                .map(|e| Some((e.key, info_from_wire(e.value.unwrap_or_default())?)))
                .collect::<Option<_>>()?,
        })
    } else if let Some(r) = w.presence_stats {
        CommandResult::PresenceStats(PresenceStatsResult {
            num_clients: r.num_clients,
            num_users: r.num_users,
        })
    } else if let Some(r) = w.history {
        CommandResult::History(HistoryResult {
            publications: publications_from_wire(r.publications)?,
            epoch: r.epoch,
            offset: r.offset,
        })
    } else if w.ping.is_some() {
        CommandResult::Ping
    } else if let Some(r) = w.rpc {
        CommandResult::Rpc(RpcResult {
            data: optional(&r.data)?,
        })
    } else if let Some(r) = w.refresh {
        CommandResult::Refresh(RefreshResult {
            client: r.client,
            version: r.version,
            expires: r.expires,
            ttl: r.ttl,
        })
    } else if let Some(r) = w.sub_refresh {
        CommandResult::SubRefresh(SubRefreshResult {
            expires: r.expires,
            ttl: r.ttl,
        })
    } else if id == 0 {
        // An empty reply: the server's ping.
        return Some(Reply::Ping);
    } else {
        return None;
    };
    Some(Reply::Result { id, result })
}

fn push_from_wire(push: wire::Push) -> Option<Push> {
    let body = if let Some(p) = push.r#pub {
        PushBody::Publication(publication_from_wire(p)?)
    } else if let Some(j) = push.join {
        PushBody::Join(JoinPush {
            info: info_from_wire(j.info?)?,
        })
    } else if let Some(l) = push.leave {
        PushBody::Leave(LeavePush {
            info: info_from_wire(l.info?)?,
        })
    } else if let Some(u) = push.unsubscribe {
        PushBody::Unsubscribe(UnsubscribePush {
            code: u.code,
            reason: u.reason,
        })
    } else if let Some(s) = push.subscribe {
        PushBody::Subscribe(SubscribePush {
            recoverable: s.recoverable,
            epoch: s.epoch,
            offset: s.offset,
            positioned: s.positioned,
            data: optional(&s.data)?,
        })
    } else if let Some(m) = push.message {
        PushBody::Message(MessagePush {
            data: json(&m.data)?,
        })
    } else if let Some(d) = push.disconnect {
        PushBody::Disconnect(DisconnectPush {
            code: d.code,
            reason: d.reason,
        })
    } else if let Some(r) = push.refresh {
        PushBody::Refresh(RefreshPush {
            expires: r.expires,
            ttl: r.ttl,
        })
    } else {
        return None;
    };
    Some(Push {
        channel: push.channel,
        body,
    })
}

fn info_from_wire(i: wire::ClientInfo) -> Option<ClientInfo> {
    Some(ClientInfo {
        user: i.user,
        client: i.client,
        conn_info: optional(&i.conn_info)?,
        chan_info: optional(&i.chan_info)?,
    })
}

fn publication_from_wire(p: wire::Publication) -> Option<Publication> {
    Some(Publication {
        // Bytes that are not JSON come from a binary channel.
        data: json(&p.data).unwrap_or_else(|| RawJson::binary(&p.data)),
        info: match p.info {
            Some(info) => Some(info_from_wire(info)?),
            None => None,
        },
        offset: p.offset,
        tags: p.tags.into_iter().collect(),
        delta: p.delta,
    })
}

fn publications_from_wire(list: Vec<wire::Publication>) -> Option<Vec<Publication>> {
    list.into_iter().map(publication_from_wire).collect()
}

fn subscribe_result_from_wire(r: wire::SubscribeResult) -> Option<SubscribeResult> {
    Some(SubscribeResult {
        expires: r.expires,
        ttl: r.ttl,
        recoverable: r.recoverable,
        epoch: r.epoch,
        publications: publications_from_wire(r.publications)?,
        recovered: r.recovered,
        offset: r.offset,
        positioned: r.positioned,
        data: optional(&r.data)?,
        was_recovering: r.was_recovering,
        delta: r.delta,
    })
}
