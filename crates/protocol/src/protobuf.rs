//! The protobuf format of the client protocol (docs/protocol.md,
//! "Protobuf"): herald's own message definitions with the wire numbers of
//! client protocol v0.19.2 (prost derive attributes: no `.proto` file, no
//! `protoc`), the framing (each message prefixed by its length as an
//! unsigned varint, several per WebSocket message), and the conversions to
//! and from the format-free types of `command.rs` and `reply.rs`.
//!
//! Payloads stay JSON: a `bytes` payload field carries the JSON text. A
//! command whose payload is not JSON decodes as `Method::PayloadNotJson`,
//! which the connection machine answers with error 107, so JSON clients of
//! the same channel never receive bytes that are not JSON. The exception is
//! publish data, which a binary channel takes as bytes: it decodes marked
//! binary when it is not plain JSON (`publish_data`), and the machine
//! decides by the channel. Data marked binary goes out as its bytes. Fields
//! herald does not use are skipped (protobuf's rule for unknown ones).

use prost::Message as _;

use crate::code::ErrorReply;
use crate::command::{
    Command, ConnectRequest, FilterNode, HistoryRequest, Method, PresenceRequest,
    PresenceStatsRequest, PublishRequest, RefreshRequest, RpcRequest, SendRequest,
    SubRefreshRequest, SubscribeRequest, UnsubscribeRequest,
};
use crate::frame::FrameError;
use crate::raw::RawJson;
use crate::reply::{
    ClientInfo, CommandResult, ConnectResult, HistoryResult, PresenceResult, PresenceStatsResult,
    Publication, Push, PushBody, RefreshResult, Reply, StreamPosition, SubRefreshResult,
    SubscribeResult,
};

pub mod wire;

/// Decodes one binary message of a protobuf client: varint-delimited
/// commands, all or nothing (like `decode_frame` for JSON).
pub fn decode_frame_protobuf(message: &[u8]) -> Result<Vec<Command>, FrameError> {
    let commands = split_delimited(message)?
        .into_iter()
        .map(|body| {
            wire::Command::decode(body)
                .map(command_from_wire)
                .map_err(|_| FrameError::Protobuf("not a Command"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if commands.is_empty() {
        return Err(FrameError::Empty);
    }
    Ok(commands)
}

/// The parts of a message of varint-length-prefixed parts (replies or
/// commands), in order.
pub fn delimited_parts(message: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
    split_delimited(message)
}

/// The `Push` message inside an encoded `Reply` that carries only a push
/// (how pushes are encoded), or an empty one for the empty Reply (a ping).
/// None for any other reply. The unidirectional gRPC stream sends these
/// bytes as its `Push` messages, without encoding the push again.
pub fn push_of_reply(reply: &[u8]) -> Option<&[u8]> {
    const PUSH_FIELD: u8 = (4 << 3) | 2;
    let Some((&tag, rest)) = reply.split_first() else {
        return Some(&[]);
    };
    if tag != PUSH_FIELD {
        return None;
    }
    let (len, used) = read_varint(rest)?;
    let body = &rest[used..];
    (usize::try_from(len).ok() == Some(body.len())).then_some(body)
}

/// A protobuf `ConnectRequest` (the unidirectional gRPC stream's request).
pub fn decode_connect_request(bytes: &[u8]) -> Result<ConnectRequest, FrameError> {
    let request = wire::ConnectRequest::decode(bytes)
        .map_err(|_| FrameError::Protobuf("not a ConnectRequest"))?;
    let command = wire::Command {
        id: 1,
        connect: Some(request),
        ..Default::default()
    };
    match method_from_wire(command) {
        Ok(Method::Connect(req)) => Ok(req),
        _ => Err(FrameError::Protobuf("connect data is not JSON")),
    }
}

/// The bodies of a message of varint-length-prefixed parts, in order.
fn split_delimited(message: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
    let mut rest = message;
    let mut bodies = Vec::new();
    while !rest.is_empty() {
        let (len, used) = read_varint(rest).ok_or(FrameError::Protobuf("bad length prefix"))?;
        rest = &rest[used..];
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= rest.len())
            .ok_or(FrameError::Protobuf("length beyond the message"))?;
        let (body, tail) = rest.split_at(len);
        bodies.push(body);
        rest = tail;
    }
    Ok(bodies)
}

/// Appends `reply`, length-prefixed, to `out`.
pub fn encode_reply_protobuf(reply: &Reply, out: &mut Vec<u8>) {
    encode_delimited(&reply_to_wire(reply), out);
}

/// The length-prefixed bytes of a publication push (the Hub frames them
/// once per publication for every protobuf subscriber of the node).
pub fn encode_publication_protobuf(channel: &str, publication: &Publication) -> Vec<u8> {
    let reply = wire::Reply {
        push: Some(wire::Push {
            channel: channel.to_owned(),
            r#pub: Some(publication_to_wire(publication)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(reply.encoded_len() + 4);
    encode_delimited(&reply, &mut out);
    out
}

/// The length-prefixed bytes of a join or leave push.
pub fn encode_join_leave_protobuf(channel: &str, info: &ClientInfo, join: bool) -> Vec<u8> {
    let info = Some(info_to_wire(info));
    let mut push = wire::Push {
        channel: channel.to_owned(),
        ..Default::default()
    };
    if join {
        push.join = Some(wire::Join { info });
    } else {
        push.leave = Some(wire::Leave { info });
    }
    let reply = wire::Reply {
        push: Some(push),
        ..Default::default()
    };
    let mut out = Vec::new();
    encode_delimited(&reply, &mut out);
    out
}

fn encode_delimited<M: prost::Message>(message: &M, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = message.encode_length_delimited(out);
}

/// An unsigned LEB128 varint of at most 10 bytes: (value, bytes used).
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        let part = u64::from(byte & 0x7F);
        if i == 9 && part > 1 {
            return None; // past 64 bits
        }
        value |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

// ---- wire → herald ----

/// A `bytes` payload field that holds something other than JSON.
struct NotJson;

/// A JSON payload from a `bytes` field: None when empty (absent).
fn payload(bytes: &[u8]) -> Result<Option<RawJson>, NotJson> {
    if bytes.is_empty() {
        return Ok(None);
    }
    json(bytes).map(Some).ok_or(NotJson)
}

/// The bytes as JSON, None when they are not.
fn json(bytes: &[u8]) -> Option<RawJson> {
    let text = std::str::from_utf8(bytes).ok()?;
    RawJson::from_str(text).ok()
}

fn command_from_wire(w: wire::Command) -> Command {
    let id = w.id;
    // `send` is the one id-less command; any other id-less one is a pong
    // (an empty Command is what a client sends to answer a ping).
    if id == 0 {
        let method = match w.send {
            Some(send) => match payload(&send.data) {
                Ok(data) => Method::Send(SendRequest { data }),
                Err(NotJson) => Method::PayloadNotJson { method: "send" },
            },
            None => Method::Pong,
        };
        return Command { id, method };
    }
    let method = method_from_wire(w).unwrap_or_else(|name| Method::PayloadNotJson { method: name });
    Command { id, method }
}

/// The first method present, in the order of the JSON decoder; Err(name)
/// when its payload is not JSON.
fn method_from_wire(w: wire::Command) -> Result<Method, &'static str> {
    let method = if let Some(r) = w.connect {
        let subs = r
            .subs
            .into_iter()
            .map(|e| Ok((e.key, subscribe_from_wire(e.value.unwrap_or_default())?)))
            .collect::<Result<_, NotJson>>();
        let (Ok(data), Ok(subs)) = (payload(&r.data), subs) else {
            return Err("connect");
        };
        Method::Connect(ConnectRequest {
            token: r.token,
            data,
            subs,
            name: r.name,
            version: r.version,
            headers: r.headers.into_iter().collect(),
            flag: r.flag,
        })
    } else if let Some(r) = w.subscribe {
        Method::Subscribe(subscribe_from_wire(r).map_err(|NotJson| "subscribe")?)
    } else if let Some(r) = w.unsubscribe {
        Method::Unsubscribe(UnsubscribeRequest { channel: r.channel })
    } else if let Some(r) = w.publish {
        Method::Publish(PublishRequest {
            channel: r.channel,
            data: publish_data(&r.data),
        })
    } else if let Some(r) = w.presence {
        Method::Presence(PresenceRequest { channel: r.channel })
    } else if let Some(r) = w.presence_stats {
        Method::PresenceStats(PresenceStatsRequest { channel: r.channel })
    } else if let Some(r) = w.history {
        Method::History(HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            reverse: r.reverse,
        })
    } else if w.ping.is_some() {
        Method::Ping
    } else if let Some(r) = w.send {
        Method::Send(SendRequest {
            data: payload(&r.data).map_err(|NotJson| "send")?,
        })
    } else if let Some(r) = w.rpc {
        Method::Rpc(RpcRequest {
            data: payload(&r.data).map_err(|NotJson| "rpc")?,
            method: r.method,
        })
    } else if let Some(r) = w.refresh {
        Method::Refresh(RefreshRequest { token: r.token })
    } else if let Some(r) = w.sub_refresh {
        Method::SubRefresh(SubRefreshRequest {
            channel: r.channel,
            token: r.token,
        })
    } else {
        Method::Unknown
    };
    Ok(method)
}

/// The data of a publish, which may go to a JSON channel or a binary one
/// (only the machine knows which): JSON text with no `\n` as it is (byte
/// for byte what was sent); anything else (bytes that are not JSON, or JSON
/// a `\n` would be stripped from) marked binary, so a binary channel gets
/// the exact bytes and a JSON channel parses them or answers 107.
fn publish_data(data: &[u8]) -> Option<RawJson> {
    if data.is_empty() {
        return None;
    }
    match json(data) {
        Some(text) if !data.contains(&b'\n') => Some(text),
        _ => Some(RawJson::binary(data)),
    }
}

fn subscribe_from_wire(r: wire::SubscribeRequest) -> Result<SubscribeRequest, NotJson> {
    Ok(SubscribeRequest {
        channel: r.channel,
        token: r.token,
        recover: r.recover,
        epoch: r.epoch,
        offset: r.offset,
        data: payload(&r.data)?,
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
        delta: r.delta,
        tf: r.tf.map(filter_from_wire),
        flag: r.flag,
    })
}

/// Depth is bounded by prost's recursion limit at decode time.
fn filter_from_wire(n: wire::FilterNode) -> FilterNode {
    FilterNode {
        op: n.op,
        key: n.key,
        cmp: n.cmp,
        val: n.val,
        vals: n.vals,
        nodes: n.nodes.into_iter().map(filter_from_wire).collect(),
    }
}

pub(crate) fn filter_to_wire(n: &FilterNode) -> wire::FilterNode {
    wire::FilterNode {
        op: n.op.clone(),
        key: n.key.clone(),
        cmp: n.cmp.clone(),
        val: n.val.clone(),
        vals: n.vals.clone(),
        nodes: n.nodes.iter().map(filter_to_wire).collect(),
    }
}

// ---- herald → wire ----

/// The `bytes` of a payload: the data of a binary channel as its bytes,
/// anything else as its JSON text.
fn payload_bytes(payload: &RawJson) -> Vec<u8> {
    payload
        .binary_bytes()
        .unwrap_or_else(|| payload.get().as_bytes().to_vec())
}

fn bytes(payload: Option<&RawJson>) -> Vec<u8> {
    payload.map_or_else(Vec::new, payload_bytes)
}

fn info_to_wire(info: &ClientInfo) -> wire::ClientInfo {
    wire::ClientInfo {
        user: info.user.clone(),
        client: info.client.clone(),
        conn_info: bytes(info.conn_info.as_ref()),
        chan_info: bytes(info.chan_info.as_ref()),
    }
}

fn publication_to_wire(p: &Publication) -> wire::Publication {
    wire::Publication {
        data: payload_bytes(&p.data),
        info: p.info.as_ref().map(info_to_wire),
        offset: p.offset,
        tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        delta: p.delta,
    }
}

fn subscribe_result_to_wire(r: &SubscribeResult) -> wire::SubscribeResult {
    wire::SubscribeResult {
        expires: r.expires,
        ttl: r.ttl,
        recoverable: r.recoverable,
        epoch: r.epoch.clone(),
        publications: r.publications.iter().map(publication_to_wire).collect(),
        recovered: r.recovered,
        offset: r.offset,
        positioned: r.positioned,
        data: bytes(r.data.as_ref()),
        was_recovering: r.was_recovering,
        delta: r.delta,
    }
}

fn reply_to_wire(reply: &Reply) -> wire::Reply {
    let mut w = wire::Reply::default();
    match reply {
        Reply::Ping => {}
        Reply::Error { id, error } => {
            w.id = *id;
            w.error = Some(error_to_wire(error));
        }
        Reply::Push(push) => w.push = Some(push_to_wire(push)),
        Reply::Result { id, result } => {
            w.id = *id;
            let empty = Some(wire::Empty {});
            match result {
                CommandResult::Connect(r) => w.connect = Some(connect_result_to_wire(r)),
                CommandResult::Subscribe(r) => w.subscribe = Some(subscribe_result_to_wire(r)),
                CommandResult::Unsubscribe => w.unsubscribe = empty,
                CommandResult::Publish => w.publish = empty,
                CommandResult::Presence(r) => w.presence = Some(presence_to_wire(r)),
                CommandResult::PresenceStats(r) => w.presence_stats = Some(stats_to_wire(r)),
                CommandResult::History(r) => w.history = Some(history_to_wire(r)),
                CommandResult::Ping => w.ping = empty,
                CommandResult::Rpc(r) => {
                    w.rpc = Some(wire::RpcResult {
                        data: bytes(r.data.as_ref()),
                    })
                }
                CommandResult::Refresh(r) => w.refresh = Some(refresh_to_wire(r)),
                CommandResult::SubRefresh(r) => w.sub_refresh = Some(sub_refresh_to_wire(r)),
            }
        }
    }
    w
}

fn error_to_wire(error: &ErrorReply) -> wire::Error {
    wire::Error {
        code: error.code,
        message: error.message.to_string(),
        temporary: error.temporary,
    }
}

fn push_to_wire(push: &Push) -> wire::Push {
    let mut w = wire::Push {
        channel: push.channel.clone(),
        ..Default::default()
    };
    match &push.body {
        PushBody::Publication(p) => w.r#pub = Some(publication_to_wire(p)),
        PushBody::Join(j) => {
            w.join = Some(wire::Join {
                info: Some(info_to_wire(&j.info)),
            })
        }
        PushBody::Leave(l) => {
            w.leave = Some(wire::Leave {
                info: Some(info_to_wire(&l.info)),
            })
        }
        PushBody::Unsubscribe(u) => {
            w.unsubscribe = Some(wire::Unsubscribe {
                code: u.code,
                reason: u.reason.clone(),
            })
        }
        PushBody::Subscribe(s) => {
            w.subscribe = Some(wire::Subscribe {
                recoverable: s.recoverable,
                epoch: s.epoch.clone(),
                offset: s.offset,
                positioned: s.positioned,
                data: bytes(s.data.as_ref()),
            })
        }
        PushBody::Message(m) => {
            w.message = Some(wire::Message {
                data: payload_bytes(&m.data),
            })
        }
        PushBody::Connect(r) => {
            let r = connect_result_to_wire(r);
            w.connect = Some(wire::Connect {
                client: r.client,
                version: r.version,
                data: r.data,
                subs: r.subs,
                expires: r.expires,
                ttl: r.ttl,
                ping: r.ping,
                pong: r.pong,
                session: r.session,
                node: r.node,
            })
        }
        PushBody::Disconnect(d) => {
            w.disconnect = Some(wire::Disconnect {
                code: d.code,
                reason: d.reason.clone(),
            })
        }
        PushBody::Refresh(r) => {
            w.refresh = Some(wire::Refresh {
                expires: r.expires,
                ttl: r.ttl,
            })
        }
    }
    w
}

fn connect_result_to_wire(r: &ConnectResult) -> wire::ConnectResult {
    wire::ConnectResult {
        client: r.client.clone(),
        version: r.version.clone(),
        expires: r.expires,
        ttl: r.ttl,
        data: bytes(r.data.as_ref()),
        subs: r
            .subs
            .iter()
            .map(|(c, s)| wire::SubscribeResultEntry {
                key: c.clone(),
                value: Some(subscribe_result_to_wire(s)),
            })
            .collect(),
        ping: r.ping,
        pong: r.pong,
        session: r.session.clone(),
        node: r.node.clone(),
        time: r.time,
    }
}

fn presence_to_wire(r: &PresenceResult) -> wire::PresenceResult {
    wire::PresenceResult {
        presence: r
            .presence
            .iter()
            .map(|(c, i)| wire::ClientInfoEntry {
                key: c.clone(),
                value: Some(info_to_wire(i)),
            })
            .collect(),
    }
}

fn stats_to_wire(r: &PresenceStatsResult) -> wire::PresenceStatsResult {
    wire::PresenceStatsResult {
        num_clients: r.num_clients,
        num_users: r.num_users,
    }
}

fn history_to_wire(r: &HistoryResult) -> wire::HistoryResult {
    wire::HistoryResult {
        publications: r.publications.iter().map(publication_to_wire).collect(),
        epoch: r.epoch.clone(),
        offset: r.offset,
    }
}

fn refresh_to_wire(r: &RefreshResult) -> wire::RefreshResult {
    wire::RefreshResult {
        client: r.client.clone(),
        version: r.version.clone(),
        expires: r.expires,
        ttl: r.ttl,
    }
}

fn sub_refresh_to_wire(r: &SubRefreshResult) -> wire::SubRefreshResult {
    wire::SubRefreshResult {
        expires: r.expires,
        ttl: r.ttl,
    }
}

pub mod client;

#[cfg(test)]
mod tests;
