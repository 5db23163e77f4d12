//! What happens on the clock: pings and pongs, connection expiry, and the
//! periodic presence refresh, subscription expiry and introspection re-check.

use std::time::Duration;

use herald_auth::{InvalidReason, TokenError};
use herald_protocol::{ClientInfo, Disconnect, Reply, UnsubscribeCode};
use tracing::warn;

use super::{Action, Effect, Machine, Now, EXPIRY_SLACK};
use crate::conn::timer::Timer;
use crate::metrics;
use crate::node::plan;

impl Machine {
    pub(super) fn start_timers(&mut self, now: Now) {
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

    pub(super) fn ping(&mut self, now: Now) {
        let timeout = self.config.pong_timeout;
        // A unidirectional client is pinged but never answers.
        if !timeout.is_zero() && !self.unidirectional {
            if !self.state.ping_sent(now.at) {
                return self.close(Disconnect::NO_PONG);
            }
            self.timers.set(Timer::Pong, now.at + timeout);
        }
        self.send(Reply::Ping);
        self.timers
            .set(Timer::Ping, now.at + self.config.ping_interval);
    }

    pub(super) fn schedule_expiry(&mut self, now: Now) {
        let Some(at) = self.state.expires_at() else {
            return self.timers.stop(Timer::Expiry);
        };
        // With a refresh proxy the backend is asked when the expiry comes;
        // otherwise the client has the grace to refresh.
        let grace = if self.refresh_proxy {
            Duration::ZERO
        } else {
            self.config.expired_close_delay
        };
        let due = at.saturating_add(grace.as_secs()).saturating_sub(now.unix);
        self.timers.set(
            Timer::Expiry,
            now.at + Duration::from_secs(due) + EXPIRY_SLACK,
        );
    }

    pub(super) fn expired_now(&self, now: Now) -> bool {
        self.state.expires_at().is_some_and(|at| at <= now.unix)
    }

    /// Presence refresh, subscription expiry and the introspection re-check,
    /// every `presence_update_interval`.
    pub(super) fn periodic(&mut self, now: Now) {
        self.recheck_introspected(now);
        let asked = self.ask_sub_refresh(now);
        let grace = self.config.expired_sub_close_delay;
        for channel in self.state.expired_subscriptions(now.unix, grace) {
            if asked.contains(&channel) {
                continue;
            }
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
    pub(super) fn recheck_introspected(&mut self, now: Now) {
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

    pub(super) fn rechecked(&mut self, token: &str, active: Option<bool>, now: Now) {
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
