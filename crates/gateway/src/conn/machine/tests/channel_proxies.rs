//! The subscribe, publish, sub_refresh and refresh proxies on the machine
//! alone: when the backend is asked, what its answers do, and that a
//! failure is retried rather than ending what the client has.

use herald_proxy::{Answer, Failure, PublishGrant, RefreshGrant, SubscriptionGrant};

use super::proxy::json_payload;
use super::*;

/// `sp`: subscribe and sub_refresh proxies (user-limited channels on);
/// `pp`: the publish proxy, no `allow_publish_*` flag; `named`: a named
/// subscribe proxy.
fn proxied_policy() -> Arc<ChannelPolicy> {
    let mut channels = open_channels();
    let sp = ChannelOptions {
        subscribe_proxy_enabled: true,
        sub_refresh_proxy_enabled: true,
        allow_user_limited_channels: true,
        presence: true,
        ..Default::default()
    };
    let pp = ChannelOptions {
        publish_proxy_enabled: true,
        allow_subscribe_for_client: true,
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let named = ChannelOptions {
        subscribe_proxy_enabled: true,
        subscribe_proxy_name: "tenant".into(),
        ..Default::default()
    };
    for (name, options) in [("sp", sp), ("pp", pp), ("named", named)] {
        channels.namespaces.push(NamespaceConfig {
            name: name.into(),
            options,
        });
    }
    Arc::new(ChannelPolicy::new(&channels).expect("a valid policy"))
}

/// No pings: the clock runs for minutes and nobody answers them.
fn harness(refresh_proxy: bool, edit: impl FnOnce(&mut ClientConfig)) -> Harness {
    let edit = |c: &mut ClientConfig| {
        c.ping_interval = Duration::ZERO;
        edit(c);
    };
    Harness::with_transport(edit, false, false, |s| {
        s.policy = proxied_policy();
        s.refresh_proxy = refresh_proxy;
    })
}

fn connected(edit: impl FnOnce(&mut ClientConfig)) -> Harness {
    let mut h = harness(false, edit);
    h.connect_as(claims("u"));
    h
}

/// Subscribes to `channel` and answers the subscribe proxy with `answer`.
fn subscribe_through(
    h: &mut Harness,
    id: u64,
    channel: &str,
    answer: Result<Answer<SubscriptionGrant>, Failure>,
) {
    h.send(&[json!({"id": id, "subscribe": {"channel": channel, "data": {"d": 1}}})]);
    h.answer_next(
        |e| matches!(e, Effect::ProxySubscribe { channel: c, data: Some(_), .. } if c == channel),
        Outcome::SubscribeProxied(answer),
    );
}

fn granted(expire_at: Option<u64>) -> SubscriptionGrant {
    SubscriptionGrant {
        info: Some(json_payload(r#"{"granted":true}"#)),
        data: Some(json_payload(r#"{"welcome":1}"#)),
        expire_at,
        ..Default::default()
    }
}

#[test]
fn the_subscribe_proxy_grants_info_data_and_an_expiry_the_client_is_not_told() {
    let mut h = connected(|_| {});
    h.take_sent();
    subscribe_through(
        &mut h,
        2,
        "sp:a",
        Ok(Answer::Result(granted(Some(T0_UNIX + 60)))),
    );
    let (id, effect) = h.next_effect();
    let Effect::Subscribe { plan } = effect else {
        panic!("{effect:?}")
    };
    assert_eq!(plan.expires_at, Some(T0_UNIX + 60));
    assert!(
        plan.refreshed_by_backend,
        "the sub_refresh proxy refreshes it"
    );
    assert_eq!(
        plan.data.as_ref().map(RawJson::get),
        Some(r#"{"welcome":1}"#)
    );
    assert_eq!(
        plan.info.chan_info.as_ref().map(RawJson::get),
        Some(r#"{"granted":true}"#)
    );
    h.answer(
        id,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    assert!(h.sent[0]["subscribe"].is_object(), "{:?}", h.sent);
}

#[test]
fn the_subscribe_proxy_refuses_fails_and_disconnects() {
    let mut h = connected(|_| {});
    h.take_sent();
    let refused = Answer::Error {
        code: 403,
        message: "not for you".into(),
        temporary: false,
    };
    subscribe_through(&mut h, 2, "sp:a", Ok(refused));
    assert_eq!(h.error_code(0), Some(403));
    // The refused channel is not left half-subscribed: asking again asks again.
    subscribe_through(&mut h, 3, "sp:a", Err(Failure::Status(500)));
    assert_eq!(h.error_code(1), Some(100), "a failure is temporary");
    assert!(h.closed.is_none());
    subscribe_through(
        &mut h,
        4,
        "sp:a",
        Ok(Answer::Disconnect {
            code: 4501,
            reason: "bye".into(),
        }),
    );
    assert_eq!(h.closed.as_ref().map(|d| d.code), Some(4501));
}

#[test]
fn the_subscribe_proxy_is_not_asked_with_a_token_for_user_limited_or_other_namespaces() {
    let mut h = connected(|_| {});
    h.send(&[json!({"id": 2, "subscribe": {"channel": "sp:b", "token": "t"}})]);
    let (_, effect) = h.next_effect();
    assert!(
        matches!(effect, Effect::VerifySubscription { .. }),
        "{effect:?}"
    );
    let mut h = connected(|_| {});
    h.send(&[json!({"id": 2, "subscribe": {"channel": "sp:room#u"}})]);
    let (_, effect) = h.next_effect();
    assert!(
        matches!(effect, Effect::Subscribe { .. }),
        "the user list decides: {effect:?}"
    );
    let mut h = connected(|_| {});
    h.send(&[json!({"id": 2, "subscribe": {"channel": "named:x"}})]);
    let (_, effect) = h.next_effect();
    assert!(
        matches!(&effect, Effect::ProxySubscribe { proxy, .. } if proxy == "tenant"),
        "the namespace's named proxy: {effect:?}"
    );
}

#[test]
fn the_publish_proxy_decides_and_rewrites() {
    let mut h = connected(|_| {});
    h.take_sent();
    h.send(&[json!({"id": 2, "publish": {"channel": "pp:a", "data": {"x": 1}}})]);
    let grant = PublishGrant {
        data: Some(json_payload(r#"{"rewritten":true}"#)),
        skip_history: true,
        tags: [("t".to_owned(), "1".to_owned())].into(),
        idempotency_key: Some("k".into()),
        delta: true,
    };
    h.answer_next(
        |e| matches!(e, Effect::ProxyPublish { channel, data, .. } if channel == "pp:a" && data.get() == r#"{"x":1}"#),
        Outcome::PublishProxied(Ok(Answer::Result(grant))),
    );
    let (id, effect) = h.next_effect();
    let Effect::Publish {
        publication,
        options,
        ..
    } = effect
    else {
        panic!("{effect:?}")
    };
    assert_eq!(publication.data.get(), r#"{"rewritten":true}"#);
    assert_eq!(publication.tags.get("t").map(String::as_str), Some("1"));
    assert!(options.history.is_none(), "skip_history");
    assert_eq!(options.idempotency_key.as_deref(), Some("k"));
    assert!(publication.delta, "the proxy's delta reaches the engine");
    h.answer(id, Outcome::Published(Ok(())));
    assert!(h.sent[0]["publish"].is_object(), "{:?}", h.sent);
    // A refusal reaches the client; nothing is published.
    h.send(&[json!({"id": 3, "publish": {"channel": "pp:a", "data": {"x": 2}}})]);
    let refused = Answer::Error {
        code: 1002,
        message: "no".into(),
        temporary: false,
    };
    h.answer_next(
        |e| matches!(e, Effect::ProxyPublish { .. }),
        Outcome::PublishProxied(Ok(refused)),
    );
    assert_eq!(h.error_code(1), Some(1002));
    assert!(h.waiting.is_empty(), "{:?}", h.waiting);
}

#[test]
fn the_sub_refresh_proxy_extends_retries_and_ends_a_subscription() {
    let mut h = connected(|c| c.presence_update_interval = Duration::from_secs(1));
    subscribe_through(
        &mut h,
        2,
        "sp:a",
        Ok(Answer::Result(granted(Some(T0_UNIX + 2)))),
    );
    let (id, _) = h.waiting.pop_front().expect("sub_refresh step 1");
    h.answer(
        id,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    h.take_sent();
    h.advance(Duration::from_secs(3));
    let (id, effect) = h.waiting.pop_front().expect("sub_refresh step 2");
    assert!(
        matches!(&effect, Effect::ProxySubRefresh { channel, .. } if channel == "sp:a"),
        "{effect:?}"
    );
    assert!(h.waiting.is_empty(), "one call at a time: {:?}", h.waiting);
    // A failure: the subscription stays, past the usual grace, and is asked again.
    h.answer(id, Outcome::SubRefreshProxied(Err(Failure::Status(503))));
    h.advance(Duration::from_secs(60));
    assert!(h.closed.is_none(), "{:?}", h.closed);
    assert!(
        h.take_sent().iter().all(|m| m.get("push").is_none()),
        "still subscribed"
    );
    let (id, _) = h.waiting.pop_front().expect("sub_refresh step 3");
    let extended = RefreshGrant {
        expire_at: Some(h.now.unix + 600),
        ..Default::default()
    };
    h.answer(id, Outcome::SubRefreshProxied(Ok(Answer::Result(extended))));
    h.waiting.clear();
    h.advance(Duration::from_secs(30));
    assert!(h.waiting.is_empty(), "extended: not asked again");
    h.advance(Duration::from_secs(600));
    let (id, _) = h.waiting.pop_front().expect("sub_refresh step 4");
    let ended = RefreshGrant {
        expired: true,
        ..Default::default()
    };
    h.answer(id, Outcome::SubRefreshProxied(Ok(Answer::Result(ended))));
    let push = h.sent.last().expect("an unsubscribe push");
    assert_eq!(push["push"]["unsubscribe"]["code"], 2501, "{push}");
}

#[test]
fn with_a_refresh_proxy_the_server_refreshes_and_the_client_may_not() {
    let expiring = ConnectionClaims {
        expire_at: Some(T0_UNIX + 5),
        ..claims("u")
    };
    let mut h = harness(true, |_| {});
    h.connect_as(expiring.clone());
    assert!(h.sent.is_empty());
    let reply = h.replies();
    let CommandResult::Connect(result) = &reply[0] else {
        panic!("{reply:?}")
    };
    assert!(!result.expires && result.ttl == 0, "not told: {result:?}");
    h.send(&[json!({"id": 2, "refresh": {"token": "t"}})]);
    assert_eq!(h.closed, Some(Disconnect::BAD_REQUEST), "a client refresh");

    let mut h = harness(true, |_| {});
    h.connect_as(expiring);
    h.advance(Duration::from_secs(6));
    let (id, effect) = h.next_effect();
    assert!(matches!(effect, Effect::ProxyRefresh), "{effect:?}");
    h.answer(
        id,
        Outcome::RefreshProxied(Err(Failure::Transport("timed out".into()))),
    );
    assert!(h.closed.is_none(), "a failure does not end the connection");
    h.advance(proxied::REFRESH_RETRY + Duration::from_secs(1));
    let (id, effect) = h.next_effect();
    assert!(
        matches!(effect, Effect::ProxyRefresh),
        "asked again: {effect:?}"
    );
    let extended = RefreshGrant {
        expire_at: Some(h.now.unix + 100),
        info: Some(json_payload(r#"{"v":2}"#)),
        ..Default::default()
    };
    h.answer(id, Outcome::RefreshProxied(Ok(Answer::Result(extended))));
    h.advance(Duration::from_secs(50));
    assert!(h.waiting.is_empty() && h.closed.is_none());
    h.advance(Duration::from_secs(60));
    let (id, _) = h.next_effect();
    let ended = RefreshGrant {
        expired: true,
        ..Default::default()
    };
    h.answer(id, Outcome::RefreshProxied(Ok(Answer::Result(ended))));
    assert_eq!(h.closed, Some(Disconnect::EXPIRED));
}
