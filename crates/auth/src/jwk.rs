//! JSON Web Key Sets (RFC 7517) as verification keys.
//!
//! Parsing only: fetching the set is `herald-identity`'s job. A [`JwksSlot`]
//! holds the current set of one source — one (issuer, URL) pair from the
//! config — and is swapped atomically when a fetch brings a new set, so a
//! verification never sees half of an update. Keys are looked up by `kid`
//! inside the slot of the config section being checked, so the key store is
//! keyed by (issuer, URL, kid), never by `kid` alone (CVE-2026-49998).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

/// Most keys taken from one set; a provider publishes a handful.
const MAX_KEYS: usize = 64;

/// Longest `kid` kept, in bytes (the same bound as the token header's).
const MAX_KID_LENGTH: usize = 128;

/// Which algorithms a key verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The JWK named its `alg`.
    Exact(Algorithm),
    /// No `alg`: an RSA key verifies RS* and PS* (as a static RSA key does).
    Family(AlgorithmFamily),
}

impl Binding {
    pub(crate) fn allows(self, alg: Algorithm) -> bool {
        match self {
            Self::Exact(bound) => bound == alg,
            Self::Family(family) => family == alg.family(),
        }
    }
}

/// One verification key of a set.
#[derive(Clone)]
pub(crate) struct BoundKey {
    pub(crate) binding: Binding,
    pub(crate) key: DecodingKey,
}

/// The usable keys of one fetched JWK set, by `kid`.
#[derive(Clone, Default)]
pub struct JwkKeys {
    keys: HashMap<String, BoundKey>,
    skipped: usize,
}

impl fmt::Debug for JwkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("JwkKeys")
            .field("kids", &kids)
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// Why a fetched body is not a usable JWK set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("not a JWK set: {0}")]
    NotASet(String),
    /// Two keys share a `kid`: which one a token means is ambiguous.
    #[error("two keys share the kid {0:?}")]
    DuplicateKid(String),
    /// Not one key could be used.
    #[error("no usable signature key ({skipped} skipped)")]
    NoUsableKey {
        /// Keys present but not usable.
        skipped: usize,
    },
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<Value>,
}

impl JwkKeys {
    /// Parses a JWK set. Keys that are not for signatures, have no `kid`,
    /// are symmetric, of an unsupported type or curve, or whose `alg`
    /// contradicts their type are skipped; the set is refused when two keys
    /// share a `kid` or none is usable.
    pub fn parse(body: &[u8]) -> Result<Self, JwksError> {
        let raw: RawSet =
            serde_json::from_slice(body).map_err(|e| JwksError::NotASet(e.to_string()))?;
        let mut keys = HashMap::new();
        let mut skipped = 0;
        for value in raw.keys.into_iter() {
            let Some((kid, key)) = usable_key(value) else {
                skipped += 1;
                continue;
            };
            if keys.contains_key(&kid) {
                return Err(JwksError::DuplicateKid(kid));
            }
            if keys.len() == MAX_KEYS {
                skipped += 1;
                continue;
            }
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped });
        }
        Ok(Self { keys, skipped })
    }

    /// The `kid`s of the usable keys, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Keys present in the set but not usable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&BoundKey> {
        self.keys.get(kid)
    }
}

fn usable_key(value: Value) -> Option<(String, BoundKey)> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    let kid = jwk.common.key_id.clone()?;
    if kid.is_empty() || kid.len() > MAX_KID_LENGTH {
        return None;
    }
    let natural = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Binding::Family(AlgorithmFamily::Rsa),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Binding::Exact(Algorithm::ES256),
            EllipticCurve::P384 => Binding::Exact(Algorithm::ES384),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Binding::Exact(Algorithm::EdDSA)
        }
        // Symmetric keys have no place in a public key set, and other
        // curves are not supported.
        _ => return None,
    };
    let binding = match jwk.common.key_algorithm {
        None => natural,
        Some(named) => {
            let alg = signature_algorithm(named)?;
            if !natural.allows(alg) {
                return None;
            }
            Binding::Exact(alg)
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, BoundKey { binding, key }))
}

fn signature_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The current key set of one JWKS source, shared between the verifier
/// (reads) and the fetcher (swaps). Empty until the first good fetch.
pub struct JwksSlot {
    issuer: Option<String>,
    url: String,
    keys: ArcSwapOption<JwkKeys>,
}

impl fmt::Debug for JwksSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksSlot")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .field("keys", &self.keys.load())
            .finish()
    }
}

impl JwksSlot {
    pub(crate) fn new(issuer: Option<String>, url: String) -> Arc<Self> {
        Arc::new(Self {
            issuer,
            url,
            keys: ArcSwapOption::empty(),
        })
    }

    /// The configured issuer this source's keys are for, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the key set in one step.
    pub fn store(&self, keys: JwkKeys) {
        self.keys.store(Some(Arc::new(keys)));
    }

    /// The current set; `None` before the first good fetch.
    pub fn current(&self) -> Option<Arc<JwkKeys>> {
        self.keys.load_full()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EC256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn ec(kid: &str, extra: Value) -> Value {
        let mut key = json!({"kty": "EC", "crv": "P-256", "x": EC256_X, "y": EC256_Y, "kid": kid});
        if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
            key.extend(extra.clone());
        }
        key
    }

    fn set(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn bindings_follow_alg_or_key_type() {
        let keys = JwkKeys::parse(&set(vec![
            ec("plain", json!({})),
            ec("named", json!({"alg": "ES256", "use": "sig"})),
            json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed"}),
            json!({"kty": "RSA", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB", "kid": "rsa"}),
        ]))
        .unwrap();
        assert_eq!(keys.kids(), ["ed", "named", "plain", "rsa"]);
        let binding = |kid: &str| keys.get(kid).unwrap().binding;
        assert_eq!(binding("plain"), Binding::Exact(Algorithm::ES256));
        assert_eq!(binding("named"), Binding::Exact(Algorithm::ES256));
        assert_eq!(binding("ed"), Binding::Exact(Algorithm::EdDSA));
        assert!(binding("rsa").allows(Algorithm::PS384));
        assert!(!binding("rsa").allows(Algorithm::ES256));
        assert!(!binding("plain").allows(Algorithm::ES384));
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let keys = JwkKeys::parse(&set(vec![
            ec("good", json!({})),
            ec("enc", json!({"use": "enc"})),
            ec("wrong-alg", json!({"alg": "RS256"})),
            ec("encryption-alg", json!({"alg": "RSA-OAEP"})),
            json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
            json!({"kty": "EC", "crv": "P-256", "x": EC256_X, "y": EC256_Y}),
            json!({"kty": "EC", "crv": "P-521", "x": EC256_X, "y": EC256_Y, "kid": "p521"}),
            json!({"kty": "weird", "kid": "weird"}),
            json!("not an object"),
        ]))
        .unwrap();
        assert_eq!(keys.kids(), ["good"]);
        assert_eq!(keys.skipped(), 8);
    }

    #[test]
    fn bad_sets_are_refused() {
        assert!(matches!(
            JwkKeys::parse(b"<html>"),
            Err(JwksError::NotASet(_))
        ));
        assert!(matches!(
            JwkKeys::parse(br#"{"keys": {}}"#),
            Err(JwksError::NotASet(_))
        ));
        assert_eq!(
            JwkKeys::parse(&set(vec![])).unwrap_err(),
            JwksError::NoUsableKey { skipped: 0 }
        );
        assert_eq!(
            JwkKeys::parse(&set(vec![ec("a", json!({})), ec("a", json!({}))])).unwrap_err(),
            JwksError::DuplicateKid("a".into())
        );
    }

    #[test]
    fn a_slot_swaps_whole_sets() {
        let slot = JwksSlot::new(Some("https://issuer".into()), "https://issuer/jwks".into());
        assert!(slot.current().is_none());
        slot.store(JwkKeys::parse(&set(vec![ec("one", json!({}))])).unwrap());
        let before = slot.current().unwrap();
        slot.store(JwkKeys::parse(&set(vec![ec("two", json!({}))])).unwrap());
        assert_eq!(before.kids(), ["one"], "a reader keeps the set it loaded");
        assert_eq!(slot.current().unwrap().kids(), ["two"]);
    }
}
