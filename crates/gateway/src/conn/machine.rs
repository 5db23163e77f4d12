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

use herald_auth::{ChannelPolicy, ResolvedChannel, SubscriptionClaims, TokenError};
use herald_bus::{BusError, ControlCommand};
use herald_protocol::{
    ClientInfo, Command, CommandResult, Disconnect, ErrorCode, ErrorReply, HistoryResult, Method,
    Push, PushBody, RawJson, RefreshPush, Reply, SubscribeRequest, UnsubscribeCode,
    UnsubscribePush,
};
use tracing::{debug, info, warn};

use super::rate::RateLimiter;
use super::state::{Admission, ConnectionState, Phase, SubscriptionState};
use super::timer::{Timer, TimerTable};
use herald_proxy::RpcConfig;

use crate::codes::{self, Stage, Wire};
use crate::config::ClientConfig;
use crate::metrics;
use crate::node::plan::{self, SubscribePlan};

mod commands;
mod connect;
mod effect;
mod proxied;
mod timers;

use self::connect::Connecting;
pub(crate) use self::effect::{Action, Effect, EffectId, Now, Outcome, Refused, Revocation};

/// Commands waiting behind a running one; more is a flood (3013).
pub(crate) const MAX_QUEUED_COMMANDS: usize = 1024;

/// How far past a deadline the expiry check runs, so it sees it passed.
const EXPIRY_SLACK: Duration = Duration::from_millis(50);

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
    /// The user of the `client.user_id_http_header` header of the request
    /// that opened the connection: the user when connect has no token.
    pub(crate) header_user: Option<String>,
    /// The token of the upgrade's `Authorization: Bearer` header.
    pub(crate) upgrade_token: Option<String>,
    /// Where in `[interval/2, interval)` the first ping goes, as a fraction
    /// in `[0, 1)`: a reconnect wave must not ping in lockstep.
    pub(crate) ping_jitter: f64,
    /// The client takes the data of binary channels
    /// (`publication_data_format = "binary"`) as bytes: it speaks protobuf.
    /// Without it those channels answer 108.
    pub(crate) takes_binary_data: bool,
    /// The server only pushes (`uni_*` transports): the connect result goes
    /// out as a connect push, a failed connect as a disconnect, no pong is
    /// expected, and a moved expiry is told with a refresh push.
    pub(crate) unidirectional: bool,
    /// The connection's session id in the connect result (transports that
    /// address a connection by it); empty for WebSocket.
    pub(crate) session: String,
    /// This node's uid in the connect result (bidirectional emulation:
    /// where `/emulation` requests go); empty otherwise.
    pub(crate) node: String,
    /// Which RPC methods go to the backend (`rpc`); None: no RPC proxy,
    /// every `rpc` is 108.
    pub(crate) rpc: Option<Arc<RpcConfig>>,
    /// A connect without a token asks the backend (`client.proxy.connect`).
    pub(crate) connect_proxy: bool,
    /// The connection's expiry asks the backend (`client.proxy.refresh`):
    /// the client is not told its expiry and may not `refresh`.
    pub(crate) refresh_proxy: bool,
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
    header_user: Option<String>,
    upgrade_token: Option<String>,
    takes_binary_data: bool,
    unidirectional: bool,
    session: String,
    node: String,
    rpc: Option<Arc<RpcConfig>>,
    connect_proxy: bool,
    refresh_proxy: bool,
    /// The connection's `meta` from the connect or refresh proxy: for
    /// proxies with `include_connection_meta`, never for the client.
    meta: Option<RawJson>,
    /// The `headers` of the connect command (`emulated_headers`).
    emulated_headers: Arc<BTreeMap<String, String>>,
    /// The refresh proxy call in flight.
    proxy_refresh: Option<EffectId>,
    /// sub_refresh proxy calls in flight, by effect: their channel.
    sub_refreshes: HashMap<EffectId, String>,
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
        /// A binary channel: the publications' data is bytes.
        binary: bool,
    },
    Refresh {
        id: u32,
        token: String,
    },
    SubRefresh {
        id: u32,
        channel: String,
    },
    Rpc {
        id: u32,
    },
    PublishProxied {
        id: u32,
        publish: Box<proxied::HeldPublish>,
    },
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
            header_user: setup.header_user,
            upgrade_token: setup.upgrade_token,
            takes_binary_data: setup.takes_binary_data,
            unidirectional: setup.unidirectional,
            session: setup.session,
            node: setup.node,
            rpc: setup.rpc,
            connect_proxy: setup.connect_proxy,
            refresh_proxy: setup.refresh_proxy,
            meta: None,
            emulated_headers: Arc::default(),
            proxy_refresh: None,
            sub_refreshes: HashMap::new(),
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
        let action = self.actions.pop_front();
        if action.is_none() {
            release_idle(&mut self.actions);
        }
        action
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

    /// The connection's user (`""` before connect, and for anonymous).
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The connection's `meta` (`include_connection_meta`).
    pub(crate) fn meta(&self) -> Option<&RawJson> {
        self.meta.as_ref()
    }

    /// The connect command's `headers` (`emulated_headers`).
    pub(crate) fn emulated_headers(&self) -> Arc<BTreeMap<String, String>> {
        self.emulated_headers.clone()
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
        if let Some(channel) = self.sub_refreshes.remove(&id) {
            if let Outcome::SubRefreshProxied(answer) = outcome {
                self.sub_refresh_proxied(&channel, answer);
            }
            return;
        }
        if self.proxy_refresh == Some(id) {
            self.proxy_refresh = None;
            if let Outcome::RefreshProxied(answer) = outcome {
                self.refresh_proxied(answer, now);
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
                if self.unidirectional {
                    // The client cannot ask: it is told.
                    self.send(Reply::Push(Push {
                        channel: String::new(),
                        body: PushBody::Refresh(RefreshPush {
                            expires: expire_at.is_some(),
                            ttl: ttl_from(expire_at, now.unix),
                        }),
                    }));
                }
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
                Timer::Expiry if self.refresh_proxy => self.ask_refresh(now),
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
                release_idle(&mut self.queue);
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
            Method::Rpc(req) => self.rpc(id, req),
            Method::Refresh(req) => self.refresh(id, req),
            Method::SubRefresh(req) => self.sub_refresh(id, req),
            Method::PayloadNotJson { method } => self.payload_not_json(id, method),
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
                    req,
                    plan: None,
                },
                Outcome::SubscribeProxied(answer),
            ) => self.subscribe_proxied(id, *req, answer, now),
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
            (Step::History { id, binary }, Outcome::History(result)) => match result {
                Ok(mut page) => {
                    if binary {
                        for p in &mut page.publications {
                            p.data.mark_binary();
                        }
                    }
                    self.reply(
                        id,
                        CommandResult::History(HistoryResult {
                            publications: page.publications,
                            epoch: page.position.epoch,
                            offset: page.position.offset,
                        }),
                    )
                }
                Err(e) => self.error(id, engine_code(&e)),
            },
            (Step::Refresh { id, token }, Outcome::Refreshed { checked, revoked }) => {
                self.refreshed(id, token, checked, revoked, now)
            }
            (Step::SubRefresh { id, channel }, Outcome::SubscriptionVerified(checked)) => {
                self.sub_refreshed(id, &channel, checked, now)
            }
            (Step::Rpc { id }, Outcome::Rpc(answer)) => self.rpc_answered(id, answer),
            (Step::PublishProxied { id, publish }, Outcome::PublishProxied(answer)) => {
                self.publish_proxied(id, *publish, answer)
            }
            (_, outcome) => {
                // An outcome of the wrong kind for the step: a driver bug.
                warn!(client = %self.client, ?outcome, "unexpected effect outcome");
                self.close(Disconnect::INTERNAL);
            }
        }
    }
}

/// Helpers: output and subscriptions.
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
        if self.unidirectional {
            // Its only command is the connect, and it cannot retry one:
            // the error becomes a disconnect.
            self.actions
                .push_back(Action::ConnectFailed { code: code.code() });
            return self.close(codes::unidirectional_disconnect(&self.config, code));
        }
        self.send(Reply::Error {
            id,
            error: ErrorReply::from(code),
        });
    }

    /// An error whose code the backend chose (a proxy's `error`).
    fn error_reply(&mut self, id: u32, error: ErrorReply) {
        debug!(client = %self.client, code = error.code, "backend error");
        metrics::reply_error_code(self.current.0, error.code);
        if self.unidirectional {
            self.actions
                .push_back(Action::ConnectFailed { code: error.code });
            let disconnect = codes::unidirectional_disconnect_for(&self.config, error.code);
            return self.close(disconnect);
        }
        self.send(Reply::Error { id, error });
    }

    fn close(&mut self, disconnect: Disconnect) {
        if self.closing {
            return;
        }
        let reported = matches!(self.actions.back(), Some(Action::ConnectFailed { .. }));
        if self.unidirectional && self.state.phase() != Phase::Connected && !reported {
            self.actions.push_back(Action::ConnectFailed {
                code: u32::from(disconnect.code),
            });
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

    /// Whether this client may use `channel`: a binary channel's data is
    /// bytes, which only a protobuf client takes (docs/protocol.md, "Protobuf").
    fn may_use(&self, channel: &ResolvedChannel<'_>) -> bool {
        self.takes_binary_data || !channel.options.binary_data()
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
}

/// Gives back an emptied queue's memory: most connections sit idle with
/// nothing queued, and their queues must not keep the capacity a burst of
/// commands or actions grew them to.
fn release_idle<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
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
        Method::Pong => "client_pong",
        other => other.name(),
    }
}

#[cfg(test)]
mod tests;
