//! What a subscribe will do, decided before the engine is touched, and the
//! other pure rules the connection machine and the server API share: history
//! options and limits, presence TTL, the user-connection presence key.

use std::time::Duration;

use herald_auth::{ChannelOptions, ChannelPolicy, ResolvedChannel};
use herald_bus::HistoryOptions;
use herald_protocol::{ClientInfo, RawJson, StreamPosition};

use crate::config::ClientConfig;

/// Where a positioned subscription stands when its subscribe reply is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    /// Last offset the client has (delivered live or in the reply).
    pub(crate) offset: u64,
    pub(crate) epoch: String,
}

/// Everything decided synchronously before the engine is touched.
#[derive(Debug, Clone)]
pub(crate) struct SubscribePlan {
    pub(crate) channel: String,
    pub(crate) options: ChannelOptions,
    pub(crate) history: Option<HistoryOptions>,
    pub(crate) recoverable: bool,
    pub(crate) positioned: bool,
    /// The client's last known position when it asked to recover.
    pub(crate) recover: Option<StreamPosition>,
    /// Subscribe flag bit 2: error 112 instead of `recovered: false`.
    pub(crate) reject_unrecovered: bool,
    /// The subscriber receives join/leave pushes.
    pub(crate) push_join_leave: bool,
    pub(crate) info: ClientInfo,
    pub(crate) expires_at: Option<u64>,
    /// The backend refreshes the subscription (sub_refresh proxy): the
    /// client is not told its expiry, so it does not ask for a token.
    pub(crate) refreshed_by_backend: bool,
    pub(crate) data: Option<RawJson>,
    /// Delta compression (fossil) negotiated: publications go as deltas
    /// against the subscriber's previous one (node/delta.rs).
    pub(crate) delta: bool,
}

impl SubscribePlan {
    pub(crate) fn new(
        channel: String,
        namespace_options: &ChannelOptions,
        meta_ttl: std::time::Duration,
        request: SubscribeFlags,
        info: ClientInfo,
    ) -> Self {
        let options = namespace_options.clone();
        let history = options.history_enabled().then_some(HistoryOptions {
            size: options.history_size,
            ttl: options.history_ttl,
            meta_ttl,
        });
        let has_history = history.is_some();
        let recoverable = has_history
            && (options.force_recovery
                || (request.recoverable && (options.allow_recovery || request.history_access)));
        let positioned = has_history
            && (recoverable
                || options.force_positioning
                || (request.positioned && (options.allow_positioning || request.history_access)));
        let push_join_leave = options.join_leave
            && (options.force_push_join_leave || (request.join_leave && request.presence_access));
        Self {
            channel,
            history,
            recoverable,
            positioned,
            recover: (request.recover && recoverable).then_some(request.position),
            reject_unrecovered: request.reject_unrecovered,
            push_join_leave,
            info,
            expires_at: None,
            refreshed_by_backend: false,
            data: None,
            delta: false,
            options,
        }
    }
}

/// What the client asked for, plus the access it has.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubscribeFlags {
    pub(crate) recover: bool,
    pub(crate) position: StreamPosition,
    pub(crate) recoverable: bool,
    pub(crate) positioned: bool,
    pub(crate) join_leave: bool,
    pub(crate) reject_unrecovered: bool,
    pub(crate) history_access: bool,
    pub(crate) presence_access: bool,
}

/// What a publication to `channel` keeps in history, if anything. One place
/// for clients, the server API and subscribe plans.
pub(crate) fn history_options(
    policy: &ChannelPolicy,
    channel: &ResolvedChannel<'_>,
) -> Option<HistoryOptions> {
    channel.options.history_enabled().then(|| HistoryOptions {
        size: channel.options.history_size,
        ttl: channel.options.history_ttl,
        meta_ttl: policy.history_meta_ttl(channel),
    })
}

/// A history request's `limit` as the engine takes it: 0 = only the
/// position, negative = as many as allowed, never more than
/// `client.history_max_publication_limit`.
pub(crate) fn history_limit(config: &ClientConfig, requested: i64) -> usize {
    let max = config.history_max_publication_limit;
    match requested {
        0 => 0,
        n if n < 0 => max,
        n => usize::try_from(n).unwrap_or(max).min(max),
    }
}

/// How long a presence entry lives without a refresh: three
/// `client.presence_update_interval`s, at least 3 s.
pub(crate) fn presence_ttl(config: &ClientConfig) -> Duration {
    (config.presence_update_interval * 3).max(Duration::from_secs(3))
}

/// The presence-store name under which a user's connections are counted
/// cluster-wide (`client.user_connection_limit`). It starts with a control
/// character, which no client channel name may contain.
pub(crate) fn user_connections_key(user: &str) -> String {
    format!("\u{1}user_connections:{user}")
}
