//! Redis Cluster: sharded pub/sub, slots, and a master that restarts.

use super::*;

// ---------------------------------------------------------------------------
// Redis Cluster

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_publishes_keeps_history_and_presence_across_nodes() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("cluster");
    let a = healthy_node(cluster_config(&cluster, &prefix), "node-a").await;
    let b = healthy_node(cluster_config(&cluster, &prefix), "node-b").await;

    let channels = ["alpha", "beta", "gamma", "delta", "odd{name}"];
    for channel in channels {
        a.subscribe(channel).await.unwrap();
    }
    let mut epochs = BTreeMap::new();
    for channel in channels {
        for n in 1..=3 {
            let position = b
                .publish(channel, publication(&odd_data(n)), &history_options(10))
                .await
                .unwrap();
            assert_eq!(position.offset, n, "{channel}");
            epochs.insert(channel, position.epoch);
        }
    }
    let events = a.events.clone();
    wait_until(
        "3 publications per channel on node A",
        10.0,
        || channels.iter().all(|c| events.publications(c).len() >= 3),
        || events.events(),
    )
    .await;
    for channel in channels {
        let received = a.events.publications(channel);
        assert_eq!(
            received.iter().map(|(p, _)| p.offset).collect::<Vec<_>>(),
            [1, 2, 3],
            "{channel}"
        );
        assert!(received.iter().all(|(_, e)| *e == epochs[channel]));
        let page = a.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(offsets(&page.publications), [1, 2, 3], "{channel}");
        assert_eq!(page.position.epoch, epochs[channel]);
        for p in &page.publications {
            assert_eq!(p.data.get(), odd_data(p.offset));
        }
    }
    // The channels' keys are spread over the masters.
    let holders = cluster
        .nodes
        .iter()
        .filter(|n| !n.scan(&format!("{prefix}.stream.*")).is_empty())
        .count();
    assert!(holders >= 2, "streams live on {holders} of 3 masters");

    b.publish_join("alpha", info("u1", "c1")).await.unwrap();
    wait_until(
        "a join on node A",
        5.0,
        || !events.joins("alpha").is_empty(),
        || events.events(),
    )
    .await;

    for (node, client) in [(&a, "ca"), (&b, "cb")] {
        node.add_presence("alpha", info("u1", client), Duration::from_secs(60))
            .await
            .unwrap();
    }
    for node in [&a, &b] {
        let presence = node.presence("alpha").await.unwrap();
        assert_eq!(
            presence.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ca", "cb"]
        );
        let stats = node.presence_stats("alpha").await.unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (2, 1));
    }

    let command = disconnect("eve");
    a.publish_control(&command).await.unwrap();
    let b_events = b.events.clone();
    wait_until(
        "the control command on node B",
        5.0,
        || b_events.controls() == [command.clone()],
        || b_events.controls(),
    )
    .await;
    let engine = a.engine.clone();
    wait_until(
        "both nodes in the registry",
        5.0,
        || uids(&engine) == ["node-a", "node-b"],
        || engine.nodes(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_uses_sharded_pubsub_for_client_channels() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("spublish");
    let a = healthy_node(cluster_config(&cluster, &prefix), "node-a").await;
    let b = healthy_node(cluster_config(&cluster, &prefix), "node-b").await;
    a.subscribe("sharded").await.unwrap();

    let client_channel = format!("{prefix}.client.{{sharded}}");
    let owner = cluster.node_for(&client_channel);
    let shardnumsub = owner.cli(&["PUBSUB", "SHARDNUMSUB", &client_channel]);
    assert_eq!(
        shardnumsub.lines().nth(1).map(str::trim),
        Some("1"),
        "node A holds a sharded subscription on the owning master: {shardnumsub}"
    );
    for node in &cluster.nodes {
        let numsub = node.cli(&["PUBSUB", "NUMSUB", &client_channel]);
        assert_eq!(
            numsub.lines().nth(1).map(str::trim),
            Some("0"),
            "no classic subscription to {client_channel}: {numsub}"
        );
    }

    let monitors: Vec<_> = cluster.nodes.iter().map(|n| n.monitor()).collect();
    let publish_before: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.command_calls("publish"))
        .sum();
    let spublish_before = owner.command_calls("spublish");

    for n in 1..=2 {
        b.publish(
            "sharded",
            publication(&odd_data(n)),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    b.publish("sharded", publication(&odd_data(3)), &history_options(10))
        .await
        .unwrap();
    b.publish_join("sharded", info("u", "c")).await.unwrap();
    let events = a.events.clone();
    wait_until(
        "3 publications and a join on node A",
        5.0,
        || events.publications("sharded").len() == 3 && events.joins("sharded").len() == 1,
        || events.events(),
    )
    .await;

    let owner_monitor = &monitors[cluster
        .nodes
        .iter()
        .position(|n| n.port() == owner.port())
        .unwrap()];
    wait_until(
        "4 SPUBLISH of the client channel in MONITOR",
        5.0,
        || owner_monitor.count("spublish", &client_channel) >= 4,
        || owner_monitor.lines(),
    )
    .await;
    for (node, monitor) in cluster.nodes.iter().zip(&monitors) {
        assert_eq!(
            monitor.count("publish", &client_channel),
            0,
            "classic PUBLISH of {client_channel} on port {}: {:?}",
            node.port(),
            monitor.lines()
        );
    }
    let publish_after: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.command_calls("publish"))
        .sum();
    assert_eq!(
        publish_after, publish_before,
        "no PUBLISH at all in cluster mode (cmdstat_publish)"
    );
    let spublish_after = owner.command_calls("spublish");
    assert!(
        spublish_after >= spublish_before + 4,
        "cmdstat_spublish on the owner went {spublish_before} -> {spublish_after}"
    );
}

// ---------------------------------------------------------------------------
// Redis Cluster: a master restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_survives_each_master_restarting() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("clusterrestart");
    // One channel on each master.
    let mut channels: Vec<(u16, String)> = Vec::new();
    for i in 0.. {
        let channel = format!("survivor{i}");
        let port = cluster
            .node_for(&format!("{prefix}.client.{{{channel}}}"))
            .port();
        if channels.iter().all(|(p, _)| *p != port) {
            channels.push((port, channel));
        }
        if channels.len() == 3 {
            break;
        }
        assert!(
            i < 200,
            "no channel name maps to every master: {channels:?}"
        );
    }
    let a = healthy_node(cluster_config(&cluster, &prefix), "node-a").await;
    let b = healthy_node(cluster_config(&cluster, &prefix), "node-b").await;
    let mut epochs = BTreeMap::new();
    for (_, channel) in &channels {
        a.subscribe(channel).await.unwrap();
        let position = b
            .publish(channel, publication(r#"{"n":0}"#), &history_options(100))
            .await
            .unwrap();
        epochs.insert(channel.clone(), position.epoch);
    }
    let events = a.events.clone();
    let mut cluster = cluster;
    // A round starts 2.5 s after the last gap signal of the channel it
    // restarts: the engine merges reconnect signals closer than 2 s (see
    // every_pubsub_reconnect_signals_a_gap_even_two_close_together); this
    // test is about each master's restart on its own.
    for (round, (port, restarted)) in channels.clone().into_iter().enumerate() {
        let round = round + 1;
        if let Some(at) = events.gap_times(&restarted).last() {
            let spacing = Duration::from_millis(2500);
            if at.elapsed() < spacing {
                tokio::time::sleep(spacing - at.elapsed()).await;
            }
        }
        let gaps_before = events.gaps(&restarted);
        cluster = blocking(move || {
            let node = cluster
                .nodes
                .iter_mut()
                .find(|n| n.port() == port)
                .expect("the master");
            node.stop_saving();
            node.restart();
            cluster
        })
        .await;
        let client_channel = format!("{prefix}.client.{{{restarted}}}");
        let engine = a.engine.clone();
        let watched = restarted.clone();
        wait_until(
            &format!("round {round}: on_gap for {restarted} after its master restarted"),
            10.0,
            || events.gaps(&watched) > gaps_before,
            || {
                let owner = cluster.node_for(&client_channel);
                (
                    events.gaps(&watched),
                    format!("A healthy: {}", engine.healthy()),
                    owner.cli(&["PUBSUB", "SHARDNUMSUB", &client_channel]),
                )
            },
        )
        .await;
        // Every channel delivers again (publish retried while the cluster
        // settles), in the same stream.
        for (_, channel) in &channels {
            let data = format!(r#"{{"round":{round}}}"#);
            let started = Instant::now();
            let position = loop {
                match b
                    .publish(channel, publication(&data), &history_options(100))
                    .await
                {
                    Ok(position) => break position,
                    Err(e) => assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "round {round}: publish to {channel} 10s after the restart: {e}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(position.epoch, epochs[channel], "{channel}: data kept");
            wait_until(
                &format!("round {round}: delivery on {channel}"),
                10.0,
                || events.data(channel).contains(&data),
                || events.data(channel),
            )
            .await;
        }
        // The control channel too.
        let command = disconnect(&format!("round-{round}"));
        b.publish_control(&command).await.unwrap();
        wait_until(
            &format!("round {round}: a control command on node A"),
            10.0,
            || events.controls().contains(&command),
            || events.controls(),
        )
        .await;
    }
    drop(cluster);
}
