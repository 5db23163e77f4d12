//! The client protocol as the bench speaks it, in either format: commands
//! out, and what a server message holds that the bench cares about (pings,
//! command answers, the send stamps of publications) in.

use herald_protocol::protobuf::client::{decode_replies, encode_command};
use herald_protocol::{Command, Format, PushBody, Reply};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::disconnects::Ended;

/// The subprotocol a client of `format` offers.
pub(crate) fn subprotocol(format: Format) -> &'static str {
    match format {
        Format::Json => "centrifuge-json",
        Format::Protobuf => "centrifuge-protobuf",
    }
}

/// One command as one WebSocket message.
pub(crate) fn command(format: Format, command: &Command) -> Message {
    match format {
        Format::Json => Message::text(String::from_utf8_lossy(&command.encode()).into_owned()),
        Format::Protobuf => {
            let mut out = Vec::new();
            encode_command(command, &mut out);
            Message::binary(out)
        }
    }
}

/// The answer to a server ping.
pub(crate) fn pong(format: Format) -> Message {
    match format {
        Format::Json => Message::text("{}"),
        Format::Protobuf => Message::binary(vec![0u8]),
    }
}

/// What one server message held.
#[derive(Default)]
pub(crate) struct Received {
    pub(crate) pings: usize,
    /// Answers to commands: (id, error text if it failed).
    pub(crate) answers: Vec<(u32, Option<String>)>,
    /// Send stamps (bench microseconds) of the publications pushed.
    pub(crate) stamps: Vec<u64>,
    /// The data of publications to a delta subscriber (`--delta`), which
    /// holds no readable stamp until the receiver applies it: (is a fossil
    /// delta, the bytes).
    pub(crate) payloads: Vec<(bool, Vec<u8>)>,
    /// The WebSocket payload bytes of the message.
    pub(crate) bytes: usize,
    /// The server ended the connection: a close frame, or a `disconnect`
    /// push (the HTTP transports).
    pub(crate) ended: Option<Ended>,
}

/// Reads a server message of `format`; a message of the other kind, or one
/// that does not decode, holds nothing.
pub(crate) fn read(format: Format, message: &Message) -> Received {
    read_documents(format, message, false)
}

/// [`read`] for a subscriber that applies deltas (`documents`): every
/// publication's data goes to `payloads`, full ones too, since each is the
/// base of the next delta.
pub(crate) fn read_documents(format: Format, message: &Message, documents: bool) -> Received {
    let mut received = Received {
        bytes: message.len(),
        ..Received::default()
    };
    match (format, message) {
        (Format::Json, Message::Text(text)) => {
            for line in text.split('\n') {
                read_json_line(line, &mut received);
            }
        }
        (Format::Protobuf, Message::Binary(body)) => {
            for reply in decode_replies(body).unwrap_or_default() {
                match reply {
                    Reply::Ping => received.pings += 1,
                    Reply::Push(push) => {
                        if let PushBody::Disconnect(d) = &push.body {
                            received.ended = Some(Ended::Code(d.code, d.reason.clone()));
                        }
                        if let PushBody::Publication(p) = push.body {
                            if p.delta {
                                let patch = p.data.binary_bytes().unwrap_or_default();
                                received.payloads.push((true, patch));
                            } else if documents {
                                let full = p.data.binary_bytes();
                                let full = full.unwrap_or_else(|| p.data.get().as_bytes().to_vec());
                                received.payloads.push((false, full));
                            } else if let Ok(stamp) = serde_json::from_str::<Stamp>(p.data.get()) {
                                received.stamps.push(stamp.t);
                            }
                        }
                    }
                    Reply::Result { id, .. } => received.answers.push((id, None)),
                    Reply::Error { id, error } => {
                        received
                            .answers
                            .push((id, Some(format!("{} {}", error.code, error.message))));
                    }
                }
            }
        }
        (_, Message::Close(frame)) => received.ended = Some(closed(frame.as_ref())),
        _ => {}
    }
    received
}

/// How a close frame ended a connection (1005: it gave no code).
pub(crate) fn closed(
    frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) -> Ended {
    match frame {
        Some(frame) => Ended::Code(u16::from(frame.code).into(), frame.reason.to_string()),
        None => Ended::Code(1005, "close frame without a code".into()),
    }
}

/// Adds what one JSON line holds to `received`: a reply or a push
/// (`{"push":{"channel":…,"pub":…}}`), or a push unwrapped as the
/// unidirectional transports send it (`{"channel":…,"pub":…}`); `{}` is a
/// ping. An empty line or one that does not decode holds nothing.
pub(crate) fn read_json_line(line: &str, received: &mut Received) {
    if line.is_empty() {
        return;
    }
    if line == "{}" {
        received.pings += 1;
        return;
    }
    let Ok(mut parsed) = serde_json::from_str::<Line<'_>>(line) else {
        return;
    };
    let disconnect = parsed
        .disconnect
        .or_else(|| parsed.push.as_mut().and_then(|p| p.disconnect.take()));
    if let Some(d) = disconnect {
        received.ended = Some(Ended::Code(d.code, d.reason));
        return;
    }
    let publication = parsed
        .push
        .and_then(|p| p.publication)
        .or(parsed.publication);
    if let Some(publication) = publication {
        let data = publication.data.get();
        if data.starts_with('"') {
            // A delta subscriber's data: a JSON string of a delta or of the
            // full payload.
            if let Ok(text) = serde_json::from_str::<String>(data) {
                received
                    .payloads
                    .push((publication.delta, text.into_bytes()));
            }
        } else if let Ok(stamp) = serde_json::from_str::<Stamp>(data) {
            received.stamps.push(stamp.t);
        }
    } else if parsed.id > 0 {
        let error = parsed.error.map(|e| e.to_string());
        received.answers.push((parsed.id, error));
    }
}

/// The parts of a JSON line the bench reads, borrowed (the receive loop
/// runs once per delivery). `pub` at the top level is an unwrapped push.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    id: u32,
    #[serde(borrow, default)]
    push: Option<PushLine<'a>>,
    #[serde(rename = "pub", borrow, default)]
    publication: Option<PublicationLine<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    disconnect: Option<DisconnectLine>,
}

/// A `disconnect` push: how the HTTP transports end a connection.
#[derive(Deserialize)]
struct DisconnectLine {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct PushLine<'a> {
    #[serde(rename = "pub", borrow, default)]
    publication: Option<PublicationLine<'a>>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    channel: Option<&'a str>,
    #[serde(default)]
    disconnect: Option<DisconnectLine>,
}

#[derive(Deserialize)]
struct PublicationLine<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    #[serde(default)]
    delta: bool,
}

/// The send time every bench publication starts with.
#[derive(Deserialize)]
pub(crate) struct Stamp {
    pub(crate) t: u64,
}
