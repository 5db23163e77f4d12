//! One actix actor per WebSocket connection. It moves frames and timers in
//! and out of the ConnectionState, runs one command at a time in arrival
//! order (so commands that follow `connect` in the same frame wait for its
//! reply), and writes only into its own bounded Outbox.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use herald_auth::{ChannelError, ConnectionClaims, SubscriptionClaims, TokenError};
use herald_bus::{ControlCommand, HistoryQuery, PublishOptions};
use herald_identity::Principal;
use herald_protocol::{
    decode_frame, ClientInfo, Command, CommandResult, ConnectRequest, ConnectResult, Disconnect,
    ErrorCode, ErrorReply, HistoryRequest, HistoryResult, Method, PresenceResult,
    PresenceStatsResult, Publication, PublishRequest, Push, PushBody, RawJson, RefreshRequest,
    RefreshResult, Reply, StreamPosition, SubRefreshRequest, SubRefreshResult, SubscribePush,
    SubscribeRequest, UnsubscribeCode, UnsubscribePush, UnsubscribeRequest,
    SUBSCRIBE_FLAG_REJECT_UNRECOVERED,
};
use rand::Rng;
use tracing::{debug, info, warn};

use crate::connection::{Admission, ConnectionState, Phase, SubscriptionState};
use crate::hub::{GapListener, Subscriber};
use crate::metrics;
use crate::node::{self, unix_now, Control, Node};
use crate::outbox::{Outbox, Pushed};
use crate::socket::Inbound;
use crate::subscribe::{self, engine_error, SubscribeFlags, SubscribePlan};
use crate::wsframe::TextFrame;

/// Commands waiting behind a running one; more is a flood.
const MAX_QUEUED_COMMANDS: usize = 1024;

type Work = Pin<Box<dyn ActorFuture<Session, Output = ()>>>;

pub(crate) struct Session {
    id: u64,
    client: String,
    node: Arc<Node>,
    outbox: Arc<Outbox>,
    state: ConnectionState,
    queue: VecDeque<Command>,
    busy: bool,
    closing: bool,
    user: String,
    conn_info: Option<RawJson>,
    /// The user this session is registered under on the Node.
    registered: Option<String>,
    subscribers: HashMap<String, Arc<Subscriber>>,
    chan_info: HashMap<String, Option<RawJson>>,
    expiry_timer: Option<SpawnHandle>,
    gaps: Option<Arc<dyn GapListener>>,
    /// The command running now (metrics label) and when it started.
    current: (&'static str, Instant),
    /// `jti` and `iat` of the connection token in use (revocation).
    token_id: Option<String>,
    issued_at: Option<u64>,
    /// The verified client certificate's identity
    /// (`client.tls_identity_as_user`): the user when connect has no token.
    tls_identity: Option<String>,
    /// `client.command_rate_limit`: commands allowed now, and commands
    /// refused in a row.
    rate: Option<RateLimiter>,
    /// The token of the upgrade's `Authorization: Bearer` header, used when
    /// connect carries none.
    upgrade_token: Option<String>,
    /// Channels the credentials grant subscription to (introspection scopes).
    granted: HashSet<String>,
    /// The introspected token, re-checked while the connection lives so a
    /// revocation at the authorization server closes it.
    introspected_token: Option<String>,
}

/// A token bucket of `limit` commands per second (burst `limit`).
struct RateLimiter {
    limit: f64,
    tokens: f64,
    at: Instant,
    /// Commands refused with 111 since the last one allowed.
    refused: u32,
}

impl RateLimiter {
    fn new(limit: u32) -> Self {
        Self {
            limit: f64::from(limit),
            tokens: f64::from(limit),
            at: Instant::now(),
            refused: 0,
        }
    }

    /// True when one more command may run now.
    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.limit).min(self.limit);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// A client that keeps sending after a second's worth of refusals is
    /// not slowing down: it is disconnected.
    fn persistent(&self) -> bool {
        f64::from(self.refused) > self.limit.max(1.0)
    }
}

/// Sent by the Hub when a positioned subscription sees a gap.
#[derive(Message)]
#[rtype(result = "()")]
struct Gap(String);

struct GapToSession(Addr<Session>);

impl GapListener for GapToSession {
    fn on_gap(&self, channel: &str) {
        self.0.do_send(Gap(channel.to_owned()));
    }
}

impl Session {
    pub(crate) fn new(
        node: Arc<Node>,
        outbox: Arc<Outbox>,
        tls_identity: Option<String>,
        upgrade_token: Option<String>,
    ) -> Self {
        let channel_limit = node.client.channel_limit;
        let rate = (node.client.command_rate_limit > 0)
            .then(|| RateLimiter::new(node.client.command_rate_limit));
        Self {
            id: node.next_session_id(),
            client: uuid::Uuid::new_v4().to_string(),
            node,
            outbox,
            state: ConnectionState::new(channel_limit),
            queue: VecDeque::new(),
            busy: false,
            closing: false,
            user: String::new(),
            conn_info: None,
            registered: None,
            subscribers: HashMap::new(),
            chan_info: HashMap::new(),
            expiry_timer: None,
            gaps: None,
            current: ("connect", Instant::now()),
            token_id: None,
            issued_at: None,
            tls_identity,
            rate,
            upgrade_token,
            granted: HashSet::new(),
            introspected_token: None,
        }
    }

    // ---- output ----

    fn send(&mut self, ctx: &mut Context<Self>, reply: &Reply) {
        metrics::sent(frame_type(reply), 1);
        self.send_frame(ctx, TextFrame::new(&reply.encode()));
    }

    fn send_frame(&mut self, ctx: &mut Context<Self>, frame: TextFrame) {
        if self.closing {
            return;
        }
        match self.outbox.push(frame) {
            Pushed::Queued => {}
            Pushed::Overflow => {
                info!(client = %self.client, "disconnecting slow client");
                self.closing = true;
                ctx.stop();
            }
            Pushed::Closed => {
                self.closing = true;
                ctx.stop();
            }
        }
    }

    fn reply(&mut self, ctx: &mut Context<Self>, id: u32, result: CommandResult) {
        self.send(ctx, &Reply::Result { id, result });
    }

    fn error(&mut self, ctx: &mut Context<Self>, id: u32, code: ErrorCode) {
        debug!(client = %self.client, code = code.code(), "command error");
        metrics::reply_error(self.current.0, code);
        self.send(
            ctx,
            &Reply::Error {
                id,
                error: ErrorReply::from(code),
            },
        );
    }

    fn disconnect(&mut self, ctx: &mut Context<Self>, disconnect: Disconnect) {
        if self.closing {
            return;
        }
        debug!(client = %self.client, code = disconnect.code, reason = %disconnect.reason, "disconnecting");
        self.closing = true;
        self.outbox.close(disconnect);
        ctx.stop();
    }

    // ---- input ----

    fn on_frame(&mut self, frame: &[u8], ctx: &mut Context<Self>) {
        let commands = match decode_frame(frame) {
            Ok(commands) => commands,
            Err(e) => {
                debug!(client = %self.client, error = %e, "undecodable frame");
                return self.disconnect(ctx, Disconnect::BAD_REQUEST);
            }
        };
        let now = Instant::now();
        for command in commands {
            metrics::received(method_name(&command.method));
            if !matches!(command.method, Method::Pong) {
                if let Some(rate) = self.rate.as_mut() {
                    if !rate.allow(now) {
                        if rate.persistent() {
                            debug!(client = %self.client, "command rate limit: disconnecting");
                            return self.disconnect(ctx, Disconnect::TOO_MANY_REQUESTS);
                        }
                        self.current = (method_name(&command.method), now);
                        self.error(ctx, command.id, ErrorCode::TooManyRequests);
                        continue;
                    }
                }
            }
            match self.state.admit(&command.method) {
                Ok(Admission::PongAccepted) => {}
                Ok(Admission::Queue) => {
                    if self.queue.len() >= MAX_QUEUED_COMMANDS {
                        return self.disconnect(ctx, Disconnect::TOO_MANY_REQUESTS);
                    }
                    self.queue.push_back(command);
                }
                Err(d) => return self.disconnect(ctx, d),
            }
        }
        self.drive(ctx);
    }

    /// Runs the next queued command unless one is running.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        while !self.busy && !self.closing {
            let Some(command) = self.queue.pop_front() else {
                return;
            };
            if let Err(d) = self.state.ready_for(&command.method) {
                return self.disconnect(ctx, d);
            }
            self.current = (method_name(&command.method), Instant::now());
            if let Some(work) = self.execute(command, ctx) {
                self.busy = true;
                ctx.spawn(work.map(|(), act, ctx| {
                    metrics::client_command(act.current.0, act.current.1.elapsed());
                    act.busy = false;
                    act.drive(ctx);
                }));
            } else {
                metrics::client_command(self.current.0, self.current.1.elapsed());
            }
        }
    }

    /// Handles one command: synchronously (None) or with async work.
    fn execute(&mut self, command: Command, ctx: &mut Context<Self>) -> Option<Work> {
        let id = command.id;
        match command.method {
            Method::Connect(req) => self.connect(id, req, ctx),
            Method::Subscribe(req) => self.subscribe(id, req, ctx),
            Method::Unsubscribe(req) => self.unsubscribe(id, req, ctx),
            Method::Publish(req) => self.publish(id, req, ctx),
            Method::Presence(req) => self.presence(id, req.channel, false, ctx),
            Method::PresenceStats(req) => self.presence(id, req.channel, true, ctx),
            Method::History(req) => self.history(id, req, ctx),
            Method::Rpc(_) => {
                // No RPC handler is configured in herald: 108 (centrifugo-compat §1.4).
                self.error(ctx, id, ErrorCode::NotAvailable);
                None
            }
            Method::Refresh(req) => self.refresh(id, req, ctx),
            Method::SubRefresh(req) => {
                self.sub_refresh(id, req, ctx);
                None
            }
            // Rejected by the state machine before they are queued.
            Method::Send(_) | Method::Ping | Method::Pong | Method::Unknown => {
                self.disconnect(ctx, Disconnect::BAD_REQUEST);
                None
            }
        }
    }

    // ---- connect ----

    fn connect(
        &mut self,
        id: u32,
        mut req: ConnectRequest,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        let bearer = self.upgrade_token.take();
        let token = match std::mem::take(&mut req.token) {
            token if token.is_empty() => bearer.unwrap_or_default(),
            token => token,
        };
        if token.is_empty() {
            if let Some(identity) = &self.tls_identity {
                // Possession of the certificate's key proved who this is.
                self.user = identity.clone();
            } else if !(self.node.client.insecure
                || self.node.client.allow_anonymous_connect_without_token)
            {
                debug!(client = %self.client, "connect without credentials");
                self.disconnect(ctx, Disconnect::BAD_REQUEST);
                return None;
            }
            return self.connect_as(id, req, None, ctx);
        }
        if let Some(checked) = self.node.auth.connection_now(&token, unix_now()) {
            return self.connect_checked(id, req, token, checked, ctx);
        }
        // A JWKS refetch or an introspection: commands behind this connect
        // stay queued (the session is busy) until it is answered.
        let node = self.node.clone();
        let lookup = {
            let token = token.clone();
            async move { node.auth.connection(&token, unix_now()).await }
        };
        Some(Box::pin(wrap_future::<_, Self>(lookup).then(
            move |checked, act, ctx| -> Work {
                match act.connect_checked(id, req, token, checked, ctx) {
                    Some(work) => work,
                    None => Box::pin(actix::fut::ready(())),
                }
            },
        )))
    }

    /// Continues connect once the credentials were checked.
    fn connect_checked(
        &mut self,
        id: u32,
        req: ConnectRequest,
        token: String,
        checked: Result<Principal, TokenError>,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        let principal = match checked {
            Ok(principal) => principal,
            Err(e) => {
                metrics::auth_failure(&e);
                match e {
                    TokenError::Expired => {
                        self.state.connect_failed();
                        self.error(ctx, id, ErrorCode::TokenExpired);
                    }
                    TokenError::Unavailable | TokenError::UnknownKey => {
                        info!(client = %self.client, "connection credentials cannot be checked now");
                        self.state.connect_failed();
                        self.error(ctx, id, ErrorCode::Internal);
                    }
                    e => {
                        warn!(client = %self.client, reason = %e, "connection token rejected");
                        self.disconnect(ctx, Disconnect::INVALID_TOKEN);
                    }
                }
                return None;
            }
        };
        if principal.introspected {
            self.introspected_token = Some(token);
        }
        self.granted = principal.channels.into_iter().collect();
        self.connect_as(id, req, Some(principal.claims), ctx)
    }

    /// Connect with checked credentials (`None`: no token).
    fn connect_as(
        &mut self,
        id: u32,
        req: ConnectRequest,
        claims: Option<ConnectionClaims>,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        let node = self.node.clone();
        let now = unix_now();
        let expires_at = claims.as_ref().and_then(|c| c.expires_at());
        if expires_at.is_some_and(|at| at <= now) {
            self.state.connect_failed();
            self.error(ctx, id, ErrorCode::TokenExpired);
            return None;
        }
        if let Some(c) = &claims {
            self.user = c.user.clone();
            self.conn_info = c.info.clone();
            self.token_id = c.jti.clone();
            self.issued_at = c.iat;
        }
        if !node.register(&self.user, self.id, &self.client, ctx.address().recipient()) {
            self.disconnect(ctx, Disconnect::CONNECTION_LIMIT);
            return None;
        }
        self.registered = Some(self.user.clone());
        metrics::METRICS.connections_accepted.inc();

        // Server-side subscriptions: `subs` takes precedence over `channels`.
        let mut plans = Vec::new();
        if let Some(c) = &claims {
            let mut wanted: Vec<(String, Option<herald_auth::SubOptions>)> = c
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
                let requested = req.subs.get(&channel);
                match self.server_side_plan(&channel, sub_options, requested) {
                    Ok(plan) => plans.push(plan),
                    Err(code) => {
                        for plan in &plans {
                            self.state.remove(&plan.channel);
                        }
                        self.state.connect_failed();
                        self.error(ctx, id, code);
                        return None;
                    }
                }
            }
        }

        let subscribers: Vec<Arc<Subscriber>> = plans
            .iter()
            .map(|p| self.new_subscriber(&p.channel, p.push_join_leave, ctx))
            .collect();
        let work = {
            let node = node.clone();
            let plans = plans.clone();
            let subscribers = subscribers.clone();
            let (token_id, user, issued_at) =
                (self.token_id.clone(), self.user.clone(), self.issued_at);
            let checked = claims.is_some();
            let user_limit = node.client.user_connection_limit;
            let user_entry =
                (user_limit > 0 && !self.user.is_empty()).then(|| self.info_with(None));
            async move {
                if let Some(info) = user_entry {
                    // Counted in the engine's presence store under a name no
                    // client channel can have, so every node sees it.
                    let key = node::user_connections_key(&info.user);
                    match node.engine.presence.presence_stats(&key).await {
                        Ok(stats) if stats.num_clients as usize >= user_limit => {
                            return Err(Refused::UserLimit)
                        }
                        Ok(_) => {}
                        Err(e) => return Err(Refused::Engine(engine_error(&e))),
                    }
                    if let Err(e) = node
                        .engine
                        .presence
                        .add_presence(&key, info, node.presence_ttl())
                        .await
                    {
                        return Err(Refused::Engine(engine_error(&e)));
                    }
                }
                if checked {
                    match node
                        .engine
                        .broker
                        .token_revoked(token_id.as_deref(), &user, issued_at, unix_now())
                        .await
                    {
                        Ok(false) => {}
                        Ok(true) => return Err(Refused::Revoked),
                        Err(e) => return Err(Refused::Engine(engine_error(&e))),
                    }
                }
                let mut results = Vec::new();
                for (plan, subscriber) in plans.into_iter().zip(subscribers) {
                    results.push(subscribe::subscribe(node.clone(), plan, subscriber).await);
                }
                Ok(results)
            }
        };
        Some(Box::pin(wrap_future::<_, Self>(work).map(
            move |outcome, act, ctx| {
                let results = match outcome {
                    Ok(results) => results,
                    Err(Refused::Revoked) => {
                        warn!(client = %act.client, "connection token revoked");
                        act.disconnect(ctx, Disconnect::INVALID_TOKEN);
                        return;
                    }
                    Err(Refused::UserLimit) => {
                        info!(client = %act.client, "user connection limit reached");
                        act.disconnect(ctx, Disconnect::CONNECTION_LIMIT);
                        return;
                    }
                    Err(Refused::Engine(code)) => {
                        for plan in &plans {
                            act.state.remove(&plan.channel);
                        }
                        act.state.connect_failed();
                        act.error(ctx, id, code);
                        return;
                    }
                };
                let mut subs = std::collections::BTreeMap::new();
                let mut live = Vec::new();
                for ((plan, subscriber), result) in plans.into_iter().zip(subscribers).zip(results) {
                    match result {
                        Ok((result, position)) => {
                            act.add_subscription(&plan, subscriber.clone(), true);
                            subs.insert(plan.channel.clone(), result);
                            live.push((subscriber, position));
                        }
                        Err(code) => {
                            // The connection fails as a whole; undo what succeeded.
                            warn!(client = %act.client, code = code.code(), "server-side subscription failed");
                            act.state.remove(&plan.channel);
                        }
                    }
                }
                if live.len() != subs.len() || subs.len() != act.state.subscriptions().count() {
                    act.state.connect_failed();
                    act.error(ctx, id, ErrorCode::Internal);
                    return;
                }
                act.state.connected(expires_at);
                // Whole seconds on the wire: round a sub-second interval up so
                // the client's no-ping timer is never shorter than ours.
                let ping = act.node.client.ping_interval.as_millis().div_ceil(1000).min(u128::from(u32::MAX)) as u32;
                let result = ConnectResult {
                    client: act.client.clone(),
                    version: act.node.version.to_owned(),
                    expires: expires_at.is_some(),
                    ttl: ttl_from(expires_at),
                    data: None,
                    subs,
                    ping,
                    pong: ping > 0 && !act.node.client.pong_timeout.is_zero(),
                };
                act.reply(ctx, id, CommandResult::Connect(result));
                for (subscriber, position) in live {
                    subscriber.go_live(position);
                }
                debug!(client = %act.client, user = %act.user, "connected");
                act.start_timers(ctx);
            },
        )))
    }

    fn server_side_plan(
        &mut self,
        channel: &str,
        sub_options: Option<herald_auth::SubOptions>,
        requested: Option<&SubscribeRequest>,
    ) -> Result<SubscribePlan, ErrorCode> {
        let node = self.node.clone();
        let resolved = node.policy.resolve(channel).map_err(ChannelError::code)?;
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
        let meta_ttl = node.policy.history_meta_ttl(&resolved);
        let mut plan =
            SubscribePlan::new(&node, channel.to_owned(), &options, meta_ttl, flags, info);
        plan.data = data;
        self.chan_info.insert(channel.to_owned(), chan_info);
        Ok(plan)
    }

    /// The key of this connection's entry in the cluster-wide count of its
    /// user's connections, when there is one.
    fn user_entry_key(&self) -> Option<String> {
        let counted = self.node.client.user_connection_limit > 0
            && self.registered.as_ref().is_some_and(|u| !u.is_empty());
        counted.then(|| node::user_connections_key(&self.user))
    }

    fn info_with(&self, chan_info: Option<RawJson>) -> ClientInfo {
        ClientInfo {
            user: self.user.clone(),
            client: self.client.clone(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }

    fn new_subscriber(
        &mut self,
        channel: &str,
        join_leave: bool,
        ctx: &mut Context<Self>,
    ) -> Arc<Subscriber> {
        let gaps = self
            .gaps
            .get_or_insert_with(|| Arc::new(GapToSession(ctx.address())))
            .clone();
        Arc::new(Subscriber::new(
            self.id,
            channel.to_owned(),
            self.outbox.clone(),
            join_leave,
            gaps,
        ))
    }

    fn add_subscription(
        &mut self,
        plan: &SubscribePlan,
        subscriber: Arc<Subscriber>,
        server_side: bool,
    ) {
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
        self.subscribers.insert(plan.channel.clone(), subscriber);
    }

    // ---- timers ----

    fn start_timers(&mut self, ctx: &mut Context<Self>) {
        let client = &self.node.client;
        let interval = client.ping_interval;
        if !interval.is_zero() {
            // First ping at a random point in [interval/2, interval) so a
            // reconnect wave does not ping in lockstep.
            let half = interval / 2;
            let jitter = rand::rng().random_range(0..half.as_millis().max(1) as u64);
            ctx.run_later(half + Duration::from_millis(jitter), move |act, ctx| {
                act.ping(ctx);
                ctx.run_interval(interval, |act, ctx| act.ping(ctx));
            });
        }
        let tick = client.presence_update_interval;
        if !tick.is_zero() {
            ctx.run_interval(tick, |act, ctx| act.periodic(ctx));
        }
        self.schedule_expiry(ctx);
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.node.client.pong_timeout;
        if !timeout.is_zero() {
            if !self.state.ping_sent(Instant::now()) {
                return self.disconnect(ctx, Disconnect::NO_PONG);
            }
            ctx.run_later(timeout, move |act, ctx| {
                if act.state.pong_overdue(Instant::now(), timeout) {
                    act.disconnect(ctx, Disconnect::NO_PONG);
                }
            });
        }
        self.send(ctx, &Reply::Ping);
    }

    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry_timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(at) = self.state.expires_at() else {
            return;
        };
        let grace = self.node.client.expired_close_delay;
        let due = at
            .saturating_add(grace.as_secs())
            .saturating_sub(unix_now());
        // A little past the deadline so the check sees it passed.
        let delay = Duration::from_secs(due) + Duration::from_millis(50);
        self.expiry_timer = Some(ctx.run_later(delay, move |act, ctx| {
            if act.state.expired(unix_now(), grace) {
                info!(client = %act.client, "connection expired");
                act.disconnect(ctx, Disconnect::EXPIRED);
            } else {
                act.schedule_expiry(ctx);
            }
        }));
    }

    /// Asks again whether an introspected token is active (the cache answers
    /// most of the time): revoked closes the connection; an unreachable
    /// server leaves it to its expiry.
    fn recheck_introspected(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.introspected_token.clone() else {
            return;
        };
        // Past its expiry the token is inactive by definition; the expiry
        // grace (3005, the SDK refreshes) decides, not a revocation (3500).
        if self.expired_now() {
            return;
        }
        let node = self.node.clone();
        let asked = token.clone();
        let check = async move { node.auth.still_active(&asked, unix_now()).await };
        ctx.spawn(wrap_future::<_, Self>(check).map(move |active, act, ctx| {
            // Unless a refresh replaced the token meanwhile.
            if active == Some(false)
                && act.introspected_token.as_ref() == Some(&token)
                && !act.expired_now()
            {
                warn!(client = %act.client, "introspected token no longer active");
                metrics::auth_failure(&TokenError::Invalid(herald_auth::InvalidReason::Inactive));
                act.disconnect(ctx, Disconnect::INVALID_TOKEN);
            }
        }));
    }

    fn expired_now(&self) -> bool {
        self.state.expires_at().is_some_and(|at| at <= unix_now())
    }

    /// Presence refresh and subscription expiry, every `presence_update_interval`.
    fn periodic(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.recheck_introspected(ctx);
        let grace = self.node.client.expired_sub_close_delay;
        for channel in self.state.expired_subscriptions(unix_now(), grace) {
            let server_side = self
                .state
                .subscription(&channel)
                .is_some_and(|s| s.server_side);
            if server_side {
                return self.disconnect(ctx, Disconnect::SUBSCRIPTION_EXPIRED);
            }
            self.server_unsubscribe(ctx, &channel, UnsubscribeCode::Expired);
        }
        let node = self.node.clone();
        let mut refresh: Vec<(String, ClientInfo)> = self
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
            refresh.push((key, self.info_with(None)));
        }
        if refresh.is_empty() {
            return;
        }
        let ttl = node.presence_ttl();
        actix_web::rt::spawn(async move {
            for (channel, info) in refresh {
                if let Err(e) = node.engine.presence.add_presence(&channel, info, ttl).await {
                    warn!(error = %e, "presence refresh failed");
                }
            }
        });
    }

    /// Ends a subscription from the server side with an unsubscribe push.
    fn server_unsubscribe(
        &mut self,
        ctx: &mut Context<Self>,
        channel: &str,
        code: UnsubscribeCode,
    ) {
        if self.drop_subscription(channel).is_none() {
            return;
        }
        let push = Reply::Push(Push {
            channel: channel.to_owned(),
            body: PushBody::Unsubscribe(UnsubscribePush {
                code: code.code(),
                reason: code.reason().to_owned(),
            }),
        });
        self.send(ctx, &push);
    }

    /// Removes a subscription here and, in the background, from the node.
    fn drop_subscription(&mut self, channel: &str) -> Option<SubscriptionState> {
        let state = self.state.remove(channel)?;
        let chan_info = self.chan_info.remove(channel).flatten();
        if let Some(subscriber) = self.subscribers.remove(channel) {
            subscriber.close();
        }
        let info = self.info_with(chan_info);
        let node = self.node.clone();
        let owned = channel.to_owned();
        let session = self.id;
        let left = state.clone();
        actix_web::rt::spawn(async move {
            leave(&node, &owned, session, &left, info).await;
        });
        Some(state)
    }
}

/// Takes a subscription out of the node: Hub, presence, leave event.
async fn leave(
    node: &Node,
    channel: &str,
    session: u64,
    state: &SubscriptionState,
    info: ClientInfo,
) {
    node.detach(channel, session).await;
    if !state.subscribed {
        return;
    }
    if state.presence {
        if let Err(e) = node
            .engine
            .presence
            .remove_presence(channel, &info.client)
            .await
        {
            warn!(error = %e, "presence removal failed");
        }
    }
    if state.join_leave {
        if let Err(e) = node.engine.broker.publish_leave(channel, info).await {
            warn!(error = %e, "leave publish failed");
        }
    }
}

/// The reply code of a refused subscription token: 109 expired, 100 when it
/// cannot be checked now (the client retries; an unknown kid reaching here
/// comes from `sub_refresh`, which does not wait, so a background refetch
/// starts), else 103.
fn subscription_token_error(node: &Node, error: &TokenError) -> ErrorCode {
    match error {
        TokenError::Expired => ErrorCode::TokenExpired,
        TokenError::UnknownKey => {
            node.auth.subscription_key_missing();
            ErrorCode::Internal
        }
        TokenError::Unavailable => ErrorCode::Internal,
        _ => ErrorCode::PermissionDenied,
    }
}

fn ttl_from(expires_at: Option<u64>) -> u32 {
    expires_at
        .map(|at| at.saturating_sub(unix_now()).min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

impl Session {
    // ---- subscribe / unsubscribe ----

    fn subscribe(
        &mut self,
        id: u32,
        req: SubscribeRequest,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        if req.channel.is_empty() {
            self.disconnect(ctx, Disconnect::BAD_REQUEST);
            return None;
        }
        let node = self.node.clone();
        if let Err(e) = node.policy.resolve(&req.channel) {
            self.error(ctx, id, e.code());
            return None;
        }
        if let Err(code) = self.state.begin_subscribe(&req.channel, false) {
            self.error(ctx, id, code);
            return None;
        }
        if req.token.is_empty() {
            return self.subscribe_checked(id, req, None, ctx);
        }
        if let Some(checked) = node.auth.subscription_now(&req.token, unix_now()) {
            return self.subscribe_checked(id, req, Some(checked), ctx);
        }
        // A JWKS refetch, as at connect: commands behind this subscribe stay
        // queued (the session is busy) until it is answered.
        let lookup = {
            let token = req.token.clone();
            async move { node.auth.subscription(&token, unix_now()).await }
        };
        Some(Box::pin(wrap_future::<_, Self>(lookup).then(
            move |checked, act, ctx| -> Work {
                match act.subscribe_checked(id, req, Some(checked), ctx) {
                    Some(work) => work,
                    None => Box::pin(actix::fut::ready(())),
                }
            },
        )))
    }

    /// Continues subscribe once the subscription token, if any, was checked.
    fn subscribe_checked(
        &mut self,
        id: u32,
        req: SubscribeRequest,
        checked: Option<Result<SubscriptionClaims, TokenError>>,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        let node = self.node.clone();
        let resolved = match node.policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => {
                self.state.remove(&req.channel);
                self.error(ctx, id, e.code());
                return None;
            }
        };
        let insecure = node.client.insecure;
        let mut options = resolved.options.clone();
        let mut chan_info = None;
        let mut data = None;
        let mut expires_at = None;
        if let Some(checked) = checked {
            match checked {
                Ok(claims) => {
                    let mismatch = claims.user != self.user
                        || claims.channel != req.channel
                        || claims.client.as_ref().is_some_and(|c| *c != self.client);
                    if mismatch {
                        warn!(client = %self.client, "subscription token for another user, channel or client");
                        self.state.remove(&req.channel);
                        self.disconnect(ctx, Disconnect::INVALID_TOKEN);
                        return None;
                    }
                    options = claims.override_.apply(&options);
                    chan_info = claims.info.clone();
                    data = claims.data.clone();
                    expires_at = claims.expires_at();
                }
                Err(e) => {
                    debug!(client = %self.client, reason = %e, "subscription token rejected");
                    metrics::auth_failure(&e);
                    self.state.remove(&req.channel);
                    let code = subscription_token_error(&node, &e);
                    self.error(ctx, id, code);
                    return None;
                }
            }
        } else if !insecure
            && !self.granted.contains(&req.channel)
            && (resolved.private || !node.policy.can_subscribe(&resolved, &self.user))
        {
            self.state.remove(&req.channel);
            self.error(ctx, id, ErrorCode::PermissionDenied);
            return None;
        }
        if expires_at.is_some_and(|at| at <= unix_now()) {
            self.state.remove(&req.channel);
            self.error(ctx, id, ErrorCode::TokenExpired);
            return None;
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
            history_access: insecure || node.policy.can_history(&resolved, &self.user, true),
            presence_access: insecure || node.policy.can_presence(&resolved, &self.user, true),
        };
        let meta_ttl = node.policy.history_meta_ttl(&resolved);
        let info = self.info_with(chan_info.clone());
        let mut plan =
            SubscribePlan::new(&node, req.channel.clone(), &options, meta_ttl, flags, info);
        plan.expires_at = expires_at;
        plan.data = data;
        self.chan_info.insert(req.channel.clone(), chan_info);
        let subscriber = self.new_subscriber(&req.channel, plan.push_join_leave, ctx);
        let work = subscribe::subscribe(node, plan.clone(), subscriber.clone());
        Some(Box::pin(wrap_future::<_, Self>(work).map(
            move |outcome, act, ctx| {
                match outcome {
                    Ok((result, position)) => {
                        if act.state.subscription(&plan.channel).is_none() {
                            // Dropped while subscribing (server unsubscribe): undo.
                            let node = act.node.clone();
                            let (channel, session) = (plan.channel.clone(), act.id);
                            actix_web::rt::spawn(
                                async move { node.detach(&channel, session).await },
                            );
                            return act.error(ctx, id, ErrorCode::Internal);
                        }
                        act.add_subscription(&plan, subscriber.clone(), false);
                        act.reply(ctx, id, CommandResult::Subscribe(result));
                        subscriber.go_live(position);
                        debug!(client = %act.client, channel = %plan.channel, "subscribed");
                    }
                    Err(code) => {
                        act.state.remove(&plan.channel);
                        act.chan_info.remove(&plan.channel);
                        act.error(ctx, id, code);
                    }
                }
            },
        )))
    }

    fn unsubscribe(
        &mut self,
        id: u32,
        req: UnsubscribeRequest,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        if req.channel.is_empty() {
            self.disconnect(ctx, Disconnect::BAD_REQUEST);
            return None;
        }
        self.drop_subscription(&req.channel);
        self.reply(ctx, id, CommandResult::Unsubscribe);
        None
    }

    // ---- publish / presence / history ----

    fn publish(&mut self, id: u32, req: PublishRequest, ctx: &mut Context<Self>) -> Option<Work> {
        if req.channel.is_empty() {
            self.disconnect(ctx, Disconnect::BAD_REQUEST);
            return None;
        }
        let node = self.node.clone();
        let resolved = match node.policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => {
                self.error(ctx, id, e.code());
                return None;
            }
        };
        let Some(data) = req.data.filter(|d| !d.is_null()) else {
            self.error(ctx, id, ErrorCode::BadRequest);
            return None;
        };
        let subscribed = self.state.is_subscribed(&req.channel);
        if !node.client.insecure && !node.policy.can_publish(&resolved, &self.user, subscribed) {
            self.error(ctx, id, ErrorCode::PermissionDenied);
            return None;
        }
        let history = node.history_options(&resolved);
        let publication = Publication {
            data,
            info: Some(self.info_with(self.chan_info.get(&req.channel).cloned().flatten())),
            offset: 0,
            tags: Default::default(),
        };
        let channel = req.channel;
        let work = async move {
            let options = PublishOptions {
                history,
                idempotency_key: None,
            };
            node.publish(&channel, publication, &options).await
        };
        Some(Box::pin(wrap_future::<_, Self>(work).map(
            move |outcome, act, ctx| match outcome {
                Ok(_) => act.reply(ctx, id, CommandResult::Publish),
                Err(e) => act.error(ctx, id, engine_error(&e)),
            },
        )))
    }

    fn presence(
        &mut self,
        id: u32,
        channel: String,
        stats: bool,
        ctx: &mut Context<Self>,
    ) -> Option<Work> {
        if channel.is_empty() {
            self.disconnect(ctx, Disconnect::BAD_REQUEST);
            return None;
        }
        let node = self.node.clone();
        let resolved = match node.policy.resolve(&channel) {
            Ok(r) => r,
            Err(e) => {
                self.error(ctx, id, e.code());
                return None;
            }
        };
        if !resolved.options.presence {
            self.error(ctx, id, ErrorCode::NotAvailable);
            return None;
        }
        let subscribed = self.state.is_subscribed(&channel);
        if !node.client.insecure && !node.policy.can_presence(&resolved, &self.user, subscribed) {
            self.error(ctx, id, ErrorCode::PermissionDenied);
            return None;
        }
        let work = async move {
            let store = &node.engine.presence;
            if stats {
                store.presence_stats(&channel).await.map(|s| {
                    CommandResult::PresenceStats(PresenceStatsResult {
                        num_clients: s.num_clients,
                        num_users: s.num_users,
                    })
                })
            } else {
                store
                    .presence(&channel)
                    .await
                    .map(|presence| CommandResult::Presence(PresenceResult { presence }))
            }
        };
        Some(Box::pin(wrap_future::<_, Self>(work).map(
            move |outcome, act, ctx| match outcome {
                Ok(result) => act.reply(ctx, id, result),
                Err(e) => act.error(ctx, id, engine_error(&e)),
            },
        )))
    }

    fn history(&mut self, id: u32, req: HistoryRequest, ctx: &mut Context<Self>) -> Option<Work> {
        if req.channel.is_empty() {
            self.disconnect(ctx, Disconnect::BAD_REQUEST);
            return None;
        }
        let node = self.node.clone();
        let resolved = match node.policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => {
                self.error(ctx, id, e.code());
                return None;
            }
        };
        if !resolved.options.history_enabled() {
            self.error(ctx, id, ErrorCode::NotAvailable);
            return None;
        }
        let subscribed = self.state.is_subscribed(&req.channel);
        if !node.client.insecure && !node.policy.can_history(&resolved, &self.user, subscribed) {
            self.error(ctx, id, ErrorCode::PermissionDenied);
            return None;
        }
        if req.reverse && req.since.as_ref().is_some_and(|s| s.offset == 0) {
            self.error(ctx, id, ErrorCode::BadRequest);
            return None;
        }
        let limit = node.history_limit(req.limit.into());
        let query = HistoryQuery {
            since: req.since,
            limit: Some(limit),
            reverse: req.reverse,
            meta_ttl: node.policy.history_meta_ttl(&resolved),
        };
        let channel = req.channel;
        let work = async move { node.engine.broker.history(&channel, &query).await };
        Some(Box::pin(wrap_future::<_, Self>(work).map(
            move |outcome, act, ctx| match outcome {
                Ok(page) => act.reply(
                    ctx,
                    id,
                    CommandResult::History(HistoryResult {
                        publications: page.publications,
                        epoch: page.position.epoch,
                        offset: page.position.offset,
                    }),
                ),
                Err(e) => act.error(ctx, id, engine_error(&e)),
            },
        )))
    }

    // ---- refresh ----

    fn refresh(&mut self, id: u32, req: RefreshRequest, ctx: &mut Context<Self>) -> Option<Work> {
        if req.token.is_empty() {
            self.disconnect(ctx, Disconnect::BAD_REQUEST);
            return None;
        }
        let node = self.node.clone();
        let token = req.token;
        let check = async move {
            let checked = node.auth.connection(&token, unix_now()).await;
            // As at connect: `revoke_token` by `jti`, `invalidate_user_tokens`
            // by `iat` (an introspected token has neither, so the latter
            // applies to it whenever it was issued).
            let revoked = match &checked {
                Ok(p) => {
                    let c = &p.claims;
                    node.engine
                        .broker
                        .token_revoked(c.jti.as_deref(), &c.user, c.iat, unix_now())
                        .await
                }
                _ => Ok(false),
            };
            (token, checked, revoked)
        };
        Some(Box::pin(wrap_future::<_, Self>(check).map(
            move |(token, checked, revoked), act, ctx| {
                let principal = match checked {
                    Ok(principal) => principal,
                    Err(e) => {
                        metrics::auth_failure(&e);
                        return match e {
                            TokenError::Expired => act.disconnect(ctx, Disconnect::EXPIRED),
                            // The client retries; the connection lives until
                            // its expiry grace runs out.
                            TokenError::Unavailable | TokenError::UnknownKey => {
                                act.error(ctx, id, ErrorCode::Internal)
                            }
                            e => {
                                warn!(client = %act.client, reason = %e, "refresh token rejected");
                                act.disconnect(ctx, Disconnect::INVALID_TOKEN)
                            }
                        };
                    }
                };
                if principal.claims.user != act.user {
                    warn!(client = %act.client, "refresh token for another user");
                    return act.disconnect(ctx, Disconnect::INVALID_TOKEN);
                }
                match revoked {
                    Ok(false) => {}
                    Ok(true) => {
                        warn!(client = %act.client, "refresh token revoked");
                        return act.disconnect(ctx, Disconnect::INVALID_TOKEN);
                    }
                    Err(e) => return act.error(ctx, id, engine_error(&e)),
                }
                let claims = principal.claims;
                let expires_at = claims.expires_at();
                if claims.info.is_some() {
                    act.conn_info = claims.info;
                }
                act.token_id = claims.jti;
                act.issued_at = claims.iat;
                act.introspected_token = principal.introspected.then_some(token);
                act.granted = principal.channels.into_iter().collect();
                act.state.refreshed(expires_at);
                act.schedule_expiry(ctx);
                let result = RefreshResult {
                    client: act.client.clone(),
                    version: act.node.version.to_owned(),
                    expires: expires_at.is_some(),
                    ttl: ttl_from(expires_at),
                };
                act.reply(ctx, id, CommandResult::Refresh(result));
            },
        )))
    }

    fn sub_refresh(&mut self, id: u32, req: SubRefreshRequest, ctx: &mut Context<Self>) {
        if req.channel.is_empty() {
            return self.disconnect(ctx, Disconnect::BAD_REQUEST);
        }
        if !self.state.is_subscribed(&req.channel) {
            return self.error(ctx, id, ErrorCode::PermissionDenied);
        }
        if req.token.is_empty() {
            return self.error(ctx, id, ErrorCode::BadRequest);
        }
        let node = self.node.clone();
        let claims = match node
            .auth
            .verifier()
            .verify_subscription(&req.token, unix_now())
        {
            Ok(claims) => claims,
            Err(e) => {
                debug!(client = %self.client, reason = %e, "sub_refresh token rejected");
                metrics::auth_failure(&e);
                return self.error(ctx, id, subscription_token_error(&node, &e));
            }
        };
        let mismatch = claims.user != self.user
            || claims.channel != req.channel
            || claims.client.as_ref().is_some_and(|c| *c != self.client);
        if mismatch {
            return self.disconnect(ctx, Disconnect::INVALID_TOKEN);
        }
        let expires_at = claims.expires_at();
        self.state.set_subscription_expiry(&req.channel, expires_at);
        let result = SubRefreshResult {
            expires: expires_at.is_some(),
            ttl: ttl_from(expires_at),
        };
        self.reply(ctx, id, CommandResult::SubRefresh(result));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.node.client.handshake_timeout;
        ctx.run_later(timeout, |act, ctx| {
            if act.state.phase() != Phase::Connected {
                debug!(client = %act.client, "no connect in time");
                act.disconnect(ctx, Disconnect::STALE);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // If nothing chose a close code, the peer went away: nothing to flush.
        self.outbox.close_now(Disconnect::custom(1000, ""));
        if let Some(key) = self.user_entry_key() {
            let (node, client) = (self.node.clone(), self.client.clone());
            actix_web::rt::spawn(async move {
                if let Err(e) = node.engine.presence.remove_presence(&key, &client).await {
                    warn!(error = %e, "removing the user connection entry failed");
                }
            });
        }
        if let Some(user) = self.registered.take() {
            self.node.unregister(&user, self.id);
        }
        let channels: Vec<String> = self.state.subscriptions().map(|(c, _)| c.clone()).collect();
        for channel in channels {
            self.drop_subscription(&channel);
        }
        debug!(client = %self.client, "session ended");
    }
}

/// Messages from the socket task; the stream ends when the socket closes.
impl StreamHandler<Inbound> for Session {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        match item {
            Inbound::Text(text) => self.on_frame(&text, ctx),
            // JSON connections carry text frames only.
            Inbound::Binary => self.disconnect(ctx, Disconnect::BAD_REQUEST),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Gap> for Session {
    type Result = ();

    fn handle(&mut self, gap: Gap, ctx: &mut Context<Self>) {
        let server_side = self
            .state
            .subscription(&gap.0)
            .is_some_and(|s| s.server_side);
        if server_side {
            return self.disconnect(ctx, Disconnect::INSUFFICIENT_STATE);
        }
        self.server_unsubscribe(ctx, &gap.0, UnsubscribeCode::InsufficientState);
    }
}

impl Handler<Control> for Session {
    type Result = ();

    fn handle(&mut self, Control(command): Control, ctx: &mut Context<Self>) {
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
                self.disconnect(ctx, Disconnect::custom(code, &reason));
            }
            ControlCommand::Unsubscribe { channel, .. } if self.state.is_subscribed(&channel) => {
                self.server_unsubscribe(ctx, &channel, UnsubscribeCode::Server);
            }
            ControlCommand::Subscribe {
                channel,
                info,
                data,
                ..
            } => self.server_subscribe(channel, info, data, ctx),
            ControlCommand::Refresh {
                expired, expire_at, ..
            } => {
                if expired {
                    return self.disconnect(ctx, Disconnect::EXPIRED);
                }
                self.state.refreshed(expire_at);
                self.schedule_expiry(ctx);
            }
            ControlCommand::RevokeToken { token_id }
                if self.token_id.as_deref() == Some(token_id.as_str()) =>
            {
                info!(client = %self.client, "token revoked: disconnecting");
                self.disconnect(ctx, Disconnect::INVALID_TOKEN);
            }
            ControlCommand::InvalidateUserTokens { issued_before, .. }
                if self.issued_at.unwrap_or(0) < issued_before =>
            {
                info!(client = %self.client, "user tokens invalidated: disconnecting");
                self.disconnect(ctx, Disconnect::INVALID_TOKEN);
            }
            _ => {}
        }
    }
}

impl Session {
    /// A subscription the server adds after connect: announced with a
    /// `subscribe` push once the node is subscribed.
    fn server_subscribe(
        &mut self,
        channel: String,
        info: Option<RawJson>,
        data: Option<RawJson>,
        ctx: &mut Context<Self>,
    ) {
        if self.state.subscription(&channel).is_some() {
            return;
        }
        let options = herald_auth::SubOptions {
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
        let subscriber = self.new_subscriber(&channel, plan.push_join_leave, ctx);
        let work = subscribe::subscribe(self.node.clone(), plan.clone(), subscriber.clone());
        ctx.spawn(
            wrap_future::<_, Self>(work).map(move |outcome, act, ctx| match outcome {
                Ok((result, position)) => {
                    if act.state.subscription(&plan.channel).is_none() {
                        let node = act.node.clone();
                        let (channel, session) = (plan.channel.clone(), act.id);
                        actix_web::rt::spawn(async move { node.detach(&channel, session).await });
                        return;
                    }
                    act.add_subscription(&plan, subscriber.clone(), true);
                    let push = Reply::Push(Push {
                        channel: plan.channel.clone(),
                        body: PushBody::Subscribe(SubscribePush {
                            recoverable: result.recoverable,
                            epoch: result.epoch,
                            offset: result.offset,
                            positioned: result.positioned,
                            data: result.data,
                        }),
                    });
                    act.send(ctx, &push);
                    subscriber.go_live(position);
                }
                Err(code) => {
                    warn!(client = %act.client, code = code.code(), "server subscribe failed");
                    act.state.remove(&plan.channel);
                    act.chan_info.remove(&plan.channel);
                }
            }),
        );
    }
}

/// Why a connect is refused after its token verified.
enum Refused {
    Revoked,
    Engine(ErrorCode),
    /// `client.user_connection_limit` reached across the cluster.
    UserLimit,
}

/// The `method` label of a client command.
fn method_name(method: &Method) -> &'static str {
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

/// The `frame_type` label of something sent to a client.
fn frame_type(reply: &Reply) -> &'static str {
    match reply {
        Reply::Ping => "server_ping",
        Reply::Push(push) => match &push.body {
            PushBody::Publication(_) => "push_publication",
            PushBody::Join(_) => "push_join",
            PushBody::Leave(_) => "push_leave",
            PushBody::Unsubscribe(_) => "push_unsubscribe",
            PushBody::Subscribe(_) => "push_subscribe",
            _ => "push_message",
        },
        _ => "reply",
    }
}
