//! Fetching one JWKS source: at start, in the background as the provider's
//! Cache-Control says, and again when a token names a key not in the set
//! (single flight, at most once per [`UNKNOWN_KID_REFETCH_INTERVAL`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_auth::{JwkKeys, JwksSlot};
use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL};
use tracing::{info, warn};

use crate::http;
use crate::metrics::METRICS;

/// Shortest and longest time between background refreshes, whatever the
/// provider's Cache-Control says; the shortest also applies without one.
pub const REFRESH_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(5 * 60), Duration::from_secs(24 * 3600));

/// At most one fetch per source in this interval on behalf of unknown `kid`s,
/// so a flood of made-up key ids costs the provider one request.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Retry delays after a failed background fetch: doubling from the first to
/// the second.
const RETRY_BOUNDS: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(5 * 60));

/// What an unknown-kid refetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetch {
    /// The set was fetched after the caller asked (by it or by a concurrent
    /// caller): verify again, and an unknown kid is now invalid.
    Fresh,
    /// The last fetch was too recent; nothing was fetched.
    RateLimited,
    /// The fetch failed; the last good set stays.
    Failed,
}

/// One (issuer, URL) source and the slot the verifier reads.
pub struct JwksSource {
    slot: Arc<JwksSlot>,
    http: reqwest::Client,
    /// When the last fetch started. Held across the fetch, which makes
    /// concurrent refetches one.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches finished; a caller that sees it move while waiting for
    /// `last_fetch` shares the fetch that just ended.
    fetches: AtomicU64,
    stale: AtomicBool,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl JwksSource {
    pub(crate) fn new(slot: Arc<JwksSlot>, http: reqwest::Client) -> Self {
        Self {
            slot,
            http,
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            stale: AtomicBool::new(false),
        }
    }

    /// The slot this source fills.
    pub fn slot(&self) -> &Arc<JwksSlot> {
        &self.slot
    }

    /// Fetches the set now (whatever the rate limit) and returns how long
    /// to keep it.
    pub async fn refresh(&self) -> Result<Duration, String> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch().await
    }

    /// Called when a token names a key the current set lacks.
    pub async fn refetch_for_unknown_kid(&self) -> Refetch {
        let seen = self.fetches.load(Ordering::Acquire);
        let mut last = self.last_fetch.lock().await;
        if self.fetches.load(Ordering::Acquire) != seen {
            // A fetch ended while this caller waited for the lock.
            return if self.stale.load(Ordering::Relaxed) {
                Refetch::Failed
            } else {
                Refetch::Fresh
            };
        }
        if let Some(at) = *last {
            if at.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL {
                return Refetch::RateLimited;
            }
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(_) => Refetch::Fresh,
            Err(_) => Refetch::Failed,
        }
    }

    /// Keeps the set fresh until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut retry = RETRY_BOUNDS.0;
        loop {
            let wait = match self.refresh().await {
                Ok(keep) => {
                    retry = RETRY_BOUNDS.0;
                    keep
                }
                Err(_) => {
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_BOUNDS.1);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn fetch(&self) -> Result<Duration, String> {
        let outcome = self.fetch_once().await;
        match &outcome {
            Ok(keys) => {
                METRICS.jwks_fetches.with_label_values(&["ok"]).inc();
                if self.stale.swap(false, Ordering::Relaxed) {
                    METRICS.jwks_stale.dec();
                }
                info!(url = %self.slot.url(), kids = ?keys.0.kids(), skipped = keys.0.skipped(), "JWKS loaded");
            }
            Err(error) => {
                METRICS.jwks_fetches.with_label_values(&["error"]).inc();
                let has_keys = self.slot.current().is_some();
                if has_keys && !self.stale.swap(true, Ordering::Relaxed) {
                    METRICS.jwks_stale.inc();
                }
                warn!(url = %self.slot.url(), error = %error, keeping_last_good = has_keys, "JWKS fetch failed");
            }
        }
        let outcome = outcome.map(|(keys, keep)| {
            self.slot.store(keys);
            keep
        });
        self.fetches.fetch_add(1, Ordering::Release);
        outcome
    }

    async fn fetch_once(&self) -> Result<(JwkKeys, Duration), String> {
        let response = self
            .http
            .get(self.slot.url())
            .header(ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(http::describe)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {}", status.as_u16()));
        }
        let keep = refresh_interval(response.headers());
        let body = http::body(response).await?;
        let keys = JwkKeys::parse(&body).map_err(|e| e.to_string())?;
        Ok((keys, keep))
    }
}

/// How long to keep a set: Cache-Control `max-age` within [`REFRESH_BOUNDS`];
/// the lower bound without one (or with `no-cache`/`no-store`).
pub fn refresh_interval(headers: &HeaderMap) -> Duration {
    let max_age = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next();
    max_age
        .map(Duration::from_secs)
        .unwrap_or(REFRESH_BOUNDS.0)
        .clamp(REFRESH_BOUNDS.0, REFRESH_BOUNDS.1)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn cache_control_is_clamped() {
        let table: Vec<(Vec<&str>, u64)> = vec![
            (vec![], 300),
            (vec!["max-age=3600"], 3600),
            (vec!["public, max-age=600, must-revalidate"], 600),
            (vec!["max-age=\"900\""], 900),
            (vec!["MAX-AGE=1200"], 1200),
            (vec!["max-age=10"], 300),
            (vec!["max-age=0"], 300),
            (vec!["no-store"], 300),
            (vec!["max-age=999999999"], 86400),
            (vec!["max-age=abc"], 300),
            (vec!["no-cache", "max-age=7200"], 7200),
        ];
        for (values, want) in table {
            let mut headers = HeaderMap::new();
            for value in &values {
                headers.append(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(
                refresh_interval(&headers),
                Duration::from_secs(want),
                "{values:?}"
            );
        }
    }
}
