//! The client protocol's two formats on a WebSocket (docs/protocol.md,
//! "Protobuf"): JSON lines in text messages, varint-delimited protobuf in
//! binary ones. Decoding a client message into commands and framing what
//! goes back happen here, beside the connection machine, which never sees
//! a format.

use bytes::Bytes;
use herald_protocol::protobuf::{
    decode_frame_protobuf, encode_join_leave_protobuf, encode_publication_protobuf,
    encode_reply_protobuf,
};
use herald_protocol::{
    decode_frame, ClientInfo, Command, Format, Method, Publication, Push, Reply,
};

use crate::metrics;
use crate::ws::frame::DataFrame;

/// One whole WebSocket data message from a client.
#[derive(Debug)]
pub(crate) enum ClientMessage {
    Text(Bytes),
    Binary(Bytes),
}

/// Why a client message was refused (the `reason` label of
/// `herald_client_bad_messages_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadMessage {
    /// Not a frame of the format: JSON that does not parse, a protobuf
    /// length prefix that is truncated, overlong or beyond the message,
    /// bytes that are not a Command. The connection closes with 3501.
    Undecodable,
    /// A binary message on a JSON connection or a text one on a protobuf
    /// connection. The connection closes with 3501.
    WrongType,
    /// A command whose payload is not JSON (protobuf only): error 107 for
    /// that command, the connection stays.
    PayloadNotJson,
}

impl BadMessage {
    #[cfg(test)]
    const ALL: [BadMessage; 3] = [
        BadMessage::Undecodable,
        BadMessage::WrongType,
        BadMessage::PayloadNotJson,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            BadMessage::Undecodable => "undecodable",
            BadMessage::WrongType => "wrong_type",
            BadMessage::PayloadNotJson => "payload_not_json",
        }
    }
}

/// The commands of one client message, all or nothing. Commands whose
/// payload is not JSON come back as `Method::PayloadNotJson` (counted here)
/// for the machine to answer in their turn.
pub(crate) fn decode(format: Format, message: &ClientMessage) -> Result<Vec<Command>, BadMessage> {
    let decoded = match (format, message) {
        (Format::Json, ClientMessage::Text(text)) => decode_frame(text),
        (Format::Protobuf, ClientMessage::Binary(body)) => decode_frame_protobuf(body),
        _ => return Err(refused(format, BadMessage::WrongType, "")),
    };
    let commands = decoded.map_err(|e| refused(format, BadMessage::Undecodable, &e.to_string()))?;
    for command in &commands {
        if let Method::PayloadNotJson { method } = command.method {
            metrics::bad_message(format, BadMessage::PayloadNotJson.label());
            tracing::debug!(
                format = format.label(),
                method,
                "command payload is not JSON"
            );
        }
    }
    Ok(commands)
}

fn refused(format: Format, bad: BadMessage, detail: &str) -> BadMessage {
    metrics::bad_message(format, bad.label());
    // The decoder's message says where and why, never what the payload held.
    tracing::debug!(
        format = format.label(),
        reason = bad.label(),
        detail,
        "client message refused"
    );
    bad
}

/// A reply or push for one connection.
pub(crate) fn frame_reply(format: Format, reply: &Reply) -> DataFrame {
    match format {
        Format::Json => DataFrame::text(&reply.encode()),
        Format::Protobuf => {
            let mut body = Vec::new();
            encode_reply_protobuf(reply, &mut body);
            DataFrame::binary(&body)
        }
    }
}

/// The push object inside one JSON reply line that carries a push
/// (`{"push":{…}}` → `{…}`), what unidirectional transports send; any other
/// line (a ping `{}`) as it is.
pub(crate) fn push_object(line: &[u8]) -> &[u8] {
    const PREFIX: &[u8] = b"{\"push\":";
    match line.strip_prefix(PREFIX).and_then(|l| l.strip_suffix(b"}")) {
        Some(inner) => inner,
        None => line,
    }
}

/// A batch of JSON reply lines as a unidirectional client reads it: each
/// push line without its `{"push":…}` wrapper (`uni_websocket`).
pub(crate) fn push_objects(batch: &DataFrame) -> DataFrame {
    let mut out = Vec::with_capacity(batch.payload().len());
    for (i, line) in batch.payload().split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(push_object(line));
    }
    DataFrame::text(&out)
}

/// A disconnect told as a push: for transports without a close frame
/// (HTTP-streaming, SSE, the unidirectional ones), the last thing sent.
pub(crate) fn frame_disconnect(
    format: Format,
    disconnect: &herald_protocol::Disconnect,
) -> DataFrame {
    let push = Push {
        channel: String::new(),
        body: herald_protocol::PushBody::Disconnect(herald_protocol::DisconnectPush {
            code: u32::from(disconnect.code),
            reason: disconnect.reason.to_string(),
        }),
    };
    frame_reply(format, &Reply::Push(push))
}

/// A publication push, framed once per format for every subscriber of the node.
pub(crate) fn frame_publication(
    format: Format,
    channel: &str,
    publication: &Publication,
) -> DataFrame {
    match format {
        Format::Json => DataFrame::text(&Push::encode_publication(channel, publication)),
        Format::Protobuf => DataFrame::binary(&encode_publication_protobuf(channel, publication)),
    }
}

/// A join (`join` true) or leave push, framed once per format.
pub(crate) fn frame_join_leave(
    format: Format,
    channel: &str,
    info: &ClientInfo,
    join: bool,
) -> DataFrame {
    match format {
        Format::Json if join => DataFrame::text(&Push::encode_join(channel, info)),
        Format::Json => DataFrame::text(&Push::encode_leave(channel, info)),
        Format::Protobuf => DataFrame::binary(&encode_join_leave_protobuf(channel, info, join)),
    }
}

/// The frames of one push, each format's encoded on first use: a channel
/// whose subscribers on this node all speak one format costs one encoding.
/// Each frame is [`DataFrame::shared`]: its compressed form, too, is made
/// at most once, by the first subscriber with permessage-deflate.
pub(crate) struct LazyFrames<F> {
    encode: F,
    json: Option<DataFrame>,
    protobuf: Option<DataFrame>,
}

impl<F: Fn(Format) -> DataFrame> LazyFrames<F> {
    pub(crate) fn new(encode: F) -> Self {
        Self {
            encode,
            json: None,
            protobuf: None,
        }
    }

    pub(crate) fn get(&mut self, format: Format) -> &DataFrame {
        let slot = match format {
            Format::Json => &mut self.json,
            Format::Protobuf => &mut self.protobuf,
        };
        slot.get_or_insert_with(|| (self.encode)(format).shared())
    }

    /// How many encodings were made (tests, the benchmark).
    #[cfg(test)]
    pub(crate) fn encodings(&self) -> usize {
        usize::from(self.json.is_some()) + usize::from(self.protobuf.is_some())
    }
}

#[cfg(test)]
mod push_object_tests {
    use super::*;

    #[test]
    fn unwraps_push_lines_only() {
        assert_eq!(
            push_object(br#"{"push":{"channel":"c","pub":{"data":{}}}}"#),
            br#"{"channel":"c","pub":{"data":{}}}"#
        );
        assert_eq!(push_object(b"{}"), b"{}");
        assert_eq!(push_object(b""), b"");
        let disconnect = frame_disconnect(Format::Json, &herald_protocol::Disconnect::SHUTDOWN);
        assert_eq!(
            push_object(disconnect.payload()),
            br#"{"disconnect":{"code":3001,"reason":"shutdown"}}"#
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::protobuf::client::decode_replies;
    use herald_protocol::PushBody;

    #[test]
    fn each_format_takes_its_own_message_type_only() {
        let json = ClientMessage::Text(Bytes::from_static(b"{\"id\":1,\"connect\":{}}"));
        assert_eq!(decode(Format::Json, &json).map(|c| c.len()), Ok(1));
        assert_eq!(decode(Format::Protobuf, &json), Err(BadMessage::WrongType));
        // A ping Command with id 1: length 4, field 1 = 1, field 11 = {}.
        let protobuf = ClientMessage::Binary(Bytes::from_static(&[4, 0x08, 1, 0x5A, 0]));
        let commands = decode(Format::Protobuf, &protobuf).unwrap();
        assert_eq!(commands[0].method, Method::Ping);
        assert_eq!(decode(Format::Json, &protobuf), Err(BadMessage::WrongType));
        let truncated = ClientMessage::Binary(Bytes::from_static(&[9, 0x08]));
        assert_eq!(
            decode(Format::Protobuf, &truncated),
            Err(BadMessage::Undecodable)
        );
    }

    #[test]
    fn every_reason_label_is_pre_initialised() {
        for bad in BadMessage::ALL {
            assert!(
                metrics::BAD_MESSAGE_REASONS.contains(&bad.label()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_ping_is_one_zero_byte_in_protobuf() {
        let frame = frame_reply(Format::Protobuf, &Reply::Ping);
        assert!(frame.is_binary());
        assert_eq!(frame.payload(), [0]);
        assert_eq!(frame_reply(Format::Json, &Reply::Ping).payload(), b"{}");
    }

    #[test]
    fn lazy_frames_encode_each_format_once_on_demand() {
        let publication = Publication {
            data: herald_protocol::RawJson::from_str("{\"n\":1}").unwrap(),
            info: None,
            offset: 3,
            tags: Default::default(),
            delta: false,
        };
        let mut frames = LazyFrames::new(|f| frame_publication(f, "ch", &publication));
        assert_eq!(frames.encodings(), 0);
        let json = frames.get(Format::Json).clone();
        let again = frames.get(Format::Json).clone();
        assert_eq!(json.as_bytes().as_ptr(), again.as_bytes().as_ptr());
        assert_eq!(frames.encodings(), 1);
        let protobuf = frames.get(Format::Protobuf).clone();
        assert_eq!(frames.encodings(), 2);
        let replies = decode_replies(protobuf.payload()).unwrap();
        assert_eq!(
            replies,
            [Reply::Push(Push {
                channel: "ch".into(),
                body: PushBody::Publication(publication.clone()),
            })]
        );
    }
}
