//! What travels through Redis pub/sub, and what is stored in history streams.
//!
//! Every message starts with a kind letter and a format version, then `:`:
//!
//! - `p1:<offset>:<epoch>:<publication JSON>`: a publication; offset 0 and an
//!   empty epoch when the channel keeps no history. The Lua publish script
//!   writes the header, since only it knows the offset.
//! - `j1:<ClientInfo JSON>`, `l1:<ClientInfo JSON>`: join and leave.
//! - `c1:<ControlMessage JSON>` on the control channel.
//!
//! History stream entries hold the publication JSON alone (field `d`); the
//! entry id is the offset. The publication JSON never carries the offset.

use herald_protocol::{ClientInfo, Publication};
use serde::{Deserialize, Serialize};

use crate::{ControlCommand, NodeInfo, SurveyReply, SurveyRequest};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    #[error("unknown envelope kind or version")]
    UnknownKind,
    #[error("malformed envelope header")]
    Header,
    #[error("malformed envelope body: {0}")]
    Body(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChannelMessage {
    Publication {
        publication: Publication,
        epoch: String,
    },
    Join(ClientInfo),
    Leave(ClientInfo),
}

/// A publication of a channel without history (offset 0, no epoch).
pub(crate) fn encode_unpositioned(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.extend_from_slice(b"p1:0::");
    out.extend_from_slice(body);
    out
}

pub(crate) fn encode_join(info: &ClientInfo) -> Vec<u8> {
    encode_info(b"j1:", info)
}

pub(crate) fn encode_leave(info: &ClientInfo) -> Vec<u8> {
    encode_info(b"l1:", info)
}

fn encode_info(header: &[u8], info: &ClientInfo) -> Vec<u8> {
    let mut out = header.to_vec();
    serde_json::to_writer(&mut out, info).expect("client info always serializes");
    out
}

pub(crate) fn decode_channel_message(bytes: &[u8]) -> Result<ChannelMessage, EnvelopeError> {
    let (kind, rest) = split_kind(bytes)?;
    match kind {
        b"p1" => {
            let (offset, rest) = split_field(rest)?;
            let (epoch, body) = split_field(rest)?;
            let offset = std::str::from_utf8(offset)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(EnvelopeError::Header)?;
            let epoch = std::str::from_utf8(epoch).map_err(|_| EnvelopeError::Header)?;
            let mut publication = decode_publication(body)?;
            publication.offset = offset;
            Ok(ChannelMessage::Publication {
                publication,
                epoch: epoch.to_owned(),
            })
        }
        b"j1" => Ok(ChannelMessage::Join(decode_json(rest)?)),
        b"l1" => Ok(ChannelMessage::Leave(decode_json(rest)?)),
        _ => Err(EnvelopeError::UnknownKind),
    }
}

/// A publication as stored in a history stream (offset set by the caller).
pub(crate) fn decode_publication(body: &[u8]) -> Result<Publication, EnvelopeError> {
    decode_json(body)
}

/// Node-to-node traffic on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ControlMessage {
    /// uid of the sending node.
    pub(crate) node: String,
    #[serde(flatten)]
    pub(crate) body: ControlBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub(crate) enum ControlBody {
    /// "I am alive, with these figures."
    Heartbeat(NodeInfo),
    /// Apply to your own clients.
    Command(ControlCommand),
    /// The node leaves the cluster (graceful shutdown).
    Leave,
    /// "Everyone, answer this" (cluster-wide API calls).
    SurveyRequest { id: String, request: SurveyRequest },
    /// Client commands for the emulated connection `session` of node `to`
    /// (base64 `data`: JSON or protobuf commands, as the client sent them).
    Emulation {
        id: String,
        to: String,
        session: String,
        data: String,
    },
    /// Node `to`'s emulation request `id` was taken (`found`) or its session
    /// is unknown.
    EmulationReply { id: String, to: String, found: bool },
    /// An answer to the survey `id`, for the node `to`.
    SurveyReply {
        id: String,
        to: String,
        reply: SurveyReply,
    },
}

pub(crate) fn encode_control(message: &ControlMessage) -> Vec<u8> {
    let mut out = b"c1:".to_vec();
    serde_json::to_writer(&mut out, message).expect("control messages always serialize");
    out
}

pub(crate) fn decode_control(bytes: &[u8]) -> Result<ControlMessage, EnvelopeError> {
    match split_kind(bytes)? {
        (b"c1", rest) => decode_json(rest),
        _ => Err(EnvelopeError::UnknownKind),
    }
}

fn split_kind(bytes: &[u8]) -> Result<(&[u8], &[u8]), EnvelopeError> {
    match bytes.get(2) {
        Some(b':') => Ok((&bytes[..2], &bytes[3..])),
        _ => Err(EnvelopeError::UnknownKind),
    }
}

fn split_field(bytes: &[u8]) -> Result<(&[u8], &[u8]), EnvelopeError> {
    let at = bytes
        .iter()
        .position(|b| *b == b':')
        .ok_or(EnvelopeError::Header)?;
    Ok((&bytes[..at], &bytes[at + 1..]))
}

fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, EnvelopeError> {
    serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Body(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::publication_body;
    use herald_protocol::RawJson;

    fn publication() -> Publication {
        Publication {
            data: RawJson::from_str(r#"{"text":"hi","n":[1,2]}"#).unwrap(),
            info: Some(ClientInfo {
                user: "u1".into(),
                client: "c1".into(),
                ..Default::default()
            }),
            offset: 0,
            tags: [("k".to_string(), "v".to_string())].into(),
            delta: false,
        }
    }

    #[test]
    fn positioned_publication_round_trips_with_lua_style_header() {
        let body = publication_body(&publication());
        // What the publish script builds around the body.
        let mut wire = b"p1:42:AbCdEfGh:".to_vec();
        wire.extend_from_slice(&body);
        let ChannelMessage::Publication {
            publication: p,
            epoch,
        } = decode_channel_message(&wire).unwrap()
        else {
            panic!("not a publication");
        };
        assert_eq!(epoch, "AbCdEfGh");
        assert_eq!(p.offset, 42);
        assert_eq!(
            p.data.get(),
            r#"{"text":"hi","n":[1,2]}"#,
            "payload byte-exact"
        );
        assert_eq!(p.info, publication().info);
        assert_eq!(p.tags, publication().tags);
    }

    #[test]
    fn the_publishers_delta_request_travels_and_old_envelopes_decode_without_it() {
        let mut asked = publication();
        asked.delta = true;
        let wire = encode_unpositioned(&publication_body(&asked));
        let Ok(ChannelMessage::Publication { publication: p, .. }) = decode_channel_message(&wire)
        else {
            panic!("not a publication");
        };
        assert!(p.delta);
        // An envelope from before the flag existed: no `delta` key at all.
        let old = br#"p1:3:E:{"data":{"x":1}}"#;
        let Ok(ChannelMessage::Publication { publication: p, .. }) = decode_channel_message(old)
        else {
            panic!("not a publication");
        };
        assert!(!p.delta);
        assert!(!String::from_utf8(publication_body(&publication()))
            .unwrap()
            .contains("delta"));
    }

    #[test]
    fn body_never_carries_the_offset() {
        let mut p = publication();
        p.offset = 7;
        let body = String::from_utf8(publication_body(&p)).unwrap();
        assert!(!body.contains("offset"), "{body}");
    }

    #[test]
    fn unpositioned_join_leave_and_control_round_trip() {
        let wire = encode_unpositioned(&publication_body(&publication()));
        match decode_channel_message(&wire).unwrap() {
            ChannelMessage::Publication {
                publication: p,
                epoch,
            } => {
                assert_eq!((p.offset, epoch.as_str()), (0, ""));
            }
            other => panic!("{other:?}"),
        }
        let info = publication().info.unwrap();
        assert_eq!(
            decode_channel_message(&encode_join(&info)).unwrap(),
            ChannelMessage::Join(info.clone())
        );
        assert_eq!(
            decode_channel_message(&encode_leave(&info)).unwrap(),
            ChannelMessage::Leave(info)
        );
        for body in [
            ControlBody::Heartbeat(NodeInfo {
                uid: "n1".into(),
                num_clients: 3,
                ..Default::default()
            }),
            ControlBody::Command(ControlCommand::Disconnect {
                user: "u".into(),
                client: String::new(),
                whitelist: vec![],
                code: 3000,
                reason: "bye".into(),
            }),
            ControlBody::Leave,
            ControlBody::SurveyRequest {
                id: "s1".into(),
                request: SurveyRequest::Channels,
            },
            ControlBody::Emulation {
                id: "e1".into(),
                to: "n2".into(),
                session: "s".into(),
                data: "e30=".into(),
            },
            ControlBody::EmulationReply {
                id: "e1".into(),
                to: "n1".into(),
                found: true,
            },
            ControlBody::SurveyReply {
                id: "s1".into(),
                to: "n2".into(),
                reply: SurveyReply::Channels {
                    channels: [("a".to_string(), 2)].into(),
                },
            },
        ] {
            let message = ControlMessage {
                node: "n1".into(),
                body,
            };
            assert_eq!(decode_control(&encode_control(&message)).unwrap(), message);
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b""[..],
            b"p",
            b"p1",
            b"p1:",
            b"p1:x:e:{}",
            b"p1:1:e",
            b"p1:1:e:not json",
            b"p1:1:\xff:{}",
            b"j1:[",
            b"z9:{}",
            b"c1:{}",
        ] {
            assert!(decode_channel_message(bad).is_err() || bad.starts_with(b"c1"));
            assert!(decode_control(bad).is_err(), "{bad:?}");
        }
    }
}
