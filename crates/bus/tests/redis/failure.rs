//! Failure and recovery: restarts, outages, slow hubs, garbage on the channels, bad configuration.

use super::*;

// ---------------------------------------------------------------------------
// Failure and recovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_with_gap_signal_and_epoch_change_on_data_loss() {
    let mut redis = blocking(RedisServer::start).await;
    let prefix = prefix("restart");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("live").await.unwrap();
    // Subscribed and left before the outage: must not come back.
    a.subscribe("old").await.unwrap();
    a.unsubscribe("old").await.unwrap();
    let before = b
        .publish("live", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "the first publication",
        5.0,
        || events.publications("live").len() == 1,
        || events.events(),
    )
    .await;
    assert_eq!(a.events.gaps("live"), 0, "no gap before any failure");

    // Down, data saved.
    redis = blocking(move || {
        redis.stop_saving();
        redis
    })
    .await;
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy() to turn false after Redis stopped",
            3.0,
            || !engine.healthy(),
            || (),
        )
        .await;
    }
    let started = Instant::now();
    match b
        .publish("live", publication(r#"{"n":0}"#), &history_options(10))
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish while Redis is down: {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "publish failed after {took:?}, command_timeout is 1s"
    );
    match b
        .publish(
            "live",
            publication(r#"{"n":0}"#),
            &PublishOptions::default(),
        )
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish without history while Redis is down: {other:?}"),
    }
    // A control command still acts on this node while Redis is down.
    let command = disconnect("during-outage");
    match a.publish_control(&command).await {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish_control while Redis is down: {other:?}"),
    }
    assert_eq!(a.events.controls(), [command], "applied locally anyway");

    // Back, with its data.
    redis = blocking(move || {
        redis.restart();
        redis
    })
    .await;
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy() again after Redis restarted",
            10.0,
            || engine.healthy(),
            || (),
        )
        .await;
    }
    wait_until(
        "on_gap for the subscribed channel after the resubscription",
        5.0,
        || events.gaps("live") >= 1,
        || events.events(),
    )
    .await;
    let after = b
        .publish("live", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    assert_eq!(after.epoch, before.epoch, "the saved stream came back");
    assert_eq!(after.offset, 2);
    wait_until(
        "a publication after the restart",
        5.0,
        || events.data("live").contains(&r#"{"n":2}"#.to_string()),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("live"), [r#"{"n":1}"#, r#"{"n":2}"#]);
    assert_eq!(a.events.gaps("old"), 0, "a channel left before is no gap");
    let numsub = redis.cli(&["PUBSUB", "NUMSUB", &format!("{prefix}.client.old")]);
    assert_eq!(
        numsub.lines().nth(1).map(str::trim),
        Some("0"),
        "a channel left before the outage is not resubscribed: {numsub}"
    );
    // The control channel came back too.
    let after_restart = disconnect("after-restart");
    a.publish_control(&after_restart).await.unwrap();
    let b_events = b.events.clone();
    wait_until(
        "a control command on node B after the restart",
        5.0,
        || b_events.controls().contains(&after_restart),
        || b_events.controls(),
    )
    .await;

    // Down again, data lost: the stream gets a new epoch.
    redis = blocking(move || {
        redis.stop();
        redis.wipe();
        redis.restart();
        redis
    })
    .await;
    let engine = a.engine.clone();
    wait_until(
        "healthy() after the empty restart",
        10.0,
        || engine.healthy(),
        || (),
    )
    .await;
    let page = a.history("live", &query(None, None, false)).await.unwrap();
    assert_ne!(
        page.position.epoch, before.epoch,
        "a lost stream has a new epoch"
    );
    assert!(page.publications.is_empty());
    match a
        .history(
            "live",
            &query(
                Some(StreamPosition {
                    offset: 2,
                    epoch: before.epoch.clone(),
                }),
                None,
                false,
            ),
        )
        .await
    {
        Err(BusError::UnrecoverablePosition) => {}
        other => panic!("recovering into a lost stream: {other:?}"),
    }
    // Still subscribed after the second restart.
    b.publish(
        "live",
        publication(r#"{"n":3}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    wait_until(
        "a publication after the empty restart",
        5.0,
        || events.data("live").contains(&r#"{"n":3}"#.to_string()),
        || events.events(),
    )
    .await;
    drop(redis);
}

// ---------------------------------------------------------------------------
// Garbage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_pubsub_is_rejected_and_counted() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("garbage");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("g").await.unwrap();
    let rejected_before = a.stats().messages_rejected;
    let client_channel = format!("{prefix}.client.g");
    let control = format!("{prefix}.control");
    let garbage: [&[u8]; 7] = [
        b"not-an-envelope",
        b"p1:x:y:{",
        b"p1:1:e:not json",
        b"j1:[",
        b"\xff\xfe\x00",
        b"",
        b"p1:0::{\"data\":",
    ];
    for bytes in garbage {
        let reply = redis.cli_stdin(&["PUBLISH", &client_channel], bytes);
        assert_eq!(reply.trim(), "1", "one subscriber (node A) got {bytes:?}");
    }
    for bytes in [&b"c1:{}"[..], b"hello", b"c1:{\"node\":1}"] {
        let reply = redis.cli_stdin(&["PUBLISH", &control], bytes);
        assert_eq!(reply.trim(), "2", "both nodes got {bytes:?}");
    }
    let engine = a.engine.clone();
    wait_until(
        "10 rejected messages",
        5.0,
        || engine.stats().messages_rejected >= rejected_before + 10,
        || engine.stats(),
    )
    .await;
    assert!(a.engine.stats().messages_received >= 10);

    b.publish("g", publication(r#"{"valid":true}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a valid publication after the garbage",
        5.0,
        || !events.publications("g").is_empty(),
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("g"), [r#"{"valid":true}"#]);
    assert!(a.events.controls().is_empty());
    assert!(a.healthy());
}

// ---------------------------------------------------------------------------
// Configuration errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_addresses_fail_at_connect() {
    for addresses in [vec!["nonsense://x".to_string()], Vec::new()] {
        let result =
            RedisEngine::connect(config(addresses.clone(), "bad"), Recorder::new("x")).await;
        match result {
            Err(BusError::Internal(message)) => {
                assert!(!message.is_empty())
            }
            Err(other) => panic!("{addresses:?}: {other:?}"),
            Ok(_) => panic!("{addresses:?}: connect succeeded"),
        }
    }
}

// ---------------------------------------------------------------------------
// More failure modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pubsub_connections_resubscribe_and_signal_a_gap() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("clientkill");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("k").await.unwrap();
    assert_eq!(a.events.gaps("k"), 0);

    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 4,
        "both nodes' pub/sub connections killed: {killed}"
    );
    let events = a.events.clone();
    wait_until(
        "on_gap for the subscribed channel",
        5.0,
        || events.gaps("k") >= 1,
        || events.events(),
    )
    .await;
    let numsub = redis.cli(&["PUBSUB", "NUMSUB", &format!("{prefix}.client.k")]);
    assert_eq!(numsub.lines().nth(1).map(str::trim), Some("1"), "{numsub}");
    b.publish(
        "k",
        publication(r#"{"after":"kill"}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    wait_until(
        "a publication after the reconnect",
        5.0,
        || events.data("k") == [r#"{"after":"kill"}"#],
        || events.events(),
    )
    .await;
    let command = disconnect("after-kill");
    b.publish_control(&command).await.unwrap();
    wait_until(
        "a control command after the reconnect",
        5.0,
        || events.controls() == [command.clone()],
        || events.controls(),
    )
    .await;
    let engine = a.engine.clone();
    wait_until("A healthy again", 5.0, || engine.healthy(), || ()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubsub_reconnect_signals_a_gap_even_two_close_together() {
    // Redis flapping: two reconnects a second apart may each lose messages,
    // so each must tell the positioned subscribers to recover.
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("flap");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.subscribe("k").await.unwrap();
    let client_channel = format!("{prefix}.client.k");
    let events = a.events.clone();
    let engine = a.engine.clone();
    let mut kills = Vec::new();
    for round in 1..=2 {
        let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed.trim().parse::<u32>().unwrap_or(0) >= 2, "{killed}");
        kills.push(Instant::now());
        // Back: subscribed again in Redis, and healthy.
        let started = Instant::now();
        loop {
            let numsub = redis.cli(&["PUBSUB", "NUMSUB", &client_channel]);
            if numsub.lines().nth(1).map(str::trim) == Some("1") && engine.healthy() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: not resubscribed after 5s: {numsub}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_until(
            &format!("gap signal number {round}"),
            3.0,
            || events.gaps("k") >= round,
            || (events.gaps("k"), kills[0].elapsed()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_left_during_an_outage_is_not_resubscribed() {
    // The last local subscriber leaves while Redis is down: the node must
    // not hold (and receive) that channel again once Redis is back.
    let mut redis = blocking(RedisServer::start).await;
    let prefix = prefix("leftdown");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.subscribe("kept").await.unwrap();
    a.subscribe("left").await.unwrap();
    redis = blocking(move || {
        redis.stop_saving();
        redis
    })
    .await;
    let engine = a.engine.clone();
    wait_until("A unhealthy", 3.0, || !engine.healthy(), || ()).await;
    // The gateway logs a failed unsubscribe and forgets the channel.
    let result = a.unsubscribe("left").await;
    redis = blocking(move || {
        redis.restart();
        redis
    })
    .await;
    wait_until("A healthy again", 10.0, || engine.healthy(), || ()).await;
    let events = a.events.clone();
    wait_until(
        "the resubscription of the kept channel",
        5.0,
        || events.gaps("kept") >= 1,
        || events.events(),
    )
    .await;
    let left = format!("{prefix}.client.left");
    let started = Instant::now();
    loop {
        let numsub = redis.cli(&["PUBSUB", "NUMSUB", &left]);
        if numsub.lines().nth(1).map(str::trim) == Some("0") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{left} is subscribed again after the reconnect (unsubscribe during the \
             outage returned {result:?}): {numsub}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_started_before_redis_connects_when_it_comes_up() {
    let mut redis = blocking(RedisServer::start).await;
    redis = blocking(move || {
        redis.stop();
        redis
    })
    .await;
    let prefix = prefix("late");
    let a = node(config(vec![redis.url()], &prefix), "node-a").await;
    assert!(!a.healthy());
    match a
        .publish("late", publication("{}"), &PublishOptions::default())
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish before Redis is up: {other:?}"),
    }
    redis = blocking(move || {
        redis.restart();
        redis
    })
    .await;
    let engine = a.engine.clone();
    wait_until("healthy once Redis is up", 10.0, || engine.healthy(), || ()).await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    a.subscribe("late").await.unwrap();
    b.publish("late", publication(r#"{"late":1}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a publication",
        5.0,
        || events.data("late") == [r#"{"late":1}"#],
        || events.events(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_at_connect() {
    let port = support::free_port();
    let config = RedisConfig {
        cluster_addresses: vec![format!("redis://127.0.0.1:{port}")],
        ..config(Vec::new(), &prefix("nocluster"))
    };
    let started = Instant::now();
    match RedisEngine::connect(config, Recorder::new("x")).await {
        Err(BusError::Unavailable(_)) => {}
        Err(other) => panic!("unexpected error: {other:?}"),
        Ok(_) => panic!("connected to a cluster that does not exist"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_closes_its_connections() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("drop");
    let clients = || redis.cli(&["CLIENT", "LIST"]).lines().count();
    assert_eq!(clients(), 1, "only redis-cli itself");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    a.subscribe("x").await.unwrap();
    assert!(clients() >= 4, "commands and two pub/sub links");
    let Node { engine, events: _ } = a;
    drop(engine);
    let started = Instant::now();
    while clients() > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "connections left open after the engine was dropped:\n{}",
            redis.cli(&["CLIENT", "LIST"])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_mode_keeps_working_on_the_servers_that_are_up() {
    let (s1, mut s2) = blocking(|| {
        std::thread::scope(|scope| {
            let one = scope.spawn(RedisServer::start);
            let two = scope.spawn(RedisServer::start);
            let join = |h: std::thread::ScopedJoinHandle<'_, RedisServer>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            };
            (join(one), join(two))
        })
    })
    .await;
    let prefix = prefix("shardfail");
    let addresses = vec![s1.url(), s2.url()];
    let a = healthy_node(config(addresses.clone(), &prefix), "node-a").await;
    let b = healthy_node(config(addresses, &prefix), "node-b").await;
    let channels: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for channel in &channels {
        a.subscribe(channel).await.unwrap();
        b.publish(channel, publication("{}"), &history_options(10))
            .await
            .unwrap();
    }
    let on_s1: Vec<String> = channels
        .iter()
        .filter(|c| s1.cli(&["EXISTS", &format!("{prefix}.stream.{c}")]).trim() == "1")
        .cloned()
        .collect();
    assert!(
        !on_s1.is_empty() && on_s1.len() < channels.len(),
        "channels on both servers: {on_s1:?}"
    );
    let on_s2: Vec<String> = channels
        .iter()
        .filter(|c| !on_s1.contains(c))
        .cloned()
        .collect();

    s2 = blocking(move || {
        s2.stop();
        s2
    })
    .await;
    let engine = a.engine.clone();
    wait_until(
        "A unhealthy with one server down",
        3.0,
        || !engine.healthy(),
        || (),
    )
    .await;
    match b
        .publish(&on_s2[0], publication("{}"), &history_options(10))
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish to a channel of the stopped server: {other:?}"),
    }
    let live = &on_s1[0];
    b.publish(live, publication(r#"{"still":"up"}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a publication through the server that is up",
        5.0,
        || events.data(live).contains(&r#"{"still":"up"}"#.to_string()),
        || events.events(),
    )
    .await;
    // Control commands fall back to the server that is up.
    for i in 0..3 {
        b.publish_control(&disconnect(&format!("user-{i}")))
            .await
            .unwrap_or_else(|e| panic!("control publish {i} with one server down: {e}"));
    }
    wait_until(
        "3 control commands on node A",
        5.0,
        || events.controls().len() == 3,
        || events.controls(),
    )
    .await;
    drop(s2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_order_holds_under_concurrent_publishing() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("order");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let channels: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    for channel in &channels {
        a.subscribe(channel).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels.clone() {
        let engine = b.engine.clone();
        tasks.spawn(async move {
            for n in 1..=30u64 {
                let position = engine
                    .publish(&channel, publication(&odd_data(n)), &history_options(100))
                    .await
                    .unwrap();
                assert_eq!(position.offset, n);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let events = a.events.clone();
    let all = channels.clone();
    wait_until(
        "30 publications per channel",
        10.0,
        || all.iter().all(|c| events.publications(c).len() >= 30),
        || {
            all.iter()
                .map(|c| events.publications(c).len())
                .collect::<Vec<_>>()
        },
    )
    .await;
    for channel in &channels {
        let received: Vec<u64> = a
            .events
            .publications(channel)
            .iter()
            .map(|(p, _)| p.offset)
            .collect();
        assert_eq!(received, (1..=30).collect::<Vec<_>>(), "{channel}");
        for (p, _) in a.events.publications(channel) {
            assert_eq!(p.data.get(), odd_data(p.offset));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribe_and_unsubscribe_settle_in_call_order() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("churn");
    // One link and one worker, so a final marker proves absence.
    let single = RedisConfig {
        pubsub_connections: 1,
        pubsub_workers: 1,
        ..config(vec![redis.url()], &prefix)
    };
    let a = healthy_node(single, "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let engine = a.engine.clone();
        tasks.spawn(async move {
            let channel = format!("ch{i}");
            engine.subscribe(&channel).await.unwrap();
            engine.unsubscribe(&channel).await.unwrap();
            // The first 300 end subscribed, the last 100 not.
            if i < 300 {
                engine.subscribe(&channel).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let listed = redis.cli(&["PUBSUB", "CHANNELS", &format!("{prefix}.client.*")]);
    let mut listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("{prefix}.client.ch{i}")).collect();
    expected.sort();
    assert_eq!(listed, expected, "what Redis has subscribed");

    for i in 0..400 {
        b.publish(
            &format!("ch{i}"),
            publication(&format!("{{\"i\":{i}}}")),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    b.publish(
        "ch0",
        publication(r#"{"marker":true}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    let events = a.events.clone();
    wait_until(
        "the marker",
        10.0,
        || events.data("ch0").len() == 2,
        || events.data("ch0"),
    )
    .await;
    for i in 0..400 {
        let expected = match i {
            0 => 2, // and the marker
            1..300 => 1,
            _ => 0,
        };
        assert_eq!(
            a.events.publications(&format!("ch{i}")).len(),
            expected,
            "ch{i}"
        );
    }
    assert_eq!(a.events.gaps("ch0"), 0, "no gap without a reconnect");
}
