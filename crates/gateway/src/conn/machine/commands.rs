//! The commands after connect: subscribe, unsubscribe, publish, presence,
//! history, refresh, sub_refresh, and the subscriptions the server adds.

use herald_auth::{DeltaType, SubOptions, SubscriptionClaims, TokenError};
use herald_bus::{BusError, HistoryQuery, PublishOptions};
use herald_identity::Principal;
use herald_protocol::{
    CommandResult, Disconnect, ErrorCode, ErrorReply, HistoryRequest, Publication, PublishRequest,
    Push, PushBody, RawJson, RefreshRequest, RefreshResult, Reply, RpcRequest, RpcResult,
    StreamPosition, SubRefreshRequest, SubRefreshResult, SubscribePush, SubscribeRequest,
    SubscribeResult, UnsubscribeRequest, SUBSCRIBE_FLAG_REJECT_UNRECOVERED,
};
use herald_proxy::{Answer, Failure, RpcReply};
use tracing::{debug, warn};

use super::proxied::{HeldPublish, SubscribeGrant};
use super::{engine_code, ttl_from, Action, Effect, Machine, Now, Step};
use crate::codes::{self, Stage, Wire};
use crate::metrics;
use crate::node::plan::{self, Position, SubscribeFlags, SubscribePlan};

/// Whether a subscribe gets delta compression: it asked for a type the
/// namespace allows (Centrifugo answers `delta: false`, not an error, when
/// the namespace does not allow it, whether or not the subscription is
/// positioned). A subscription with a tags filter (`tf`) never gets it
/// (centrifuge PR #634).
fn negotiate_delta(req: &SubscribeRequest, options: &herald_auth::ChannelOptions) -> bool {
    // A filtered subscription gets full publications and `delta: false`
    // (Centrifugo's rule, centrifuge PR #634).
    req.tf.is_none()
        && DeltaType::parse(&req.delta).is_some_and(|t| options.allowed_delta_types.contains(&t))
}

impl Machine {
    pub(super) fn subscribe(&mut self, id: u32, req: SubscribeRequest, now: Now) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        if !req.delta.is_empty() && DeltaType::parse(&req.delta).is_none() {
            debug!(client = %self.client, "unknown delta type");
            return self.close(Disconnect::BAD_REQUEST);
        }
        match self.policy.resolve(&req.channel) {
            Err(e) => return self.error(id, e.code()),
            Ok(r) if !self.may_use(&r) => return self.error(id, ErrorCode::NotAvailable),
            Ok(_) => {}
        }
        if let Err(code) = self.state.begin_subscribe(&req.channel, false) {
            return self.error(id, code);
        }
        if req.token.is_empty() {
            let proxy = match self.policy.resolve(&req.channel) {
                Ok(r) if r.subscribe_proxied() => Some(r.options.subscribe_proxy_name.clone()),
                _ => None,
            };
            if let Some(proxy) = proxy {
                // The backend decides instead of the `allow_subscribe_*` flags.
                let effect = Effect::ProxySubscribe {
                    channel: req.channel.clone(),
                    data: req.data.clone(),
                    proxy,
                };
                let step = Step::Subscribe {
                    id,
                    req: Box::new(req),
                    plan: None,
                };
                return self.wait(effect, step);
            }
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
    pub(super) fn subscribe_checked(
        &mut self,
        id: u32,
        req: SubscribeRequest,
        checked: Option<Result<SubscriptionClaims, TokenError>>,
        now: Now,
    ) {
        let grant = match checked {
            Some(Ok(claims)) => {
                if !self.claims_match(&claims, &req.channel) {
                    warn!(client = %self.client, "subscription token for another user, channel or client");
                    self.state.remove(&req.channel);
                    return self.close(Disconnect::INVALID_TOKEN);
                }
                let expires_at = claims.expires_at();
                SubscribeGrant {
                    override_: claims.override_,
                    info: claims.info,
                    data: claims.data,
                    expires_at,
                }
            }
            Some(Err(e)) => {
                debug!(client = %self.client, reason = %e, "subscription token rejected");
                self.state.remove(&req.channel);
                return self.subscription_token_refused(id, Stage::Subscribe, &e);
            }
            None => {
                let policy = self.policy.clone();
                let allowed = self.config.insecure
                    || self.granted.contains(&req.channel)
                    || policy.resolve(&req.channel).is_ok_and(|resolved| {
                        !resolved.private && policy.can_subscribe(&resolved, &self.user)
                    });
                if !allowed {
                    self.state.remove(&req.channel);
                    return self.error(id, ErrorCode::PermissionDenied);
                }
                SubscribeGrant::default()
            }
        };
        self.subscribe_granted(id, req, grant, now);
    }

    /// Subscribes with what the token or the backend granted.
    pub(super) fn subscribe_granted(
        &mut self,
        id: u32,
        req: SubscribeRequest,
        grant: SubscribeGrant,
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
        let options = grant.override_.apply(resolved.options);
        if grant.expires_at.is_some_and(|at| at <= now.unix) {
            self.state.remove(&req.channel);
            return self.error(id, ErrorCode::TokenExpired);
        }
        // After the grant, as Centrifugo checks it after its OnSubscribe.
        let tags_filter = match plan::tags_filter(req.tf.as_ref(), &options) {
            Ok(filter) => filter,
            Err(refusal) => {
                debug!(client = %self.client, channel = %req.channel, reason = ?refusal, "tags filter refused");
                self.state.remove(&req.channel);
                return self.error(id, ErrorCode::BadRequest);
            }
        };
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
        let info = self.info_with(grant.info.clone());
        let mut plan = SubscribePlan::new(req.channel.clone(), &options, meta_ttl, flags, info);
        plan.expires_at = grant.expires_at;
        plan.refreshed_by_backend = resolved.options.sub_refresh_proxy_enabled;
        plan.data = grant.data;
        plan.tags_filter = tags_filter;
        plan.delta = negotiate_delta(&req, &options);
        self.chan_info.insert(req.channel.clone(), grant.info);
        self.wait(
            Effect::Subscribe { plan: plan.clone() },
            Step::Subscribe {
                id,
                req: Box::new(req),
                plan: Some(Box::new(plan)),
            },
        );
    }

    pub(super) fn subscribed(
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

    pub(super) fn unsubscribe(&mut self, id: u32, req: UnsubscribeRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        self.drop_subscription(&req.channel);
        self.reply(id, CommandResult::Unsubscribe);
    }

    /// A subscription the server adds after connect (control): announced
    /// with a `subscribe` push once the node is subscribed. It does not hold
    /// up the client's commands.
    pub(super) fn server_subscribe(
        &mut self,
        channel: String,
        info: Option<RawJson>,
        data: Option<RawJson>,
    ) {
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

    pub(super) fn server_subscribed(
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
                // A subscribe push has no publications: what the subscribe
                // recovered (`auto_cache_recover`) follows it, before live ones.
                for publication in result.publications {
                    self.send(Reply::Push(Push {
                        channel: plan.channel.clone(),
                        body: PushBody::Publication(publication),
                    }));
                }
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

    /// A command whose payload is not JSON (protobuf clients only): 107,
    /// so no JSON client ever receives it. A failed connect leaves the
    /// connection as any refused connect does; an id-less `send` cannot be
    /// answered and closes as a bad request.
    pub(super) fn payload_not_json(&mut self, id: u32, method: &'static str) {
        debug!(client = %self.client, method, "command payload is not JSON");
        if id == 0 {
            return self.close(Disconnect::BAD_REQUEST);
        }
        if method == "connect" {
            self.state.connect_failed();
        }
        self.error(id, ErrorCode::BadRequest);
    }

    pub(super) fn publish(&mut self, id: u32, req: PublishRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        let policy = self.policy.clone();
        let resolved = match policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => return self.error(id, e.code()),
        };
        if !self.may_use(&resolved) {
            return self.error(id, ErrorCode::NotAvailable);
        }
        let Some(data) = req.data.filter(|d| !d.is_null()) else {
            return self.error(id, ErrorCode::BadRequest);
        };
        let data = if resolved.options.binary_data() {
            binary_data(data)
        } else {
            match json_data(data) {
                Some(data) => data,
                None => {
                    debug!(client = %self.client, "publish payload is not JSON");
                    metrics::payload_not_json();
                    return self.error(id, ErrorCode::BadRequest);
                }
            }
        };
        let history = plan::history_options(&policy, &resolved);
        let publication = Publication {
            data,
            info: Some(self.info_with(self.chan_info.get(&req.channel).cloned().flatten())),
            offset: 0,
            tags: Default::default(),
            delta: resolved.options.delta_publish,
        };
        let options = PublishOptions {
            history,
            idempotency_key: None,
        };
        if resolved.options.publish_proxy_enabled {
            // The backend decides instead of the `allow_publish_*` flags,
            // and may rewrite the publication.
            let effect = Effect::ProxyPublish {
                channel: req.channel.clone(),
                data: publication.data.clone(),
                proxy: resolved.options.publish_proxy_name.clone(),
            };
            let binary = resolved.options.binary_data();
            let step = Step::PublishProxied {
                id,
                publish: Box::new(HeldPublish {
                    channel: req.channel,
                    publication,
                    options,
                    binary,
                }),
            };
            return self.wait(effect, step);
        }
        let subscribed = self.state.is_subscribed(&req.channel);
        if !self.config.insecure && !policy.can_publish(&resolved, &self.user, subscribed) {
            return self.error(id, ErrorCode::PermissionDenied);
        }
        self.wait(
            Effect::Publish {
                channel: req.channel,
                publication,
                options,
            },
            Step::Publish { id },
        );
    }

    pub(super) fn presence(&mut self, id: u32, channel: String, stats: bool) {
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

    pub(super) fn history(&mut self, id: u32, req: HistoryRequest) {
        if req.channel.is_empty() {
            return self.close(Disconnect::BAD_REQUEST);
        }
        let policy = self.policy.clone();
        let resolved = match policy.resolve(&req.channel) {
            Ok(r) => r,
            Err(e) => return self.error(id, e.code()),
        };
        if !resolved.options.history_enabled() || !self.may_use(&resolved) {
            return self.error(id, ErrorCode::NotAvailable);
        }
        let binary = resolved.options.binary_data();
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
            Step::History { id, binary },
        );
    }

    pub(super) fn refresh(&mut self, id: u32, req: RefreshRequest) {
        // With a refresh proxy the server refreshes: a client's refresh is
        // a protocol error (as in Centrifugo).
        if req.token.is_empty() || self.refresh_proxy {
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

    pub(super) fn refreshed(
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
    pub(super) fn sub_refresh(&mut self, id: u32, req: SubRefreshRequest) {
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

    pub(super) fn sub_refreshed(
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

/// The data of a binary channel: what a protobuf client sent as bytes is
/// already marked so; JSON text (compact, exactly the bytes sent) becomes
/// those bytes.
fn binary_data(data: RawJson) -> RawJson {
    if data.is_binary() {
        data
    } else {
        RawJson::binary(data.get().as_bytes())
    }
}

/// The data of a JSON channel: bytes a protobuf client sent that did not
/// decode as plain JSON (pretty JSON, or not JSON at all) are parsed here;
/// None when they are not JSON.
fn json_data(data: RawJson) -> Option<RawJson> {
    if !data.is_binary() {
        return Some(data);
    }
    let bytes = data.binary_bytes()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    RawJson::from_str(text).ok()
}

/// `rpc`: the backend answers (`rpc.proxy`), or 108 when the method's
/// namespace has no proxy (docs/proxy.md).
impl Machine {
    pub(super) fn rpc(&mut self, id: u32, req: RpcRequest) {
        let proxied = self
            .rpc
            .as_ref()
            .is_some_and(|rpc| rpc.proxied(&req.method));
        if !proxied {
            return self.error(id, ErrorCode::NotAvailable);
        }
        let proxy = self
            .rpc
            .as_ref()
            .and_then(|rpc| rpc.proxy_for(&req.method))
            .unwrap_or_default()
            .to_owned();
        let effect = Effect::Rpc {
            method: req.method,
            data: req.data,
            proxy,
        };
        self.wait(effect, Step::Rpc { id });
    }

    pub(super) fn rpc_answered(&mut self, id: u32, answer: Result<Answer<RpcReply>, Failure>) {
        let answer = answer.and_then(|a| {
            a.try_map(|reply| {
                reply
                    .data
                    .map(|d| d.into_data(self.takes_binary_data))
                    .transpose()
            })
        });
        if let Some(data) = self.backend_result(id, answer, "rpc") {
            self.reply(id, CommandResult::Rpc(RpcResult { data }));
        }
    }

    /// A proxy's answer: its result, or (answered here) the backend's error
    /// for the client as it is, its disconnect, or a failure as error 100
    /// (temporary: the SDK may try again).
    pub(super) fn backend_result<T>(
        &mut self,
        id: u32,
        answer: Result<Answer<T>, Failure>,
        proxy: &'static str,
    ) -> Option<T> {
        match answer {
            Ok(Answer::Result(result)) => return Some(result),
            Ok(Answer::Error {
                code,
                message,
                temporary,
            }) => self.error_reply(
                id,
                ErrorReply {
                    code,
                    message,
                    temporary,
                },
            ),
            Ok(Answer::Disconnect { code, reason }) => {
                self.close(Disconnect::custom(code, &reason));
            }
            Err(failure) => {
                warn!(client = %self.client, proxy, error = %failure, "proxy call failed");
                self.error(id, ErrorCode::Internal);
            }
        }
        None
    }
}
