//! Entry point of the `token_header` fuzz target (`fuzz/`), also driven by
//! the property tests below so `cargo test` covers the same path: the JWT
//! header pre-parser (`alg`, `kid`, `typ`, forbidden headers) and full
//! verification, against a fixed HMAC configuration.
//!
//! Not an API: hidden from the docs and free to change.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::token::check_header;
use crate::{
    ConnectionClaims, InvalidReason, SubscriptionClaims, SubscriptionTokenConfig, TokenConfig,
    TokenError, TokenVerifier,
};

/// The clock of every verification here (unix seconds).
pub const NOW: u64 = 1_700_000_000;

/// `client.token.hmac_secret_key` of the fixed configuration.
const SECRET: &str = "herald-fuzz-secret-0123456789abcdef";
/// `client.token.hmac_previous_secret_key` of the fixed configuration.
const PREVIOUS: &str = "herald-fuzz-previous-0123456789abcd";

/// The payload signed under a fuzzed header when the input gives none.
const PAYLOAD: &str = r#"{"sub":"fuzz","exp":1700003600,"info":{"k":[1,2]}}"#;

/// What the verifier made of one input.
#[derive(Debug)]
pub struct TokenOutcome {
    /// The header pre-parser on the input's header part, as JSON text.
    pub header: Result<Algorithm, InvalidReason>,
    /// The whole input as a token (when UTF-8), verified as a connection
    /// token.
    pub connection: Option<Result<ConnectionClaims, TokenError>>,
    /// The whole input as a token (when UTF-8), verified as a subscription
    /// token.
    pub subscription: Option<Result<SubscriptionClaims, TokenError>>,
    /// A token of the header part and the payload part, correctly signed
    /// with HS256 and the configured secret, verified as a connection token.
    pub signed: Result<ConnectionClaims, TokenError>,
    /// The same token verified as a subscription token.
    pub signed_subscription: Result<SubscriptionClaims, TokenError>,
}

/// Runs `data` through the token checks, never panicking unless an
/// invariant breaks. `data` is used twice:
///
/// - as a whole token (`header.payload.signature`), if it is UTF-8;
/// - as JSON text: before the first NUL byte a header, after it a payload
///   (a fixed valid payload without a NUL), signed with the right key so
///   the fuzzer reaches the claims with a valid signature.
pub fn fuzz_token(data: &[u8]) -> TokenOutcome {
    let verifier = verifier();
    let text = std::str::from_utf8(data).ok();
    let connection = text.map(|token| verifier.verify_connection(token, NOW));
    let subscription = text.map(|token| verifier.verify_subscription(token, NOW));

    let (header_json, payload_json) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, PAYLOAD.as_bytes()),
    };
    let header = check_header(header_json).map(|(alg, _kid)| alg);
    let token = sign(header_json, payload_json, SECRET);
    let signed = verifier.verify_connection(&token, NOW);
    let signed_subscription = verifier.verify_subscription(&token, NOW);

    // The pre-parser decides first: its refusal is the token's.
    for refusal in [signed.as_ref().err(), signed_subscription.as_ref().err()] {
        match (&header, refusal) {
            (Err(reason), got) => assert_eq!(got, Some(&TokenError::Invalid(*reason))),
            // Only HS256 tokens were signed right; other HMAC algorithms
            // fail the signature, other families have no key.
            (Ok(Algorithm::HS256), got) => assert!(
                !matches!(
                    got,
                    Some(TokenError::Invalid(
                        InvalidReason::Signature | InvalidReason::Algorithm
                    ))
                ),
                "a right HS256 signature refused: {got:?}"
            ),
            (Ok(Algorithm::HS384 | Algorithm::HS512), got) => {
                assert_eq!(got, Some(&TokenError::Invalid(InvalidReason::Signature)));
            }
            (Ok(_), got) => {
                assert_eq!(got, Some(&TokenError::Invalid(InvalidReason::Algorithm)));
            }
        }
    }
    if payload_json == PAYLOAD.as_bytes() && header == Ok(Algorithm::HS256) {
        assert!(signed.is_ok(), "a valid token refused: {signed:?}");
    }

    TokenOutcome {
        header,
        connection,
        subscription,
        signed,
        signed_subscription,
    }
}

/// `header.payload.signature` with the signature of `secret` under HS256,
/// whatever the header says.
fn sign(header_json: &[u8], payload_json: &[u8], secret: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(payload_json)
    );
    let key = EncodingKey::from_secret(secret.as_bytes());
    // HMAC signing cannot fail; an empty signature would only be refused.
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap_or_default();
    format!("{message}.{signature}")
}

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let token = TokenConfig {
            hmac_secret_key: SECRET.to_owned(),
            hmac_previous_secret_key: PREVIOUS.to_owned(),
            ..TokenConfig::default()
        };
        // Valid by construction: two long HMAC secrets, default leeway.
        TokenVerifier::new(&token, &SubscriptionTokenConfig::default())
            .expect("the fixed fuzz config is valid")
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;

    /// A header as JSON text.
    fn header_text(header: &Map<String, Value>) -> String {
        Value::Object(header.clone()).to_string()
    }

    /// What `check_header` must answer for `header`, written out from the
    /// rules rather than the code.
    fn expected(header: &Map<String, Value>) -> Result<Algorithm, InvalidReason> {
        let forbidden = ["crit", "jku", "x5u", "jwk", "x5c"];
        if forbidden.iter().any(|name| header.contains_key(*name)) {
            return Err(InvalidReason::ForbiddenHeader);
        }
        match header.get("kid") {
            None => {}
            Some(Value::String(kid)) if kid.len() <= 128 => {}
            Some(_) => return Err(InvalidReason::Malformed),
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(t))
                if ["jwt", "at+jwt", "application/at+jwt"].contains(&t.to_lowercase().as_str()) => {
            }
            Some(Value::String(_)) => return Err(InvalidReason::Type),
            Some(_) => return Err(InvalidReason::Malformed),
        }
        match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => Ok(Algorithm::HS256),
            Some("HS384") => Ok(Algorithm::HS384),
            Some("HS512") => Ok(Algorithm::HS512),
            Some("RS256") => Ok(Algorithm::RS256),
            Some("ES256") => Ok(Algorithm::ES256),
            Some("PS512") => Ok(Algorithm::PS512),
            Some("EdDSA") => Ok(Algorithm::EdDSA),
            _ => Err(InvalidReason::Algorithm),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,140}".prop_map(Value::from),
            Just(json!(["a", 1])),
            Just(json!({"k": "v"})),
        ]
    }

    /// Headers made of the members the pre-parser looks at, with values of
    /// every JSON type.
    fn header() -> impl Strategy<Value = Map<String, Value>> {
        let alg = prop_oneof![
            Just("HS256"),
            Just("HS384"),
            Just("HS512"),
            Just("RS256"),
            Just("ES256"),
            Just("PS512"),
            Just("EdDSA"),
            Just("none"),
            Just("None"),
            Just("hs256"),
            Just(" HS256"),
            Just(""),
        ]
        .prop_map(Value::from);
        let name = prop_oneof![
            Just("kid"),
            Just("typ"),
            Just("crit"),
            Just("jku"),
            Just("x5u"),
            Just("jwk"),
            Just("x5c"),
            Just("cty"),
            Just("x5t"),
        ];
        (
            prop::option::weighted(0.9, prop_oneof![4 => alg, 1 => json_value()]),
            // Around the 128-byte limit too.
            prop::option::weighted(
                0.5,
                prop_oneof!["[ -~]{0,20}", "[a-z]{126,130}", ".{30,40}"].prop_map(Value::from),
            ),
            prop::collection::vec((name, json_value()), 0..3),
        )
            .prop_map(|(alg, kid, extra)| {
                let mut header = Map::new();
                if let Some(alg) = alg {
                    header.insert("alg".into(), alg);
                }
                if let Some(kid) = kid {
                    header.insert("kid".into(), kid);
                }
                for (name, value) in extra {
                    header.insert(name.into(), value);
                }
                header
            })
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest! {
        /// Any text, and anything shaped like a token, is refused and never
        /// panics the verifier.
        #[test]
        fn arbitrary_tokens_are_refused(
            text in prop_oneof![
                any::<String>(),
                "[A-Za-z0-9_.-]{0,300}",
                (
                    prop::collection::vec(any::<u8>(), 0..80),
                    prop::collection::vec(any::<u8>(), 0..80),
                    prop::collection::vec(any::<u8>(), 0..40),
                )
                    .prop_map(|(h, p, s)| format!("{}.{}.{}", b64(&h), b64(&p), b64(&s))),
                (header(), prop::collection::vec(any::<u8>(), 32..=32))
                    .prop_map(|(h, s)| format!("{}.{}.{}", b64(header_text(&h).as_bytes()), b64(PAYLOAD.as_bytes()), b64(&s))),
            ],
        ) {
            let out = fuzz_token(text.as_bytes());
            prop_assert!(matches!(out.connection, Some(Err(_))), "{:?}", out.connection);
            prop_assert!(matches!(out.subscription, Some(Err(_))), "{:?}", out.subscription);
        }

        /// Arbitrary bytes as a header (and a payload after a NUL): no
        /// panic, and the invariants `fuzz_token` checks hold.
        #[test]
        fn arbitrary_header_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let out = fuzz_token(&data);
            prop_assert_eq!(out.connection.is_some(), std::str::from_utf8(&data).is_ok());
        }

        /// The pre-parser answers what the rules say for headers of any
        /// members, and a rightly signed token is accepted exactly when
        /// its header is an HS256 one.
        #[test]
        fn headers_are_judged_by_the_rules(header in header()) {
            let text = header_text(&header);
            let want = expected(&header);
            let out = fuzz_token(text.as_bytes());
            prop_assert_eq!(out.header, want);
            prop_assert_eq!(out.signed.is_ok(), want == Ok(Algorithm::HS256));
            if let Ok(claims) = &out.signed {
                prop_assert_eq!(claims.user.as_str(), "fuzz");
            }
        }

        /// An HS256 token with any `kid` is accepted only when signed with
        /// a configured key (current or previous), and only when the `kid`
        /// is at most 128 bytes.
        #[test]
        fn any_kid_is_accepted_only_with_the_right_key(
            kid in any::<String>(),
            long_kid in "[a-z]{120,140}",
            key in prop_oneof![
                Just(SECRET.to_owned()),
                Just(PREVIOUS.to_owned()),
                "[ -~]{32,48}",
            ],
            user in "[a-z0-9]{0,12}",
        ) {
            let right = key == SECRET || key == PREVIOUS;
            for kid in [kid, long_kid] {
                let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string();
                let payload = json!({"sub": user, "exp": NOW + 60}).to_string();
                let token = sign(header.as_bytes(), payload.as_bytes(), &key);
                let got = fuzz_token(token.as_bytes()).connection;
                let want = if kid.len() > 128 {
                    Err(TokenError::Invalid(InvalidReason::Malformed))
                } else if right {
                    Ok(user.clone())
                } else {
                    Err(TokenError::Invalid(InvalidReason::Signature))
                };
                prop_assert_eq!(got.map(|r| r.map(|c| c.user)), Some(want));
            }
        }
    }
}
