//! The encoder: Fossil's published algorithm (www/delta_encoder_algorithm.wiki).

use crate::checksum::checksum;
use crate::number;

/// The block size, and the width of the rolling hash's window.
const NHASH: usize = 16;

/// How many source blocks with the same hash are tried at one target position.
const MAX_CANDIDATES: usize = 250;

/// No block in this hash-table slot (or at the end of a chain).
const NONE: u32 = u32::MAX;

/// A delta that turns `source` into `target`.
pub fn encode(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 4 + 16);
    encode_into(source, target, &mut out);
    out
}

/// [`encode`], appending to `out` (which is not cleared).
pub fn encode_into(source: &[u8], target: &[u8], out: &mut Vec<u8>) {
    number::write(out, target.len() as u64);
    out.push(b'\n');
    // Offsets are kept in u32 (the hash table's size); a source beyond
    // that is not indexed, and the target goes as one insert.
    if source.len() <= NHASH || source.len() >= NONE as usize {
        insert(out, target);
        trailer(out, target);
        return;
    }
    let index = SourceIndex::new(source);
    let mut base = 0usize;
    while base + NHASH < target.len() {
        let mut hash = RollingHash::new(&target[base..base + NHASH]);
        let mut i = 0usize;
        loop {
            if let Some(best) = index.best_match(source, target, base, i, hash.value()) {
                if best.literal > 0 {
                    insert(out, &target[base..base + best.literal]);
                    base += best.literal;
                }
                number::write(out, best.count as u64);
                out.push(b'@');
                number::write(out, best.offset as u64);
                out.push(b',');
                base += best.count;
                break;
            }
            if base + i + NHASH >= target.len() {
                // No match up to the end: the rest is one insert.
                insert(out, &target[base..]);
                base = target.len();
                break;
            }
            hash.roll(target[base + i + NHASH]);
            i += 1;
        }
    }
    if base < target.len() {
        insert(out, &target[base..]);
    }
    trailer(out, target);
}

fn insert(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    number::write(out, bytes.len() as u64);
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn trailer(out: &mut Vec<u8>, target: &[u8]) {
    number::write(out, u64::from(checksum(target)));
    out.push(b';');
}

/// A match worth a copy command.
struct Match {
    /// Target bytes before the match that go as an insert.
    literal: usize,
    count: usize,
    /// Where the match starts in the source.
    offset: usize,
}

/// The source's 16-byte blocks by hash: `heads[hash % len]` is the last
/// block with that hash, `chain[block]` the one before it.
struct SourceIndex {
    heads: Vec<u32>,
    chain: Vec<u32>,
}

impl SourceIndex {
    fn new(source: &[u8]) -> Self {
        let slots = source.len() / NHASH;
        let mut heads = vec![NONE; slots];
        let mut chain = vec![NONE; slots];
        let mut start = 0usize;
        while start + NHASH < source.len() {
            let block = start / NHASH;
            let slot = RollingHash::new(&source[start..start + NHASH]).value() as usize % slots;
            chain[block] = heads[slot];
            // block < slots <= u32::MAX (the caller bounds source.len()).
            heads[slot] = block as u32;
            start += NHASH;
        }
        Self { heads, chain }
    }

    /// The longest match for the window at `target[base + i..]` among the
    /// source blocks of its hash, if one is longer than its copy command.
    fn best_match(
        &self,
        source: &[u8],
        target: &[u8],
        base: usize,
        i: usize,
        hash: u32,
    ) -> Option<Match> {
        let mut best: Option<Match> = None;
        let mut block = self.heads[hash as usize % self.heads.len()];
        let mut tried = 0;
        while block != NONE && tried < MAX_CANDIDATES {
            tried += 1;
            let src = block as usize * NHASH;
            let at = base + i;
            let forward = source[src..]
                .iter()
                .zip(&target[at..])
                .take_while(|(a, b)| a == b)
                .count();
            // Back into the bytes before the window, not past `base` (what
            // precedes it is already encoded) nor the source's first byte.
            let backward = (1..src.min(i + 1))
                .take_while(|k| source[src - k] == target[at - k])
                .count();
            let count = forward + backward;
            let offset = src - backward;
            let literal = i - backward;
            let cost = number::digits(literal as u64)
                + number::digits(count as u64)
                + number::digits(offset as u64)
                + 3;
            if count as u64 >= cost && best.as_ref().is_none_or(|b| count > b.count) {
                best = Some(Match {
                    literal,
                    count,
                    offset,
                });
            }
            block = self.chain[block as usize];
        }
        best.filter(|b| b.count > 0)
    }
}

/// An Adler-like checksum of the last `NHASH` bytes, updated one byte at a time.
struct RollingHash {
    a: u16,
    b: u16,
    window: [u8; NHASH],
    at: usize,
}

impl RollingHash {
    fn new(bytes: &[u8]) -> Self {
        let mut window = [0u8; NHASH];
        window.copy_from_slice(&bytes[..NHASH]);
        let (mut a, mut b) = (0u16, 0u16);
        for (k, byte) in window.iter().enumerate() {
            a = a.wrapping_add(u16::from(*byte));
            b = b.wrapping_add(((NHASH - k) as u16).wrapping_mul(u16::from(*byte)));
        }
        Self {
            a,
            b,
            window,
            at: 0,
        }
    }

    /// Slides the window one byte: `byte` enters, the oldest leaves.
    fn roll(&mut self, byte: u8) {
        let old = self.window[self.at];
        self.window[self.at] = byte;
        self.at = (self.at + 1) % NHASH;
        self.a = self
            .a
            .wrapping_sub(u16::from(old))
            .wrapping_add(u16::from(byte));
        self.b = self
            .b
            .wrapping_sub((NHASH as u16).wrapping_mul(u16::from(old)))
            .wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        u32::from(self.a) | (u32::from(self.b) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_equals_fresh() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let mut rolling = RollingHash::new(&data[..NHASH]);
        for start in 1..data.len() - NHASH {
            rolling.roll(data[start + NHASH - 1]);
            assert_eq!(
                rolling.value(),
                RollingHash::new(&data[start..]).value(),
                "{start}"
            );
        }
    }

    #[test]
    fn small_sources_give_one_insert() {
        assert_eq!(encode(b"abc", b"abcd"), b"4\n4:abcd1XObD_;".to_vec());
        assert_eq!(encode(b"", b""), b"0\n0;".to_vec());
    }
}
