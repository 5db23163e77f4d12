//! The WebSocket frame layer (RFC 6455 §5), with no I/O: reading client
//! frames out of a byte buffer into whole messages, and the few bytes of
//! header a server frame needs.
//!
//! Client frames must be masked and carry no RSV bits, but RSV1 on the
//! first frame of a data message when permessage-deflate was negotiated
//! (`ws/deflate.rs` inflates it); control frames are short and
//! unfragmented; a fragmented message is capped in size and in number of
//! frames; text must be UTF-8. Every violation is a [`WsError`] that maps
//! to the close code the RFC asks for.

use std::sync::{Arc, OnceLock};

use bytes::{Buf, Bytes, BytesMut};
use herald_protocol::Disconnect;

use super::deflate::{self, Deflate, InflateError, RSV1};
use super::header::{server_header, MAX_HEADER};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The close code and reason, if the frame had any.
    Close(Option<(u16, String)>),
}

/// Why the client's bytes were refused; each maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WsError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message larger than the size limit")]
    TooBig,
    #[error("too many continuation frames")]
    TooManyFragments,
    #[error("text that is not UTF-8")]
    InvalidUtf8,
    /// A compressed message that does not inflate.
    #[error("compressed message that is not a deflate stream")]
    BadDeflate,
}

impl WsError {
    /// The close sent before the connection is dropped.
    pub(crate) fn disconnect(self) -> Disconnect {
        match self {
            WsError::Protocol(_) => Disconnect::PROTOCOL_ERROR,
            WsError::TooBig | WsError::TooManyFragments => Disconnect::MESSAGE_TOO_BIG,
            WsError::InvalidUtf8 | WsError::BadDeflate => Disconnect::INVALID_TEXT,
        }
    }

    /// The `reason` label of the rejection metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            WsError::Protocol(_) => "protocol",
            WsError::TooBig => "size",
            WsError::TooManyFragments => "fragments",
            WsError::InvalidUtf8 => "utf8",
            WsError::BadDeflate => "deflate",
        }
    }
}

/// A data message being put together from fragments.
struct Fragmented {
    opcode: u8,
    /// The first frame had RSV1: `body` is compressed.
    compressed: bool,
    body: BytesMut,
    frames: usize,
}

/// Reads client frames and joins fragments into messages.
pub(crate) struct Reader {
    max_message: usize,
    max_fragments: usize,
    partial: Option<Fragmented>,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
}

/// One frame's header, parsed.
struct Header {
    fin: bool,
    opcode: u8,
    compressed: bool,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl Reader {
    /// `max_message` bounds a message (all fragments together) in bytes;
    /// `max_fragments` bounds how many frames one message may take.
    pub(crate) fn new(max_message: usize, max_fragments: usize) -> Self {
        Self {
            max_message,
            max_fragments: max_fragments.max(1),
            partial: None,
            deflate: false,
        }
    }

    /// Takes compressed messages (permessage-deflate was negotiated). The
    /// size limit then bounds both a message's compressed bytes and what
    /// they inflate to.
    pub(crate) fn accept_compressed(&mut self) {
        self.deflate = true;
    }

    /// Takes the next whole message out of `buf`. `Ok(None)` means more
    /// bytes are needed; what was not consumed stays in `buf`.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        loop {
            let Some(header) = self.parse_header(buf)? else {
                return Ok(None);
            };
            if buf.len() < header.header_len + header.payload_len {
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len);
            unmask(&mut payload, header.mask);
            if let Some(message) =
                self.on_frame(header.fin, header.opcode, header.compressed, payload)?
            {
                return Ok(Some(message));
            }
        }
    }

    /// Bytes buffered in an unfinished fragmented message.
    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.body.len())
    }

    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, WsError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let compressed = b0 & RSV1 != 0;
        if b0 & 0x30 != 0 || (compressed && !self.deflate) {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let control = opcode & 0x08 != 0;
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(WsError::Protocol("reserved opcode")),
        }
        // RFC 7692 §6.1: RSV1 marks the first frame of a data message only.
        if compressed && control {
            return Err(WsError::Protocol("compressed control frame"));
        }
        if compressed && opcode == OP_CONTINUATION {
            return Err(WsError::Protocol("RSV1 on a continuation frame"));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("unmasked client frame"));
        }
        let (payload_len, len_bytes) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 2)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("length with the high bit set"));
                }
                (len, 8)
            }
            n => (n as u64, 0),
        };
        if control {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if payload_len > 125 {
                return Err(WsError::Protocol("control frame over 125 bytes"));
            }
        } else {
            // Refused from the header alone, before any of it is buffered.
            let already = self.partial.as_ref().map_or(0, |p| p.body.len() as u64);
            if already.saturating_add(payload_len) > self.max_message as u64 {
                return Err(WsError::TooBig);
            }
        }
        let header_len = 2 + len_bytes + 4;
        if buf.len() < header_len {
            return Ok(None);
        }
        let mask = [
            buf[header_len - 4],
            buf[header_len - 3],
            buf[header_len - 2],
            buf[header_len - 1],
        ];
        Ok(Some(Header {
            fin,
            opcode,
            compressed,
            mask,
            header_len,
            // Bounded above by max_message or 125, so it fits.
            payload_len: payload_len as usize,
        }))
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        compressed: bool,
        payload: BytesMut,
    ) -> Result<Option<Message>, WsError> {
        match opcode {
            OP_PING => Ok(Some(Message::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Message::Pong)),
            OP_CLOSE => parse_close(&payload).map(|c| Some(Message::Close(c))),
            OP_CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(WsError::Protocol("continuation without a message"));
                };
                partial.frames += 1;
                if partial.frames > self.max_fragments {
                    return Err(WsError::TooManyFragments);
                }
                partial.body.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let done = self
                    .partial
                    .take()
                    .map(|p| (p.opcode, p.compressed, p.body));
                match done {
                    Some((op, compressed, body)) => {
                        self.data_message(op, compressed, body.freeze()).map(Some)
                    }
                    None => Ok(None),
                }
            }
            _ => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol("new message inside a fragmented one"));
                }
                if fin {
                    return self
                        .data_message(opcode, compressed, payload.freeze())
                        .map(Some);
                }
                self.partial = Some(Fragmented {
                    opcode,
                    compressed,
                    body: payload,
                    frames: 1,
                });
                Ok(None)
            }
        }
    }
}

impl Reader {
    /// A whole data message, inflated first when it came compressed.
    fn data_message(&self, opcode: u8, compressed: bool, body: Bytes) -> Result<Message, WsError> {
        let body = if compressed {
            let inflated = deflate::inflate(&body, self.max_message);
            crate::metrics::inflated(match inflated {
                Ok(_) => "ok",
                Err(InflateError::TooBig) => "too_big",
                Err(InflateError::Corrupt) => "corrupt",
            });
            match inflated {
                Ok(inflated) => Bytes::from(inflated),
                Err(InflateError::TooBig) => return Err(WsError::TooBig),
                Err(InflateError::Corrupt) => return Err(WsError::BadDeflate),
            }
        } else {
            body
        };
        data_message(opcode, body)
    }
}

fn data_message(opcode: u8, body: Bytes) -> Result<Message, WsError> {
    if opcode == OP_TEXT {
        if std::str::from_utf8(&body).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        return Ok(Message::Text(body));
    }
    Ok(Message::Binary(body))
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol("close frame with a one-byte body")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                return Err(WsError::Protocol("close code not allowed on the wire"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Codes a peer may send in a close frame (RFC 6455 §7.4).
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A whole server data frame (text for JSON, binary for protobuf): header
/// and payload in one buffer, built once and shared by every connection it
/// goes to, so a delivery is one contiguous write of bytes nobody copies.
///
/// A frame made for many connections (the Hub's, [`DataFrame::shared`])
/// also carries the slot of its compressed form: the first connection with
/// permessage-deflate that sends it compresses it, and every other one
/// sends those same bytes.
#[derive(Clone, Debug)]
pub(crate) struct DataFrame(Bytes, Option<Arc<Compressed>>);

/// The compressed form of a shared frame, made once on first use: None
/// inside when compressing did not make it smaller.
type Compressed = OnceLock<Option<Bytes>>;

impl PartialEq for DataFrame {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for DataFrame {}

impl DataFrame {
    /// Frames one text message (the one copy of its bytes).
    pub(crate) fn text(text: &[u8]) -> Self {
        Self::with_opcode(OP_TEXT, text)
    }

    /// Frames one binary message.
    pub(crate) fn binary(body: &[u8]) -> Self {
        Self::with_opcode(OP_BINARY, body)
    }

    fn with_opcode(opcode: u8, payload: &[u8]) -> Self {
        let mut header = [0u8; MAX_HEADER];
        let header_len = server_header(opcode, payload.len(), &mut header);
        let mut frame = Vec::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(payload);
        Self(Bytes::from(frame), None)
    }

    /// The same frame with a slot for its compressed form, for a frame
    /// that goes to many connections.
    pub(crate) fn shared(self) -> Self {
        Self(self.0, Some(Arc::default()))
    }

    /// What goes on the wire for a connection that compresses with
    /// `deflate`: the frame compressed (RSV1 set), or as it is when that is
    /// not smaller. A shared frame is compressed once, by the first
    /// connection that asks, for every connection with the node's window;
    /// other frames are compressed for this connection.
    pub(crate) fn deflated(&self, deflate: &Deflate) -> Bytes {
        let opcode = self.0[0] & 0x0F;
        let compressed = match &self.1 {
            Some(slot) if deflate.shares_frames() => slot
                .get_or_init(|| {
                    crate::metrics::deflated(true);
                    deflate::compress_frame(opcode, self.payload(), deflate)
                })
                .clone(),
            _ => {
                crate::metrics::deflated(false);
                deflate::compress_frame(opcode, self.payload(), deflate)
            }
        };
        compressed.unwrap_or_else(|| self.0.clone())
    }

    /// Whether the frame is binary (a text frame otherwise).
    pub(crate) fn is_binary(&self) -> bool {
        self.0[0] & 0x0F == OP_BINARY
    }

    /// Bytes `next` adds to a message joined onto this frame: its payload,
    /// and the `\n` between JSON lines (protobuf replies carry their own
    /// length prefixes and are simply concatenated).
    pub(crate) fn joined_len(&self) -> usize {
        self.payload().len() + usize::from(!self.is_binary())
    }

    /// One frame of the first frame's kind carrying the payloads of
    /// `frames`: JSON lines joined with `\n`, protobuf replies one after
    /// the other (the client protocol's ways of sending several replies in
    /// one message). Every frame must be of the first one's kind.
    pub(crate) fn join(frames: &[DataFrame]) -> Self {
        let binary = frames.first().is_some_and(DataFrame::is_binary);
        let separators = if binary {
            0
        } else {
            frames.len().saturating_sub(1)
        };
        let payload_len = frames.iter().map(|f| f.payload().len()).sum::<usize>() + separators;
        let mut header = [0u8; MAX_HEADER];
        let opcode = if binary { OP_BINARY } else { OP_TEXT };
        let header_len = server_header(opcode, payload_len, &mut header);
        let mut out = Vec::with_capacity(header_len + payload_len);
        out.extend_from_slice(&header[..header_len]);
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 && !binary {
                out.push(b'\n');
            }
            out.extend_from_slice(frame.payload());
        }
        Self(Bytes::from(out), None)
    }

    /// The payload the frame carries.
    pub(crate) fn payload(&self) -> &[u8] {
        let header_len = match self.0[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &self.0[header_len..]
    }

    /// The payload, sharing the frame's buffer.
    pub(crate) fn payload_bytes(&self) -> Bytes {
        let header_len = self.0.len() - self.payload().len();
        self.0.slice(header_len..)
    }

    /// The whole frame, as written to the socket.
    pub(crate) fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A whole server close frame: code plus reason, cut to the 123 bytes a
/// control frame can carry, on a character boundary.
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = Vec::with_capacity(4 + end);
    frame.push(0x80 | OP_CLOSE);
    frame.push((2 + end) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(frame)
}

/// A whole server pong frame echoing a ping's payload (at most 125 bytes).
pub(crate) fn pong_frame(payload: &[u8]) -> Bytes {
    let len = payload.len().min(125);
    let mut frame = Vec::with_capacity(2 + len);
    frame.push(0x80 | OP_PONG);
    frame.push(len as u8);
    frame.extend_from_slice(&payload[..len]);
    Bytes::from(frame)
}

/// A masked client frame, as a browser sends it (for the tests of this
/// module and of `fuzzing`).
#[cfg(test)]
pub(crate) fn masked_client_frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        masked_client_frame(fin, opcode, [0x37, 0xfa, 0x21, 0x3d], payload)
    }

    fn read_all(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<Message>, WsError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = reader.next(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn text_frames_of_every_length_form() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 70_000] {
            let payload = vec![b'a'; len];
            let mut reader = Reader::new(1 << 20, 16);
            let got = read_all(&mut reader, &client_frame(true, OP_TEXT, &payload)).unwrap();
            assert_eq!(got, vec![Message::Text(Bytes::from(payload))], "len {len}");
        }
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let frame = client_frame(true, OP_TEXT, b"{\"id\":1,\"connect\":{}}");
        for cut in 0..frame.len() {
            let mut reader = Reader::new(1024, 4);
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(reader.next(&mut buf), Ok(None), "cut at {cut}");
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(
                reader.next(&mut buf),
                Ok(Some(Message::Text(Bytes::from_static(
                    b"{\"id\":1,\"connect\":{}}"
                ))))
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn fragments_join_with_control_frames_between() {
        let mut bytes = client_frame(false, OP_TEXT, b"hel");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"lo "));
        bytes.extend(client_frame(true, OP_CONTINUATION, "wörld".as_bytes()));
        let mut reader = Reader::new(1024, 4);
        let got = read_all(&mut reader, &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from("hello wörld".as_bytes().to_vec())),
            ]
        );
        assert_eq!(reader.pending_bytes(), 0);
    }

    #[test]
    fn limits_are_enforced_from_the_header() {
        // One frame over the limit is refused before its payload arrives.
        let frame = client_frame(true, OP_TEXT, &[b'a'; 2000]);
        let mut reader = Reader::new(1000, 4);
        let mut buf = BytesMut::from(&frame[..8]);
        assert_eq!(reader.next(&mut buf), Err(WsError::TooBig));
        // Fragments adding up past the limit.
        let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 600]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 600]));
        assert_eq!(
            read_all(&mut Reader::new(1000, 4), &bytes),
            Err(WsError::TooBig)
        );
        // Too many fragments, however small.
        let mut bytes = client_frame(false, OP_TEXT, b"a");
        for _ in 0..4 {
            bytes.extend(client_frame(false, OP_CONTINUATION, b"a"));
        }
        assert_eq!(
            read_all(&mut Reader::new(1000, 4), &bytes),
            Err(WsError::TooManyFragments)
        );
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (
                vec![0x81, 0x02, b'h', b'i'],
                WsError::Protocol("unmasked client frame"),
            ),
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"x");
                    f[0] |= 0x40;
                    f
                },
                WsError::Protocol("reserved bits set"),
            ),
            (
                client_frame(true, 0x3, b""),
                WsError::Protocol("reserved opcode"),
            ),
            (
                client_frame(false, OP_PING, b""),
                WsError::Protocol("fragmented control frame"),
            ),
            (
                client_frame(true, OP_PING, &[0; 126]),
                WsError::Protocol("control frame over 125 bytes"),
            ),
            (
                client_frame(true, OP_CONTINUATION, b"x"),
                WsError::Protocol("continuation without a message"),
            ),
            (
                {
                    let mut f = client_frame(false, OP_TEXT, b"x");
                    f.extend(client_frame(true, OP_TEXT, b"y"));
                    f
                },
                WsError::Protocol("new message inside a fragmented one"),
            ),
            (
                client_frame(true, OP_TEXT, &[0xff, 0xfe]),
                WsError::InvalidUtf8,
            ),
            (
                client_frame(true, OP_CLOSE, &[0x03]),
                WsError::Protocol("close frame with a one-byte body"),
            ),
            (
                client_frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
                WsError::Protocol("close code not allowed on the wire"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                read_all(&mut Reader::new(1024, 4), &bytes),
                Err(want),
                "{bytes:x?}"
            );
        }
    }

    /// A raw deflate message as a client sends it: sync flush, tail removed.
    fn client_deflate(payload: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut out = Vec::with_capacity(payload.len() + 64);
        c.compress_vec(payload, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    fn rsv1(mut frame: Vec<u8>) -> Vec<u8> {
        frame[0] |= RSV1;
        frame
    }

    fn inflating(max: usize) -> Reader {
        let mut reader = Reader::new(max, 4);
        reader.accept_compressed();
        reader
    }

    #[test]
    fn compressed_messages_are_inflated() {
        let text = "{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":\"ééé\"}}".repeat(20);
        let compressed = client_deflate(text.as_bytes());
        let frame = rsv1(client_frame(true, OP_TEXT, &compressed));
        assert_eq!(
            read_all(&mut inflating(1 << 16), &frame),
            Ok(vec![Message::Text(Bytes::from(text.clone()))])
        );
        // Fragmented: RSV1 on the first frame only, then plain messages.
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut bytes = rsv1(client_frame(false, OP_BINARY, a));
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b));
        bytes.extend(client_frame(true, OP_TEXT, b"plain"));
        assert_eq!(
            read_all(&mut inflating(1 << 16), &bytes),
            Ok(vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Binary(Bytes::from(text)),
                Message::Text(Bytes::from_static(b"plain")),
            ])
        );
    }

    #[test]
    fn rsv1_outside_a_negotiated_data_message_is_a_protocol_error() {
        let compressed = client_deflate(b"hello hello hello");
        let data = rsv1(client_frame(true, OP_TEXT, &compressed));
        assert_eq!(
            read_all(&mut Reader::new(1024, 4), &data),
            Err(WsError::Protocol("reserved bits set"))
        );
        assert_eq!(
            read_all(
                &mut inflating(1024),
                &rsv1(client_frame(true, OP_PING, b""))
            ),
            Err(WsError::Protocol("compressed control frame"))
        );
        let mut continued = rsv1(client_frame(false, OP_TEXT, &compressed));
        continued.extend(rsv1(client_frame(true, OP_CONTINUATION, b"")));
        assert_eq!(
            read_all(&mut inflating(1024), &continued),
            Err(WsError::Protocol("RSV1 on a continuation frame"))
        );
        // RSV2 and RSV3 stay reserved.
        let mut rsv2 = client_frame(true, OP_TEXT, b"x");
        rsv2[0] |= 0x20;
        assert_eq!(
            read_all(&mut inflating(1024), &rsv2),
            Err(WsError::Protocol("reserved bits set"))
        );
        assert_eq!(WsError::Protocol("x").disconnect().code, 1002);
    }

    #[test]
    fn a_decompression_bomb_is_too_big_and_garbage_is_invalid() {
        // 1 MiB of spaces in about a kilobyte: within the limit on the wire,
        // far past it inflated.
        let bomb = client_deflate(&vec![b' '; 1 << 20]);
        assert!(bomb.len() < 2048, "{}", bomb.len());
        let frame = rsv1(client_frame(true, OP_TEXT, &bomb));
        let got = read_all(&mut inflating(65_536), &frame);
        assert_eq!(got, Err(WsError::TooBig));
        assert_eq!(WsError::TooBig.disconnect().code, 1009);
        let garbage = rsv1(client_frame(true, OP_TEXT, &[0xff; 8]));
        assert_eq!(
            read_all(&mut inflating(1024), &garbage),
            Err(WsError::BadDeflate)
        );
        // Inflated text must be UTF-8 too.
        let latin1 = rsv1(client_frame(true, OP_TEXT, &client_deflate(&[0xe9; 40])));
        assert_eq!(
            read_all(&mut inflating(1024), &latin1),
            Err(WsError::InvalidUtf8)
        );
    }

    #[test]
    fn a_shared_frame_is_compressed_once_for_everyone() {
        let deflate = Deflate::new(1, 0);
        let shared = DataFrame::text(&[b'a'; 300]).shared();
        let copy = shared.clone();
        let first = shared.deflated(&deflate);
        let second = copy.deflated(&deflate);
        assert_eq!(first.as_ptr(), second.as_ptr(), "one compressed buffer");
        assert_eq!(first[0], 0x80 | RSV1 | OP_TEXT);
        assert_eq!(
            deflate::inflate(&first[2..], 300).unwrap(),
            shared.payload()
        );
        // A frame for one connection is compressed each time it is asked.
        let own = DataFrame::text(&[b'a'; 300]);
        assert_ne!(
            own.deflated(&deflate).as_ptr(),
            own.deflated(&deflate).as_ptr()
        );
        // Another window: compressed for that connection, not from the cache.
        let narrow = deflate.with_window(9);
        assert_ne!(shared.deflated(&narrow).as_ptr(), first.as_ptr());
        // Not smaller: the plain frame goes.
        let tiny = DataFrame::text(b"{}").shared();
        assert_eq!(tiny.deflated(&deflate), tiny.as_bytes());
    }

    #[test]
    fn close_frames() {
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        let got = read_all(
            &mut Reader::new(1024, 4),
            &client_frame(true, OP_CLOSE, &body),
        );
        assert_eq!(got, Ok(vec![Message::Close(Some((1000, "bye".into())))]));
        let got = read_all(
            &mut Reader::new(1024, 4),
            &client_frame(true, OP_CLOSE, b""),
        );
        assert_eq!(got, Ok(vec![Message::Close(None)]));
        assert_eq!(WsError::InvalidUtf8.disconnect().code, 1007);
        assert_eq!(WsError::TooBig.disconnect().code, 1009);
        assert_eq!(WsError::Protocol("x").disconnect().code, 1002);
    }

    #[test]
    fn server_frames() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(server_header(OP_TEXT, 5, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(server_header(OP_TEXT, 300, &mut h), 4);
        assert_eq!(&h[..4], &[0x81, 126, 1, 44]);
        assert_eq!(server_header(OP_TEXT, 70_000, &mut h), 10);
        assert_eq!(&h[..2], &[0x81, 127]);
        let close = close_frame(3008, "slow");
        assert_eq!(&close[..], &[0x88, 6, 0x0b, 0xc0, b's', b'l', b'o', b'w']);
        let long = "é".repeat(100);
        let close = close_frame(3000, &long);
        assert!(close.len() <= 2 + 125);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
        assert_eq!(&pong_frame(b"ab")[..], &[0x8A, 2, b'a', b'b']);
    }

    #[test]
    fn text_frames_carry_their_payload_and_join() {
        for len in [0usize, 1, 125, 126, 65535, 65536] {
            let text = vec![b'x'; len];
            let frame = DataFrame::text(&text);
            assert_eq!(frame.payload(), &text[..], "len {len}");
            let mut h = [0u8; MAX_HEADER];
            let hl = server_header(OP_TEXT, len, &mut h);
            assert_eq!(&frame.as_bytes()[..hl], &h[..hl]);
        }
        let joined = DataFrame::join(&[DataFrame::text(b"{\"a\":1}"), DataFrame::text(b"{}")]);
        assert_eq!(joined.payload(), b"{\"a\":1}\n{}");
        assert_eq!(joined.as_bytes()[..2], [0x81, 10]);
        assert_eq!(joined, DataFrame::text(b"{\"a\":1}\n{}"));
        assert!(!joined.is_binary());
    }

    #[test]
    fn binary_frames_join_without_separators() {
        let a = DataFrame::binary(&[2, 8, 1]);
        let b = DataFrame::binary(&[0]);
        assert!(a.is_binary());
        assert_eq!(a.joined_len(), 3);
        assert_eq!(DataFrame::text(b"{}").joined_len(), 3);
        let joined = DataFrame::join(&[a, b]);
        assert_eq!(joined.as_bytes()[..], [0x82, 4, 2, 8, 1, 0]);
    }
}
