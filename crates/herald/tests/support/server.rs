//! One `herald serve` child process per test, on ports the OS picks.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use super::token::SECRET;

/// How long `herald serve` may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// stderr lines kept for failure reports.
const STDERR_KEEP: usize = 400;

/// A running `herald serve`; killed and its temp dir removed on drop.
pub(crate) struct Server {
    child: Child,
    pid: u32,
    ws_url: String,
    api_url: String,
    dir: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a node with the base config (loopback, OS-chosen port, the
    /// test HMAC secret) followed by `toml_extra`, which may open any other
    /// table (`[client]`, `[channel.without_namespace]`, `[[channel.namespaces]]`).
    pub(crate) async fn start(toml_extra: &str) -> Server {
        Server::start_inner(0, "", toml_extra).await
    }

    /// Like [`Server::start`], with `http_server_extra` added to the
    /// `[http_server]` table (which the base config opens).
    pub(crate) async fn start_with_http(http_server_extra: &str, toml_extra: &str) -> Server {
        Server::start_inner(0, http_server_extra, toml_extra).await
    }

    /// Like [`Server::start`], with the internal listener (API, metrics) on
    /// its own port: for a TLS public port, so metrics stay plain HTTP.
    pub(crate) async fn start_with_internal_port(toml_extra: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Server::start_inner(port, "", toml_extra).await
    }

    async fn start_inner(internal_port: u16, http_server_extra: &str, toml_extra: &str) -> Server {
        let dir = unique_temp_dir();
        let config_path = dir.join("herald.toml");
        let config = format!(
            "[http_server]\naddress = \"127.0.0.1\"\nport = 0\ninternal_port = {internal_port}\n\
             {http_server_extra}\n\n\
             [client.token]\nhmac_secret_key = \"{SECRET}\"\n\n{toml_extra}\n"
        );
        std::fs::write(&config_path, &config).expect("write the test config");

        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The config file must be the only source: HERALD_* variables would
        // override it (and HERALD_CONFIG would replace it).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(name);
            }
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot spawn {}: {e}", env!("CARGO_BIN_EXE_herald"));
            }
        };
        let pid = child.id().expect("a just-spawned child has a pid");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == STDERR_KEEP {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stdout = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if line.starts_with("herald listening ") {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        let line = match ready {
            Ok(Some(line)) => line,
            outcome => {
                // Let the stderr reader catch up with a process that exited.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let status = child.try_wait().ok().flatten();
                let _ = std::fs::remove_dir_all(&dir);
                let why = if outcome.is_err() {
                    "timed out"
                } else {
                    "stdout closed"
                };
                panic!(
                    "herald did not print `herald listening ...` ({why} after {START_TIMEOUT:?}; \
                     exit status {status:?})\nconfig:\n{config}\nstdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    stderr.lock().unwrap_or_else(|e| e.into_inner()).join("\n"),
                );
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

        let field = |prefix: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in ready line {line:?}"))
                .to_owned()
        };
        let ws_url = field("ws=");
        let api_url = field("api=");
        assert!(
            (ws_url.starts_with("ws://127.0.0.1:") || ws_url.starts_with("wss://127.0.0.1:"))
                && ws_url.ends_with("/connection/websocket"),
            "unexpected ws url in {line:?}"
        );
        Server {
            child,
            pid,
            ws_url,
            api_url,
            dir,
            stderr,
        }
    }

    /// `ws://127.0.0.1:PORT/connection/websocket`
    pub(crate) fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// `http://127.0.0.1:PORT` (API, health, metrics).
    pub(crate) fn api_url(&self) -> &str {
        &self.api_url
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Resident set size of the server process, from `/proc/<pid>/status`.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|e| panic!("cannot read /proc/{}/status: {e}", self.pid));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// Sockets the server process holds open (listeners and connections).
    pub(crate) fn open_sockets(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid);
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// The value of one series of `/metrics` (`name{label="v"}` exactly as
    /// exported), 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(series)?;
                rest.strip_prefix(' ')?.trim().parse().ok()
            })
            .unwrap_or(0.0)
    }

    /// `GET /metrics` on the internal listener.
    pub(crate) async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = self
            .api_url
            .strip_prefix("http://")
            .expect("the internal listener is plain HTTP");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send GET /metrics");
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("GET /metrics timed out")
            .expect("read /metrics");
        response
    }

    /// Sends `signal` (e.g. "HUP") to the server process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Whether the process is still running (it must not crash on bad input).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines the server wrote to stderr.
    /// The config file the node was started with (rewrite it, then
    /// [`Server::signal`] `HUP`, to reload what can be reloaded).
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("herald.toml")
    }

    pub(crate) fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "---- herald (pid {}) stderr, last lines ----\n{}\n---- end of herald stderr ----",
                self.pid,
                self.stderr_tail()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn unique_temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "herald-e2e-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
