use std::time::Duration;

use herald_auth::TokenVerifier;
use jsonwebtoken::{DecodingKey, Validation};

use super::*;
use crate::config::{load, FileLayer};
use crate::profile::{self, Secrets};

const NOW: u64 = 1_700_000_000;

fn dev_config() -> Config {
    let text = profile::config_text(&Secrets::generate());
    load(FileLayer::Text(&text, config::FileFormat::Toml), Vec::new())
        .unwrap()
        .config
}

fn claims(token: &str, secret: &str) -> serde_json::Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims
}

#[test]
fn connection_token_has_sub_exp_and_no_channel() {
    let config = dev_config();
    let token = mint(
        &config,
        &TokenRequest {
            user: "alice",
            channel: None,
            ttl: Some(Duration::from_secs(3600)),
            now: NOW,
        },
    )
    .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let claims = claims(&token, &config.client.token.hmac_secret_key);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["exp"], NOW + 3600);
    assert!(claims.get("channel").is_none());
    assert!(claims.get("aud").is_none());
}

#[test]
fn zero_ttl_means_no_exp() {
    let config = dev_config();
    let request = TokenRequest {
        user: "alice",
        channel: None,
        ttl: None,
        now: NOW,
    };
    let token = mint(&config, &request).unwrap();
    assert!(claims(&token, &config.client.token.hmac_secret_key)
        .get("exp")
        .is_none());
}

#[test]
fn subscription_token_uses_its_own_secret_when_enabled() {
    let mut config = dev_config();
    let request = TokenRequest {
        user: "bob",
        channel: Some("$private"),
        ttl: Some(Duration::from_secs(60)),
        now: NOW,
    };
    let token = mint(&config, &request).unwrap();
    let got = claims(&token, &config.client.token.hmac_secret_key);
    assert_eq!(got["channel"], "$private");
    assert_eq!(got["sub"], "bob");

    config.client.subscription_token.enabled = true;
    config.client.subscription_token.token.hmac_secret_key = "s".repeat(40);
    config.client.subscription_token.token.audience = "subs".to_owned();
    let token = mint(&config, &request).unwrap();
    let got = claims(&token, &"s".repeat(40));
    assert_eq!(got["channel"], "$private");
    assert_eq!(got["aud"], "subs");
}

#[test]
fn missing_secret_names_the_key() {
    let mut config = dev_config();
    config.client.token.hmac_secret_key.clear();
    let request = TokenRequest {
        user: "alice",
        channel: None,
        ttl: None,
        now: NOW,
    };
    let err = mint(&config, &request).unwrap_err().to_string();
    assert!(err.starts_with("client.token.hmac_secret_key: "), "{err}");
}

#[test]
fn minted_tokens_pass_the_node_verifier() {
    let mut config = dev_config();
    config.client.token.issuer = "herald-test".to_owned();
    config.client.token.audience = "herald-clients".to_owned();
    let verifier =
        TokenVerifier::new(&config.client.token, &config.client.subscription_token).unwrap();
    let now = NOW;
    let token = mint(
        &config,
        &TokenRequest {
            user: "carol",
            channel: None,
            ttl: Some(Duration::from_secs(3600)),
            now,
        },
    )
    .unwrap();
    let claims = verifier.verify_connection(&token, now).unwrap();
    assert_eq!(claims.user, "carol");
    // Expired an hour later.
    assert!(verifier.verify_connection(&token, now + 7200).is_err());
}
