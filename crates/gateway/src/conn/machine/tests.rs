//! The protocol's rules, tested on the machine alone: feed commands, answer
//! effects with canned outcomes, advance a fake clock, read the replies (in
//! the style of quinn-proto's test `Pair`). No process, no port, no actix.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_auth::{
    ChannelConfig, ChannelOptions, ChannelPolicy, ConnectionClaims, InvalidReason, NamespaceConfig,
    PublicationDataFormat, SubOptions, SubscriptionClaims, TokenError,
};
use herald_bus::{BusError, ControlCommand, HistoryPage};
use herald_identity::Principal;
use herald_protocol::{
    decode_frame, CommandResult, Disconnect, PresenceStatsResult, StreamPosition, SubscribeResult,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::config::ClientConfig;

const T0_UNIX: u64 = 1_800_000_000;

/// One machine and everything it asked for, not yet looked at.
struct Harness {
    machine: Machine,
    now: Now,
    /// Replies and pushes, as the client would read them (JSON).
    sent: Vec<Value>,
    /// The same, as the machine made them (what JSON cannot show, such as
    /// the binary mark of a payload).
    typed: Vec<Reply>,
    /// Effects waiting for an outcome, oldest first.
    waiting: VecDeque<(EffectId, Effect)>,
    spawned: Vec<Effect>,
    live: Vec<String>,
    closed: Option<Disconnect>,
    /// `Action::ConnectFailed` codes, in order.
    connect_failed: Vec<u32>,
}

fn open_channels() -> ChannelConfig {
    let open = ChannelOptions {
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_history_for_client: true,
        allow_presence_for_client: true,
        presence: true,
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    ChannelConfig {
        without_namespace: open.clone(),
        namespaces: vec![
            NamespaceConfig {
                name: "closed".into(),
                options: ChannelOptions::default(),
            },
            NamespaceConfig {
                name: "bin".into(),
                options: ChannelOptions {
                    publication_data_format: PublicationDataFormat::Binary,
                    ..open.clone()
                },
            },
            // tests/options.rs: cache recovery, a channel_regex, personal channels.
            NamespaceConfig {
                name: "state".into(),
                options: ChannelOptions {
                    force_recovery: true,
                    force_recovery_mode: herald_auth::RecoveryMode::Cache,
                    auto_cache_recover: true,
                    ..open.clone()
                },
            },
            NamespaceConfig {
                name: "cache".into(),
                options: ChannelOptions {
                    allow_recovery: true,
                    force_recovery_mode: herald_auth::RecoveryMode::Cache,
                    ..open.clone()
                },
            },
            NamespaceConfig {
                name: "digits".into(),
                options: ChannelOptions {
                    channel_regex: "^[0-9]+$".into(),
                    ..open.clone()
                },
            },
            NamespaceConfig {
                name: "personal".into(),
                options: ChannelOptions {
                    presence: true,
                    ..ChannelOptions::default()
                },
            },
        ],
        ..Default::default()
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(edit: impl FnOnce(&mut ClientConfig)) -> Self {
        Self::with_setup(edit, false)
    }

    /// `takes_binary_data`: the client speaks protobuf.
    fn with_setup(edit: impl FnOnce(&mut ClientConfig), takes_binary_data: bool) -> Self {
        Self::with_transport(edit, takes_binary_data, false, |_| {})
    }

    /// A connection of a unidirectional transport (session id `s1`).
    fn unidirectional(edit: impl FnOnce(&mut ClientConfig)) -> Self {
        Self::with_transport(edit, false, true, |_| {})
    }

    /// A connection whose RPC methods go to the backend as `rpc` says.
    fn with_rpc(rpc: herald_proxy::RpcConfig) -> Self {
        Self::with_transport(|_| {}, false, false, |s| s.rpc = Some(Arc::new(rpc)))
    }

    /// A connection whose tokenless connect asks the backend
    /// (`unidirectional`: of a unidirectional transport).
    fn with_connect_proxy(unidirectional: bool) -> Self {
        Self::with_transport(|_| {}, false, unidirectional, |s| s.connect_proxy = true)
    }

    fn with_transport(
        edit: impl FnOnce(&mut ClientConfig),
        takes_binary_data: bool,
        unidirectional: bool,
        setup_edit: impl FnOnce(&mut Setup),
    ) -> Self {
        let mut config = ClientConfig::default();
        edit(&mut config);
        let policy = ChannelPolicy::new(&open_channels()).expect("a valid policy");
        let now = Now {
            at: Instant::now(),
            unix: T0_UNIX,
            unix_ms: T0_UNIX as i64 * 1000,
        };
        let setup = Setup {
            config: Arc::new(config),
            policy: Arc::new(policy),
            version: "test",
            client: "c1".into(),
            tls_identity: None,
            header_user: None,
            upgrade_token: None,
            ping_jitter: 0.0,
            takes_binary_data,
            unidirectional,
            session: if unidirectional {
                "s1".into()
            } else {
                String::new()
            },
            node: String::new(),
            rpc: None,
            connect_proxy: false,
            refresh_proxy: false,
        };
        let mut setup = setup;
        setup_edit(&mut setup);
        Self {
            machine: Machine::new(setup, now),
            now,
            sent: Vec::new(),
            typed: Vec::new(),
            waiting: VecDeque::new(),
            spawned: Vec::new(),
            live: Vec::new(),
            closed: None,
            connect_failed: Vec::new(),
        }
    }

    /// Takes every action the machine has.
    fn collect(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send(reply) => {
                    let line = String::from_utf8(reply.encode()).expect("JSON is UTF-8");
                    self.sent
                        .push(serde_json::from_str(&line).expect("a JSON line"));
                    self.typed.push(reply);
                }
                Action::Run { id, effect } => self.waiting.push_back((id, effect)),
                Action::Spawn(effect) => self.spawned.push(effect),
                Action::GoLive { channel, .. } => self.live.push(channel),
                Action::ConnectFailed { code } => self.connect_failed.push(code),
                Action::Close(d) => {
                    assert!(self.closed.is_none(), "closed twice");
                    self.closed = Some(d);
                }
            }
        }
    }

    /// Sends client lines (one message).
    fn send(&mut self, lines: &[Value]) {
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        let commands = decode_frame(text.join("\n").as_bytes()).expect("decodable commands");
        self.machine.handle_commands(commands, self.now);
        self.collect();
    }

    /// The oldest waiting effect.
    fn next_effect(&mut self) -> (EffectId, Effect) {
        self.waiting
            .pop_front()
            .unwrap_or_else(|| panic!("no effect waits; sent {:?}", self.sent))
    }

    fn answer(&mut self, id: EffectId, outcome: Outcome) {
        self.machine.handle_effect(id, outcome, self.now);
        self.collect();
    }

    /// Answers the oldest waiting effect, checking its kind.
    fn answer_next(&mut self, check: impl FnOnce(&Effect) -> bool, outcome: Outcome) {
        let (id, effect) = self.next_effect();
        assert!(check(&effect), "unexpected effect {effect:?}");
        self.answer(id, outcome);
    }

    /// Moves the clock on by `by`, running every timer due on the way at
    /// its own time (the unix clock moves with it).
    fn advance(&mut self, by: Duration) {
        let (start, start_unix) = (self.now.at, self.now.unix);
        let until = start + by;
        let at_time = |at: Instant| Now {
            at,
            unix: start_unix + (at - start).as_secs(),
            unix_ms: (start_unix * 1000) as i64 + (at - start).as_millis() as i64,
        };
        while let Some(at) = self.machine.poll_timeout() {
            if at > until {
                break;
            }
            self.now = at_time(at.max(start));
            self.machine.handle_timeout(self.now);
            self.collect();
        }
        self.now = at_time(until);
    }

    /// Connects as `user` with a token whose checks all pass.
    fn connected(user: &str) -> Self {
        let mut h = Self::new();
        h.connect_as(claims(user));
        h
    }

    /// Connects as `user`, a client that takes binary data (protobuf).
    fn connected_protobuf(user: &str) -> Self {
        let mut h = Self::with_setup(|_| {}, true);
        h.connect_as(claims(user));
        h
    }

    /// Hands the machine commands as a codec decoded them.
    fn commands(&mut self, commands: Vec<Command>) {
        self.machine.handle_commands(commands, self.now);
        self.collect();
    }

    fn connect_as(&mut self, claims: ConnectionClaims) {
        self.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
        self.answer_next(
            |e| matches!(e, Effect::VerifyConnection { .. }),
            Outcome::Verified(Ok(principal(claims))),
        );
        self.answer_next(
            |e| matches!(e, Effect::Register { .. }),
            Outcome::Registered(true),
        );
        self.answer_next(
            |e| matches!(e, Effect::Admit { .. }),
            Outcome::Admitted(Ok(())),
        );
        let reply = self.take_sent();
        assert!(reply[0]["connect"]["client"].is_string(), "{reply:?}");
    }

    fn take_sent(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.sent)
    }

    /// Subscribes to `channel` without a token, the engine answering `result`.
    fn subscribe(&mut self, id: u64, channel: &str, result: Result<SubscribeResult, ErrorCode>) {
        self.send(&[json!({"id": id, "subscribe": {"channel": channel}})]);
        let (effect_id, effect) = self.next_effect();
        assert!(matches!(effect, Effect::Subscribe { .. }), "{effect:?}");
        self.answer(effect_id, Outcome::Subscribed(result.map(|r| (r, None))));
    }

    /// The command results sent so far, in order.
    fn replies(&self) -> Vec<CommandResult> {
        self.typed
            .iter()
            .filter_map(|r| match r {
                Reply::Result { result, .. } => Some(result.clone()),
                _ => None,
            })
            .collect()
    }

    fn error_code(&self, i: usize) -> Option<u64> {
        self.sent.get(i)?["error"]["code"].as_u64()
    }
}

fn claims(user: &str) -> ConnectionClaims {
    ConnectionClaims {
        user: user.into(),
        ..Default::default()
    }
}

fn principal(claims: ConnectionClaims) -> Principal {
    Principal {
        claims,
        channels: Vec::new(),
        introspected: false,
    }
}

fn sub_claims(user: &str, channel: &str) -> SubscriptionClaims {
    SubscriptionClaims {
        user: user.into(),
        channel: channel.into(),
        ..Default::default()
    }
}

fn invalid() -> TokenError {
    TokenError::Invalid(InvalidReason::Signature)
}

// ---- connect: the token table at connect ----------------------------------

#[test]
fn connect_token_errors_by_the_table() {
    let rows: Vec<(TokenError, Option<u64>, Option<u16>)> = vec![
        (TokenError::Expired, Some(109), None),
        (TokenError::Unavailable, Some(100), None),
        (TokenError::UnknownKey, Some(100), None),
        (invalid(), None, Some(3500)),
    ];
    for (error, code, close) in rows {
        let mut h = Harness::new();
        h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
        let (id, _) = h.next_effect();
        h.answer(id, Outcome::Verified(Err(error.clone())));
        assert_eq!(h.error_code(0), code, "{error:?}: {:?}", h.sent);
        assert_eq!(h.closed.as_ref().map(|d| d.code), close, "{error:?}");
        if code.is_some() {
            // A failed connect leaves the connection unusable.
            h.send(&[json!({"id": 2, "publish": {"channel": "a", "data": {}}})]);
            assert_eq!(h.closed, Some(Disconnect::BAD_REQUEST), "{error:?}");
        }
    }
}

#[test]
fn connect_without_credentials_is_refused_unless_allowed() {
    let mut h = Harness::new();
    h.send(&[json!({"id": 1, "connect": {}})]);
    assert_eq!(h.closed, Some(Disconnect::BAD_REQUEST));

    let mut h = Harness::with(|c| c.allow_anonymous_connect_without_token = true);
    h.send(&[json!({"id": 1, "connect": {}})]);
    h.answer_next(
        |e| matches!(e, Effect::Register { user } if user.is_empty()),
        Outcome::Registered(true),
    );
    h.answer_next(
        |e| {
            matches!(
                e,
                Effect::Admit {
                    revocation: None,
                    ..
                }
            )
        },
        Outcome::Admitted(Ok(())),
    );
    assert!(h.sent[0]["connect"].is_object(), "{:?}", h.sent);
}

#[test]
fn connect_with_an_expired_expire_at_is_109() {
    let mut h = Harness::new();
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    let (id, _) = h.next_effect();
    let mut c = claims("u");
    c.exp = Some(T0_UNIX - 1);
    h.answer(id, Outcome::Verified(Ok(principal(c))));
    assert_eq!(h.error_code(0), Some(109));
}

#[test]
fn node_and_cluster_refusals_at_connect() {
    // The node's own user limit.
    let mut h = Harness::new();
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims("u")))));
    h.answer_next(|_| true, Outcome::Registered(false));
    assert_eq!(h.closed, Some(Disconnect::CONNECTION_LIMIT));
    // The cluster-wide one, revocation, and an engine failure.
    let rows = [
        (Refused::UserLimit, Some(3504), None),
        (Refused::Revoked, Some(3500), None),
        (
            Refused::Engine(BusError::Unavailable("down".into())),
            None,
            Some(100),
        ),
    ];
    for (refused, close, code) in rows {
        let mut h = Harness::new();
        h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
        h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims("u")))));
        h.answer_next(|_| true, Outcome::Registered(true));
        h.answer_next(|_| true, Outcome::Admitted(Err(refused)));
        assert_eq!(h.closed.as_ref().map(|d| d.code), close);
        assert_eq!(h.error_code(0), code);
    }
}

#[test]
fn commands_behind_a_slow_connect_are_answered_in_order() {
    let mut h = Harness::new();
    h.send(&[
        json!({"id": 1, "connect": {"token": "t"}}),
        json!({"id": 2, "subscribe": {"channel": "a"}}),
        json!({"id": 3, "subscribe": {"channel": "b"}}),
    ]);
    // Only the connect's effect runs; the subscribes wait.
    assert_eq!(h.waiting.len(), 1);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims("u")))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "a"),
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "b"),
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    let ids: Vec<u64> = h.sent.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(h.live, ["a", "b"], "each goes live after its reply");
}

#[test]
fn server_side_subscriptions_go_live_after_the_connect_reply() {
    let mut h = Harness::new();
    let mut c = claims("u");
    c.channels = vec!["news".into(), "sport".into()];
    c.subs.insert("sport".into(), SubOptions::default());
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(c))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    // `subs` first, then `channels` not in `subs`, one after another.
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "sport"),
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    assert!(
        h.live.is_empty() && h.sent.is_empty(),
        "nothing before the reply"
    );
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "news"),
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    let subs = &h.sent[0]["connect"]["subs"];
    assert!(
        subs["news"].is_object() && subs["sport"].is_object(),
        "{:?}",
        h.sent
    );
    assert_eq!(h.live, ["sport", "news"]);
}

#[test]
fn a_failed_server_side_subscription_fails_the_connect() {
    let mut h = Harness::new();
    let mut c = claims("u");
    c.channels = vec!["a".into(), "b".into()];
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(c))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "a"),
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "b"),
        Outcome::Subscribed(Err(ErrorCode::Internal)),
    );
    assert_eq!(h.error_code(0), Some(100));
    assert!(h.live.is_empty());
    // The one that succeeded is undone at once.
    let left: Vec<&str> = h
        .spawned
        .iter()
        .filter_map(|e| match e {
            Effect::Leave { channel, .. } => Some(channel.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(left, ["a"]);
}

#[test]
fn a_server_side_channel_the_policy_refuses_rolls_back_the_plans() {
    let mut h = Harness::new();
    let mut c = claims("u");
    c.channels = vec!["ok".into(), "nope:x".into()];
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(c))));
    h.answer_next(|_| true, Outcome::Registered(true));
    // `nope` is an unknown namespace: 102, and no subscribe ran.
    assert_eq!(h.error_code(0), Some(102));
    assert!(h.waiting.is_empty());
    h.machine.handle_stopped();
    h.collect();
    assert!(!h.spawned.iter().any(|e| matches!(e, Effect::Leave { .. })));
}

// ---- the command queue and the rate limit ---------------------------------

#[test]
fn more_than_1024_queued_commands_close_3013() {
    let mut h = Harness::new();
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    // The connect runs (waiting for its token); 1,024 more can wait.
    let lines: Vec<Value> = (0..MAX_QUEUED_COMMANDS)
        .map(|i| json!({"id": i + 2, "rpc": {}}))
        .collect();
    h.send(&lines);
    assert_eq!(h.closed, None);
    h.send(&[json!({"id": 5000, "rpc": {}})]);
    assert_eq!(h.closed, Some(Disconnect::TOO_MANY_REQUESTS));
}

#[test]
fn rate_limit_111_then_3013() {
    let mut h = Harness::with(|c| c.command_rate_limit = 3);
    h.connect_as(claims("u"));
    let burst: Vec<Value> = (10..15).map(|id| json!({"id": id, "rpc": {}})).collect();
    h.send(&burst);
    let refused = h.sent.iter().filter(|l| l["error"]["code"] == 111).count();
    assert_eq!(refused, 3, "the connect took one token: {:?}", h.sent);
    assert_eq!(h.closed, None);
    let flood: Vec<Value> = (20..24).map(|id| json!({"id": id, "rpc": {}})).collect();
    h.send(&flood);
    assert_eq!(h.closed, Some(Disconnect::TOO_MANY_REQUESTS));
}

#[test]
fn rpc_is_108_and_send_is_3508() {
    let mut h = Harness::connected("u");
    h.send(&[json!({"id": 2, "rpc": {"method": "x"}})]);
    assert_eq!(h.error_code(0), Some(108));
    h.send(&[json!({"send": {"data": {}}})]);
    assert_eq!(h.closed, Some(Disconnect::NOT_AVAILABLE));
}

// ---- subscribe -------------------------------------------------------------

#[test]
fn subscribe_token_errors_by_the_table() {
    let rows: Vec<(TokenError, u64, bool)> = vec![
        (TokenError::Expired, 109, false),
        (TokenError::Unavailable, 100, false),
        (TokenError::UnknownKey, 100, true),
        (invalid(), 103, false),
    ];
    for (error, code, refetch) in rows {
        let mut h = Harness::connected("u");
        h.send(&[json!({"id": 2, "subscribe": {"channel": "a", "token": "s"}})]);
        h.answer_next(
            |e| matches!(e, Effect::VerifySubscription { .. }),
            Outcome::SubscriptionVerified(Err(error.clone())),
        );
        assert_eq!(h.error_code(0), Some(code), "{error:?}");
        let refetched = h
            .spawned
            .iter()
            .any(|e| matches!(e, Effect::RefetchSubscriptionKeys));
        assert_eq!(refetched, refetch, "{error:?}");
        // The slot is free again.
        h.subscribe(3, "a", Ok(SubscribeResult::default()));
        assert!(h.sent[1]["subscribe"].is_object(), "{:?}", h.sent);
    }
}

#[test]
fn a_subscription_token_for_someone_else_closes_3500() {
    for claims in [sub_claims("other", "a"), sub_claims("u", "b")] {
        let mut h = Harness::connected("u");
        h.send(&[json!({"id": 2, "subscribe": {"channel": "a", "token": "s"}})]);
        h.answer_next(|_| true, Outcome::SubscriptionVerified(Ok(claims)));
        assert_eq!(h.closed, Some(Disconnect::INVALID_TOKEN));
    }
}

#[test]
fn subscribe_refusals_103_105_106_102() {
    let mut h = Harness::with(|c| c.channel_limit = 1);
    h.connect_as(claims("u"));
    h.send(&[json!({"id": 2, "subscribe": {"channel": "closed:x"}})]);
    assert_eq!(h.error_code(0), Some(103));
    h.send(&[json!({"id": 3, "subscribe": {"channel": "unknown:x"}})]);
    assert_eq!(h.error_code(1), Some(102));
    h.subscribe(4, "a", Ok(SubscribeResult::default()));
    h.send(&[json!({"id": 5, "subscribe": {"channel": "a"}})]);
    assert_eq!(h.error_code(3), Some(105));
    h.send(&[json!({"id": 6, "subscribe": {"channel": "b"}})]);
    assert_eq!(h.error_code(4), Some(106));
}

#[test]
fn the_subscribe_reply_comes_before_the_subscription_goes_live() {
    let mut h = Harness::connected("u");
    h.subscribe(2, "a", Ok(SubscribeResult::default()));
    assert!(h.sent[0]["subscribe"].is_object());
    assert_eq!(h.live, ["a"]);
    // A failed subscribe never goes live and frees its slot.
    h.subscribe(3, "b", Err(ErrorCode::Internal));
    assert_eq!(h.error_code(1), Some(100));
    assert_eq!(h.live, ["a"]);
}

#[test]
fn a_subscription_dropped_while_subscribing_is_undone() {
    let mut h = Harness::connected("u");
    h.send(&[json!({"id": 2, "subscribe": {"channel": "a"}})]);
    let (id, _) = h.next_effect();
    // A gap arrives for it before the engine answered (the Hub dropped it).
    h.machine.handle_gap("a");
    h.collect();
    h.answer(
        id,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    assert_eq!(h.error_code(1), Some(100), "{:?}", h.sent);
    assert!(h
        .spawned
        .iter()
        .any(|e| matches!(e, Effect::Detach { channel } if channel == "a")));
    assert!(h.live.is_empty());
}

#[test]
fn sub_refresh_by_the_table_and_with_a_good_token() {
    let mut h = Harness::connected("u");
    h.subscribe(2, "a", Ok(SubscribeResult::default()));
    h.take_sent();
    h.send(&[json!({"id": 3, "sub_refresh": {"channel": "a", "token": "s"}})]);
    h.answer_next(
        |e| matches!(e, Effect::CheckSubscription { .. }),
        Outcome::SubscriptionVerified(Err(TokenError::UnknownKey)),
    );
    assert_eq!(h.error_code(0), Some(100));
    assert!(h
        .spawned
        .iter()
        .any(|e| matches!(e, Effect::RefetchSubscriptionKeys)));
    let mut claims = sub_claims("u", "a");
    claims.exp = Some(T0_UNIX + 600);
    h.send(&[json!({"id": 4, "sub_refresh": {"channel": "a", "token": "s"}})]);
    h.answer_next(|_| true, Outcome::SubscriptionVerified(Ok(claims)));
    assert_eq!(h.sent[1]["sub_refresh"]["ttl"], 600, "{:?}", h.sent);
    // Not subscribed: 103.
    h.send(&[json!({"id": 5, "sub_refresh": {"channel": "zz", "token": "s"}})]);
    assert_eq!(h.error_code(2), Some(103));
}

mod binary;
mod channel_proxies;
mod later;
mod options;
mod proxy;
mod rpc;
mod tags_filter;
mod unidirectional;
