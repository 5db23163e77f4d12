//! `connect`: credentials, the node's and the cluster's admission, the
//! server-side subscriptions of the token, one effect after another.

use std::collections::BTreeMap;

use herald_auth::{ChannelError, ConnectionClaims, SubOptions, TokenError};
use herald_identity::Principal;
use herald_protocol::{
    CommandResult, ConnectRequest, ConnectResult, Disconnect, ErrorCode, Push, PushBody, RawJson,
    Reply, StreamPosition, SubscribeRequest, SubscribeResult,
};
use herald_proxy::{Answer, ConnectGrant, Failure};
use tracing::{debug, info, warn};

use super::proxied;
use super::{
    engine_code, ttl_from, Action, Effect, Machine, Now, Outcome, Refused, Revocation, Step,
};
use crate::codes::{self, Stage, Wire};
use crate::conn::timer::Timer;
use crate::metrics;
use crate::node::plan::{Position, SubscribeFlags, SubscribePlan};

/// A connect between its effects.
pub(super) struct Connecting {
    id: u32,
    req: ConnectRequest,
    token: String,
    claims: Option<ConnectionClaims>,
    expires_at: Option<u64>,
    /// Server-side subscriptions, subscribed one after another.
    plans: Vec<SubscribePlan>,
    /// Outcomes of the plans subscribed so far.
    results: Vec<Result<(SubscribeResult, Option<Position>), ErrorCode>>,
    /// The backend said who this is (connect proxy): no token to revoke.
    proxied: bool,
    /// The connect result's `data` (from the connect proxy).
    data: Option<RawJson>,
}

impl Machine {
    pub(super) fn connect(&mut self, id: u32, mut req: ConnectRequest, now: Now) {
        let bearer = self.upgrade_token.take();
        if !req.headers.is_empty() {
            self.emulated_headers = std::sync::Arc::new(std::mem::take(&mut req.headers));
        }
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
            proxied: false,
            data: None,
        };
        if connecting.token.is_empty() {
            if let Some(identity) = &self.tls_identity {
                // Possession of the certificate's key proved who this is.
                self.user = identity.clone();
            } else if let Some(user) = &self.header_user {
                // A trusted proxy in front said who this is
                // (`client.user_id_http_header`).
                self.user = user.clone();
            } else if self.connect_proxy {
                // The backend says who this is (cookies, a session).
                let effect = Effect::ProxyConnect {
                    name: connecting.req.name.clone(),
                    version: connecting.req.version.clone(),
                    data: connecting.req.data.clone(),
                };
                return self.wait(effect, Step::Connect(Box::new(connecting)));
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

    pub(super) fn connect_resumed(&mut self, connecting: Connecting, outcome: Outcome, now: Now) {
        match outcome {
            Outcome::Verified(checked) => self.connect_checked(connecting, checked, now),
            Outcome::ConnectProxied(answer) => self.connect_proxied(connecting, answer, now),
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

    pub(super) fn connect_checked(
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
        if principal.claims.user.is_empty() && self.config.disallow_anonymous_connection_tokens {
            info!(client = %self.client, "anonymous connection token refused");
            return self.close(Disconnect::PERMISSION_DENIED);
        }
        if principal.introspected {
            self.introspected_token = Some(std::mem::take(&mut connecting.token));
        }
        self.granted = principal.channels.into_iter().collect();
        connecting.claims = Some(principal.claims);
        self.connect_as(connecting, now);
    }

    /// The connect proxy's answer: who the connection is, a refusal for
    /// the client, a disconnect, or a failure (error 100, temporary).
    pub(super) fn connect_proxied(
        &mut self,
        mut connecting: Connecting,
        answer: Result<Answer<ConnectGrant>, Failure>,
        now: Now,
    ) {
        let answer = answer.and_then(|a| a.try_map(connection_grant));
        let Some((claims, data, meta)) = self.backend_result(connecting.id, answer, "connect")
        else {
            self.state.connect_failed();
            return;
        };
        connecting.claims = Some(claims);
        connecting.proxied = true;
        connecting.data = data;
        self.meta = meta;
        self.connect_as(connecting, now);
    }

    /// Connect with checked credentials (`claims` None: no token).
    pub(super) fn connect_as(&mut self, mut connecting: Connecting, now: Now) {
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

    pub(super) fn connect_registered(&mut self, mut connecting: Connecting) {
        self.registered = Some(self.user.clone());
        metrics::METRICS.connections_accepted.inc();
        // Server-side subscriptions: `subs` takes precedence over `channels`.
        let mut wanted: Vec<(String, Option<SubOptions>)> = Vec::new();
        if let Some(c) = &connecting.claims {
            wanted.extend(c.subs.iter().map(|(ch, o)| (ch.clone(), Some(o.clone()))));
            for ch in &c.channels {
                if !c.subs.contains_key(ch) {
                    wanted.push((ch.clone(), None));
                }
            }
        }
        if let Some(personal) = self.personal_channel() {
            if !wanted.iter().any(|(ch, _)| *ch == personal) {
                wanted.push((personal, None));
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
        let limited = self.config.user_connection_limit > 0 && !self.user.is_empty();
        let user_entry = limited.then(|| self.info_with(None));
        let token_checked = connecting.claims.is_some() && !connecting.proxied;
        let revocation = token_checked.then(|| Revocation {
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

    pub(super) fn connect_admitted(
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
    pub(super) fn connect_subscribe_next(&mut self, connecting: Connecting, now: Now) {
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
            data,
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
        // With a refresh proxy the server refreshes: the client is not told.
        let told = expires_at.filter(|_| !self.refresh_proxy);
        let result = ConnectResult {
            client: self.client.clone(),
            version: self.version.to_owned(),
            expires: told.is_some(),
            ttl: ttl_from(told, now.unix),
            data,
            subs,
            ping,
            pong: ping > 0 && !self.config.pong_timeout.is_zero() && !self.unidirectional,
            session: self.session.clone(),
            node: self.node.clone(),
            time: if self.config.connect_include_server_time {
                now.unix_ms
            } else {
                0
            },
        };
        if self.unidirectional {
            self.send(Reply::Push(Push {
                channel: String::new(),
                body: PushBody::Connect(result),
            }));
        } else {
            self.reply(id, CommandResult::Connect(result));
        }
        for (channel, position) in live {
            self.actions.push_back(Action::GoLive { channel, position });
        }
        if self
            .config
            .subscribe_to_user_personal_channel
            .single_connection
        {
            if let Some(channel) = self.personal_channel() {
                self.actions
                    .push_back(Action::Spawn(Effect::KeepSingleConnection {
                        channel,
                        user: self.user.clone(),
                        client: self.client.clone(),
                    }));
            }
        }
        debug!(client = %self.client, user = %self.user, "connected");
        self.start_timers(now);
    }

    /// The user's personal channel, when connections subscribe to it
    /// (`client.subscribe_to_user_personal_channel`; not for anonymous).
    fn personal_channel(&self) -> Option<String> {
        let personal = &self.config.subscribe_to_user_personal_channel;
        (personal.enabled && !self.user.is_empty()).then(|| personal.channel(&self.user))
    }

    pub(super) fn server_side_plan(
        &mut self,
        channel: &str,
        sub_options: Option<SubOptions>,
        requested: Option<&SubscribeRequest>,
    ) -> Result<SubscribePlan, ErrorCode> {
        let policy = self.policy.clone();
        let resolved = policy.resolve(channel).map_err(ChannelError::code)?;
        if !self.may_use(&resolved) {
            return Err(ErrorCode::NotAvailable);
        }
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
}

/// The connect proxy's result as the claims a token would carry, the
/// connect result's `data`, and the connection's `meta`.
fn connection_grant(
    grant: ConnectGrant,
) -> Result<(ConnectionClaims, Option<RawJson>, Option<RawJson>), Failure> {
    let mut subs = BTreeMap::new();
    for (channel, sub) in grant.subs {
        let options = SubOptions {
            info: proxied::json(sub.info)?,
            data: proxied::json(sub.data)?,
            override_: sub.override_,
        };
        subs.insert(channel, options);
    }
    let claims = ConnectionClaims {
        user: grant.user,
        expire_at: grant.expire_at,
        info: proxied::json(grant.info)?,
        channels: grant.channels,
        subs,
        ..Default::default()
    };
    Ok((claims, proxied::json(grant.data)?, grant.meta))
}
