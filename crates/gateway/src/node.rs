//! What every Session of this node shares: configuration, policy, the token
//! verifier, the engine and the Hub.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_auth::{ChannelPolicy, TokenVerifier};
use herald_bus::{BusError, Engine};
use parking_lot::Mutex;

use crate::config::ClientConfig;
use crate::hub::{Hub, Subscriber};

/// Number of locks that order node-level engine subscribe/unsubscribe per channel.
const SUBSCRIBE_LOCKS: usize = 64;

pub(crate) struct Node {
    pub(crate) client: ClientConfig,
    pub(crate) policy: ChannelPolicy,
    pub(crate) verifier: TokenVerifier,
    pub(crate) engine: Engine,
    pub(crate) hub: Arc<Hub>,
    pub(crate) version: &'static str,
    /// Serialise "first local subscriber -> engine subscribe" against "last one
    /// left -> engine unsubscribe" for the same channel.
    subscribe_locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: BuildHasherDefault<DefaultHasher>,
    users: Mutex<HashMap<String, usize>>,
    next_session: AtomicU64,
    num_clients: AtomicUsize,
}

impl Node {
    pub(crate) fn new(
        client: ClientConfig,
        policy: ChannelPolicy,
        verifier: TokenVerifier,
        engine: Engine,
        hub: Arc<Hub>,
    ) -> Self {
        Self {
            client,
            policy,
            verifier,
            engine,
            hub,
            version: env!("CARGO_PKG_VERSION"),
            subscribe_locks: (0..SUBSCRIBE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: BuildHasherDefault::default(),
            users: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            num_clients: AtomicUsize::new(0),
        }
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    fn subscribe_lock(&self, channel: &str) -> &tokio::sync::Mutex<()> {
        let index = self.hasher.hash_one(channel) as usize % self.subscribe_locks.len();
        &self.subscribe_locks[index]
    }

    /// Adds a subscriber to the Hub, subscribing the node in the engine when
    /// it is the channel's first here.
    pub(crate) async fn attach(&self, channel: &str, subscriber: Arc<Subscriber>) -> Result<(), BusError> {
        let _order = self.subscribe_lock(channel).lock().await;
        if self.hub.add(subscriber.clone()) {
            if let Err(e) = self.engine.broker.subscribe(channel).await {
                self.hub.remove(channel, subscriber.session());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes a session's subscriber, unsubscribing the node in the engine
    /// when it was the channel's last here.
    pub(crate) async fn detach(&self, channel: &str, session: u64) {
        let _order = self.subscribe_lock(channel).lock().await;
        if self.hub.remove(channel, session) {
            if let Err(e) = self.engine.broker.unsubscribe(channel).await {
                tracing::warn!(error = %e, "engine unsubscribe failed");
            }
        }
    }

    /// Counts a connection of `user`; false when `client.user_connection_limit` is reached.
    pub(crate) fn add_user_connection(&self, user: &str) -> bool {
        let mut users = self.users.lock();
        let count = users.entry(user.to_owned()).or_default();
        let limit = self.client.user_connection_limit;
        if limit > 0 && !user.is_empty() && *count >= limit {
            if *count == 0 {
                users.remove(user);
            }
            return false;
        }
        *count += 1;
        true
    }

    pub(crate) fn remove_user_connection(&self, user: &str) {
        let mut users = self.users.lock();
        if let Some(count) = users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                users.remove(user);
            }
        }
    }

    #[cfg_attr(not(test), expect(dead_code, reason = "node gauges are exported with /metrics"))]
    pub(crate) fn num_users(&self) -> usize {
        self.users.lock().len()
    }

    pub(crate) fn client_connected(&self) {
        self.num_clients.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn client_disconnected(&self) {
        self.num_clients.fetch_sub(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(test), expect(dead_code, reason = "node gauges are exported with /metrics"))]
    pub(crate) fn num_clients(&self) -> usize {
        self.num_clients.load(Ordering::Relaxed)
    }

    /// A presence entry lives this long unless its node refreshes it.
    pub(crate) fn presence_ttl(&self) -> Duration {
        (self.client.presence_update_interval * 3).max(Duration::from_secs(3))
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
