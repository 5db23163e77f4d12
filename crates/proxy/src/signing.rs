//! Signed proxy requests (docs/proxy.md, "Signed proxy requests"): with a
//! `proxy_signing` keyring, every request to the backend carries
//!
//! ```text
//! X-Herald-Signature: v1,kid=<key id>,ts=<unix seconds>,sig=<base64url, no padding>
//! ```
//!
//! where `sig` is HMAC-SHA256, keyed with the active key's bytes, over the
//! canonical string
//!
//! ```text
//! "v1" LF METHOD LF PATH LF TS LF BODY
//! ```
//!
//! `METHOD` is `POST`; `PATH` the endpoint URL's path and `?query` exactly
//! as sent on the request line; `TS` the decimal `ts` of the header; `BODY`
//! the request body's bytes as sent. A backend holding the key refuses what
//! herald did not send, what was changed on the way, and (by `ts`) what is
//! replayed after its window. herald only signs: the verify-only keys of the
//! keyring are kept so the section has the bus keyring's shape, and so the
//! reload log names them.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// The header a signed request carries.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";

/// The version of the canonical string and of the header's layout.
pub const SIGNATURE_VERSION: &str = "v1";

/// Shortest secret accepted, as the bus keyring's (RFC 2104: at least the
/// hash output).
pub const MIN_SIGNING_KEY_LEN: usize = 32;

/// One key: its id and secret (zeroized when dropped).
pub struct ProxySigningKey {
    pub id: String,
    pub secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ProxySigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A bad keyring (the message names the key id, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SigningKeyringError(String);

/// The keys of `proxy_signing`: the active one (or none: requests go
/// unsigned) and the ids of all.
pub struct ProxySigningKeyring {
    active: Option<(String, hmac::Key)>,
    ids: BTreeSet<String>,
}

impl fmt::Debug for ProxySigningKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySigningKeyring")
            .field("active", &self.active_id())
            .field("keys", &self.ids)
            .finish()
    }
}

impl Default for ProxySigningKeyring {
    fn default() -> Self {
        Self::off()
    }
}

impl ProxySigningKeyring {
    /// No keys: requests go unsigned.
    pub fn off() -> Self {
        Self {
            active: None,
            ids: BTreeSet::new(),
        }
    }

    /// Builds the keyring by the bus keyring's rules: ids unique, secrets of
    /// at least [`MIN_SIGNING_KEY_LEN`] bytes, `active` (empty: sign
    /// nothing) among the keys. An id is also 1 to 255 visible ASCII
    /// characters other than `,`, since it is written into the header.
    pub fn new(active: &str, keys: Vec<ProxySigningKey>) -> Result<Self, SigningKeyringError> {
        let mut ids = BTreeSet::new();
        let mut active_key = None;
        for key in keys {
            if !valid_signing_key_id(&key.id) {
                return Err(SigningKeyringError(format!(
                    "proxy signing key id {:?}: 1 to 255 visible ASCII characters, no ','",
                    key.id
                )));
            }
            if ids.contains(&key.id) {
                return Err(SigningKeyringError(format!(
                    "proxy signing key {:?} given twice",
                    key.id
                )));
            }
            if key.secret.len() < MIN_SIGNING_KEY_LEN {
                return Err(SigningKeyringError(format!(
                    "proxy signing key {:?}: at least {MIN_SIGNING_KEY_LEN} bytes",
                    key.id
                )));
            }
            if key.id == active {
                active_key = Some((
                    key.id.clone(),
                    hmac::Key::new(hmac::HMAC_SHA256, &key.secret),
                ));
            }
            ids.insert(key.id);
        }
        if !active.is_empty() && active_key.is_none() {
            return Err(SigningKeyringError(format!(
                "the active proxy signing key {active:?} is not among the keys"
            )));
        }
        Ok(Self {
            active: active_key,
            ids,
        })
    }

    /// The active key id, if signing is on.
    pub fn active_id(&self) -> Option<&str> {
        self.active.as_ref().map(|(id, _)| id.as_str())
    }

    /// All key ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.ids.iter().cloned().collect()
    }
}

/// Whether `id` can be a key id: it goes into the header between `kid=`
/// and `,`.
pub fn valid_signing_key_id(id: &str) -> bool {
    (1..=usize::from(u8::MAX)).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Signs proxy requests with the active key of the current keyring. A cheap
/// clone of one shared handle: the proxies hold clones, and the keyring
/// watcher [`replace`](Self::replace)s the keyring for all of them.
#[derive(Clone, Default)]
pub struct ProxySigner {
    keyring: Arc<ArcSwap<ProxySigningKeyring>>,
}

impl fmt::Debug for ProxySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProxySigner")
            .field(&*self.keyring.load())
            .finish()
    }
}

impl ProxySigner {
    pub fn new(keyring: ProxySigningKeyring) -> Self {
        Self {
            keyring: Arc::new(ArcSwap::from_pointee(keyring)),
        }
    }

    /// Signs with `keyring` from now on (a reload); calls already signed
    /// keep their header.
    pub fn replace(&self, keyring: ProxySigningKeyring) {
        self.keyring.store(Arc::new(keyring));
    }

    /// The active key id, if requests are signed.
    pub fn active_id(&self) -> Option<String> {
        self.keyring.load().active_id().map(str::to_owned)
    }

    /// Every key id of the current keyring, sorted (never the secrets).
    pub fn ids(&self) -> Vec<String> {
        self.keyring.load().ids()
    }

    /// The header (name, value) for a request of `method` to `path` (path
    /// and query as on the request line) with `body`, at `now_unix`; `None`
    /// when there is no active key.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        now_unix: u64,
    ) -> Option<(&'static str, String)> {
        let keyring = self.keyring.load();
        let (kid, key) = keyring.active.as_ref()?;
        let ts = now_unix.to_string();
        let mut context = hmac::Context::with_key(key);
        for part in [SIGNATURE_VERSION, method, path, &ts] {
            context.update(part.as_bytes());
            context.update(b"\n");
        }
        context.update(body);
        let sig = URL_SAFE_NO_PAD.encode(context.sign().as_ref());
        Some((
            SIGNATURE_HEADER,
            format!("{SIGNATURE_VERSION},kid={kid},ts={ts},sig={sig}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 bytes: `0123456789abcdef0123456789abcdef`.
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key(id: &str, secret: &[u8]) -> ProxySigningKey {
        ProxySigningKey {
            id: id.into(),
            secret: Zeroizing::new(secret.to_vec()),
        }
    }

    fn signer(active: &str) -> ProxySigner {
        let keys = vec![key("k1", SECRET), key("k2", &[7; 32])];
        ProxySigner::new(ProxySigningKeyring::new(active, keys).unwrap())
    }

    /// The known answer, computed apart from this code:
    ///
    /// ```text
    /// $ python3 -c 'import hmac,hashlib,base64
    /// msg = b"v1\nPOST\n/rpc?x=1\n1700000000\n" + b"{\"method\":\"echo\"}"
    /// d = hmac.new(b"0123456789abcdef0123456789abcdef", msg, hashlib.sha256).digest()
    /// print(base64.urlsafe_b64encode(d).rstrip(b"=").decode())'
    /// GWnWvnY1-CNECYW75jxzfQtRG5Wf8BB3SQGzRXcDg4U
    /// ```
    ///
    /// docs/proxy.md's Python and Node verifiers accept this header.
    #[test]
    fn signs_the_canonical_string_known_answer() {
        let (name, value) = signer("k1")
            .sign("POST", "/rpc?x=1", br#"{"method":"echo"}"#, 1_700_000_000)
            .unwrap();
        assert_eq!(name, "X-Herald-Signature");
        assert_eq!(
            value,
            "v1,kid=k1,ts=1700000000,sig=GWnWvnY1-CNECYW75jxzfQtRG5Wf8BB3SQGzRXcDg4U"
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let s = signer("k1");
        let base = s.sign("POST", "/rpc", b"{}", 1).unwrap().1;
        for other in [
            s.sign("PUT", "/rpc", b"{}", 1),
            s.sign("POST", "/rpc2", b"{}", 1),
            s.sign("POST", "/rpc", b"{ }", 1),
            s.sign("POST", "/rpc", b"{}", 2),
            signer("k2").sign("POST", "/rpc", b"{}", 1),
        ] {
            let other = other.unwrap().1;
            let sig = |v: &str| v.rsplit_once("sig=").unwrap().1.to_owned();
            assert_ne!(sig(&base), sig(&other), "{other}");
        }
        // The separators keep fields apart: moving a byte across one changes it.
        assert_ne!(
            s.sign("POST", "/a", b"b", 1).unwrap().1,
            s.sign("POST", "/a\nb", b"", 1).unwrap().1
        );
    }

    #[test]
    fn no_active_key_signs_nothing_and_replace_rotates() {
        let s = signer("");
        assert_eq!(s.sign("POST", "/", b"", 1), None);
        assert_eq!(ProxySigner::default().sign("POST", "/", b"", 1), None);

        let held = s.clone();
        s.replace(
            ProxySigningKeyring::new("k2", vec![key("k1", SECRET), key("k2", &[7; 32])]).unwrap(),
        );
        let value = held.sign("POST", "/", b"", 1).unwrap().1;
        assert!(value.starts_with("v1,kid=k2,ts=1,sig="), "{value}");
        assert_eq!(held.active_id().as_deref(), Some("k2"));
        s.replace(ProxySigningKeyring::off());
        assert_eq!(held.sign("POST", "/", b"", 1), None);
    }

    #[test]
    fn keyring_rules_are_the_bus_keyrings() {
        let table: &[(&str, Vec<ProxySigningKey>, &str)] = &[
            ("k1", vec![key("k2", SECRET)], "not among the keys"),
            (
                "",
                vec![key("k1", SECRET), key("k1", SECRET)],
                "given twice",
            ),
            ("", vec![key("k1", &[1; 31])], "at least 32 bytes"),
            ("", vec![key("", SECRET)], "1 to 255"),
            ("", vec![key("a,b", SECRET)], "no ','"),
            ("", vec![key("a b", SECRET)], "visible ASCII"),
            ("", vec![key(&"k".repeat(256), SECRET)], "1 to 255"),
        ];
        for (active, keys, want) in table {
            let keys = keys.iter().map(|k| key(&k.id, &k.secret)).collect();
            let err = ProxySigningKeyring::new(active, keys)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        let ring =
            ProxySigningKeyring::new("k1", vec![key("k2", SECRET), key("k1", SECRET)]).unwrap();
        assert_eq!(ring.active_id(), Some("k1"));
        assert_eq!(ring.ids(), ["k1", "k2"]);
    }

    #[test]
    fn debug_names_ids_never_secrets() {
        let debug = format!("{:?}", signer("k1"));
        assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        let debug = format!("{:?}", key("k1", SECRET));
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
}
