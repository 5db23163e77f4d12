//! The bench's WebSocket byte stream: a TCP stream that counts what it reads
//! (bytes on the wire, for bytes per delivery) and, with `--compression`,
//! undoes permessage-deflate (RFC 7692) under tungstenite, which has no
//! extensions: compressed server messages (RSV1) are inflated and handed up
//! as plain frames. The bench offers `permessage-deflate` with
//! `client_no_context_takeover` and sends its own messages uncompressed (the
//! RFC allows any message to go plain), so only the server's side is
//! compressed, which is what the fan-out measures.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The offer the bench sends with `--compression`.
pub(crate) const OFFER: &str = "permessage-deflate; client_no_context_takeover";

/// Bytes read from every WebSocket connection of the bench, handshakes included.
pub(crate) static WIRE_BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Most bytes one inflated message may take (the bench trusts its server,
/// but not without bound).
const MAX_MESSAGE: usize = 64 << 20;

const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A WebSocket connection's TCP stream (see the module).
pub(crate) struct Wire {
    tcp: TcpStream,
    inflater: Option<Box<Inflater>>,
}

impl Wire {
    pub(crate) fn new(tcp: TcpStream, compression: bool) -> Self {
        Self {
            tcp,
            inflater: compression.then(|| Box::new(Inflater::new())),
        }
    }
}

/// Rewrites the server's byte stream: the HTTP head as it is, then frames,
/// compressed messages inflated into plain frames.
struct Inflater {
    in_head: bool,
    /// Read and not yet parsed.
    raw: Vec<u8>,
    /// Rewritten bytes for tungstenite, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    /// A compressed message whose final frame has not come: opcode, bytes.
    message: Option<(u8, Vec<u8>)>,
    decompress: Decompress,
}

impl Inflater {
    fn new() -> Self {
        Self {
            in_head: true,
            raw: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
            message: None,
            decompress: Decompress::new(false),
        }
    }

    fn process(&mut self) -> io::Result<()> {
        if self.in_head {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            self.ready.extend(self.raw.drain(..end + 4));
            self.in_head = false;
        }
        let mut at = 0;
        while let Some((header_len, len)) = frame_len(&self.raw[at..]) {
            if self.raw.len() - at < header_len + len {
                break;
            }
            let b0 = self.raw[at];
            let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F);
            let payload = &self.raw[at + header_len..at + header_len + len];
            // Whether this frame ends a compressed message.
            let ends = if rsv1 {
                self.message = Some((opcode, payload.to_vec()));
                fin
            } else if let (0, Some((_, body))) = (opcode, self.message.as_mut()) {
                body.extend_from_slice(payload);
                fin
            } else {
                self.ready
                    .extend_from_slice(&self.raw[at..at + header_len + len]);
                false
            };
            if ends {
                if let Some((opcode, compressed)) = self.message.take() {
                    let plain = inflate(&mut self.decompress, &compressed)?;
                    push_frame(&mut self.ready, opcode, &plain);
                }
            }
            at += header_len + len;
        }
        self.raw.drain(..at);
        Ok(())
    }
}

/// A server frame's header length and payload length, once its header is there.
fn frame_len(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    match buf[1] & 0x7F {
        126 if buf.len() >= 4 => Some((4, usize::from(u16::from_be_bytes([buf[2], buf[3]])))),
        127 if buf.len() >= 10 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            Some((10, u64::from_be_bytes(be) as usize))
        }
        126 | 127 => None,
        n => Some((2, usize::from(n))),
    }
}

/// A final, unmasked frame of `opcode` carrying `payload`, as the server would send it plain.
fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// One message of a no-context-takeover stream.
fn inflate(decompress: &mut Decompress, compressed: &[u8]) -> io::Result<Vec<u8>> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("permessage-deflate: {what}"),
        )
    };
    decompress.reset(false);
    let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
    for input in [compressed, &SYNC_TAIL[..]] {
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_MESSAGE {
                    return Err(bad("message too large"));
                }
                out.reserve(out.len().max(1024));
            }
            let before = decompress.total_in();
            let status = decompress
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| bad("not a deflate stream"))?;
            consumed += (decompress.total_in() - before) as usize;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
    }
    Ok(out)
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inflater) = this.inflater.as_mut() else {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
            WIRE_BYTES_READ.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        };
        loop {
            if inflater.ready_at < inflater.ready.len() {
                let n = buf
                    .remaining()
                    .min(inflater.ready.len() - inflater.ready_at);
                buf.put_slice(&inflater.ready[inflater.ready_at..inflater.ready_at + n]);
                inflater.ready_at += n;
                if inflater.ready_at == inflater.ready.len() {
                    inflater.ready.clear();
                    inflater.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            WIRE_BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
            inflater.raw.extend_from_slice(read.filled());
            inflater.process()?;
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn compress(payload: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::new(1), false);
        let mut out = Vec::with_capacity(payload.len() + 64);
        c.compress_vec(payload, &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_frames_come_out_plain_and_others_unchanged() {
        let mut inflater = Inflater::new();
        let text = b"{\"push\":{\"channel\":\"bench\"}}".repeat(50);
        let compressed = compress(&text);
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        // A compressed message in two fragments around a ping, then a plain one.
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut first = Vec::new();
        push_frame(&mut first, 0x1, a);
        first[0] = 0x40 | 0x1; // RSV1, not final
        bytes.extend(first);
        push_frame(&mut bytes, 0x9, b"p");
        push_frame(&mut bytes, 0x0, b);
        push_frame(&mut bytes, 0x1, b"{}");
        // Fed a byte at a time.
        for byte in bytes {
            inflater.raw.push(byte);
            inflater.process().unwrap();
        }
        let mut want = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        push_frame(&mut want, 0x9, b"p");
        push_frame(&mut want, 0x1, &text);
        push_frame(&mut want, 0x1, b"{}");
        assert_eq!(inflater.ready, want);
        assert!(inflater.raw.is_empty());
    }
}
