//! What the backend decides through the channel and refresh proxies:
//! a subscribe without a token, a client publication, the connection's
//! and a subscription's expiry (docs/proxy.md). The connect and RPC
//! proxies live with their commands.

use herald_auth::ChannelOverride;
use herald_bus::PublishOptions;
use herald_protocol::{Disconnect, Publication, RawJson, SubscribeRequest, UnsubscribeCode};
use herald_proxy::{Answer, Failure, Payload, PublishGrant, RefreshGrant, SubscriptionGrant};
use tracing::{debug, info, warn};

use super::{Action, Effect, Machine, Now, Step};

/// What a subscription token or the subscribe proxy granted.
#[derive(Debug, Default)]
pub(super) struct SubscribeGrant {
    pub(super) override_: ChannelOverride,
    pub(super) info: Option<RawJson>,
    pub(super) data: Option<RawJson>,
    pub(super) expires_at: Option<u64>,
}

/// A client publication waiting for the publish proxy's answer.
#[derive(Debug)]
pub(super) struct HeldPublish {
    pub(super) channel: String,
    pub(super) publication: Publication,
    pub(super) options: PublishOptions,
    /// The channel's data is bytes.
    pub(super) binary: bool,
}

/// How long a refresh the backend did not answer waits to be asked again.
pub(super) const REFRESH_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

impl Machine {
    /// The subscribe proxy's answer: subscribe with what it grants, or
    /// the backend's error, disconnect, or error 100.
    pub(super) fn subscribe_proxied(
        &mut self,
        id: u32,
        req: SubscribeRequest,
        answer: Result<Answer<SubscriptionGrant>, Failure>,
        now: Now,
    ) {
        let binary = self
            .policy
            .resolve(&req.channel)
            .is_ok_and(|r| r.options.binary_data());
        let answer = answer.and_then(|a| {
            a.try_map(|grant| {
                Ok(SubscribeGrant {
                    override_: grant.override_,
                    info: json(grant.info)?,
                    data: grant.data.map(|d| d.into_data(binary)).transpose()?,
                    expires_at: grant.expire_at,
                })
            })
        });
        match self.backend_result(id, answer, "subscribe") {
            Some(grant) => self.subscribe_granted(id, req, grant, now),
            None => {
                self.state.remove(&req.channel);
            }
        }
    }

    /// The publish proxy's answer: publish, as the backend rewrote it.
    pub(super) fn publish_proxied(
        &mut self,
        id: u32,
        held: HeldPublish,
        answer: Result<Answer<PublishGrant>, Failure>,
    ) {
        let HeldPublish {
            channel,
            mut publication,
            mut options,
            binary,
        } = held;
        let answer = answer.and_then(|a| {
            a.try_map(|mut grant| {
                let data = grant.data.take().map(|d| d.into_data(binary)).transpose()?;
                Ok((grant, data))
            })
        });
        let Some((grant, data)) = self.backend_result(id, answer, "publish") else {
            return;
        };
        if let Some(data) = data {
            publication.data = data;
        }
        if grant.skip_history {
            options.history = None;
        }
        publication.tags = grant.tags;
        publication.delta |= grant.delta;
        options.idempotency_key = grant.idempotency_key;
        self.wait(
            Effect::Publish {
                channel,
                publication,
                options,
            },
            Step::Publish { id },
        );
    }

    /// The connection's expiry came, with a refresh proxy: ask the backend
    /// (once at a time).
    pub(super) fn ask_refresh(&mut self, now: Now) {
        if self.proxy_refresh.is_some() || !self.expired_now(now) {
            return self.schedule_expiry(now);
        }
        let id = self.effect_id();
        self.proxy_refresh = Some(id);
        self.actions.push_back(Action::Run {
            id,
            effect: Effect::ProxyRefresh,
        });
    }

    /// The refresh proxy's answer: expired closes (3005), a new expiry
    /// moves it; anything else is asked again later.
    pub(super) fn refresh_proxied(
        &mut self,
        answer: Result<Answer<RefreshGrant>, Failure>,
        now: Now,
    ) {
        match answer {
            Ok(Answer::Result(grant)) if grant.expired => {
                info!(client = %self.client, "backend says the connection expired");
                self.close(Disconnect::EXPIRED);
            }
            Ok(Answer::Result(grant)) => {
                match json(grant.info) {
                    Ok(Some(info)) => self.conn_info = Some(info),
                    Ok(None) => {}
                    Err(e) => {
                        warn!(client = %self.client, error = %e, "refresh proxy info ignored")
                    }
                }
                if grant.meta.is_some() {
                    self.meta = grant.meta;
                }
                self.state.refreshed(grant.expire_at);
                self.schedule_expiry(now);
            }
            Ok(Answer::Disconnect { code, reason }) => {
                self.close(Disconnect::custom(code, &reason))
            }
            Ok(Answer::Error { code, .. }) => {
                self.refresh_later("refresh", &format!("error {code}"), now)
            }
            Err(failure) => self.refresh_later("refresh", &failure.to_string(), now),
        }
    }

    fn refresh_later(&mut self, proxy: &'static str, why: &str, now: Now) {
        warn!(client = %self.client, proxy, error = why, "proxy refresh failed; asked again later");
        self.timers
            .set(crate::conn::timer::Timer::Expiry, now.at + REFRESH_RETRY);
    }

    /// Expired subscriptions of namespaces with a sub_refresh proxy: ask
    /// the backend for each (one call per channel at a time). Returns the
    /// channels asked about, which the expiry grace does not end.
    pub(super) fn ask_sub_refresh(&mut self, now: Now) -> Vec<String> {
        let policy = self.policy.clone();
        let mut proxied = Vec::new();
        for channel in self
            .state
            .expired_subscriptions(now.unix, std::time::Duration::ZERO)
        {
            let Ok(resolved) = policy.resolve(&channel) else {
                continue;
            };
            if !resolved.options.sub_refresh_proxy_enabled {
                continue;
            }
            proxied.push(channel.clone());
            if self.sub_refreshes.values().any(|c| *c == channel) {
                continue;
            }
            let id = self.effect_id();
            self.sub_refreshes.insert(id, channel.clone());
            let proxy = resolved.options.sub_refresh_proxy_name.clone();
            self.actions.push_back(Action::Run {
                id,
                effect: Effect::ProxySubRefresh { channel, proxy },
            });
        }
        proxied
    }

    /// The sub_refresh proxy's answer: expired unsubscribes (2502… as the
    /// grace would), a new expiry moves it; a failure is asked again at the
    /// next tick.
    pub(super) fn sub_refresh_proxied(
        &mut self,
        channel: &str,
        answer: Result<Answer<RefreshGrant>, Failure>,
    ) {
        if self.state.subscription(channel).is_none() {
            return;
        }
        match answer {
            Ok(Answer::Result(grant)) if grant.expired => {
                debug!(client = %self.client, channel, "backend says the subscription expired");
                self.server_unsubscribe(channel, UnsubscribeCode::Expired);
            }
            Ok(Answer::Result(grant)) => {
                match json(grant.info) {
                    Ok(Some(info)) => {
                        self.chan_info.insert(channel.to_owned(), Some(info));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(client = %self.client, error = %e, "sub_refresh proxy info ignored")
                    }
                }
                self.state.set_subscription_expiry(channel, grant.expire_at);
            }
            Ok(Answer::Disconnect { code, reason }) => {
                self.close(Disconnect::custom(code, &reason))
            }
            Ok(Answer::Error { code, .. }) => {
                warn!(client = %self.client, channel, code, "sub_refresh proxy answered an error; asked again later")
            }
            Err(failure) => {
                warn!(client = %self.client, channel, error = %failure, "sub_refresh proxy failed; asked again later")
            }
        }
    }
}

/// An `info` the backend sent, as JSON.
pub(super) fn json(payload: Option<Payload>) -> Result<Option<RawJson>, Failure> {
    payload.map(Payload::into_json).transpose()
}
