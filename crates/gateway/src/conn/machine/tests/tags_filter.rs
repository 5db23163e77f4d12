//! Subscribe with a tags filter (`tf`): 107 where the namespace does not
//! allow it or the filter is invalid, otherwise the plan carries the checked
//! filter; with delta asked for too it still subscribes (delta is simply
//! not negotiated for a filtered subscription).

use super::*;

/// `tags:` allows filters, everything else is open but does not.
fn harness() -> Harness {
    let mut channels = open_channels();
    let allowing = ChannelOptions {
        allow_tags_filter: true,
        ..channels.without_namespace.clone()
    };
    channels.namespaces.push(NamespaceConfig {
        name: "tags".into(),
        options: allowing,
    });
    let policy = ChannelPolicy::new(&channels).expect("a valid policy");
    let mut h = Harness::with_transport(|_| {}, false, false, |s| s.policy = Arc::new(policy));
    h.connect_as(claims("u"));
    h
}

fn eq_filter() -> Value {
    json!({"key": "kind", "cmp": "eq", "val": "goal"})
}

#[test]
fn a_filter_where_not_allowed_is_107_and_frees_the_channel() {
    let mut h = harness();
    h.send(&[json!({"id": 2, "subscribe": {"channel": "plain", "tf": eq_filter()}})]);
    assert_eq!(h.error_code(0), Some(107), "{:?}", h.sent);
    assert!(h.waiting.is_empty(), "nothing reaches the engine");
    // The same channel without a filter subscribes.
    h.subscribe(3, "plain", Ok(SubscribeResult::default()));
    assert!(h.sent[1]["subscribe"].is_object(), "{:?}", h.sent);
}

#[test]
fn invalid_filters_are_107() {
    let invalid = [
        json!({"key": "k", "cmp": "like", "val": "v"}),
        json!({"key": "k", "cmp": "eq"}),
        json!({"cmp": "eq", "val": "v"}),
        json!({"key": "k", "cmp": "in"}),
        json!({"key": "k", "cmp": "ex", "val": "v"}),
        json!({"op": "xor", "nodes": [eq_filter()]}),
        json!({"op": "and"}),
        json!({"op": "not", "nodes": [eq_filter(), eq_filter()]}),
        json!({}),
    ];
    let mut h = harness();
    for (i, tf) in invalid.iter().enumerate() {
        let id = 2 + i as u64;
        h.send(&[json!({"id": id, "subscribe": {"channel": "tags:a", "tf": tf}})]);
        assert_eq!(h.error_code(i), Some(107), "{tf}: {:?}", h.sent);
    }
    assert!(h.waiting.is_empty());
}

#[test]
fn an_allowed_valid_filter_goes_into_the_plan() {
    let mut h = harness();
    h.send(&[json!({"id": 2, "subscribe": {"channel": "tags:a", "tf": eq_filter()}})]);
    let (_, effect) = h.next_effect();
    let Effect::Subscribe { plan } = effect else {
        panic!("expected a subscribe, got {effect:?}");
    };
    let filter = plan.tags_filter.expect("the plan has the filter");
    let goal = [("kind".to_string(), "goal".to_string())].into();
    let shot = [("kind".to_string(), "shot".to_string())].into();
    assert!(filter.matches(&goal) && !filter.matches(&shot));
}

#[test]
fn a_filter_with_delta_subscribes_without_delta() {
    let mut h = harness();
    h.send(&[
        json!({"id": 2, "subscribe": {"channel": "tags:a", "tf": eq_filter(), "delta": "fossil"}}),
    ]);
    let (id, effect) = h.next_effect();
    let Effect::Subscribe { plan } = effect else {
        panic!("expected a subscribe, got {effect:?}");
    };
    assert!(plan.tags_filter.is_some());
    h.answer(
        id,
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    let reply = &h.sent[0]["subscribe"];
    assert!(reply.is_object(), "{:?}", h.sent);
    assert!(reply.get("delta").is_none(), "{reply}");
}
