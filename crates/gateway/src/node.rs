//! What every Session of this node shares: configuration, policy, the token
//! verifier, the engine and the Hub.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_auth::ChannelPolicy;
use herald_bus::{BusError, ControlCommand, Engine, NodeInfo};
use herald_identity::Authenticator;
use herald_protocol::Publication;
use herald_proxy::{Proxy, ProxyKind};
use parking_lot::Mutex;

use crate::config::ClientConfig;
pub(crate) mod delta;
pub(crate) mod emulation;
pub(crate) mod events;
pub(crate) mod hub;
pub(crate) mod mailbox;
pub(crate) mod plan;
pub(crate) mod subscribe;

pub(crate) use self::events::NodeEvents;
pub(crate) use self::mailbox::{Mailbox, SessionEvent};

use self::hub::{Hub, Subscriber};

/// Number of locks that order node-level engine subscribe/unsubscribe per channel.
const SUBSCRIBE_LOCKS: usize = 64;

pub(crate) struct Node {
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) policy: Arc<ChannelPolicy>,
    pub(crate) auth: Authenticator,
    pub(crate) engine: Engine,
    pub(crate) hub: Arc<Hub>,
    pub(crate) version: &'static str,
    /// Serialise "first local subscriber -> engine subscribe" against "last one
    /// left -> engine unsubscribe" for the same channel.
    subscribe_locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: BuildHasherDefault<DefaultHasher>,
    /// user -> that user's connected sessions on this node.
    users: Mutex<HashMap<String, Vec<Registered>>>,
    next_session: AtomicU64,
    num_clients: AtomicUsize,
    pub(crate) uid: String,
    started: std::time::Instant,
    draining: std::sync::atomic::AtomicBool,
    /// Open WebSocket connections per client address
    /// (`client.connection_limit_per_ip`); only kept when the limit is set.
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// `client.connection_rate_limit`: the node's new connections.
    connection_rate: Option<Mutex<crate::conn::rate::RateLimiter>>,
    /// When a refusal over a node limit was last logged (Unix seconds).
    limit_logged: AtomicU64,
    /// Emulated connections by session id (`/emulation`).
    pub(crate) emulation: emulation::EmulationRegistry,
    /// The proxies to the application backend (docs/proxy.md).
    pub(crate) proxies: Proxies,
}

/// The proxies this node calls, each when configured (docs/proxy.md).
#[derive(Default)]
pub(crate) struct Proxies {
    pub(crate) connect: Option<Proxy>,
    pub(crate) refresh: Option<Proxy>,
    /// `channel.proxy.*`: what a namespace's `*_proxy_name` of `default`
    /// (or none) selects.
    pub(crate) subscribe: Option<Proxy>,
    pub(crate) publish: Option<Proxy>,
    pub(crate) sub_refresh: Option<Proxy>,
    /// Which RPC methods go to the backend, and to which proxy.
    pub(crate) rpc_routing: Option<Arc<herald_proxy::RpcConfig>>,
    /// `rpc.proxy`.
    pub(crate) rpc: Option<Proxy>,
    /// The top-level `proxies`, by name.
    pub(crate) named: HashMap<String, Proxy>,
}

impl Proxies {
    /// The proxy of kind `kind` a namespace's `*_proxy_name` selects.
    pub(crate) fn channel(&self, kind: ProxyKind, name: &str) -> Option<&Proxy> {
        if !herald_proxy::is_default(name) {
            return self.named.get(name);
        }
        match kind {
            ProxyKind::Subscribe => self.subscribe.as_ref(),
            ProxyKind::Publish => self.publish.as_ref(),
            ProxyKind::SubRefresh => self.sub_refresh.as_ref(),
            ProxyKind::Connect => self.connect.as_ref(),
            ProxyKind::Refresh => self.refresh.as_ref(),
            ProxyKind::Rpc => self.rpc.as_ref(),
        }
    }

    /// The proxy an RPC namespace's `proxy_name` selects.
    pub(crate) fn rpc(&self, name: &str) -> Option<&Proxy> {
        self.channel(ProxyKind::Rpc, name)
    }

    fn all(&self) -> impl Iterator<Item = &Proxy> {
        [
            &self.connect,
            &self.refresh,
            &self.subscribe,
            &self.publish,
            &self.sub_refresh,
            &self.rpc,
        ]
        .into_iter()
        .flatten()
        .chain(self.named.values())
    }

    /// The headers of a client's request some proxy forwards (each call
    /// keeps only those of its own `http_headers`).
    pub(crate) fn forwarded(
        &self,
        headers: &actix_http::header::HeaderMap,
    ) -> Vec<(String, String)> {
        if self.all().all(|p| p.settings().http_headers.is_empty()) {
            return Vec::new();
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let mut out = Vec::new();
        for proxy in self.all() {
            for header in proxy.settings().forwarded(headers.iter().copied()) {
                if !out.contains(&header) {
                    out.push(header);
                }
            }
        }
        out
    }
}

/// One connection's place in its address's count; given back on drop.
pub(crate) struct IpSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

struct Registered {
    session: u64,
    client: String,
    mailbox: Mailbox,
}

impl Node {
    pub(crate) fn new(
        client: ClientConfig,
        policy: Arc<ChannelPolicy>,
        auth: Authenticator,
        engine: Engine,
        hub: Arc<Hub>,
        uid: String,
        proxies: Proxies,
    ) -> Self {
        Self {
            policy,
            auth,
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
            uid,
            started: std::time::Instant::now(),
            draining: std::sync::atomic::AtomicBool::new(false),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            connection_rate: (client.connection_rate_limit > 0).then(|| {
                Mutex::new(crate::conn::rate::RateLimiter::new(
                    client.connection_rate_limit,
                    std::time::Instant::now(),
                ))
            }),
            limit_logged: AtomicU64::new(0),
            emulation: emulation::EmulationRegistry::default(),
            proxies,
            client: Arc::new(client),
        }
    }

    /// Takes a connection slot for `ip`: `Ok(None)` when there is no
    /// per-address limit, `Err(())` when the address is at its limit.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn take_ip_slot(&self, ip: IpAddr) -> Result<Option<IpSlot>, ()> {
        let limit = self.client.connection_limit_per_ip;
        if limit == 0 {
            return Ok(None);
        }
        let ip = ip.to_canonical();
        let mut counts = self.per_ip.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= limit {
            return Err(());
        }
        *n += 1;
        Ok(Some(IpSlot {
            ip,
            counts: self.per_ip.clone(),
        }))
    }

    /// Whether a new connection may open (`client.connection_limit`, then
    /// `client.connection_rate_limit`); Err names the limit, one of
    /// [`crate::metrics::CONNECTION_LIMITS`], counted and logged (at most
    /// once a second). The caller answers HTTP 503.
    pub(crate) fn admit_connection(&self) -> Result<(), &'static str> {
        let limit = self.client.connection_limit;
        let refused = if limit > 0 && self.num_clients() >= limit {
            "node"
        } else if self
            .connection_rate
            .as_ref()
            .is_some_and(|bucket| !bucket.lock().allow(std::time::Instant::now()))
        {
            "rate"
        } else {
            return Ok(());
        };
        crate::metrics::METRICS
            .connection_limit_refusals
            .with_label_values(&[refused])
            .inc();
        let second = unix_now();
        if self.limit_logged.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(
                limit = refused,
                connection_limit = self.client.connection_limit,
                connection_rate_limit = self.client.connection_rate_limit,
                "node connection limit reached: connection refused with 503"
            );
        }
        Err(refused)
    }

    /// The user the `client.user_id_http_header` header names, when that
    /// header is configured and present with a non-empty value.
    pub(crate) fn header_user(&self, headers: &actix_http::header::HeaderMap) -> Option<String> {
        let name = &self.client.user_id_http_header;
        if name.is_empty() {
            return None;
        }
        headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Closes every connected session with 3001 (shutdown), spread evenly
    /// over `spread` so that clients do not all reconnect at once.
    pub(crate) async fn disconnect_all(&self, spread: Duration) {
        let targets: Vec<Mailbox> = self
            .users
            .lock()
            .values()
            .flatten()
            .map(|r| r.mailbox.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let command = Arc::new(ControlCommand::Disconnect {
            user: String::new(),
            client: String::new(),
            whitelist: Vec::new(),
            code: herald_protocol::Disconnect::SHUTDOWN.code,
            reason: herald_protocol::Disconnect::SHUTDOWN.reason.to_string(),
        });
        let step = spread / u32::try_from(targets.len()).unwrap_or(u32::MAX);
        let start = tokio::time::Instant::now();
        for (i, target) in targets.into_iter().enumerate() {
            // Sleeping per client would cost more than the step itself when
            // there are many: wait until this client's slot instead.
            tokio::time::sleep_until(start + step * u32::try_from(i).unwrap_or(u32::MAX)).await;
            target.deliver(SessionEvent::Control(command.clone()));
        }
    }

    /// What a publication to `channel` keeps in history (node/plan.rs).
    pub(crate) fn history_options(
        &self,
        channel: &herald_auth::ResolvedChannel<'_>,
    ) -> Option<herald_bus::HistoryOptions> {
        crate::node::plan::history_options(&self.policy, channel)
    }

    /// A history request's `limit` as the engine takes it (node/plan.rs).
    pub(crate) fn history_limit(&self, requested: i64) -> usize {
        crate::node::plan::history_limit(&self.client, requested)
    }

    /// Hands a publication to the engine, timing it.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &herald_bus::PublishOptions,
    ) -> Result<herald_protocol::StreamPosition, BusError> {
        let started = std::time::Instant::now();
        let outcome = self
            .engine
            .broker
            .publish(channel, publication, options)
            .await;
        crate::metrics::METRICS
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
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
    pub(crate) async fn attach(
        &self,
        channel: &str,
        subscriber: Arc<Subscriber>,
    ) -> Result<(), BusError> {
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

    /// Registers a connected session of `user`; false when
    /// `client.user_connection_limit` is reached (anonymous users are not limited).
    pub(crate) fn register(
        &self,
        user: &str,
        session: u64,
        client: &str,
        mailbox: Mailbox,
    ) -> bool {
        let mut users = self.users.lock();
        let sessions = users.entry(user.to_owned()).or_default();
        let limit = self.client.user_connection_limit;
        if limit > 0 && !user.is_empty() && sessions.len() >= limit {
            if sessions.is_empty() {
                users.remove(user);
            }
            return false;
        }
        sessions.push(Registered {
            session,
            client: client.to_owned(),
            mailbox,
        });
        self.num_clients.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(crate) fn unregister(&self, user: &str, session: u64) {
        let mut users = self.users.lock();
        let Some(sessions) = users.get_mut(user) else {
            return;
        };
        let before = sessions.len();
        sessions.retain(|r| r.session != session);
        if sessions.len() < before {
            self.num_clients.fetch_sub(1, Ordering::Relaxed);
        }
        if sessions.is_empty() {
            users.remove(user);
        }
    }

    /// Hands a control command to the matching sessions of this node.
    fn dispatch(&self, command: ControlCommand) {
        let command = Arc::new(command);
        let (user, client) = match &*command {
            ControlCommand::Disconnect { user, client, .. }
            | ControlCommand::Unsubscribe { user, client, .. }
            | ControlCommand::Subscribe { user, client, .. }
            | ControlCommand::Refresh { user, client, .. } => (user.clone(), client.clone()),
            ControlCommand::InvalidateUserTokens { user, .. } => (user.clone(), String::new()),
            ControlCommand::RevokeToken { .. } => {
                // Only the session knows its token id: ask every one.
                for r in self.users.lock().values().flatten() {
                    r.mailbox.deliver(SessionEvent::Control(command.clone()));
                }
                return;
            }
            _ => return,
        };
        let users = self.users.lock();
        let Some(sessions) = users.get(&user) else {
            return;
        };
        for r in sessions
            .iter()
            .filter(|r| client.is_empty() || r.client == client)
        {
            r.mailbox.deliver(SessionEvent::Control(command.clone()));
        }
    }

    pub(crate) fn info(&self) -> NodeInfo {
        NodeInfo {
            uid: self.uid.clone(),
            name: format!("herald-{}", &self.uid[..8]),
            version: self.version.to_owned(),
            num_clients: self.num_clients() as u64,
            num_users: self.num_users() as u64,
            num_channels: self.hub.num_channels() as u64,
            num_subs: self.hub.num_subscriptions() as u64,
            uptime: self.started.elapsed().as_secs(),
        }
    }

    /// Distinct users connected here (anonymous counts as one).
    /// The figures a metrics scrape reports.
    pub(crate) fn figures(&self) -> crate::metrics::NodeFigures {
        crate::metrics::NodeFigures {
            clients: self.num_clients(),
            users: self.num_users(),
            channels: self.hub.num_channels(),
            subscriptions: self.hub.num_subscriptions(),
            nodes: self.engine.broker.nodes().len(),
            engine_healthy: self.engine.broker.healthy(),
            clock: self.engine.broker.clock(),
            counters: self.engine.broker.counters(),
        }
    }

    pub(crate) fn num_users(&self) -> usize {
        self.users.lock().len()
    }

    pub(crate) fn num_clients(&self) -> usize {
        self.num_clients.load(Ordering::Relaxed)
    }

    /// A presence entry lives this long unless its node refreshes it.
    pub(crate) fn presence_ttl(&self) -> Duration {
        crate::node::plan::presence_ttl(&self.client)
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
