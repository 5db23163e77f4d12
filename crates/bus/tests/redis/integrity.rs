//! Signed envelopes (SEC-BUS-1): forged, replayed and tampered messages, key rotation.

use super::*;
use herald_bus::integrity::MAX_CLOCK_SKEW_MS;

// ---------------------------------------------------------------------------
// Signed envelopes (SEC-BUS)

/// What an outsider with Redis access sees: subscribes to the Redis channel
/// `channel`, runs `publish`, and returns the first message that arrives.
async fn capture(
    redis: &RedisServer,
    channel: &str,
    publish: impl std::future::Future<Output = ()>,
) -> Vec<u8> {
    use futures_util::StreamExt as _;

    let outsider = redis::Client::open(redis.url()).unwrap();
    let mut listener = outsider.get_async_pubsub().await.unwrap();
    listener.subscribe(channel).await.unwrap();
    publish.await;
    let message = tokio::time::timeout(Duration::from_secs(5), listener.on_message().next())
        .await
        .expect("the outsider sees the real envelope")
        .unwrap();
    message.get_payload_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_tampered_envelopes_reach_no_subscriber() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("forged");
    let ring = || keyring("k1", &[("k1", 7)]);
    let a = signed_node(config(vec![redis.url()], &prefix), "node-a", ring()).await;
    let b = signed_node(config(vec![redis.url()], &prefix), "node-b", ring()).await;
    b.subscribe("news").await.unwrap();

    // An outsider with Redis access listens and captures a real envelope.
    let client_channel = format!("{prefix}.client.news");
    let captured = capture(&redis, &client_channel, async {
        a.publish("news", publication(r#"{"n":1}"#), &history_options(10))
            .await
            .unwrap();
    })
    .await;
    assert!(captured.starts_with(b"s1:"), "signed on the wire");
    let events = b.events.clone();
    wait_until(
        "the real publication",
        5.0,
        || events.data("news").len() == 1,
        || events.events(),
    )
    .await;

    // Crafted without a key, a replay, one bit flipped in the body, a
    // valid-looking envelope under a key id nobody holds.
    let mut flipped = captured.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x01;
    let foreign = {
        let outsider_ring = Integrity::new(keyring("k9", &[("k9", 9)]), "intruder");
        let body = br#"{"data":{"n":666}}"#;
        let mut e = outsider_ring.sign(client_channel.as_bytes(), b"p1", body, unix_ms());
        e.extend_from_slice(b"p1:0::");
        e.extend_from_slice(body);
        e
    };
    let crafted = br#"p1:2:x:{"data":{"n":666}}"#.to_vec();
    for (bytes, what) in [
        (&crafted, "crafted"),
        (&captured, "replay"),
        (&flipped, "bit flip"),
        (&foreign, "foreign key"),
    ] {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], bytes);
        assert_eq!(reply.trim(), "1", "{what}: node B got it");
    }
    let engine = b.engine.clone();
    wait_until(
        "four refusals",
        5.0,
        || engine.stats().envelopes_rejected.iter().sum::<u64>() >= 4,
        || refused(&engine),
    )
    .await;
    assert_eq!(
        refused(&b.engine),
        BTreeMap::from([
            ("bad_mac", 1),
            ("replay", 1),
            ("unknown_key", 1),
            ("unsigned", 1)
        ])
    );
    // Nothing reached node B's Hub but the one real publication.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.events.data("news"), [r#"{"n":1}"#]);
    assert_eq!(b.stats().messages_rejected, 0, "refused before decoding");
}

/// With sealed history the position is signed too (`s2:`): an outsider who
/// captured a publication cannot hand it, at another offset or epoch, to a
/// node that never saw the original (whose replay window knows nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sealed_history_a_captured_publication_cannot_be_moved() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("moved");
    let bus = || keyring("k1", &[("k1", 7)]);
    let history = || history_keyring("h1", &[("h1", 1)]);
    let a = keyed_node(
        config(vec![redis.url()], &prefix),
        "node-a",
        bus(),
        history(),
    )
    .await;
    let c = keyed_node(
        config(vec![redis.url()], &prefix),
        "node-c",
        bus(),
        history(),
    )
    .await;

    let client_channel = format!("{prefix}.client.news");
    let mut position = None;
    let captured = capture(&redis, &client_channel, async {
        position = Some(
            a.publish("news", publication(r#"{"n":1}"#), &history_options(10))
                .await
                .unwrap(),
        );
    })
    .await;
    let position = position.unwrap();
    assert!(captured.starts_with(b"s2:"), "the position is signed");

    // Node C subscribes only now: it never saw the original.
    c.subscribe("news").await.unwrap();
    let original = format!("p1:{}:{}:", position.offset, position.epoch);
    let at = captured
        .windows(original.len())
        .position(|w| w == original.as_bytes())
        .expect("the script wrote the position after the signature");
    let moved = |offset: u64, epoch: &str| {
        let mut bytes = captured[..at].to_vec();
        bytes.extend_from_slice(format!("p1:{offset}:{epoch}:").as_bytes());
        bytes.extend_from_slice(&captured[at + original.len()..]);
        bytes
    };
    for (bytes, what) in [
        (
            moved(position.offset + 1, &position.epoch),
            "another offset",
        ),
        (moved(position.offset, "forged-epoch"), "another epoch"),
    ] {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], &bytes);
        assert_eq!(reply.trim(), "1", "{what}: node C got it");
    }
    let engine = c.engine.clone();
    wait_until(
        "two refusals",
        5.0,
        || engine.stats().envelopes_rejected.iter().sum::<u64>() >= 2,
        || refused(&engine),
    )
    .await;
    assert_eq!(refused(&c.engine), BTreeMap::from([("bad_mac", 2)]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        c.events.data("news").is_empty(),
        "{:?}",
        c.events.data("news")
    );

    // Publications from node A still reach node C.
    a.publish("news", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    let events = c.events.clone();
    wait_until(
        "the next real publication on node C",
        5.0,
        || events.data("news") == [r#"{"n":2}"#],
        || events.data("news"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_step_rotation_mid_stream_loses_and_refuses_nothing() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("rotation");
    let a = signed_node(
        config(vec![redis.url()], &prefix),
        "node-a",
        keyring("k1", &[("k1", 1)]),
    )
    .await;
    let b = signed_node(
        config(vec![redis.url()], &prefix),
        "node-b",
        keyring("k1", &[("k1", 1)]),
    )
    .await;
    b.subscribe("chat").await.unwrap();
    a.subscribe("chat").await.unwrap();

    // Step 1 (k2 added everywhere, k1 signs), step 2 (k2 signs, node A
    // first), step 3 (k1 removed, node B first): each node mid-step while
    // messages flow; half of them kept in history (the Lua path), half not.
    let both = [("k1", 1), ("k2", 2)];
    let k2_only = [("k2", 2)];
    for n in 0..1000u32 {
        match n {
            200 => b.integrity().reload(keyring("k1", &both)),
            250 => a.integrity().reload(keyring("k1", &both)),
            400 => a.integrity().reload(keyring("k2", &both)),
            450 => b.integrity().reload(keyring("k2", &both)),
            700 => b.integrity().reload(keyring("k2", &k2_only)),
            750 => a.integrity().reload(keyring("k2", &k2_only)),
            _ => {}
        }
        let options = if n % 2 == 0 {
            history_options(2000)
        } else {
            PublishOptions::default()
        };
        a.publish("chat", publication(&format!(r#"{{"n":{n}}}"#)), &options)
            .await
            .unwrap();
    }
    for node in [&a, &b] {
        let events = node.events.clone();
        wait_until(
            "1,000 publications",
            10.0,
            || events.data("chat").len() >= 1000,
            || events.data("chat").len(),
        )
        .await;
        let want: Vec<String> = (0..1000).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        assert_eq!(
            node.events.data("chat"),
            want,
            "every message, in order, once"
        );
        assert_eq!(refused(&node.engine), BTreeMap::new(), "nothing refused");
    }
    // After step 3 a node still on k1 is refused.
    let old = signed_node(
        config(vec![redis.url()], &prefix),
        "node-old",
        keyring("k1", &[("k1", 1)]),
    )
    .await;
    old.publish(
        "chat",
        publication(r#"{"n":"old"}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    // (Its heartbeats on the control channel are refused too.)
    let engine = b.engine.clone();
    wait_until(
        "the k1 envelopes refused",
        5.0,
        || refused(&engine).get("unknown_key").is_some_and(|n| *n >= 1),
        || refused(&engine),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.events.data("chat").len(),
        1000,
        "the k1 publication did not arrive"
    );
    assert_eq!(
        refused(&b.engine).keys().copied().collect::<Vec<_>>(),
        ["unknown_key"]
    );
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A real envelope from a node whose clock is outside the window is refused
/// as `stale`, and the channel's positioned subscribers are told to recover
/// (the publication is in the stream): a node with a skewed clock never
/// starves them silently. A forged envelope (bad tag) tells nobody anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_envelope_is_refused_and_its_channel_told_to_recover() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("stale");
    let ring = || keyring("k1", &[("k1", 7)]);
    let b = signed_node(config(vec![redis.url()], &prefix), "node-b", ring()).await;
    b.subscribe("news").await.unwrap();
    b.subscribe("other").await.unwrap();

    let client_channel = format!("{prefix}.client.news");
    let body = br#"{"data":{"n":1}}"#;
    let envelope = |node: &str, ts_ms: u64| {
        let mut e =
            Integrity::new(ring(), node).sign(client_channel.as_bytes(), b"p1", body, ts_ms);
        e.extend_from_slice(b"p1:0::");
        e.extend_from_slice(body);
        e
    };
    // 40 s ahead and 40 s behind: both outside the 30 s window.
    let ahead = envelope("node-ahead", unix_ms() + 40_000);
    let behind = envelope("node-behind", unix_ms() - 40_000);
    let mut forged = envelope("node-forged", unix_ms() - 40_000);
    let last = forged.len() - 2;
    forged[last] ^= 0x01;
    for (bytes, what) in [(&ahead, "ahead"), (&behind, "behind"), (&forged, "forged")] {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], bytes);
        assert_eq!(reply.trim(), "1", "{what}: node B got it");
    }
    let engine = b.engine.clone();
    wait_until(
        "three refusals",
        5.0,
        || engine.stats().envelopes_rejected.iter().sum::<u64>() >= 3,
        || refused(&engine),
    )
    .await;
    assert_eq!(
        refused(&b.engine),
        BTreeMap::from([("bad_mac", 1), ("stale", 2)])
    );
    assert_eq!(b.events.gaps("news"), 2, "one gap per stale envelope");
    assert_eq!(b.events.gaps("other"), 0, "only the envelope's channel");
    assert!(b.events.data("news").is_empty(), "nothing stale delivered");

    // An envelope inside the window is delivered, and tells nothing.
    let fresh = envelope("node-fresh", unix_ms() - 20_000);
    redis.cli_stdin(&["PUBLISH", &client_channel], &fresh);
    let events = b.events.clone();
    wait_until(
        "the publication 20 s old",
        5.0,
        || events.data("news").len() == 1,
        || events.events(),
    )
    .await;
    assert_eq!(b.events.gaps("news"), 2);
}

/// Each heartbeat measures this node's clock against Redis's `TIME`: in step
/// here, with the envelope window only while the node checks envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_is_measured_against_redis() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("clock");
    let signed = signed_node(
        config(vec![redis.url()], &prefix),
        "node-signed",
        keyring("k1", &[("k1", 7)]),
    )
    .await;
    let plain = healthy_node(config(vec![redis.url()], &prefix), "node-plain").await;
    for (node, window) in [(&signed, Some(MAX_CLOCK_SKEW_MS)), (&plain, None)] {
        let engine = node.engine.clone();
        wait_until("a clock reading", 5.0, || engine.clock().is_some(), || ()).await;
        let reading = node.engine.clock().unwrap();
        assert!(
            reading.skew_ms.abs() < 1_000,
            "this host and its Redis share a clock: {reading:?}"
        );
        assert_eq!(reading.window_ms, window);
        assert!(!reading.outside_window() && !reading.past_half_window());
    }
}
