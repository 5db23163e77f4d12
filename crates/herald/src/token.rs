//! Minting HS256 tokens for `herald gentoken` and the dev banner.

use std::time::Duration;

use herald_auth::TokenConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::{Config, ConfigError};

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// `sub`; empty = anonymous.
    pub user: &'a str,
    /// `Some`: a subscription token for this channel.
    pub channel: Option<&'a str>,
    /// `exp` = now + ttl; `None`: no `exp` claim (never expires).
    pub ttl: Option<Duration>,
    /// Unix seconds.
    pub now: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs `request` with the HMAC secret the node verifies it with: for a
/// subscription token, `client.subscription_token`'s when that section is
/// enabled, else `client.token`'s. Configured `aud` and `iss` are included so
/// the token passes the node's checks.
pub fn mint(config: &Config, request: &TokenRequest<'_>) -> Result<String, MintError> {
    let (section, keys) = signing_keys(config, request.channel.is_some());
    if keys.hmac_secret_key.is_empty() {
        return Err(ConfigError::Invalid {
            key: format!("{section}.hmac_secret_key"),
            message: "empty; an HMAC secret is needed to mint tokens".to_owned(),
        }
        .into());
    }
    let claims = Claims {
        sub: request.user,
        exp: request
            .ttl
            .map(|ttl| request.now.saturating_add(ttl.as_secs())),
        iat: request.now,
        channel: request.channel,
        aud: non_empty(&keys.audience),
        iss: non_empty(&keys.issuer),
    };
    let key = EncodingKey::from_secret(keys.hmac_secret_key.as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// The config section (for error messages) and keys that verify a
/// connection or a subscription token.
fn signing_keys(config: &Config, subscription: bool) -> (&'static str, &TokenConfig) {
    let client = &config.client;
    if subscription && client.subscription_token.enabled {
        (
            "client.subscription_token",
            &client.subscription_token.token,
        )
    } else {
        ("client.token", &client.token)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests;
