//! permessage-deflate (RFC 7692) messages, without I/O: compressing one
//! server message and inflating one client message.
//!
//! herald always negotiates no context takeover in both directions
//! (`ws/offer.rs`), so every message is a deflate stream of its own: a
//! server message compressed once can go to every connection that
//! negotiated the same window, and a client message is inflated from a
//! fresh state. The compressor and the inflater are per thread and reset for
//! each message, so an idle connection holds no compression state at all.
//!
//! Inflating is capped: output stops one byte past the message size limit
//! ([`InflateError::TooBig`], close 1009), so a small message that would
//! inflate to gigabytes costs at most the limit.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::header::{header_with, MAX_HEADER};

/// What a sync flush ends with; RFC 7692 §7.2.1 removes it from a
/// compressed message and §7.2.2 puts it back before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The RSV1 bit of a frame's first byte: "this message is compressed".
pub(crate) const RSV1: u8 = 0x40;

/// The window herald compresses with unless a client asked for less
/// (`server_max_window_bits`); also the one shared compressed frames use.
pub(crate) const DEFAULT_WINDOW_BITS: u8 = 15;

/// Output grows in steps of at most this while inflating.
const INFLATE_STEP: usize = 16 * 1024;

/// How one connection compresses what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// zlib level, 0–9 (`websocket.compression_level`; -1 in the config is 6).
    pub(crate) level: u32,
    /// The LZ77 window, 9–15 (`server_max_window_bits`).
    pub(crate) window_bits: u8,
    /// Messages with fewer payload bytes go uncompressed
    /// (`websocket.compression_min_size`).
    pub(crate) min_size: usize,
    /// Compressed even when that is not smaller (the conformance echo:
    /// Autobahn's cases expect every message of a compressed connection
    /// compressed, as its reference peers do). Otherwise such a message
    /// goes plain.
    pub(crate) even_if_larger: bool,
}

impl Deflate {
    /// The node's settings: `level`, `min_size`, the default window.
    pub(crate) fn new(level: u32, min_size: usize) -> Self {
        Self {
            level,
            window_bits: DEFAULT_WINDOW_BITS,
            min_size,
            even_if_larger: false,
        }
    }

    /// The same, compressing every message even when it does not shrink.
    pub(crate) fn even_if_larger(self) -> Self {
        Self {
            even_if_larger: true,
            ..self
        }
    }

    /// The node's settings with the window the handshake agreed on.
    pub(crate) fn with_window(self, window_bits: u8) -> Self {
        Self {
            window_bits,
            ..self
        }
    }

    /// Whether a message of `payload_len` bytes is compressed.
    pub(crate) fn wants(&self, payload_len: usize) -> bool {
        payload_len >= self.min_size
    }

    /// Whether compressed frames made with these settings are the node's
    /// shared ones (the default window, and the node's rule for messages
    /// that do not shrink; the level is one per node).
    pub(crate) fn shares_frames(&self) -> bool {
        self.window_bits == DEFAULT_WINDOW_BITS && !self.even_if_larger
    }
}

thread_local! {
    /// One compressor per (level, window) this thread has used; reset per message.
    static COMPRESSORS: RefCell<Vec<(u32, u8, Compress)>> = const { RefCell::new(Vec::new()) };
    /// The inflater of this thread (raw deflate, 15-bit window: inflates
    /// whatever window a client compressed with); reset per message.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A whole server frame (FIN, RSV1, `opcode`) carrying `payload`
/// compressed; None when compressing does not make it smaller (the message
/// then goes as it is, which RFC 7692 §6 allows for any message).
pub(crate) fn compress_frame(opcode: u8, payload: &[u8], deflate: &Deflate) -> Option<Bytes> {
    let compressed = compress(payload, deflate)?;
    let mut header = [0u8; MAX_HEADER];
    let header_len = header_with(0x80 | RSV1 | opcode, compressed.len(), &mut header);
    let mut frame = Vec::with_capacity(header_len + compressed.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(&compressed);
    Some(Bytes::from(frame))
}

/// `payload` as one raw deflate stream ending in a sync flush without its
/// four-byte tail; None when that is not shorter than `payload` (unless
/// `even_if_larger`).
fn compress(payload: &[u8], deflate: &Deflate) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let index = match compressors
            .iter()
            .position(|(l, w, _)| *l == deflate.level && *w == deflate.window_bits)
        {
            Some(i) => i,
            None => {
                let window = deflate.window_bits.clamp(9, 15);
                let compress =
                    Compress::new_with_window_bits(Compression::new(deflate.level), false, window);
                compressors.push((deflate.level, deflate.window_bits, compress));
                compressors.len() - 1
            }
        };
        let compressor = &mut compressors[index].2;
        compressor.reset();
        // Anything not shorter than the payload is thrown away, so the
        // output never needs more room than this; deflate's worst case
        // (stored blocks) is a few bytes per 16 KiB more than the payload.
        let room = if deflate.even_if_larger {
            payload.len() + payload.len() / 1024 + 64
        } else {
            payload.len() + SYNC_TAIL.len() + 8
        };
        let mut out = Vec::with_capacity(room);
        let mut consumed = 0usize;
        loop {
            let before = compressor.total_in();
            let result =
                compressor.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync);
            if result.is_err() {
                return None;
            }
            consumed += (compressor.total_in() - before) as usize;
            // Done once all input is in and the flush left room to spare.
            if consumed == payload.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() == out.capacity() {
                if !deflate.even_if_larger {
                    // Full: the compressed form is not going to be shorter.
                    return None;
                }
                out.reserve(1024);
            }
        }
        if !out.ends_with(&SYNC_TAIL) {
            return None;
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        (deflate.even_if_larger || out.len() < payload.len()).then_some(out)
    })
}

/// Why a compressed client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the message size limit (close 1009).
    TooBig,
    /// It is not a deflate stream (close 1007).
    Corrupt,
}

/// Inflates one client message (its frames' payloads joined), stopping as
/// soon as the output passes `limit` bytes.
pub(crate) fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflater = slot.get_or_insert_with(|| Decompress::new(false));
        inflater.reset(false);
        let cap = limit.saturating_add(1);
        let mut out: Vec<u8> = Vec::new();
        for input in [compressed, &SYNC_TAIL[..]] {
            let mut consumed = 0usize;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= cap {
                        return Err(InflateError::TooBig);
                    }
                    let step = out.len().clamp(1024, INFLATE_STEP).min(cap - out.len());
                    out.reserve_exact(step);
                }
                let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
                let status = inflater
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                consumed += (inflater.total_in() - in_before) as usize;
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    // A final block (BFINAL): whatever follows is not part of it.
                    return Ok(out);
                }
                let progressed =
                    inflater.total_in() != in_before || inflater.total_out() != out_before;
                if consumed == input.len() && out.len() < out.capacity() {
                    break;
                }
                if !progressed && out.len() < out.capacity() {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(level: u32) -> Deflate {
        Deflate::new(level, 0)
    }

    #[test]
    fn compressed_messages_inflate_back() {
        let text: Vec<u8> = (0..20_000)
            .map(|i| b"{\"channel\":\"news\",\"n\":"[i % 22])
            .collect();
        for level in [0, 1, 6, 9] {
            for window in [9u8, 12, 15] {
                let deflate = node(level).with_window(window);
                let Some(compressed) = compress(&text, &deflate) else {
                    assert_eq!(level, 0, "level {level} should shrink repeated text");
                    continue;
                };
                assert!(compressed.len() < text.len() / 4 || level == 0);
                assert_eq!(inflate(&compressed, 1 << 20).unwrap(), text);
            }
        }
    }

    #[test]
    fn every_message_is_independent() {
        // No context takeover: the same input compresses to the same bytes
        // whatever came before, so one compressed frame serves everyone.
        let deflate = node(1);
        let a = compress(&[b'x'; 500], &deflate).unwrap();
        let _ = compress(b"something else entirely, something else", &deflate);
        assert_eq!(compress(&[b'x'; 500], &deflate).unwrap(), a);
    }

    #[test]
    fn incompressible_or_tiny_payloads_stay_plain() {
        assert_eq!(compress(b"{}", &node(1)), None);
        // xorshift64: bytes deflate cannot shrink.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress(&noise, &node(9)), None);
        // The echo's rule: compressed all the same, and still inflates.
        let larger = compress(&noise, &node(9).even_if_larger()).unwrap();
        assert!(larger.len() >= noise.len());
        assert_eq!(inflate(&larger, 1 << 20).unwrap(), noise);
        assert!(compress(b"{}", &node(1).even_if_larger()).is_some());
    }

    #[test]
    fn frames_carry_rsv1_and_the_compressed_length() {
        let payload = vec![b'a'; 1000];
        let frame = compress_frame(0x1, &payload, &node(1)).unwrap();
        assert_eq!(frame[0], 0x80 | RSV1 | 0x1);
        let len = usize::from(frame[1]);
        assert_eq!(frame.len(), 2 + len);
        assert_eq!(inflate(&frame[2..], 1000).unwrap(), payload);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 10 MiB of zeros compress to about 10 KiB.
        let bomb = compress(&vec![0u8; 10 << 20], &node(9)).unwrap();
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 65_536), Err(InflateError::TooBig));
        // Exactly at the limit is fine.
        let fits = compress(&[0u8; 65_536], &node(9)).unwrap();
        assert_eq!(inflate(&fits, 65_536).unwrap().len(), 65_536);
        assert_eq!(inflate(&fits, 65_535), Err(InflateError::TooBig));
    }

    #[test]
    fn garbage_is_corrupt_and_empty_is_empty() {
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 1000),
            Err(InflateError::Corrupt)
        );
        // An empty message compresses to one empty stored block (00) or
        // nothing; both inflate to nothing.
        assert_eq!(inflate(&[0x00], 1000).unwrap(), b"");
        assert_eq!(inflate(&[], 1000).unwrap(), b"");
        // A final block (BFINAL) followed by nothing more.
        let mut c = Compress::new(Compression::new(6), false);
        let mut out = Vec::with_capacity(64);
        c.compress_vec(b"hello", &mut out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate(&out, 1000).unwrap(), b"hello");
    }
}
