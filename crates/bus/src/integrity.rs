//! Signed envelopes for everything a node puts on Redis pub/sub.
//!
//! Redis is a hop anyone with Redis access can read and write, so a node
//! does not trust what arrives from it: with a bus keyring configured, every
//! message carries an HMAC-SHA256 tag over the key id, the sending node's id
//! and boot id, a per-boot sequence number, a timestamp, the Redis channel it
//! was published on and the message body, and is checked before its body is
//! decoded. The layout, after the `s1:` marker:
//!
//! ```text
//! kid_len u8 | kid | node_len u8 | node | boot [16] | seq u64 BE | ts_ms u64 BE | tag [32] | inner
//! ```
//!
//! `inner` is the unsigned message (`p1:…`, `j1:…`, `l1:…`, `c1:…`). The tag
//! covers its kind and its last field (the JSON); a publication's offset and
//! epoch are written by the Lua publish script after signing and are not
//! covered — a forged copy still fails: the body's tag binds the sequence
//! number, which the replay window accepts once per node.
//!
//! With sealed history the publishing node knows the offset and epoch before
//! the script runs (the script refuses any other position), so it signs them
//! too: such envelopes start with `s2:` (same layout, another MAC domain) and
//! their tag covers everything after the kind, `offset:epoch:body`. Changing
//! the marker changes the domain, so neither form passes for the other.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use parking_lot::Mutex;
use zeroize::Zeroizing;

/// Marks a signed envelope.
const MARKER: &[u8] = b"s1:";

/// Marks a signed envelope whose tag also covers a publication's position.
const MARKER_POSITIONED: &[u8] = b"s2:";

/// Bytes of the MAC.
const TAG_LEN: usize = 32;

/// Domain separation of the MAC input.
const DOMAIN: &[u8] = b"herald-bus-envelope-v1\0";

/// Domain of `s2:` envelopes.
const DOMAIN_POSITIONED: &[u8] = b"herald-bus-envelope-v2\0";

/// Envelopes older or newer than this (sender clock against ours) are stale.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;

/// Sequence numbers tracked per sender boot: a message may arrive this many
/// sends late (other channels travel on other connections) and still count.
const REPLAY_WINDOW: u64 = 1 << 16;

/// Sender boots tracked at once; the least recently heard is forgotten.
const MAX_SENDERS: usize = 4096;

/// Shortest key accepted (RFC 2104: at least the hash output).
pub const MIN_KEY_LEN: usize = 32;

/// Why an envelope was dropped; labels of `herald_bus_rejected_envelopes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No signature while the keyring requires one.
    Unsigned,
    /// Signed with a key id this node does not hold.
    UnknownKey,
    /// The tag does not match (tampered, wrong key, or another channel).
    BadMac,
    /// The timestamp is outside the allowed clock skew.
    Stale,
    /// This sender's sequence number was seen already (or is too old).
    Replay,
    /// Not a well-formed envelope.
    Malformed,
}

impl Rejection {
    /// Every reason, for pre-initialised metric labels.
    pub const ALL: [Rejection; 6] = [
        Self::Unsigned,
        Self::UnknownKey,
        Self::BadMac,
        Self::Stale,
        Self::Replay,
        Self::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UnknownKey => "unknown_key",
            Self::BadMac => "bad_mac",
            Self::Stale => "stale",
            Self::Replay => "replay",
            Self::Malformed => "malformed",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bad keyring (the message names the key id, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyringError(String);

impl KeyringError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The active key (if `active` is not empty) and every key by id, each made
/// by `make` from its id and bytes; ids are 1 to 255 bytes and unique, and the
/// active one must be among them. Shared by the bus and history keyrings.
pub(crate) type Ring<K> = (Option<(String, K)>, HashMap<String, K>);

pub(crate) fn build_keyring<K: Clone>(
    kind: &str,
    active: &str,
    keys: impl IntoIterator<Item = (String, Zeroizing<Vec<u8>>)>,
    make: impl Fn(&str, &[u8]) -> Result<K, KeyringError>,
) -> Result<Ring<K>, KeyringError> {
    let mut ring = HashMap::new();
    for (id, bytes) in keys {
        if id.is_empty() || id.len() > usize::from(u8::MAX) {
            return Err(KeyringError(format!(
                "a {kind} key id must be 1 to 255 bytes"
            )));
        }
        if ring.contains_key(&id) {
            return Err(KeyringError(format!("{kind} key {id:?} given twice")));
        }
        let key = make(&id, &bytes)?;
        ring.insert(id, key);
    }
    let active = match active {
        "" => None,
        id => {
            let key = ring.get(id).ok_or_else(|| {
                KeyringError(format!(
                    "the active {kind} key {id:?} is not among the keys"
                ))
            })?;
            Some((id.to_owned(), key.clone()))
        }
    };
    Ok((active, ring))
}

/// One key: its id and secret (zeroized when dropped).
pub struct BusKey {
    pub id: String,
    pub secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for BusKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys a node signs and verifies with: one active key (or none:
/// signing off) and any number of verify-only keys.
pub struct BusKeyring {
    active: Option<(String, hmac::Key)>,
    verify: HashMap<String, hmac::Key>,
}

impl fmt::Debug for BusKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.verify.keys().collect();
        ids.sort();
        f.debug_struct("BusKeyring")
            .field("active", &self.active.as_ref().map(|(id, _)| id))
            .field("keys", &ids)
            .finish()
    }
}

impl BusKeyring {
    /// No keys: messages go unsigned and unsigned ones are accepted.
    pub fn off() -> Self {
        Self {
            active: None,
            verify: HashMap::new(),
        }
    }

    /// Builds the keyring; `active` empty = sign nothing (but still verify
    /// and require signatures when there are keys: the first rotation step
    /// of a new deployment distributes keys before anyone signs).
    pub fn new(active: &str, keys: Vec<BusKey>) -> Result<Self, KeyringError> {
        let keys = keys.into_iter().map(|key| (key.id, key.secret));
        let (active, verify) = build_keyring("bus", active, keys, |id, secret| {
            if secret.len() < MIN_KEY_LEN {
                return Err(KeyringError(format!(
                    "bus key {id:?}: at least {MIN_KEY_LEN} bytes"
                )));
            }
            Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
        })?;
        Ok(Self { active, verify })
    }

    /// The active key id, if signing is on.
    pub fn active_id(&self) -> Option<&str> {
        self.active.as_ref().map(|(id, _)| id.as_str())
    }

    /// All key ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.verify.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// With any key, unsigned messages are refused.
    pub fn requires_signatures(&self) -> bool {
        !self.verify.is_empty()
    }
}

/// One sender boot: node id and boot id.
type Sender = (Vec<u8>, [u8; 16]);

/// A node's signing and verifying state: its keyring (swapped on reload),
/// its identity and sequence, and the replay windows of its peers.
pub struct Integrity {
    keyring: ArcSwap<BusKeyring>,
    node: Vec<u8>,
    boot: [u8; 16],
    seq: AtomicU64,
    windows: Mutex<HashMap<Sender, Window>>,
}

impl fmt::Debug for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Integrity")
            .field("keyring", &self.keyring.load())
            .finish_non_exhaustive()
    }
}

impl Integrity {
    /// `node`: the node's id as other nodes know it.
    pub fn new(keyring: BusKeyring, node: &str) -> Arc<Self> {
        let mut boot = [0u8; 16];
        aws_lc_rs::rand::fill(&mut boot).expect("the system random generator works");
        Arc::new(Self {
            keyring: ArcSwap::from_pointee(keyring),
            node: node.as_bytes()[..node.len().min(255)].to_vec(),
            boot,
            // From 1: 0 never appears, which keeps the window arithmetic plain.
            seq: AtomicU64::new(1),
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the keyring (reload); envelopes in flight are checked
    /// against whichever ring is current when they arrive.
    pub fn reload(&self, keyring: BusKeyring) {
        self.keyring.store(Arc::new(keyring));
    }

    /// The current keyring.
    pub fn keyring(&self) -> Arc<BusKeyring> {
        self.keyring.load_full()
    }

    /// The `s1:` prefix that signs `inner` for `channel` (the Redis channel
    /// name); empty when signing is off. `inner` is the unsigned message,
    /// except for a publication whose header the Lua script writes: then
    /// pass `p1:` followed by the body.
    pub fn sign(&self, channel: &[u8], kind: &[u8], body: &[u8], now_ms: u64) -> Vec<u8> {
        self.sign_parts(MARKER, DOMAIN, channel, kind, &[body], now_ms)
    }

    /// The `s2:` prefix of a publication the script will write as
    /// `p1:<offset>:<epoch>:<body>`: the tag covers the position too. Only for
    /// a position the script enforces (sealed history); empty when signing
    /// is off.
    pub fn sign_positioned(
        &self,
        channel: &[u8],
        offset: u64,
        epoch: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Vec<u8> {
        let offset = offset.to_string();
        let parts: [&[u8]; 5] = [offset.as_bytes(), b":", epoch.as_bytes(), b":", body];
        self.sign_parts(
            MARKER_POSITIONED,
            DOMAIN_POSITIONED,
            channel,
            b"p1",
            &parts,
            now_ms,
        )
    }

    fn sign_parts(
        &self,
        marker: &[u8],
        domain: &[u8],
        channel: &[u8],
        kind: &[u8],
        body: &[&[u8]],
        now_ms: u64,
    ) -> Vec<u8> {
        let keyring = self.keyring.load();
        let Some((kid, key)) = &keyring.active else {
            return Vec::new();
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut out =
            Vec::with_capacity(marker.len() + 2 + kid.len() + self.node.len() + 32 + TAG_LEN);
        out.extend_from_slice(marker);
        out.push(kid.len() as u8);
        out.extend_from_slice(kid.as_bytes());
        out.push(self.node.len() as u8);
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&self.boot);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&now_ms.to_be_bytes());
        let header_end = out.len();
        let tag = mac(
            key,
            domain,
            &out[marker.len()..header_end],
            channel,
            kind,
            body,
        );
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Whether `payload` has to go through [`Integrity::open`]: it is signed,
    /// or this node requires signatures. Without keys an unsigned message
    /// passes as it is (no channel name needs computing for it).
    pub fn needs_check(&self, payload: &[u8]) -> bool {
        payload.starts_with(MARKER)
            || payload.starts_with(MARKER_POSITIONED)
            || self.keyring.load().requires_signatures()
    }

    /// Checks an envelope that arrived on `channel` and returns the unsigned
    /// message inside, before anything of it is decoded.
    pub fn open<'a>(
        &self,
        channel: &[u8],
        payload: &'a [u8],
        now_ms: u64,
    ) -> Result<&'a [u8], Rejection> {
        let keyring = self.keyring.load();
        let (signed, positioned) = if let Some(signed) = payload.strip_prefix(MARKER) {
            (signed, false)
        } else if let Some(signed) = payload.strip_prefix(MARKER_POSITIONED) {
            (signed, true)
        } else {
            return if keyring.requires_signatures() {
                Err(Rejection::Unsigned)
            } else {
                Ok(payload)
            };
        };
        let header = Header::parse(signed).ok_or(Rejection::Malformed)?;
        let key = keyring
            .verify
            .get(std::str::from_utf8(header.kid).map_err(|_| Rejection::UnknownKey)?)
            .ok_or(Rejection::UnknownKey)?;
        let (kind, body, domain) = if positioned {
            let (kind, rest) = split_kind(header.inner).ok_or(Rejection::Malformed)?;
            (kind, rest, DOMAIN_POSITIONED)
        } else {
            let (kind, body) = split_inner(header.inner).ok_or(Rejection::Malformed)?;
            (kind, body, DOMAIN)
        };
        let mut message = Vec::with_capacity(header.signed.len() + channel.len() + body.len() + 64);
        mac_prefix(&mut message, domain, header.signed, channel, kind);
        message.extend_from_slice(body);
        hmac::verify(key, &message, header.tag).map_err(|_| Rejection::BadMac)?;
        if now_ms.abs_diff(header.ts_ms) > MAX_CLOCK_SKEW_MS {
            return Err(Rejection::Stale);
        }
        self.admit(header.node, header.boot, header.seq)?;
        Ok(header.inner)
    }

    fn admit(&self, node: &[u8], boot: [u8; 16], seq: u64) -> Result<(), Rejection> {
        let mut windows = self.windows.lock();
        if windows.len() >= MAX_SENDERS && !windows.contains_key(&(node.to_vec(), boot)) {
            let oldest = windows
                .iter()
                .min_by_key(|(_, w)| w.heard)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                windows.remove(&oldest);
            }
        }
        let heard = self.seq.load(Ordering::Relaxed);
        let window = windows
            .entry((node.to_vec(), boot))
            .or_insert_with(Window::new);
        window.heard = heard;
        if window.accept(seq) {
            Ok(())
        } else {
            Err(Rejection::Replay)
        }
    }
}

struct Header<'a> {
    /// kid..ts_ms: the part the tag covers (with channel and body).
    signed: &'a [u8],
    kid: &'a [u8],
    node: &'a [u8],
    boot: [u8; 16],
    seq: u64,
    ts_ms: u64,
    tag: &'a [u8],
    inner: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let (&kid_len, rest) = bytes.split_first()?;
        let (kid, rest) = rest.split_at_checked(usize::from(kid_len))?;
        let (&node_len, rest) = rest.split_first()?;
        let (node, rest) = rest.split_at_checked(usize::from(node_len))?;
        let (boot, rest) = rest.split_first_chunk::<16>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (ts, rest) = rest.split_first_chunk::<8>()?;
        let signed_len = bytes.len() - rest.len();
        let (tag, inner) = rest.split_at_checked(TAG_LEN)?;
        Some(Self {
            signed: &bytes[..signed_len],
            kid,
            node,
            boot: *boot,
            seq: u64::from_be_bytes(*seq),
            ts_ms: u64::from_be_bytes(*ts),
            tag,
            inner,
        })
    }
}

/// The kind (`p1`, `j1`, …) and the body the tag covers: the last field,
/// after the offset and epoch of a publication.
pub(crate) fn split_inner(inner: &[u8]) -> Option<(&[u8], &[u8])> {
    let (kind, rest) = split_kind(inner)?;
    if kind == b"p1" {
        let mut fields = rest.splitn(3, |b| *b == b':');
        let (_offset, _epoch, body) = (fields.next()?, fields.next()?, fields.next()?);
        Some((kind, body))
    } else {
        Some((kind, rest))
    }
}

/// The kind (`p1`, `j1`, …) and everything after its `:`.
fn split_kind(inner: &[u8]) -> Option<(&[u8], &[u8])> {
    let (kind, rest) = inner.split_at_checked(2)?;
    Some((kind, rest.strip_prefix(b":")?))
}

/// The tag over the prefix and `body`, the concatenation of its parts.
fn mac(
    key: &hmac::Key,
    domain: &[u8],
    signed: &[u8],
    channel: &[u8],
    kind: &[u8],
    body: &[&[u8]],
) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    let mut prefix = Vec::with_capacity(domain.len() + signed.len() + channel.len() + 8);
    mac_prefix(&mut prefix, domain, signed, channel, kind);
    context.update(&prefix);
    for part in body {
        context.update(part);
    }
    context.sign()
}

/// Everything before the body is length-prefixed (the body is last), so no
/// two inputs share an encoding.
fn mac_prefix(out: &mut Vec<u8>, domain: &[u8], signed: &[u8], channel: &[u8], kind: &[u8]) {
    out.extend_from_slice(domain);
    out.extend_from_slice(signed);
    out.extend_from_slice(&(channel.len() as u32).to_be_bytes());
    out.extend_from_slice(channel);
    out.extend_from_slice(&(kind.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
}

/// Which sequence numbers of one sender boot were seen.
struct Window {
    top: u64,
    bits: Box<[u64]>,
    /// Our own sequence when last heard from: an age for eviction.
    heard: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            top: 0,
            bits: vec![0; (REPLAY_WINDOW / 64) as usize].into_boxed_slice(),
            heard: 0,
        }
    }

    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let slot = (seq % REPLAY_WINDOW) as usize;
        (&mut self.bits[slot / 64], 1 << (slot % 64))
    }

    fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            // Clear the slots the window slides over.
            let advance = seq - self.top;
            if advance >= REPLAY_WINDOW {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.top + 1..=seq {
                    let (word, mask) = self.bit(s);
                    *word &= !mask;
                }
            }
            self.top = seq;
        } else if self.top - seq >= REPLAY_WINDOW {
            return false;
        }
        let (word, mask) = self.bit(seq);
        if *word & mask != 0 {
            return false;
        }
        *word |= mask;
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const CHANNEL: &[u8] = b"herald.client.{news}";

    fn key(id: &str, byte: u8) -> BusKey {
        BusKey {
            id: id.into(),
            secret: Zeroizing::new(vec![byte; 32]),
        }
    }

    fn ring(active: &str, ids: &[(&str, u8)]) -> BusKeyring {
        BusKeyring::new(active, ids.iter().map(|(id, b)| key(id, *b)).collect()).unwrap()
    }

    fn envelope(node: &Integrity, inner: &[u8], now: u64) -> Vec<u8> {
        let (kind, body) = split_inner(inner).unwrap();
        let mut out = node.sign(CHANNEL, kind, body, now);
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn a_signed_envelope_opens_once() {
        let a = Integrity::new(ring("k1", &[("k1", 1)]), "node-a");
        let b = Integrity::new(ring("k1", &[("k1", 1)]), "node-b");
        for inner in [
            &b"p1:7:epoch:{\"data\":1}"[..],
            b"p1:0::{}",
            b"j1:{\"user\":\"u\"}",
            b"c1:{}",
        ] {
            let sealed = envelope(&a, inner, NOW);
            assert_eq!(b.open(CHANNEL, &sealed, NOW), Ok(inner), "{inner:?}");
            assert_eq!(b.open(CHANNEL, &sealed, NOW), Err(Rejection::Replay));
        }
    }

    /// A positioned envelope as the Lua script completes it: the node signs
    /// the position, the script writes it.
    fn positioned(node: &Integrity, offset: u64, epoch: &str, body: &str, now: u64) -> Vec<u8> {
        let mut out = node.sign_positioned(CHANNEL, offset, epoch, body.as_bytes(), now);
        out.extend_from_slice(format!("p1:{offset}:{epoch}:{body}").as_bytes());
        out
    }

    #[test]
    fn a_positioned_envelope_binds_offset_and_epoch() {
        let a = Integrity::new(ring("k1", &[("k1", 1)]), "node-a");
        let body = "{\"data\":1}";
        let inner = format!("p1:7:ep:{body}");
        let sealed = positioned(&a, 7, "ep", body, NOW);
        assert!(sealed.starts_with(b"s2:"));
        let b = Integrity::new(ring("k1", &[("k1", 1)]), "node-b");
        assert_eq!(b.open(CHANNEL, &sealed, NOW), Ok(inner.as_bytes()));

        // Each copy goes to a node that never saw the original (no replay).
        // The inner message is the envelope's tail: rewrite it there.
        let replace = |from: &str, to: &str| {
            let head = sealed.len() - inner.len();
            let mut bytes = sealed[..head].to_vec();
            bytes.extend_from_slice(inner.replacen(from, to, 1).as_bytes());
            bytes
        };
        let fresh = |name: &str| Integrity::new(ring("k1", &[("k1", 1)]), name);
        for (what, copy) in [
            ("another offset", replace("p1:7:", "p1:8:")),
            ("another epoch", replace(":ep:", ":eq:")),
            ("marked s1 (the position unsigned)", {
                let mut c = sealed.clone();
                c[1] = b'1';
                c
            }),
        ] {
            assert_eq!(
                fresh("node-c").open(CHANNEL, &copy, NOW),
                Err(Rejection::BadMac),
                "{what}"
            );
        }
        // And an s1 envelope does not pass as s2.
        let mut plain = envelope(&a, inner.as_bytes(), NOW);
        plain[1] = b'2';
        assert_eq!(
            fresh("node-d").open(CHANNEL, &plain, NOW),
            Err(Rejection::BadMac)
        );
    }

    #[test]
    fn rejections_table() {
        let a = Integrity::new(ring("k1", &[("k1", 1)]), "node-a");
        let b = Integrity::new(ring("", &[("k1", 1)]), "node-b");
        let other_key = Integrity::new(ring("k1", &[("k1", 2)]), "node-c");
        let unknown = Integrity::new(ring("k9", &[("k9", 1)]), "node-d");
        let inner = b"p1:1:e:{\"data\":\"x\"}";
        type Case<'a> = (&'a str, Vec<u8>, &'a [u8], u64, Rejection);
        let cases: Vec<Case<'_>> = vec![
            (
                "unsigned",
                inner.to_vec(),
                CHANNEL,
                NOW,
                Rejection::Unsigned,
            ),
            (
                "another secret",
                envelope(&other_key, inner, NOW),
                CHANNEL,
                NOW,
                Rejection::BadMac,
            ),
            (
                "unknown key id",
                envelope(&unknown, inner, NOW),
                CHANNEL,
                NOW,
                Rejection::UnknownKey,
            ),
            (
                "another channel",
                envelope(&a, inner, NOW),
                b"herald.client.{sport}",
                NOW,
                Rejection::BadMac,
            ),
            (
                "too old",
                envelope(&a, inner, NOW - 31_000),
                CHANNEL,
                NOW,
                Rejection::Stale,
            ),
            (
                "from the future",
                envelope(&a, inner, NOW + 31_000),
                CHANNEL,
                NOW,
                Rejection::Stale,
            ),
            (
                "truncated",
                b"s1:\x02k1".to_vec(),
                CHANNEL,
                NOW,
                Rejection::Malformed,
            ),
            (
                "no inner",
                {
                    let mut e = envelope(&a, inner, NOW);
                    e.truncate(e.len() - inner.len());
                    e
                },
                CHANNEL,
                NOW,
                Rejection::Malformed,
            ),
        ];
        for (name, payload, channel, now, want) in cases {
            assert_eq!(b.open(channel, &payload, now), Err(want), "{name}");
        }
        // A body swapped under a good header: the tag covers the body.
        let mut swapped = envelope(&a, inner, NOW);
        let at = swapped.len() - 3;
        swapped[at] ^= 0x20;
        assert_eq!(b.open(CHANNEL, &swapped, NOW), Err(Rejection::BadMac));
        // Signing off and no keys: unsigned passes, as before integrity.
        let open = Integrity::new(BusKeyring::off(), "node-e");
        assert_eq!(open.open(CHANNEL, inner, NOW), Ok(&inner[..]));
        assert!(open.sign(CHANNEL, b"p1", b"{}", NOW).is_empty());
    }

    #[test]
    fn three_step_rotation_never_rejects() {
        // Step 0: both on k1. Step 1: k2 added everywhere (k1 active).
        // Step 2: k2 active on one node, then the other. Step 3: k1 removed.
        let steps: [(&str, &[(&str, u8)]); 4] = [
            ("k1", &[("k1", 1)]),
            ("k1", &[("k1", 1), ("k2", 2)]),
            ("k2", &[("k1", 1), ("k2", 2)]),
            ("k2", &[("k2", 2)]),
        ];
        let a = Integrity::new(ring("k1", &[("k1", 1)]), "a");
        let b = Integrity::new(ring("k1", &[("k1", 1)]), "b");
        for (step, (active, keys)) in steps.iter().enumerate() {
            // a moves first; b lags one step behind in between.
            a.reload(ring(active, keys));
            let lagging = &steps[step.saturating_sub(1)];
            b.reload(ring(lagging.0, lagging.1));
            for (from, to) in [(&a, &b), (&b, &a)] {
                let sealed = envelope(from, b"j1:{}", NOW);
                assert!(to.open(CHANNEL, &sealed, NOW).is_ok(), "step {step}");
            }
            b.reload(ring(active, keys));
            for (from, to) in [(&a, &b), (&b, &a)] {
                let sealed = envelope(from, b"j1:{}", NOW);
                assert!(
                    to.open(CHANNEL, &sealed, NOW).is_ok(),
                    "step {step}, both moved"
                );
            }
        }
        // After step 3 a k1 envelope is refused.
        let old = Integrity::new(ring("k1", &[("k1", 1)]), "old");
        assert_eq!(
            b.open(CHANNEL, &envelope(&old, b"j1:{}", NOW), NOW),
            Err(Rejection::UnknownKey)
        );
    }

    #[test]
    fn the_replay_window_accepts_reordering_and_refuses_repeats() {
        let mut w = Window::new();
        assert!(w.accept(5));
        assert!(w.accept(3), "late but inside the window");
        assert!(!w.accept(3));
        assert!(!w.accept(5));
        assert!(w.accept(5 + REPLAY_WINDOW - 1));
        assert!(!w.accept(5), "slid out of the window");
        assert!(w.accept(10 * REPLAY_WINDOW));
        assert!(!w.accept(10 * REPLAY_WINDOW));
        assert!(!w.accept(0));
    }

    #[test]
    fn keyring_errors_name_the_key_never_the_secret() {
        let short = BusKey {
            id: "s".into(),
            secret: Zeroizing::new(vec![7; 31]),
        };
        assert!(BusKeyring::new("", vec![short])
            .unwrap_err()
            .0
            .contains("\"s\""));
        assert!(BusKeyring::new("k2", vec![key("k1", 1)]).is_err());
        assert!(BusKeyring::new("", vec![key("k1", 1), key("k1", 2)]).is_err());
        let debug = format!("{:?}", ring("k1", &[("k1", 0x41)]));
        assert!(!debug.contains("AAAA"), "{debug}");
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_rejected(bit in 0usize..4096, body in "[a-z0-9]{1,64}") {
            let a = Integrity::new(ring("k1", &[("k1", 1)]), "node-a");
            let b = Integrity::new(ring("k1", &[("k1", 1)]), "node-b");
            let inner = format!("j1:{{\"user\":\"{body}\"}}");
            let mut sealed = envelope(&a, inner.as_bytes(), NOW);
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(b.open(CHANNEL, &sealed, NOW).is_err(), "bit {} accepted", bit);
        }

        #[test]
        fn any_single_bit_flip_of_a_positioned_envelope_is_rejected(
            bit in 0usize..4096,
            offset in 1u64..1_000_000,
            body in "[a-z0-9]{1,64}",
        ) {
            let a = Integrity::new(ring("k1", &[("k1", 1)]), "node-a");
            let b = Integrity::new(ring("k1", &[("k1", 1)]), "node-b");
            let mut sealed = positioned(&a, offset, "epoch", &format!("{{\"b\":\"{body}\"}}"), NOW);
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(b.open(CHANNEL, &sealed, NOW).is_err(), "bit {} accepted", bit);
        }
    }
}
