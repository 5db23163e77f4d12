//! A master, a replica and three Sentinels, as real processes: Debian ships
//! no separate `redis-sentinel` binary in every package, so each Sentinel is
//! `redis-server <conf> --sentinel`. The timings are short (1 s to call a
//! master down, 4 s failover timeout) so a failover completes in a few
//! seconds.

use std::fs::{self, OpenOptions};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::server::{free_port, require_binaries, Options, RedisServer, TempDir, MISSING};
use super::tls::{TlsFiles, TlsMaterial};

/// The name the Sentinels monitor the master under.
pub(crate) const MASTER_NAME: &str = "herald-master";
/// `requirepass` of every Sentinel: the engine must authenticate.
pub(crate) const SENTINEL_PASSWORD: &str = "sentinel-secret";
/// Most time a failover may take once the master is gone.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One Sentinel process.
pub(crate) struct Sentinel {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// TLS only (`port 0`, `tls-port`), also to the data servers.
    tls: Option<Arc<TlsFiles>>,
}

impl Sentinel {
    fn launch(master_port: u16, tls: Option<Arc<TlsFiles>>) -> Self {
        let mut sentinel = Self {
            port: free_port(),
            dir: TempDir::new("sentinel"),
            child: None,
            tls,
        };
        let listen = match &sentinel.tls {
            Some(tls) => format!(
                "port 0\ntls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n",
                sentinel.port,
                tls.cert.display(),
                tls.key.display(),
                tls.ca.display()
            ),
            None => format!("port {}\n", sentinel.port),
        };
        let conf = format!(
            "{listen}bind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
             requirepass {SENTINEL_PASSWORD}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 4000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = sentinel.dir.path().display(),
        );
        fs::write(sentinel.conf_path(), conf).expect("write sentinel.conf");
        sentinel.spawn();
        sentinel
    }

    fn conf_path(&self) -> std::path::PathBuf {
        self.dir.path().join("sentinel.conf")
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sentinel.log"))
            .expect("sentinel log file");
        let child = Command::new("redis-server")
            .arg(self.conf_path())
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("cannot start redis-server --sentinel: {e}"),
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "Sentinel on port {} did not answer PING:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this Sentinel, authenticated; stdout.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        let out = command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-a", SENTINEL_PASSWORD, "--no-auth-warning"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port this Sentinel says the master is on.
    pub(crate) fn master_port(&self) -> Option<u16> {
        let reply = self.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// A field of `SENTINEL MASTER <name>`.
    fn master_field(&self, name: &str) -> Option<String> {
        let reply = self.cli(&["SENTINEL", "MASTER", MASTER_NAME]);
        let lines: Vec<&str> = reply.lines().map(str::trim).collect();
        lines
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1))
            .map(|v| (*v).to_owned())
    }

    /// Kills it (SIGKILL).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() a running Sentinel");
        self.spawn();
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two data servers (one replicating the other) and three Sentinels.
pub(crate) struct SentinelSetup {
    /// Both data servers; which one is the master changes with failovers.
    pub(crate) servers: Vec<RedisServer>,
    pub(crate) sentinels: Vec<Sentinel>,
}

impl SentinelSetup {
    /// Starts everything and waits until every Sentinel knows the replica
    /// and the two other Sentinels (so a failover can be agreed on).
    pub(crate) fn start() -> Self {
        Self::launch(None)
    }

    /// Like [`SentinelSetup::start`] with every process TLS only (a
    /// certificate for 127.0.0.1 signed by `tls`'s CA), replication and the
    /// Sentinels' own connections included.
    pub(crate) fn start_tls(tls: &TlsMaterial) -> Self {
        Self::launch(Some(Arc::new(TlsFiles::write(
            tls,
            TempDir::new("sentinel-tls"),
        ))))
    }

    fn launch(tls: Option<Arc<TlsFiles>>) -> Self {
        require_binaries();
        let master = RedisServer::launch(Options {
            tls: tls.clone(),
            ..Options::default()
        });
        let replica = RedisServer::launch(Options {
            tls: tls.clone(),
            replica_of: Some(master.port()),
            ..Options::default()
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        while !replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::launch(master.port(), tls.clone()))
            .collect();
        let setup = Self {
            servers: vec![master, replica],
            sentinels,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = setup.sentinels.iter().all(|s| {
                s.master_field("num-slaves").as_deref() == Some("1")
                    && s.master_field("num-other-sentinels").as_deref() == Some("2")
            });
            if ready {
                return setup;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinels did not find each other and the replica: {:?}",
                setup
                    .sentinels
                    .iter()
                    .map(|s| s.cli(&["SENTINEL", "MASTER", MASTER_NAME]))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Sentinel::url).collect()
    }

    /// Index in `servers` of the master the Sentinels name now.
    pub(crate) fn master_index(&self) -> usize {
        let port = self
            .sentinels
            .iter()
            .filter(|s| s.child.is_some())
            .find_map(Sentinel::master_port)
            .expect("no Sentinel names a master");
        self.servers
            .iter()
            .position(|s| s.port() == port)
            .expect("the Sentinels name an unknown master")
    }

    /// Kills the master (SIGKILL) and waits until the Sentinels promoted the
    /// other server and it says `role:master`; returns its index.
    pub(crate) fn kill_master_and_wait_failover(&mut self) -> usize {
        let old = self.master_index();
        self.servers[old].stop();
        self.wait_failover_to(1 - old)
    }

    /// Waits until every live Sentinel names `servers[new]` and it says
    /// `role:master`; returns `new`.
    pub(crate) fn wait_failover_to(&self, new: usize) -> usize {
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        loop {
            let named = self
                .sentinels
                .iter()
                .filter(|s| s.child.is_some())
                .all(|s| s.master_port() == Some(self.servers[new].port()));
            if named
                && self.servers[new]
                    .cli(&["ROLE"])
                    .lines()
                    .next()
                    .is_some_and(|l| l.trim() == "master")
            {
                return new;
            }
            assert!(
                Instant::now() < deadline,
                "no failover within {FAILOVER_TIMEOUT:?}: {}",
                self.sentinels
                    .iter()
                    .map(Sentinel::log_tail)
                    .collect::<Vec<_>>()
                    .join("\n-----\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
