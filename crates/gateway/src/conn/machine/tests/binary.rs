//! Binary channels (`publication_data_format = "binary"`): only a client
//! that takes binary data (protobuf) may use them; publish data is taken as
//! bytes there and must be JSON everywhere else.

use herald_protocol::{Command, Method, PublishRequest, RawJson};

use super::*;

fn publish(id: u32, channel: &str, data: RawJson) -> Command {
    Command {
        id,
        method: Method::Publish(PublishRequest {
            channel: channel.into(),
            data: Some(data),
        }),
    }
}

/// The data of the publication the machine asks the engine to publish.
fn published_data(h: &mut Harness) -> RawJson {
    let (id, effect) = h.next_effect();
    let Effect::Publish { publication, .. } = effect else {
        panic!("expected a publish, got {effect:?}");
    };
    h.answer(id, Outcome::Published(Ok(())));
    publication.data
}

#[test]
fn a_json_client_is_refused_on_a_binary_channel_with_108() {
    let mut h = Harness::connected("u");
    h.send(&[
        json!({"id": 2, "subscribe": {"channel": "bin:x"}}),
        json!({"id": 3, "publish": {"channel": "bin:x", "data": {"a": 1}}}),
        json!({"id": 4, "history": {"channel": "bin:x"}}),
    ]);
    let codes: Vec<Option<u64>> = (0..3).map(|i| h.error_code(i)).collect();
    assert_eq!(codes, [Some(108), Some(108), Some(108)]);
    assert!(h.waiting.is_empty(), "nothing reached the engine");
    assert!(h.closed.is_none(), "the connection stays");
    // Presence carries no publication data: allowed.
    h.send(&[json!({"id": 5, "presence": {"channel": "bin:x"}})]);
    h.answer_next(
        |e| matches!(e, Effect::Presence { .. }),
        Outcome::Presence(Ok(CommandResult::PresenceStats(
            PresenceStatsResult::default(),
        ))),
    );
    assert_eq!(h.error_code(3), None);
}

#[test]
fn a_server_side_subscription_of_a_json_client_to_a_binary_channel_fails_the_connect() {
    let mut h = Harness::new();
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    let mut claims = claims("u");
    claims.channels = vec!["bin:feed".into()];
    h.answer_next(
        |e| matches!(e, Effect::VerifyConnection { .. }),
        Outcome::Verified(Ok(principal(claims))),
    );
    h.answer_next(
        |e| matches!(e, Effect::Register { .. }),
        Outcome::Registered(true),
    );
    // Refused while the plans are made, before the cluster-wide admission.
    assert_eq!(h.error_code(0), Some(108), "{:?}", h.sent);
    assert!(h.waiting.is_empty(), "{:?}", h.waiting);
}

#[test]
fn a_protobuf_client_publishes_bytes_on_a_binary_channel() {
    let mut h = Harness::connected_protobuf("u");
    // Bytes that are not JSON arrive marked binary; JSON-looking bytes
    // arrive as JSON text and are taken as their bytes too.
    h.commands(vec![publish(2, "bin:x", RawJson::binary(&[0, 1, 0xFF]))]);
    let data = published_data(&mut h);
    assert_eq!(data.binary_bytes(), Some(vec![0, 1, 0xFF]));
    h.commands(vec![publish(
        3,
        "bin:x",
        RawJson::from_str("{\"a\":1}").unwrap(),
    )]);
    let data = published_data(&mut h);
    assert_eq!(data.binary_bytes(), Some(b"{\"a\":1}".to_vec()));
    assert_eq!(h.sent.len(), 2, "{:?}", h.sent);
    assert!(h.sent.iter().all(|r| r["error"].is_null()), "{:?}", h.sent);
}

#[test]
fn on_a_json_channel_bytes_must_be_json() {
    let mut h = Harness::connected_protobuf("u");
    h.commands(vec![publish(2, "a", RawJson::binary(&[0, 1]))]);
    assert_eq!(h.error_code(0), Some(107));
    assert!(h.waiting.is_empty());
    // Pretty JSON (bytes with `\n`) comes marked binary and is parsed here.
    h.commands(vec![publish(3, "a", RawJson::binary(b"{\n \"a\": 1\n}"))]);
    let data = published_data(&mut h);
    assert!(!data.is_binary());
    assert_eq!(data.get(), "{ \"a\": 1}");
}

#[test]
fn history_of_a_binary_channel_sends_bytes() {
    let mut h = Harness::connected_protobuf("u");
    h.send(&[json!({"id": 2, "history": {"channel": "bin:x"}})]);
    let stored = herald_protocol::Publication {
        // As the engine hands it back: a base64 string, not marked.
        data: RawJson::from_str("\"AAE=\"").unwrap(),
        info: None,
        offset: 1,
        tags: Default::default(),
        delta: false,
    };
    h.answer_next(
        |e| matches!(e, Effect::History { .. }),
        Outcome::History(Ok(HistoryPage {
            publications: vec![stored],
            position: StreamPosition {
                offset: 1,
                epoch: "e".into(),
            },
        })),
    );
    assert_eq!(h.sent[0]["history"]["offset"], 1, "{:?}", h.sent);
    let replies = h.replies();
    let Some(CommandResult::History(result)) = replies.last() else {
        panic!("{replies:?}");
    };
    assert_eq!(result.publications[0].data.binary_bytes(), Some(vec![0, 1]));
}
