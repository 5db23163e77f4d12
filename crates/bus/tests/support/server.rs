//! One `redis-server` process per [`RedisServer`].

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::tls::{TlsFiles, TlsMaterial};

pub(crate) const MISSING: &str = "redis-server not found: install it with `apt-get install -y redis-server` (scripts/test does this when run as root)";

/// How long a server may take to answer `PING` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const DUMP_FILE: &str = "dump.rdb";

/// Panics with [`MISSING`] unless both binaries run.
pub(crate) fn require_binaries() {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        for bin in ["redis-server", "redis-cli"] {
            match Command::new(bin).arg("--version").output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    return Err(format!(
                        "{MISSING} (`{bin} --version` failed: {})",
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
                Err(e) => return Err(format!("{MISSING} (`{bin}`: {e})")),
            }
        }
        Ok(())
    });
    if let Err(message) = found {
        panic!("{message}");
    }
}

/// A loopback port nobody listens on now. Ports come from one process-wide
/// sequence (so parallel tests never pick the same one) in 20000..32000,
/// below the usual ephemeral range, starting at a per-process offset.
pub(crate) fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        AtomicU32::new(
            std::process::id()
                .wrapping_mul(7919)
                .wrapping_add(nanos / 1000)
                % 12_000,
        )
    });
    for _ in 0..12_000 {
        let port = 20_000 + (next.fetch_add(1, Ordering::Relaxed) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "herald-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {path:?}: {e}"));
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What kind of server to start.
#[derive(Clone, Default)]
pub(crate) struct Options {
    pub(crate) tls: Option<Arc<TlsFiles>>,
    /// An ACL user with every right; the `default` user is disabled.
    pub(crate) acl: Option<(String, String)>,
    /// The ACL user's rules instead of every right.
    pub(crate) acl_rules: Option<String>,
    pub(crate) cluster: bool,
    /// Starts as a replica of the server on this loopback port.
    pub(crate) replica_of: Option<u16>,
}

/// A running (or stopped) `redis-server` bound to 127.0.0.1.
pub(crate) struct RedisServer {
    port: u16,
    /// The cluster bus port, in cluster mode.
    bus_port: Option<u16>,
    options: Options,
    dir: TempDir,
    child: Option<Child>,
}

/// Why a start failed.
struct StartError {
    port_in_use: bool,
    message: String,
}

impl RedisServer {
    /// A plain standalone server.
    pub(crate) fn start() -> Self {
        Self::launch(Options::default())
    }

    /// A TLS-only server (`--port 0 --tls-port P`) with a certificate for
    /// 127.0.0.1 signed by `tls`'s CA; clients are not asked for certificates.
    pub(crate) fn start_tls(tls: &TlsMaterial) -> Self {
        let dir = TempDir::new("redis-tls-files");
        let files = TlsFiles::write(tls, dir);
        Self::launch(Options {
            tls: Some(Arc::new(files)),
            ..Options::default()
        })
    }

    /// A server where only `user`/`password` may connect (anonymous access,
    /// the `default` user, is off).
    pub(crate) fn start_acl(user: &str, password: &str) -> Self {
        Self::launch(Options {
            acl: Some((user.to_owned(), password.to_owned())),
            ..Options::default()
        })
    }

    pub(crate) fn launch(options: Options) -> Self {
        require_binaries();
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = Self {
                port: free_port(),
                bus_port: options.cluster.then(free_port),
                options: options.clone(),
                dir: TempDir::new("redis"),
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) if e.port_in_use => last = e.message,
                Err(e) => panic!("{}", e.message),
            }
        }
        panic!("redis-server could not find a free port: {last}");
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:P` (`rediss://` for a TLS server).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:P`
    pub(crate) fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn args(&self) -> Vec<String> {
        let dir = self.dir.path().display().to_string();
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--dbfilename",
            DUMP_FILE,
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &self.options.tls {
            Some(tls) => {
                for (flag, value) in [
                    ("--port", "0".to_string()),
                    ("--tls-port", self.port.to_string()),
                    ("--tls-cert-file", tls.cert.display().to_string()),
                    ("--tls-key-file", tls.key.display().to_string()),
                    ("--tls-ca-cert-file", tls.ca.display().to_string()),
                    ("--tls-auth-clients", "no".to_string()),
                ] {
                    args.push(flag.into());
                    args.push(value);
                }
            }
            None => {
                args.push("--port".into());
                args.push(self.port.to_string());
            }
        }
        if let Some(master) = self.options.replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            if self.options.tls.is_some() {
                args.extend(["--tls-replication".into(), "yes".into()]);
            }
        }
        if let Some((user, password)) = &self.options.acl {
            let rules = self
                .options
                .acl_rules
                .clone()
                .unwrap_or_else(|| "~* &* +@all".to_owned());
            let mut user_args = vec![
                "--user".to_owned(),
                user.clone(),
                "on".to_owned(),
                format!(">{password}"),
            ];
            user_args.extend(rules.split(' ').map(str::to_owned));
            user_args.extend(["--user", "default", "off"].map(str::to_owned));
            for arg in user_args {
                args.push(arg.to_string());
            }
        }
        if let Some(bus) = self.bus_port {
            for arg in [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                "--cluster-port",
                &bus.to_string(),
            ] {
                args.push(arg.to_string());
            }
        }
        args
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("redis log file");
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file handle")))
            .stderr(Stdio::from(log))
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let tail = self.log_tail();
                if self.options.tls.is_some()
                    && !tail.contains("Address already in use")
                    && (tail.contains("Bad directive") || tail.contains("TLS"))
                {
                    panic!(
                        "this redis-server cannot serve TLS (it needs to be built with TLS \
                         support, as Debian's is): it exited with {status}:\n{tail}"
                    );
                }
                return Err(StartError {
                    port_in_use: tail.contains("Address already in use"),
                    message: format!(
                        "redis-server on port {} exited with {status}:\n{tail}",
                        self.port
                    ),
                });
            }
            if self.cli(&["PING"]).trim() == "PONG" {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                self.kill();
                panic!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}:\n{tail}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis-cli` arguments that reach this server (TLS, credentials).
    fn cli_connection_args(&self, with_credentials: bool) -> Vec<String> {
        let mut args = vec![
            "-h".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            self.port.to_string(),
        ];
        if let Some(tls) = &self.options.tls {
            args.push("--tls".into());
            args.push("--cacert".into());
            args.push(tls.ca.display().to_string());
        }
        if let (Some((user, password)), true) = (&self.options.acl, with_credentials) {
            args.extend([
                "--user".into(),
                user.clone(),
                "--pass".into(),
                password.clone(),
            ]);
            args.push("--no-auth-warning".into());
        }
        args
    }

    fn run_cli(&self, with_credentials: bool, args: &[&[u8]]) -> Output {
        self.run_cli_with_stdin(with_credentials, args, None)
    }

    /// With `stdin`, `redis-cli -x` reads the last argument from it (so it
    /// may hold any byte, NUL included).
    fn run_cli_with_stdin(
        &self,
        with_credentials: bool,
        args: &[&[u8]],
        stdin: Option<&[u8]>,
    ) -> Output {
        let mut command = Command::new("redis-cli");
        command.args(self.cli_connection_args(with_credentials));
        if stdin.is_some() {
            command.arg("-x");
        }
        command
            .args(args.iter().map(|a| OsStr::from_bytes(a)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().map(|mut child| {
            if let Some(bytes) = stdin {
                let mut pipe = child.stdin.take().expect("piped stdin");
                pipe.write_all(bytes).expect("write redis-cli stdin");
            }
            child
        });
        match child.and_then(|child| child.wait_with_output()) {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("cannot run redis-cli: {e}"),
        }
    }

    /// Runs `args` plus `last` as the final argument, read by `redis-cli -x`
    /// from its standard input: `last` may hold any byte.
    pub(crate) fn cli_stdin(&self, args: &[&str], last: &[u8]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        String::from_utf8_lossy(&self.run_cli_with_stdin(true, &args, Some(last)).stdout)
            .into_owned()
    }

    /// Runs one command with `redis-cli` (as the ACL user, if any) and
    /// returns its standard output. Redis errors appear in the output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        String::from_utf8_lossy(&self.run_cli(true, &args).stdout).into_owned()
    }

    /// Like [`RedisServer::cli`] with arbitrary bytes as arguments.
    pub(crate) fn cli_bytes(&self, args: &[&[u8]]) -> String {
        String::from_utf8_lossy(&self.run_cli(true, args).stdout).into_owned()
    }

    /// Like [`RedisServer::cli`] without credentials; stdout and stderr.
    pub(crate) fn cli_anonymous(&self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let out = self.run_cli(false, &args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Keys matching `pattern` (`redis-cli --scan`), sorted.
    pub(crate) fn scan(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_owned)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }

    /// `calls` of `cmdstat_<command>` in `INFO commandstats`; 0 when absent.
    pub(crate) fn command_calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        stats
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
            .map_or(0, |rest| {
                rest.split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unreadable commandstats line: {rest}"))
            })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL): what it held is gone unless saved before.
    pub(crate) fn stop(&mut self) {
        self.kill();
    }

    /// Saves the data set (`SAVE`), then kills the server; [`restart`]
    /// loads it back.
    ///
    /// [`restart`]: RedisServer::restart
    pub(crate) fn stop_saving(&mut self) {
        let reply = self.cli(&["SAVE"]);
        assert_eq!(
            reply.trim(),
            "OK",
            "SAVE on port {} failed: {reply}",
            self.port
        );
        assert!(
            self.dir.path().join(DUMP_FILE).exists(),
            "SAVE wrote no {DUMP_FILE}"
        );
        self.kill();
    }

    /// Removes the saved data set, so the next [`restart`] starts empty.
    ///
    /// [`restart`]: RedisServer::restart
    pub(crate) fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe() a running server");
        let _ = fs::remove_file(self.dir.path().join(DUMP_FILE));
    }

    /// Starts the stopped server again on the same port, directory and data
    /// file (so it loads what [`stop_saving`] saved).
    ///
    /// [`stop_saving`]: RedisServer::stop_saving
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() a running server");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(e) if e.port_in_use && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("restart failed: {}", e.message),
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`RedisServer::pause`] (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid} failed: {status}");
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Records what this server executes (`MONITOR`) until dropped.
    pub(crate) fn monitor(&self) -> Monitor {
        let mut child = Command::new("redis-cli")
            .args(self.cli_connection_args(true))
            .arg("MONITOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli MONITOR: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let monitor = Monitor { child, lines };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !monitor.lines().iter().any(|l| l.trim() == "OK") {
            assert!(
                Instant::now() < deadline,
                "MONITOR on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        monitor
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `redis-cli MONITOR`.
pub(crate) struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    /// Every line so far (`OK` first, then one per command).
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The commands so far whose lowercased name and first argument are
    /// `command` and `arg`, as `MONITOR` quotes them.
    pub(crate) fn count(&self, command: &str, arg: &str) -> usize {
        let needle = format!(
            "\"{}\" \"{}\"",
            command.to_ascii_lowercase(),
            arg.to_ascii_lowercase()
        );
        self.lines()
            .iter()
            .filter(|line| line.to_ascii_lowercase().contains(&needle))
            .count()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
