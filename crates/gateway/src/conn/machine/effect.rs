//! What the machine asks for and hears back, and what it tells the driver
//! to do: the closed sets of effects, outcomes and actions.

use std::time::{Duration, Instant};

use herald_auth::{SubscriptionClaims, TokenError};
use herald_bus::{BusError, HistoryPage, HistoryQuery, PublishOptions};
use herald_identity::Principal;
use herald_protocol::{
    ClientInfo, CommandResult, Disconnect, ErrorCode, Publication, RawJson, Reply, SubscribeResult,
};
use herald_proxy::{
    Answer, ConnectGrant, Failure, PublishGrant, RefreshGrant, RpcReply, SubscriptionGrant,
};

use super::super::state::SubscriptionState;
use crate::node::plan::{Position, SubscribePlan};

/// Identifies an effect the machine waits for.
pub(crate) type EffectId = u64;

/// The time of an input: the monotonic clock for timers and rates, unix
/// seconds for token expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) at: Instant,
    pub(crate) unix: u64,
    /// The wall clock in Unix milliseconds (the connect result's `time`).
    pub(crate) unix_ms: i64,
}

/// Work the machine asks the driver to do. [`Action::Run`] effects report
/// their [`Outcome`] back; [`Action::Spawn`] ones report nothing.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Check a connection token (JWT or introspection); may wait for a JWKS
    /// refetch or an introspection request. → [`Outcome::Verified`]
    VerifyConnection { token: String },
    /// Check a subscription token; may wait for a JWKS refetch.
    /// → [`Outcome::SubscriptionVerified`]
    VerifySubscription { token: String },
    /// Check a subscription token with the keys at hand, never waiting
    /// (`sub_refresh`). → [`Outcome::SubscriptionVerified`]
    CheckSubscription { token: String },
    /// Register the connection under `user` on the node (the node's own
    /// `client.user_connection_limit`). → [`Outcome::Registered`]
    Register { user: String },
    /// The cluster-wide checks of a connect: the user's connection count
    /// (adding this connection), and revocation. → [`Outcome::Admitted`]
    Admit {
        user_entry: Option<ClientInfo>,
        revocation: Option<Revocation>,
    },
    /// Subscribe in the node and the engine: the Hub (buffering), history,
    /// presence, join. → [`Outcome::Subscribed`]
    Subscribe { plan: SubscribePlan },
    /// → [`Outcome::Published`]
    Publish {
        channel: String,
        publication: Publication,
        options: PublishOptions,
    },
    /// → [`Outcome::Presence`]
    Presence { channel: String, stats: bool },
    /// → [`Outcome::History`]
    History {
        channel: String,
        query: HistoryQuery,
    },
    /// Check a refresh token and whether it is revoked. → [`Outcome::Refreshed`]
    Refresh { token: String },
    /// Ask again whether an introspected token is active.
    /// → [`Outcome::StillActive`]
    StillActive { token: String },
    /// Ask the backend who a connection without a token is
    /// (`client.proxy.connect`). → [`Outcome::ConnectProxied`]
    ProxyConnect {
        name: String,
        version: String,
        data: Option<RawJson>,
    },
    /// A client RPC call for the backend (`rpc.proxy`, or the named proxy
    /// of its namespace). → [`Outcome::Rpc`]
    Rpc {
        method: String,
        data: Option<RawJson>,
        proxy: String,
    },
    /// A subscribe without a token for the backend to allow
    /// (`channel.proxy.subscribe` or the namespace's named proxy).
    /// → [`Outcome::SubscribeProxied`]
    ProxySubscribe {
        channel: String,
        data: Option<RawJson>,
        proxy: String,
    },
    /// A client publication for the backend to allow or rewrite.
    /// → [`Outcome::PublishProxied`]
    ProxyPublish {
        channel: String,
        data: RawJson,
        proxy: String,
    },
    /// The connection's expiry came: the backend says whether it goes on
    /// (`client.proxy.refresh`). → [`Outcome::RefreshProxied`]
    ProxyRefresh,
    /// A subscription's expiry came (`sub_refresh_proxy_enabled`).
    /// → [`Outcome::SubRefreshProxied`]
    ProxySubRefresh { channel: String, proxy: String },
    /// Fetch the subscription JWKS again in the background (an unknown
    /// `kid` at `sub_refresh`, which does not wait).
    RefetchSubscriptionKeys,
    /// `single_connection` of the personal channel: when the user's
    /// personal channel has another client, close every connection of
    /// `user` but `client`, on every node, with 3504.
    KeepSingleConnection {
        channel: String,
        user: String,
        client: String,
    },
    /// Refresh these presence entries (channel, info) with `ttl`.
    RefreshPresence {
        entries: Vec<(String, ClientInfo)>,
        ttl: Duration,
    },
    /// End a subscription in the node: close its subscriber, leave the Hub,
    /// remove presence, publish leave (as `state` says).
    Leave {
        channel: String,
        state: SubscriptionState,
        info: ClientInfo,
    },
    /// Undo a subscribe whose subscription was dropped while it ran.
    Detach { channel: String },
    /// Remove this connection's entry from its user's cluster-wide count.
    RemoveUserEntry { key: String, client: String },
    /// Take the connection off the node's registry.
    Unregister { user: String },
}

/// What a revocation check asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Revocation {
    pub(crate) token_id: Option<String>,
    pub(crate) user: String,
    pub(crate) issued_at: Option<u64>,
}

/// Why the cluster-wide checks of a connect refused it.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The token is revoked (3500).
    Revoked,
    /// `client.user_connection_limit` reached across the cluster (3504).
    UserLimit,
    Engine(BusError),
}

/// The outcome of an [`Effect`] run with [`Action::Run`].
#[derive(Debug)]
pub(crate) enum Outcome {
    Verified(Result<Principal, TokenError>),
    SubscriptionVerified(Result<SubscriptionClaims, TokenError>),
    Registered(bool),
    Admitted(Result<(), Refused>),
    /// The subscribe result and, for a positioned subscription, where it
    /// stands; the error is already a wire code.
    Subscribed(Result<(SubscribeResult, Option<Position>), ErrorCode>),
    Published(Result<(), BusError>),
    /// A `presence` or `presence_stats` result.
    Presence(Result<CommandResult, BusError>),
    History(Result<HistoryPage, BusError>),
    Refreshed {
        checked: Result<Principal, TokenError>,
        revoked: Result<bool, BusError>,
    },
    /// `None`: cannot be decided now.
    StillActive(Option<bool>),
    /// The backend's answer to an RPC call.
    Rpc(Result<Answer<RpcReply>, Failure>),
    /// The backend's answer to a connect.
    ConnectProxied(Result<Answer<ConnectGrant>, Failure>),
    SubscribeProxied(Result<Answer<SubscriptionGrant>, Failure>),
    PublishProxied(Result<Answer<PublishGrant>, Failure>),
    RefreshProxied(Result<Answer<RefreshGrant>, Failure>),
    SubRefreshProxied(Result<Answer<RefreshGrant>, Failure>),
}

/// What the driver does next.
#[derive(Debug)]
pub(crate) enum Action {
    /// Queue a reply, push or ping to the client.
    Send(Reply),
    /// The subscribe reply (or the connect reply, or the subscribe push) is
    /// queued: the channel's subscriber may deliver, skipping what
    /// `position` says the client has.
    GoLive {
        channel: String,
        position: Option<Position>,
    },
    /// Run the effect and hand its outcome to [`Machine::handle_effect`].
    Run { id: EffectId, effect: Effect },
    /// Run the effect; nothing comes back.
    Spawn(Effect),
    /// A unidirectional connection's connect failed with `code` (an error
    /// or a disconnect code); the [`Action::Close`] that follows carries the
    /// disconnect the client is told. For transports that answer a failed
    /// connect with an HTTP status instead (`connect_code_to_http_response`).
    ConnectFailed { code: u32 },
    /// Close the connection with this code; nothing else follows.
    Close(Disconnect),
}
