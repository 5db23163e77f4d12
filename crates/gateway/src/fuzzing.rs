//! Entry points of the `ws_frames` and `protobuf_frames` fuzz targets
//! (`fuzz/`), also driven by the property tests below so `cargo test`
//! covers the same paths: a client's bytes, cut into reads at arbitrary
//! points, through the frame reader and every message through the command
//! decoder of its format, as `socket.rs` and `format.rs` do, with no I/O;
//! one binary message through the protobuf decoder; and one request of the
//! HTTP and gRPC transports through its parser (`transport_request`).
//!
//! Not an API: hidden from the docs and free to change.

use bytes::BytesMut;
use herald_protocol::protobuf::client::encode_command;
use herald_protocol::protobuf::decode_frame_protobuf;
use herald_protocol::{decode_frame, Command, Method};

use crate::ws::frame::{self as wsframe, Message, Reader};

/// What the HTTP and gRPC transports made of one request's bytes: the
/// `transport_requests` fuzz target. The first byte picks the parser:
/// 0 an `/emulation` JSON body, 1 a protobuf one, 2 a unidirectional
/// ConnectRequest in JSON (body or `cf_connect`), 3 the gRPC ConnectRequest,
/// 4 a server batch through every response framing, 5 protobuf replies
/// through the gRPC push extraction. Returns how many items came out.
pub fn transport_request(data: &[u8]) -> usize {
    use crate::format::{push_objects, ClientMessage};
    use crate::http::stream::Framing;
    use crate::ws::frame::DataFrame;
    use herald_protocol::{ConnectRequest, Format};
    let Some((&kind, body)) = data.split_first() else {
        return 0;
    };
    match kind % 6 {
        0 | 1 => {
            let parsed = crate::http::transports::emulation_request(body, kind % 6 == 1);
            parsed.map_or(0, |(_, _, commands)| {
                let format = if kind % 6 == 1 {
                    Format::Protobuf
                } else {
                    Format::Json
                };
                let message = match format {
                    Format::Json => ClientMessage::Text(commands),
                    Format::Protobuf => ClientMessage::Binary(commands),
                };
                crate::format::decode(format, &message).map_or(0, |c| c.len())
            })
        }
        2 => usize::from(serde_json::from_slice::<ConnectRequest>(body).is_ok()),
        3 => usize::from(herald_protocol::protobuf::decode_connect_request(body).is_ok()),
        4 => {
            let batch = DataFrame::text(body);
            let framings = [
                Framing::HttpStream(Format::Json),
                Framing::Sse,
                Framing::UniHttpStream,
                Framing::UniSse,
            ];
            let written: usize = framings.iter().map(|f| f.frame(&batch).len()).sum();
            written + push_objects(&batch).len()
        }
        _ => herald_protocol::protobuf::delimited_parts(body).map_or(0, |parts| {
            parts
                .into_iter()
                .filter_map(herald_protocol::protobuf::push_of_reply)
                .count()
        }),
    }
}

/// What the server made of a client's bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The text messages, in order.
    pub texts: Vec<Vec<u8>>,
    /// Messages of every kind read before the end of the input, a close or
    /// a violation.
    pub messages: usize,
    /// Commands decoded out of the text messages.
    pub commands: usize,
    /// Text messages the command decoder refused.
    pub bad_frames: usize,
    /// Binary messages, each through the protobuf decoder.
    pub binaries: usize,
    /// Commands decoded out of the binary messages.
    pub protobuf_commands: usize,
    /// The close code sent for a protocol violation; reading stops there.
    pub violation: Option<u16>,
    /// The client sent a close frame; reading stops there.
    pub closed: bool,
}

/// Decodes `data` as a client would send it over one connection, never
/// panicking on any input. The first byte is not wire data: its low four
/// bits set the fragment limit (1 to 16 frames), its high four bits how the
/// rest is cut into reads (0: one read; otherwise reads of pseudo-random
/// lengths). A fuzzer mutates the cuts as readily as the bytes.
pub fn decode_client_bytes(data: &[u8], max_message: usize) -> Outcome {
    let Some((&control, wire)) = data.split_first() else {
        return Outcome::default();
    };
    let max_fragments = usize::from(control & 0x0F) + 1;
    decode_client_chunks(cuts(wire, control >> 4), max_message, max_fragments)
}

/// Decodes the reads `chunks`, in order, as one connection's bytes.
pub fn decode_client_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    max_message: usize,
    max_fragments: usize,
) -> Outcome {
    let mut reader = Reader::new(max_message, max_fragments);
    let mut unread = BytesMut::new();
    let mut out = Outcome::default();
    for chunk in chunks {
        unread.extend_from_slice(chunk);
        loop {
            match reader.next(&mut unread) {
                Ok(None) => break,
                Ok(Some(message)) => {
                    out.messages += 1;
                    if on_message(message, &mut out) {
                        return out;
                    }
                }
                Err(error) => {
                    out.violation = Some(error.disconnect().code);
                    return out;
                }
            }
        }
    }
    out
}

/// Handles one message as the socket and session would; true when reading
/// stops.
fn on_message(message: Message, out: &mut Outcome) -> bool {
    match message {
        Message::Text(text) => {
            match decode_frame(&text) {
                Ok(commands) => {
                    // The protocol crate's promise: what it decoded
                    // encodes to a line that decodes to the same command.
                    for command in &commands {
                        let again = Command::decode(&command.encode());
                        assert!(
                            matches!(&again, Ok(c) if c == command),
                            "command does not round-trip: {command:?} -> {again:?}"
                        );
                    }
                    out.commands += commands.len();
                }
                Err(_) => out.bad_frames += 1,
            }
            out.texts.push(text.to_vec());
            false
        }
        Message::Ping(payload) => {
            let pong = wsframe::pong_frame(&payload);
            assert_eq!(&pong[2..], &payload[..], "a pong echoes its ping");
            false
        }
        Message::Binary(body) => {
            out.binaries += 1;
            out.protobuf_commands += decode_protobuf_message(&body);
            false
        }
        Message::Pong => false,
        Message::Close(close) => {
            if let Some((code, _)) = close {
                assert!(wsframe::close_code_allowed(code), "close code {code}");
            }
            out.closed = true;
            true
        }
    }
}

/// One binary message of a protobuf client through the decoder, never
/// panicking on any input; returns how many commands it held (0 when it was
/// refused). What decodes encodes back to the same commands: nothing a
/// client sends drifts on its way in.
pub fn decode_protobuf_message(message: &[u8]) -> usize {
    let Ok(commands) = decode_frame_protobuf(message) else {
        return 0;
    };
    assert!(!commands.is_empty(), "a decoded message holds a command");
    for command in &commands {
        if matches!(command.method, Method::PayloadNotJson { .. }) {
            continue;
        }
        let mut again = Vec::new();
        encode_command(command, &mut again);
        let decoded = decode_frame_protobuf(&again);
        assert!(
            matches!(&decoded, Ok(c) if c.as_slice() == std::slice::from_ref(command)),
            "command does not round-trip: {command:?} -> {decoded:?}"
        );
    }
    commands.len()
}

/// `wire` cut into reads: whole when `scheme` is 0, otherwise into lengths
/// from 1 to 2^scheme drawn from a generator seeded by `scheme` and the
/// length of `wire`.
fn cuts(wire: &[u8], scheme: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = wire;
    let mut state = (u64::from(scheme) << 32) ^ wire.len() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = if scheme == 0 {
            rest.len()
        } else {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let span = 1u64 << scheme.min(15);
            1 + (state % span) as usize
        };
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::ws::frame::masked_client_frame as client_frame;

    /// `bytes` cut at the given points (any order, duplicates allowed), so
    /// possibly inside a UTF-8 character; always at least one piece.
    fn cut_at(bytes: &[u8], points: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = points.iter().map(|p| p.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    /// A line the command decoder accepts.
    fn command_line() -> impl Strategy<Value = String> {
        let channel = "[a-z:#]{1,12}";
        prop_oneof![
            (1u32..1000).prop_map(|id| format!(r#"{{"id":{id},"connect":{{}}}}"#)),
            (1u32..1000, channel)
                .prop_map(|(id, ch)| format!(r#"{{"id":{id},"subscribe":{{"channel":"{ch}"}}}}"#)),
            (1u32..1000, channel, any::<i64>()).prop_map(|(id, ch, n)| format!(
                r#"{{"id":{id},"publish":{{"channel":"{ch}","data":{{"n":{n}}}}}}}"#
            )),
            Just("{}".to_owned()),
        ]
    }

    #[test]
    fn transport_requests_parse_what_clients_send() {
        let emulation = br#"{"session":"s","node":"n","data":"{\"id\":2,\"publish\":{\"channel\":\"c\",\"data\":{}}}"}"#;
        assert_eq!(transport_request(&[&[0u8][..], emulation].concat()), 1);
        assert_eq!(
            transport_request(b"\0{\"session\":\"\",\"node\":\"n\",\"data\":\"{}\"}"),
            0
        );
        assert_eq!(
            transport_request(b"\x02{\"token\":\"t\",\"subs\":{\"c\":{\"recover\":true}}}"),
            1
        );
        assert_eq!(transport_request(b"\x02[1]"), 0);
        // Reply{push=4 {channel=2 "c"}} and an empty reply (a ping): two pushes.
        assert_eq!(transport_request(&[5, 5, 0x22, 3, 0x12, 1, b'c', 0]), 2);
    }

    proptest! {
        /// Any bytes through every transport parser: no panic.
        #[test]
        fn arbitrary_transport_requests_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            let _ = transport_request(&data);
        }

        /// Any bytes, cut any way, under any limits: no panic, and a
        /// refusal is one of the close codes RFC 6455 asks for.
        #[test]
        fn arbitrary_client_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..2048),
            max_message in 0usize..4096,
        ) {
            let out = decode_client_bytes(&data, max_message);
            if let Some(code) = out.violation {
                prop_assert!(matches!(code, 1002 | 1007 | 1009), "close code {}", code);
            }
            for text in &out.texts {
                prop_assert!(std::str::from_utf8(text).is_ok());
                prop_assert!(text.len() <= max_message);
            }
            prop_assert!(out.commands == 0 || !out.texts.is_empty());
        }

        /// Frames that are nearly right (any opcode, fin, RSV bits, mask
        /// or not, any length): no panic, and every message read before a
        /// refusal is whole.
        #[test]
        fn arbitrary_frame_sequences_never_panic(
            frames in prop::collection::vec(
                (any::<bool>(), 0u8..16, prop::bool::weighted(0.05), prop::bool::weighted(0.95),
                 prop::collection::vec(any::<u8>(), 0..300)),
                0..12,
            ),
            mask in any::<[u8; 4]>(),
            control in any::<u8>(),
            max_message in 0usize..1024,
        ) {
            let mut data = vec![control];
            for (fin, opcode, rsv, masked, payload) in &frames {
                let mut frame = client_frame(*fin, *opcode, mask, payload);
                if *rsv {
                    frame[0] |= 0x40;
                }
                if !*masked {
                    frame[1] &= 0x7F;
                }
                data.extend(frame);
            }
            let out = decode_client_bytes(&data, max_message);
            if let Some(code) = out.violation {
                prop_assert!(matches!(code, 1002 | 1007 | 1009), "close code {}", code);
            }
            prop_assert!(out.messages <= frames.len());
            for text in &out.texts {
                prop_assert!(std::str::from_utf8(text).is_ok());
                prop_assert!(text.len() <= max_message);
            }
        }

        /// A valid masked text frame of any UTF-8, whatever the reads it
        /// arrives in, is exactly that text.
        #[test]
        fn a_text_frame_cut_anywhere_is_its_text(
            text in any::<String>(),
            mask in any::<[u8; 4]>(),
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            control in any::<u8>(),
        ) {
            let frame = client_frame(true, wsframe::OP_TEXT, mask, text.as_bytes());
            let want = Outcome {
                texts: vec![text.clone().into_bytes()],
                messages: 1,
                commands: 0,
                bad_frames: 1,
                binaries: 0,
                protobuf_commands: 0,
                violation: None,
                closed: false,
            };
            let reads = cut_at(&frame, &points);
            let mut got = decode_client_chunks(reads.iter().map(Vec::as_slice), 1 << 16, 1);
            // Whether it holds commands is the protocol crate's business.
            got.bad_frames = 1;
            got.commands = 0;
            prop_assert_eq!(&got, &want);
            // Through the fuzz entry point: the reads it picks itself.
            let mut data = vec![control];
            data.extend_from_slice(&frame);
            let mut got = decode_client_bytes(&data, 1 << 16);
            got.bad_frames = 1;
            got.commands = 0;
            prop_assert_eq!(&got, &want);
        }

        /// A text message in fragments cut at any bytes (inside a character
        /// too), with pings between them, rejoins to the text; one fragment
        /// over the limit is refused with 1009.
        #[test]
        fn fragments_rejoin_and_their_number_is_capped(
            text in ".{0,64}",
            mask in any::<[u8; 4]>(),
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            ping_every in 1usize..4,
        ) {
            let parts = cut_at(text.as_bytes(), &points);
            let mut wire = Vec::new();
            let mut pings = 0;
            for (i, part) in parts.iter().enumerate() {
                let opcode = if i == 0 { wsframe::OP_TEXT } else { wsframe::OP_CONTINUATION };
                wire.extend(client_frame(i + 1 == parts.len(), opcode, mask, part));
                if i % ping_every == 0 && i + 1 < parts.len() {
                    wire.extend(client_frame(true, wsframe::OP_PING, mask, b"p"));
                    pings += 1;
                }
            }
            let got = decode_client_chunks([wire.as_slice()], 1 << 16, parts.len());
            prop_assert_eq!(got.violation, None);
            prop_assert_eq!(got.texts, vec![text.clone().into_bytes()]);
            prop_assert_eq!(got.messages, pings + 1);
            if parts.len() > 1 {
                let got = decode_client_chunks([wire.as_slice()], 1 << 16, parts.len() - 1);
                prop_assert_eq!(got.violation, Some(1009));
                prop_assert!(got.texts.is_empty());
            }
        }

        /// A frame of commands joined by `\n` decodes to every one of them.
        #[test]
        fn a_frame_of_commands_decodes_to_each(
            lines in prop::collection::vec(command_line(), 1..6),
            mask in any::<[u8; 4]>(),
            control in any::<u8>(),
        ) {
            let text = lines.join("\n");
            let mut data = vec![control];
            data.extend(client_frame(true, wsframe::OP_TEXT, mask, text.as_bytes()));
            let got = decode_client_bytes(&data, 1 << 16);
            prop_assert_eq!(got.violation, None);
            prop_assert_eq!(got.bad_frames, 0);
            prop_assert_eq!(got.commands, lines.len());
        }

        /// Binary messages of protobuf commands, cut any way, decode to
        /// every command; any bytes in a binary message never panic.
        #[test]
        fn binary_messages_go_through_the_protobuf_decoder(
            ids in prop::collection::vec(1u32..1000, 1..6),
            garbage in prop::collection::vec(any::<u8>(), 0..256),
            mask in any::<[u8; 4]>(),
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut message = Vec::new();
            for id in &ids {
                let ping = Command { id: *id, method: Method::Ping };
                encode_command(&ping, &mut message);
            }
            let mut wire = client_frame(true, wsframe::OP_BINARY, mask, &message);
            wire.extend(client_frame(true, wsframe::OP_BINARY, mask, &garbage));
            let reads = cut_at(&wire, &points);
            let got = decode_client_chunks(reads.iter().map(Vec::as_slice), 1 << 16, 1);
            prop_assert_eq!(got.violation, None);
            prop_assert_eq!(got.binaries, 2);
            prop_assert!(got.protobuf_commands >= ids.len());
            prop_assert_eq!(decode_protobuf_message(&message), ids.len());
        }

        /// A text frame that is not UTF-8 is refused with 1007, one over
        /// the size limit with 1009 (from its header alone).
        #[test]
        fn invalid_text_and_oversize_are_refused(
            mut body in prop::collection::vec(any::<u8>(), 1..200),
            mask in any::<[u8; 4]>(),
        ) {
            if std::str::from_utf8(&body).is_ok() {
                body.push(0xFF);
            }
            let frame = client_frame(true, wsframe::OP_TEXT, mask, &body);
            let got = decode_client_chunks([frame.as_slice()], 1 << 16, 1);
            prop_assert_eq!(got.violation, Some(1007));
            let header_only = &frame[..frame.len() - body.len()];
            let got = decode_client_chunks([header_only], body.len() - 1, 1);
            prop_assert_eq!(got.violation, Some(1009));
        }
    }

    #[test]
    fn cuts_cover_the_input_in_order() {
        let wire: Vec<u8> = (0..=255).collect();
        for scheme in 0..16 {
            let joined: Vec<u8> = cuts(&wire, scheme).flatten().copied().collect();
            assert_eq!(joined, wire, "scheme {scheme}");
        }
        assert_eq!(cuts(&wire, 0).count(), 1);
        assert!(cuts(&wire, 1).all(|c| c.len() <= 2));
        assert_eq!(cuts(&[], 3).count(), 0);
    }
}
