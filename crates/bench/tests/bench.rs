//! herald-bench against a real `herald serve` (memory engine): runs longer
//! than ping interval + pong timeout end with a summary and no disconnect,
//! and `hold` reconnects (churn) and recovers without a gap, spread over
//! two processes.
//!
//! The herald binary is the workspace's `target/<profile>/herald`, next to
//! this crate's binary (`cargo test --workspace` builds it; alone, run
//! `cargo build -p herald --bin herald` first).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "bench-test-secret";
const API_KEY: &str = "bench-test-key";

/// Pings every second, a pong due within 500 ms: a client that does not
/// answer is closed (3012) within about 1.5 s.
const CONFIG: &str = r#"
[client]
ping_interval = "1s"
pong_timeout = "500ms"

[channel.without_namespace]
allow_subscribe_for_client = true
allow_publish_for_client = true

[[channel.namespaces]]
name = "hold"
history_size = 1000
history_ttl = "300s"
allow_recovery = true
allow_subscribe_for_client = true

[http_stream]
enabled = true
"#;

struct Herald {
    child: Child,
    ws_url: String,
    dir: PathBuf,
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn herald_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_herald-bench"));
    let herald = bench.with_file_name("herald");
    assert!(
        herald.exists(),
        "{} is missing: build it with `cargo build -p herald --bin herald` \
         (cargo test --workspace does)",
        herald.display()
    );
    herald
}

fn start_herald(name: &str) -> Herald {
    let dir = std::env::temp_dir().join(format!("herald-bench-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let config = format!(
        "[http_server]\naddress = \"127.0.0.1\"\nport = 0\ninternal_port = 0\n\n\
         [client.token]\nhmac_secret_key = \"{SECRET}\"\n\n[http_api]\nkey = \"{API_KEY}\"\n{CONFIG}"
    );
    let path = dir.join("herald.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut command = Command::new(herald_binary());
    command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("spawn herald");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("herald listening ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("herald did not print its ready line within 30 s");
        }
    };
    let ws_url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws="))
        .expect("ws= in the ready line")
        .to_owned();
    Herald { child, ws_url, dir }
}

/// Runs herald-bench; its last stdout line parsed, or a panic with its output.
fn bench(args: &[&str]) -> Value {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(args)
        .output()
        .expect("run herald-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "herald-bench {args:?} failed ({:?}) after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status,
        started.elapsed()
    );
    let last = stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}\nstderr:\n{stderr}"));
    println!("herald-bench {}: {summary}", args[0]);
    summary
}

#[track_caller]
fn assert_no_disconnects(summary: &Value) {
    assert_eq!(summary["disconnects_total"], 0, "{summary}");
    assert_eq!(summary["disconnects"], serde_json::json!({}), "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
}

/// Every connection of a 4 s run (a JSON publisher, JSON and protobuf
/// subscribers, HTTP-streaming subscribers) answers pings: with pings every
/// second and pongs due in 500 ms, one that does not is closed long before
/// the end.
#[test]
fn runs_longer_than_the_ping_interval_answer_every_ping() {
    let herald = start_herald("pings");
    let url = herald.ws_url.as_str();
    let fanout = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            bench(&[
                "idle",
                "--url",
                url,
                "--secret",
                SECRET,
                "--subscribers",
                "20",
                "--duration",
                "4s",
                "--transport",
                "http_stream",
            ])
        });
        let fanout = bench(&[
            "fanout",
            "--url",
            url,
            "--secret",
            SECRET,
            "--subscribers",
            "20",
            "--format",
            "mixed",
            "--rate",
            "20",
            "--warmup",
            "1s",
            "--duration",
            "4s",
        ]);
        assert_no_disconnects(&stream.join().expect("the idle run"));
        fanout
    });
    assert_no_disconnects(&fanout);
    assert_eq!(fanout["missing_deliveries"], 0, "{fanout}");
    assert!(
        fanout["publications"].as_u64().unwrap_or(0) >= 40,
        "{fanout}"
    );
}

/// `hold` over two processes with churn: connections are closed and
/// reconnect (after centrifuge-js's backoff), recover from their position,
/// and no subscriber sees a gap, a duplicate or a reorder.
#[test]
fn hold_reconnects_and_recovers_without_a_gap() {
    let herald = start_herald("hold");
    let summary = bench(&[
        "hold",
        "--url",
        &herald.ws_url,
        "--secret",
        SECRET,
        "--subscribers",
        "300",
        "--channels",
        "10",
        "--channel",
        "hold:c",
        "--api-key",
        API_KEY,
        "--rate",
        "50",
        "--churn",
        "120",
        "--duration",
        "8s",
        "--processes",
        "2",
        "--format",
        "mixed",
    ]);
    assert_eq!(summary["scenario"], "hold");
    assert_eq!(summary["processes"], 2, "{summary}");
    assert_eq!(summary["connections"], 300, "{summary}");
    assert_eq!(summary["connects_first"], 300, "{summary}");
    // 120%/min of 300 for 8 s: about 48 closed on purpose.
    let reconnects = summary["reconnects"].as_u64().unwrap_or(0);
    assert!(reconnects >= 20, "too few reconnects: {summary}");
    assert!(
        summary["recovered_true"].as_u64().unwrap_or(0) >= 20,
        "{summary}"
    );
    assert_eq!(summary["recovered_false"], 0, "{summary}");
    assert!(
        summary["publications_acked"].as_u64().unwrap_or(0) >= 300,
        "{summary}"
    );
    assert!(
        summary["deliveries"].as_u64().unwrap_or(0) >= 9_000,
        "{summary}"
    );
    for key in [
        "gaps",
        "missed_offsets",
        "duplicates",
        "reorders",
        "behind_at_end",
        "errors",
    ] {
        assert_eq!(summary[key], 0, "{key}: {summary}");
    }
    assert_eq!(summary["unconnected_at_end"], 0, "{summary}");
    // Only the churn closed connections: no 3012 (pings answered).
    let disconnects = summary["disconnects"].as_object().expect("disconnects");
    assert_eq!(
        disconnects.keys().collect::<Vec<_>>(),
        vec!["churn"],
        "{summary}"
    );
    assert_eq!(
        summary["disconnects"]["churn"]["count"].as_u64(),
        Some(reconnects)
    );
    let backoff = &summary["backoff_ms"];
    assert_eq!(backoff["count"].as_u64(), Some(reconnects), "{summary}");
    assert!(backoff["min"].as_u64().unwrap_or(0) >= 500, "{summary}");
    assert!(
        backoff["max"].as_u64().unwrap_or(0) <= 1000,
        "first reconnects wait 500-1000 ms: {summary}"
    );
}
