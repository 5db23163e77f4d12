//! JWT verification of connection and subscription tokens.
//!
//! `jsonwebtoken` checks signatures only. The header and every claim are read
//! here, with the clock passed in, because the crate's own claim validation
//! reads the system clock, trusts types loosely (CVE-2026-25537) and refuses
//! tokens Centrifugo accepts (no `exp`, `aud` without a configured audience).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};

use crate::claim::{ConnectionClaims, Payload, Registered, SubscriptionClaims};
use crate::config::{
    check_endpoint, AuthConfigError, SubscriptionTokenConfig, TokenConfig, MAX_LEEWAY,
};
use crate::error::{InvalidReason, TokenError};
use crate::jwk::JwksSlot;

/// Longest `kid` header accepted, in bytes (SEC-JWT profile).
const MAX_KID_LENGTH: usize = 128;

/// Below this an HMAC secret is weaker than the HS256 output (RFC 7518 §3.2).
const MIN_HMAC_SECRET_LENGTH: usize = 32;

/// Accepted `typ` header values, compared case-insensitively: plain JWTs and
/// OAuth access tokens (RFC 9068). Anything else — an ID token, a logout or
/// DPoP proof — is another kind of JWT and refused (RFC 8725 §3.11).
const ACCEPTED_TYPES: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];

/// Headers that point at keys or demand extensions we do not implement.
/// RFC 7515 requires refusing unknown `crit` extensions, and key URLs in a
/// token are never followed (RFC 8725 §3.10).
const FORBIDDEN_HEADERS: [&str; 5] = ["crit", "jku", "x5u", "jwk", "x5c"];

/// Verifies connection and subscription tokens against the configured keys.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    connection: KeySet,
    /// `None`: subscription tokens use `connection`.
    subscription: Option<KeySet>,
    warnings: Vec<String>,
}

impl TokenVerifier {
    /// Builds the verifier from `client.token` and `client.subscription_token`.
    /// Also installs the crypto provider, so verification can never hit the
    /// "no provider" panic.
    pub fn new(
        connection: &TokenConfig,
        subscription: &SubscriptionTokenConfig,
    ) -> Result<Self, AuthConfigError> {
        crate::install_crypto_provider();
        let mut warnings = Vec::new();
        let connection = KeySet::new("client.token", connection, &mut warnings)?;
        let subscription = if subscription.enabled {
            let keys = KeySet::new(
                "client.subscription_token",
                &subscription.token,
                &mut warnings,
            )?;
            if keys.is_empty() {
                return Err(AuthConfigError::invalid(
                    "client.subscription_token.enabled",
                    "is true but client.subscription_token has no key, so every subscription token would be refused",
                ));
            }
            Some(keys)
        } else {
            if has_any_key(&subscription.token) {
                warnings.push(
                    "client.subscription_token has keys but enabled = false: subscription tokens are verified with client.token keys"
                        .to_owned(),
                );
            }
            None
        };
        Ok(Self {
            connection,
            subscription,
            warnings,
        })
    }

    /// Human-readable warnings to log at startup. Never contain a secret.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Whether any connection-token key is configured.
    pub fn has_connection_keys(&self) -> bool {
        !self.connection.is_empty()
    }

    /// The JWKS sources to fetch: the connection section's, then the
    /// subscription section's when it has its own.
    pub fn jwks_slots(&self) -> Vec<Arc<JwksSlot>> {
        let mut slots: Vec<Arc<JwksSlot>> = self.connection.jwks.iter().cloned().collect();
        if let Some(subscription) = &self.subscription {
            slots.extend(subscription.jwks.iter().cloned());
        }
        slots
    }

    /// The JWKS source connection tokens are checked against, if any.
    pub fn connection_jwks(&self) -> Option<&Arc<JwksSlot>> {
        self.connection.jwks.as_ref()
    }

    /// The JWKS source subscription tokens are checked against, if any.
    pub fn subscription_jwks(&self) -> Option<&Arc<JwksSlot>> {
        self.subscription
            .as_ref()
            .unwrap_or(&self.connection)
            .jwks
            .as_ref()
    }

    /// Verifies a connection token at `now_unix` (seconds).
    pub fn verify_connection(
        &self,
        token: &str,
        now_unix: u64,
    ) -> Result<ConnectionClaims, TokenError> {
        verify(&self.connection, token, now_unix, |payload, registered| {
            payload.connection(registered)
        })
    }

    /// Verifies a subscription token at `now_unix` (seconds). Whether its
    /// `sub`, `channel` and `client` match the connection is the caller's
    /// check.
    pub fn verify_subscription(
        &self,
        token: &str,
        now_unix: u64,
    ) -> Result<SubscriptionClaims, TokenError> {
        let keys = self.subscription.as_ref().unwrap_or(&self.connection);
        verify(keys, token, now_unix, |payload, registered| {
            payload.subscription(registered)
        })
    }
}

/// The keys and checks of one config section.
#[derive(Debug, Clone)]
struct KeySet {
    /// The current secret first, then the previous one.
    hmac: Vec<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    ed: Option<DecodingKey>,
    /// The section's JWKS source; its keys are tried for tokens with a `kid`.
    jwks: Option<Arc<JwksSlot>>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl KeySet {
    fn new(
        section: &str,
        config: &TokenConfig,
        warnings: &mut Vec<String>,
    ) -> Result<Self, AuthConfigError> {
        let jwks = if config.jwks_public_endpoint.is_empty() {
            None
        } else {
            let key = format!("{section}.jwks_public_endpoint");
            if let Some(warning) = check_endpoint(&key, &config.jwks_public_endpoint)? {
                warnings.push(warning);
            }
            Some(JwksSlot::new(
                non_empty(&config.issuer),
                config.jwks_public_endpoint.clone(),
            ))
        };
        if config.leeway > MAX_LEEWAY {
            return Err(AuthConfigError::LeewayTooLarge {
                key: format!("{section}.leeway"),
                got: config.leeway,
            });
        }
        let mut hmac = Vec::new();
        let secrets = [
            ("hmac_secret_key", &config.hmac_secret_key),
            ("hmac_previous_secret_key", &config.hmac_previous_secret_key),
        ];
        for (name, secret) in secrets {
            if secret.is_empty() {
                continue;
            }
            if secret.len() < MIN_HMAC_SECRET_LENGTH {
                warnings.push(format!(
                    "{section}.{name} is shorter than {MIN_HMAC_SECRET_LENGTH} bytes; use at least 32 random bytes"
                ));
            }
            hmac.push(DecodingKey::from_secret(secret.as_bytes()));
        }
        if config.hmac_secret_key.is_empty() && !config.hmac_previous_secret_key.is_empty() {
            warnings.push(format!(
                "{section}.hmac_previous_secret_key is set without {section}.hmac_secret_key"
            ));
        }
        // ECDSA, or an Ed25519 key for EdDSA (no separate option for it).
        let (ec, ed) = match public_key(
            section,
            "ecdsa_public_key",
            &config.ecdsa_public_key,
            "ECDSA",
        )? {
            Some((key, AlgorithmFamily::Ed)) => (None, Some(key)),
            other => (other.map(|(key, _)| key), None),
        };
        Ok(Self {
            hmac,
            rsa: public_key(section, "rsa_public_key", &config.rsa_public_key, "RSA")?
                .map(|(key, _)| key),
            ec,
            ed,
            jwks,
            audience: non_empty(&config.audience),
            issuer: non_empty(&config.issuer),
            leeway: config.leeway.as_secs(),
        })
    }

    fn is_empty(&self) -> bool {
        self.hmac.is_empty()
            && self.rsa.is_none()
            && self.ec.is_none()
            && self.ed.is_none()
            && self.jwks.is_none()
    }

    /// Checks the header and the signature; returns the decoded payload.
    fn open(&self, token: &str) -> Result<Vec<u8>, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidReason::Malformed.into());
        };
        let (alg, kid) = check_header(&b64_decode(header)?)?;
        // Decoded here only to tell a malformed signature from a wrong one.
        b64_decode(signature)?;
        // In bounds: `header`, '.' and `payload` are the start of `token`.
        let message = &token.as_bytes()[..header.len() + 1 + payload.len()];
        if let (Some(slot), Some(kid)) = (&self.jwks, &kid) {
            // A token naming a key is checked against this section's JWKS
            // source only: the key store is (issuer, URL, kid).
            let keys = slot.current().ok_or(TokenError::Unavailable)?;
            let bound = keys.get(kid).ok_or(TokenError::UnknownKey)?;
            if !bound.binding.allows(alg) {
                return Err(InvalidReason::Algorithm.into());
            }
            return match jsonwebtoken::crypto::verify(signature, message, &bound.key, alg) {
                Ok(true) => Ok(b64_decode(payload)?),
                _ => Err(InvalidReason::Signature.into()),
            };
        }
        let keys = self.keys_for(alg)?;
        let verified = keys.iter().any(|key| {
            // An error here means the key does not fit the algorithm (e.g. a
            // P-256 key for ES384): that key does not verify the token.
            jsonwebtoken::crypto::verify(signature, message, key, alg).unwrap_or(false)
        });
        if !verified {
            return Err(InvalidReason::Signature.into());
        }
        Ok(b64_decode(payload)?)
    }

    /// The configured keys of `alg`'s family: the algorithm is bound to the
    /// key, never chosen by the header alone.
    fn keys_for(&self, alg: Algorithm) -> Result<&[DecodingKey], InvalidReason> {
        if self.is_empty() {
            return Err(InvalidReason::NoKey);
        }
        let keys = match alg.family() {
            AlgorithmFamily::Hmac => self.hmac.as_slice(),
            AlgorithmFamily::Rsa => self.rsa.as_slice(),
            AlgorithmFamily::Ec => self.ec.as_slice(),
            AlgorithmFamily::Ed => self.ed.as_slice(),
        };
        if keys.is_empty() {
            return Err(InvalidReason::Algorithm);
        }
        Ok(keys)
    }

    fn check_issuer_audience(&self, registered: &Registered) -> Result<(), InvalidReason> {
        if let Some(issuer) = &self.issuer {
            if registered.iss.as_ref() != Some(issuer) {
                return Err(InvalidReason::Issuer);
            }
        }
        if let Some(audience) = &self.audience {
            if !registered.aud.contains(audience) {
                return Err(InvalidReason::Audience);
            }
        }
        Ok(())
    }
}

/// Times copied out of the registered claims, checked last so that a token
/// both expired and invalid is reported invalid (and not refreshed in a loop).
struct Times {
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
}

impl Times {
    fn check(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        let latest_start = now.saturating_add(leeway);
        if self.nbf.is_some_and(|nbf| nbf > latest_start) {
            return Err(InvalidReason::NotYetValid.into());
        }
        if self.iat.is_some_and(|iat| iat > latest_start) {
            return Err(InvalidReason::NotYetValid.into());
        }
        // RFC 7519: the current time must be before `exp`.
        if self
            .exp
            .is_some_and(|exp| now >= exp.saturating_add(leeway))
        {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

fn verify<T>(
    keys: &KeySet,
    token: &str,
    now: u64,
    build: impl FnOnce(&Payload<'_>, Registered) -> Result<T, InvalidReason>,
) -> Result<T, TokenError> {
    let bytes = keys.open(token)?;
    let payload = Payload::parse(&bytes)?;
    let registered = payload.registered()?;
    keys.check_issuer_audience(&registered)?;
    let times = Times {
        exp: registered.exp,
        nbf: registered.nbf,
        iat: registered.iat,
    };
    let claims = build(&payload, registered)?;
    times.check(now, keys.leeway)?;
    Ok(claims)
}

/// Validates the header and returns its algorithm and `kid`.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(Algorithm, Option<String>), InvalidReason> {
    let header: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|_| InvalidReason::Malformed)?;
    if FORBIDDEN_HEADERS
        .iter()
        .any(|name| header.contains_key(*name))
    {
        return Err(InvalidReason::ForbiddenHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_LENGTH => Some(kid.clone()),
        Some(_) => return Err(InvalidReason::Malformed),
    };
    // `typ` is optional (Centrifugo's SDK examples omit it); when present it
    // must name a JWT or an access token.
    match header.get("typ") {
        None => {}
        Some(Value::String(typ))
            if ACCEPTED_TYPES
                .iter()
                .any(|accepted| typ.eq_ignore_ascii_case(accepted)) => {}
        Some(Value::String(_)) => return Err(InvalidReason::Type),
        Some(_) => return Err(InvalidReason::Malformed),
    }
    // `none`, lower-case spellings and anything unknown fail to parse.
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|alg| alg.parse().ok())
        .ok_or(InvalidReason::Algorithm)?;
    Ok((alg, kid))
}

fn b64_decode(part: &str) -> Result<Vec<u8>, InvalidReason> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| InvalidReason::Malformed)
}

fn public_key(
    section: &str,
    name: &str,
    pem: &str,
    kind: &str,
) -> Result<Option<(DecodingKey, AlgorithmFamily)>, AuthConfigError> {
    let pem = pem.trim();
    if pem.is_empty() {
        return Ok(None);
    }
    let key = format!("{section}.{name}");
    // jsonwebtoken would read some bytes out of a private key or a
    // certificate and fail only at verification time; say so now instead.
    if pem.contains("PRIVATE KEY-----") {
        return Err(AuthConfigError::invalid(
            key,
            format!("is a private key; give the {kind} public key (PEM \"PUBLIC KEY\")"),
        ));
    }
    if pem.contains("CERTIFICATE-----") {
        return Err(AuthConfigError::invalid(
            key,
            format!(
                "certificates are not supported; give the {kind} public key (PEM \"PUBLIC KEY\")"
            ),
        ));
    }
    let bytes = pem.as_bytes();
    let parsed = if kind == "RSA" {
        DecodingKey::from_rsa_pem(bytes).map(|k| (k, AlgorithmFamily::Rsa))
    } else {
        DecodingKey::from_ec_pem(bytes)
            .map(|k| (k, AlgorithmFamily::Ec))
            .or_else(|_| DecodingKey::from_ed_pem(bytes).map(|k| (k, AlgorithmFamily::Ed)))
    };
    parsed.map(Some).map_err(|_| {
        AuthConfigError::invalid(key, format!("not a valid {kind} public key in PEM form"))
    })
}

fn has_any_key(config: &TokenConfig) -> bool {
    [
        &config.hmac_secret_key,
        &config.hmac_previous_secret_key,
        &config.rsa_public_key,
        &config.ecdsa_public_key,
        &config.jwks_public_endpoint,
    ]
    .iter()
    .any(|value| !value.is_empty())
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests;
