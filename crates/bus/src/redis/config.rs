//! Settings of the Redis engine, as the herald binary hands them over.

use std::time::Duration;

/// How the Redis engine connects and behaves. `Default` gives a single local
/// Redis with the documented timings; the herald binary fills it from
/// `engine.redis.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URLs of independent Redis servers. Several =
    /// channels sharded over them by consistent hash. Ignored when
    /// `cluster_addresses` is not empty.
    pub addresses: Vec<String>,
    /// Seed nodes of one Redis Cluster (>= 7: sharded pub/sub is used).
    pub cluster_addresses: Vec<String>,
    /// One Redis shard described by Sentinel: its master is asked from the
    /// Sentinels and followed through failovers. When set, `addresses` and
    /// `cluster_addresses` are ignored.
    pub sentinel: Option<SentinelConfig>,
    /// TLS to the masters Sentinel names (Sentinel gives a host and a port,
    /// not a URL scheme); `tls_ca_pem` is the trusted CA.
    pub master_tls: bool,
    /// Prefix of every key and pub/sub channel, so several herald clusters
    /// (or tests) can share one Redis.
    pub prefix: String,
    /// ACL user; overrides a user given in the URLs.
    pub user: Option<String>,
    /// ACL password; overrides a password given in the URLs.
    pub password: Option<String>,
    /// PEM CA certificate(s) trusted for `rediss://`; `None` = system roots.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Giving up on establishing one connection.
    pub connect_timeout: Duration,
    /// Giving up on one command (the caller gets `BusError::Unavailable`).
    pub command_timeout: Duration,
    /// How often this node announces itself on the control channel.
    pub heartbeat_interval: Duration,
    /// A node silent for this long is dropped from the registry.
    pub node_ttl: Duration,
    /// Pub/sub connections per Redis server (per cluster in Cluster mode);
    /// channels are spread over them by hash.
    pub pubsub_connections: usize,
    /// Incoming pub/sub messages waiting for the Hub, per worker; overflow is
    /// dropped, counted, and the channel's subscribers told to recover.
    pub pubsub_buffer: usize,
    /// Workers handing incoming messages to the Hub (0 = one per CPU).
    pub pubsub_workers: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            addresses: vec!["redis://127.0.0.1:6379".into()],
            cluster_addresses: Vec::new(),
            sentinel: None,
            master_tls: false,
            prefix: "herald".into(),
            user: None,
            password: None,
            tls_ca_pem: None,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(4),
            heartbeat_interval: Duration::from_secs(3),
            node_ttl: Duration::from_secs(10),
            pubsub_connections: 2,
            pubsub_buffer: 4096,
            pubsub_workers: 0,
        }
    }
}

impl RedisConfig {
    pub(crate) fn is_cluster(&self) -> bool {
        self.sentinel.is_none() && !self.cluster_addresses.is_empty()
    }

    /// How long bytes sent on a data connection may stay unacknowledged by
    /// the server's kernel before this node's kernel closes the connection
    /// (`TCP_USER_TIMEOUT`): twice `command_timeout`, at least 2 s.
    ///
    /// Without it, a network partition (packets dropped, no RST) leaves every
    /// connection open until TCP gives up, about 15 minutes: the node keeps
    /// waiting on it instead of reconnecting, so after the network heals it
    /// stays deaf until TCP's doubled retransmission timer next fires (up to
    /// 2 minutes), and the commands that timed out meanwhile, already
    /// answered with an error, are still queued in the socket and run on
    /// Redis when it does. Closing the connection drops them, and the node
    /// reconnects (and its subscribers recover) as soon as the network
    /// answers. Commands are pinged every second, so a dead link always has
    /// unacknowledged bytes. A slow server does not trigger it (its kernel
    /// acknowledges what it receives); only a path that delivers nothing does.
    pub(crate) fn dead_link_timeout(&self) -> Duration {
        (self.command_timeout * 2).max(Duration::from_secs(2))
    }
}

/// Where the Sentinels of one master are and how to talk to them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelConfig {
    /// `redis://host:port` or `rediss://host:port` of each Sentinel, asked
    /// in this order (the next one when one does not answer).
    pub addresses: Vec<String>,
    /// The name the Sentinels monitor the master under.
    pub master_name: String,
    /// ACL user of the Sentinels (not of the master).
    pub user: Option<String>,
    /// Password of the Sentinels.
    pub password: Option<String>,
    /// PEM CA certificate(s) trusted for `rediss://` Sentinels; `None` =
    /// system roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// The Redis commands herald sends, directly or from its Lua scripts
/// (ACL checks both); nothing else is needed.
pub const ACL_COMMANDS: &[&str] = &[
    // connection set-up and health (the client library's `CLIENT SETINFO` may
    // be refused: it ignores that, and Redis 7.0 has no such command)
    "hello",
    "auth",
    "ping",
    // Redis Cluster topology
    "cluster|slots",
    "cluster|shards",
    // inside the scripts in Cluster mode: the lineage of a stream
    "cluster|myid",
    "readonly",
    // pub/sub
    "publish",
    "spublish",
    "subscribe",
    "unsubscribe",
    "ssubscribe",
    "sunsubscribe",
    // scripts
    "evalsha",
    "eval",
    "script|load",
    // direct commands
    "get",
    "set",
    "del",
    "exists",
    // inside the scripts: history streams and their meta
    "xadd",
    "xrange",
    "xrevrange",
    "hget",
    "hmget",
    "hset",
    "hincrby",
    "hdel",
    "hgetall",
    "expire",
    "ttl",
    // inside the scripts, only for a stream that does not exist yet: its
    // epoch is derived from the server's run_id and clock (scripts.rs)
    "info",
    "time",
    // inside the scripts: presence
    "zadd",
    "zrem",
    "zrangebyscore",
    "zremrangebyscore",
];

/// The ACL rules of a least-privileged Redis user for herald with key and
/// channel prefix `prefix`, to append after `ACL SETUSER <name> on
/// \>PASSWORD`: only [`ACL_COMMANDS`], only keys and pub/sub channels
/// under the prefix.
pub fn acl_rules(prefix: &str) -> String {
    let mut rules = format!("resetkeys ~{prefix}.* resetchannels &{prefix}.* -@all");
    for command in ACL_COMMANDS {
        rules.push_str(" +");
        rules.push_str(command);
    }
    rules
}
