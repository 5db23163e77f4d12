//! The connection state machine: what a command may do in which state, ping
//! and pong bookkeeping, connection and subscription expiry, and the
//! subscription set. Plain Rust with time passed in: the Session actor only
//! moves bytes and timers in and out of it, and the tests here drive it
//! without a socket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_protocol::{Disconnect, ErrorCode, Method};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing but `connect` is acceptable.
    AwaitingConnect,
    /// `connect` is being verified; later commands wait their turn.
    Connecting,
    Connected,
    /// `connect` was answered with an error: the connection is unusable.
    Failed,
}

/// What to do with an incoming command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Queue it; it runs after every command before it.
    Queue,
    /// A pong that answered the outstanding ping.
    PongAccepted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionState {
    pub(crate) subscribed: bool,
    /// Unix seconds; `None` = never.
    pub(crate) expires_at: Option<u64>,
    pub(crate) server_side: bool,
    pub(crate) presence: bool,
    pub(crate) join_leave: bool,
}

#[derive(Debug)]
pub(crate) struct ConnectionState {
    phase: Phase,
    ping_sent: Option<Instant>,
    /// Unix seconds; `None` = the connection never expires.
    expires_at: Option<u64>,
    subscriptions: HashMap<String, SubscriptionState>,
    channel_limit: usize,
}

impl ConnectionState {
    pub(crate) fn new(channel_limit: usize) -> Self {
        Self {
            phase: Phase::AwaitingConnect,
            ping_sent: None,
            expires_at: None,
            subscriptions: HashMap::new(),
            channel_limit,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Classifies a command on arrival (docs/protocol.md, "Commands").
    pub(crate) fn admit(&mut self, method: &Method) -> Result<Admission, Disconnect> {
        match method {
            Method::Pong => {
                if self.phase != Phase::Connected || self.ping_sent.take().is_none() {
                    return Err(Disconnect::BAD_REQUEST);
                }
                Ok(Admission::PongAccepted)
            }
            Method::Unknown | Method::Ping => Err(Disconnect::BAD_REQUEST),
            m if m.is_connect() => {
                if self.phase != Phase::AwaitingConnect {
                    return Err(Disconnect::BAD_REQUEST);
                }
                self.phase = Phase::Connecting;
                Ok(Admission::Queue)
            }
            _ => match self.phase {
                Phase::AwaitingConnect | Phase::Failed => Err(Disconnect::BAD_REQUEST),
                Phase::Connecting | Phase::Connected => Ok(Admission::Queue),
            },
        }
    }

    /// Checked when a queued non-connect command's turn comes.
    pub(crate) fn ready_for(&self, method: &Method) -> Result<(), Disconnect> {
        match (self.phase, method) {
            (_, m) if m.is_connect() => Ok(()),
            (Phase::Connected, Method::Send(_)) => Err(Disconnect::NOT_AVAILABLE),
            (Phase::Connected, _) => Ok(()),
            _ => Err(Disconnect::BAD_REQUEST),
        }
    }

    pub(crate) fn connected(&mut self, expires_at: Option<u64>) {
        self.phase = Phase::Connected;
        self.expires_at = expires_at;
    }

    pub(crate) fn connect_failed(&mut self) {
        self.phase = Phase::Failed;
    }

    /// Records a server ping; returns false if the previous one is unanswered
    /// (the caller's pong check will close the connection).
    pub(crate) fn ping_sent(&mut self, now: Instant) -> bool {
        if self.ping_sent.is_some() {
            return false;
        }
        self.ping_sent = Some(now);
        true
    }

    /// True when the ping sent at or before `now - timeout` is still unanswered.
    pub(crate) fn pong_overdue(&self, now: Instant, timeout: Duration) -> bool {
        matches!(self.ping_sent, Some(sent) if now.duration_since(sent) >= timeout)
    }

    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    pub(crate) fn refreshed(&mut self, expires_at: Option<u64>) {
        self.expires_at = expires_at;
    }

    /// The connection ran past its expiry plus grace without a refresh.
    pub(crate) fn expired(&self, now_unix: u64, grace: Duration) -> bool {
        matches!(self.expires_at, Some(at) if now_unix >= at.saturating_add(grace.as_secs()))
    }

    /// Reserves a subscription slot (105 if already there, 106 over the limit).
    pub(crate) fn begin_subscribe(
        &mut self,
        channel: &str,
        server_side: bool,
    ) -> Result<(), ErrorCode> {
        if self.subscriptions.contains_key(channel) {
            return Err(ErrorCode::AlreadySubscribed);
        }
        if self.channel_limit > 0 && self.subscriptions.len() >= self.channel_limit {
            return Err(ErrorCode::LimitExceeded);
        }
        self.subscriptions.insert(
            channel.to_owned(),
            SubscriptionState {
                subscribed: false,
                expires_at: None,
                server_side,
                presence: false,
                join_leave: false,
            },
        );
        Ok(())
    }

    /// Completes a reserved subscription. False if it was dropped meanwhile.
    pub(crate) fn subscribed(&mut self, channel: &str, state: SubscriptionState) -> bool {
        match self.subscriptions.get_mut(channel) {
            Some(slot) => {
                *slot = SubscriptionState {
                    subscribed: true,
                    ..state
                };
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, channel: &str) -> Option<SubscriptionState> {
        self.subscriptions.remove(channel)
    }

    pub(crate) fn subscription(&self, channel: &str) -> Option<&SubscriptionState> {
        self.subscriptions.get(channel)
    }

    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        self.subscriptions
            .get(channel)
            .is_some_and(|s| s.subscribed)
    }

    pub(crate) fn set_subscription_expiry(&mut self, channel: &str, expires_at: Option<u64>) {
        if let Some(s) = self.subscriptions.get_mut(channel) {
            s.expires_at = expires_at;
        }
    }

    /// Subscriptions past expiry plus grace.
    pub(crate) fn expired_subscriptions(&self, now_unix: u64, grace: Duration) -> Vec<String> {
        self.subscriptions
            .iter()
            .filter(|(_, s)| {
                s.subscribed
                    && matches!(s.expires_at, Some(at) if now_unix >= at.saturating_add(grace.as_secs()))
            })
            .map(|(c, _)| c.clone())
            .collect()
    }

    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (&String, &SubscriptionState)> {
        self.subscriptions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::{ConnectRequest, PublishRequest, SendRequest};

    fn connect() -> Method {
        Method::Connect(ConnectRequest::default())
    }
    fn publish() -> Method {
        Method::Publish(PublishRequest::default())
    }

    #[test]
    fn connect_must_come_first_and_once() {
        let mut s = ConnectionState::new(10);
        assert_eq!(s.admit(&publish()), Err(Disconnect::BAD_REQUEST));
        let mut s = ConnectionState::new(10);
        assert_eq!(s.admit(&connect()), Ok(Admission::Queue));
        // Commands behind an unanswered connect wait their turn.
        assert_eq!(s.admit(&publish()), Ok(Admission::Queue));
        assert_eq!(s.ready_for(&publish()), Err(Disconnect::BAD_REQUEST));
        s.connected(None);
        assert_eq!(s.ready_for(&publish()), Ok(()));
        assert_eq!(s.admit(&connect()), Err(Disconnect::BAD_REQUEST));
    }

    #[test]
    fn failed_connect_makes_connection_unusable() {
        let mut s = ConnectionState::new(10);
        s.admit(&connect()).unwrap();
        s.admit(&publish()).unwrap();
        s.connect_failed();
        assert_eq!(s.ready_for(&publish()), Err(Disconnect::BAD_REQUEST));
        assert_eq!(s.admit(&publish()), Err(Disconnect::BAD_REQUEST));
    }

    #[test]
    fn ping_command_unknown_and_send() {
        let mut s = ConnectionState::new(10);
        s.admit(&connect()).unwrap();
        s.connected(None);
        assert_eq!(s.admit(&Method::Ping), Err(Disconnect::BAD_REQUEST));
        assert_eq!(s.admit(&Method::Unknown), Err(Disconnect::BAD_REQUEST));
        let send = Method::Send(SendRequest::default());
        assert_eq!(s.admit(&send), Ok(Admission::Queue));
        assert_eq!(s.ready_for(&send), Err(Disconnect::NOT_AVAILABLE));
    }

    #[test]
    fn pong_rules() {
        let t0 = Instant::now();
        let mut s = ConnectionState::new(10);
        assert_eq!(s.admit(&Method::Pong), Err(Disconnect::BAD_REQUEST));
        let mut s = ConnectionState::new(10);
        s.admit(&connect()).unwrap();
        s.connected(None);
        // No ping outstanding.
        assert_eq!(s.admit(&Method::Pong), Err(Disconnect::BAD_REQUEST));
        let mut s = ConnectionState::new(10);
        s.admit(&connect()).unwrap();
        s.connected(None);
        assert!(s.ping_sent(t0));
        assert!(!s.pong_overdue(t0 + Duration::from_millis(400), Duration::from_millis(500)));
        assert!(s.pong_overdue(t0 + Duration::from_millis(500), Duration::from_millis(500)));
        assert_eq!(s.admit(&Method::Pong), Ok(Admission::PongAccepted));
        assert!(!s.pong_overdue(t0 + Duration::from_secs(9), Duration::from_millis(500)));
        // A second pong for the same ping.
        assert_eq!(s.admit(&Method::Pong), Err(Disconnect::BAD_REQUEST));
    }

    #[test]
    fn expiry_with_grace() {
        let mut s = ConnectionState::new(10);
        s.admit(&connect()).unwrap();
        s.connected(Some(100));
        let grace = Duration::from_secs(25);
        assert!(!s.expired(100, grace));
        assert!(!s.expired(124, grace));
        assert!(s.expired(125, grace));
        s.refreshed(Some(200));
        assert!(!s.expired(125, grace));
        s.refreshed(None);
        assert!(!s.expired(u64::MAX, grace));
    }

    #[test]
    fn subscription_slots() {
        let mut s = ConnectionState::new(2);
        s.begin_subscribe("a", false).unwrap();
        assert_eq!(
            s.begin_subscribe("a", false),
            Err(ErrorCode::AlreadySubscribed)
        );
        s.begin_subscribe("b", false).unwrap();
        assert_eq!(s.begin_subscribe("c", false), Err(ErrorCode::LimitExceeded));
        assert!(!s.is_subscribed("a"));
        let state = SubscriptionState {
            subscribed: false,
            expires_at: Some(10),
            server_side: false,
            presence: true,
            join_leave: false,
        };
        assert!(s.subscribed("a", state.clone()));
        assert!(s.is_subscribed("a"));
        assert!(s.remove("b").is_some());
        assert!(!s.subscribed("b", state));
        assert_eq!(
            s.expired_subscriptions(10, Duration::ZERO),
            vec!["a".to_string()]
        );
        assert!(s.expired_subscriptions(9, Duration::ZERO).is_empty());
    }
}
