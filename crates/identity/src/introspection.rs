//! OAuth 2.0 Token Introspection (RFC 7662) for opaque access tokens.
//!
//! The token is POSTed form-encoded with HTTP Basic client authentication
//! (RFC 6749 §2.3.1) over verified TLS. Answers are cached under the token's
//! SHA-256 — never the token itself — for at most min(`cache_ttl`, `exp`),
//! inactive answers for at most [`NEGATIVE_TTL`]; concurrent lookups of one
//! token share one request. Errors are never cached: with the server down,
//! new connections are refused as temporary and cached answers keep working.
//! After [`BREAKER_THRESHOLD`] failed requests in a row the server is not
//! asked for a pause (from [`BREAKER_PAUSE`], doubling to 4 s), then one
//! request probes it: a reconnect storm does not hammer a failing server.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::http;
use crate::metrics::METRICS;

/// Longest an inactive answer is cached.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Most answers cached; past it expired entries are dropped, and when none
/// is, new answers are not cached.
const MAX_CACHED: usize = 65_536;

use herald_breaker::Breaker;
pub use herald_breaker::{BREAKER_PAUSE, BREAKER_THRESHOLD};

/// Config section `client.introspection`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntrospectionConfig {
    /// The introspection endpoint; empty = opaque tokens are refused.
    pub endpoint: String,
    /// herald's own client id at the authorization server.
    pub client_id: String,
    /// herald's client secret.
    pub client_secret: String,
    /// Longest an active answer is cached (never past the token's `exp`).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Scopes starting with this prefix grant subscription to the channel
    /// named by the rest; empty = scopes grant nothing.
    pub subscribe_scope_prefix: String,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            cache_ttl: Duration::from_secs(60),
            subscribe_scope_prefix: String::new(),
        }
    }
}

// Secrets never show in `{:?}` of the config.
impl fmt::Debug for IntrospectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.client_secret.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("IntrospectionConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &secret)
            .field("cache_ttl", &self.cache_ttl)
            .field("subscribe_scope_prefix", &self.subscribe_scope_prefix)
            .finish()
    }
}

/// What the authorization server said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspected {
    /// Active: who it is, until when, and the channels its scopes grant.
    Active {
        /// `sub`, else `client_id` (client-credentials tokens have no `sub`).
        user: String,
        /// `exp` (unix seconds).
        exp: Option<u64>,
        /// Channels granted by scopes with the configured prefix.
        channels: Vec<String>,
    },
    /// `active: false`, or already past `exp`/before `nbf`.
    Inactive,
}

/// Why no answer could be had (never cached).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token introspection failed: {0}")]
pub struct IntrospectionError(String);

type Lookup = Shared<BoxFuture<'static, Result<Introspected, IntrospectionError>>>;

struct Cached {
    answer: Introspected,
    until: Instant,
}

/// The introspection client with its cache.
pub struct Introspector {
    request: Arc<RequestParts>,
    cache_ttl: Duration,
    scope_prefix: String,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    inflight: Mutex<HashMap<[u8; 32], Lookup>>,
}

impl fmt::Debug for Introspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspector")
            .field("endpoint", &self.request.endpoint)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

struct RequestParts {
    http: reqwest::Client,
    endpoint: String,
    /// `Basic base64(urlencode(id):urlencode(secret))`.
    authorization: String,
    breaker: Breaker,
}

impl Introspector {
    pub(crate) fn new(config: &IntrospectionConfig, http: reqwest::Client) -> Self {
        let credentials = format!(
            "{}:{}",
            form_encode(&config.client_id),
            form_encode(&config.client_secret)
        );
        Self {
            request: Arc::new(RequestParts {
                http,
                endpoint: config.endpoint.clone(),
                authorization: format!("Basic {}", STANDARD.encode(credentials)),
                breaker: Breaker::new(),
            }),
            cache_ttl: config.cache_ttl,
            scope_prefix: config.subscribe_scope_prefix.clone(),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `token`, if there is a fresh one. Counts a hit;
    /// a miss is counted by the [`Introspector::introspect`] that follows.
    pub fn cached(&self, token: &str) -> Option<Introspected> {
        let answer = self.cached_by_hash(&digest(token));
        if answer.is_some() {
            METRICS
                .introspection_cache
                .with_label_values(&["hit"])
                .inc();
        }
        answer
    }

    fn cached_by_hash(&self, hash: &[u8; 32]) -> Option<Introspected> {
        let cache = self.cache.lock();
        cache
            .get(hash)
            .filter(|entry| entry.until > Instant::now())
            .map(|entry| entry.answer.clone())
    }

    /// Asks the authorization server about `token` (or the cache). `now`:
    /// unix seconds, for `exp`/`nbf`.
    pub async fn introspect(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Introspected, IntrospectionError> {
        let hash = digest(token);
        if let Some(answer) = self.cached_by_hash(&hash) {
            METRICS
                .introspection_cache
                .with_label_values(&["hit"])
                .inc();
            return Ok(answer);
        }
        METRICS
            .introspection_cache
            .with_label_values(&["miss"])
            .inc();
        let lookup = {
            let mut inflight = self.inflight.lock();
            inflight
                .entry(hash)
                .or_insert_with(|| {
                    let request = self.request.clone();
                    let prefix = self.scope_prefix.clone();
                    let token = token.to_owned();
                    async move { request.send(&token, &prefix, now).await }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        let outcome = lookup.await;
        // Cached before the lookup is forgotten, so a caller arriving in
        // between finds one or the other.
        if let Ok(answer) = &outcome {
            self.remember(hash, answer, now);
        }
        self.inflight.lock().remove(&hash);
        outcome
    }

    fn remember(&self, hash: [u8; 32], answer: &Introspected, now: u64) {
        let ttl = match answer {
            Introspected::Active { exp, .. } => {
                let left = exp.map_or(self.cache_ttl, |exp| {
                    Duration::from_secs(exp.saturating_sub(now))
                });
                self.cache_ttl.min(left)
            }
            Introspected::Inactive => self.cache_ttl.min(NEGATIVE_TTL),
        };
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(&hash) {
            let now = Instant::now();
            cache.retain(|_, entry| entry.until > now);
            if cache.len() >= MAX_CACHED {
                return;
            }
        }
        cache.insert(
            hash,
            Cached {
                answer: answer.clone(),
                until: Instant::now() + ttl,
            },
        );
    }
}

impl RequestParts {
    async fn send(
        &self,
        token: &str,
        prefix: &str,
        now: u64,
    ) -> Result<Introspected, IntrospectionError> {
        if !self.breaker.admit(Instant::now()) {
            METRICS
                .introspection_requests
                .with_label_values(&["skipped"])
                .inc();
            return Err(IntrospectionError(
                "the authorization server failed repeatedly; not asked during the pause".into(),
            ));
        }
        let outcome = self
            .exchange(token)
            .await
            .and_then(|body| parse_answer(&body, prefix, now).map_err(IntrospectionError));
        let paused = self.breaker.record(outcome.is_ok(), Instant::now());
        if let Some(pause) = paused {
            warn!(
                endpoint = %self.endpoint,
                pause_ms = pause.as_millis() as u64,
                "token introspection failing: requests paused, then one probe"
            );
        }
        let result = match &outcome {
            Ok(Introspected::Active { .. }) => "active",
            Ok(Introspected::Inactive) => "inactive",
            Err(error) => {
                warn!(endpoint = %self.endpoint, error = %error.0, "token introspection failed");
                "error"
            }
        };
        METRICS
            .introspection_requests
            .with_label_values(&[result])
            .inc();
        outcome
    }

    async fn exchange(&self, token: &str) -> Result<Vec<u8>, IntrospectionError> {
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let response = self
            .http
            .post(&self.endpoint)
            .header(AUTHORIZATION, &self.authorization)
            .header(ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| IntrospectionError(http::describe(e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(IntrospectionError(
                "HTTP status 401: the authorization server refused herald's client credentials (client.introspection.client_id / client_secret)".into(),
            ));
        }
        if !status.is_success() {
            return Err(IntrospectionError(format!(
                "HTTP status {}",
                status.as_u16()
            )));
        }
        http::body(response).await.map_err(IntrospectionError)
    }
}

/// Reads an introspection answer. A missing or non-boolean `active`, or a
/// member of the wrong type, is an error, never "inactive" (RFC 7662 §2.2).
pub fn parse_answer(body: &[u8], prefix: &str, now: u64) -> Result<Introspected, String> {
    let answer: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| "the answer is not a JSON object".to_owned())?;
    let active = answer
        .get("active")
        .and_then(Value::as_bool)
        .ok_or_else(|| "the answer has no boolean \"active\"".to_owned())?;
    if !active {
        return Ok(Introspected::Inactive);
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match answer.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let time = |name: &str| -> Result<Option<u64>, String> {
        match answer.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("\"{name}\" is not a NumericDate")),
        }
    };
    let exp = time("exp")?;
    let nbf = time("nbf")?;
    if exp.is_some_and(|exp| exp <= now) || nbf.is_some_and(|nbf| nbf > now) {
        return Ok(Introspected::Inactive);
    }
    let user = match text("sub")? {
        Some(sub) => sub,
        None => text("client_id")?.unwrap_or_default(),
    };
    let channels = match text("scope")? {
        Some(scope) if !prefix.is_empty() => scope
            .split_ascii_whitespace()
            .filter_map(|s| s.strip_prefix(prefix))
            .filter(|channel| !channel.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Introspected::Active {
        user,
        exp,
        channels,
    })
}

fn digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut hash = [0; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn answers_table() {
        let active = |user: &str, exp: Option<u64>, channels: &[&str]| {
            Ok(Introspected::Active {
                user: user.into(),
                exp,
                channels: channels.iter().map(|c| c.to_string()).collect(),
            })
        };
        let table: Vec<(&str, &str, Result<Introspected, ()>)> = vec![
            (r#"{"active":false}"#, "", Ok(Introspected::Inactive)),
            (
                r#"{"active":false,"sub":"x"}"#,
                "",
                Ok(Introspected::Inactive),
            ),
            (r#"{"active":true,"sub":"42"}"#, "", active("42", None, &[])),
            (
                r#"{"active":true,"client_id":"svc","exp":1700000060,"scope":"openid herald:sub:news herald:sub:sport herald:sub: other"}"#,
                "herald:sub:",
                active("svc", Some(NOW + 60), &["news", "sport"]),
            ),
            (
                r#"{"active":true,"sub":"42","client_id":"svc","scope":"herald:sub:news"}"#,
                "",
                active("42", None, &[]),
            ),
            (
                r#"{"active":true,"exp":1699999999}"#,
                "",
                Ok(Introspected::Inactive),
            ),
            (
                r#"{"active":true,"exp":1700000000}"#,
                "",
                Ok(Introspected::Inactive),
            ),
            (
                r#"{"active":true,"nbf":1700000100}"#,
                "",
                Ok(Introspected::Inactive),
            ),
            (r#"{"active":true}"#, "", active("", None, &[])),
            (r#"{"active":"true"}"#, "", Err(())),
            (r#"{"sub":"42"}"#, "", Err(())),
            (r#"{"active":true,"exp":"1700000060"}"#, "", Err(())),
            (r#"{"active":true,"sub":42}"#, "", Err(())),
            (r#"{"active":true,"scope":["a"]}"#, "p:", Err(())),
            (r#"[true]"#, "", Err(())),
            ("<html>", "", Err(())),
        ];
        for (body, prefix, want) in table {
            let got = parse_answer(body.as_bytes(), prefix, NOW).map_err(|_| ());
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a-Z_0.9*"), "a-Z_0.9*");
        assert_eq!(form_encode("a b+c/d=é"), "a+b%2Bc%2Fd%3D%C3%A9");
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = IntrospectionConfig {
            client_secret: "s3cr3t-value".into(),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
