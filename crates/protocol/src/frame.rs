//! Newline-delimited JSON frames: one WebSocket text message carries one or
//! more commands (client -> server) or replies (server -> client).

use crate::command::Command;
use crate::reply::Reply;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("command {index} is not valid JSON: {reason}")]
    Malformed { index: usize, reason: String },
    /// A protobuf message that does not decode: a bad length prefix, a
    /// length beyond the message, or bytes that are not a Command.
    #[error("protobuf frame: {0}")]
    Protobuf(&'static str),
}

/// Splits a frame on `\n` (one trailing separator tolerated) and decodes each line.
///
/// All or nothing: a frame with any undecodable line is rejected whole.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Command>, FrameError> {
    let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
    if frame.iter().all(u8::is_ascii_whitespace) {
        return Err(FrameError::Empty);
    }
    frame
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(index, line)| {
            Command::decode(line).map_err(|e| FrameError::Malformed {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Joins replies into one frame.
pub fn encode_frame(replies: &[Reply]) -> Vec<u8> {
    let mut writer = FrameWriter::default();
    for reply in replies {
        writer.push(reply);
    }
    writer.finish()
}

/// Accumulates replies into one newline-joined frame.
#[derive(Debug, Default)]
pub struct FrameWriter {
    buf: Vec<u8>,
}

impl FrameWriter {
    pub fn push(&mut self, reply: &Reply) {
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        reply.encode_into(&mut self.buf);
    }

    /// Appends an already encoded reply line.
    pub fn push_encoded(&mut self, line: &[u8]) {
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        self.buf.extend_from_slice(line);
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}
