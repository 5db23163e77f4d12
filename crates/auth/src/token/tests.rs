//! Tables of tokens against `TokenVerifier`: every algorithm, header and
//! claim rule, and the CVE regressions (docs/security.md, "Threat model").

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::claim::ChannelOverride;

const SECRET: &str = "herald-test-secret-0123456789abcdef";
const PREVIOUS: &str = "herald-previous-secret-0123456789ab";
const SUB_SECRET: &str = "herald-subscription-secret-0123456789";
const NOW: u64 = 1_700_000_000;

const RSA_PRIVATE: &str = include_str!("../../testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../testdata/rsa_public.pem");
const EC256_PRIVATE: &str = include_str!("../../testdata/ec256_private.pem");
const EC256_PUBLIC: &str = include_str!("../../testdata/ec256_public.pem");
const EC384_PRIVATE: &str = include_str!("../../testdata/ec384_private.pem");
const EC384_PUBLIC: &str = include_str!("../../testdata/ec384_public.pem");

fn token_config(edit: impl FnOnce(&mut TokenConfig)) -> TokenConfig {
    let mut config = TokenConfig::default();
    edit(&mut config);
    config
}

fn verifier(edit: impl FnOnce(&mut TokenConfig)) -> TokenVerifier {
    TokenVerifier::new(&token_config(edit), &SubscriptionTokenConfig::default()).unwrap()
}

fn hmac_key(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn encode(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    crate::install_crypto_provider();
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(claims: Value) -> String {
    encode(Algorithm::HS256, &hmac_key(SECRET), &claims)
}

/// `header.payload.signature` from raw JSON text, signed with `alg` and
/// `key` whatever the header says.
fn assemble(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    crate::install_crypto_provider();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn assemble_hs256(header: &str, payload: &str) -> String {
    assemble(header, payload, Algorithm::HS256, &hmac_key(SECRET))
}

fn invalid(reason: InvalidReason) -> Result<&'static str, TokenError> {
    Err(TokenError::Invalid(reason))
}

#[test]
fn connection_token_table() {
    use InvalidReason as R;
    let base = verifier(|c| {
        c.hmac_secret_key = SECRET.into();
        c.hmac_previous_secret_key = PREVIOUS.into();
    });
    let current_only = verifier(|c| c.hmac_secret_key = SECRET.into());
    let with_audience = verifier(|c| {
        c.hmac_secret_key = SECRET.into();
        c.audience = "herald".into();
    });
    let with_issuer = verifier(|c| {
        c.hmac_secret_key = SECRET.into();
        c.issuer = "https://issuer.example".into();
    });
    let no_leeway = verifier(|c| {
        c.hmac_secret_key = SECRET.into();
        c.leeway = Duration::ZERO;
    });
    let rsa = verifier(|c| c.rsa_public_key = RSA_PUBLIC.into());
    let ec256 = verifier(|c| c.ecdsa_public_key = EC256_PUBLIC.into());
    let ec384 = verifier(|c| c.ecdsa_public_key = EC384_PUBLIC.into());
    let no_keys = verifier(|_| {});

    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let ec256_key = EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap();
    let ec384_key = EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).unwrap();
    let sub = json!({"sub": "42"});
    let long_kid = "k".repeat(MAX_KID_LENGTH);
    let too_long_kid = "k".repeat(MAX_KID_LENGTH + 1);
    let tampered = {
        let good = hs256(json!({"sub": "42"}));
        let other = hs256(json!({"sub": "admin"}));
        let (other_head, _) = other.rsplit_once('.').unwrap();
        let (_, good_signature) = good.rsplit_once('.').unwrap();
        format!("{other_head}.{good_signature}")
    };
    let signed_payload = |payload: &str| assemble_hs256(r#"{"alg":"HS256"}"#, payload);
    let with_header = |header: &str| assemble_hs256(header, r#"{"sub":"42"}"#);

    let table: Vec<(&str, &TokenVerifier, String, Result<&str, TokenError>)> = vec![
        ("only sub", &base, hs256(json!({"sub": "42"})), Ok("42")),
        ("no sub is anonymous", &base, hs256(json!({})), Ok("")),
        (
            "null sub is anonymous",
            &base,
            hs256(json!({"sub": null})),
            Ok(""),
        ),
        (
            "HS384",
            &base,
            encode(Algorithm::HS384, &hmac_key(SECRET), &sub),
            Ok("42"),
        ),
        (
            "HS512",
            &base,
            encode(Algorithm::HS512, &hmac_key(SECRET), &sub),
            Ok("42"),
        ),
        (
            "future exp",
            &base,
            hs256(json!({"sub": "42", "exp": NOW + 3600})),
            Ok("42"),
        ),
        (
            "expired",
            &base,
            hs256(json!({"sub": "42", "exp": NOW - 10})),
            Err(TokenError::Expired),
        ),
        (
            "expired within leeway",
            &base,
            hs256(json!({"sub": "42", "exp": NOW - 4})),
            Ok("42"),
        ),
        (
            "expired at leeway edge",
            &base,
            hs256(json!({"sub": "42", "exp": NOW - 5})),
            Err(TokenError::Expired),
        ),
        (
            "exp now without leeway",
            &no_leeway,
            hs256(json!({"exp": NOW})),
            Err(TokenError::Expired),
        ),
        (
            "exp in a second without leeway",
            &no_leeway,
            hs256(json!({"exp": NOW + 1})),
            Ok(""),
        ),
        (
            "exp zero",
            &base,
            hs256(json!({"exp": 0})),
            Err(TokenError::Expired),
        ),
        (
            "nbf in the future",
            &base,
            hs256(json!({"sub": "42", "nbf": NOW + 60})),
            invalid(R::NotYetValid),
        ),
        (
            "nbf within leeway",
            &base,
            hs256(json!({"sub": "42", "nbf": NOW + 5})),
            Ok("42"),
        ),
        (
            "nbf in the past",
            &base,
            hs256(json!({"sub": "42", "nbf": NOW - 60})),
            Ok("42"),
        ),
        (
            "iat in the future",
            &base,
            hs256(json!({"iat": NOW + 60})),
            invalid(R::NotYetValid),
        ),
        ("iat now", &base, hs256(json!({"iat": NOW})), Ok("")),
        (
            "string exp",
            &base,
            hs256(json!({"sub": "42", "exp": (NOW + 60).to_string()})),
            invalid(R::ClaimType),
        ),
        (
            "string exp already past",
            &base,
            hs256(json!({"exp": "1"})),
            invalid(R::ClaimType),
        ),
        (
            "string nbf",
            &base,
            hs256(json!({"sub": "42", "nbf": (NOW + 600).to_string()})),
            invalid(R::ClaimType),
        ),
        (
            "string iat",
            &base,
            hs256(json!({"iat": NOW.to_string()})),
            invalid(R::ClaimType),
        ),
        (
            "numeric sub",
            &base,
            hs256(json!({"sub": 42})),
            invalid(R::ClaimType),
        ),
        (
            "wrong secret",
            &base,
            encode(
                Algorithm::HS256,
                &hmac_key("some-other-secret-0123456789abcdef"),
                &sub,
            ),
            invalid(R::Signature),
        ),
        (
            "previous secret",
            &base,
            encode(Algorithm::HS256, &hmac_key(PREVIOUS), &sub),
            Ok("42"),
        ),
        (
            "previous secret not configured",
            &current_only,
            encode(Algorithm::HS256, &hmac_key(PREVIOUS), &sub),
            invalid(R::Signature),
        ),
        ("tampered payload", &base, tampered, invalid(R::Signature)),
        (
            "alg none",
            &base,
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(r#"{"sub":"42"}"#)
            ),
            invalid(R::Algorithm),
        ),
        (
            "alg none signed anyway",
            &base,
            with_header(r#"{"alg":"none"}"#),
            invalid(R::Algorithm),
        ),
        (
            "alg lower case",
            &base,
            with_header(r#"{"alg":"hs256"}"#),
            invalid(R::Algorithm),
        ),
        (
            "alg missing",
            &base,
            with_header(r#"{"typ":"JWT"}"#),
            invalid(R::Algorithm),
        ),
        (
            "alg not a string",
            &base,
            with_header(r#"{"alg":1}"#),
            invalid(R::Algorithm),
        ),
        (
            "RS256 header with HMAC keys",
            &base,
            with_header(r#"{"alg":"RS256"}"#),
            invalid(R::Algorithm),
        ),
        (
            "EdDSA header",
            &base,
            with_header(r#"{"alg":"EdDSA"}"#),
            invalid(R::Algorithm),
        ),
        (
            "ES512 header",
            &ec256,
            with_header(r#"{"alg":"ES512"}"#),
            invalid(R::Algorithm),
        ),
        (
            "HS256 keyed with the RSA public key",
            &rsa,
            encode(Algorithm::HS256, &hmac_key(RSA_PUBLIC), &sub),
            invalid(R::Algorithm),
        ),
        (
            "RS256",
            &rsa,
            encode(Algorithm::RS256, &rsa_key, &sub),
            Ok("42"),
        ),
        (
            "RS384",
            &rsa,
            encode(Algorithm::RS384, &rsa_key, &sub),
            Ok("42"),
        ),
        (
            "RS512",
            &rsa,
            encode(Algorithm::RS512, &rsa_key, &sub),
            Ok("42"),
        ),
        (
            "PS256",
            &rsa,
            encode(Algorithm::PS256, &rsa_key, &sub),
            Ok("42"),
        ),
        (
            "RS256 with EC key only",
            &ec256,
            encode(Algorithm::RS256, &rsa_key, &sub),
            invalid(R::Algorithm),
        ),
        (
            "ES256",
            &ec256,
            encode(Algorithm::ES256, &ec256_key, &sub),
            Ok("42"),
        ),
        (
            "ES384",
            &ec384,
            encode(Algorithm::ES384, &ec384_key, &sub),
            Ok("42"),
        ),
        (
            "ES384 token, P-256 key",
            &ec256,
            encode(Algorithm::ES384, &ec384_key, &sub),
            invalid(R::Signature),
        ),
        (
            "ES256 with RSA key only",
            &rsa,
            encode(Algorithm::ES256, &ec256_key, &sub),
            invalid(R::Algorithm),
        ),
        (
            "no key configured",
            &no_keys,
            hs256(json!({"sub": "42"})),
            invalid(R::NoKey),
        ),
        (
            "aud matches",
            &with_audience,
            hs256(json!({"sub": "42", "aud": "herald"})),
            Ok("42"),
        ),
        (
            "aud array contains",
            &with_audience,
            hs256(json!({"sub": "42", "aud": ["other", "herald"]})),
            Ok("42"),
        ),
        (
            "aud mismatch",
            &with_audience,
            hs256(json!({"sub": "42", "aud": "other"})),
            invalid(R::Audience),
        ),
        (
            "aud array without ours",
            &with_audience,
            hs256(json!({"sub": "42", "aud": ["a", "b"]})),
            invalid(R::Audience),
        ),
        (
            "aud absent but configured",
            &with_audience,
            hs256(json!({"sub": "42"})),
            invalid(R::Audience),
        ),
        (
            "aud wrong type",
            &with_audience,
            hs256(json!({"aud": 1})),
            invalid(R::ClaimType),
        ),
        (
            "aud present, not configured",
            &base,
            hs256(json!({"sub": "42", "aud": "anything"})),
            Ok("42"),
        ),
        (
            "aud array present, not configured",
            &base,
            hs256(json!({"sub": "42", "aud": ["a", "b"]})),
            Ok("42"),
        ),
        (
            "iss matches",
            &with_issuer,
            hs256(json!({"sub": "42", "iss": "https://issuer.example"})),
            Ok("42"),
        ),
        (
            "iss mismatch",
            &with_issuer,
            hs256(json!({"sub": "42", "iss": "https://evil.example"})),
            invalid(R::Issuer),
        ),
        (
            "iss absent but configured",
            &with_issuer,
            hs256(json!({"sub": "42"})),
            invalid(R::Issuer),
        ),
        (
            "iss present, not configured",
            &base,
            hs256(json!({"sub": "42", "iss": "whoever"})),
            Ok("42"),
        ),
        (
            "invalid beats expired",
            &with_audience,
            hs256(json!({"aud": "other", "exp": NOW - 600})),
            invalid(R::Audience),
        ),
        (
            "crit header",
            &base,
            with_header(r#"{"alg":"HS256","crit":["x-unknown"],"x-unknown":1}"#),
            invalid(R::ForbiddenHeader),
        ),
        (
            "crit null header",
            &base,
            with_header(r#"{"alg":"HS256","crit":null}"#),
            invalid(R::ForbiddenHeader),
        ),
        (
            "jku header",
            &base,
            with_header(r#"{"alg":"HS256","jku":"https://evil.example/jwks"}"#),
            invalid(R::ForbiddenHeader),
        ),
        (
            "x5u header",
            &base,
            with_header(r#"{"alg":"HS256","x5u":"https://evil.example/cert"}"#),
            invalid(R::ForbiddenHeader),
        ),
        (
            "jwk header",
            &base,
            with_header(r#"{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#),
            invalid(R::ForbiddenHeader),
        ),
        (
            "x5c header",
            &base,
            with_header(r#"{"alg":"HS256","x5c":["MIIB"]}"#),
            invalid(R::ForbiddenHeader),
        ),
        (
            "kid of 128 bytes",
            &base,
            with_header(&format!(r#"{{"alg":"HS256","kid":"{long_kid}"}}"#)),
            Ok("42"),
        ),
        (
            "kid of 129 bytes",
            &base,
            with_header(&format!(r#"{{"alg":"HS256","kid":"{too_long_kid}"}}"#)),
            invalid(R::Malformed),
        ),
        (
            "kid not a string",
            &base,
            with_header(r#"{"alg":"HS256","kid":7}"#),
            invalid(R::Malformed),
        ),
        (
            "typ JWT",
            &base,
            with_header(r#"{"alg":"HS256","typ":"JWT"}"#),
            Ok("42"),
        ),
        (
            "typ absent",
            &base,
            with_header(r#"{"alg":"HS256"}"#),
            Ok("42"),
        ),
        (
            "typ at+jwt (RFC 9068 access token)",
            &base,
            with_header(r#"{"alg":"HS256","typ":"at+jwt"}"#),
            Ok("42"),
        ),
        (
            "typ application/at+JWT, any case",
            &base,
            with_header(r#"{"alg":"HS256","typ":"application/at+JWT"}"#),
            Ok("42"),
        ),
        (
            "typ of an ID token is not an access token",
            &base,
            with_header(r#"{"alg":"HS256","typ":"id_token+jwt"}"#),
            invalid(R::Type),
        ),
        (
            "typ of a logout token",
            &base,
            with_header(r#"{"alg":"HS256","typ":"logout+jwt"}"#),
            invalid(R::Type),
        ),
        (
            "typ not a string",
            &base,
            with_header(r#"{"alg":"HS256","typ":1}"#),
            invalid(R::Malformed),
        ),
        (
            "extra non-string header",
            &base,
            with_header(r#"{"alg":"HS256","b":true}"#),
            Ok("42"),
        ),
        (
            "channel claim",
            &base,
            hs256(json!({"sub": "42", "channel": "news"})),
            invalid(R::ChannelInConnectionToken),
        ),
        ("empty token", &base, String::new(), invalid(R::Malformed)),
        (
            "two parts",
            &base,
            "eyJhbGciOiJIUzI1NiJ9.e30".into(),
            invalid(R::Malformed),
        ),
        (
            "four parts",
            &base,
            format!("{}.x", hs256(json!({}))),
            invalid(R::Malformed),
        ),
        (
            "header not base64url",
            &base,
            "e+J.e30.AAAA".into(),
            invalid(R::Malformed),
        ),
        (
            "header not JSON",
            &base,
            format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode("alg")),
            invalid(R::Malformed),
        ),
        (
            "header an array",
            &base,
            with_header(r#"["HS256"]"#),
            invalid(R::Malformed),
        ),
        (
            "signature not base64url",
            &base,
            format!("{}!", hs256(json!({}))),
            invalid(R::Malformed),
        ),
        (
            "padded signature",
            &base,
            format!("{}=", hs256(json!({}))),
            invalid(R::Malformed),
        ),
        (
            "payload not JSON",
            &base,
            signed_payload("sub=42"),
            invalid(R::Malformed),
        ),
        (
            "payload an array",
            &base,
            signed_payload(r#"["42"]"#),
            invalid(R::Malformed),
        ),
        (
            "claim given twice",
            &base,
            signed_payload(r#"{"sub":"42","sub":"admin"}"#),
            invalid(R::Malformed),
        ),
    ];
    for (name, verifier, token, want) in table {
        let got = verifier.verify_connection(&token, NOW);
        assert_eq!(
            got.as_ref().map(|c| c.user.as_str()),
            want.as_ref().map(|u| *u),
            "{name}"
        );
    }
}

#[test]
fn connection_claims_are_returned() {
    let v = verifier(|c| c.hmac_secret_key = SECRET.into());
    let token = hs256(json!({
        "sub": "42",
        "exp": NOW + 60,
        "iat": NOW - 1,
        "jti": "id-1",
        "info": {"name": "Ann", "tags": [1, 2]},
        "channels": ["news", "chat:lobby"],
        "subs": {
            "chat:1": {
                "info": {"role": "op"},
                "b64data": "eyJ3ZWxjb21lIjp0cnVlfQ==",
                "override": {"presence": {"value": false}, "force_recovery": {"value": true}}
            },
            "chat:2": {}
        },
        "meta": {"hidden": true},
        "unknown_claim": [1]
    }));
    let claims = v.verify_connection(&token, NOW).unwrap();
    assert_eq!(claims.user, "42");
    assert_eq!(claims.exp, Some(NOW + 60));
    assert_eq!(claims.iat, Some(NOW - 1));
    assert_eq!(claims.jti.as_deref(), Some("id-1"));
    assert_eq!(claims.expire_at, None);
    assert_eq!(claims.expires_at(), Some(NOW + 60));
    assert_eq!(
        claims.info.as_ref().map(|i| i.get()),
        Some(r#"{"name":"Ann","tags":[1,2]}"#)
    );
    assert_eq!(claims.channels, ["news", "chat:lobby"]);
    assert_eq!(claims.subs.len(), 2);
    let sub = &claims.subs["chat:1"];
    assert_eq!(sub.info.as_ref().map(|i| i.get()), Some(r#"{"role":"op"}"#));
    assert_eq!(
        sub.data.as_ref().map(|d| d.get()),
        Some(r#"{"welcome":true}"#)
    );
    assert_eq!(
        sub.override_,
        ChannelOverride {
            presence: Some(false),
            force_recovery: Some(true),
            ..ChannelOverride::default()
        }
    );
    assert!(claims.subs["chat:2"].override_.is_empty());

    // Printable for `herald checktoken`.
    let printed = serde_json::to_value(&claims).unwrap();
    assert_eq!(
        printed["subs"]["chat:1"]["override"]["presence"]["value"],
        json!(false)
    );
}

#[test]
fn b64info_and_expire_at() {
    let v = verifier(|c| c.hmac_secret_key = SECRET.into());
    // (claims, want info, want expires_at) or an error
    type Want = Result<(Option<&'static str>, Option<u64>), TokenError>;
    let table: Vec<(Value, Want)> = vec![
        (
            json!({"b64info": "eyJhIjoxfQ=="}),
            Ok((Some(r#"{"a":1}"#), None)),
        ),
        (
            json!({"info": "x", "b64info": "eyJhIjoxfQ=="}),
            Ok((Some(r#"{"a":1}"#), None)),
        ),
        (
            json!({"b64info": "bm90IGpzb24="}),
            Err(TokenError::Invalid(InvalidReason::ClaimType)),
        ),
        (json!({"info": null}), Ok((None, None))),
        (json!({"exp": NOW + 10}), Ok((None, Some(NOW + 10)))),
        (
            json!({"exp": NOW + 10, "expire_at": NOW + 99}),
            Ok((None, Some(NOW + 99))),
        ),
        (json!({"exp": NOW + 10, "expire_at": 0}), Ok((None, None))),
        // The token itself must still be valid at connect.
        (
            json!({"exp": NOW - 60, "expire_at": 0}),
            Err(TokenError::Expired),
        ),
        (
            json!({"expire_at": "0"}),
            Err(TokenError::Invalid(InvalidReason::ClaimType)),
        ),
    ];
    for (claims, want) in table {
        let got = v
            .verify_connection(&hs256(claims.clone()), NOW)
            .map(|c| (c.info.as_ref().map(|i| i.get().to_owned()), c.expires_at()));
        let want = want.map(|(info, at)| (info.map(String::from), at));
        assert_eq!(got, want, "{claims}");
    }
}

#[test]
fn subscription_token_table() {
    use InvalidReason as R;
    let shared = TokenVerifier::new(
        &token_config(|c| c.hmac_secret_key = SECRET.into()),
        &SubscriptionTokenConfig::default(),
    )
    .unwrap();
    let separate = TokenVerifier::new(
        &token_config(|c| c.hmac_secret_key = SECRET.into()),
        &SubscriptionTokenConfig {
            enabled: true,
            token: token_config(|c| {
                c.hmac_secret_key = SUB_SECRET.into();
                c.audience = "subs".into();
            }),
        },
    )
    .unwrap();
    let shared_with_audience = TokenVerifier::new(
        &token_config(|c| {
            c.hmac_secret_key = SECRET.into();
            c.audience = "herald".into();
        }),
        &SubscriptionTokenConfig::default(),
    )
    .unwrap();
    let by_sub_secret = |claims: Value| encode(Algorithm::HS256, &hmac_key(SUB_SECRET), &claims);

    let table: Vec<(&str, &TokenVerifier, String, Result<&str, TokenError>)> = vec![
        (
            "SDK shape: channel and iat only",
            &shared,
            hs256(json!({"channel": "$chat:1", "iat": NOW})),
            Ok("$chat:1"),
        ),
        (
            "with sub",
            &shared,
            hs256(json!({"sub": "42", "channel": "news"})),
            Ok("news"),
        ),
        (
            "missing channel",
            &shared,
            hs256(json!({"sub": "42"})),
            Err(TokenError::Invalid(R::MissingChannel)),
        ),
        (
            "empty channel",
            &shared,
            hs256(json!({"channel": ""})),
            Err(TokenError::Invalid(R::MissingChannel)),
        ),
        (
            "expired",
            &shared,
            hs256(json!({"channel": "c", "exp": NOW - 60})),
            Err(TokenError::Expired),
        ),
        (
            "string exp",
            &shared,
            hs256(json!({"channel": "c", "exp": "never"})),
            Err(TokenError::Invalid(R::ClaimType)),
        ),
        (
            "shared: sub secret refused",
            &shared,
            by_sub_secret(json!({"channel": "c"})),
            Err(TokenError::Invalid(R::Signature)),
        ),
        (
            "separate: own secret",
            &separate,
            by_sub_secret(json!({"channel": "c", "aud": "subs"})),
            Ok("c"),
        ),
        (
            "separate: connection secret refused",
            &separate,
            hs256(json!({"channel": "c", "aud": "subs"})),
            Err(TokenError::Invalid(R::Signature)),
        ),
        (
            "separate: own audience",
            &separate,
            by_sub_secret(json!({"channel": "c"})),
            Err(TokenError::Invalid(R::Audience)),
        ),
        (
            "shared: connection audience applies",
            &shared_with_audience,
            hs256(json!({"channel": "c"})),
            Err(TokenError::Invalid(R::Audience)),
        ),
        (
            "shared: connection audience matches",
            &shared_with_audience,
            hs256(json!({"channel": "c", "aud": ["herald"]})),
            Ok("c"),
        ),
    ];
    for (name, verifier, token, want) in table {
        let got = verifier.verify_subscription(&token, NOW);
        assert_eq!(
            got.as_ref().map(|c| c.channel.as_str()),
            want.as_ref().map(|c| *c),
            "{name}"
        );
    }

    // The connection side of `separate` keeps the connection secret.
    assert!(separate
        .verify_connection(&hs256(json!({"sub": "42"})), NOW)
        .is_ok());
    assert_eq!(
        separate.verify_connection(&by_sub_secret(json!({"sub": "42"})), NOW),
        Err(TokenError::Invalid(R::Signature))
    );
}

#[test]
fn subscription_claims_are_returned() {
    let v = verifier(|c| c.hmac_secret_key = SECRET.into());
    let token = hs256(json!({
        "sub": "42",
        "channel": "$chat:1",
        "client": "c-1",
        "exp": NOW + 60,
        "expire_at": NOW + 600,
        "iat": NOW,
        "info": {"room": 1},
        "b64data": "WzEsMl0=",
        "override": {"join_leave": {"value": true}, "force_positioning": {"value": true}}
    }));
    let claims = v.verify_subscription(&token, NOW).unwrap();
    assert_eq!(claims.user, "42");
    assert_eq!(claims.channel, "$chat:1");
    assert_eq!(claims.client.as_deref(), Some("c-1"));
    assert_eq!(claims.exp, Some(NOW + 60));
    assert_eq!(claims.expire_at, Some(NOW + 600));
    assert_eq!(claims.expires_at(), Some(NOW + 600));
    assert_eq!(claims.iat, Some(NOW));
    assert_eq!(claims.info.as_ref().map(|i| i.get()), Some(r#"{"room":1}"#));
    assert_eq!(claims.data.as_ref().map(|d| d.get()), Some("[1,2]"));
    assert_eq!(
        claims.override_,
        ChannelOverride {
            join_leave: Some(true),
            force_positioning: Some(true),
            ..ChannelOverride::default()
        }
    );
    // A subscription token is not a connection token.
    assert_eq!(
        v.verify_connection(&token, NOW),
        Err(TokenError::Invalid(InvalidReason::ChannelInConnectionToken))
    );
}

const ED25519_PRIVATE: &str = include_str!("../../testdata/ed25519_private.pem");
const ED25519_PUBLIC: &str = include_str!("../../testdata/ed25519_public.pem");
const EC256B_PRIVATE: &str = include_str!("../../testdata/ec256b_private.pem");
const JWKS_A: &str = include_str!("../../testdata/jwks_issuer_a.json");
const JWKS_B: &str = include_str!("../../testdata/jwks_issuer_b.json");
const ISSUER_A: &str = "https://a.idp.example";
const ISSUER_B: &str = "https://b.idp.example";

fn with_kid(alg: Algorithm, key: &EncodingKey, kid: &str, claims: &Value) -> String {
    crate::install_crypto_provider();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Connection tokens verified with issuer A's JWKS source, subscription
/// tokens with issuer B's: two sources that both publish the kid
/// `shared`, with different keys.
fn two_issuers() -> TokenVerifier {
    let verifier = TokenVerifier::new(
        &token_config(|c| {
            c.jwks_public_endpoint = "https://a.idp.example/jwks".into();
            c.issuer = ISSUER_A.into();
        }),
        &SubscriptionTokenConfig {
            enabled: true,
            token: token_config(|c| {
                c.jwks_public_endpoint = "https://b.idp.example/jwks".into();
                c.issuer = ISSUER_B.into();
            }),
        },
    )
    .unwrap();
    let load = |slot: Option<&Arc<JwksSlot>>, set: &str| {
        slot.unwrap()
            .store(crate::JwkKeys::parse(set.as_bytes()).unwrap())
    };
    load(verifier.connection_jwks(), JWKS_A);
    load(verifier.subscription_jwks(), JWKS_B);
    verifier
}

#[test]
fn jwks_and_asymmetric_table() {
    use InvalidReason as R;
    let jwks = two_issuers();
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let ec256 = EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap();
    let ec256b = EncodingKey::from_ec_pem(EC256B_PRIVATE.as_bytes()).unwrap();
    let ec384 = EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).unwrap();
    let ed = EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap();
    let static_ed = verifier(|c| c.ecdsa_public_key = ED25519_PUBLIC.into());
    let claims = json!({"sub": "42", "iss": ISSUER_A});
    let claims_b = json!({"sub": "42", "iss": ISSUER_B, "channel": "news"});
    // RFC 8725 §2.1: an HMAC token keyed with the public key's bytes.
    let public_as_secret = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());

    let connection: Vec<(&str, &TokenVerifier, String, Result<&str, TokenError>)> = vec![
        (
            "ES256 by kid",
            &jwks,
            with_kid(Algorithm::ES256, &ec256, "ec", &claims),
            Ok("42"),
        ),
        (
            "ES384 by kid, alg from crv",
            &jwks,
            with_kid(Algorithm::ES384, &ec384, "ec384", &claims),
            Ok("42"),
        ),
        (
            "RS256 with an RSA key without alg",
            &jwks,
            with_kid(Algorithm::RS256, &rsa, "rsa", &claims),
            Ok("42"),
        ),
        (
            "RS512 with an RSA key without alg",
            &jwks,
            with_kid(Algorithm::RS512, &rsa, "rsa", &claims),
            Ok("42"),
        ),
        (
            "PS384 with an RSA key without alg",
            &jwks,
            with_kid(Algorithm::PS384, &rsa, "rsa", &claims),
            Ok("42"),
        ),
        (
            "PS256 with a PS256 key",
            &jwks,
            with_kid(Algorithm::PS256, &rsa, "rsa-ps256", &claims),
            Ok("42"),
        ),
        (
            "EdDSA by kid",
            &jwks,
            with_kid(Algorithm::EdDSA, &ed, "ed", &claims),
            Ok("42"),
        ),
        (
            "RS256 with a key bound to PS256",
            &jwks,
            with_kid(Algorithm::RS256, &rsa, "rsa-ps256", &claims),
            Err(R::Algorithm.into()),
        ),
        (
            "ES384 header on a P-256 key",
            &jwks,
            with_kid(Algorithm::ES384, &ec384, "ec", &claims),
            Err(R::Algorithm.into()),
        ),
        (
            "RS -> HS swap with the public key as secret",
            &jwks,
            with_kid(Algorithm::HS256, &public_as_secret, "rsa", &claims),
            Err(R::Algorithm.into()),
        ),
        (
            "signed by another key under a known kid",
            &jwks,
            with_kid(Algorithm::ES256, &ec256b, "ec", &claims),
            Err(R::Signature.into()),
        ),
        (
            "unknown kid",
            &jwks,
            with_kid(Algorithm::ES256, &ec256, "rotated-in", &claims),
            Err(TokenError::UnknownKey),
        ),
        (
            "kid path injection",
            &jwks,
            with_kid(Algorithm::ES256, &ec256, "../../etc/passwd", &claims),
            Err(TokenError::UnknownKey),
        ),
        (
            "kid SQL injection",
            &jwks,
            with_kid(Algorithm::ES256, &ec256, "' OR '1'='1", &claims),
            Err(TokenError::UnknownKey),
        ),
        (
            "kid with NUL",
            &jwks,
            with_kid(Algorithm::ES256, &ec256, "ec\u{0}", &claims),
            Err(TokenError::UnknownKey),
        ),
        (
            "right key, wrong issuer",
            &jwks,
            with_kid(
                Algorithm::ES256,
                &ec256,
                "ec",
                &json!({"sub": "42", "iss": ISSUER_B}),
            ),
            Err(R::Issuer.into()),
        ),
        // CVE-2026-49998: issuer B's key under the kid both publish
        // must not verify a token checked against issuer A's source.
        (
            "cross-issuer same kid",
            &jwks,
            with_kid(
                Algorithm::ES256,
                &ec256b,
                "shared",
                &json!({"sub": "42", "iss": ISSUER_A}),
            ),
            Err(R::Signature.into()),
        ),
        (
            "cross-issuer same kid, B's iss",
            &jwks,
            with_kid(
                Algorithm::ES256,
                &ec256b,
                "shared",
                &json!({"sub": "42", "iss": ISSUER_B}),
            ),
            Err(R::Signature.into()),
        ),
        (
            "A's own key under the shared kid",
            &jwks,
            with_kid(Algorithm::ES256, &ec256, "shared", &claims),
            Ok("42"),
        ),
        (
            "EdDSA with a static Ed25519 key",
            &static_ed,
            encode(Algorithm::EdDSA, &ed, &json!({"sub": "42"})),
            Ok("42"),
        ),
        (
            "ES256 with only an Ed25519 key",
            &static_ed,
            encode(Algorithm::ES256, &ec256, &json!({"sub": "42"})),
            Err(R::Algorithm.into()),
        ),
        (
            "kid ignored without a JWKS source",
            &static_ed,
            with_kid(Algorithm::EdDSA, &ed, "whatever", &json!({"sub": "42"})),
            Ok("42"),
        ),
        (
            "string exp with a JWKS key (CVE-2026-25537)",
            &jwks,
            with_kid(
                Algorithm::ES256,
                &ec256,
                "ec",
                &json!({"sub": "42", "iss": ISSUER_A, "exp": (NOW + 60).to_string()}),
            ),
            Err(R::ClaimType.into()),
        ),
        (
            "string nbf with a JWKS key",
            &jwks,
            with_kid(
                Algorithm::ES256,
                &ec256,
                "ec",
                &json!({"sub": "42", "iss": ISSUER_A, "nbf": "0"}),
            ),
            Err(R::ClaimType.into()),
        ),
    ];
    for (name, verifier, token, want) in connection {
        let got = verifier.verify_connection(&token, NOW).map(|c| c.user);
        assert_eq!(got.as_deref().map_err(Clone::clone), want, "{name}");
    }

    // Subscription tokens go to issuer B's source.
    let sub = |key: &EncodingKey, kid: &str, claims: &Value| {
        jwks.verify_subscription(&with_kid(Algorithm::ES256, key, kid, claims), NOW)
            .map(|c| c.channel)
    };
    assert_eq!(sub(&ec256b, "shared", &claims_b), Ok("news".to_owned()));
    assert_eq!(
        sub(&ec256, "shared", &claims_b),
        Err(R::Signature.into()),
        "issuer A's key under the shared kid does not sign for B"
    );
    assert_eq!(sub(&ec256, "ec", &claims_b), Err(TokenError::UnknownKey));

    // No set loaded yet: cannot decide, the client should retry.
    let empty = verifier(|c| c.jwks_public_endpoint = "https://idp.example/jwks".into());
    assert_eq!(
        empty.verify_connection(&with_kid(Algorithm::ES256, &ec256, "ec", &claims), NOW),
        Err(TokenError::Unavailable)
    );
    assert_eq!(empty.jwks_slots().len(), 1);
    assert_eq!(two_issuers().jwks_slots().len(), 2);
}

#[test]
fn config_errors_name_the_key() {
    let subscription = |edit: fn(&mut TokenConfig)| SubscriptionTokenConfig {
        enabled: true,
        token: token_config(edit),
    };
    let table: Vec<(TokenConfig, SubscriptionTokenConfig, &str)> = vec![
        (
            token_config(|c| c.leeway = Duration::from_secs(31)),
            SubscriptionTokenConfig::default(),
            "client.token.leeway: at most 30s (got 31s)",
        ),
        (
            TokenConfig::default(),
            subscription(|c| {
                c.hmac_secret_key = SUB_SECRET.into();
                c.leeway = Duration::from_secs(60);
            }),
            "client.subscription_token.leeway: at most 30s (got 60s)",
        ),
        (
            token_config(|c| c.jwks_public_endpoint = "http://idp.example/jwks".into()),
            SubscriptionTokenConfig::default(),
            "client.token.jwks_public_endpoint: must be https (http is allowed only for a loopback host)",
        ),
        (
            TokenConfig::default(),
            subscription(|c| c.jwks_public_endpoint = "https://user:pw@idp.example/jwks".into()),
            "client.subscription_token.jwks_public_endpoint: must not carry credentials in the URL",
        ),
        (
            token_config(|c| c.jwks_public_endpoint = "idp.example/jwks".into()),
            SubscriptionTokenConfig::default(),
            "client.token.jwks_public_endpoint: is not an absolute http(s) URL",
        ),
        (
            token_config(|c| c.rsa_public_key = "not a pem".into()),
            SubscriptionTokenConfig::default(),
            "client.token.rsa_public_key: not a valid RSA public key in PEM form",
        ),
        (
            token_config(|c| c.rsa_public_key = EC256_PUBLIC.into()),
            SubscriptionTokenConfig::default(),
            "client.token.rsa_public_key: not a valid RSA public key in PEM form",
        ),
        (
            token_config(|c| c.ecdsa_public_key = RSA_PUBLIC.into()),
            SubscriptionTokenConfig::default(),
            "client.token.ecdsa_public_key: not a valid ECDSA public key in PEM form",
        ),
        (
            token_config(|c| c.rsa_public_key = RSA_PRIVATE.into()),
            SubscriptionTokenConfig::default(),
            "client.token.rsa_public_key: is a private key; give the RSA public key (PEM \"PUBLIC KEY\")",
        ),
        (
            TokenConfig::default(),
            subscription(|_| {}),
            "client.subscription_token.enabled: is true but client.subscription_token has no key, so every subscription token would be refused",
        ),
    ];
    for (connection, subscription, want) in table {
        let err = TokenVerifier::new(&connection, &subscription).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert!(
            !err.to_string().contains("MII"),
            "error must not echo key material"
        );
    }
    // The limit itself is accepted.
    let at_limit = token_config(|c| c.leeway = Duration::from_secs(30));
    assert!(TokenVerifier::new(&at_limit, &SubscriptionTokenConfig::default()).is_ok());
    // Keys of a disabled subscription section are not validated.
    let disabled = SubscriptionTokenConfig {
        enabled: false,
        token: token_config(|c| c.leeway = Duration::from_secs(99)),
    };
    assert!(TokenVerifier::new(&TokenConfig::default(), &disabled).is_ok());
}

#[test]
fn warnings_table() {
    let short = "short-secret";
    let exactly_32 = "0123456789abcdef0123456789abcdef";
    let table: Vec<(TokenConfig, SubscriptionTokenConfig, Vec<&str>)> = vec![
        (token_config(|c| c.hmac_secret_key = SECRET.into()), SubscriptionTokenConfig::default(), vec![]),
        (token_config(|c| c.hmac_secret_key = exactly_32.into()), SubscriptionTokenConfig::default(), vec![]),
        (
            token_config(|c| c.hmac_secret_key = short.into()),
            SubscriptionTokenConfig::default(),
            vec!["client.token.hmac_secret_key is shorter than 32 bytes; use at least 32 random bytes"],
        ),
        (
            token_config(|c| {
                c.hmac_secret_key = SECRET.into();
                c.hmac_previous_secret_key = short.into();
            }),
            SubscriptionTokenConfig::default(),
            vec!["client.token.hmac_previous_secret_key is shorter than 32 bytes; use at least 32 random bytes"],
        ),
        (
            token_config(|c| c.hmac_previous_secret_key = SECRET.into()),
            SubscriptionTokenConfig::default(),
            vec!["client.token.hmac_previous_secret_key is set without client.token.hmac_secret_key"],
        ),
        (
            token_config(|c| c.hmac_secret_key = SECRET.into()),
            SubscriptionTokenConfig {
                enabled: true,
                token: token_config(|c| c.hmac_secret_key = short.into()),
            },
            vec!["client.subscription_token.hmac_secret_key is shorter than 32 bytes; use at least 32 random bytes"],
        ),
        (
            token_config(|c| c.hmac_secret_key = SECRET.into()),
            SubscriptionTokenConfig {
                enabled: false,
                token: token_config(|c| c.hmac_secret_key = short.into()),
            },
            vec!["client.subscription_token has keys but enabled = false: subscription tokens are verified with client.token keys"],
        ),
    ];
    for (connection, subscription, want) in table {
        let v = TokenVerifier::new(&connection, &subscription).unwrap();
        let warnings = v.warnings();
        assert_eq!(warnings, want);
        for warning in &warnings {
            assert!(
                !warning.contains(short),
                "warning leaks the secret: {warning}"
            );
        }
    }
    // A short secret still verifies tokens.
    let v = verifier(|c| c.hmac_secret_key = short.into());
    let token = encode(Algorithm::HS256, &hmac_key(short), &json!({"sub": "1"}));
    assert_eq!(v.verify_connection(&token, NOW).unwrap().user, "1");
}

#[test]
fn has_connection_keys_table() {
    let table: Vec<(TokenConfig, bool)> = vec![
        (TokenConfig::default(), false),
        (token_config(|c| c.audience = "a".into()), false),
        (token_config(|c| c.hmac_secret_key = SECRET.into()), true),
        (
            token_config(|c| c.hmac_previous_secret_key = SECRET.into()),
            true,
        ),
        (token_config(|c| c.rsa_public_key = RSA_PUBLIC.into()), true),
        (
            token_config(|c| c.ecdsa_public_key = EC256_PUBLIC.into()),
            true,
        ),
    ];
    for (config, want) in table {
        let v = TokenVerifier::new(&config, &SubscriptionTokenConfig::default()).unwrap();
        assert_eq!(v.has_connection_keys(), want, "{config:?}");
    }
    // Subscription keys are not connection keys.
    let v = TokenVerifier::new(
        &TokenConfig::default(),
        &SubscriptionTokenConfig {
            enabled: true,
            token: token_config(|c| c.hmac_secret_key = SUB_SECRET.into()),
        },
    )
    .unwrap();
    assert!(!v.has_connection_keys());
}

#[test]
fn crypto_provider_install_is_idempotent() {
    crate::install_crypto_provider();
    crate::install_crypto_provider();
    let v = verifier(|c| c.hmac_secret_key = SECRET.into());
    let claims = v
        .verify_connection(&hs256(json!({"sub": "7"})), NOW)
        .unwrap();
    assert_eq!(claims.user, "7");
}

#[test]
fn reason_labels_are_distinct_snake_case() {
    let mut seen = std::collections::HashSet::new();
    for reason in InvalidReason::ALL {
        let label = reason.as_str();
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{label}"
        );
        assert!(seen.insert(label), "duplicate label {label}");
        assert_eq!(TokenError::Invalid(reason).as_str(), label);
    }
    assert_eq!(TokenError::Expired.as_str(), "expired");
    assert_eq!(TokenError::Expired.to_string(), "token expired");
    assert_eq!(
        TokenError::Invalid(InvalidReason::NotYetValid).to_string(),
        "invalid token: not_yet_valid"
    );
}

#[test]
fn debug_never_prints_secrets() {
    let v = verifier(|c| c.hmac_secret_key = SECRET.into());
    let text = format!("{v:?}");
    assert!(!text.contains(SECRET), "{text}");
}

mod property {
    use proptest::prelude::*;

    use super::*;

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any single-character change to a signed token is refused.
        #[test]
        fn any_changed_character_is_rejected(position in any::<prop::sample::Index>(), replacement in any::<prop::sample::Index>()) {
            let v = verifier(|c| c.hmac_secret_key = SECRET.into());
            let token = hs256(json!({"sub": "42", "info": {"admin": false}}));
            let mut bytes = token.clone().into_bytes();
            let at = position.index(bytes.len());
            let mut new = ALPHABET[replacement.index(ALPHABET.len())];
            if new == bytes[at] {
                new = if new == b'A' { b'B' } else { b'A' };
            }
            bytes[at] = new;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(v.verify_connection(&changed, NOW).is_err(), "accepted {changed}");
        }
    }
}
