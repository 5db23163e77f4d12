//! Connections that ended during a run, counted by how they ended, for the
//! summary's `disconnects` object: `{"<code>": {"count": N, "reason": "…"}}`.
//!
//! The code is the WebSocket close code (herald's disconnect codes, e.g.
//! `3012` no pong, `3001` shutdown), the `code` of a `disconnect` push on the
//! HTTP transports, `io` for a transport error, `eof` for a connection that
//! ended without a close frame, and `churn` for a connection `hold` closed on
//! purpose. The reason is the first one seen with that code.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A close frame or a `disconnect` push: its code and reason.
    Code(u32, String),
    /// A transport error.
    Io(String),
    /// The connection ended without saying why.
    Eof,
    /// Closed by the bench on purpose (`hold --churn`).
    Churn,
}

impl Ended {
    pub(crate) fn key(&self) -> String {
        match self {
            Ended::Code(code, _) => code.to_string(),
            Ended::Io(_) => "io".into(),
            Ended::Eof => "eof".into(),
            Ended::Churn => "churn".into(),
        }
    }

    pub(crate) fn reason(&self) -> &str {
        match self {
            Ended::Code(_, reason) | Ended::Io(reason) => reason,
            Ended::Eof => "connection ended without a close frame",
            Ended::Churn => "closed by the bench (--churn)",
        }
    }
}

/// Counts by code, and the first reason of each.
#[derive(Debug, Default)]
pub(crate) struct Tally(BTreeMap<String, (u64, String)>);

impl Tally {
    pub(crate) fn add(&mut self, key: &str, count: u64, reason: &str) {
        let entry = self
            .0
            .entry(key.to_owned())
            .or_insert_with(|| (0, reason.to_owned()));
        entry.0 += count;
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.values().map(|(count, _)| count).sum()
    }

    pub(crate) fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(key, (count, reason))| {
                (key.clone(), json!({ "count": count, "reason": reason }))
            })
            .collect();
        Value::Object(map)
    }

    /// Adds a `disconnects` object as `to_json` makes it; anything else in
    /// it is ignored.
    pub(crate) fn add_json(&mut self, value: &Value) {
        let Some(map) = value.as_object() else {
            return;
        };
        for (key, entry) in map {
            let count = entry.get("count").and_then(Value::as_u64).unwrap_or(0);
            let reason = entry.get("reason").and_then(Value::as_str).unwrap_or("");
            self.add(key, count, reason);
        }
    }
}

static DISCONNECTS: Mutex<Tally> = Mutex::new(Tally(BTreeMap::new()));

/// Counts a connection that ended.
pub(crate) fn record(ended: &Ended) {
    let mut tally = DISCONNECTS.lock().unwrap_or_else(|e| e.into_inner());
    tally.add(&ended.key(), 1, ended.reason());
}

/// The process's disconnects so far, as the summary shows them.
pub(crate) fn json() -> Value {
    DISCONNECTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_json()
}

pub(crate) fn total() -> u64 {
    DISCONNECTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .total()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_by_code_keeping_the_first_reason() {
        let mut a = Tally::default();
        a.add("3012", 2, "no pong");
        a.add("io", 1, "reset");
        let mut b = Tally::default();
        b.add("3012", 1, "no pong");
        b.add("eof", 4, "ended");
        b.add("io", 1, "broken pipe");
        a.add_json(&b.to_json());
        assert_eq!(a.total(), 9);
        assert_eq!(
            a.to_json(),
            json!({
                "3012": {"count": 3, "reason": "no pong"},
                "eof": {"count": 4, "reason": "ended"},
                "io": {"count": 2, "reason": "reset"},
            })
        );
        a.add_json(&json!("not an object"));
        assert_eq!(a.total(), 9);
    }
}
