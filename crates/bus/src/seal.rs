//! Publications at rest in history, sealed with XChaCha20-Poly1305.
//!
//! A stored record is `e1:` | kid_len u8 | kid | nonce [24] | ciphertext+tag.
//! The associated data binds it to its place — channel, epoch and offset —
//! so a record copied to another channel, stream or offset fails to open.
//! Nonces are random: with 192 bits there is no per-key use budget to track
//! (AES-GCM's random 96-bit nonces would force a rotation every 2^32 records
//! across the cluster; docs/security.md). Removing a key makes the records it
//! sealed unreadable for good (crypto-shredding): they are counted and
//! reported as unrecoverable, never returned as garbage.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use herald_protocol::Publication;
use zeroize::Zeroizing;

use crate::integrity::{build_keyring, KeyringError};

/// The JSON of a publication as both engines store it (sealed or in clear)
/// and as the Redis engine sends it, without its offset: the offset is the
/// record's place (the stream entry id; for a sealed record, its associated
/// data), never part of the body.
pub(crate) fn publication_body(publication: &Publication) -> Vec<u8> {
    if publication.offset == 0 {
        return serde_json::to_vec(publication).expect("a publication always serializes");
    }
    let mut without_offset = publication.clone();
    without_offset.offset = 0;
    serde_json::to_vec(&without_offset).expect("a publication always serializes")
}

const MARKER: &[u8] = b"e1:";
const NONCE_LEN: usize = 24;
const DOMAIN: &[u8] = b"herald-history-record-v1\0";

/// Key length (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_LEN: usize = 32;

/// One history key: its id and its 32 bytes (zeroized when dropped).
pub struct HistoryKey {
    pub id: String,
    pub key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a stored record cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with a key this node no longer holds (crypto-shredded).
    UnknownKey,
    /// The tag does not verify: tampered, or moved from another place.
    Forged,
    /// Not a sealed record at all, while sealing is required.
    Malformed,
}

/// The keys history records are sealed and opened with: one active key (or
/// none: records are stored in clear) and any number of open-only keys.
pub struct HistoryKeyring {
    active: Option<(String, XChaCha20Poly1305)>,
    keys: HashMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for HistoryKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("HistoryKeyring")
            .field("active", &self.active.as_ref().map(|(id, _)| id))
            .field("keys", &ids)
            .finish()
    }
}

impl HistoryKeyring {
    /// No keys: records are stored and read in clear.
    pub fn off() -> Self {
        Self {
            active: None,
            keys: HashMap::new(),
        }
    }

    /// `active` empty = new records stored in clear, older sealed ones still
    /// opened with `keys`.
    pub fn new(active: &str, keys: Vec<HistoryKey>) -> Result<Self, KeyringError> {
        let keys = keys.into_iter().map(|key| (key.id, key.key));
        let (active, keys) = build_keyring("history", active, keys, |id, bytes| {
            if bytes.len() != KEY_LEN {
                return Err(KeyringError::new(format!(
                    "history key {id:?}: exactly {KEY_LEN} bytes"
                )));
            }
            XChaCha20Poly1305::new_from_slice(bytes)
                .map_err(|_| KeyringError::new("a history key must be 32 bytes"))
        })?;
        Ok(Self { active, keys })
    }

    /// Whether new records are sealed.
    pub fn seals(&self) -> bool {
        self.active.is_some()
    }

    /// The active key id, if sealing is on.
    pub fn active_id(&self) -> Option<&str> {
        self.active.as_ref().map(|(id, _)| id.as_str())
    }

    /// All key ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The record to store for `plaintext` at (channel, epoch, offset);
    /// `None` when sealing is off.
    pub fn seal(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        self.seal_for(
            &Place::History {
                channel,
                epoch,
                offset,
            },
            plaintext,
        )
    }

    /// A presence entry (the client's info) as stored for `client` in
    /// `channel`; `None` when sealing is off.
    pub fn seal_presence(&self, channel: &str, client: &str, info: &[u8]) -> Option<Vec<u8>> {
        self.seal_for(&Place::Presence { channel, client }, info)
    }

    /// Opens a presence entry read back for `client` in `channel`.
    pub fn open_presence<'a>(
        &self,
        channel: &str,
        client: &str,
        record: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, OpenError> {
        self.open_for(&Place::Presence { channel, client }, record)
    }

    fn seal_for(&self, place: &Place<'_>, plaintext: &[u8]) -> Option<Vec<u8>> {
        let (kid, cipher) = self.active.as_ref()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random generator works");
        let aad = place.associated_data(kid.as_bytes());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a bounded message cannot fail");
        let mut record =
            Vec::with_capacity(MARKER.len() + 1 + kid.len() + NONCE_LEN + sealed.len());
        record.extend_from_slice(MARKER);
        record.push(kid.len() as u8);
        record.extend_from_slice(kid.as_bytes());
        record.extend_from_slice(&nonce);
        record.extend_from_slice(&sealed);
        Some(record)
    }

    /// The plaintext of a stored record read back from (channel, epoch,
    /// offset). A record in clear passes through unless the keyring holds
    /// keys (then history is expected sealed, and clear text is refused).
    pub fn open<'a>(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
        record: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, OpenError> {
        self.open_for(
            &Place::History {
                channel,
                epoch,
                offset,
            },
            record,
        )
    }

    fn open_for<'a>(
        &self,
        place: &Place<'_>,
        record: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, OpenError> {
        let Some(sealed) = record.strip_prefix(MARKER) else {
            // Clear records are what a node without keys wrote (or wrote
            // before sealing was turned on): readable while no key is held
            // yet, refused once sealing is expected.
            return if self.keys.is_empty() {
                Ok(Cow::Borrowed(record))
            } else {
                Err(OpenError::Malformed)
            };
        };
        let (&kid_len, rest) = sealed.split_first().ok_or(OpenError::Malformed)?;
        let (kid, rest) = rest
            .split_at_checked(usize::from(kid_len))
            .ok_or(OpenError::Malformed)?;
        let (nonce, ciphertext) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(OpenError::Malformed)?;
        let cipher = std::str::from_utf8(kid)
            .ok()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(OpenError::UnknownKey)?;
        let aad = place.associated_data(kid);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Cow::Owned)
            .map_err(|_| OpenError::Forged)
    }
}

/// Where a record is stored: what its associated data binds it to.
enum Place<'a> {
    History {
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
    },
    Presence {
        channel: &'a str,
        client: &'a str,
    },
}

impl Place<'_> {
    fn associated_data(&self, kid: &[u8]) -> Vec<u8> {
        let offset;
        let parts: [&[u8]; 4] = match self {
            Self::History {
                channel,
                epoch,
                offset: at,
            } => {
                offset = at.to_be_bytes();
                [b"history", channel.as_bytes(), epoch.as_bytes(), &offset]
            }
            Self::Presence { channel, client } => {
                [b"presence", channel.as_bytes(), client.as_bytes(), b""]
            }
        };
        let mut aad = Vec::with_capacity(DOMAIN.len() + kid.len() + 96);
        aad.extend_from_slice(DOMAIN);
        for part in parts.iter().chain([&kid]) {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(id: &str, byte: u8) -> HistoryKey {
        HistoryKey {
            id: id.into(),
            key: Zeroizing::new(vec![byte; KEY_LEN]),
        }
    }

    fn ring(active: &str, keys: &[(&str, u8)]) -> HistoryKeyring {
        HistoryKeyring::new(active, keys.iter().map(|(id, b)| key(id, *b)).collect()).unwrap()
    }

    const MARK: &[u8] = br#"{"data":"marker-7f3a"}"#;

    #[test]
    fn a_sealed_record_opens_only_in_its_place() {
        let keys = ring("h1", &[("h1", 1)]);
        let record = keys.seal("chat", "ep", 7, MARK).unwrap();
        assert!(
            !record.windows(11).any(|w| w == b"marker-7f3a"),
            "no plaintext in the record"
        );
        assert_eq!(keys.open("chat", "ep", 7, &record).unwrap(), MARK);
        for (channel, epoch, offset) in [("other", "ep", 7), ("chat", "ep2", 7), ("chat", "ep", 8)]
        {
            assert_eq!(
                keys.open(channel, epoch, offset, &record),
                Err(OpenError::Forged),
                "moved to {channel}/{epoch}/{offset}"
            );
        }
        // Two seals of the same text differ (random nonces).
        assert_ne!(record, keys.seal("chat", "ep", 7, MARK).unwrap());
    }

    #[test]
    fn rotation_and_shredding() {
        let old = ring("h1", &[("h1", 1)]);
        let record = old.seal("c", "e", 1, MARK).unwrap();
        // Step 1-2: h2 active, h1 open-only: old records still open.
        let rotated = ring("h2", &[("h1", 1), ("h2", 2)]);
        assert_eq!(rotated.open("c", "e", 1, &record).unwrap(), MARK);
        let newer = rotated.seal("c", "e", 2, MARK).unwrap();
        // Step 3: h1 removed: its records are shredded, newer ones open.
        let shredded = ring("h2", &[("h2", 2)]);
        assert_eq!(
            shredded.open("c", "e", 1, &record),
            Err(OpenError::UnknownKey)
        );
        assert_eq!(shredded.open("c", "e", 2, &newer).unwrap(), MARK);
        // A key with the same id but other bytes does not open it either.
        let impostor = ring("h1", &[("h1", 9)]);
        assert_eq!(impostor.open("c", "e", 1, &record), Err(OpenError::Forged));
    }

    #[test]
    fn presence_entries_are_bound_to_channel_and_client() {
        let keys = ring("h1", &[("h1", 1)]);
        let info = br#"{"user":"alice"}"#;
        let record = keys.seal_presence("room", "c1", info).unwrap();
        assert_eq!(
            keys.open_presence("room", "c1", &record).unwrap(),
            &info[..]
        );
        assert_eq!(
            keys.open_presence("room", "c2", &record),
            Err(OpenError::Forged)
        );
        assert_eq!(
            keys.open_presence("hall", "c1", &record),
            Err(OpenError::Forged)
        );
        // Neither kind of record opens as the other.
        assert_eq!(keys.open("room", "c1", 0, &record), Err(OpenError::Forged));
    }

    #[test]
    fn clear_records_and_sealing_off() {
        let off = HistoryKeyring::off();
        assert!(off.seal("c", "e", 1, MARK).is_none());
        assert_eq!(off.open("c", "e", 1, MARK).unwrap(), MARK);
        let keys = ring("h1", &[("h1", 1)]);
        assert_eq!(keys.open("c", "e", 1, MARK), Err(OpenError::Malformed));
        for bad in [&b"e1:"[..], b"e1:\x05h1", b"e1:\x02h1short"] {
            assert!(keys.open("c", "e", 1, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyring_errors() {
        assert!(HistoryKeyring::new(
            "",
            vec![HistoryKey {
                id: "s".into(),
                key: Zeroizing::new(vec![0; 31])
            }]
        )
        .is_err());
        assert!(HistoryKeyring::new("h2", vec![key("h1", 1)]).is_err());
        assert!(HistoryKeyring::new("", vec![key("h1", 1), key("h1", 2)]).is_err());
        assert!(!format!("{:?}", ring("h1", &[("h1", 0x41)])).contains("AAAA"));
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_fails_to_open(bit in 0usize..2048) {
            let keys = ring("h1", &[("h1", 1)]);
            let mut record = keys.seal("chat", "ep", 3, MARK).unwrap();
            let bit = bit % (record.len() * 8);
            record[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(keys.open("chat", "ep", 3, &record).is_err());
        }
    }
}
