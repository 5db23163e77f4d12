//! One actix actor per connection: the driver of its connection machine
//! (`conn/machine.rs`). It decodes client messages and feeds the commands
//! in, runs the effects the machine asks for (as actor futures; a token it
//! can verify without the network is answered in the same turn), writes
//! replies and pushes into the connection's bounded Outbox, and re-arms one
//! timer for the machine's next deadline. The protocol's rules are all in
//! the machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_channel::{mpsc, oneshot};
use herald_protocol::{
    Command, CommandResult, ConnectRequest, Format, Method, PresenceResult, PresenceStatsResult,
    Push, PushBody, Reply,
};
use rand::Rng;
use tracing::{debug, info, warn};

use crate::conn::abort::AbortHandle;
use crate::conn::backend::Asking;
use crate::conn::machine::{
    Action, Effect, EffectId, Machine, Now, Outcome, Refused, Revocation, Setup,
};
use crate::conn::state::SubscriptionState;
use crate::format::{self, ClientMessage};
use crate::metrics;
use crate::node::emulation::{EmulatedCommands, Registration};
use crate::node::hub::{GapListener, Subscriber};
use crate::node::plan;
use crate::node::subscribe;
use crate::node::{unix_now, Mailbox, Node, SessionEvent};
use crate::outbox::{Outbox, Pushed, CLOSE_LINGER};
use crate::transport::Transport;

/// How a connect of a connection without replies ended, for the transport
/// that answers a failed connect with an HTTP status
/// (`connect_code_to_http_response`): `Err` holds the connect error code.
pub(crate) type ConnectOutcome = Result<(), u32>;

/// What a connection is opened with, besides the node and its queues.
pub(crate) struct Opening {
    pub(crate) transport: Transport,
    pub(crate) format: Format,
    /// The verified client certificate's identity (`tls_identity_as_user`).
    pub(crate) tls_identity: Option<String>,
    /// The user named by the `client.user_id_http_header` header of the
    /// request that opened the connection.
    pub(crate) header_user: Option<String>,
    /// A token sent with the request that opened the connection
    /// (`Authorization: Bearer`).
    pub(crate) upgrade_token: Option<String>,
    /// The session id in the connect result (empty: none).
    pub(crate) session: String,
    /// Headers of the request that opened the connection that a proxy
    /// forwards (`http_headers`; `Proxies::forwarded`).
    pub(crate) headers: Vec<(String, String)>,
    /// Commands that came with the request that opened the connection (the
    /// connect of HTTP-streaming, SSE and the unidirectional transports),
    /// handled as soon as the Session starts.
    pub(crate) commands: Vec<Command>,
    /// Told how the connect ended (unidirectional transports).
    pub(crate) outcome: Option<oneshot::Sender<ConnectOutcome>>,
    /// A streamed HTTP response: the switch that drops its connection when
    /// the reader stopped reading and a close could not go out
    /// (`conn/abort.rs`).
    pub(crate) abort: Option<AbortHandle>,
    /// Bidirectional emulation: the registration `/emulation` finds it by,
    /// and where its commands arrive.
    pub(crate) emulation: Option<(Registration, mpsc::Receiver<EmulatedCommands>)>,
    /// A WebSocket with permessage-deflate: messages from this many payload
    /// bytes are compressed (`Outbox::compressing`).
    pub(crate) compress_from: Option<usize>,
}

impl Opening {
    pub(crate) fn new(transport: Transport, format: Format) -> Self {
        Self {
            transport,
            format,
            tls_identity: None,
            header_user: None,
            upgrade_token: None,
            session: String::new(),
            headers: Vec::new(),
            commands: Vec::new(),
            outcome: None,
            abort: None,
            emulation: None,
            compress_from: None,
        }
    }
}

pub(crate) struct Session {
    machine: Machine,
    transport: Transport,
    /// Unidirectional: the connect request was given to the machine; client
    /// messages after it are ignored.
    connect_fed: bool,
    /// Commands waiting for `started` (`Opening::commands`).
    first_commands: Vec<Command>,
    outcome: Option<oneshot::Sender<ConnectOutcome>>,
    abort: Option<AbortHandle>,
    /// Forwarded request headers (`Opening::headers`).
    headers: Vec<(String, String)>,
    _emulation: Option<Registration>,
    node: Arc<Node>,
    outbox: Arc<Outbox>,
    mailbox: Mailbox,
    /// The format the client speaks: how messages decode and replies frame.
    format: Format,
    /// This connection's number on the node (Hub and registry key).
    id: u64,
    /// The Hub subscriber of each channel subscribed or subscribing.
    subscribers: HashMap<String, Arc<Subscriber>>,
    gaps: Arc<dyn GapListener>,
    /// The one timer, and the deadline it is armed for.
    timer: Option<(Instant, SpawnHandle)>,
}

/// Gaps reach the connection through its mailbox, like control commands.
struct GapToMailbox(Mailbox);

impl GapListener for GapToMailbox {
    fn on_gap(&self, channel: &str) {
        self.0.deliver(SessionEvent::Gap(channel.into()));
    }
}

fn now() -> Now {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Now {
        at: Instant::now(),
        unix: wall.as_secs(),
        unix_ms: i64::try_from(wall.as_millis()).unwrap_or(i64::MAX),
    }
}

impl Session {
    pub(crate) fn new(
        node: Arc<Node>,
        outbox: Arc<Outbox>,
        mailbox: Mailbox,
        opening: Opening,
        ctx: &mut Context<Self>,
    ) -> Self {
        let Opening {
            transport,
            format,
            tls_identity,
            header_user,
            upgrade_token,
            session,
            headers,
            commands,
            outcome,
            abort,
            emulation,
            compress_from: _,
        } = opening;
        let emulation = emulation.map(|(registration, commands)| {
            ctx.add_stream(commands);
            registration
        });
        let setup = Setup {
            config: node.client.clone(),
            policy: node.policy.clone(),
            version: node.version,
            client: uuid::Uuid::new_v4().to_string(),
            tls_identity,
            header_user,
            upgrade_token,
            ping_jitter: rand::rng().random_range(0.0..1.0),
            takes_binary_data: format == Format::Protobuf,
            unidirectional: transport.unidirectional(),
            session,
            node: if transport.emulated() {
                node.uid.clone()
            } else {
                String::new()
            },
            rpc: node.proxies.rpc_routing.clone(),
            connect_proxy: node.proxies.connect.is_some(),
            refresh_proxy: node.proxies.refresh.is_some(),
        };
        Self {
            machine: Machine::new(setup, now()),
            transport,
            connect_fed: false,
            first_commands: commands,
            outcome,
            abort,
            headers,
            _emulation: emulation,
            id: node.next_session_id(),
            gaps: Arc::new(GapToMailbox(mailbox.clone())),
            node,
            outbox,
            mailbox,
            format,
            subscribers: HashMap::new(),
            timer: None,
        }
    }

    /// Decodes one client message and hands its commands to the machine.
    fn take(&mut self, message: &ClientMessage) {
        match format::decode(self.format, message) {
            Ok(commands) => self.machine.handle_commands(commands, now()),
            Err(_) => self.machine.handle_bad_input(),
        }
    }

    /// A unidirectional connection's connect request, as command 1.
    fn feed_connect(&mut self, req: ConnectRequest) {
        self.connect_fed = true;
        self.machine
            .handle_commands(vec![connect_command(req)], now());
    }

    /// Carries out what the machine asks for, in order, then re-arms the timer.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send(reply) => self.send(&reply, ctx),
                Action::GoLive { channel, position } => {
                    if let Some(subscriber) = self.subscribers.get(&channel) {
                        subscriber.go_live(position);
                    }
                }
                Action::Run { id, effect } => self.run(id, effect, ctx),
                Action::Spawn(effect) => self.spawn(effect),
                Action::ConnectFailed { code } => {
                    if let Some(outcome) = self.outcome.take() {
                        let _ = outcome.send(Err(code));
                    }
                }
                Action::Close(disconnect) => {
                    self.outbox.close(disconnect);
                    ctx.stop();
                }
            }
        }
        self.rearm(ctx);
    }

    fn send(&mut self, reply: &Reply, ctx: &mut Context<Self>) {
        metrics::sent(frame_type(reply), 1);
        if let Reply::Push(Push {
            body: PushBody::Connect(_),
            ..
        }) = reply
        {
            if let Some(outcome) = self.outcome.take() {
                let _ = outcome.send(Ok(()));
            }
        }
        match self.outbox.push(format::frame_reply(self.format, reply)) {
            Pushed::Queued => {}
            Pushed::Overflow => {
                info!(client = %self.machine.client(), "disconnecting slow client");
                self.machine.handle_output_closed();
                ctx.stop();
            }
            Pushed::Closed => {
                self.machine.handle_output_closed();
                ctx.stop();
            }
        }
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let next = self.machine.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(at) = next else {
            return;
        };
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.machine.handle_timeout(now());
            act.pump(ctx);
        });
        self.timer = Some((at, handle));
    }

    /// Hands an outcome to the machine and carries out what follows.
    fn answer(&mut self, id: EffectId, outcome: Outcome, ctx: &mut Context<Self>) {
        self.machine.handle_effect(id, outcome, now());
        self.pump(ctx);
    }

    /// Runs `work` as an actor future; its outcome goes back to the machine.
    fn later<F>(&mut self, id: EffectId, work: F, ctx: &mut Context<Self>)
    where
        F: std::future::Future<Output = Outcome> + 'static,
    {
        ctx.spawn(wrap_future::<_, Self>(work).map(move |outcome, act, ctx| {
            act.answer(id, outcome, ctx);
        }));
    }

    /// An effect whose outcome the machine waits for. Token checks that
    /// need no network are answered here, in the same turn.
    fn run(&mut self, id: EffectId, effect: Effect, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        match effect {
            Effect::VerifyConnection { token } => {
                if let Some(checked) = node.auth.connection_now(&token, unix_now()) {
                    return self
                        .machine
                        .handle_effect(id, Outcome::Verified(checked), now());
                }
                // A JWKS refetch or an introspection request: the commands
                // behind this connect stay queued in the machine.
                let work = async move {
                    Outcome::Verified(node.auth.connection(&token, unix_now()).await)
                };
                self.later(id, work, ctx);
            }
            Effect::VerifySubscription { token } => {
                if let Some(checked) = node.auth.subscription_now(&token, unix_now()) {
                    let outcome = Outcome::SubscriptionVerified(checked);
                    return self.machine.handle_effect(id, outcome, now());
                }
                let work = async move {
                    Outcome::SubscriptionVerified(node.auth.subscription(&token, unix_now()).await)
                };
                self.later(id, work, ctx);
            }
            Effect::CheckSubscription { token } => {
                let checked = node.auth.verifier().verify_subscription(&token, unix_now());
                self.machine
                    .handle_effect(id, Outcome::SubscriptionVerified(checked), now());
            }
            Effect::Register { user } => {
                let client = self.machine.client().to_owned();
                let registered = node.register(&user, self.id, &client, self.mailbox.clone());
                self.machine
                    .handle_effect(id, Outcome::Registered(registered), now());
            }
            Effect::Admit {
                user_entry,
                revocation,
            } => {
                let work =
                    async move { Outcome::Admitted(admit(&node, user_entry, revocation).await) };
                self.later(id, work, ctx);
            }
            Effect::Subscribe { plan } => {
                let subscriber = Arc::new(
                    Subscriber::new(
                        self.id,
                        plan.channel.clone(),
                        self.outbox.clone(),
                        self.format,
                        plan.push_join_leave,
                        self.gaps.clone(),
                    )
                    .with_filter(plan.tags_filter.clone())
                    .with_delta(plan.delta),
                );
                self.subscribers
                    .insert(plan.channel.clone(), subscriber.clone());
                let channel = plan.channel.clone();
                let work = subscribe::subscribe(node, plan, subscriber);
                ctx.spawn(wrap_future::<_, Self>(work).map(move |result, act, ctx| {
                    if result.is_err() {
                        // subscribe() left nothing in the node.
                        act.subscribers.remove(&channel);
                    }
                    act.answer(id, Outcome::Subscribed(result), ctx);
                }));
            }
            Effect::Publish {
                channel,
                publication,
                options,
            } => {
                let work = async move {
                    let outcome = node.publish(&channel, publication, &options).await;
                    Outcome::Published(outcome.map(|_| ()))
                };
                self.later(id, work, ctx);
            }
            Effect::Presence { channel, stats } => {
                let work = async move {
                    let store = &node.engine.presence;
                    let result = if stats {
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
                    };
                    Outcome::Presence(result)
                };
                self.later(id, work, ctx);
            }
            Effect::History { channel, query } => {
                let work = async move {
                    Outcome::History(node.engine.broker.history(&channel, &query).await)
                };
                self.later(id, work, ctx);
            }
            Effect::Refresh { token } => {
                let work = async move {
                    let checked = node.auth.connection(&token, unix_now()).await;
                    // As at connect: `revoke_token` by `jti`,
                    // `invalidate_user_tokens` by `iat` (an introspected
                    // token has neither, so the latter applies whenever it
                    // was issued).
                    let revoked = match &checked {
                        Ok(p) => {
                            let c = &p.claims;
                            node.engine
                                .broker
                                .token_revoked(c.jti.as_deref(), &c.user, c.iat, unix_now())
                                .await
                        }
                        Err(_) => Ok(false),
                    };
                    Outcome::Refreshed { checked, revoked }
                };
                self.later(id, work, ctx);
            }
            effect if effect.is_proxy_call() => {
                let asking = Asking {
                    client: self.machine.client().to_owned(),
                    transport: self.transport.label(),
                    protocol: self.format.label(),
                    user: self.machine.user().to_owned(),
                    meta: self.machine.meta().cloned(),
                    headers: self.headers.clone(),
                    emulated: self.machine.emulated_headers(),
                };
                let work = async move { asking.run(&node, effect).await };
                self.later(id, work, ctx);
            }
            Effect::StillActive { token } => {
                let work = async move {
                    Outcome::StillActive(node.auth.still_active(&token, unix_now()).await)
                };
                self.later(id, work, ctx);
            }
            other => {
                // A background effect asked to report back: run it anyway.
                warn!(effect = ?other, "background effect run as a waited one");
                self.spawn(other);
            }
        }
    }

    /// A background effect: nothing comes back to the machine.
    fn spawn(&mut self, effect: Effect) {
        let node = self.node.clone();
        match effect {
            Effect::RefetchSubscriptionKeys => node.auth.subscription_key_missing(),
            Effect::RefreshPresence { entries, ttl } => {
                actix_web::rt::spawn(async move {
                    for (channel, info) in entries {
                        if let Err(e) = node.engine.presence.add_presence(&channel, info, ttl).await
                        {
                            warn!(error = %e, "presence refresh failed");
                        }
                    }
                });
            }
            Effect::Leave {
                channel,
                state,
                info,
            } => {
                if let Some(subscriber) = self.subscribers.remove(&channel) {
                    subscriber.close();
                }
                let session = self.id;
                actix_web::rt::spawn(async move {
                    leave(&node, &channel, session, &state, info).await;
                });
            }
            Effect::Detach { channel } => {
                self.subscribers.remove(&channel);
                let session = self.id;
                actix_web::rt::spawn(async move { node.detach(&channel, session).await });
            }
            Effect::RemoveUserEntry { key, client } => {
                actix_web::rt::spawn(async move {
                    if let Err(e) = node.engine.presence.remove_presence(&key, &client).await {
                        warn!(error = %e, "removing the user connection entry failed");
                    }
                });
            }
            Effect::Unregister { user } => node.unregister(&user, self.id),
            Effect::KeepSingleConnection {
                channel,
                user,
                client,
            } => {
                actix_web::rt::spawn(async move {
                    keep_single_connection(&node, &channel, user, client).await;
                });
            }
            other => warn!(effect = ?other, "a waited effect spawned without an id"),
        }
    }
}

/// The cluster-wide checks of a connect: the user's connection count (and
/// this connection's entry in it), then revocation.
async fn admit(
    node: &Node,
    user_entry: Option<herald_protocol::ClientInfo>,
    revocation: Option<Revocation>,
) -> Result<(), Refused> {
    if let Some(info) = user_entry {
        // Counted in the engine's presence store under a name no client
        // channel can have, so every node sees it.
        let key = plan::user_connections_key(&info.user);
        let limit = node.client.user_connection_limit;
        match node.engine.presence.presence_stats(&key).await {
            Ok(stats) if stats.num_clients as usize >= limit => return Err(Refused::UserLimit),
            Ok(_) => {}
            Err(e) => return Err(Refused::Engine(e)),
        }
        node.engine
            .presence
            .add_presence(&key, info, node.presence_ttl())
            .await
            .map_err(Refused::Engine)?;
    }
    if let Some(r) = revocation {
        match node
            .engine
            .broker
            .token_revoked(r.token_id.as_deref(), &r.user, r.issued_at, unix_now())
            .await
        {
            Ok(false) => {}
            Ok(true) => return Err(Refused::Revoked),
            Err(e) => return Err(Refused::Engine(e)),
        }
    }
    Ok(())
}

/// `single_connection`: the personal channel's presence says whether the
/// user has another connection; if so, every node closes the user's
/// connections but `client` with 3504 (at most once delivery, as in
/// Centrifugo: a lost control message leaves the older one open).
async fn keep_single_connection(node: &Node, channel: &str, user: String, client: String) {
    let stats = match node.engine.presence.presence_stats(channel).await {
        Ok(stats) => stats,
        Err(e) => {
            warn!(error = %e, "single connection: presence stats failed");
            return;
        }
    };
    if stats.num_clients < 2 {
        return;
    }
    let limit = herald_protocol::Disconnect::CONNECTION_LIMIT;
    let command = herald_bus::ControlCommand::Disconnect {
        user,
        client: String::new(),
        whitelist: vec![client],
        code: limit.code,
        reason: limit.reason.to_string(),
    };
    if let Err(e) = node.engine.broker.publish_control(&command).await {
        warn!(error = %e, "single connection: disconnecting the older connections failed");
    }
}

/// Takes a subscription out of the node: Hub, presence, leave event.
async fn leave(
    node: &Node,
    channel: &str,
    session: u64,
    state: &SubscriptionState,
    info: herald_protocol::ClientInfo,
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

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::transport_connection(self.transport, true);
        if self.abort.is_some() {
            // The writer of a streamed response is only polled while its
            // socket takes bytes: a reader that stopped would keep the close
            // (and this Session) waiting forever.
            let outbox = self.outbox.clone();
            let closed = async move { outbox.closed().await };
            ctx.spawn(wrap_future::<_, Self>(closed).map(|(), _act, ctx| {
                ctx.run_later(CLOSE_LINGER, |act, ctx| {
                    debug!(client = %act.machine.client(), "the reader did not take its close: dropping the connection");
                    if let Some(abort) = &act.abort {
                        abort.abort();
                    }
                    ctx.stop();
                });
            }));
        }
        let commands = std::mem::take(&mut self.first_commands);
        if !commands.is_empty() {
            // The handshake deadline is armed by `Machine::new`; the pump re-arms.
            self.connect_fed = true;
            self.machine.handle_commands(commands, now());
            return self.pump(ctx);
        }
        // The handshake deadline.
        self.rearm(ctx);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        metrics::transport_connection(self.transport, false);
        // If nothing chose a close code, the peer went away: nothing to
        // flush, and not a server disconnect (not counted as one).
        self.outbox.peer_closed(1000);
        self.machine.handle_stopped();
        while let Some(action) = self.machine.poll_action() {
            if let Action::Spawn(effect) = action {
                self.spawn(effect);
            }
        }
        let _ = ctx;
        tracing::debug!(client = %self.machine.client(), "session ended");
    }
}

/// Messages from the socket task; the stream ends when the socket closes.
impl StreamHandler<ClientMessage> for Session {
    fn handle(&mut self, message: ClientMessage, ctx: &mut Context<Self>) {
        if self.transport.unidirectional() {
            // The first message is the connect request; nothing after it
            // is read (the server only pushes).
            if self.connect_fed {
                return;
            }
            match message {
                ClientMessage::Text(text) => match serde_json::from_slice(&text) {
                    Ok(req) => self.feed_connect(req),
                    Err(_) => {
                        metrics::bad_message(Format::Json, "undecodable");
                        self.machine.handle_bad_input();
                    }
                },
                ClientMessage::Binary(_) => {
                    metrics::bad_message(Format::Json, "wrong_type");
                    self.machine.handle_bad_input();
                }
            }
            return self.pump(ctx);
        }
        self.take(&message);
        self.pump(ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Bidirectional emulation: commands of `/emulation` requests, in the
/// order the requests arrived; each is acknowledged once handled.
impl StreamHandler<EmulatedCommands> for Session {
    fn handle(&mut self, commands: EmulatedCommands, ctx: &mut Context<Self>) {
        let message = match self.format {
            Format::Json => ClientMessage::Text(commands.data),
            Format::Protobuf => ClientMessage::Binary(commands.data),
        };
        self.take(&message);
        self.pump(ctx);
        let _ = commands.taken.send(());
    }

    /// The registration ends with the Session; the stream's end says nothing.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// Control commands and gaps, through the bounded mailbox.
impl StreamHandler<SessionEvent> for Session {
    fn handle(&mut self, event: SessionEvent, ctx: &mut Context<Self>) {
        match event {
            SessionEvent::Control(command) => {
                let command = Arc::unwrap_or_clone(command);
                self.machine.handle_control(command, now())
            }
            SessionEvent::Gap(channel) => self.machine.handle_gap(&channel),
        }
        self.pump(ctx);
    }

    /// The node holds a sender while the connection is registered; the
    /// stream's end says nothing about the connection.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// A unidirectional connection's connect request, as the command it stands for.
pub(crate) fn connect_command(req: ConnectRequest) -> Command {
    Command {
        id: 1,
        method: Method::Connect(req),
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
            PushBody::Connect(_) => "push_connect",
            PushBody::Refresh(_) => "push_refresh",
            PushBody::Message(_) | PushBody::Disconnect(_) => "push_message",
        },
        _ => "reply",
    }
}
