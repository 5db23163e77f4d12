//! One Redis server, two nodes: delivery, history, presence, idempotency, reads that store nothing.

use super::*;

// ---------------------------------------------------------------------------
// Standalone: one Redis, two nodes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_reach_the_other_node_in_order_with_offsets_and_epoch() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("pubs");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("chat").await.unwrap();
    a.subscribe("news").await.unwrap();

    let mut positions = Vec::new();
    for n in 1..=3 {
        let position = b
            .publish("chat", publication(&odd_data(n)), &history_options(10))
            .await
            .unwrap();
        positions.push(position);
    }
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let epoch = positions[0].epoch.clone();
    assert!(!epoch.is_empty(), "a history publish returns an epoch");
    assert!(positions.iter().all(|p| p.epoch == epoch), "{positions:?}");

    let events = a.events.clone();
    wait_until(
        "3 publications on node A",
        5.0,
        || events.publications("chat").len() >= 3,
        || events.events(),
    )
    .await;
    let received = a.events.publications("chat");
    assert_eq!(received.len(), 3, "{received:?}");
    for (n, (p, e)) in (1..=3).zip(&received) {
        assert_eq!(p.offset, n, "{received:?}");
        assert_eq!(e, &epoch, "A got the epoch B's publish returned");
        assert_eq!(p.data.get(), odd_data(n), "payload byte-exact");
        assert_eq!(p.info, Some(info("publisher", "pub-client")));
        assert_eq!(p.tags.get("k").map(String::as_str), Some("v"));
    }

    // Without history: no offset, no epoch, on both sides.
    let position = b
        .publish(
            "news",
            publication(r#"{"plain":true}"#),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(position, StreamPosition::default());
    wait_until(
        "the unpositioned publication on node A",
        5.0,
        || !events.publications("news").is_empty(),
        || events.events(),
    )
    .await;
    let (p, e) = &a.events.publications("news")[0];
    assert_eq!((p.offset, e.as_str()), (0, ""));
    assert_eq!(p.data.get(), r#"{"plain":true}"#);
    // B subscribed nothing: it received nothing.
    assert!(b.events.publications("chat").is_empty());
    assert!(b.events.publications("news").is_empty());

    // Channel names with separators and non-ASCII text, and a large payload.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(512 * 1024));
    let odd_channels = [
        "ns:chat#42",
        "a.b.client.c",
        "caf\u{e9} \u{1f600}",
        "$private",
    ];
    for channel in odd_channels {
        a.subscribe(channel).await.unwrap();
        b.publish(channel, publication(&big), &history_options(10))
            .await
            .unwrap();
    }
    wait_until(
        "publications on channels with odd names",
        5.0,
        || {
            odd_channels
                .iter()
                .all(|c| events.publications(c).len() == 1)
        },
        || events.events().len(),
    )
    .await;
    for channel in odd_channels {
        assert_eq!(
            a.events.data(channel),
            std::slice::from_ref(&big),
            "{channel}"
        );
        let page = a.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(page.publications.len(), 1, "{channel}");
        assert_eq!(page.publications[0].data.get(), big, "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_cross_nodes() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("joinleave");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("room").await.unwrap();

    b.publish_join("room", info("u1", "c1")).await.unwrap();
    b.publish_leave("room", info("u1", "c1")).await.unwrap();
    let events = a.events.clone();
    wait_until(
        "join and leave on node A",
        5.0,
        || !events.joins("room").is_empty() && !events.leaves("room").is_empty(),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.joins("room"), [info("u1", "c1")]);
    assert_eq!(a.events.leaves("room"), [info("u1", "c1")]);
    assert!(a.events.publications("room").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_forward_reverse_limited_and_since() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("history");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;

    // A channel nobody published to: top 0 and a stable epoch.
    let empty = a
        .history("nothing", &query(None, None, false))
        .await
        .unwrap();
    assert!(empty.publications.is_empty());
    assert_eq!(empty.position.offset, 0);
    assert!(!empty.position.epoch.is_empty());
    let again = b
        .history("nothing", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(again.position, empty.position, "the epoch is kept");
    // A client that read the position first recovers from the first publication.
    let first = b
        .publish("nothing", publication("{}"), &history_options(10))
        .await
        .unwrap();
    assert_eq!(
        first,
        StreamPosition {
            offset: 1,
            epoch: empty.position.epoch.clone()
        },
        "the first publication keeps the epoch a history read created"
    );
    let page = a
        .history("nothing", &query(Some(empty.position.clone()), None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1]);

    let mut epoch = String::new();
    for n in 1..=5 {
        epoch = b
            .publish("h", publication(&odd_data(n)), &history_options(10))
            .await
            .unwrap()
            .epoch;
    }
    let top = StreamPosition {
        offset: 5,
        epoch: epoch.clone(),
    };

    let all = a.history("h", &query(None, None, false)).await.unwrap();
    assert_eq!(all.position, top);
    assert_eq!(offsets(&all.publications), [1, 2, 3, 4, 5]);
    for p in &all.publications {
        assert_eq!(p.data.get(), odd_data(p.offset), "byte-exact from history");
        assert_eq!(p.info, Some(info("publisher", "pub-client")));
        assert_eq!(p.tags.get("k").map(String::as_str), Some("v"));
    }

    let since = |offset| {
        Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        })
    };
    let page = a.history("h", &query(since(2), None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [3, 4, 5]);
    assert_eq!(page.position, top);

    let page = a
        .history("h", &query(since(1), Some(2), false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [2, 3]);

    let page = a.history("h", &query(since(5), None, false)).await.unwrap();
    assert!(page.publications.is_empty(), "{page:?}");
    assert_eq!(page.position, top);

    let page = a.history("h", &query(None, None, true)).await.unwrap();
    assert_eq!(offsets(&page.publications), [5, 4, 3, 2, 1]);

    let page = a.history("h", &query(None, Some(2), true)).await.unwrap();
    assert_eq!(offsets(&page.publications), [5, 4]);

    let page = a.history("h", &query(since(3), None, true)).await.unwrap();
    assert_eq!(offsets(&page.publications), [2, 1], "reverse before since");

    let page = a.history("h", &query(None, Some(3), false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1, 2, 3]);

    let page = a.history("h", &query(None, Some(0), false)).await.unwrap();
    assert!(
        page.publications.is_empty(),
        "limit 0 gives only the position"
    );
    assert_eq!(page.position, top);

    let wrong = Some(StreamPosition {
        offset: 2,
        epoch: format!("{epoch}x"),
    });
    match a.history("h", &query(wrong, None, false)).await {
        Err(BusError::UnrecoverablePosition) => {}
        other => panic!("a wrong epoch must be unrecoverable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_to_size_and_removable() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("trim");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;

    let mut epoch = String::new();
    for n in 1..=7 {
        epoch = a
            .publish("t", publication(&odd_data(n)), &history_options(3))
            .await
            .unwrap()
            .epoch;
    }
    let page = a.history("t", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [5, 6, 7], "trimmed to size 3");
    assert_eq!(page.position.offset, 7);
    assert_eq!(
        redis.cli(&["XLEN", &format!("{prefix}.stream.t")]).trim(),
        "3",
        "the stream itself holds 3 entries"
    );

    a.remove_history("t").await.unwrap();
    let page = a.history("t", &query(None, None, false)).await.unwrap();
    assert!(page.publications.is_empty(), "{page:?}");
    assert_eq!(
        redis.cli(&["EXISTS", &format!("{prefix}.stream.t")]).trim(),
        "0"
    );
    // Publishing again continues the stream.
    let position = a
        .publish("t", publication("{}"), &history_options(3))
        .await
        .unwrap();
    assert_eq!(position.epoch, epoch);
    let page = a.history("t", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [position.offset]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_returns_the_first_position_and_delivers_once() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("idem");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("orders").await.unwrap();

    let options = PublishOptions {
        idempotency_key: Some("key-1".into()),
        ..history_options(10)
    };
    let first = b
        .publish("orders", publication(r#"{"order":1}"#), &options)
        .await
        .unwrap();
    let repeated = b
        .publish("orders", publication(r#"{"order":1}"#), &options)
        .await
        .unwrap();
    let from_a = a
        .publish("orders", publication(r#"{"order":1}"#), &options)
        .await
        .unwrap();
    assert_eq!(first.offset, 1);
    assert_eq!(repeated, first, "a repeated key returns the first position");
    assert_eq!(from_a, first, "from any node");

    // Without history too.
    let plain = PublishOptions {
        idempotency_key: Some("key-2".into()),
        history: None,
    };
    let p1 = b
        .publish("orders", publication(r#"{"order":2}"#), &plain)
        .await
        .unwrap();
    let p2 = b
        .publish("orders", publication(r#"{"order":2}"#), &plain)
        .await
        .unwrap();
    assert_eq!(p1, p2);

    // A marker published after: once it arrives, any duplicate would have.
    b.publish(
        "orders",
        publication(r#"{"marker":true}"#),
        &history_options(10),
    )
    .await
    .unwrap();
    let events = a.events.clone();
    wait_until(
        "the marker on node A",
        5.0,
        || {
            events
                .data("orders")
                .contains(&r#"{"marker":true}"#.to_string())
        },
        || events.events(),
    )
    .await;
    assert_eq!(
        a.events.data("orders"),
        [r#"{"order":1}"#, r#"{"order":2}"#, r#"{"marker":true}"#],
        "each idempotent publication delivered once"
    );
    let page = a
        .history("orders", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1, 2], "stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_counted_removed_and_expires() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("presence");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let ttl = Duration::from_secs(60);

    a.add_presence("lobby", info("alice", "a-1"), ttl)
        .await
        .unwrap();
    b.add_presence("lobby", info("alice", "a-2"), ttl)
        .await
        .unwrap();
    b.add_presence("lobby", info("bob", "b-1"), ttl)
        .await
        .unwrap();
    let expected: BTreeMap<String, ClientInfo> = [
        ("a-1".to_string(), info("alice", "a-1")),
        ("a-2".to_string(), info("alice", "a-2")),
        ("b-1".to_string(), info("bob", "b-1")),
    ]
    .into();
    assert_eq!(a.presence("lobby").await.unwrap(), expected);
    assert_eq!(b.presence("lobby").await.unwrap(), expected);
    let stats = a.presence_stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));

    // Refreshing an entry does not duplicate it.
    a.add_presence("lobby", info("alice", "a-1"), ttl)
        .await
        .unwrap();
    assert_eq!(b.presence("lobby").await.unwrap().len(), 3);

    b.remove_presence("lobby", "a-1").await.unwrap();
    let left = a.presence("lobby").await.unwrap();
    assert_eq!(
        left.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a-2", "b-1"]
    );
    let stats = b.presence_stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));

    // An entry with a 1 s TTL disappears; the others stay.
    a.add_presence("lobby", info("carol", "c-1"), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(b.presence("lobby").await.unwrap().contains_key("c-1"));
    let started = Instant::now();
    let last = loop {
        let now = b.presence("lobby").await.unwrap();
        if !now.contains_key("c-1") {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a 1s presence entry is still there after 4s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        last.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a-2", "b-1"]
    );
    let stats = a.presence_stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    assert_eq!(
        a.presence_stats("empty").await.unwrap(),
        PresenceStats::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_entries_with_different_ttls_expire_independently() {
    // Nodes with different presence TTLs (a rolling config change) share a
    // channel: the short entry must not take the long ones with it.
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("presencettl");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.add_presence("mixed", info("long", "long-1"), Duration::from_secs(60))
        .await
        .unwrap();
    a.add_presence("mixed", info("short", "short-1"), Duration::from_secs(1))
        .await
        .unwrap();
    let added = Instant::now();
    loop {
        let now = a.presence("mixed").await.unwrap();
        assert!(
            now.contains_key("long-1"),
            "the 60s entry vanished {:?} after a 1s entry was added: {now:?} (key TTL {})",
            added.elapsed(),
            redis
                .cli(&["TTL", &format!("{prefix}.presence.data.mixed")])
                .trim()
        );
        if !now.contains_key("short-1") && added.elapsed() > Duration::from_millis(2500) {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(5),
            "the 1s entry is still there after 5s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_fails_calls_within_command_timeout() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("hung");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("h").await.unwrap();

    redis.pause();
    let paused = Resume(&redis);
    for (what, options) in [
        ("with history", history_options(10)),
        ("without history", PublishOptions::default()),
    ] {
        let started = Instant::now();
        match b.publish("h", publication("{}"), &options).await {
            Err(BusError::Unavailable(_)) => {}
            other => panic!("publish {what} to a hung Redis: {other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1800),
            "publish {what} gave up after {took:?}; command_timeout is 1s"
        );
    }
    let started = Instant::now();
    assert!(a.presence("h").await.is_err());
    assert!(started.elapsed() < Duration::from_millis(1800));
    let engine = a.engine.clone();
    wait_until("A unhealthy", 3.0, || !engine.healthy(), || ()).await;
    drop(paused); // SIGCONT

    wait_until("A healthy again", 10.0, || engine.healthy(), || ()).await;
    let started = Instant::now();
    loop {
        match b
            .publish(
                "h",
                publication(r#"{"back":1}"#),
                &PublishOptions::default(),
            )
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "publish 5s after Redis resumed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = a.events.clone();
    wait_until(
        "a publication after Redis resumed",
        5.0,
        || events.data("h").contains(&r#"{"back":1}"#.to_string()),
        || events.events(),
    )
    .await;
}

/// Resumes a paused server when dropped (also when the test panics).
struct Resume<'a>(&'a RedisServer);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("unsub");
    // One pub/sub connection and one worker: what A receives keeps the order
    // Redis delivered in, across channels, so a marker proves absence.
    let single = RedisConfig {
        pubsub_connections: 1,
        pubsub_workers: 1,
        ..config(vec![redis.url()], &prefix)
    };
    let a = healthy_node(single, "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("gone").await.unwrap();
    a.subscribe("stays").await.unwrap();
    a.subscribe("stays").await.unwrap(); // idempotent

    b.publish(
        "gone",
        publication(r#"{"m":1}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    let events = a.events.clone();
    wait_until(
        "the first publication",
        5.0,
        || events.data("gone").len() == 1,
        || events.events(),
    )
    .await;

    a.unsubscribe("gone").await.unwrap();
    a.unsubscribe("gone").await.unwrap(); // idempotent
    let client_channel = format!("{prefix}.client.gone");
    let numsub = redis.cli(&["PUBSUB", "NUMSUB", &client_channel]);
    assert_eq!(
        numsub.lines().nth(1).map(str::trim),
        Some("0"),
        "nobody subscribes {client_channel} in Redis any more: {numsub}"
    );
    b.publish("gone", publication(r#"{"m":2}"#), &history_options(10))
        .await
        .unwrap();
    b.publish(
        "gone",
        publication(r#"{"m":3}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    b.publish(
        "stays",
        publication(r#"{"marker":1}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    wait_until(
        "the marker",
        5.0,
        || !events.data("stays").is_empty(),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("gone"), [r#"{"m":1}"#]);
    assert_eq!(
        a.events.data("stays"),
        [r#"{"marker":1}"#],
        "delivered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_expires_after_ttl_and_the_epoch_after_meta_ttl() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("ttl");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let short_stream = PublishOptions {
        history: Some(HistoryOptions {
            size: 10,
            ttl: Duration::from_secs(1),
            meta_ttl: Duration::from_secs(300),
        }),
        idempotency_key: None,
    };
    let short_meta = PublishOptions {
        history: Some(HistoryOptions {
            size: 10,
            ttl: Duration::from_secs(1),
            meta_ttl: Duration::from_secs(1),
        }),
        idempotency_key: None,
    };
    let mut kept = StreamPosition::default();
    for _ in 0..2 {
        kept = a
            .publish("s", publication("{}"), &short_stream)
            .await
            .unwrap();
    }
    let lost = a
        .publish("m", publication("{}"), &short_meta)
        .await
        .unwrap();
    assert_eq!((kept.offset, lost.offset), (2, 1));

    // A history read refreshes the meta with the query's meta_ttl: read the
    // short-meta channel with a 1 s one too.
    let short_query = HistoryQuery {
        meta_ttl: Duration::from_secs(1),
        ..query(None, None, false)
    };
    let started = Instant::now();
    loop {
        let page = a.history("s", &query(None, None, false)).await.unwrap();
        if page.publications.is_empty() {
            assert_eq!(page.position, kept, "the position outlives the stream");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a stream with a 1s ttl still holds {page:?} after 4s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    loop {
        let exists = redis.cli(&["EXISTS", &format!("{prefix}.stream.meta.m")]);
        if exists.trim() == "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a meta with a 1s ttl still exists after 4s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = a.history("m", &short_query).await.unwrap();
    assert_ne!(
        page.position.epoch, lost.epoch,
        "a new epoch after meta_ttl"
    );
    assert_eq!(page.position.offset, 0);
    assert!(page.publications.is_empty());
    let next = a
        .publish("m", publication("{}"), &short_meta)
        .await
        .unwrap();
    // The read and the publish may fall on either side of a 1 s period
    // boundary (the read's epoch is checked against the publish's in
    // reads_of_streams_nobody_published_to_write_nothing, with a long TTL).
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, lost.epoch, "a new epoch after meta_ttl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_streams_nobody_published_to_write_nothing() {
    let mut redis = blocking(RedisServer::start).await;
    let prefix = prefix("fresh");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let keys = |redis: &RedisServer| -> Vec<String> {
        let mut keys = redis.scan(&format!("{prefix}.stream*"));
        keys.sort();
        keys
    };
    let before = keys(&redis);
    // A client probing fresh names: history reads, recoverable subscribes
    // (limit 0), recoveries from offset 0.
    let mut answers = Vec::new();
    for i in 0..500 {
        let name = format!("probe-{i}");
        let page = a.history(&name, &query(None, None, false)).await.unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.position.offset, 0);
        let top = a
            .history(&name, &query(None, Some(0), false))
            .await
            .unwrap();
        assert_eq!(top.position, page.position, "stable for {name}");
        let since = a
            .history(&name, &query(Some(page.position.clone()), None, false))
            .await
            .unwrap();
        assert_eq!(since.position, page.position);
        answers.push(page.position);
    }
    assert_eq!(keys(&redis), before, "reads created keys under the prefix");

    // Every node answers the same, and the first publish takes that epoch:
    // a subscriber positioned at (epoch, 0) stays positioned.
    let other = b
        .history("probe-7", &query(None, Some(0), false))
        .await
        .unwrap();
    assert_eq!(other.position, answers[7]);
    let first = b
        .publish("probe-7", publication("{}"), &history_options(10))
        .await
        .unwrap();
    assert_eq!(
        first,
        StreamPosition {
            offset: 1,
            epoch: answers[7].epoch.clone()
        }
    );
    let page = a
        .history("probe-7", &query(Some(answers[7].clone()), None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1]);

    // Redis restarted empty: the stream is gone, and it comes back with
    // another epoch, so a client holding (epoch, 1) is told, not misled.
    redis.stop();
    redis.wipe();
    redis.restart();
    wait_until(
        "node a to be healthy again",
        10.0,
        || a.engine.healthy(),
        || (),
    )
    .await;
    let after = loop {
        match a.history("probe-7", &query(None, Some(0), false)).await {
            Ok(page) => break page,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(after.position.offset, 0);
    assert_ne!(after.position.epoch, first.epoch);
    let recovery = a
        .history("probe-7", &query(Some(first.clone()), None, false))
        .await;
    assert!(
        matches!(recovery, Err(BusError::UnrecoverablePosition)),
        "{recovery:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_cannot_keep_up_loses_messages_counted_and_signalled() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("overflow");
    let slow = RedisConfig {
        pubsub_buffer: 1,
        pubsub_workers: 1,
        ..config(vec![redis.url()], &prefix)
    };
    let a = node_with(slow, Recorder::slow("node-a", Duration::from_millis(20))).await;
    let engine = a.engine.clone();
    wait_until("node A healthy", 5.0, || engine.healthy(), || ()).await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("flood").await.unwrap();
    for n in 1..=40 {
        b.publish(
            "flood",
            publication(&format!("{{\"n\":{n}}}")),
            &history_options(100),
        )
        .await
        .unwrap();
    }
    let events = a.events.clone();
    wait_until(
        "dropped messages and a gap signal",
        5.0,
        || engine.stats().messages_dropped > 0 && events.gaps("flood") > 0,
        || (engine.stats(), events.gaps("flood")),
    )
    .await;
    // Once the worker caught up, delivery goes on: publish until one gets
    // through (the first ones may still meet a full queue).
    let started = Instant::now();
    let mut next = 41;
    loop {
        b.publish(
            "flood",
            publication(&format!("{{\"n\":{next}}}")),
            &history_options(100),
        )
        .await
        .unwrap();
        let arrived = || {
            events
                .publications("flood")
                .iter()
                .any(|(p, _)| p.offset > 40)
        };
        let sent = Instant::now();
        while !arrived() && sent.elapsed() < Duration::from_millis(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if arrived() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nothing delivered for 5s after the flood: {:?}",
            engine.stats()
        );
        next += 1;
    }
    let received: Vec<u64> = a
        .events
        .publications("flood")
        .iter()
        .map(|(p, _)| p.offset)
        .collect();
    assert!(received.len() < 40, "some were dropped: {received:?}");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "what arrived is in order: {received:?}"
    );
    assert!(engine.stats().messages_received >= 41);
    // What was dropped is in history for the subscribers to recover.
    let page = a.history("flood", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), (1..=next).collect::<Vec<_>>());
}
