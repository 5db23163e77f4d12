//! Issue 21's options where the machine decides: cache recovery and
//! `auto_cache_recover` in the subscribe plan, `channel_regex`, the personal
//! channel and its single connection, anonymous connection tokens, the user
//! id header, and the connect result's `time`.

use herald_auth::ConnectionClaims;
use herald_protocol::{Publication, RawJson};

use super::*;

/// The plan of the subscribe the machine asks the engine for, left waiting.
fn subscribe_plan(h: &mut Harness, id: u64, subscribe: Value) -> (EffectId, SubscribePlan) {
    h.send(&[json!({"id": id, "subscribe": subscribe})]);
    let (effect_id, effect) = h.next_effect();
    let Effect::Subscribe { plan } = effect else {
        panic!("expected a subscribe, got {effect:?}; sent {:?}", h.sent);
    };
    (effect_id, plan)
}

fn publication(offset: u64) -> Publication {
    Publication {
        data: RawJson::from_str(r#"{"v":1}"#).unwrap(),
        info: None,
        offset,
        tags: Default::default(),
        delta: false,
    }
}

#[test]
fn cache_mode_recovers_the_latest_and_auto_recover_asks_for_the_client() {
    let mut h = Harness::connected("u");
    // auto_cache_recover: no `recover` from the client, still recovering
    // from the empty position.
    let (_, plan) = subscribe_plan(&mut h, 2, json!({"channel": "state:a"}));
    assert!(plan.cache_recovery && plan.recoverable);
    assert_eq!(plan.recover, Some(StreamPosition::default()));
    // A client position is kept as given.
    let mut h = Harness::connected("u");
    let (_, plan) = subscribe_plan(
        &mut h,
        2,
        json!({"channel": "state:b", "recover": true, "offset": 4, "epoch": "E"}),
    );
    assert_eq!(
        plan.recover,
        Some(StreamPosition {
            offset: 4,
            epoch: "E".into()
        })
    );
    // Cache mode without auto: only a client that asks recovers.
    let mut h = Harness::connected("u");
    let (_, plan) = subscribe_plan(
        &mut h,
        2,
        json!({"channel": "cache:c", "recoverable": true}),
    );
    assert!(plan.cache_recovery && plan.recover.is_none());
    let mut h = Harness::connected("u");
    let (_, plan) = subscribe_plan(
        &mut h,
        2,
        json!({"channel": "cache:d", "recoverable": true, "recover": true}),
    );
    assert!(plan.cache_recovery);
    assert_eq!(plan.recover, Some(StreamPosition::default()));
    // Stream mode is unchanged.
    let mut h = Harness::connected("u");
    let (_, plan) = subscribe_plan(&mut h, 2, json!({"channel": "room", "recoverable": true}));
    assert!(!plan.cache_recovery && plan.recover.is_none());
}

#[test]
fn a_server_subscribe_with_auto_cache_recover_pushes_the_latest_after_the_subscribe_push() {
    let mut h = Harness::connected("u");
    h.machine.handle_control(
        ControlCommand::Subscribe {
            user: "u".into(),
            channel: "state:srv".into(),
            client: String::new(),
            info: None,
            data: None,
        },
        h.now,
    );
    h.collect();
    let (id, effect) = h.next_effect();
    let Effect::Subscribe { plan } = effect else {
        panic!("{effect:?}");
    };
    assert_eq!(plan.recover, Some(StreamPosition::default()));
    let result = SubscribeResult {
        recoverable: true,
        positioned: true,
        recovered: true,
        was_recovering: true,
        epoch: "E".into(),
        publications: vec![publication(7)],
        ..Default::default()
    };
    h.answer(id, Outcome::Subscribed(Ok((result, None))));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["push"]["channel"], "state:srv");
    assert!(sent[0]["push"]["subscribe"].is_object(), "{sent:?}");
    assert_eq!(sent[1]["push"]["pub"]["offset"], 7, "{sent:?}");
    assert_eq!(sent[1]["push"]["pub"]["data"], json!({"v": 1}));
    assert_eq!(h.live, ["state:srv"]);
}

#[test]
fn channel_regex_refuses_other_names_with_107_for_every_command() {
    let mut h = Harness::connected("u");
    h.send(&[
        json!({"id": 2, "subscribe": {"channel": "digits:abc"}}),
        json!({"id": 3, "publish": {"channel": "digits:abc", "data": {}}}),
        json!({"id": 4, "history": {"channel": "digits:abc"}}),
        json!({"id": 5, "presence": {"channel": "digits:abc"}}),
        json!({"id": 6, "presence_stats": {"channel": "digits:abc"}}),
    ]);
    for i in 0..5 {
        assert_eq!(h.error_code(i), Some(107), "{:?}", h.sent);
    }
    assert!(h.closed.is_none());
    // A matching name goes on to the engine.
    let (_, plan) = subscribe_plan(&mut h, 7, json!({"channel": "digits:123"}));
    assert_eq!(plan.channel, "digits:123");
}

/// Connects with `claims` through a token, answering every step, and
/// returns the plans of the server-side subscribes it asked for.
fn connect_collecting_plans(h: &mut Harness, claims: ConnectionClaims) -> Vec<String> {
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    let mut channels = Vec::new();
    while let Some((id, effect)) = h.waiting.pop_front() {
        let Effect::Subscribe { plan } = effect else {
            panic!("{effect:?}");
        };
        channels.push(plan.channel.clone());
        h.answer(
            id,
            Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
        );
    }
    channels
}

#[test]
fn the_personal_channel_is_subscribed_at_connect_for_users_only() {
    let personal = |h: &mut ClientConfig| {
        h.subscribe_to_user_personal_channel.enabled = true;
        h.subscribe_to_user_personal_channel
            .personal_channel_namespace = "personal".into();
    };
    let mut h = Harness::with(personal);
    let mut c = claims("42");
    c.channels = vec!["news".into()];
    let channels = connect_collecting_plans(&mut h, c);
    assert_eq!(channels, ["news", "personal:#42"]);
    assert!(
        h.sent[0]["connect"]["subs"]["personal:#42"].is_object(),
        "{:?}",
        h.sent
    );
    assert_eq!(h.live, ["news", "personal:#42"]);
    assert!(
        !h.spawned
            .iter()
            .any(|e| matches!(e, Effect::KeepSingleConnection { .. })),
        "single_connection is off"
    );

    // Named in the token too: subscribed once.
    let mut h = Harness::with(personal);
    let mut c = claims("42");
    c.channels = vec!["personal:#42".into()];
    assert_eq!(connect_collecting_plans(&mut h, c), ["personal:#42"]);

    // Anonymous connections have none.
    let mut h = Harness::with(personal);
    assert!(connect_collecting_plans(&mut h, claims("")).is_empty());

    // Without a namespace the channel is `#<user>`.
    let mut h = Harness::with(|c| c.subscribe_to_user_personal_channel.enabled = true);
    assert_eq!(connect_collecting_plans(&mut h, claims("7")), ["#7"]);
}

#[test]
fn single_connection_asks_the_node_to_close_the_users_other_connections() {
    let mut h = Harness::with(|c| {
        c.subscribe_to_user_personal_channel.enabled = true;
        c.subscribe_to_user_personal_channel
            .personal_channel_namespace = "personal".into();
        c.subscribe_to_user_personal_channel.single_connection = true;
    });
    connect_collecting_plans(&mut h, claims("42"));
    assert!(h.sent[0]["connect"].is_object(), "{:?}", h.sent);
    let asked: Vec<_> = h
        .spawned
        .iter()
        .filter_map(|e| match e {
            Effect::KeepSingleConnection {
                channel,
                user,
                client,
            } => Some((channel.as_str(), user.as_str(), client.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [("personal:#42", "42", "c1")]);
}

#[test]
fn anonymous_connection_tokens_are_refused_with_3507_when_disallowed() {
    let mut h = Harness::with(|c| c.disallow_anonymous_connection_tokens = true);
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims("")))));
    assert_eq!(h.closed, Some(Disconnect::PERMISSION_DENIED));
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    // A token with a user passes; allowed by default.
    let mut h = Harness::with(|c| c.disallow_anonymous_connection_tokens = true);
    h.connect_as(claims("u"));
    assert!(h.closed.is_none());
    let mut h = Harness::new();
    h.connect_as(claims(""));
    assert!(h.closed.is_none());
}

#[test]
fn the_user_id_header_names_the_user_of_a_tokenless_connect() {
    let with_header = |s: &mut Setup| s.header_user = Some("from-proxy".into());
    let mut h = Harness::with_transport(|_| {}, false, false, with_header);
    h.send(&[json!({"id": 1, "connect": {}})]);
    h.answer_next(
        |e| matches!(e, Effect::Register { user } if user == "from-proxy"),
        Outcome::Registered(true),
    );
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    assert!(h.sent[0]["connect"]["client"].is_string(), "{:?}", h.sent);
    assert_eq!(h.machine.user(), "from-proxy");
    // A token wins over the header.
    let mut h = Harness::with_transport(|_| {}, false, false, with_header);
    h.connect_as(claims("token-user"));
    assert_eq!(h.machine.user(), "token-user");
}

#[test]
fn connect_time_only_with_connect_include_server_time() {
    let mut h = Harness::with(|c| c.connect_include_server_time = true);
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims("u")))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    assert_eq!(
        h.sent[0]["connect"]["time"],
        json!(h.now.unix_ms),
        "{:?}",
        h.sent
    );
    let mut h = Harness::new();
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(|_| true, Outcome::Verified(Ok(principal(claims("u")))));
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    assert!(h.sent[0]["connect"].get("time").is_none(), "{:?}", h.sent);
}
