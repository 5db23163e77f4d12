//! Connection token verification: the CPU cost of every connect (and of a
//! reconnect storm). Throughput is tokens per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_auth::{
    install_crypto_provider, InvalidReason, JwkKeys, SubscriptionTokenConfig, TokenConfig,
    TokenError, TokenVerifier,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "herald-bench-secret-0123456789abcdef";
const NOW: u64 = 1_700_000_000;
const RSA_PRIVATE: &str = include_str!("../testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa_public.pem");
const EC256_PRIVATE: &str = include_str!("../testdata/ec256_private.pem");
const EC256_PUBLIC: &str = include_str!("../testdata/ec256_public.pem");
const ED25519_PRIVATE: &str = include_str!("../testdata/ed25519_private.pem");
const ED25519_PUBLIC: &str = include_str!("../testdata/ed25519_public.pem");
const JWKS: &str = include_str!("../testdata/jwks_issuer_a.json");

fn verify_connection(c: &mut Criterion) {
    install_crypto_provider();
    let verifier = TokenVerifier::new(
        &TokenConfig {
            hmac_secret_key: SECRET.into(),
            rsa_public_key: RSA_PUBLIC.into(),
            ecdsa_public_key: EC256_PUBLIC.into(),
            ..Default::default()
        },
        &SubscriptionTokenConfig::default(),
    )
    .unwrap();
    let hs256 = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    // Same length, last signature character changed: a forged token costs
    // the same HMAC before it is refused.
    let forged = {
        let mut t = hs256.clone();
        let last = if t.ends_with('A') { "B" } else { "A" };
        t.replace_range(t.len() - 1.., last);
        t
    };
    let rs256 = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    );
    let es256 = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap(),
    );

    // EdDSA from a static key (ecdsa_public_key holds the Ed25519 key).
    let ed_verifier = TokenVerifier::new(
        &TokenConfig {
            ecdsa_public_key: ED25519_PUBLIC.into(),
            ..Default::default()
        },
        &SubscriptionTokenConfig::default(),
    )
    .unwrap();
    let eddsa = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap(),
    );
    // ES256 through a loaded JWKS set: the key found by `kid`.
    let jwks_verifier = TokenVerifier::new(
        &TokenConfig {
            jwks_public_endpoint: "https://idp.example/jwks".into(),
            ..Default::default()
        },
        &SubscriptionTokenConfig::default(),
    )
    .unwrap();
    jwks_verifier
        .connection_jwks()
        .unwrap()
        .store(JwkKeys::parse(JWKS.as_bytes()).unwrap());
    let es256_kid = {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec".into());
        sign_with(
            header,
            &EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap(),
        )
    };

    let mut group = c.benchmark_group("verify_connection");
    group.throughput(Throughput::Elements(1));
    for (name, verifier, token, expected) in [
        ("eddsa", &ed_verifier, &eddsa, Ok("42")),
        ("es256_jwks_kid", &jwks_verifier, &es256_kid, Ok("42")),
    ] {
        let got = verifier.verify_connection(token, NOW).map(|c| c.user);
        assert_eq!(got.as_deref().map_err(Clone::clone), expected, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify_connection(black_box(token), black_box(NOW)))
        });
    }
    for (name, token, expected) in [
        ("hs256", &hs256, Ok("42")),
        (
            "hs256_bad_signature",
            &forged,
            Err(TokenError::Invalid(InvalidReason::Signature)),
        ),
        ("rs256_2048", &rs256, Ok("42")),
        ("es256", &es256, Ok("42")),
    ] {
        // A bench of the wrong outcome would measure the wrong path.
        let got = verifier.verify_connection(token, NOW).map(|c| c.user);
        assert_eq!(got.as_deref().map_err(Clone::clone), expected, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify_connection(black_box(token), black_box(NOW)))
        });
    }
    group.finish();
}

/// A typical connection token: user, an hour of validity, a little `info`.
fn sign(alg: Algorithm, key: &EncodingKey) -> String {
    sign_with(Header::new(alg), key)
}

fn sign_with(header: Header, key: &EncodingKey) -> String {
    let claims = json!({
        "sub": "42",
        "iat": NOW,
        "exp": NOW + 3600,
        "info": { "name": "Ada" },
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

criterion_group!(benches, verify_connection);
criterion_main!(benches);
