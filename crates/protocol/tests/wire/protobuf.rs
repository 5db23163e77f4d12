//! The protobuf format: round trips of every message type over the same
//! strategies as the JSON properties, and arbitrary bytes through the
//! frame decoder.

use herald_protocol::protobuf::client::{decode_replies, encode_command};
use herald_protocol::protobuf::{decode_frame_protobuf, encode_reply_protobuf};
use herald_protocol::{Command, FrameError, Method, Reply};
use proptest::prelude::*;

use super::{command, either_payloads, reply};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// What a protobuf client encodes, herald decodes to the same command.
    #[test]
    fn protobuf_commands_round_trip((cmds, _) in either_payloads(|p| prop::collection::vec(command(p), 1..5).boxed())) {
        let mut message = Vec::new();
        for cmd in &cmds {
            encode_command(cmd, &mut message);
        }
        prop_assert_eq!(decode_frame_protobuf(&message), Ok(cmds));
    }

    /// What herald encodes, a protobuf client decodes to the same reply,
    /// several to one message.
    #[test]
    fn protobuf_replies_round_trip((replies, _) in either_payloads(|p| prop::collection::vec(reply(p), 1..5).boxed())) {
        let mut message = Vec::new();
        for reply in &replies {
            encode_reply_protobuf(reply, &mut message);
        }
        prop_assert_eq!(decode_replies(&message), Ok(replies));
    }

    /// Any bytes: commands or an error, never a panic; and what decodes
    /// encodes back to commands that decode the same (nothing drifts).
    #[test]
    fn arbitrary_bytes_decode_or_refuse(message in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(commands) = decode_frame_protobuf(&message) {
            prop_assert!(!commands.is_empty());
            for command in commands {
                if matches!(command.method, Method::PayloadNotJson { .. }) {
                    continue;
                }
                let mut again = Vec::new();
                encode_command(&command, &mut again);
                prop_assert_eq!(decode_frame_protobuf(&again), Ok(vec![command]));
            }
        }
    }

    /// A valid message cut short anywhere is refused whole, never read in part.
    #[test]
    fn a_truncated_message_is_refused(
        (cmds, _) in either_payloads(|p| prop::collection::vec(command(p), 1..4).boxed()),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut message = Vec::new();
        for cmd in &cmds {
            encode_command(cmd, &mut message);
        }
        let at = cut.index(message.len());
        // Cutting at a boundary between commands leaves a shorter valid message.
        let mut boundaries = vec![0];
        let mut offset = 0;
        for cmd in &cmds {
            let mut one = Vec::new();
            encode_command(cmd, &mut one);
            offset += one.len();
            boundaries.push(offset);
        }
        let decoded = decode_frame_protobuf(&message[..at]);
        if boundaries.contains(&at) {
            let want: Vec<Command> = cmds[..boundaries.iter().position(|b| *b == at).unwrap_or(0)].to_vec();
            if want.is_empty() {
                prop_assert_eq!(decoded, Err(FrameError::Empty));
            } else {
                prop_assert_eq!(decoded, Ok(want));
            }
        } else {
            prop_assert!(decoded.is_err(), "cut at {} of {}: {:?}", at, message.len(), decoded);
        }
    }
}

#[test]
fn a_ping_reply_is_one_zero_byte_and_an_empty_command_is_a_pong() {
    let mut out = Vec::new();
    encode_reply_protobuf(&Reply::Ping, &mut out);
    assert_eq!(out, [0]);
    assert_eq!(
        decode_frame_protobuf(&[0]),
        Ok(vec![Command {
            id: 0,
            method: Method::Pong
        }])
    );
}
