//! One Redis shard behind Sentinel: which server is its master now, a
//! command connection to it, and what changes when a failover happens.
//!
//! The Sentinels are asked `SENTINEL GET-MASTER-ADDR-BY-NAME` in their
//! configured order (the next one when one does not answer), once a second,
//! at once when a Sentinel announces `+switch-master`, and at once when a
//! command on the master fails as a demoted or lost master does (I/O error,
//! `READONLY`). A server is used only after it says `role:master` on the very
//! connection the engine will use; the same check runs every second.
//!
//! Each master connection carries the master's *lineage*: its `run_id` (new
//! at every start) and `master_replid` (new at every promotion). The scripts
//! compare it with the lineage stored in a stream's meta, and start a new
//! epoch for a stream last written under another lineage: a promoted replica
//! may lack the last writes of the old master, and its offsets would
//! otherwise be reused for other publications (docs/redis.md, "Sentinel").
//!
//! The redis crate's own `sentinel` module resolves a master once per
//! client; it neither follows a failover for long-lived connections nor
//! checks the role on the connection it hands out, so this is written here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisError};
use tokio::sync::{watch, Notify};

use super::config::{RedisConfig, SentinelConfig};

/// The master in use: its address, a checked command connection, and the
/// lineage the scripts are given.
pub(crate) struct Master {
    /// `host:port` as Sentinel gave it.
    pub(crate) address: String,
    /// Client for more connections to the same server (pub/sub links).
    pub(crate) client: redis::Client,
    pub(crate) commands: MultiplexedConnection,
    /// `run_id` and `master_replid` prefixes: changes when the server
    /// restarts or is promoted.
    pub(crate) lineage: String,
    /// Counts the master connections made; pub/sub links follow it.
    pub(crate) generation: u64,
}

/// Follows the master of one Sentinel-described shard.
pub(crate) struct MasterWatch {
    master_name: String,
    sentinels: Vec<redis::Client>,
    /// Index of the Sentinel that answered last: asked first next time.
    preferred: AtomicUsize,
    /// The engine settings the master's clients are made with (credentials,
    /// TLS, CA).
    master_config: RedisConfig,
    connect_timeout: Duration,
    command_timeout: Duration,
    current: watch::Sender<Option<Arc<Master>>>,
    /// Wakes the follower before its next tick.
    recheck: Notify,
}

/// How often the master is checked and the Sentinels asked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two rounds asked for by failing commands.
const RECHECK_GAP: Duration = Duration::from_millis(50);
/// Characters of `run_id` and of `master_replid` kept in the lineage.
const LINEAGE_PART: usize = 20;

impl MasterWatch {
    /// Validates the addresses; connects nothing (see [`MasterWatch::run`]).
    pub(crate) fn new(
        config: &RedisConfig,
        sentinel: &SentinelConfig,
    ) -> Result<Arc<Self>, (String, RedisError)> {
        let mut sentinels = Vec::with_capacity(sentinel.addresses.len());
        for address in &sentinel.addresses {
            let client = sentinel_client(sentinel, address).map_err(|e| (address.clone(), e))?;
            sentinels.push(client);
        }
        Ok(Arc::new(Self {
            master_name: sentinel.master_name.clone(),
            sentinels,
            preferred: AtomicUsize::new(0),
            master_config: config.clone(),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            current: watch::channel(None).0,
            recheck: Notify::new(),
        }))
    }

    /// The client of the master at `host_port`.
    fn master_client(&self, host_port: &str) -> Result<redis::Client, RedisError> {
        let scheme = if self.master_config.master_tls {
            "rediss"
        } else {
            "redis"
        };
        super::standalone_client_of(&self.master_config, &format!("{scheme}://{host_port}"))
    }

    /// The master in use, if one is known and was checked.
    pub(crate) fn current(&self) -> Option<Arc<Master>> {
        self.current.borrow().clone()
    }

    /// Tells of every change of master (pub/sub links follow it).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Master>>> {
        self.current.subscribe()
    }

    /// Called with every failed command on `master`: a lost connection or
    /// a demoted master drops it and has the Sentinels asked at once.
    pub(crate) fn report(&self, master: &Master, error: &RedisError) {
        let demoted = matches!(
            error.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
        );
        let lost = error.is_io_error() || error.is_connection_dropped() || error.is_timeout();
        if !(demoted || lost) {
            return;
        }
        if demoted {
            tracing::warn!(master = %master.address, error = %error, "the redis master was demoted; asking Sentinel");
            self.drop_master(master.generation);
        }
        self.recheck.notify_one();
    }

    /// Forgets the master of `generation` unless another replaced it.
    fn drop_master(&self, generation: u64) {
        self.current.send_if_modified(|current| {
            if current.as_ref().is_some_and(|m| m.generation == generation) {
                *current = None;
                true
            } else {
                false
            }
        });
    }

    /// Follows the master for as long as the engine runs.
    pub(crate) async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().listen_for_switches());
        let mut ticker = tokio::time::interval(CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut generation = 0;
        let mut asked: Vec<Option<MultiplexedConnection>> = vec![None; self.sentinels.len()];
        loop {
            self.refresh(&mut generation, &mut asked).await;
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.recheck.notified() => {
                    // Failing commands ask for rechecks in bursts: one round
                    // per gap is enough.
                    tokio::time::sleep(RECHECK_GAP).await;
                }
            }
        }
    }

    /// One round: ask the Sentinels, check the master in use, replace it
    /// when Sentinel names another one or it is no longer a master.
    async fn refresh(&self, generation: &mut u64, asked: &mut [Option<MultiplexedConnection>]) {
        let named = self.ask_sentinels(asked).await;
        let current = self.current();
        if let Some(master) = &current {
            let same_address = named.as_ref().is_none_or(|named| *named == master.address);
            if same_address {
                match self.check(&master.commands).await {
                    Ok(lineage) if lineage == master.lineage => return,
                    Ok(_) => {
                        tracing::warn!(master = %master.address, "the redis master restarted or changed role since it was checked");
                    }
                    Err(e) => {
                        tracing::warn!(master = %master.address, error = %e, "the redis master failed its check");
                    }
                }
            } else {
                tracing::warn!(
                    from = %master.address,
                    to = named.as_deref().unwrap_or(""),
                    "Sentinel names another redis master"
                );
            }
            self.drop_master(master.generation);
        }
        let Some(address) = named.or_else(|| current.map(|m| m.address.clone())) else {
            return;
        };
        match self.connect(&address).await {
            Ok((client, commands, lineage)) => {
                *generation += 1;
                tracing::info!(master = %address, generation = *generation, "using the redis master named by Sentinel");
                let master = Master {
                    address,
                    client,
                    commands,
                    lineage,
                    generation: *generation,
                };
                self.current.send_replace(Some(Arc::new(master)));
            }
            Err(e) => {
                tracing::warn!(master = %address, error = %e, "cannot use the redis master named by Sentinel");
            }
        }
    }

    /// The master's `host:port` from the first Sentinel that answers,
    /// starting with the one that answered last. `asked` keeps a connection
    /// per Sentinel between rounds; a failed one is dropped.
    async fn ask_sentinels(&self, asked: &mut [Option<MultiplexedConnection>]) -> Option<String> {
        let count = self.sentinels.len();
        let start = self.preferred.load(Ordering::Relaxed);
        for i in 0..count {
            let index = (start + i) % count;
            let answer = self.ask(&self.sentinels[index], &mut asked[index]).await;
            if answer.is_err() {
                asked[index] = None;
            }
            match answer {
                Ok(Some(address)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Some(address);
                }
                Ok(None) => {
                    tracing::warn!(sentinel = index, master_name = %self.master_name, "this Sentinel does not know the master name");
                }
                Err(e) => {
                    tracing::debug!(sentinel = index, error = %e, "Sentinel did not answer; trying the next");
                }
            }
        }
        None
    }

    async fn ask(
        &self,
        sentinel: &redis::Client,
        connection: &mut Option<MultiplexedConnection>,
    ) -> Result<Option<String>, RedisError> {
        let connection = match connection {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout));
                connection.insert(
                    sentinel
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
        };
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master_name);
        let reply: Option<(String, u16)> = cmd.query_async(connection).await?;
        Ok(reply.map(|(host, port)| join_host_port(&host, port)))
    }

    /// Connects to `address` and checks that it is a master.
    async fn connect(
        &self,
        address: &str,
    ) -> Result<(redis::Client, MultiplexedConnection, String), RedisError> {
        let client = self.master_client(address)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let lineage = self.check(&commands).await?;
        Ok((client, commands, lineage))
    }

    /// The lineage of the server behind `connection`, or an error when it is
    /// not a master.
    async fn check(&self, connection: &MultiplexedConnection) -> Result<String, RedisError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server").arg("replication");
        let info: String = tokio::time::timeout(
            self.command_timeout,
            cmd.query_async(&mut connection.clone()),
        )
        .await
        .map_err(|_| RedisError::from((redis::ErrorKind::Io, "INFO timed out")))??;
        lineage_of(&info).map_err(|what| RedisError::from((redis::ErrorKind::Client, what)))
    }

    /// Subscribes to `+switch-master` on one Sentinel after another, so a
    /// failover is followed as soon as it is announced rather than at the
    /// next tick.
    async fn listen_for_switches(self: Arc<Self>) {
        let mut index = 0;
        loop {
            let sentinel = &self.sentinels[index % self.sentinels.len()];
            index += 1;
            let pubsub =
                tokio::time::timeout(self.connect_timeout, sentinel.get_async_pubsub()).await;
            let Ok(Ok(mut pubsub)) = pubsub else {
                tokio::time::sleep(CHECK_INTERVAL).await;
                continue;
            };
            if pubsub.subscribe("+switch-master").await.is_err() {
                tokio::time::sleep(CHECK_INTERVAL).await;
                continue;
            }
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                // "<master name> <old ip> <old port> <new ip> <new port>"
                if payload.split(' ').next() == Some(self.master_name.as_str()) {
                    tracing::info!(switch = %payload, "Sentinel announced a new master");
                    self.recheck.notify_one();
                }
            }
            // The Sentinel went away: the next one.
        }
    }
}

/// A pub/sub connection manager to the master of `master`, for a link.
pub(crate) fn pubsub_to(
    master: &Master,
    config: ConnectionManagerConfig,
) -> Result<ConnectionManager, RedisError> {
    master.client.get_connection_manager_lazy(config)
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn sentinel_client(sentinel: &SentinelConfig, address: &str) -> Result<redis::Client, RedisError> {
    let credentials = super::Credentials {
        user: sentinel.user.as_deref(),
        password: sentinel.password.as_deref(),
        tls_ca_pem: sentinel.tls_ca_pem.as_ref(),
    };
    // Sentinels are asked with a timeout on each question, on connections
    // that carry nothing in between: no dead-link timeout needed.
    super::client_of(address, credentials, ProtocolVersion::RESP2, None)
}

/// `run_id` and `master_replid` (their first [`LINEAGE_PART`] characters)
/// out of `INFO server replication`, or why the server cannot be the master.
pub(crate) fn lineage_of(info: &str) -> Result<String, &'static str> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim_end().strip_prefix(name))
            .map(str::to_owned)
    };
    match field("role:").as_deref() {
        Some("master") => {}
        Some(_) => return Err("the server Sentinel named is not a master (yet)"),
        None => return Err("INFO has no role"),
    }
    let run_id = field("run_id:").ok_or("INFO has no run_id")?;
    let replid = field("master_replid:").ok_or("INFO has no master_replid")?;
    let part = |id: &str| id.chars().take(LINEAGE_PART).collect::<String>();
    Ok(format!("{}{}", part(&run_id), part(&replid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_needs_a_master_and_both_ids() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:0123456789abcdef0123456789abcdef01234567\r\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_replid:fedcba9876543210fedcba9876543210fedcba98\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n";
        assert_eq!(
            lineage_of(info).unwrap(),
            "0123456789abcdef0123fedcba9876543210fedc"
        );
        assert!(lineage_of(&info.replace("role:master", "role:slave")).is_err());
        assert!(lineage_of(&info.replace("run_id", "x")).is_err());
        assert!(lineage_of("").is_err());
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(join_host_port("10.0.0.1", 6379), "10.0.0.1:6379");
        assert_eq!(join_host_port("::1", 6379), "[::1]:6379");
    }
}
