//! Rules after connect: publish, presence, history, refresh and expiry,
//! ping and pong, gaps and control, the introspection re-check, the end,
//! and the order of replies (a property test).

use super::*;

// ---- publish, presence, history --------------------------------------------

#[test]
fn engine_errors_of_publish_presence_history() {
    let mut h = Harness::connected("u");
    h.send(&[json!({"id": 2, "publish": {"channel": "a", "data": {"x": 1}}})]);
    h.answer_next(
        |e| matches!(e, Effect::Publish { .. }),
        Outcome::Published(Err(BusError::Unavailable("down".into()))),
    );
    h.send(&[json!({"id": 3, "history": {"channel": "a"}})]);
    h.answer_next(
        |e| matches!(e, Effect::History { .. }),
        Outcome::History(Err(BusError::Undecryptable)),
    );
    h.send(&[json!({"id": 4, "presence_stats": {"channel": "a"}})]);
    h.answer_next(
        |e| matches!(e, Effect::Presence { stats: true, .. }),
        Outcome::Presence(Ok(CommandResult::PresenceStats(PresenceStatsResult {
            num_clients: 2,
            num_users: 1,
        }))),
    );
    assert_eq!(h.error_code(0), Some(100));
    assert_eq!(h.error_code(1), Some(112));
    assert_eq!(h.sent[2]["presence_stats"]["num_clients"], 2);
    h.send(&[json!({"id": 5, "history": {"channel": "a"}})]);
    h.answer_next(
        |_| true,
        Outcome::History(Ok(HistoryPage {
            publications: Vec::new(),
            position: StreamPosition {
                offset: 7,
                epoch: "e".into(),
            },
        })),
    );
    assert_eq!(h.sent[3]["history"]["offset"], 7);
}

#[test]
fn publish_presence_history_refusals() {
    let mut h = Harness::connected("u");
    h.send(&[
        json!({"id": 2, "publish": {"channel": "a"}}),
        json!({"id": 3, "publish": {"channel": "closed:x", "data": {}}}),
        json!({"id": 4, "presence": {"channel": "closed:x"}}),
        json!({"id": 5, "history": {"channel": "closed:x"}}),
        json!({"id": 6, "history": {"channel": "a", "reverse": true, "since": {"offset": 0, "epoch": ""}}}),
    ]);
    let codes: Vec<Option<u64>> = (0..5).map(|i| h.error_code(i)).collect();
    assert_eq!(
        codes,
        [Some(107), Some(103), Some(108), Some(108), Some(107)]
    );
    h.send(&[json!({"id": 7, "publish": {"channel": "", "data": {}}})]);
    assert_eq!(h.closed, Some(Disconnect::BAD_REQUEST));
}

// ---- refresh and expiry ----------------------------------------------------

fn refresh(
    h: &mut Harness,
    id: u64,
    checked: Result<Principal, TokenError>,
    revoked: Result<bool, BusError>,
) {
    h.send(&[json!({"id": id, "refresh": {"token": "r"}})]);
    h.answer_next(
        |e| matches!(e, Effect::Refresh { .. }),
        Outcome::Refreshed { checked, revoked },
    );
}

/// A refresh's token check, its revocation check, and the error code or
/// close code the client gets.
type RefreshRow = (
    Result<Principal, TokenError>,
    Result<bool, BusError>,
    Option<u64>,
    Option<u16>,
);

#[test]
fn refresh_by_the_table() {
    let rows: Vec<RefreshRow> = vec![
        (Err(TokenError::Expired), Ok(false), None, Some(3005)),
        (Err(TokenError::Unavailable), Ok(false), Some(100), None),
        (Err(invalid()), Ok(false), None, Some(3500)),
        (Ok(principal(claims("other"))), Ok(false), None, Some(3500)),
        (Ok(principal(claims("u"))), Ok(true), None, Some(3500)),
        (
            Ok(principal(claims("u"))),
            Err(BusError::Unavailable("x".into())),
            Some(100),
            None,
        ),
    ];
    for (checked, revoked, code, close) in rows {
        let mut h = Harness::connected("u");
        refresh(&mut h, 2, checked, revoked);
        assert_eq!(h.error_code(0), code, "{:?}", h.sent);
        assert_eq!(h.closed.as_ref().map(|d| d.code), close);
    }
}

#[test]
fn expiry_without_refresh_closes_3005_after_the_grace() {
    let mut h = Harness::with(|c| c.ping_interval = Duration::ZERO);
    let mut c = claims("u");
    c.exp = Some(T0_UNIX + 60);
    h.connect_as(c);
    h.advance(Duration::from_secs(60 + 24));
    assert_eq!(h.closed, None, "within expired_close_delay (25 s)");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.closed, Some(Disconnect::EXPIRED));
}

#[test]
fn a_refresh_moves_the_expiry() {
    let mut h = Harness::with(|c| c.ping_interval = Duration::ZERO);
    let mut c = claims("u");
    c.exp = Some(T0_UNIX + 60);
    h.connect_as(c);
    h.advance(Duration::from_secs(50));
    let mut later = claims("u");
    later.exp = Some(T0_UNIX + 3600);
    refresh(&mut h, 2, Ok(principal(later)), Ok(false));
    assert_eq!(h.sent[0]["refresh"]["ttl"], 3550, "{:?}", h.sent);
    // Past the old expiry and its grace: still connected.
    h.advance(Duration::from_secs(600));
    assert_eq!(h.closed, None);
    h.advance(Duration::from_secs(3000 + 26));
    assert_eq!(h.closed, Some(Disconnect::EXPIRED));
}

#[test]
fn expired_subscriptions_are_unsubscribed_2501_server_side_close_3006() {
    let mut h = Harness::with(|c| c.ping_interval = Duration::ZERO);
    h.connect_as(claims("u"));
    h.send(&[json!({"id": 2, "subscribe": {"channel": "a", "token": "s"}})]);
    let mut sc = sub_claims("u", "a");
    sc.exp = Some(T0_UNIX + 10);
    h.answer_next(|_| true, Outcome::SubscriptionVerified(Ok(sc)));
    let (id, effect) = h.next_effect();
    assert!(matches!(&effect, Effect::Subscribe { plan } if plan.expires_at == Some(T0_UNIX + 10)));
    h.answer(
        id,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    h.take_sent();
    // expired_sub_close_delay 25 s, checked on the presence tick (27 s).
    h.advance(Duration::from_secs(60));
    let unsubscribe = h.sent.iter().find(|l| l["push"]["unsubscribe"].is_object());
    assert_eq!(
        unsubscribe.map(|l| l["push"]["unsubscribe"]["code"].clone()),
        Some(json!(2501)),
        "{:?}",
        h.sent
    );
    assert_eq!(h.closed, None);
}

// ---- ping and pong ---------------------------------------------------------

#[test]
fn no_pong_closes_3012_and_a_pong_keeps_the_connection() {
    let mut h = Harness::connected("u");
    // First ping at half the interval (jitter 0), then every interval.
    h.advance(Duration::from_millis(12_500));
    assert_eq!(h.take_sent(), [json!({})], "a server ping");
    h.send(&[json!({})]);
    h.advance(Duration::from_secs(25));
    assert_eq!(h.take_sent(), [json!({})]);
    assert_eq!(h.closed, None);
    // No pong this time: closed once the pong timeout (8 s) passes.
    h.advance(Duration::from_secs(7));
    assert_eq!(h.closed, None);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.closed, Some(Disconnect::NO_PONG));
}

#[test]
fn an_unasked_pong_is_a_protocol_error() {
    let mut h = Harness::connected("u");
    h.send(&[json!({})]);
    assert_eq!(h.closed, Some(Disconnect::BAD_REQUEST));
}

#[test]
fn no_connect_in_time_closes_3502() {
    let mut h = Harness::with(|c| c.handshake_timeout = Duration::from_secs(2));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.closed, None);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.closed, Some(Disconnect::STALE));
    // A connect in time stops the deadline.
    let mut h = Harness::with(|c| c.handshake_timeout = Duration::from_secs(2));
    h.connect_as(claims("u"));
    h.advance(Duration::from_secs(5));
    assert_eq!(h.closed, None);
}

// ---- gaps and control ------------------------------------------------------

#[test]
fn a_gap_is_2500_for_a_client_subscription_and_3010_for_a_server_one() {
    let mut h = Harness::connected("u");
    h.subscribe(2, "a", Ok(SubscribeResult::default()));
    h.take_sent();
    h.machine.handle_gap("a");
    h.collect();
    assert_eq!(
        h.sent[0]["push"]["unsubscribe"]["code"], 2500,
        "{:?}",
        h.sent
    );
    assert!(h
        .spawned
        .iter()
        .any(|e| matches!(e, Effect::Leave { channel, .. } if channel == "a")));

    let mut h = Harness::new();
    let mut c = claims("u");
    c.channels = vec!["s".into()];
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(c))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    h.answer_next(
        |_| true,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    h.machine.handle_gap("s");
    h.collect();
    assert_eq!(h.closed, Some(Disconnect::INSUFFICIENT_STATE));
}

#[test]
fn control_commands_unsubscribe_disconnect_revoke_invalidate() {
    let mut h = Harness::connected("u");
    h.subscribe(2, "a", Ok(SubscribeResult::default()));
    h.take_sent();
    h.machine.handle_control(
        ControlCommand::Unsubscribe {
            user: "u".into(),
            channel: "a".into(),
            client: String::new(),
        },
        h.now,
    );
    h.collect();
    assert_eq!(h.sent[0]["push"]["unsubscribe"]["code"], 2000);

    let disconnect = |whitelist: Vec<String>| ControlCommand::Disconnect {
        user: "u".into(),
        client: String::new(),
        whitelist,
        code: 4001,
        reason: "bye".into(),
    };
    h.machine
        .handle_control(disconnect(vec!["c1".into()]), h.now);
    h.collect();
    assert_eq!(h.closed, None, "whitelisted");
    h.machine.handle_control(disconnect(Vec::new()), h.now);
    h.collect();
    assert_eq!(h.closed, Some(Disconnect::custom(4001, "bye")));

    let mut c = claims("u");
    c.jti = Some("j1".into());
    c.iat = Some(T0_UNIX - 100);
    let mut h = Harness::new();
    h.connect_as(c.clone());
    h.machine.handle_control(
        ControlCommand::RevokeToken {
            token_id: "other".into(),
        },
        h.now,
    );
    h.collect();
    assert_eq!(h.closed, None);
    h.machine.handle_control(
        ControlCommand::RevokeToken {
            token_id: "j1".into(),
        },
        h.now,
    );
    h.collect();
    assert_eq!(h.closed, Some(Disconnect::INVALID_TOKEN));

    let mut h = Harness::new();
    h.connect_as(c);
    let invalidate = |before| ControlCommand::InvalidateUserTokens {
        user: "u".into(),
        issued_before: before,
    };
    h.machine.handle_control(invalidate(T0_UNIX - 200), h.now);
    h.collect();
    assert_eq!(h.closed, None, "issued after");
    h.machine.handle_control(invalidate(T0_UNIX), h.now);
    h.collect();
    assert_eq!(h.closed, Some(Disconnect::INVALID_TOKEN));
}

#[test]
fn a_server_subscribe_pushes_and_does_not_hold_up_commands() {
    let mut h = Harness::connected("u");
    h.machine.handle_control(
        ControlCommand::Subscribe {
            user: "u".into(),
            channel: "srv".into(),
            client: String::new(),
            info: None,
            data: None,
        },
        h.now,
    );
    h.collect();
    let (server_effect, _) = h.next_effect();
    // A client command meanwhile runs and is answered.
    h.send(&[json!({"id": 2, "rpc": {}})]);
    assert_eq!(h.error_code(0), Some(108));
    h.answer(
        server_effect,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    assert!(h.sent[1]["push"]["subscribe"].is_object(), "{:?}", h.sent);
    assert_eq!(h.live, ["srv"]);
    // Expiry of a server-side subscription closes with 3006.
}

#[test]
fn control_before_connect_is_ignored() {
    let mut h = Harness::new();
    h.machine.handle_control(
        ControlCommand::RevokeToken {
            token_id: "x".into(),
        },
        h.now,
    );
    h.collect();
    assert_eq!(h.closed, None);
}

// ---- introspection re-check ------------------------------------------------

#[test]
fn an_introspected_token_found_inactive_closes_3500() {
    let mut h = Harness::with(|c| c.ping_interval = Duration::ZERO);
    h.send(&[json!({"id": 1, "connect": {"token": "opaque"}})]);
    let mut p = principal(claims("svc"));
    p.introspected = true;
    h.answer_next(|_| true, Outcome::Verified(Ok(p)));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    h.advance(Duration::from_secs(28));
    // Unreachable: stays.
    h.answer_next(
        |e| matches!(e, Effect::StillActive { token } if token == "opaque"),
        Outcome::StillActive(None),
    );
    assert_eq!(h.closed, None);
    h.advance(Duration::from_secs(27));
    h.answer_next(|_| true, Outcome::StillActive(Some(false)));
    assert_eq!(h.closed, Some(Disconnect::INVALID_TOKEN));
}

// ---- the end ---------------------------------------------------------------

#[test]
fn stopping_leaves_every_subscription_and_the_registry() {
    let mut h = Harness::with(|c| c.user_connection_limit = 5);
    h.connect_as(claims("u"));
    h.subscribe(2, "a", Ok(SubscribeResult::default()));
    h.subscribe(3, "b", Ok(SubscribeResult::default()));
    h.machine.handle_stopped();
    h.collect();
    let mut left: Vec<&str> = h
        .spawned
        .iter()
        .filter_map(|e| match e {
            Effect::Leave { channel, .. } => Some(channel.as_str()),
            _ => None,
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["a", "b"]);
    assert!(h
        .spawned
        .iter()
        .any(|e| matches!(e, Effect::Unregister { user } if user == "u")));
    assert!(h
        .spawned
        .iter()
        .any(|e| matches!(e, Effect::RemoveUserEntry { .. })));
}

#[test]
fn a_closed_output_stops_the_machine_talking() {
    let mut h = Harness::connected("u");
    h.machine.handle_output_closed();
    h.send(&[json!({"id": 2, "rpc": {}})]);
    assert!(h.sent.is_empty());
    assert_eq!(h.machine.poll_timeout(), None);
}

// ---- the order of replies ----------------------------------------------------

/// A command of the property test (whether its effect fails is drawn when
/// the effect completes).
#[derive(Debug, Clone)]
enum Op {
    Publish,
    History,
    Presence,
    Rpc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Publish),
        Just(Op::History),
        Just(Op::Presence),
        Just(Op::Rpc),
    ]
}

proptest! {
    /// Whatever order the effects complete in (server-side subscribes and
    /// re-checks run beside the commands), the replies come out in command
    /// order, one per command.
    #[test]
    fn replies_come_out_in_command_order(
        ops in prop::collection::vec(op(), 1..40),
        frames in prop::collection::vec(1usize..6, 1..40),
        picks in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut h = Harness::connected("u");
        let mut sent_ids = Vec::new();
        let mut picks = picks.into_iter();
        let mut next_id = 10u64;
        let mut ops = ops.into_iter().peekable();
        let mut frames = frames.into_iter().cycle();
        let mut extra_subscribes = 0;
        while ops.peek().is_some() || !h.waiting.is_empty() {
            // Send a frame of commands, sometimes a server subscribe too.
            if ops.peek().is_some() && picks.next().is_none_or(|p| p % 2 == 0) {
                let n = frames.next().unwrap_or(1);
                let mut lines = Vec::new();
                for op in ops.by_ref().take(n) {
                    let line = match &op {
                        Op::Publish => json!({"id": next_id, "publish": {"channel": "a", "data": {}}}),
                        Op::History => json!({"id": next_id, "history": {"channel": "a"}}),
                        Op::Presence => json!({"id": next_id, "presence": {"channel": "a"}}),
                        Op::Rpc => json!({"id": next_id, "rpc": {}}),
                    };
                    sent_ids.push(next_id);
                    next_id += 1;
                    lines.push(line);
                }
                h.send(&lines);
                if extra_subscribes < 3 {
                    extra_subscribes += 1;
                    h.machine.handle_control(ControlCommand::Subscribe {
                        user: "u".into(),
                        channel: format!("srv{extra_subscribes}"),
                        client: String::new(),
                        info: None,
                        data: None,
                    }, h.now);
                    h.collect();
                }
                continue;
            }
            if h.waiting.is_empty() {
                continue;
            }
            // Complete any waiting effect, not necessarily the oldest.
            let i = usize::from(picks.next().unwrap_or(0)) % h.waiting.len();
            let Some((id, effect)) = h.waiting.remove(i) else { continue };
            let fail = picks.next().is_some_and(|p| p % 3 == 0);
            let err = || BusError::Unavailable("x".into());
            let outcome = match effect {
                Effect::Publish { .. } => Outcome::Published(if fail { Err(err()) } else { Ok(()) }),
                Effect::History { .. } => Outcome::History(if fail { Err(err()) } else {
                    Ok(HistoryPage { publications: Vec::new(), position: StreamPosition::default() })
                }),
                Effect::Presence { .. } => Outcome::Presence(if fail { Err(err()) } else {
                    Ok(CommandResult::Presence(Default::default()))
                }),
                Effect::Subscribe { .. } => Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
                other => panic!("unexpected effect {other:?}"),
            };
            h.answer(id, outcome);
        }
        let replied: Vec<u64> = h.sent.iter().filter_map(|l| l["id"].as_u64()).collect();
        prop_assert_eq!(replied, sent_ids);
        prop_assert!(h.closed.is_none());
    }
}
