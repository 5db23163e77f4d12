//! What a subscribe will do, decided before the engine is touched, and the
//! other pure rules the connection machine and the server API share: history
//! options and limits, presence TTL, the user-connection presence key.

use std::sync::Arc;
use std::time::Duration;

use herald_auth::{ChannelOptions, ChannelPolicy, RecoveryMode, ResolvedChannel};
use herald_bus::HistoryOptions;
use herald_protocol::{ClientInfo, FilterError, FilterNode, RawJson, StreamPosition, TagsFilter};

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
    /// The client's last known position when it asked to recover (or the
    /// empty position when `auto_cache_recover` recovers for it).
    pub(crate) recover: Option<StreamPosition>,
    /// Recovery gives only the latest publication (`force_recovery_mode =
    /// "cache"`), not every missed one.
    pub(crate) cache_recovery: bool,
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
    /// The client's tags filter: only matching publications are delivered,
    /// live and recovered. A filtered subscription never negotiates delta
    /// compression (Centrifugo's rule, centrifuge PR #634): it gets full
    /// publications and `delta: false`.
    pub(crate) tags_filter: Option<Arc<TagsFilter>>,
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
        let cache_recovery = recoverable && options.force_recovery_mode == RecoveryMode::Cache;
        let recover = if request.recover && recoverable {
            Some(request.position)
        } else if cache_recovery && options.auto_cache_recover {
            // The subscriber gets the latest publication without asking,
            // as if it had subscribed with an empty `since`.
            Some(StreamPosition::default())
        } else {
            None
        };
        Self {
            channel,
            history,
            recoverable,
            positioned,
            recover,
            cache_recovery,
            reject_unrecovered: request.reject_unrecovered,
            push_join_leave,
            info,
            expires_at: None,
            refreshed_by_backend: false,
            data: None,
            tags_filter: None,
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

/// Why a subscribe's tags filter is refused (error 107 either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TagsFilterRefusal {
    /// The namespace lacks `allow_tags_filter`.
    NotAllowed,
    Invalid(FilterError),
}

/// The checked tags filter of a subscribe, if it sent one (docs/protocol.md,
/// "Tags filter").
pub(crate) fn tags_filter(
    tf: Option<&FilterNode>,
    options: &ChannelOptions,
) -> Result<Option<Arc<TagsFilter>>, TagsFilterRefusal> {
    let Some(tf) = tf else {
        return Ok(None);
    };
    if !options.allow_tags_filter {
        return Err(TagsFilterRefusal::NotAllowed);
    }
    TagsFilter::new(tf)
        .map(|f| Some(Arc::new(f)))
        .map_err(TagsFilterRefusal::Invalid)
}

/// The publications of a subscribe reply that its subscriber receives: all,
/// or those passing its tags filter. Every way a reply gets publications
/// (stream recovery, and any later mode) goes through here, as live
/// delivery goes through `Subscriber::wants`.
pub(crate) fn deliverable(
    plan: &SubscribePlan,
    mut publications: Vec<herald_protocol::Publication>,
) -> Vec<herald_protocol::Publication> {
    if let Some(filter) = &plan.tags_filter {
        publications.retain(|p| filter.matches(&p.tags));
    }
    publications
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

#[cfg(test)]
mod tags_filter_tests {
    use super::*;
    use herald_protocol::Publication;

    fn node(cmp: &str) -> FilterNode {
        FilterNode {
            key: "k".into(),
            cmp: cmp.into(),
            val: "v".into(),
            ..Default::default()
        }
    }

    #[test]
    fn refusals_and_acceptance() {
        let allowing = ChannelOptions {
            allow_tags_filter: true,
            ..Default::default()
        };
        assert_eq!(tags_filter(None, &ChannelOptions::default()), Ok(None));
        assert_eq!(
            tags_filter(Some(&node("eq")), &ChannelOptions::default()),
            Err(TagsFilterRefusal::NotAllowed)
        );
        assert!(matches!(
            tags_filter(Some(&node("zz")), &allowing),
            Err(TagsFilterRefusal::Invalid(FilterError::UnknownCmp))
        ));
        assert!(matches!(
            tags_filter(Some(&node("eq")), &allowing),
            Ok(Some(_))
        ));
    }

    #[test]
    fn recovered_publications_pass_the_filter_in_order() {
        let publication = |offset: u64, v: &str| Publication {
            data: RawJson::from_str("1").unwrap(),
            info: None,
            offset,
            tags: [("k".to_string(), v.to_string())].into(),
            delta: false,
        };
        let all = vec![
            publication(1, "v"),
            publication(2, "w"),
            publication(3, "v"),
        ];
        let mut plan = SubscribePlan::new(
            "ch".into(),
            &ChannelOptions::default(),
            Duration::ZERO,
            SubscribeFlags::default(),
            ClientInfo::default(),
        );
        assert_eq!(deliverable(&plan, all.clone()).len(), 3);
        plan.tags_filter = Some(Arc::new(TagsFilter::new(&node("eq")).unwrap()));
        let offsets: Vec<u64> = deliverable(&plan, all).iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [1, 3]);
    }
}
