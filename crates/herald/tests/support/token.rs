//! HS256 connection tokens signed with the secret every test server is
//! configured with.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// `client.token.hmac_secret_key` of every test server (32+ bytes, so no WARN).
pub(crate) const SECRET: &str = "herald-e2e-hmac-secret-0123456789abcdef";

/// A connection token for `user` without `exp` (never expires).
pub(crate) fn token(user: &str) -> String {
    token_signed_with(SECRET, &json!({ "sub": user }))
}

/// A connection token for `user` expiring at `exp` (unix seconds).
pub(crate) fn token_with_exp(user: &str, exp: u64) -> String {
    token_signed_with(SECRET, &json!({ "sub": user, "exp": exp }))
}

/// Any claims, signed HS256 with any secret.
pub(crate) fn token_signed_with(secret: &str, claims: &Value) -> String {
    // jsonwebtoken 10 needs a process-wide crypto provider; idempotent.
    herald_auth::install_crypto_provider();
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding cannot fail for a JSON object")
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
