//! herald-identity against HTTP servers started by the test on loopback: a
//! JWKS endpoint whose key set the test rotates, and an introspection double
//! for the edges a real authorization server will not produce on demand
//! (5xx, a hang, a malformed answer). The real authorization server
//! (oidc-provider) is driven from tests/sdk/js/idp.test.mjs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_auth::{InvalidReason, SubscriptionTokenConfig, TokenConfig, TokenError, TokenVerifier};
use herald_identity::{
    Authenticator, Introspected, IntrospectionConfig, BREAKER_PAUSE, BREAKER_THRESHOLD,
    UNKNOWN_KID_REFETCH_INTERVAL,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const EC256_PRIVATE: &str = include_str!("../../auth/testdata/ec256_private.pem");
const ED25519_PRIVATE: &str = include_str!("../../auth/testdata/ed25519_private.pem");
const JWKS: &str = include_str!("../../auth/testdata/jwks_issuer_a.json");

// ---- a tiny HTTP/1.1 server ----

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Answer {
    fn json(body: Value) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

type Responder = Box<dyn Fn(&Seen) -> Answer + Send + Sync>;

struct TestServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Arc<Mutex<Responder>>,
    hits: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start(
        path: &str,
        responder: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Responder>> = Arc::new(Mutex::new(Box::new(responder)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, r, h) = (seen.clone(), responder.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, r, h) = (s.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    s.lock().push(request.clone());
                    let answer = (r.lock())(&request);
                    tokio::time::sleep(answer.delay).await;
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (name, value) in &answer.headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(answer.body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            seen,
            responder,
            hits,
        }
    }

    fn respond(&self, responder: impl Fn(&Seen) -> Answer + Send + Sync + 'static) {
        *self.responder.lock() = Box::new(responder);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

// ---- helpers ----

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The test key set with every kid renamed through `rename` (None drops it).
fn key_set(rename: impl Fn(&str) -> Option<String>) -> Value {
    let mut set: Value = serde_json::from_str(JWKS).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.retain_mut(|key| match rename(key["kid"].as_str().unwrap()) {
        Some(kid) => {
            key["kid"] = Value::from(kid);
            true
        }
        None => false,
    });
    set
}

fn es256(kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn eddsa(kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn jwks_auth(url: &str) -> Authenticator {
    herald_auth::install_crypto_provider();
    let token = TokenConfig {
        jwks_public_endpoint: url.into(),
        ..Default::default()
    };
    let verifier = TokenVerifier::new(&token, &SubscriptionTokenConfig::default()).unwrap();
    Authenticator::new(verifier, &IntrospectionConfig::default()).unwrap()
}

fn introspection_auth(url: &str, edit: impl FnOnce(&mut IntrospectionConfig)) -> Authenticator {
    herald_auth::install_crypto_provider();
    let mut config = IntrospectionConfig {
        endpoint: url.into(),
        client_id: "herald rs".into(),
        client_secret: "s3cret:with/odd=chars".into(),
        ..Default::default()
    };
    edit(&mut config);
    // HMAC keys too: JWTs are verified locally, the rest introspected.
    let token = TokenConfig {
        hmac_secret_key: "identity-test-secret-0123456789abcdef".into(),
        ..Default::default()
    };
    let verifier = TokenVerifier::new(&token, &SubscriptionTokenConfig::default()).unwrap();
    Authenticator::new(verifier, &config).unwrap()
}

fn metric(name: &str, label: Option<(&str, &str)>) -> f64 {
    let mut total = 0.0;
    for family in prometheus::gather().iter().filter(|f| f.name() == name) {
        let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        for m in family.get_metric() {
            let selected = label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            });
            if selected {
                total += if counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
            }
        }
    }
    total
}

// ---- JWKS ----

#[tokio::test]
async fn jwks_keys_rotate_and_unknown_kids_share_one_fetch() {
    let server = TestServer::start("/jwks", |_| {
        let mut answer = Answer::json(key_set(|kid| Some(kid.to_owned())));
        answer
            .headers
            .push(("Cache-Control", "public, max-age=3600".into()));
        answer
    })
    .await;
    let auth = jwks_auth(&server.url);
    let claims = json!({"sub": "alice", "exp": now() + 60});

    // Before any set is loaded the fast path cannot decide; the async path
    // fetches the set itself (as when the provider was down at start).
    assert!(auth
        .connection_now(&es256("ec", claims.clone()), now())
        .is_none());
    assert_eq!(
        auth.connection(&es256("ec", claims.clone()), now())
            .await
            .map(|p| p.claims.user),
        Ok("alice".into())
    );
    let seen = server.seen.lock()[0].clone();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/jwks"));
    assert_eq!(server.hits(), 1);

    let user = |r: Result<herald_identity::Principal, TokenError>| r.map(|p| p.claims.user);
    assert_eq!(
        user(auth.connection(&es256("ec", claims.clone()), now()).await),
        Ok("alice".into())
    );
    assert_eq!(
        user(auth.connection(&eddsa("ed", claims.clone()), now()).await),
        Ok("alice".into())
    );
    assert_eq!(server.hits(), 1, "known kids are served from memory");

    // Rotation: the provider adds "ec-2026" (the same key material, a new
    // kid) and drops "ec". The unknown kid triggers a refetch, once the
    // rate-limit window since the last fetch has passed.
    server.respond(|_| {
        Answer::json(key_set(|kid| match kid {
            "ec" => Some("ec-2026".into()),
            other => Some(other.to_owned()),
        }))
    });
    let rotated = es256("ec-2026", claims.clone());
    assert_eq!(
        auth.connection(&rotated, now()).await.unwrap_err(),
        TokenError::Unavailable,
        "within the refetch interval an unknown kid is a temporary refusal"
    );
    assert_eq!(server.hits(), 1, "no fetch inside the interval");
    tokio::time::sleep(UNKNOWN_KID_REFETCH_INTERVAL).await;

    // A flood of tokens with random kids, all at once: one fetch between
    // them; the rotated kid rides on it.
    let mut flood = Vec::new();
    for i in 0..200 {
        let token = es256(&format!("random-{i}-{}", rand_suffix(i)), claims.clone());
        flood.push(async move { token });
    }
    let auth = Arc::new(auth);
    let mut tasks = Vec::new();
    for token in flood {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let token = token.await;
            auth.connection(&token, now()).await.map(|_| ())
        }));
    }
    let rotated_task = {
        let auth = auth.clone();
        let rotated = rotated.clone();
        tokio::spawn(async move {
            auth.connection(&rotated, now())
                .await
                .map(|p| p.claims.user)
        })
    };
    let mut invalid = 0;
    let mut temporary = 0;
    for task in tasks {
        match task.await.unwrap() {
            Err(TokenError::Invalid(InvalidReason::UnknownKey)) => invalid += 1,
            Err(TokenError::Unavailable) => temporary += 1,
            other => panic!("a random kid must not verify: {other:?}"),
        }
    }
    assert_eq!(invalid + temporary, 200);
    assert!(
        invalid > 0,
        "the ones that waited on the fresh fetch are invalid"
    );
    assert_eq!(server.hits(), 2, "200 unknown kids cost one fetch");
    assert_eq!(rotated_task.await.unwrap(), Ok("alice".into()));

    // The old kid is gone from the set now.
    assert_eq!(
        auth.connection(&es256("ec", claims.clone()), now())
            .await
            .unwrap_err(),
        TokenError::Unavailable,
        "inside the interval again: temporary"
    );
    tokio::time::sleep(UNKNOWN_KID_REFETCH_INTERVAL).await;
    assert_eq!(
        auth.connection(&es256("ec", claims.clone()), now())
            .await
            .unwrap_err(),
        TokenError::Invalid(InvalidReason::UnknownKey),
        "after a fresh fetch the removed kid is invalid"
    );
    assert_eq!(server.hits(), 3);
}

fn rand_suffix(i: usize) -> String {
    format!("{:x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[tokio::test]
async fn jwks_outage_keeps_the_last_good_set() {
    let server = TestServer::start("/keys", |_| {
        Answer::json(key_set(|kid| Some(kid.to_owned())))
    })
    .await;
    let auth = jwks_auth(&server.url);
    auth.load_keys().await;
    let stale_before = metric("herald_auth_jwks_stale", None);
    let errors_before = metric("herald_auth_jwks_fetches_total", Some(("result", "error")));

    for (name, answer) in [
        ("503", Answer::status(503)),
        ("not a key set", Answer::json(json!({"hello": "world"}))),
        (
            "no usable key",
            Answer::json(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]})),
        ),
    ] {
        server.respond(move |_| answer.clone());
        let source = &auth.jwks_sources()[0];
        assert!(source.refresh().await.is_err(), "{name}: the fetch fails");
        let claims = json!({"sub": "bob"});
        assert_eq!(
            auth.connection(&es256("ec", claims), now())
                .await
                .map(|p| p.claims.user),
            Ok("bob".into()),
            "{name}: the last good set still verifies"
        );
    }
    assert_eq!(
        metric("herald_auth_jwks_stale", None),
        stale_before + 1.0,
        "one source is stale"
    );
    assert_eq!(
        metric("herald_auth_jwks_fetches_total", Some(("result", "error"))),
        errors_before + 3.0
    );

    // Unknown kid while down: temporary (the fetch failed), not invalid.
    tokio::time::sleep(UNKNOWN_KID_REFETCH_INTERVAL).await;
    assert_eq!(
        auth.connection(&es256("new", json!({})), now())
            .await
            .unwrap_err(),
        TokenError::Unavailable
    );

    server.respond(|_| Answer::json(key_set(|kid| Some(kid.to_owned()))));
    auth.jwks_sources()[0].refresh().await.unwrap();
    assert_eq!(
        metric("herald_auth_jwks_stale", None),
        stale_before,
        "fresh again"
    );
}

// ---- introspection ----

fn active(user: &str, exp: u64, scope: &str) -> Answer {
    Answer::json(
        json!({"active": true, "client_id": user, "exp": exp, "scope": scope, "token_type": "Bearer"}),
    )
}

#[tokio::test]
async fn introspection_request_shape_cache_and_scopes() {
    let exp = now() + 3600;
    let server = TestServer::start("/introspect", move |seen| {
        if seen.body.contains("token=good") {
            active("svc", exp, "openid herald:sub:news herald:sub:sport")
        } else {
            Answer::json(json!({"active": false}))
        }
    })
    .await;
    let auth = introspection_auth(&server.url, |c| {
        c.subscribe_scope_prefix = "herald:sub:".into()
    });

    let principal = auth.connection("good+token/=", now()).await.unwrap();
    assert_eq!(principal.claims.user, "svc");
    assert_eq!(principal.claims.exp, Some(exp));
    assert_eq!(principal.channels, ["news", "sport"]);
    assert!(principal.introspected);

    let seen = server.seen.lock()[0].clone();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/introspect");
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // RFC 6749 §2.3.1: id and secret form-encoded, then Basic.
    assert_eq!(
        seen.header("authorization"),
        Some(
            format!(
                "Basic {}",
                base64_std("herald+rs:s3cret%3Awith%2Fodd%3Dchars")
            )
            .as_str()
        )
    );
    assert_eq!(
        seen.body,
        "token=good%2Btoken%2F%3D&token_type_hint=access_token"
    );

    // Cached: no second request, and the fast path answers without waiting.
    let again = auth.connection_now("good+token/=", now()).unwrap().unwrap();
    assert_eq!(again, principal);
    assert_eq!(server.hits(), 1);

    // Inactive, and cached as such (negative cache).
    for _ in 0..3 {
        assert_eq!(
            auth.connection("revoked", now()).await.unwrap_err(),
            TokenError::Invalid(InvalidReason::Inactive)
        );
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(auth.still_active("good+token/=", now()).await, Some(true));
    assert_eq!(auth.still_active("revoked", now()).await, Some(false));

    // JWTs are verified locally, never sent to the authorization server.
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "carol"}),
        &EncodingKey::from_secret(b"identity-test-secret-0123456789abcdef"),
    )
    .unwrap();
    assert_eq!(
        auth.connection(&hmac, now()).await.unwrap().claims.user,
        "carol"
    );
    assert_eq!(server.hits(), 2);
}

fn base64_std(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn introspection_cache_never_outlives_exp_or_cache_ttl() {
    let exp = now() + 2;
    let server = TestServer::start("/i", move |_| active("svc", exp, "")).await;
    let auth = introspection_auth(&server.url, |_| {});
    auth.connection("short-lived", now()).await.unwrap();
    auth.connection("short-lived", now()).await.unwrap();
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // Past exp: asked again (and the answer is now past exp: inactive).
    assert_eq!(
        auth.connection("short-lived", now()).await.unwrap_err(),
        TokenError::Invalid(InvalidReason::Inactive)
    );
    assert_eq!(server.hits(), 2, "the cached answer expired with the token");

    let long = now() + 3600;
    let server = TestServer::start("/i", move |_| active("svc", long, "")).await;
    let auth = introspection_auth(&server.url, |c| c.cache_ttl = Duration::from_secs(1));
    auth.connection("long-lived", now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    auth.connection("long-lived", now()).await.unwrap();
    assert_eq!(server.hits(), 2, "cache_ttl bounds an active answer");
}

#[tokio::test]
async fn introspection_failures_are_temporary_and_never_cached() {
    let server = TestServer::start("/i", |_| Answer::status(503)).await;
    let errors_before = metric(
        "herald_auth_introspection_requests_total",
        Some(("result", "error")),
    );
    let table: Vec<(&str, Answer)> = vec![
        ("503", Answer::status(503)),
        ("500", Answer::status(500)),
        ("401: herald's credentials refused", Answer::status(401)),
        ("no active member", Answer::json(json!({"sub": "x"}))),
        (
            "active as a string",
            Answer::json(json!({"active": "true"})),
        ),
        (
            "exp as a string",
            Answer::json(json!({"active": true, "exp": "9999999999"})),
        ),
        (
            "HTML",
            Answer {
                body: "<html>".into(),
                ..Answer::status(200)
            },
        ),
    ];
    let count = table.len();
    for (name, answer) in table {
        server.respond(move |_| answer.clone());
        // A new client per row: two failures each stay under the breaker's
        // threshold, so every lookup is a request.
        let auth = introspection_auth(&server.url, |_| {});
        assert_eq!(
            auth.connection("some-opaque-token", now())
                .await
                .unwrap_err(),
            TokenError::Unavailable,
            "{name}"
        );
        assert_eq!(
            auth.still_active("some-opaque-token", now()).await,
            None,
            "{name}"
        );
    }
    assert_eq!(server.hits(), 2 * count, "errors are never cached");
    assert!(
        metric(
            "herald_auth_introspection_requests_total",
            Some(("result", "error"))
        ) >= errors_before + (2 * count) as f64
    );

    // A hanging server: refused as temporary after the 2 s timeout.
    server.respond(|_| Answer {
        delay: Duration::from_secs(5),
        ..active("svc", now() + 60, "")
    });
    let auth = introspection_auth(&server.url, |_| {});
    let started = Instant::now();
    assert_eq!(
        auth.connection("slow-token", now()).await.unwrap_err(),
        TokenError::Unavailable
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // Nobody listening at all.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/i", listener.local_addr().unwrap())
    };
    let auth = introspection_auth(&closed, |_| {});
    assert_eq!(
        auth.connection("x", now()).await.unwrap_err(),
        TokenError::Unavailable
    );
}

/// A failing authorization server is not asked by every new connection: after
/// BREAKER_THRESHOLD failures in a row lookups fail at once for a pause, then
/// one request probes it, and an answer closes the breaker.
#[tokio::test]
async fn a_failing_authorization_server_is_paused_then_probed() {
    let server = TestServer::start("/i", |_| Answer::status(503)).await;
    let auth = introspection_auth(&server.url, |_| {});
    let skipped = || {
        metric(
            "herald_auth_introspection_requests_total",
            Some(("result", "skipped")),
        )
    };
    let threshold = BREAKER_THRESHOLD as usize;
    for i in 0..threshold {
        assert_eq!(
            auth.connection(&format!("token-{i}"), now()).await,
            Err(TokenError::Unavailable)
        );
    }
    assert_eq!(server.hits(), threshold);

    // Paused: 20 new connections, no request, still temporary refusals.
    let skipped_before = skipped();
    for i in 0..20 {
        assert_eq!(
            auth.connection(&format!("storm-{i}"), now()).await,
            Err(TokenError::Unavailable)
        );
    }
    assert_eq!(server.hits(), threshold, "nothing sent during the pause");
    assert!(skipped() >= skipped_before + 20.0);

    // The server recovers; after the pause one probe gets through and closes
    // the breaker, and the next lookups are requests again.
    server.respond(|_| active("svc", now() + 60, ""));
    tokio::time::sleep(BREAKER_PAUSE + Duration::from_millis(100)).await;
    assert_eq!(
        auth.connection("probe", now()).await.map(|p| p.claims.user),
        Ok("svc".into())
    );
    assert_eq!(
        auth.connection("after", now()).await.map(|p| p.claims.user),
        Ok("svc".into())
    );
    assert_eq!(server.hits(), threshold + 2);
}

#[tokio::test]
async fn concurrent_lookups_of_one_token_share_one_request() {
    let server = TestServer::start("/i", |_| Answer {
        delay: Duration::from_millis(300),
        ..active("svc", now() + 60, "")
    })
    .await;
    let auth = Arc::new(introspection_auth(&server.url, |_| {}));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            auth.connection("shared-token", now())
                .await
                .map(|p| p.claims.user)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok("svc".into()));
    }
    assert_eq!(server.hits(), 1);
    assert!(matches!(
        auth.introspector().unwrap().cached("shared-token"),
        Some(Introspected::Active { ref user, .. }) if user == "svc"
    ));
}

/// Subscription tokens from their own JWKS source wait for one refetch like
/// connection tokens: a kid published since the last fetch verifies, one the
/// fresh set lacks is invalid, and inside the rate-limit window the answer is
/// temporary.
#[tokio::test]
async fn subscription_tokens_wait_for_one_refetch() {
    let server = TestServer::start("/sub-jwks", |_| {
        Answer::json(key_set(|kid| (kid == "ec").then(|| kid.to_owned())))
    })
    .await;
    herald_auth::install_crypto_provider();
    let token = TokenConfig {
        hmac_secret_key: "identity-test-secret-0123456789abcdef".into(),
        ..Default::default()
    };
    let subscription = SubscriptionTokenConfig {
        enabled: true,
        token: TokenConfig {
            jwks_public_endpoint: server.url.clone(),
            ..Default::default()
        },
    };
    let verifier = TokenVerifier::new(&token, &subscription).unwrap();
    let auth = Authenticator::new(verifier, &IntrospectionConfig::default()).unwrap();
    let claims = json!({"sub": "alice", "channel": "$news", "exp": now() + 60});
    let channel = |r: Result<herald_auth::SubscriptionClaims, TokenError>| r.map(|c| c.channel);

    // No set loaded yet: the fast path cannot decide, the first token
    // fetches it.
    assert_eq!(
        auth.subscription_now(&es256("ec", claims.clone()), now()),
        None
    );
    assert_eq!(
        channel(auth.subscription(&es256("ec", claims.clone()), now()).await),
        Ok("$news".into())
    );
    assert_eq!(server.hits(), 1);
    assert_eq!(
        channel(
            auth.subscription_now(&es256("ec", claims.clone()), now())
                .expect("a known kid is decided without waiting")
        ),
        Ok("$news".into())
    );

    // The provider publishes "ed"; inside the window the answer is temporary.
    server.respond(|_| Answer::json(key_set(|kid| Some(kid.to_owned()))));
    assert_eq!(
        auth.subscription(&eddsa("ed", claims.clone()), now()).await,
        Err(TokenError::Unavailable)
    );
    assert_eq!(server.hits(), 1, "no fetch inside the interval");
    tokio::time::sleep(UNKNOWN_KID_REFETCH_INTERVAL).await;
    assert_eq!(
        channel(auth.subscription(&eddsa("ed", claims.clone()), now()).await),
        Ok("$news".into()),
        "a kid published since the last fetch verifies after one refetch"
    );
    assert_eq!(server.hits(), 2);

    // A kid the fresh set lacks is refused for good, not retried forever.
    tokio::time::sleep(UNKNOWN_KID_REFETCH_INTERVAL).await;
    assert_eq!(
        auth.subscription(&es256("never-published", claims), now())
            .await,
        Err(TokenError::Invalid(InvalidReason::UnknownKey))
    );
    assert_eq!(server.hits(), 3);
}
