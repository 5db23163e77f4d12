//! The in-memory engine (single node).
//!
//! Channels live in a map sharded by channel hash; each channel's state sits
//! behind its own locks, so publishes to different channels never contend.
//! One channel has two locks:
//!
//! - the *feed* lock guards the subscription flag, the history stream and the
//!   idempotency results. A publish holds it while it takes the next offset,
//!   stores the publication and hands it to [`BrokerEvents`], so the events of
//!   one channel reach the Hub one at a time, in offset order. Join and leave
//!   go through it too, so they keep their place among the publications.
//! - the *presence* lock guards the channel's presence entries.
//!
//! Expired entries are dropped lazily on access and by a periodic cleanup
//! task, which also forgets channels with nothing left in them.
//!
//! Only a publish creates a history stream: a read of a stream that does not
//! exist keeps nothing and answers offset 0 of the epoch its first publish
//! will take (`epoch.rs`). The streams that exist are capped at
//! [`MemoryOptions::stream_limit`]: past it, the ones touched least recently
//! are evicted, their local subscribers told (a gap), and a stream evicted
//! comes back with another epoch, so recovery into it answers
//! `recovered: false` instead of skipping what was lost.
//!
//! **Invariant:** a channel's `Arc<ChannelState>` is only ever cloned out of
//! its shard under the shard lock, and clones live for one operation. So the
//! cleanup, holding the shard's write lock, may drop a channel whose `Arc` it
//! holds alone: nobody is using it and nobody can start to.

mod epoch;
mod presence;
mod stream;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::{ClientInfo, Publication, StreamPosition};
use parking_lot::{Mutex, RwLock};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use self::epoch::FreshEpochs;
use self::presence::Presence;
use self::stream::{Kept, Stream};
use crate::seal::HistoryKeyring;
use crate::{
    Broker, BrokerEvents, BusError, ControlCommand, Engine, HistoryPage, HistoryQuery, NodeInfo,
    PresenceStats, PresenceStore, PublishOptions, SurveyReply, SurveyRequest,
};
use arc_swap::ArcSwap;

/// Number of channel map shards; a power of two.
const SHARDS: usize = 64;

/// How often expired entries and empty channels are swept.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(5);

/// The default of [`MemoryOptions::stream_limit`] (`engine.memory.stream_limit`).
pub const DEFAULT_STREAM_LIMIT: usize = 100_000;

/// What the memory engine is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Most history streams kept at once; 0 = no limit. One eviction pass
    /// drops the least recently touched 1/64 of this (at least one).
    pub stream_limit: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            stream_limit: DEFAULT_STREAM_LIMIT,
        }
    }
}

/// The single-node engine: broker, history and presence in process memory.
pub struct MemoryEngine {
    events: Arc<dyn BrokerEvents>,
    /// jti -> refused until (unix seconds).
    revoked_tokens: Mutex<HashMap<String, u64>>,
    /// user -> (tokens issued before this are refused, until).
    invalidated_users: Mutex<HashMap<String, (u64, u64)>>,
    hasher: RandomState,
    shards: Box<[Shard]>,
    cleanup: OnceLock<AbortHandle>,
    /// Seals kept publications, as the Redis engine does (parity: the same
    /// keys and the same crypto-shredding behaviour on one node).
    history_keys: ArcSwap<HistoryKeyring>,
    undecryptable: AtomicU64,
    /// Epochs of streams that do not exist yet (epoch.rs).
    fresh: FreshEpochs,
    options: MemoryOptions,
    /// History streams that exist now.
    streams: AtomicUsize,
    /// Streams evicted by the limit since start.
    evicted: AtomicU64,
    /// Held by the one eviction pass that runs at a time.
    evicting: Mutex<()>,
}

impl MemoryEngine {
    /// `events` receives every publication, join and leave of the channels
    /// this node subscribed to through [`Broker::subscribe`].
    ///
    /// Called inside a Tokio runtime, it also starts the periodic cleanup,
    /// which stops when the engine is dropped. Outside one, expired entries
    /// are still dropped on access, but emptied channels are never forgotten.
    pub fn new(events: Arc<dyn BrokerEvents>) -> Arc<Self> {
        Self::with_history_keys(events, HistoryKeyring::off())
    }

    /// Replaces the history keyring (rotation, crypto-shredding).
    pub fn reload_history_keys(&self, keys: HistoryKeyring) {
        self.history_keys.store(Arc::new(keys));
    }

    /// Like [`MemoryEngine::new`], sealing kept publications with `keys`.
    pub fn with_history_keys(events: Arc<dyn BrokerEvents>, keys: HistoryKeyring) -> Arc<Self> {
        Self::with_options(events, keys, MemoryOptions::default())
    }

    /// Like [`MemoryEngine::with_history_keys`], with `options`.
    pub fn with_options(
        events: Arc<dyn BrokerEvents>,
        keys: HistoryKeyring,
        options: MemoryOptions,
    ) -> Arc<Self> {
        let engine = Arc::new(Self {
            history_keys: ArcSwap::from_pointee(keys),
            undecryptable: AtomicU64::new(0),
            fresh: FreshEpochs::new(Instant::now()),
            options,
            streams: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            evicting: Mutex::new(()),
            events,
            revoked_tokens: Mutex::new(HashMap::new()),
            invalidated_users: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            cleanup: OnceLock::new(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(run_cleanup(Arc::downgrade(&engine)));
            // Only set here, on a value nobody else has seen yet.
            let _ = engine.cleanup.set(task.abort_handle());
        }
        engine
    }

    /// Both trait objects over this engine.
    pub fn engine(self: &Arc<Self>) -> Engine {
        Engine {
            broker: self.clone(),
            presence: self.clone(),
        }
    }

    fn shard(&self, channel: &str) -> &Shard {
        // Truncating the hash is fine: only its low bits pick the shard.
        let index = self.hasher.hash_one(channel) as usize & (SHARDS - 1);
        &self.shards[index]
    }

    fn channel(&self, channel: &str) -> Option<Arc<ChannelState>> {
        self.shard(channel).read().get(channel).cloned()
    }

    fn channel_or_insert(&self, channel: &str) -> Arc<ChannelState> {
        let shard = self.shard(channel);
        if let Some(state) = shard.read().get(channel) {
            return state.clone();
        }
        shard.write().entry(channel.into()).or_default().clone()
    }

    /// Drops expired entries everywhere, then forgets empty channels.
    fn sweep(&self, now: Instant) {
        let mut forgotten = 0;
        for shard in self.shards.iter() {
            // Prune outside the shard lock so lookups are not held up.
            let channels: Vec<Arc<ChannelState>> = shard.read().values().cloned().collect();
            for state in &channels {
                let mut feed = state.feed.lock();
                self.on_stream(&mut feed, |stream| stream.prune(now));
                drop(feed);
                state.presence.lock().prune(now);
            }
            drop(channels);
            let mut map = shard.write();
            let before = map.len();
            // `get_mut` succeeds only when the map holds the sole reference
            // (see the module invariant), so no lock is needed to inspect it.
            map.retain(|_, state| !Arc::get_mut(state).is_some_and(ChannelState::is_empty));
            forgotten += before - map.len();
        }
        if forgotten > 0 {
            tracing::debug!(forgotten, "memory engine dropped idle channels");
        }
    }

    /// Drops a channel that holds nothing any more at once, rather than at
    /// the next sweep: a client subscribing to and leaving many names must
    /// not make the node hold them for a sweep interval.
    fn forget_if_empty(&self, channel: &str) {
        let mut map = self.shard(channel).write();
        // `get_mut` succeeds only when the map holds the sole reference
        // (module invariant): nobody is using the channel.
        let empty = map
            .get_mut(channel)
            .and_then(Arc::get_mut)
            .is_some_and(ChannelState::is_empty);
        if empty {
            map.remove(channel);
        }
    }

    /// Runs `op` on a channel's stream, keeping the count of existing
    /// streams true (a publish creates one; expiry and eviction end one).
    fn on_stream<R>(&self, feed: &mut Feed, op: impl FnOnce(&mut Stream) -> R) -> R {
        let existed = feed.stream.exists();
        let result = op(&mut feed.stream);
        match (existed, feed.stream.exists()) {
            (false, true) => {
                self.streams.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.streams.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }

    /// The epoch a stream of `channel` created now gets.
    fn fresh_epoch(&self, channel: &str, now: Instant, meta_ttl: Duration) -> String {
        self.fresh.epoch(channel, now, meta_ttl)
    }

    /// Makes room for one more stream when the limit is reached: evicts the
    /// least recently touched streams (1/64 of the limit, at least one).
    /// Called with no feed lock held. Only one pass runs at a time; a
    /// publish that finds one running goes ahead (the limit may be passed
    /// by the publishes in flight, never more).
    fn make_room(&self, creating: &str) {
        let limit = self.options.stream_limit;
        if limit == 0 || self.streams.load(Ordering::Relaxed) < limit {
            return;
        }
        let Some(_pass) = self.evicting.try_lock() else {
            return;
        };
        let mut candidates: Vec<(Instant, Box<str>, Arc<ChannelState>)> = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.read();
            for (name, state) in map.iter() {
                if &**name == creating {
                    continue;
                }
                // A feed busy right now is not idle: skip it.
                if let Some(touched) = state.feed.try_lock().and_then(|f| f.stream.touched_at()) {
                    candidates.push((touched, name.clone(), state.clone()));
                }
            }
        }
        let batch = (limit / 64).max(1).min(candidates.len());
        if batch == 0 {
            return;
        }
        if batch < candidates.len() {
            candidates.select_nth_unstable_by_key(batch - 1, |(touched, _, _)| *touched);
            candidates.truncate(batch);
        }
        // Streams created from here on cannot take an evicted stream's epoch.
        self.fresh.bump();
        let mut evicted = 0u64;
        for (touched, name, state) in candidates {
            let mut feed = state.feed.lock();
            if feed.stream.touched_at() != Some(touched) {
                continue; // touched meanwhile: no longer the idlest
            }
            self.on_stream(&mut feed, Stream::evict);
            evicted += 1;
            if feed.subscribed {
                // Local subscribers are positioned in the stream just lost.
                self.events.on_gap(&name);
            }
        }
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
        tracing::warn!(
            evicted,
            limit,
            "memory engine: history stream limit reached (engine.memory.stream_limit); the least recently used streams were evicted"
        );
    }

    #[cfg(test)]
    fn num_channels(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    #[cfg(test)]
    fn num_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        if let Some(task) = self.cleanup.get() {
            task.abort();
        }
    }
}

#[async_trait]
impl Broker for MemoryEngine {
    async fn publish(
        &self,
        channel: &str,
        mut publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BusError> {
        let now = Instant::now();
        let keeps_state = options.history.is_some() || options.idempotency_key.is_some();
        let state = if keeps_state {
            self.channel_or_insert(channel)
        } else {
            match self.channel(channel) {
                Some(state) => state,
                // Nothing to store and nobody subscribed.
                None => return Ok(StreamPosition::default()),
            }
        };

        let mut feed = state.feed.lock();
        if options.history.is_some() && !feed.stream.exists() {
            // This publish creates a stream: make room first, without
            // holding a feed lock (eviction takes others).
            drop(feed);
            self.make_room(channel);
            feed = state.feed.lock();
        }
        if let Some(key) = &options.idempotency_key {
            if let Some(position) = feed.stream.remembered(now, key) {
                return Ok(position);
            }
        }
        let position = match &options.history {
            Some(history) => {
                let position = self.on_stream(&mut feed, |stream| {
                    stream.advance(now, history, || {
                        self.fresh_epoch(channel, now, history.meta_ttl)
                    })
                });
                publication.offset = position.offset;
                let sealed = self.history_keys.load().seal(
                    channel,
                    &position.epoch,
                    position.offset,
                    &crate::seal::publication_body(&publication),
                );
                let kept = match sealed {
                    Some(record) => Kept::Sealed {
                        offset: position.offset,
                        record,
                    },
                    None => Kept::Clear(publication.clone()),
                };
                feed.stream.keep(now, history, kept);
                if feed.subscribed {
                    self.events
                        .on_publication(channel, publication, &position.epoch);
                }
                position
            }
            None => {
                publication.offset = 0;
                if feed.subscribed {
                    self.events.on_publication(channel, publication, "");
                }
                StreamPosition::default()
            }
        };
        if let Some(key) = &options.idempotency_key {
            feed.stream.remember(now, key, position.clone());
        }
        Ok(position)
    }

    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), BusError> {
        if let Some(state) = self.channel(channel) {
            let feed = state.feed.lock();
            if feed.subscribed {
                self.events.on_join(channel, info);
            }
        }
        Ok(())
    }

    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), BusError> {
        if let Some(state) = self.channel(channel) {
            let feed = state.feed.lock();
            if feed.subscribed {
                self.events.on_leave(channel, info);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BusError> {
        self.channel_or_insert(channel).feed.lock().subscribed = true;
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BusError> {
        if let Some(state) = self.channel(channel) {
            state.feed.lock().subscribed = false;
        }
        self.forget_if_empty(channel);
        Ok(())
    }

    async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, BusError> {
        let now = Instant::now();
        let fresh = || self.fresh_epoch(channel, now, query.meta_ttl);
        // A channel the engine does not know has no stream: nothing is
        // created for the read (module docs).
        let Some(state) = self.channel(channel) else {
            let mut nothing = Stream::default();
            let keys = self.history_keys.load();
            return nothing.page(now, query, channel, &keys, &self.undecryptable, fresh);
        };
        let mut feed = state.feed.lock();
        let keys = self.history_keys.load();
        self.on_stream(&mut feed, |stream| {
            stream.page(now, query, channel, &keys, &self.undecryptable, fresh)
        })
    }

    async fn remove_history(&self, channel: &str) -> Result<(), BusError> {
        if let Some(state) = self.channel(channel) {
            state.feed.lock().stream.clear();
        }
        Ok(())
    }

    async fn publish_control(&self, command: &ControlCommand) -> Result<(), BusError> {
        // One node: the cluster is this process.
        self.events.on_control(command.clone());
        Ok(())
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        vec![self.events.node_info()]
    }

    async fn survey(&self, request: &SurveyRequest) -> Result<Vec<SurveyReply>, BusError> {
        Ok(vec![self.events.on_survey(request)])
    }

    async fn revoke_token(&self, token_id: &str, until: u64) -> Result<(), BusError> {
        let mut revoked = self.revoked_tokens.lock();
        let entry = revoked.entry(token_id.to_owned()).or_default();
        *entry = (*entry).max(until);
        Ok(())
    }

    async fn invalidate_user_tokens(
        &self,
        user: &str,
        issued_before: u64,
        until: u64,
    ) -> Result<(), BusError> {
        let mut users = self.invalidated_users.lock();
        let entry = users.entry(user.to_owned()).or_default();
        *entry = (entry.0.max(issued_before), entry.1.max(until));
        Ok(())
    }

    async fn token_revoked(
        &self,
        token_id: Option<&str>,
        user: &str,
        issued_at: Option<u64>,
        now: u64,
    ) -> Result<bool, BusError> {
        if let Some(id) = token_id {
            let mut revoked = self.revoked_tokens.lock();
            revoked.retain(|_, until| *until > now);
            if revoked.contains_key(id) {
                return Ok(true);
            }
        }
        if user.is_empty() {
            return Ok(false);
        }
        let mut users = self.invalidated_users.lock();
        users.retain(|_, (_, until)| *until > now);
        Ok(users
            .get(user)
            .is_some_and(|(before, _)| issued_at.unwrap_or(0) < *before))
    }

    fn key_ids(&self) -> crate::EngineKeyIds {
        let history = self.history_keys.load();
        crate::EngineKeyIds {
            bus: None,
            history: Some(crate::KeyIds {
                active: history.active_id().map(str::to_owned),
                ids: history.ids(),
            }),
        }
    }

    fn counters(&self) -> crate::BrokerCounters {
        crate::BrokerCounters {
            history_undecryptable: self.undecryptable.load(Ordering::Relaxed),
            streams: Some(self.streams.load(Ordering::Relaxed) as u64),
            streams_evicted: self.evicted.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[async_trait]
impl PresenceStore for MemoryEngine {
    async fn add_presence(
        &self,
        channel: &str,
        info: ClientInfo,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let now = Instant::now();
        let state = self.channel_or_insert(channel);
        state.presence.lock().add(now, info, ttl);
        Ok(())
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BusError> {
        if let Some(state) = self.channel(channel) {
            state.presence.lock().remove(client);
        }
        self.forget_if_empty(channel);
        Ok(())
    }

    async fn presence(&self, channel: &str) -> Result<BTreeMap<String, ClientInfo>, BusError> {
        let Some(state) = self.channel(channel) else {
            return Ok(BTreeMap::new());
        };
        let now = Instant::now();
        let members = state.presence.lock().members(now);
        Ok(members)
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, BusError> {
        let Some(state) = self.channel(channel) else {
            return Ok(PresenceStats::default());
        };
        let now = Instant::now();
        let stats = state.presence.lock().stats(now);
        Ok(stats)
    }
}

type Shard = RwLock<HashMap<Box<str>, Arc<ChannelState>>>;

#[derive(Default)]
struct ChannelState {
    feed: Mutex<Feed>,
    presence: Mutex<Presence>,
}

/// Everything whose changes must be ordered with delivery.
#[derive(Default)]
struct Feed {
    /// This node receives the channel's events.
    subscribed: bool,
    stream: Stream,
}

impl ChannelState {
    /// Call after pruning, with exclusive access.
    fn is_empty(&mut self) -> bool {
        let feed = self.feed.get_mut();
        !feed.subscribed && feed.stream.is_empty() && self.presence.get_mut().is_empty()
    }
}

async fn run_cleanup(engine: Weak<MemoryEngine>) {
    let mut ticker = tokio::time::interval(CLEANUP_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick completes at once; sweeping an empty engine is useless.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests;
