//! The `hold` scenario: connections held for `--duration` that reconnect
//! the way centrifuge-js does, for reconnect storms and soaks.
//!
//! `--subscribers N` WebSocket connections (JSON or protobuf, `--format`)
//! spread round-robin over the `--url`s, each reconnect going to another
//! `--url` in turn, half the connections forward through the list and half
//! backward (as through a round-robin balancer: the connections of a node
//! that died come back spread over the others); connection i subscribes to
//! `<--channel>-<i mod --channels>` (a namespace with history, e.g.
//! `--channel hold:c`) and remembers the stream position (offset, epoch) of
//! every publication it gets. With `--api-key` and `--rate R`, R
//! publications a second in all go through `POST /api/publish` (to the
//! first `--url` that answers), spread over the channels, each carrying its
//! send time, its channel and a per-channel sequence number.
//!
//! A connection that closes (a server close, an I/O error, a refused or
//! failed connect) reconnects after centrifuge-js's backoff (its
//! `backoff(step, minReconnectDelay = 500 ms, maxReconnectDelay = 20 s)`:
//! `min(max, min + randomInt(0, min(max, min · 2^step)))`, the step reset
//! by a successful connect) and subscribes with `recover: true` from its
//! last position. Like the SDK it does not reconnect after a close code in
//! 3500-3999 or 4500-4999. `--churn P`: P percent of the connections a
//! minute are closed by the bench on purpose, evenly spread over time
//! (connection i at `go + T·(i/N + k)`, T = 6000/P s), and reconnect the
//! same way.
//!
//! Each subscriber checks the offsets it receives against its position:
//! the next offset is expected; a jump counts a `gap` (its offsets are
//! `missed_offsets`) unless the subscribe answer said `recovered: false` or
//! gave a new epoch; an offset at or below the position is a `reorder` if
//! it was missing, a `duplicate` otherwise. A recovered subscribe's
//! publications go through the same check, and a top offset beyond what it
//! returned is a gap. At the end (publishing stops at `--duration`,
//! connections are held 3 s more) every subscriber still connected is
//! compared with the last offset the API acknowledged on its channel:
//! `behind_at_end` counts those short of it.
//!
//! Disconnect waves: a wave starts at a disconnect followed by at least 1%
//! of the connections disconnecting within 1 s, and takes every later
//! disconnect less than 1 s after the wave's previous one (the churn's own
//! closes are left out: they are planned and evenly spread). Its
//! `recovery_ms` runs from its first disconnect until every connection it
//! took is connected and subscribed again (null if one never was).
//!
//! Progress on stderr every 10 s: connected now, connects/s and
//! deliveries/s over the last 10 s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_protocol::protobuf::client::decode_replies;
use herald_protocol::{
    Command, CommandResult, ConnectRequest, Format, Method, PushBody, Reply, SubscribeRequest,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::disconnects::{self, Ended, Tally};
use crate::stream::Transport;
use crate::{now_micros, wire, workers, Args, AuthArg, Report, Scenario, Signer, Ws};

/// centrifuge-js's reconnect delays (its `minReconnectDelay` and
/// `maxReconnectDelay` defaults), in milliseconds.
pub(crate) const MIN_DELAY_MS: u64 = 500;
pub(crate) const MAX_DELAY_MS: u64 = 20_000;

/// How long connections are held after publishing stops, for the last
/// publications to arrive.
const TAIL: Duration = Duration::from_secs(3);

/// centrifuge-js's `backoff(step, min, max)`: full jitter over
/// `[0, min(max, min·2^step)]` added to `min`, capped at `max`. `unit` is
/// a uniform random number in [0, 1).
pub(crate) fn backoff_ms(step: u32, min: u64, max: u64, unit: f64) -> u64 {
    let step = step.min(31);
    let top = max.min(min.saturating_mul(1u64 << step));
    // randomInt(0, top): floor(random · (top + 1)).
    let jitter = ((unit.clamp(0.0, 1.0 - f64::EPSILON)) * (top + 1) as f64).floor() as u64;
    max.min(min + jitter)
}

/// Why the arguments cannot make a `hold` run, if they cannot.
pub(crate) fn conflict(args: &Args) -> Option<String> {
    if args.scenario != Scenario::Hold {
        return None;
    }
    if args.transport != Transport::Websocket {
        return Some("hold speaks WebSocket only (drop --transport)".into());
    }
    if args.auth != AuthArg::Jwt {
        return Some("hold authenticates with tokens only (drop --auth)".into());
    }
    if args.delta {
        return Some("hold does not apply deltas (drop --delta)".into());
    }
    if !(args.churn.is_finite() && args.churn >= 0.0) {
        return Some("--churn must be a percentage of 0 or more".into());
    }
    if args.rate > 0.0 && args.api_key.is_none() {
        return Some("hold publishes through the API: give --api-key, or --rate 0".into());
    }
    if args.channels == 0 {
        return Some("--channels must be at least 1".into());
    }
    if args.api_key.is_some() && args.url.iter().any(|u| !u.starts_with("ws://")) {
        return Some("hold's --api-key needs ws:// URLs".into());
    }
    None
}

// ---- the offset check ------------------------------------------------------

/// Most missing offsets remembered per subscriber (for telling a reorder
/// from a duplicate); beyond it they are still counted.
const MISSING_KEPT: usize = 100_000;

/// One subscriber's check of the offsets of its channel.
#[derive(Debug, Default, Clone)]
pub(crate) struct Check {
    epoch: String,
    /// The last offset: where the subscriber stands (None before its
    /// first subscribe).
    last: Option<u64>,
    missing: BTreeSet<u64>,
    pub(crate) gaps: u64,
    pub(crate) missed_offsets: u64,
    pub(crate) duplicates: u64,
    pub(crate) reorders: u64,
}

impl Check {
    /// The position to recover from, once there is one.
    pub(crate) fn position(&self) -> Option<(u64, &str)> {
        self.last.map(|last| (last, self.epoch.as_str()))
    }

    /// A subscribe answer: `recovered` with its `publications` (offsets in
    /// the order given) up to `offset` of `epoch`; otherwise the client was
    /// told (or it is the first subscribe): the stream starts over there.
    pub(crate) fn subscribed(
        &mut self,
        epoch: &str,
        offset: u64,
        recovered: bool,
        publications: &[u64],
    ) {
        let same_stream = self.last.is_some() && self.epoch == epoch;
        if !(recovered && same_stream) {
            self.epoch = epoch.to_owned();
            self.last = Some(offset);
            self.missing.clear();
            return;
        }
        for publication in publications {
            self.delivered(*publication);
        }
        let last = self.last.unwrap_or(0);
        if offset > last {
            // The top is beyond what recovery returned.
            self.skipped(last, offset + 1);
            self.last = Some(offset);
        }
    }

    /// A publication at `offset` arrived.
    pub(crate) fn delivered(&mut self, offset: u64) {
        let Some(last) = self.last else {
            // Before any subscribe answer: nothing to check against.
            self.last = Some(offset);
            return;
        };
        if offset == last + 1 {
            self.last = Some(offset);
        } else if offset > last + 1 {
            self.skipped(last, offset);
            self.last = Some(offset);
        } else if self.missing.remove(&offset) {
            self.reorders += 1;
            self.missed_offsets = self.missed_offsets.saturating_sub(1);
        } else {
            self.duplicates += 1;
        }
    }

    /// Offsets after `last` and before `next` never came.
    fn skipped(&mut self, last: u64, next: u64) {
        self.gaps += 1;
        self.missed_offsets += next - last - 1;
        for missing in last + 1..next {
            if self.missing.len() >= MISSING_KEPT {
                break;
            }
            self.missing.insert(missing);
        }
    }
}

// ---- what the run records ----------------------------------------------------

/// Everything a `hold` process records, in a form that merges across the
/// processes of `--processes` (sums, concatenations) before
/// [`summarize`] derives the figures.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Raw {
    pub(crate) connections: u64,
    pub(crate) channels: u64,
    pub(crate) duration_s: f64,
    pub(crate) connects_first: u64,
    pub(crate) reconnects: u64,
    /// Connects per second since the go.
    pub(crate) per_second: Vec<u64>,
    pub(crate) recovered_true: u64,
    pub(crate) recovered_false: u64,
    /// Subscribes without a position to recover from.
    pub(crate) subscribed_fresh: u64,
    pub(crate) terminal: u64,
    pub(crate) publications_acked: u64,
    pub(crate) publish_errors: u64,
    pub(crate) deliveries: u64,
    /// Publications without an offset (a channel without history).
    pub(crate) unpositioned: u64,
    pub(crate) gaps: u64,
    pub(crate) missed_offsets: u64,
    pub(crate) duplicates: u64,
    pub(crate) reorders: u64,
    /// Backoff delays used, as `[ms, count]` pairs.
    pub(crate) backoff: Value,
    /// (disconnected at, connected and subscribed again at), bench micros
    /// since the go.
    pub(crate) outages: Vec<(u64, Option<u64>)>,
    /// Per channel: the epoch and last offset the API acknowledged.
    pub(crate) tops: BTreeMap<String, (String, u64)>,
    /// Per channel and epoch: how many subscribers connected at the end
    /// stood at each offset.
    pub(crate) ends: BTreeMap<String, BTreeMap<String, BTreeMap<u64, u64>>>,
    pub(crate) unconnected_at_end: u64,
    pub(crate) connect_errors: Value,
}

impl Raw {
    fn absorb(&mut self, other: Raw) {
        self.connections += other.connections;
        self.channels = self.channels.max(other.channels);
        self.duration_s = self.duration_s.max(other.duration_s);
        self.connects_first += other.connects_first;
        self.reconnects += other.reconnects;
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (i, n) in other.per_second.iter().enumerate() {
            self.per_second[i] += n;
        }
        self.recovered_true += other.recovered_true;
        self.recovered_false += other.recovered_false;
        self.subscribed_fresh += other.subscribed_fresh;
        self.terminal += other.terminal;
        self.publications_acked += other.publications_acked;
        self.publish_errors += other.publish_errors;
        self.deliveries += other.deliveries;
        self.unpositioned += other.unpositioned;
        self.gaps += other.gaps;
        self.missed_offsets += other.missed_offsets;
        self.duplicates += other.duplicates;
        self.reorders += other.reorders;
        let mut pairs = self.backoff.as_array().cloned().unwrap_or_default();
        pairs.extend(other.backoff.as_array().cloned().unwrap_or_default());
        self.backoff = Value::Array(pairs);
        self.outages.extend(other.outages);
        for (channel, (epoch, offset)) in other.tops {
            let top = self.tops.entry(channel).or_insert((epoch.clone(), 0));
            if top.0 != epoch || offset > top.1 {
                *top = (epoch, offset.max(top.1));
            }
        }
        for (channel, epochs) in other.ends {
            let mine = self.ends.entry(channel).or_default();
            for (epoch, offsets) in epochs {
                let mine = mine.entry(epoch).or_default();
                for (offset, count) in offsets {
                    *mine.entry(offset).or_default() += count;
                }
            }
        }
        self.unconnected_at_end += other.unconnected_at_end;
        let mut errors = Tally::default();
        errors.add_json(&self.connect_errors);
        errors.add_json(&other.connect_errors);
        self.connect_errors = errors.to_json();
    }
}

/// A disconnect wave: its start (ms since the go), size and recovery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wave {
    pub(crate) start_ms: u64,
    pub(crate) size: usize,
    pub(crate) recovery_ms: Option<u64>,
}

/// The waves in `outages` (micros) of `connections` connections: see the
/// module docs.
pub(crate) fn waves(outages: &[(u64, Option<u64>)], connections: u64) -> Vec<Wave> {
    let mut sorted: Vec<(u64, Option<u64>)> = outages.to_vec();
    sorted.sort_by_key(|o| o.0);
    let threshold = (connections as usize).div_ceil(100).max(1);
    let second = 1_000_000;
    let mut waves = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i].0;
        let within = sorted[i..]
            .iter()
            .take_while(|o| o.0 < start + second)
            .count();
        if within < threshold {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < sorted.len() && sorted[j].0 < sorted[j - 1].0 + second {
            j += 1;
        }
        let members = &sorted[i..j];
        let recovery = members
            .iter()
            .map(|o| o.1)
            .try_fold(0u64, |latest, up| up.map(|up| latest.max(up)));
        waves.push(Wave {
            start_ms: start / 1000,
            size: members.len(),
            recovery_ms: recovery.map(|up| up.saturating_sub(start) / 1000),
        });
        i = j;
    }
    waves
}

/// The summary's `hold` fields from what the processes recorded.
pub(crate) fn summarize(raw: &Raw) -> Map<String, Value> {
    let mut out = Map::new();
    let connects = raw.connects_first + raw.reconnects;
    out.insert("connections".into(), raw.connections.into());
    out.insert("channels".into(), raw.channels.into());
    out.insert("duration_s".into(), raw.duration_s.into());
    out.insert("connects".into(), connects.into());
    out.insert("connects_first".into(), raw.connects_first.into());
    out.insert("reconnects".into(), raw.reconnects.into());
    out.insert("connects_per_sec".into(), raw.per_second.clone().into());
    out.insert(
        "peak_connects_per_sec".into(),
        raw.per_second.iter().max().copied().unwrap_or(0).into(),
    );
    out.insert("connect_errors".into(), raw.connect_errors.clone());
    out.insert("recovered_true".into(), raw.recovered_true.into());
    out.insert("recovered_false".into(), raw.recovered_false.into());
    out.insert("subscribed_fresh".into(), raw.subscribed_fresh.into());
    out.insert("terminal_disconnects".into(), raw.terminal.into());
    out.insert("publications_acked".into(), raw.publications_acked.into());
    out.insert("publish_errors".into(), raw.publish_errors.into());
    out.insert("deliveries".into(), raw.deliveries.into());
    out.insert("unpositioned".into(), raw.unpositioned.into());
    out.insert("gaps".into(), raw.gaps.into());
    out.insert("missed_offsets".into(), raw.missed_offsets.into());
    out.insert("duplicates".into(), raw.duplicates.into());
    out.insert("reorders".into(), raw.reorders.into());
    let (mut behind, mut other_epoch) = (0u64, 0u64);
    for (channel, epochs) in &raw.ends {
        let Some((top_epoch, top)) = raw.tops.get(channel) else {
            continue;
        };
        for (epoch, offsets) in epochs {
            for (offset, count) in offsets {
                if epoch != top_epoch {
                    other_epoch += count;
                } else if offset < top {
                    behind += count;
                }
            }
        }
    }
    out.insert("behind_at_end".into(), behind.into());
    out.insert("other_epoch_at_end".into(), other_epoch.into());
    out.insert("unconnected_at_end".into(), raw.unconnected_at_end.into());
    let mut backoff = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid bounds");
    workers::add_pairs(&mut backoff, &raw.backoff);
    let count = backoff.len();
    let stat = |v: u64| if count == 0 { Value::Null } else { v.into() };
    out.insert(
        "backoff_ms".into(),
        json!({
            "count": count,
            "min": stat(backoff.min()),
            "p50": stat(backoff.value_at_quantile(0.5)),
            "p99": stat(backoff.value_at_quantile(0.99)),
            "max": stat(backoff.max()),
        }),
    );
    let waves = waves(&raw.outages, raw.connections);
    let largest = waves.iter().max_by_key(|w| w.size);
    out.insert(
        "recovery_ms".into(),
        largest
            .and_then(|w| w.recovery_ms)
            .map_or(Value::Null, Value::from),
    );
    out.insert(
        "waves".into(),
        waves
            .iter()
            .map(|w| json!({"start_ms": w.start_ms, "size": w.size, "recovery_ms": w.recovery_ms}))
            .collect::<Vec<_>>()
            .into(),
    );
    out
}

/// The `hold` fields of the workers' summaries merged (their raw records
/// under `worker.hold`).
pub(crate) fn merge_raw(holds: &[Value]) -> Map<String, Value> {
    let mut all = Raw::default();
    for hold in holds {
        if let Ok(raw) = serde_json::from_value::<Raw>(hold.clone()) {
            all.absorb(raw);
        }
    }
    let mut out = summarize(&all);
    let seconds = all.duration_s.max(1e-9);
    out.insert(
        "deliveries_per_sec".into(),
        ((all.deliveries as f64 / seconds * 10.0).round() / 10.0).into(),
    );
    out.insert("errors".into(), errors(&out).into());
    out
}

/// What counts as an error of a `hold` run: a broken promise (gaps,
/// duplicates, reorders, a subscriber behind at the end) or a failed
/// publication.
fn errors(summary: &Map<String, Value>) -> u64 {
    [
        "gaps",
        "duplicates",
        "reorders",
        "behind_at_end",
        "publish_errors",
    ]
    .iter()
    .map(|k| summary.get(*k).and_then(Value::as_u64).unwrap_or(0))
    .sum()
}

/// The progress line from summed counts (`t` seconds since the go).
pub(crate) fn progress_text(t: u64, sums: &Map<String, Value>, processes: usize) -> String {
    let get = |k: &str| sums.get(k).and_then(Value::as_u64).unwrap_or(0);
    let period = sums.get("period_s").and_then(Value::as_f64).unwrap_or(10.0) / processes as f64;
    format!(
        "hold {t}s: {} connected, {:.0} connects/s, {:.0} deliveries/s",
        get("connected"),
        get("connects") as f64 / period.max(1e-9),
        get("deliveries") as f64 / period.max(1e-9),
    )
}

// ---- the run -------------------------------------------------------------------

/// What the connections share.
struct Shared {
    go: u64,
    /// Publishing and churn stop here; `end` is `TAIL` later.
    stop_at: u64,
    end: u64,
    connections: usize,
    churn_period: Option<u64>,
    format_of: crate::FormatArg,
    urls: Vec<String>,
    channel: String,
    channels: usize,
    signer: Signer,
    connected: AtomicI64,
    connects_first: AtomicU64,
    reconnects: AtomicU64,
    deliveries: AtomicU64,
    recovered_true: AtomicU64,
    recovered_false: AtomicU64,
    subscribed_fresh: AtomicU64,
    terminal: AtomicU64,
    unpositioned: AtomicU64,
    per_second: Mutex<Vec<u64>>,
    backoff: Mutex<Histogram<u64>>,
    latency: Mutex<Histogram<u64>>,
    outages: Mutex<Vec<(u64, Option<u64>)>>,
    connect_errors: Mutex<Tally>,
}

impl Shared {
    fn since_go(&self) -> u64 {
        now_micros().saturating_sub(self.go)
    }

    fn connected(&self, first: bool) {
        if first {
            self.connects_first.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let second = (self.since_go() / 1_000_000) as usize;
        let mut per_second = self.per_second.lock().unwrap_or_else(|e| e.into_inner());
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }

    fn connect_failed(&self, key: &str, reason: &str) {
        self.connect_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(key, 1, reason);
    }

    /// A new outage; its index.
    fn down(&self) -> usize {
        let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
        outages.push((self.since_go(), None));
        outages.len() - 1
    }

    fn up(&self, outage: usize) {
        let at = self.since_go();
        let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = outages.get_mut(outage) {
            o.1 = Some(at);
        }
    }

    /// The next churn time of connection `i` after `now` (bench micros).
    fn next_churn(&self, i: usize, now: u64) -> Option<u64> {
        let at = churn_at(self.go, self.churn_period?, i, self.connections, now);
        (at < self.stop_at).then_some(at)
    }
}

/// When connection `i` of `n` is next closed by the churn after `now`:
/// at `go + period·(i/n + k)`, the connections a period apart spread evenly
/// over it.
fn churn_at(go: u64, period: u64, i: usize, n: usize, now: u64) -> u64 {
    let phase = (period as u128 * i as u128 / n.max(1) as u128) as u64;
    let first = go + phase;
    if now < first {
        first
    } else {
        first + ((now - first) / period + 1) * period
    }
}

/// How one connection's life ended.
struct Finish {
    channel: String,
    check: Check,
    connected_at_end: bool,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    let go = workers::sync().await;
    let duration = args.duration.as_micros() as u64;
    let churn_period = (args.churn > 0.0).then(|| (6_000.0 / args.churn * 1e6) as u64);
    let shared = Arc::new(Shared {
        go,
        stop_at: go + duration,
        end: go + duration + TAIL.as_micros() as u64,
        connections: args.subscribers,
        churn_period,
        format_of: args.format,
        urls: args.url.clone(),
        channel: args.channel.clone(),
        channels: args.channels.max(1),
        signer: Signer::from_args(args)?,
        connected: AtomicI64::new(0),
        connects_first: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        recovered_true: AtomicU64::new(0),
        recovered_false: AtomicU64::new(0),
        subscribed_fresh: AtomicU64::new(0),
        terminal: AtomicU64::new(0),
        unpositioned: AtomicU64::new(0),
        per_second: Mutex::new(Vec::new()),
        backoff: Mutex::new(Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds")),
        latency: Mutex::new(workers::new_histogram()),
        outages: Mutex::new(Vec::new()),
        connect_errors: Mutex::new(Tally::default()),
    });
    // The first connects go `concurrency` at a time, as the other scenarios'.
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in workers::indices(args.subscribers) {
        let shared = shared.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move { hold_one(i, shared, gate).await }));
    }
    let publisher = (workers::publishes() && args.rate > 0.0).then(|| {
        let key = args.api_key.clone().unwrap_or_default();
        tokio::spawn(publish(args.url.clone(), key, args.rate, shared.clone()))
    });
    let progress = tokio::spawn(progress(shared.clone()));
    let mut finishes = Vec::new();
    for task in tasks {
        finishes.push(task.await?);
    }
    progress.abort();
    let (tops, acked, publish_errors) = match publisher {
        Some(publisher) => publisher.await?,
        None => (BTreeMap::new(), 0, 0),
    };
    let mut raw = Raw {
        connections: args.subscribers as u64,
        channels: args.channels as u64,
        duration_s: args.duration.as_secs_f64(),
        connects_first: shared.connects_first.load(Ordering::Relaxed),
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        per_second: shared
            .per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        recovered_true: shared.recovered_true.load(Ordering::Relaxed),
        recovered_false: shared.recovered_false.load(Ordering::Relaxed),
        subscribed_fresh: shared.subscribed_fresh.load(Ordering::Relaxed),
        terminal: shared.terminal.load(Ordering::Relaxed),
        publications_acked: acked,
        publish_errors,
        deliveries: shared.deliveries.load(Ordering::Relaxed),
        unpositioned: shared.unpositioned.load(Ordering::Relaxed),
        backoff: workers::histogram_pairs(
            &shared.backoff.lock().unwrap_or_else(|e| e.into_inner()),
        ),
        outages: shared
            .outages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        tops,
        connect_errors: shared
            .connect_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_json(),
        ..Raw::default()
    };
    if workers::is_worker() {
        // Each process counts its share; the parent sums (merge_raw).
        raw.connections = finishes.len() as u64;
    }
    for finish in finishes {
        raw.gaps += finish.check.gaps;
        raw.missed_offsets += finish.check.missed_offsets;
        raw.duplicates += finish.check.duplicates;
        raw.reorders += finish.check.reorders;
        match (finish.connected_at_end, finish.check.position()) {
            (true, Some((offset, epoch))) => {
                *raw.ends
                    .entry(finish.channel)
                    .or_default()
                    .entry(epoch.to_owned())
                    .or_default()
                    .entry(offset)
                    .or_default() += 1;
            }
            _ => raw.unconnected_at_end += 1,
        }
    }
    let mut extra = summarize(&raw);
    let errors = errors(&extra);
    extra.insert("worker".into(), json!({ "hold": raw }));
    extra.remove("connect_errors");
    extra.insert("connect_errors".into(), raw.connect_errors.clone());
    let histogram = shared
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Report {
        scenario: "hold",
        deliveries_per_sec: raw.deliveries as f64 / args.duration.as_secs_f64().max(1e-9),
        histogram,
        errors,
        extra,
    })
}

/// Every 10 s: connected now, connects and deliveries over the period (to
/// stdout for the parent in a worker, as a line on stderr otherwise).
async fn progress(shared: Arc<Shared>) {
    let period = Duration::from_secs(10);
    let (mut connects, mut deliveries) = (0u64, 0u64);
    let mut t = 0;
    loop {
        t += 10;
        tokio::time::sleep_until(workers::at(shared.go + t * 1_000_000)).await;
        let now_connects = shared.connects_first.load(Ordering::Relaxed)
            + shared.reconnects.load(Ordering::Relaxed);
        let now_deliveries = shared.deliveries.load(Ordering::Relaxed);
        let mut sums = Map::new();
        sums.insert("t".into(), t.into());
        sums.insert(
            "connected".into(),
            shared.connected.load(Ordering::Relaxed).max(0).into(),
        );
        sums.insert("connects".into(), (now_connects - connects).into());
        sums.insert("deliveries".into(), (now_deliveries - deliveries).into());
        sums.insert("period_s".into(), period.as_secs_f64().into());
        (connects, deliveries) = (now_connects, now_deliveries);
        if workers::is_worker() {
            println!("{}{}", workers::PROGRESS, Value::Object(sums));
        } else {
            eprintln!("{}", progress_text(t, &sums, 1));
        }
    }
}

/// One connection, from its first connect to the end, reconnecting.
async fn hold_one(i: usize, shared: Arc<Shared>, gate: Arc<tokio::sync::Semaphore>) -> Finish {
    let channel = format!("{}-{}", shared.channel, i % shared.channels);
    // Every (re)connect goes to another URL in turn, as through a round-robin
    // balancer: a connection whose node died comes back on another. Half the
    // connections step forward through the list, half backward (n - 1 is -1
    // mod n), so one node's connections spread over the others.
    let urls = shared.urls.len();
    let stride = if (i / urls).is_multiple_of(2) {
        1
    } else {
        urls - 1
    };
    let mut attempt: usize = 0;
    let format = shared.format_of.subscriber(i);
    let user = format!("bench-{i}");
    let mut check = Check::default();
    let mut step: u32 = 0;
    let mut first = true;
    let mut ever_connected = false;
    let mut outage: Option<usize> = None;
    loop {
        if !first {
            let unit: f64 = rand::rng().random();
            let delay = backoff_ms(step, MIN_DELAY_MS, MAX_DELAY_MS, unit);
            step = step.saturating_add(1);
            let _ = shared
                .backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(delay);
            let wake = (now_micros() + delay * 1000).min(shared.end);
            tokio::time::sleep_until(workers::at(wake)).await;
        }
        if now_micros() >= shared.end {
            break;
        }
        let permit = if first {
            gate.clone().acquire_owned().await.ok()
        } else {
            None
        };
        first = false;
        let url = &shared.urls[(i + attempt * stride) % urls];
        attempt = attempt.wrapping_add(1);
        let opened = open(url, &shared, &user, &channel, format, &check).await;
        drop(permit);
        let (mut ws, subscribed) = match opened {
            Ok(opened) => opened,
            Err(Refused::Connect(key, reason)) => {
                shared.connect_failed(&key, &reason);
                continue;
            }
            Err(Refused::Subscribe(ws, key, reason)) => {
                // Connected (the SDK resets its backoff) but not subscribed.
                step = 0;
                shared.connect_failed(&key, &reason);
                let mut ws = *ws;
                let _ = ws.close(None).await;
                continue;
            }
        };
        step = 0;
        shared.connected(!ever_connected);
        ever_connected = true;
        match (&check.position(), subscribed.recovered) {
            (None, _) => shared.subscribed_fresh.fetch_add(1, Ordering::Relaxed),
            (Some(_), true) => shared.recovered_true.fetch_add(1, Ordering::Relaxed),
            (Some(_), false) => shared.recovered_false.fetch_add(1, Ordering::Relaxed),
        };
        for (stamp, _) in &subscribed.publications {
            record_latency(&shared, *stamp);
        }
        shared
            .deliveries
            .fetch_add(subscribed.publications.len() as u64, Ordering::Relaxed);
        let offsets: Vec<u64> = subscribed.publications.iter().map(|p| p.1).collect();
        check.subscribed(
            &subscribed.epoch,
            subscribed.offset,
            subscribed.recovered,
            &offsets,
        );
        if let Some(o) = outage.take() {
            shared.up(o);
        }
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let first_replies = subscribed.rest;
        let ended = session(
            &mut ws,
            i,
            &shared,
            &channel,
            format,
            &mut check,
            first_replies,
        )
        .await;
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        let Some(ended) = ended else {
            let _ = ws.close(None).await;
            return Finish {
                channel,
                check,
                connected_at_end: true,
            };
        };
        disconnects::record(&ended);
        // The churn's closes are planned, evenly spread: not part of waves.
        if ended != Ended::Churn {
            outage = Some(shared.down());
        }
        if let Ended::Code(code, _) = ended {
            // centrifuge-js does not reconnect after these.
            if (3500..4000).contains(&code) || (4500..5000).contains(&code) {
                shared.terminal.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    Finish {
        channel,
        check,
        connected_at_end: false,
    }
}

fn record_latency(shared: &Shared, stamp: Option<u64>) {
    if let Some(stamp) = stamp {
        let took = now_micros().saturating_sub(stamp).max(1);
        let _ = shared
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(took);
    }
}

/// A subscribe answer: its stream position, whether it recovered, and the
/// recovered publications (send stamp, offset).
struct Subscribed {
    epoch: String,
    offset: u64,
    recovered: bool,
    publications: Vec<(Option<u64>, u64)>,
    /// Replies that came after the answer in its message.
    rest: Vec<Reply>,
}

enum Refused {
    /// The connect failed: a key for `connect_errors` and the reason.
    Connect(String, String),
    /// Connected, the subscribe failed.
    Subscribe(Box<Ws>, String, String),
}

/// Connects and subscribes, recovering from `check`'s position if it has one.
async fn open(
    url: &str,
    shared: &Shared,
    user: &str,
    channel: &str,
    format: Format,
    check: &Check,
) -> Result<(Ws, Subscribed), Refused> {
    let token = shared
        .signer
        .token(user, &[])
        .map_err(|e| Refused::Connect("token".into(), e.to_string()))?;
    let mut ws = crate::connect_ws(url, None, format)
        .await
        .map_err(|e| Refused::Connect(connect_error_key(&e), format!("{e:#}")))?;
    let connect = Method::Connect(ConnectRequest {
        token,
        ..Default::default()
    });
    if let Err((key, reason)) = call(&mut ws, format, 1, connect).await {
        let _ = ws.close(None).await;
        return Err(Refused::Connect(key, reason));
    }
    let (recover, offset, epoch) = match check.position() {
        Some((offset, epoch)) => (true, offset, epoch.to_owned()),
        None => (false, 0, String::new()),
    };
    let subscribe = Method::Subscribe(SubscribeRequest {
        channel: channel.to_owned(),
        recover,
        offset,
        epoch,
        // Ask for a stream position even on the first subscribe (the
        // namespace's allow_recovery), as recovery needs one.
        recoverable: true,
        ..Default::default()
    });
    match call(&mut ws, format, 2, subscribe).await {
        Ok((CommandResult::Subscribe(result), rest)) => Ok((
            ws,
            Subscribed {
                rest,
                epoch: result.epoch,
                offset: result.offset,
                recovered: result.recovered,
                publications: result
                    .publications
                    .iter()
                    .map(|p| (stamp_of(p.data.get()), p.offset))
                    .collect(),
            },
        )),
        Ok(_) => Err(Refused::Subscribe(
            Box::new(ws),
            "subscribe".into(),
            "not a subscribe result".into(),
        )),
        Err((key, reason)) => Err(Refused::Subscribe(Box::new(ws), key, reason)),
    }
}

/// `refused`, `timeout` or `io` for a failed WebSocket connect.
fn connect_error_key(error: &anyhow::Error) -> String {
    let text = format!("{error:#}").to_lowercase();
    if text.contains("refused") {
        "refused".into()
    } else if text.contains("timed out") || text.contains("timeout") {
        "timeout".into()
    } else {
        "io".into()
    }
}

/// Sends command `id` and waits (up to 10 s, like the SDK's timeout of
/// 5 s with slack) for its answer, answering pings; returns it with the
/// replies that came after it in the same message. Errors as (key for
/// `connect_errors`, reason): the error code of an error reply, a close
/// code, `io`, `eof` or `timeout`.
async fn call(
    ws: &mut Ws,
    format: Format,
    id: u32,
    method: Method,
) -> Result<(CommandResult, Vec<Reply>), (String, String)> {
    let command = Command { id, method };
    ws.send(wire::command(format, &command))
        .await
        .map_err(|e| ("io".to_owned(), e.to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(("timeout".into(), format!("no answer to command {id}"))),
            Ok(None) => return Err(("eof".into(), "closed".into())),
            Ok(Some(Err(e))) => return Err(("io".into(), e.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        if let Message::Close(frame) = &message {
            let ended = wire::closed(frame.as_ref());
            return Err((ended.key(), ended.reason().to_owned()));
        }
        // What came with the answer (pushes batched after it in the same
        // message) is handed back, not dropped.
        let mut answer = None;
        let mut rest = Vec::new();
        for reply in replies(format, &message) {
            match reply {
                Reply::Ping => {
                    let _ = ws.send(wire::pong(format)).await;
                }
                Reply::Result { id: got, result } if got == id => answer = Some(Ok(result)),
                Reply::Error { id: got, error } if got == id => {
                    answer = Some(Err((error.code.to_string(), error.message)));
                }
                other => rest.push(other),
            }
        }
        match answer {
            Some(Ok(result)) => return Ok((result, rest)),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
}

/// The replies of a server message.
fn replies(format: Format, message: &Message) -> Vec<Reply> {
    match (format, message) {
        (Format::Json, Message::Text(text)) => text
            .split('\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| Reply::decode(line.as_bytes()).ok())
            .collect(),
        (Format::Protobuf, Message::Binary(body)) => decode_replies(body).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn stamp_of(data: &str) -> Option<u64> {
    serde_json::from_str::<wire::Stamp>(data).ok().map(|s| s.t)
}

/// Reads publications until the connection ends (its way of ending), the
/// churn closes it (`Ended::Churn`) or the run ends (None).
async fn session(
    ws: &mut Ws,
    i: usize,
    shared: &Shared,
    channel: &str,
    format: Format,
    check: &mut Check,
    first_replies: Vec<Reply>,
) -> Option<Ended> {
    if let Some(ended) = take(ws, shared, channel, format, check, first_replies).await {
        return Some(ended);
    }
    let churn_at = shared.next_churn(i, now_micros());
    let churn = async {
        match churn_at {
            Some(at) => tokio::time::sleep_until(workers::at(at)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(churn);
    let end = tokio::time::sleep_until(workers::at(shared.end));
    tokio::pin!(end);
    loop {
        let message = tokio::select! {
            _ = &mut end => return None,
            _ = &mut churn => {
                let _ = ws.close(None).await;
                return Some(Ended::Churn);
            }
            message = ws.next() => message,
        };
        let message = match message {
            None => return Some(Ended::Eof),
            Some(Err(e)) => return Some(Ended::Io(e.to_string())),
            Some(Ok(message)) => message,
        };
        if let Message::Close(frame) = &message {
            return Some(wire::closed(frame.as_ref()));
        }
        let replies = replies(format, &message);
        if let Some(ended) = take(ws, shared, channel, format, check, replies).await {
            return Some(ended);
        }
    }
}

/// Handles what the server sent: pings answered, publications of `channel`
/// checked; how the connection ends if the replies say it does.
async fn take(
    ws: &mut Ws,
    shared: &Shared,
    channel: &str,
    format: Format,
    check: &mut Check,
    replies: Vec<Reply>,
) -> Option<Ended> {
    for reply in replies {
        match reply {
            Reply::Ping => {
                let _ = ws.send(wire::pong(format)).await;
            }
            Reply::Push(push) => match push.body {
                PushBody::Publication(p) if push.channel == channel => {
                    shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    record_latency(shared, stamp_of(p.data.get()));
                    if p.offset == 0 {
                        shared.unpositioned.fetch_add(1, Ordering::Relaxed);
                    } else {
                        check.delivered(p.offset);
                    }
                }
                PushBody::Disconnect(d) => return Some(Ended::Code(d.code, d.reason)),
                PushBody::Unsubscribe(u) if push.channel == channel => {
                    // Resubscribing is a new connection here.
                    let _ = ws.close(None).await;
                    return Some(Ended::Code(u.code, format!("unsubscribed: {}", u.reason)));
                }
                _ => {}
            },
            _ => {}
        }
    }
    None
}

/// Publishes `rate` a second over the channels through the API until the
/// stop, to the first URL that answers (the next after a failure); returns
/// each channel's last acknowledged (epoch, offset), the acknowledged count
/// and the failures.
async fn publish(
    urls: Vec<String>,
    key: String,
    rate: f64,
    shared: Arc<Shared>,
) -> (BTreeMap<String, (String, u64)>, u64, u64) {
    let mut tops: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let (mut acked, mut failed) = (0u64, 0u64);
    let mut sequence = vec![0u64; shared.channels];
    let mut url = 0;
    let mut api: Option<crate::ApiClient> = None;
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: u64 = 0;
    let stop = workers::at(shared.stop_at);
    while tokio::time::Instant::now() < stop {
        ticker.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due && tokio::time::Instant::now() < stop {
            let k = (sent % shared.channels as u64) as usize;
            sent += 1;
            let channel = format!("{}-{k}", shared.channel);
            sequence[k] += 1;
            let body = json!({
                "channel": channel,
                "data": {"t": now_micros(), "s": sequence[k], "c": channel},
            })
            .to_string();
            if api.is_none() {
                match crate::ApiClient::connect(&urls[url % urls.len()], &key).await {
                    Ok(client) => api = Some(client),
                    Err(_) => {
                        failed += 1;
                        url += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let Some(client) = api.as_mut() else {
                continue;
            };
            match client.post_body("/api/publish", &body).await {
                Ok((true, response)) => match position(&response) {
                    Some((epoch, offset)) => {
                        acked += 1;
                        let top = tops.entry(channel).or_insert((epoch.clone(), 0));
                        if top.0 != epoch || offset > top.1 {
                            *top = (epoch, offset.max(top.1));
                        }
                    }
                    None => failed += 1,
                },
                Ok((false, _)) => failed += 1,
                Err(_) => {
                    failed += 1;
                    api = None;
                    url += 1;
                }
            }
        }
    }
    (tops, acked, failed)
}

/// The (epoch, offset) of a publish answer: `{"result":{"offset":N,"epoch":"…"}}`.
fn position(response: &[u8]) -> Option<(String, u64)> {
    let value: Value = serde_json::from_slice(response).ok()?;
    let result = value.get("result")?;
    let offset = result.get("offset").and_then(Value::as_u64)?;
    let epoch = result.get("epoch").and_then(Value::as_str)?.to_owned();
    Some((epoch, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_centrifuge_js() {
        // step 0: 500 + randomInt(0, 500).
        assert_eq!(backoff_ms(0, 500, 20_000, 0.0), 500);
        assert_eq!(backoff_ms(0, 500, 20_000, 0.999_999), 1000);
        // step 3: 500 + randomInt(0, 4000).
        assert_eq!(backoff_ms(3, 500, 20_000, 0.5), 500 + 2000);
        // The cap: min(max, min + jitter) at large steps, and no overflow.
        assert_eq!(backoff_ms(6, 500, 20_000, 0.999_999), 20_000);
        assert_eq!(backoff_ms(200, 500, 20_000, 0.999_999), 20_000);
        assert_eq!(backoff_ms(200, 500, 20_000, 0.0), 500);
        // Every delay is within [min, max] and jittered over the whole range.
        let mut seen = BTreeSet::new();
        for step in 0..40 {
            for k in 0..100 {
                let d = backoff_ms(step, 500, 20_000, k as f64 / 100.0);
                assert!((500..=20_000).contains(&d), "step {step}: {d}");
                seen.insert(d / 1000);
            }
        }
        assert!(seen.len() > 15, "{seen:?}");
    }

    #[test]
    fn offsets_in_order_pass() {
        let mut c = Check::default();
        c.subscribed("e", 0, false, &[]);
        for o in 1..=10 {
            c.delivered(o);
        }
        assert_eq!((c.gaps, c.duplicates, c.reorders), (0, 0, 0));
        assert_eq!(c.position(), Some((10, "e")));
    }

    #[test]
    fn a_jump_is_a_gap_and_a_late_arrival_a_reorder() {
        let mut c = Check::default();
        c.subscribed("e", 5, false, &[]);
        c.delivered(6);
        c.delivered(9); // 7 and 8 skipped
        assert_eq!((c.gaps, c.missed_offsets), (1, 2));
        c.delivered(7); // late: a reorder, no longer missed
        assert_eq!((c.reorders, c.missed_offsets, c.duplicates), (1, 1, 0));
        c.delivered(9); // again: a duplicate
        c.delivered(6);
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.position(), Some((9, "e")));
    }

    #[test]
    fn recovery_continues_the_stream_and_a_short_one_is_a_gap() {
        let mut c = Check::default();
        c.subscribed("e", 3, false, &[]);
        c.delivered(4);
        // Recovered from 4: 5 and 6 come with the answer, top 6.
        c.subscribed("e", 6, true, &[5, 6]);
        assert_eq!((c.gaps, c.duplicates), (0, 0));
        c.delivered(7);
        // Recovered, but the answer stops at 8 of a top of 10.
        c.subscribed("e", 10, true, &[8]);
        assert_eq!((c.gaps, c.missed_offsets), (1, 2));
        // The missing ones arrive late: reorders, no longer missed.
        c.subscribed("e", 10, true, &[9, 10]);
        assert_eq!((c.reorders, c.missed_offsets, c.duplicates), (2, 0, 0));
        // Given again: duplicates.
        c.subscribed("e", 10, true, &[10]);
        assert_eq!(c.duplicates, 1);
    }

    #[test]
    fn being_told_starts_the_stream_over() {
        let mut c = Check::default();
        c.subscribed("e", 3, false, &[]);
        // recovered: false at a later offset: told, not a gap.
        c.subscribed("e", 50, false, &[]);
        c.delivered(51);
        // A new epoch, even "recovered", is a new stream.
        c.subscribed("f", 2, true, &[]);
        c.delivered(3);
        assert_eq!((c.gaps, c.duplicates, c.reorders), (0, 0, 0));
        assert_eq!(c.position(), Some((3, "f")));
    }

    #[test]
    fn waves_are_bursts_of_one_percent_within_a_second() {
        let s = 1_000_000;
        // 200 connections: a wave needs 2 within 1 s.
        let outages = vec![
            (5 * s, Some(6 * s)), // alone: churn, not a wave
            (20 * s, Some(21 * s)),
            (20 * s + 300_000, Some(24 * s)),
            (21 * s, Some(22 * s)), // within 1 s of the previous: same wave
            (40 * s, None),
            (40 * s + 10, Some(41 * s)),
        ];
        let found = waves(&outages, 200);
        assert_eq!(
            found,
            vec![
                Wave {
                    start_ms: 20_000,
                    size: 3,
                    recovery_ms: Some(4_000)
                },
                Wave {
                    start_ms: 40_000,
                    size: 2,
                    recovery_ms: None
                },
            ]
        );
    }

    #[test]
    fn raw_records_merge_and_summarize() {
        let a = Raw {
            connections: 2,
            channels: 1,
            duration_s: 10.0,
            connects_first: 2,
            reconnects: 1,
            per_second: vec![2, 0, 1],
            recovered_true: 1,
            backoff: json!([[700, 1]]),
            tops: [("c-0".to_owned(), ("e".to_owned(), 10))].into(),
            ends: [(
                "c-0".to_owned(),
                [("e".to_owned(), [(10, 2)].into())].into(),
            )]
            .into(),
            ..Raw::default()
        };
        let b = Raw {
            connections: 2,
            channels: 1,
            duration_s: 10.0,
            connects_first: 2,
            per_second: vec![1, 1],
            backoff: json!([[900, 2]]),
            ends: [("c-0".to_owned(), [("e".to_owned(), [(9, 1)].into())].into())].into(),
            unconnected_at_end: 1,
            connect_errors: json!({"refused": {"count": 3, "reason": "refused"}}),
            ..Raw::default()
        };
        let merged = merge_raw(&[
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap(),
        ]);
        assert_eq!(merged["connections"], 4);
        assert_eq!(merged["connects"], 5);
        assert_eq!(merged["connects_per_sec"], json!([3, 1, 1]));
        assert_eq!(merged["peak_connects_per_sec"], 3);
        assert_eq!(merged["behind_at_end"], 1);
        assert_eq!(merged["unconnected_at_end"], 1);
        assert_eq!(merged["errors"], 1);
        assert_eq!(merged["backoff_ms"]["count"], 3);
        assert_eq!(merged["backoff_ms"]["min"], 700);
        assert_eq!(merged["backoff_ms"]["max"], 900);
        assert_eq!(merged["connect_errors"]["refused"]["count"], 3);
    }

    #[test]
    fn churn_is_spread_over_the_period() {
        let period = 10_000_000;
        let times: Vec<u64> = (0..4).map(|i| churn_at(1_000, period, i, 4, 0)).collect();
        assert_eq!(times, vec![1_000, 2_501_000, 5_001_000, 7_501_000]);
        // At its time, the next is a period later.
        assert_eq!(churn_at(1_000, period, 0, 4, 1_000), 10_001_000);
        assert_eq!(churn_at(1_000, period, 1, 4, 9_000_000), 12_501_000);
    }
}
