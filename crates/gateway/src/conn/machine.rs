//! The rules of the client protocol for one connection, without I/O: no
//! actix, no tokio, no clock, no bytes (docs/protocol.md).
//!
//! Shaped like quinn-proto's `Connection`. Inputs:
//! [`Machine::handle_commands`] (decoded commands, in arrival order),
//! [`Machine::handle_effect`] (the outcome of an [`Effect`] it asked for),
//! [`Machine::handle_control`] (a cluster-wide command for this connection),
//! [`Machine::handle_gap`] (a positioned subscription lost its place),
//! [`Machine::handle_timeout`], and the ends: [`Machine::handle_bad_input`],
//! [`Machine::handle_output_closed`], [`Machine::handle_stopped`]. Outputs:
//! [`Machine::poll_action`] (send a reply or push, let a subscription go live
//! after its reply, run an effect, close) and [`Machine::poll_timeout`] (the
//! next deadline). Every input carries the time ([`Now`]).
//!
//! Commands run one at a time in arrival order: a command that needs an
//! effect's outcome keeps the ones behind it queued until the outcome
//! arrives. The driver (the connection's actix actor, `session.rs`) may
//! answer an effect at once (a token it can verify without the network) or
//! later; the machine cannot tell and need not.
//!
//! It knows nothing of JSON or WebSocket frames: replies and pushes are
//! typed [`Reply`]s; a codec and a transport sit beside it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_auth::{
    ChannelError, ChannelPolicy, ConnectionClaims, InvalidReason, SubOptions, SubscriptionClaims,
    TokenError,
};
use herald_bus::{BusError, ControlCommand, HistoryPage, HistoryQuery, PublishOptions};
use herald_identity::Principal;
use herald_protocol::{
    ClientInfo, Command, CommandResult, ConnectRequest, ConnectResult, Disconnect, ErrorCode,
    ErrorReply, HistoryRequest, HistoryResult, Method, Publication, PublishRequest, Push, PushBody,
    RawJson, RefreshRequest, RefreshResult, Reply, StreamPosition, SubRefreshRequest,
    SubRefreshResult, SubscribePush, SubscribeRequest, SubscribeResult, UnsubscribeCode,
    UnsubscribePush, UnsubscribeRequest, SUBSCRIBE_FLAG_REJECT_UNRECOVERED,
};
use tracing::{debug, info, warn};

use super::plan::{self, Position, SubscribeFlags, SubscribePlan};
use super::rate::RateLimiter;
use super::state::{Admission, ConnectionState, Phase, SubscriptionState};
use super::timer::{Timer, TimerTable};
use crate::codes::{self, Stage, Wire};
use crate::config::ClientConfig;
use crate::metrics;

/// Commands waiting behind a running one; more is a flood (3013).
pub(crate) const MAX_QUEUED_COMMANDS: usize = 1024;

/// How far past a deadline the expiry check runs, so it sees it passed.
const EXPIRY_SLACK: Duration = Duration::from_millis(50);

/// The time of an input: the monotonic clock for timers and rates, unix
/// seconds for token expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) at: Instant,
    pub(crate) unix: u64,
}

/// Identifies an effect the machine waits for.
pub(crate) type EffectId = u64;

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
    /// Fetch the subscription JWKS again in the background (an unknown
    /// `kid` at `sub_refresh`, which does not wait).
    RefetchSubscriptionKeys,
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
    /// Close the connection with this code; nothing else follows.
    Close(Disconnect),
}

/// What a connection is built with.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) policy: Arc<ChannelPolicy>,
    /// The server version in connect and refresh results.
    pub(crate) version: &'static str,
    /// This connection's client id.
    pub(crate) client: String,
    /// The verified client certificate's identity
    /// (`client.tls_identity_as_user`): the user when connect has no token.
    pub(crate) tls_identity: Option<String>,
    /// The token of the upgrade's `Authorization: Bearer` header.
    pub(crate) upgrade_token: Option<String>,
    /// Where in `[interval/2, interval)` the first ping goes, as a fraction
    /// in `[0, 1)`: a reconnect wave must not ping in lockstep.
    pub(crate) ping_jitter: f64,
}

/// One connection's protocol state (module docs).
pub(crate) struct Machine {
    config: Arc<ClientConfig>,
    policy: Arc<ChannelPolicy>,
    version: &'static str,
    client: String,
    user: String,
    conn_info: Option<RawJson>,
    /// `jti` and `iat` of the connection token in use (revocation).
    token_id: Option<String>,
    issued_at: Option<u64>,
    tls_identity: Option<String>,
    upgrade_token: Option<String>,
    /// Channels the credentials grant subscription to (introspection scopes).
    granted: HashSet<String>,
    /// The introspected token, re-checked while the connection lives.
    introspected_token: Option<String>,
    /// The user this connection is registered under on the node.
    registered: Option<String>,
    state: ConnectionState,
    chan_info: HashMap<String, Option<RawJson>>,
    rate: Option<RateLimiter>,
    queue: VecDeque<Command>,
    running: Option<Running>,
    /// The command running now (the `method` metric label) and its start.
    current: (&'static str, Instant),
    /// Server-side subscribes after connect (control), by effect.
    server_subscribes: HashMap<EffectId, SubscribePlan>,
    /// The introspection re-check in flight, and the token it asks about.
    recheck: Option<(EffectId, String)>,
    timers: TimerTable,
    ping_jitter: f64,
    actions: VecDeque<Action>,
    next_effect: EffectId,
    closing: bool,
}

/// A command waiting for an effect.
struct Running {
    /// The effect it waits for.
    waiting: EffectId,
    step: Step,
}

enum Step {
    Connect(Box<Connecting>),
    Subscribe {
        id: u32,
        req: Box<SubscribeRequest>,
        /// Set once the token (if any) passed: the plan being subscribed.
        plan: Option<Box<SubscribePlan>>,
    },
    Publish {
        id: u32,
    },
    Presence {
        id: u32,
    },
    History {
        id: u32,
    },
    Refresh {
        id: u32,
        token: String,
    },
    SubRefresh {
        id: u32,
        channel: String,
    },
}

/// A connect between its effects.
struct Connecting {
    id: u32,
    req: ConnectRequest,
    token: String,
    claims: Option<ConnectionClaims>,
    expires_at: Option<u64>,
    /// Server-side subscriptions, subscribed one after another.
    plans: Vec<SubscribePlan>,
    /// Outcomes of the plans subscribed so far.
    results: Vec<Result<(SubscribeResult, Option<Position>), ErrorCode>>,
}

impl Machine {
    pub(crate) fn new(setup: Setup, now: Now) -> Self {
        let rate = (setup.config.command_rate_limit > 0)
            .then(|| RateLimiter::new(setup.config.command_rate_limit, now.at));
        let mut timers = TimerTable::default();
        timers.set(Timer::Handshake, now.at + setup.config.handshake_timeout);
        Self {
            state: ConnectionState::new(setup.config.channel_limit),
            config: setup.config,
            policy: setup.policy,
            version: setup.version,
            client: setup.client,
            user: String::new(),
            conn_info: None,
            token_id: None,
            issued_at: None,
            tls_identity: setup.tls_identity,
            upgrade_token: setup.upgrade_token,
            granted: HashSet::new(),
            introspected_token: None,
            registered: None,
            chan_info: HashMap::new(),
            rate,
            queue: VecDeque::new(),
            running: None,
            current: ("connect", now.at),
            server_subscribes: HashMap::new(),
            recheck: None,
            timers,
            ping_jitter: setup.ping_jitter.clamp(0.0, 0.999),
            actions: VecDeque::new(),
            next_effect: 1,
            closing: false,
        }
    }

    // ---- outputs ----

    /// The next thing to do, in order.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] is due next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.closing {
            return None;
        }
        self.timers.next_timeout()
    }

    pub(crate) fn client(&self) -> &str {
        &self.client
    }

    // ---- inputs ----

    /// Commands decoded from one client message, in order.
    pub(crate) fn handle_commands(&mut self, commands: Vec<Command>, now: Now) {
        for command in commands {
            if self.closing {
                return;
            }
            metrics::received(method_name(&command.method));
            if !matches!(command.method, Method::Pong) {
                if let Some(rate) = self.rate.as_mut() {
                    if !rate.allow(now.at) {
                        if rate.persistent() {
                            debug!(client = %self.client, "command rate limit: disconnecting");
                            return self.close(Disconnect::TOO_MANY_REQUESTS);
                        }
                        self.current = (method_name(&command.method), now.at);
                        self.error(command.id, ErrorCode::TooManyRequests);
                        continue;
                    }
                }
            }
            match self.state.admit(&command.method) {
                Ok(Admission::PongAccepted) => {}
                Ok(Admission::Queue) => {
                    if self.queue.len() >= MAX_QUEUED_COMMANDS {
                        return self.close(Disconnect::TOO_MANY_REQUESTS);
                    }
                    self.queue.push_back(command);
                }
                Err(d) => return self.close(d),
            }
        }
        self.drive(now);
    }

    /// A message that does not decode, or is not of this protocol (a binary
    /// message on a JSON connection).
    pub(crate) fn handle_bad_input(&mut self) {
        self.close(Disconnect::BAD_REQUEST);
    }

    /// The outcome of effect `id`. Outcomes of effects the machine no longer
    /// waits for are dropped.
    pub(crate) fn handle_effect(&mut self, id: EffectId, outcome: Outcome, now: Now) {
        if self.closing {
            return;
        }
        if self.running.as_ref().is_some_and(|r| r.waiting == id) {
            let Some(running) = self.running.take() else {
                return;
            };
            self.resume(running.step, outcome, now);
            if self.running.is_none() {
                self.finished(now);
            }
            return;
        }
        if let Some(plan) = self.server_subscribes.remove(&id) {
            if let Outcome::Subscribed(result) = outcome {
                self.server_subscribed(plan, result);
            }
            return;
        }
        if self
            .recheck
            .as_ref()
            .is_some_and(|(waiting, _)| *waiting == id)
        {
            if let (Some((_, token)), Outcome::StillActive(active)) = (self.recheck.take(), outcome)
            {
                self.rechecked(&token, active, now);
            }
        }
    }

    /// A cluster-wide command addressed to this connection (the node picked
    /// it by user and client).
    pub(crate) fn handle_control(&mut self, command: ControlCommand, now: Now) {
        if self.closing || self.state.phase() != Phase::Connected {
            return;
        }
        match command {
            ControlCommand::Disconnect {
                whitelist,
                code,
                reason,
                ..
            } if !whitelist.contains(&self.client) => {
                self.close(Disconnect::custom(code, &reason));
            }
            ControlCommand::Unsubscribe { channel, .. } if self.state.is_subscribed(&channel) => {
                self.server_unsubscribe(&channel, UnsubscribeCode::Server);
            }
            ControlCommand::Subscribe {
                channel,
                info,
                data,
                ..
            } => self.server_subscribe(channel, info, data),
            ControlCommand::Refresh {
                expired, expire_at, ..
            } => {
                if expired {
                    return self.close(Disconnect::EXPIRED);
                }
                self.state.refreshed(expire_at);
                self.schedule_expiry(now);
            }
            ControlCommand::RevokeToken { token_id }
                if self.token_id.as_deref() == Some(token_id.as_str()) =>
            {
                info!(client = %self.client, "token revoked: disconnecting");
                self.close(Disconnect::INVALID_TOKEN);
            }
            ControlCommand::InvalidateUserTokens { issued_before, .. }
                if self.issued_at.unwrap_or(0) < issued_before =>
            {
                info!(client = %self.client, "user tokens invalidated: disconnecting");
                self.close(Disconnect::INVALID_TOKEN);
            }
            _ => {}
        }
    }

    /// A positioned subscription saw a gap or a new epoch: the client must
    /// recover (unsubscribe 2500), or reconnect for a server-side one (3010).
    pub(crate) fn handle_gap(&mut self, channel: &str) {
        if self.closing {
            return;
        }
        let server_side = self
            .state
            .subscription(channel)
            .is_some_and(|s| s.server_side);
        if server_side {
            return self.close(Disconnect::INSUFFICIENT_STATE);
        }
        self.server_unsubscribe(channel, UnsubscribeCode::InsufficientState);
    }

    /// Runs every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Now) {
        for timer in self.timers.expired(now.at) {
            if self.closing {
                return;
            }
            match timer {
                Timer::Handshake => {
                    if self.state.phase() != Phase::Connected {
                        debug!(client = %self.client, "no connect in time");
                        self.close(Disconnect::STALE);
                    }
                }
                Timer::Ping => self.ping(now),
                Timer::Pong => {
                    if self.state.pong_overdue(now.at, self.config.pong_timeout) {
                        self.close(Disconnect::NO_PONG);
                    }
                }
                Timer::Expiry => {
                    if self
                        .state
                        .expired(now.unix, self.config.expired_close_delay)
                    {
                        info!(client = %self.client, "connection expired");
                        self.close(Disconnect::EXPIRED);
                    } else {
                        self.schedule_expiry(now);
                    }
                }
                Timer::Periodic => {
                    self.periodic(now);
                    self.timers.set(
                        Timer::Periodic,
                        now.at + self.config.presence_update_interval,
                    );
                }
            }
        }
    }

    /// The transport took the close into its own hands (the client's queue
    /// overflowed, or the socket is gone): nothing more is sent.
    pub(crate) fn handle_output_closed(&mut self) {
        self.closing = true;
    }

    /// The connection is gone: what the node must forget.
    pub(crate) fn handle_stopped(&mut self) {
        self.closing = true;
        if let Some(key) = self.user_entry_key() {
            self.actions
                .push_back(Action::Spawn(Effect::RemoveUserEntry {
                    key,
                    client: self.client.clone(),
                }));
        }
        if let Some(user) = self.registered.take() {
            self.actions
                .push_back(Action::Spawn(Effect::Unregister { user }));
        }
        let channels: Vec<String> = self.state.subscriptions().map(|(c, _)| c.clone()).collect();
        for channel in channels {
            self.drop_subscription(&channel);
        }
    }

    // ---- commands ----

    /// Runs queued commands until one waits for an effect.
    fn drive(&mut self, now: Now) {
        while self.running.is_none() && !self.closing {
            let Some(command) = self.queue.pop_front() else {
                return;
            };
            if let Err(d) = self.state.ready_for(&command.method) {
                return self.close(d);
            }
            self.current = (method_name(&command.method), now.at);
            self.execute(command, now);
            if self.running.is_none() {
                self.command_done(now);
            }
        }
    }

    /// The running command is answered: time it, run the next.
    fn finished(&mut self, now: Now) {
        self.command_done(now);
        self.drive(now);
    }

    fn command_done(&self, now: Now) {
        metrics::client_command(
            self.current.0,
            now.at.saturating_duration_since(self.current.1),
        );
    }

    fn execute(&mut self, command: Command, now: Now) {
        let id = command.id;
        match command.method {
            Method::Connect(req) => self.connect(id, req, now),
            Method::Subscribe(req) => self.subscribe(id, req, now),
            Method::Unsubscribe(req) => self.unsubscribe(id, req),
            Method::Publish(req) => self.publish(id, req),
            Method::Presence(req) => self.presence(id, req.channel, false),
            Method::PresenceStats(req) => self.presence(id, req.channel, true),
            Method::History(req) => self.history(id, req),
            // No RPC handler is configured: 108 (docs/protocol.md).
            Method::Rpc(_) => self.error(id, ErrorCode::NotAvailable),
            Method::Refresh(req) => self.refresh(id, req),
            Method::SubRefresh(req) => self.sub_refresh(id, req),
            // Refused by the state machine before they are queued.
            Method::Send(_) | Method::Ping | Method::Pong | Method::Unknown => {
                self.close(Disconnect::BAD_REQUEST)
            }
        }
    }

    /// Continues a command with the outcome it waited for.
    fn resume(&mut self, step: Step, outcome: Outcome, now: Now) {
        match (step, outcome) {
            (Step::Connect(connecting), outcome) => self.connect_resumed(*connecting, outcome, now),
            (
                Step::Subscribe {
                    id,
                    req,
                    plan: None,
                },
                Outcome::SubscriptionVerified(checked),
            ) => self.subscribe_checked(id, *req, Some(checked), now),
            (
                Step::Subscribe {
                    id,
                    plan: Some(plan),
                    ..
                },
                Outcome::Subscribed(result),
            ) => self.subscribed(id, *plan, result),
            (Step::Publish { id }, Outcome::Published(result)) => match result {
                Ok(()) => self.reply(id, CommandResult::Publish),
                Err(e) => self.error(id, engine_code(&e)),
            },
            (Step::Presence { id }, Outcome::Presence(result)) => match result {
                Ok(result) => self.reply(id, result),
                Err(e) => self.error(id, engine_code(&e)),
            },
            (Step::History { id }, Outcome::History(result)) => match result {
                Ok(page) => self.reply(
                    id,
                    CommandResult::History(HistoryResult {
                        publications: page.publications,
                        epoch: page.position.epoch,
                        offset: page.position.offset,
                    }),
                ),
                Err(e) => self.error(id, engine_code(&e)),
            },
            (Step::Refresh { id, token }, Outcome::Refreshed { checked, revoked }) => {
                self.refreshed(id, token, checked, revoked, now)
            }
            (Step::SubRefresh { id, channel }, Outcome::SubscriptionVerified(checked)) => {
                self.sub_refreshed(id, &channel, checked, now)
            }
            (_, outcome) => {
                // An outcome of the wrong kind for the step: a driver bug.
                warn!(client = %self.client, ?outcome, "unexpected effect outcome");
                self.close(Disconnect::INTERNAL);
            }
        }
    }

    // ---- connect ----

    fn connect(&mut self, id: u32, mut req: ConnectRequest, now: Now) {
        let bearer = self.upgrade_token.take();
        let token = match std::mem::take(&mut req.token) {
            token if token.is_empty() => bearer.unwrap_or_default(),
            token => token,
        };
        let connecting = Connecting {
            id,
            req,
            token,
            claims: None,
            expires_at: None,
            plans: Vec::new(),
            results: Vec::new(),
        };
        if connecting.token.is_empty() {
            if let Some(identity) = &self.tls_identity {
                // Possession of the certificate's key proved who this is.
                self.user = identity.clone();
            } else if !(self.config.insecure || self.config.allow_anonymous_connect_without_token) {
                debug!(client = %self.client, "connect without credentials");
                return self.close(Disconnect::BAD_REQUEST);
            }
            return self.connect_as(connecting, now);
        }
        let token = connecting.token.clone();
        self.wait(
            Effect::VerifyConnection { token },
            Step::Connect(Box::new(connecting)),
        );
    }

    fn connect_resumed(&mut self, connecting: Connecting, outcome: Outcome, now: Now) {
        match outcome {
            Outcome::Verified(checked) => self.connect_checked(connecting, checked, now),
            Outcome::Registered(true) => self.connect_registered(connecting),
            Outcome::Registered(false) => self.close(Disconnect::CONNECTION_LIMIT),
            Outcome::Admitted(admitted) => self.connect_admitted(connecting, admitted, now),
            Outcome::Subscribed(result) => {
                let mut connecting = connecting;
                connecting.results.push(result);
                self.connect_subscribe_next(connecting, now);
            }
            outcome => {
                warn!(client = %self.client, ?outcome, "unexpected effect outcome at connect");
                self.close(Disconnect::INTERNAL);
            }
        }
    }

    fn connect_checked(
        &mut self,
        mut connecting: Connecting,
        checked: Result<Principal, TokenError>,
        now: Now,
    ) {
        let principal = match checked {
            Ok(principal) => principal,
            Err(e) => {
                metrics::auth_failure(&e);
                match codes::token(Stage::Connect, &e) {
                    Wire::Error(code) => {
                        if code == ErrorCode::Internal {
                            info!(client = %self.client, "connection credentials cannot be checked now");
                        }
                        self.state.connect_failed();
                        self.error(connecting.id, code);
                    }
                    Wire::Close(d) => {
                        warn!(client = %self.client, reason = %e, "connection token rejected");
                        self.close(d);
                    }
                }
                return;
            }
        };
        if principal.introspected {
            self.introspected_token = Some(std::mem::take(&mut connecting.token));
        }
        self.granted = principal.channels.into_iter().collect();
        connecting.claims = Some(principal.claims);
        self.connect_as(connecting, now);
    }

    /// Connect with checked credentials (`claims` None: no token).
    fn connect_as(&mut self, mut connecting: Connecting, now: Now) {
        let expires_at = connecting
            .claims
            .as_ref()
            .and_then(ConnectionClaims::expires_at);
        if expires_at.is_some_and(|at| at <= now.unix) {
            self.state.connect_failed();
            return self.error(connecting.id, ErrorCode::TokenExpired);
        }
        connecting.expires_at = expires_at;
        if let Some(c) = &connecting.claims {
            self.user = c.user.clone();
            self.conn_info = c.info.clone();
            self.token_id = c.jti.clone();
            self.issued_at = c.iat;
        }
        let user = self.user.clone();
        self.wait(
            Effect::Register { user },
            Step::Connect(Box::new(connecting)),
        );
    }

    fn connect_registered(&mut self, mut connecting: Connecting) {
        self.registered = Some(self.user.clone());
        metrics::METRICS.connections_accepted.inc();
        // Server-side subscriptions: `subs` takes precedence over `channels`.
        if let Some(c) = &connecting.claims {
            let mut wanted: Vec<(String, Option<SubOptions>)> = c
                .subs
                .iter()
                .map(|(ch, o)| (ch.clone(), Some(o.clone())))
                .collect();
            for ch in &c.channels {
                if !c.subs.contains_key(ch) {
                    wanted.push((ch.clone(), None));
                }
            }
            for (channel, sub_options) in wanted {
                let requested = connecting.req.subs.get(&channel).cloned();
                match self.server_side_plan(&channel, sub_options, requested.as_ref()) {
                    Ok(plan) => connecting.plans.push(plan),
                    Err(code) => {
                        for plan in &connecting.plans {
                            self.state.remove(&plan.channel);
                        }
                        self.state.connect_failed();
                        return self.error(connecting.id, code);
                    }
                }
            }
        }
        let limited = self.config.user_connection_limit > 0 && !self.user.is_empty();
        let user_entry = limited.then(|| self.info_with(None));
        let revocation = connecting.claims.as_ref().map(|_| Revocation {
            token_id: self.token_id.clone(),
            user: self.user.clone(),
            issued_at: self.issued_at,
        });
        self.wait(
            Effect::Admit {
                user_entry,
                revocation,
            },
            Step::Connect(Box::new(connecting)),
        );
    }

    fn connect_admitted(
        &mut self,
        connecting: Connecting,
        admitted: Result<(), Refused>,
        now: Now,
    ) {
        match admitted {
            Ok(()) => self.connect_subscribe_next(connecting, now),
            Err(Refused::Revoked) => {
                warn!(client = %self.client, "connection token revoked");
                self.close(Disconnect::INVALID_TOKEN);
            }
            Err(Refused::UserLimit) => {
                info!(client = %self.client, "user connection limit reached");
                self.close(Disconnect::CONNECTION_LIMIT);
            }
            Err(Refused::Engine(e)) => {
                for plan in &connecting.plans {
                    self.state.remove(&plan.channel);
                }
                self.state.connect_failed();
                self.error(connecting.id, engine_code(&e));
            }
        }
    }

    /// Subscribes the next server-side plan, or answers the connect when
    /// all are done.
    fn connect_subscribe_next(&mut self, connecting: Connecting, now: Now) {
        if let Some(plan) = connecting.plans.get(connecting.results.len()).cloned() {
            return self.wait(
                Effect::Subscribe { plan },
                Step::Connect(Box::new(connecting)),
            );
        }
        let Connecting {
            id,
            plans,
            results,
            expires_at,
            ..
        } = connecting;
        let mut subs = BTreeMap::new();
        let mut live = Vec::new();
        let mut failed = None;
        for (plan, result) in plans.into_iter().zip(results) {
            match result {
                Ok((result, position)) => {
                    self.add_subscription(&plan, true);
                    subs.insert(plan.channel.clone(), result);
                    live.push((plan.channel, position));
                }
                Err(code) => {
                    warn!(client = %self.client, code = code.code(), "server-side subscription failed");
                    self.state.remove(&plan.channel);
                    self.chan_info.remove(&plan.channel);
                    failed.get_or_insert(code);
                }
            }
        }
        if let Some(code) = failed {
            // The connect fails as a whole: what succeeded is undone, the
            // client is told (100 is temporary: the SDK connects again).
            for (channel, _) in live {
                self.drop_subscription(&channel);
            }
            self.state.connect_failed();
            return self.error(id, code);
        }
        self.state.connected(expires_at);
        self.timers.stop(Timer::Handshake);
        // Whole seconds on the wire: round a sub-second interval up so the
        // client's no-ping timer is never shorter than ours.
        let ping = self
            .config
            .ping_interval
            .as_millis()
            .div_ceil(1000)
            .min(u128::from(u32::MAX)) as u32;
        let result = ConnectResult {
            client: self.client.clone(),
            version: self.version.to_owned(),
            expires: expires_at.is_some(),
            ttl: ttl_from(expires_at, now.unix),
            data: None,
            subs,
            ping,
            pong: ping > 0 && !self.config.pong_timeout.is_zero(),
        };
        self.reply(id, CommandResult::Connect(result));
        for (channel, position) in live {
            self.actions.push_back(Action::GoLive { channel, position });
        }
        debug!(client = %self.client, user = %self.user, "connected");
        self.start_timers(now);
    }

    fn server_side_plan(
        &mut self,
        channel: &str,
        sub_options: Option<SubOptions>,
        requested: Option<&SubscribeRequest>,
    ) -> Result<SubscribePlan, ErrorCode> {
        let policy = self.policy.clone();
        let resolved = policy.resolve(channel).map_err(ChannelError::code)?;
        let mut options = resolved.options.clone();
        let mut chan_info = None;
        let mut data = None;
        if let Some(o) = sub_options {
            options = o.override_.apply(&options);
            chan_info = o.info;
            data = o.data;
        }
        self.state.begin_subscribe(channel, true)?;
        let flags = SubscribeFlags {
            recover: requested.is_some_and(|r| r.recover),
            position: requested
                .map(|r| StreamPosition {
                    offset: r.offset,
                    epoch: r.epoch.clone(),
                })
                .unwrap_or_default(),
            history_access: true,
            presence_access: true,
            ..Default::default()
        };
        let info = self.info_with(chan_info.clone());
        let meta_ttl = policy.history_meta_ttl(&resolved);
        let mut plan = SubscribePlan::new(channel.to_owned(), &options, meta_ttl, flags, info);
        plan.data = data;
        self.chan_info.insert(channel.to_owned(), chan_info);
        Ok(plan)
    }

    // ---- subscribe / unsubscribe ----

    fn subscribe(&mut self, id: u32, req: SubscribeRequest, now: Now) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        if let Err(e) = self.policy.resolve(&req.channel) {
            return self.error(id, e.code());
        }
        if let Err(code) = self.state.begin_subscribe(&req.channel, false) {
            return self.error(id, code);
        }
        if req.token.is_empty() {
            return self.subscribe_checked(id, req, None, now);
        }
        let token = req.token.clone();
        self.wait(
            Effect::VerifySubscription { token },
            Step::Subscribe {
                id,
                req: Box::new(req),
                plan: None,
            },
        );
    }

    /// Continues subscribe once the subscription token, if any, was checked.
    fn subscribe_checked(
        &mut self,
        id: u32,
        req: SubscribeRequest,
        checked: Option<Result<SubscriptionClaims, TokenError>>,
        now: Now,
    ) {
        let policy = self.policy.clone();
        let resolved = match policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => {
                self.state.remove(&req.channel);
                return self.error(id, e.code());
            }
        };
        let insecure = self.config.insecure;
        let mut options = resolved.options.clone();
        let mut chan_info = None;
        let mut data = None;
        let mut expires_at = None;
        match checked {
            Some(Ok(claims)) => {
                if !self.claims_match(&claims, &req.channel) {
                    warn!(client = %self.client, "subscription token for another user, channel or client");
                    self.state.remove(&req.channel);
                    return self.close(Disconnect::INVALID_TOKEN);
                }
                options = claims.override_.apply(&options);
                chan_info = claims.info.clone();
                data = claims.data.clone();
                expires_at = claims.expires_at();
            }
            Some(Err(e)) => {
                debug!(client = %self.client, reason = %e, "subscription token rejected");
                self.state.remove(&req.channel);
                return self.subscription_token_refused(id, Stage::Subscribe, &e);
            }
            None => {
                let allowed = insecure
                    || self.granted.contains(&req.channel)
                    || (!resolved.private && policy.can_subscribe(&resolved, &self.user));
                if !allowed {
                    self.state.remove(&req.channel);
                    return self.error(id, ErrorCode::PermissionDenied);
                }
            }
        }
        if expires_at.is_some_and(|at| at <= now.unix) {
            self.state.remove(&req.channel);
            return self.error(id, ErrorCode::TokenExpired);
        }
        let flags = SubscribeFlags {
            recover: req.recover,
            position: StreamPosition {
                offset: req.offset,
                epoch: req.epoch.clone(),
            },
            recoverable: req.recoverable,
            positioned: req.positioned,
            join_leave: req.join_leave,
            reject_unrecovered: req.flag & SUBSCRIBE_FLAG_REJECT_UNRECOVERED != 0,
            history_access: insecure || policy.can_history(&resolved, &self.user, true),
            presence_access: insecure || policy.can_presence(&resolved, &self.user, true),
        };
        let meta_ttl = policy.history_meta_ttl(&resolved);
        let info = self.info_with(chan_info.clone());
        let mut plan = SubscribePlan::new(req.channel.clone(), &options, meta_ttl, flags, info);
        plan.expires_at = expires_at;
        plan.data = data;
        self.chan_info.insert(req.channel.clone(), chan_info);
        self.wait(
            Effect::Subscribe { plan: plan.clone() },
            Step::Subscribe {
                id,
                req: Box::new(req),
                plan: Some(Box::new(plan)),
            },
        );
    }

    fn subscribed(
        &mut self,
        id: u32,
        plan: SubscribePlan,
        result: Result<(SubscribeResult, Option<Position>), ErrorCode>,
    ) {
        match result {
            Ok((result, position)) => {
                if self.state.subscription(&plan.channel).is_none() {
                    // Dropped while subscribing (a server unsubscribe): undo.
                    self.actions.push_back(Action::Spawn(Effect::Detach {
                        channel: plan.channel,
                    }));
                    return self.error(id, ErrorCode::Internal);
                }
                self.add_subscription(&plan, false);
                self.reply(id, CommandResult::Subscribe(result));
                self.actions.push_back(Action::GoLive {
                    channel: plan.channel.clone(),
                    position,
                });
                debug!(client = %self.client, channel = %plan.channel, "subscribed");
            }
            Err(code) => {
                self.state.remove(&plan.channel);
                self.chan_info.remove(&plan.channel);
                self.error(id, code);
            }
        }
    }

    fn unsubscribe(&mut self, id: u32, req: UnsubscribeRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        self.drop_subscription(&req.channel);
        self.reply(id, CommandResult::Unsubscribe);
    }

    /// A subscription the server adds after connect (control): announced
    /// with a `subscribe` push once the node is subscribed. It does not hold
    /// up the client's commands.
    fn server_subscribe(&mut self, channel: String, info: Option<RawJson>, data: Option<RawJson>) {
        if self.state.subscription(&channel).is_some() {
            return;
        }
        let options = SubOptions {
            info,
            data,
            ..Default::default()
        };
        let plan = match self.server_side_plan(&channel, Some(options), None) {
            Ok(plan) => plan,
            Err(code) => {
                warn!(client = %self.client, code = code.code(), "server subscribe refused");
                return;
            }
        };
        let id = self.effect_id();
        self.server_subscribes.insert(id, plan.clone());
        self.actions.push_back(Action::Run {
            id,
            effect: Effect::Subscribe { plan },
        });
    }

    fn server_subscribed(
        &mut self,
        plan: SubscribePlan,
        result: Result<(SubscribeResult, Option<Position>), ErrorCode>,
    ) {
        match result {
            Ok((result, position)) => {
                if self.state.subscription(&plan.channel).is_none() {
                    self.actions.push_back(Action::Spawn(Effect::Detach {
                        channel: plan.channel,
                    }));
                    return;
                }
                self.add_subscription(&plan, true);
                self.send(Reply::Push(Push {
                    channel: plan.channel.clone(),
                    body: PushBody::Subscribe(SubscribePush {
                        recoverable: result.recoverable,
                        epoch: result.epoch,
                        offset: result.offset,
                        positioned: result.positioned,
                        data: result.data,
                    }),
                }));
                self.actions.push_back(Action::GoLive {
                    channel: plan.channel,
                    position,
                });
            }
            Err(code) => {
                warn!(client = %self.client, code = code.code(), "server subscribe failed");
                self.state.remove(&plan.channel);
                self.chan_info.remove(&plan.channel);
            }
        }
    }

    // ---- publish / presence / history ----

    fn publish(&mut self, id: u32, req: PublishRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        let policy = self.policy.clone();
        let resolved = match policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => return self.error(id, e.code()),
        };
        let Some(data) = req.data.filter(|d| !d.is_null()) else {
            return self.error(id, ErrorCode::BadRequest);
        };
        let subscribed = self.state.is_subscribed(&req.channel);
        if !self.config.insecure && !policy.can_publish(&resolved, &self.user, subscribed) {
            return self.error(id, ErrorCode::PermissionDenied);
        }
        let history = plan::history_options(&policy, &resolved);
        let publication = Publication {
            data,
            info: Some(self.info_with(self.chan_info.get(&req.channel).cloned().flatten())),
            offset: 0,
            tags: Default::default(),
        };
        let options = PublishOptions {
            history,
            idempotency_key: None,
        };
        self.wait(
            Effect::Publish {
                channel: req.channel,
                publication,
                options,
            },
            Step::Publish { id },
        );
    }

    fn presence(&mut self, id: u32, channel: String, stats: bool) {
        if channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        let policy = self.policy.clone();
        let resolved = match policy.resolve(&channel) {
            Ok(r) => r,
            Err(e) => return self.error(id, e.code()),
        };
        if !resolved.options.presence {
            return self.error(id, ErrorCode::NotAvailable);
        }
        let subscribed = self.state.is_subscribed(&channel);
        if !self.config.insecure && !policy.can_presence(&resolved, &self.user, subscribed) {
            return self.error(id, ErrorCode::PermissionDenied);
        }
        self.wait(Effect::Presence { channel, stats }, Step::Presence { id });
    }

    fn history(&mut self, id: u32, req: HistoryRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        let policy = self.policy.clone();
        let resolved = match policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => return self.error(id, e.code()),
        };
        if !resolved.options.history_enabled() {
            return self.error(id, ErrorCode::NotAvailable);
        }
        let subscribed = self.state.is_subscribed(&req.channel);
        if !self.config.insecure && !policy.can_history(&resolved, &self.user, subscribed) {
            return self.error(id, ErrorCode::PermissionDenied);
        }
        if req.reverse && req.since.as_ref().is_some_and(|s| s.offset == 0) {
            return self.error(id, ErrorCode::BadRequest);
        }
        let query = HistoryQuery {
            since: req.since,
            limit: Some(plan::history_limit(&self.config, req.limit.into())),
            reverse: req.reverse,
            meta_ttl: policy.history_meta_ttl(&resolved),
        };
        self.wait(
            Effect::History {
                channel: req.channel,
                query,
            },
            Step::History { id },
        );
    }

    // ---- refresh ----

    fn refresh(&mut self, id: u32, req: RefreshRequest) {
        if req.token.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        let token = req.token;
        self.wait(
            Effect::Refresh {
                token: token.clone(),
            },
            Step::Refresh { id, token },
        );
    }

    fn refreshed(
        &mut self,
        id: u32,
        token: String,
        checked: Result<Principal, TokenError>,
        revoked: Result<bool, BusError>,
        now: Now,
    ) {
        let principal = match checked {
            Ok(principal) => principal,
            Err(e) => {
                metrics::auth_failure(&e);
                return match codes::token(Stage::Refresh, &e) {
                    // The client retries; the connection lives until its
                    // expiry grace runs out.
                    Wire::Error(code) => self.error(id, code),
                    Wire::Close(d) => {
                        if d != Disconnect::EXPIRED {
                            warn!(client = %self.client, reason = %e, "refresh token rejected");
                        }
                        self.close(d)
                    }
                };
            }
        };
        if principal.claims.user != self.user {
            warn!(client = %self.client, "refresh token for another user");
            return self.close(Disconnect::INVALID_TOKEN);
        }
        match revoked {
            Ok(false) => {}
            Ok(true) => {
                warn!(client = %self.client, "refresh token revoked");
                return self.close(Disconnect::INVALID_TOKEN);
            }
            Err(e) => return self.error(id, engine_code(&e)),
        }
        let claims = principal.claims;
        let expires_at = claims.expires_at();
        if claims.info.is_some() {
            self.conn_info = claims.info;
        }
        self.token_id = claims.jti;
        self.issued_at = claims.iat;
        self.introspected_token = principal.introspected.then_some(token);
        self.granted = principal.channels.into_iter().collect();
        self.state.refreshed(expires_at);
        self.schedule_expiry(now);
        let result = RefreshResult {
            client: self.client.clone(),
            version: self.version.to_owned(),
            expires: expires_at.is_some(),
            ttl: ttl_from(expires_at, now.unix),
        };
        self.reply(id, CommandResult::Refresh(result));
    }

    /// `sub_refresh` checks its token with the keys at hand and never waits
    /// for a refetch ([`Effect::CheckSubscription`]).
    fn sub_refresh(&mut self, id: u32, req: SubRefreshRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        if !self.state.is_subscribed(&req.channel) {
            return self.error(id, ErrorCode::PermissionDenied);
        }
        if req.token.is_empty() {
            return self.error(id, ErrorCode::BadRequest);
        }
        self.wait(
            Effect::CheckSubscription { token: req.token },
            Step::SubRefresh {
                id,
                channel: req.channel,
            },
        );
    }

    fn sub_refreshed(
        &mut self,
        id: u32,
        channel: &str,
        checked: Result<SubscriptionClaims, TokenError>,
        now: Now,
    ) {
        let claims = match checked {
            Ok(claims) => claims,
            Err(e) => {
                debug!(client = %self.client, reason = %e, "sub_refresh token rejected");
                return self.subscription_token_refused(id, Stage::SubRefresh, &e);
            }
        };
        if !self.claims_match(&claims, channel) {
            return self.close(Disconnect::INVALID_TOKEN);
        }
        let expires_at = claims.expires_at();
        self.state.set_subscription_expiry(channel, expires_at);
        let result = SubRefreshResult {
            expires: expires_at.is_some(),
            ttl: ttl_from(expires_at, now.unix),
        };
        self.reply(id, CommandResult::SubRefresh(result));
    }
}

/// Helpers: output, subscriptions, timers.
impl Machine {
    fn effect_id(&mut self) -> EffectId {
        let id = self.next_effect;
        self.next_effect += 1;
        id
    }

    /// Runs `effect` and parks the command at `step` until its outcome.
    fn wait(&mut self, effect: Effect, step: Step) {
        let waiting = self.effect_id();
        self.running = Some(Running { waiting, step });
        self.actions.push_back(Action::Run {
            id: waiting,
            effect,
        });
    }

    fn send(&mut self, reply: Reply) {
        if self.closing {
            return;
        }
        self.actions.push_back(Action::Send(reply));
    }

    fn reply(&mut self, id: u32, result: CommandResult) {
        self.send(Reply::Result { id, result });
    }

    fn error(&mut self, id: u32, code: ErrorCode) {
        debug!(client = %self.client, code = code.code(), "command error");
        metrics::reply_error(self.current.0, code);
        self.send(Reply::Error {
            id,
            error: ErrorReply::from(code),
        });
    }

    fn close(&mut self, disconnect: Disconnect) {
        if self.closing {
            return;
        }
        debug!(client = %self.client, code = disconnect.code, reason = %disconnect.reason, "disconnecting");
        self.closing = true;
        self.actions.push_back(Action::Close(disconnect));
    }

    /// A refused subscription token: the wire code of the table, and a
    /// background refetch when the `kid` is unknown (the refusal itself is
    /// temporary, the SDK retries).
    fn subscription_token_refused(&mut self, id: u32, stage: Stage, error: &TokenError) {
        metrics::auth_failure(error);
        if matches!(error, TokenError::UnknownKey) {
            self.actions
                .push_back(Action::Spawn(Effect::RefetchSubscriptionKeys));
        }
        match codes::token(stage, error) {
            Wire::Error(code) => self.error(id, code),
            Wire::Close(d) => self.close(d),
        }
    }

    fn claims_match(&self, claims: &SubscriptionClaims, channel: &str) -> bool {
        claims.user == self.user
            && claims.channel == channel
            && claims.client.as_ref().is_none_or(|c| *c == self.client)
    }

    fn info_with(&self, chan_info: Option<RawJson>) -> ClientInfo {
        ClientInfo {
            user: self.user.clone(),
            client: self.client.clone(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }

    /// The key of this connection's entry in the cluster-wide count of its
    /// user's connections, when there is one.
    fn user_entry_key(&self) -> Option<String> {
        let counted = self.config.user_connection_limit > 0
            && self.registered.as_ref().is_some_and(|u| !u.is_empty());
        counted.then(|| plan::user_connections_key(&self.user))
    }

    fn add_subscription(&mut self, plan: &SubscribePlan, server_side: bool) {
        self.state.subscribed(
            &plan.channel,
            SubscriptionState {
                subscribed: true,
                expires_at: plan.expires_at,
                server_side,
                presence: plan.options.presence,
                join_leave: plan.options.join_leave,
            },
        );
    }

    /// Ends a subscription from the server side with an unsubscribe push.
    fn server_unsubscribe(&mut self, channel: &str, code: UnsubscribeCode) {
        if self.drop_subscription(channel).is_none() {
            return;
        }
        self.send(Reply::Push(Push {
            channel: channel.to_owned(),
            body: PushBody::Unsubscribe(UnsubscribePush {
                code: code.code(),
                reason: code.reason().to_owned(),
            }),
        }));
    }

    /// Removes a subscription here and (an effect) from the node.
    fn drop_subscription(&mut self, channel: &str) -> Option<SubscriptionState> {
        let state = self.state.remove(channel)?;
        let chan_info = self.chan_info.remove(channel).flatten();
        let info = self.info_with(chan_info);
        self.actions.push_back(Action::Spawn(Effect::Leave {
            channel: channel.to_owned(),
            state: state.clone(),
            info,
        }));
        Some(state)
    }

    fn start_timers(&mut self, now: Now) {
        let interval = self.config.ping_interval;
        if !interval.is_zero() {
            // The first ping at a point in [interval/2, interval).
            let half = interval / 2;
            self.timers
                .set(Timer::Ping, now.at + half + half.mul_f64(self.ping_jitter));
        }
        let tick = self.config.presence_update_interval;
        if !tick.is_zero() {
            self.timers.set(Timer::Periodic, now.at + tick);
        }
        self.schedule_expiry(now);
    }

    fn ping(&mut self, now: Now) {
        let timeout = self.config.pong_timeout;
        if !timeout.is_zero() {
            if !self.state.ping_sent(now.at) {
                return self.close(Disconnect::NO_PONG);
            }
            self.timers.set(Timer::Pong, now.at + timeout);
        }
        self.send(Reply::Ping);
        self.timers
            .set(Timer::Ping, now.at + self.config.ping_interval);
    }

    fn schedule_expiry(&mut self, now: Now) {
        let Some(at) = self.state.expires_at() else {
            return self.timers.stop(Timer::Expiry);
        };
        let grace = self.config.expired_close_delay;
        let due = at.saturating_add(grace.as_secs()).saturating_sub(now.unix);
        self.timers.set(
            Timer::Expiry,
            now.at + Duration::from_secs(due) + EXPIRY_SLACK,
        );
    }

    fn expired_now(&self, now: Now) -> bool {
        self.state.expires_at().is_some_and(|at| at <= now.unix)
    }

    /// Presence refresh, subscription expiry and the introspection re-check,
    /// every `presence_update_interval`.
    fn periodic(&mut self, now: Now) {
        self.recheck_introspected(now);
        let grace = self.config.expired_sub_close_delay;
        for channel in self.state.expired_subscriptions(now.unix, grace) {
            let server_side = self
                .state
                .subscription(&channel)
                .is_some_and(|s| s.server_side);
            if server_side {
                return self.close(Disconnect::SUBSCRIPTION_EXPIRED);
            }
            self.server_unsubscribe(&channel, UnsubscribeCode::Expired);
        }
        let mut entries: Vec<(String, ClientInfo)> = self
            .state
            .subscriptions()
            .filter(|(_, s)| s.subscribed && s.presence)
            .map(|(c, _)| {
                (
                    c.clone(),
                    self.info_with(self.chan_info.get(c).cloned().flatten()),
                )
            })
            .collect();
        if let Some(key) = self.user_entry_key() {
            entries.push((key, self.info_with(None)));
        }
        if !entries.is_empty() {
            let ttl = plan::presence_ttl(&self.config);
            self.actions
                .push_back(Action::Spawn(Effect::RefreshPresence { entries, ttl }));
        }
    }

    /// Asks again whether an introspected token is active (the cache answers
    /// most of the time): revoked closes the connection; an unreachable
    /// server leaves it to its expiry.
    fn recheck_introspected(&mut self, now: Now) {
        let Some(token) = self.introspected_token.clone() else {
            return;
        };
        // Past its expiry the token is inactive by definition; the expiry
        // grace (3005, the SDK refreshes) decides, not a revocation (3500).
        if self.expired_now(now) || self.recheck.is_some() {
            return;
        }
        let id = self.effect_id();
        self.recheck = Some((id, token.clone()));
        self.actions.push_back(Action::Run {
            id,
            effect: Effect::StillActive { token },
        });
    }

    fn rechecked(&mut self, token: &str, active: Option<bool>, now: Now) {
        // Unless a refresh replaced the token meanwhile.
        if active == Some(false)
            && self.introspected_token.as_deref() == Some(token)
            && !self.expired_now(now)
        {
            warn!(client = %self.client, "introspected token no longer active");
            metrics::auth_failure(&TokenError::Invalid(InvalidReason::Inactive));
            self.close(Disconnect::INVALID_TOKEN);
        }
    }
}

/// The wire code of an engine error, logging what is not a lost position.
fn engine_code(error: &BusError) -> ErrorCode {
    let code = codes::engine(error);
    if code == ErrorCode::Internal {
        warn!(error = %error, "engine call failed");
    }
    code
}

fn ttl_from(expires_at: Option<u64>, now_unix: u64) -> u32 {
    expires_at
        .map(|at| at.saturating_sub(now_unix).min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

/// The `method` label of a client command.
pub(crate) fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Connect(_) => "connect",
        Method::Subscribe(_) => "subscribe",
        Method::Unsubscribe(_) => "unsubscribe",
        Method::Publish(_) => "publish",
        Method::Presence(_) => "presence",
        Method::PresenceStats(_) => "presence_stats",
        Method::History(_) => "history",
        Method::Ping => "ping",
        Method::Pong => "client_pong",
        Method::Send(_) => "send",
        Method::Rpc(_) => "rpc",
        Method::Refresh(_) => "refresh",
        Method::SubRefresh(_) => "sub_refresh",
        Method::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests;
