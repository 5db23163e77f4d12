//! Identity provider metrics, in the process-wide default registry next to
//! the gateway's, every label value pre-initialised at 0.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge, Opts};

pub(crate) struct Metrics {
    pub(crate) jwks_fetches: IntCounterVec,
    pub(crate) jwks_stale: IntGauge,
    pub(crate) introspection_requests: IntCounterVec,
    pub(crate) introspection_cache: IntCounterVec,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = prometheus::default_registry();
    let counter = |name: &str, help: &str, label: &str, values: &[&str]| {
        let family = IntCounterVec::new(Opts::new(name, help), &[label])
            .expect("static metric options are valid");
        // Registered once (LazyLock); an error means another part of the
        // process owns the name, and then the counter simply stays private.
        let _ = registry.register(Box::new(family.clone()));
        for value in values {
            family.with_label_values(&[value]);
        }
        family
    };
    let jwks_stale = IntGauge::new(
        "herald_auth_jwks_stale",
        "JWKS sources serving their last good key set because the latest fetch failed.",
    )
    .expect("static metric options are valid");
    let _ = registry.register(Box::new(jwks_stale.clone()));
    Metrics {
        jwks_fetches: counter(
            "herald_auth_jwks_fetches_total",
            "JWK set fetches by result.",
            "result",
            &["ok", "error"],
        ),
        jwks_stale,
        introspection_requests: counter(
            "herald_auth_introspection_requests_total",
            "Token introspection requests by result; skipped = not sent, paused after repeated failures.",
            "result",
            &["active", "inactive", "error", "skipped"],
        ),
        introspection_cache: counter(
            "herald_auth_introspection_cache_total",
            "Token introspection lookups answered from the cache (hit) or not (miss).",
            "result",
            &["hit", "miss"],
        ),
    }
});

/// Registers the metrics so they are exported from startup.
pub(crate) fn init() {
    LazyLock::force(&METRICS);
}
