//! `--processes N`: the connections spread over N processes, since one
//! process can hold only so many open files (about 20,000 here).
//!
//! The parent re-executes its own binary N times with its own arguments
//! plus the hidden `--worker I/N` and `--epoch T` (Unix microseconds: the
//! zero of every process's bench clock, so send stamps and times compare
//! across processes). Worker I takes the connections whose global index is
//! I modulo N (so `--url` round-robin and `--format mixed` follow the global
//! index); worker 0 alone publishes. Each worker opens its connections,
//! prints [`READY`] on stdout and waits for a `go <bench micros>` line on
//! stdin; the parent sends it when every worker is ready, so all measure
//! the same window. A worker's last stdout line is its summary with a
//! `worker` object of raw figures (the latency histogram as `[value,
//! count]` pairs, exact to merge; counts that derived figures are made
//! of); the parent merges them ([`merge`]) and prints one summary.
//! Workers' `herald-bench-progress` lines (`hold`) are summed per period
//! and printed by the parent.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::disconnects::Tally;

/// What a worker prints when its connections are open.
pub(crate) const READY: &str = "herald-bench-ready";
/// The prefix of a worker's progress line (a JSON object follows).
pub(crate) const PROGRESS: &str = "herald-bench-progress ";

/// This process's share: (index, total); (0, 1) when not a worker.
static SHARE: OnceLock<(usize, usize)> = OnceLock::new();

pub(crate) fn set_share(index: usize, total: usize) {
    let _ = SHARE.set((index, total));
}

pub(crate) fn share() -> (usize, usize) {
    *SHARE.get().unwrap_or(&(0, 1))
}

pub(crate) fn is_worker() -> bool {
    share().1 > 1
}

/// The global indices of this process's `n` connections.
pub(crate) fn indices(n: usize) -> impl Iterator<Item = usize> {
    let (index, total) = share();
    (index..n).step_by(total.max(1))
}

/// Whether this process publishes (worker 0, or the only process).
pub(crate) fn publishes() -> bool {
    share().0 == 0
}

/// Parses `--worker I/N`.
pub(crate) fn parse_worker(text: &str) -> Result<(usize, usize), String> {
    let (index, total) = text
        .split_once('/')
        .ok_or_else(|| format!("expected I/N, got {text:?}"))?;
    let index: usize = index
        .parse()
        .map_err(|_| format!("bad index in {text:?}"))?;
    let total: usize = total
        .parse()
        .map_err(|_| format!("bad total in {text:?}"))?;
    if total == 0 || index >= total {
        return Err(format!("{text:?}: need 0 <= I < N"));
    }
    Ok((index, total))
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The go time (bench micros), once the barrier is passed.
static GO: AtomicU64 = AtomicU64::new(u64::MAX);
static BARRIER: Mutex<()> = Mutex::const_new(());

/// The start of the measured run, the same in every process: a worker says
/// it is ready and waits for the parent's go; a lone process goes at once.
/// Only the first call waits; later ones return the same time.
pub(crate) async fn sync() -> u64 {
    let _guard = BARRIER.lock().await;
    let go = GO.load(Ordering::Relaxed);
    if go != u64::MAX {
        return go;
    }
    let go = if is_worker() {
        println!("{READY}");
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| (n, line))
        })
        .await;
        match read {
            Ok(Ok((n, line))) if n > 0 => line
                .trim()
                .strip_prefix("go ")
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(crate::now_micros),
            _ => {
                eprintln!("herald-bench: worker: the parent went away");
                std::process::exit(1);
            }
        }
    } else {
        crate::now_micros()
    };
    GO.store(go, Ordering::Relaxed);
    go
}

/// A tokio instant for a bench-clock time (micros).
pub(crate) fn at(micros: u64) -> tokio::time::Instant {
    let now = crate::now_micros();
    let now_instant = tokio::time::Instant::now();
    if micros >= now {
        now_instant + Duration::from_micros(micros - now)
    } else {
        now_instant
            .checked_sub(Duration::from_micros(now - micros))
            .unwrap_or(now_instant)
    }
}

/// What a scenario with records of its own (`hold`) adds to the merge: the
/// parent knows only summaries, the scenario its records.
#[derive(Clone, Copy)]
pub(crate) struct Hooks {
    /// The summary fields made of the workers' `worker.hold` records.
    pub(crate) merge_records: fn(&[Value]) -> Map<String, Value>,
    /// One progress line from the workers' progress sums at second `t`.
    pub(crate) progress_text: fn(u64, &Map<String, Value>, usize) -> String,
}

/// The parent: runs `processes` workers of this binary with `args` (the
/// command line without the program name) and returns their merged summary.
pub(crate) async fn run_parent(
    processes: usize,
    args: Vec<std::ffi::OsString>,
    channels: usize,
    hooks: Hooks,
) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("find the herald-bench binary")?;
    let epoch = unix_micros();
    let mut children = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Event)>();
    for index in 0..processes {
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            .arg("--worker")
            .arg(format!("{index}/{processes}"))
            .arg("--epoch")
            .arg(epoch.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start worker {index} ({})", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut last = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if line == READY {
                    let _ = tx.send((index, Event::Ready));
                } else if let Some(progress) = line.strip_prefix(PROGRESS) {
                    if let Ok(value) = serde_json::from_str(progress) {
                        let _ = tx.send((index, Event::Progress(value)));
                    }
                } else {
                    last = Some(line);
                }
            }
            let _ = tx.send((index, Event::Done(last)));
        });
        children.push((child, Some(stdin)));
    }
    drop(tx);
    let mut ready = 0;
    let mut summaries: Vec<Option<Value>> = vec![None; processes];
    let mut done = 0;
    let mut progress: std::collections::BTreeMap<u64, (usize, Map<String, Value>)> =
        Default::default();
    while let Some((index, event)) = rx.recv().await {
        match event {
            Event::Ready => {
                ready += 1;
                if ready == processes {
                    let go = format!("go {}\n", crate::now_micros());
                    for (_, stdin) in &mut children {
                        if let Some(stdin) = stdin.as_mut() {
                            stdin.write_all(go.as_bytes()).await.ok();
                            stdin.flush().await.ok();
                        }
                    }
                }
            }
            Event::Progress(value) => {
                let t = value.get("t").and_then(Value::as_u64).unwrap_or(0);
                let entry = progress.entry(t).or_default();
                entry.0 += 1;
                add_numbers(&mut entry.1, &value);
                if entry.0 == processes {
                    if let Some((_, sums)) = progress.remove(&t) {
                        eprintln!("{}", (hooks.progress_text)(t, &sums, processes));
                    }
                }
            }
            Event::Done(last) => {
                done += 1;
                let status = children[index].0.wait().await;
                let summary = last.and_then(|l| serde_json::from_str::<Value>(&l).ok());
                match (status, summary) {
                    (Ok(status), Some(summary)) if status.success() => {
                        summaries[index] = Some(summary);
                    }
                    (status, _) => {
                        for (child, _) in &mut children {
                            let _ = child.start_kill();
                        }
                        bail!(
                            "worker {index}/{processes} failed ({status:?}); see its stderr above"
                        );
                    }
                }
                if done == processes {
                    break;
                }
            }
        }
    }
    let summaries: Vec<Value> = summaries.into_iter().flatten().collect();
    if summaries.len() != processes {
        bail!("{} of {processes} workers reported", summaries.len());
    }
    Ok(merge(&summaries, channels, hooks))
}

enum Event {
    Ready,
    Progress(Value),
    Done(Option<String>),
}

/// Adds the numbers of `from` to `into` (other values: the first seen).
fn add_numbers(into: &mut Map<String, Value>, from: &Value) {
    let Some(from) = from.as_object() else {
        return;
    };
    for (key, value) in from {
        match (into.get(key), value.as_f64()) {
            (Some(Value::Number(a)), Some(_)) if value.is_u64() && a.is_u64() => {
                let sum = a.as_u64().unwrap_or(0) + value.as_u64().unwrap_or(0);
                into.insert(key.clone(), sum.into());
            }
            (Some(Value::Number(a)), Some(b)) => {
                into.insert(key.clone(), (a.as_f64().unwrap_or(0.0) + b).into());
            }
            (None, _) => {
                into.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
}

/// A histogram as `[value, count]` pairs: each value is its bucket's
/// highest equivalent, so recording the pairs again rebuilds the same
/// buckets (an exact merge, unlike averaging percentiles).
pub(crate) fn histogram_pairs(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| Value::from(vec![v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Records `pairs` (as [`histogram_pairs`] makes them) into `h`.
pub(crate) fn add_pairs(h: &mut Histogram<u64>, pairs: &Value) {
    for pair in pairs.as_array().into_iter().flatten() {
        let value = pair.get(0).and_then(Value::as_u64).unwrap_or(0);
        let count = pair.get(1).and_then(Value::as_u64).unwrap_or(0);
        if value > 0 && count > 0 {
            let _ = h.record_n(value, count);
        }
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// One summary from the workers' summaries: counters summed, the latency
/// histograms merged exactly, figures made of counts recomputed from the
/// sums, server-wide readings (CPU, RSS) taken once. `channels` is the
/// number of channels publications are spread over (for the expected
/// deliveries).
pub(crate) fn merge(summaries: &[Value], channels: usize, hooks: Hooks) -> Value {
    let mut out = Map::new();
    let mut histogram = new_histogram();
    let mut disconnects = Tally::default();
    let mut connect_errors = Tally::default();
    let (mut delivered, mut bytes, mut missing) = (0u64, 0u64, 0u64);
    let (mut published_for, mut took) = (0f64, 0f64);
    let mut holds = Vec::new();
    for summary in summaries {
        let Some(fields) = summary.as_object() else {
            continue;
        };
        for (key, value) in fields {
            match key.as_str() {
                "worker" => {
                    add_pairs(&mut histogram, &value["histogram"]);
                    delivered += value["delivered"].as_u64().unwrap_or(0);
                    bytes += value["bytes"].as_u64().unwrap_or(0);
                    missing += value["missing"].as_u64().unwrap_or(0);
                    published_for = published_for.max(num(value, "published_for_s"));
                    took = took.max(num(value, "took_s"));
                    if let Some(hold) = value.get("hold") {
                        holds.push(hold.clone());
                    }
                }
                "disconnects" => disconnects.add_json(value),
                "connect_errors" => connect_errors.add_json(value),
                k if k.ends_with("_cpu_ms") || k == "rss_after_kib" => {
                    let now = out.get(k).and_then(Value::as_f64).unwrap_or(f64::MIN);
                    if value.as_f64().unwrap_or(f64::MIN) > now {
                        out.insert(k.to_owned(), value.clone());
                    }
                }
                "rss_before_kib" => {
                    let now = out.get(key).and_then(Value::as_f64).unwrap_or(f64::MAX);
                    if value.as_f64().unwrap_or(f64::MAX) < now {
                        out.insert(key.clone(), value.clone());
                    }
                }
                _ => match (out.get(key), value) {
                    (Some(Value::Number(a)), Value::Number(b)) => {
                        let sum = match (a.as_u64(), b.as_u64()) {
                            (Some(a), Some(b)) => Value::from(a + b),
                            _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
                        };
                        out.insert(key.clone(), sum);
                    }
                    (None, _) => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => {}
                },
            }
        }
    }
    for (name, q) in [
        ("p50_ms", 0.5),
        ("p90_ms", 0.9),
        ("p99_ms", 0.99),
        ("p999_ms", 0.999),
    ] {
        out.insert(
            name.into(),
            crate::ms(histogram.value_at_quantile(q)).into(),
        );
    }
    out.insert("max_ms".into(), crate::ms(histogram.max()).into());
    out.insert("disconnects".into(), disconnects.to_json());
    out.insert("disconnects_total".into(), disconnects.total().into());
    if out.contains_key("connect_errors") {
        out.insert("connect_errors".into(), connect_errors.to_json());
    }
    out.insert("processes".into(), summaries.len().into());
    // Publishing scenarios: what was expected of all the subscribers.
    if out.contains_key("publications") && out.contains_key("expected_deliveries") {
        let published = num(&Value::Object(out.clone()), "publications") as u64;
        let subscribers = num(&Value::Object(out.clone()), "subscribers") as u64;
        let expected = published * (subscribers / channels.max(1) as u64);
        let now_missing = expected.saturating_sub(delivered);
        let errors = (num(&Value::Object(out.clone()), "errors") as u64).saturating_sub(missing);
        out.insert("expected_deliveries".into(), expected.into());
        out.insert("missing_deliveries".into(), now_missing.into());
        out.insert("errors".into(), (errors + now_missing).into());
        let per_sec = delivered.min(expected) as f64 / published_for.max(1e-9);
        out.insert("deliveries_per_sec".into(), round(per_sec, 1).into());
        let per = |n: u64| round(n as f64 / delivered.max(1) as f64, 1);
        out.insert("wire_bytes_per_delivery".into(), per(bytes).into());
        if let Some(read) = out.get("ws_bytes_read").and_then(Value::as_u64) {
            out.insert("ws_bytes_per_delivery".into(), per(read).into());
        }
    }
    let ops = if out.contains_key("publications") {
        ("delivery", delivered)
    } else {
        let connections = out.get("connections").and_then(Value::as_u64).unwrap_or(0);
        ("connect", connections)
    };
    for who in ["server", "backend"] {
        if let Some(cpu) = out.get(&format!("{who}_cpu_ms")).and_then(Value::as_f64) {
            let per = round(cpu * 1000.0 / ops.1.max(1) as f64, 2);
            out.insert(format!("{who}_cpu_us_per_{}", ops.0), per.into());
        }
    }
    if out.contains_key("connects_per_sec") {
        let connections = num(&Value::Object(out.clone()), "connections");
        out.insert(
            "connects_per_sec".into(),
            (connections / took.max(1e-9)).round().into(),
        );
    }
    if let (Some(before), Some(after)) = (
        out.get("rss_before_kib").and_then(Value::as_f64),
        out.get("rss_after_kib").and_then(Value::as_f64),
    ) {
        let connections = num(&Value::Object(out.clone()), "connections").max(1.0);
        out.insert(
            "rss_per_conn_kib".into(),
            round((after - before).max(0.0) / connections, 2).into(),
        );
    }
    if !holds.is_empty() {
        for (key, value) in (hooks.merge_records)(&holds) {
            out.insert(key, value);
        }
    }
    out.remove("worker");
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Scenarios without records of their own.
    const NO_RECORDS: Hooks = Hooks {
        merge_records: |_| Map::new(),
        progress_text: |_, _, _| String::new(),
    };

    #[test]
    fn worker_arguments_parse_and_refuse_nonsense() {
        assert_eq!(parse_worker("1/3"), Ok((1, 3)));
        assert!(parse_worker("3/3").is_err());
        assert!(parse_worker("0/0").is_err());
        assert!(parse_worker("x").is_err());
        assert!(parse_worker("-1/2").is_err());
    }

    #[test]
    fn histograms_travel_as_pairs_without_losing_a_bucket() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        let mut both = new_histogram();
        for v in [1u64, 7, 950, 1_001, 123_456, 59_000_000] {
            a.record(v).unwrap();
            both.record(v).unwrap();
        }
        for v in [3u64, 950, 77_777, 2_000_000] {
            b.record_n(v, 3).unwrap();
            both.record_n(v, 3).unwrap();
        }
        let mut merged = new_histogram();
        add_pairs(&mut merged, &histogram_pairs(&a));
        add_pairs(&mut merged, &histogram_pairs(&b));
        assert_eq!(merged.len(), both.len());
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                both.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(merged.max(), both.max());
        assert_eq!(merged.min(), both.min());
    }

    #[test]
    fn publishing_summaries_merge_counts_and_recompute_what_is_made_of_them() {
        let mut h0 = new_histogram();
        h0.record_n(1_000, 90).unwrap();
        let mut h1 = new_histogram();
        h1.record_n(50_000, 10).unwrap();
        // Worker 0 published 100 publications to its 2 subscribers (all
        // delivered); worker 1's 2 subscribers missed 10 of them. Worker 0
        // published and thought nothing was missing.
        let w0 = json!({
            "scenario": "fanout", "format": "json", "errors": 1, "subscribers": 2,
            "publications": 100, "expected_deliveries": 200, "missing_deliveries": 0,
            "ws_bytes_read": 1000, "server_cpu_ms": 50, "deliveries_per_sec": 20.0,
            "disconnects": {"3012": {"count": 1, "reason": "no pong"}},
            "worker": {"histogram": histogram_pairs(&h0), "delivered": 200, "bytes": 900,
                       "missing": 0, "published_for_s": 10.0},
        });
        let w1 = json!({
            "scenario": "fanout", "format": "json", "errors": 0, "subscribers": 2,
            "publications": 0, "expected_deliveries": 0, "missing_deliveries": 0,
            "ws_bytes_read": 1000, "server_cpu_ms": 60, "deliveries_per_sec": 0.0,
            "disconnects": {"3012": {"count": 2, "reason": "no pong"}},
            "worker": {"histogram": histogram_pairs(&h1), "delivered": 190, "bytes": 900,
                       "missing": 0, "published_for_s": 10.0},
        });
        let merged = merge(&[w0, w1], 1, NO_RECORDS);
        assert_eq!(merged["scenario"], "fanout");
        assert_eq!(merged["subscribers"], 4);
        assert_eq!(merged["publications"], 100);
        assert_eq!(merged["expected_deliveries"], 400);
        assert_eq!(merged["missing_deliveries"], 10);
        assert_eq!(merged["errors"], 11);
        assert_eq!(merged["deliveries_per_sec"], 39.0);
        assert_eq!(merged["server_cpu_ms"], 60);
        assert_eq!(merged["server_cpu_us_per_delivery"], 153.85);
        assert_eq!(merged["ws_bytes_per_delivery"], 5.1);
        assert_eq!(merged["disconnects"]["3012"]["count"], 3);
        assert_eq!(merged["disconnects_total"], 3);
        assert_eq!(merged["processes"], 2);
        // 90 at 1 ms, 10 at 50 ms: p50 from the first, p99 from the second.
        assert_eq!(merged["p50_ms"], 1.0);
        assert!(merged["p99_ms"].as_f64().unwrap() >= 49.9, "{merged}");
        assert!(merged.get("worker").is_none());
    }

    #[test]
    fn idle_and_connect_summaries_take_server_readings_once() {
        let w = |before: u64, after: u64, conns: u64, took: f64| {
            json!({"scenario": "idle", "connections": conns, "rss_before_kib": before,
                   "rss_after_kib": after, "rss_per_conn_kib": 0.0, "connects_per_sec": 1,
                   "worker": {"histogram": [], "took_s": took}})
        };
        let merged = merge(
            &[w(1000, 5000, 100, 2.0), w(1100, 5100, 100, 4.0)],
            1,
            NO_RECORDS,
        );
        assert_eq!(merged["connections"], 200);
        assert_eq!(merged["rss_before_kib"], 1000);
        assert_eq!(merged["rss_after_kib"], 5100);
        assert_eq!(merged["rss_per_conn_kib"], 20.5);
        assert_eq!(merged["connects_per_sec"], 50.0);
    }
}
