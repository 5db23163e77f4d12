//! A Redis Cluster of N masters, no replicas.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{Options, RedisServer, MISSING};

/// How long the cluster may take to agree after `--cluster create`.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers (in parallel), joins them with
    /// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes` and
    /// waits until every node reports `cluster_state:ok`.
    pub(crate) fn start(masters: usize) -> Self {
        assert!(masters >= 3, "redis-cli --cluster create needs 3 masters");
        let nodes: Vec<RedisServer> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..masters)
                .map(|_| {
                    scope.spawn(|| {
                        RedisServer::launch(Options {
                            cluster: true,
                            ..Options::default()
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(node.host_port());
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => panic!("{MISSING}"),
                _ => panic!("cannot run redis-cli --cluster create: {e}"),
            });
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
        loop {
            let states: Vec<String> = cluster
                .nodes
                .iter()
                .map(|node| {
                    node.cli(&["CLUSTER", "INFO"])
                        .lines()
                        .find(|l| l.starts_with("cluster_state:"))
                        .unwrap_or("cluster_state:?")
                        .trim()
                        .to_owned()
                })
                .collect();
            if states.iter().all(|s| s == "cluster_state:ok") {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok within {CLUSTER_OK_TIMEOUT:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:P` of every node.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node serving the slot of `key` (a key or a shard channel name).
    pub(crate) fn node_for(&self, key: &str) -> &RedisServer {
        let first = &self.nodes[0];
        let slot: u16 = first
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        let map = first.cli(&["CLUSTER", "NODES"]);
        for line in map.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 {
                continue;
            }
            let address = fields[1].split('@').next().unwrap_or_default();
            let serves = fields[8..].iter().any(|range| {
                let mut bounds = range.split('-');
                let low = bounds.next().and_then(|b| b.parse::<u16>().ok());
                let high = bounds.next().and_then(|b| b.parse::<u16>().ok()).or(low);
                matches!((low, high), (Some(l), Some(h)) if (l..=h).contains(&slot))
            });
            if serves {
                return self
                    .nodes
                    .iter()
                    .find(|n| n.host_port() == address)
                    .unwrap_or_else(|| panic!("slot {slot} served by unknown node {address}"));
            }
        }
        panic!("no node serves slot {slot} of {key}:\n{map}");
    }
}
