//! The control channel and the node registry: cluster-wide commands, heartbeats, surveys.

use super::*;

// ---------------------------------------------------------------------------
// Control channel and node registry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands_reach_every_node_exactly_once() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("control");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;

    let first = disconnect("mallory");
    a.publish_control(&first).await.unwrap();
    // A applies its own command at once, before any round trip.
    assert_eq!(a.events.controls(), std::slice::from_ref(&first));

    // Markers published after A's command completed. Redis delivers the
    // control channel in publication order, so once B has A's marker (and A
    // has B's), a duplicate of A's command would already be there.
    let marker = |user: &str| ControlCommand::Refresh {
        user: user.into(),
        client: "c".into(),
        expired: false,
        expire_at: Some(4_000_000_000),
    };
    let (marker_a, marker_b) = (marker("marker-a"), marker("marker-b"));
    a.publish_control(&marker_a).await.unwrap();
    b.publish_control(&marker_b).await.unwrap();
    for (name, node, awaited) in [("A", &a, &marker_b), ("B", &b, &marker_a)] {
        let events = node.events.clone();
        wait_until(
            &format!("the other node's marker on node {name}"),
            5.0,
            || events.controls().contains(awaited),
            || events.controls(),
        )
        .await;
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let controls = node.events.controls();
        for command in [&first, &marker_a, &marker_b] {
            assert_eq!(
                controls.iter().filter(|c| *c == command).count(),
                1,
                "node {name} applied {command:?} exactly once: {controls:?}"
            );
        }
        assert_eq!(controls.len(), 3, "node {name}: {controls:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registry_lists_live_nodes_and_forgets_dropped_ones() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("registry");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let b = healthy_node(config(vec![redis.url()], &prefix), "node-b").await;
    let both = vec!["node-a".to_string(), "node-b".to_string()];
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "both nodes in the registry",
            5.0,
            || uids(&engine) == both,
            || engine.nodes(),
        )
        .await;
    }
    let seen_b = a
        .nodes()
        .into_iter()
        .find(|n| n.uid == "node-b")
        .expect("node-b listed");
    assert_eq!(seen_b.name, "name-node-b", "heartbeats carry the node info");
    assert_eq!(seen_b.num_clients, 3);

    let Node { engine, events: _ } = b;
    drop(engine);
    let dropped = Instant::now();
    let engine = a.engine.clone();
    wait_until(
        "node-b to leave A's registry after node_ttl",
        4.0,
        || uids(&engine) == ["node-a"],
        || engine.nodes(),
    )
    .await;
    // Not before its last heartbeat aged node_ttl (1 s), give or take one
    // heartbeat interval.
    assert!(
        dropped.elapsed() >= Duration::from_millis(700),
        "node-b vanished after {:?}, before node_ttl",
        dropped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_removes_the_node_at_once() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("leave");
    // A long node_ttl on A: only `leave` can remove C within the test.
    let a = healthy_node(
        RedisConfig {
            node_ttl: Duration::from_secs(60),
            ..config(vec![redis.url()], &prefix)
        },
        "node-a",
    )
    .await;
    let c = healthy_node(config(vec![redis.url()], &prefix), "node-c").await;
    let engine = a.engine.clone();
    wait_until(
        "node-c in A's registry",
        5.0,
        || uids(&engine) == ["node-a", "node-c"],
        || engine.nodes(),
    )
    .await;

    c.leave().await.unwrap();
    let Node {
        engine: c,
        events: _,
    } = c;
    drop(c);
    wait_until(
        "node-c to leave A's registry at once",
        1.0,
        || uids(&engine) == ["node-a"],
        || engine.nodes(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_stays_out_of_the_registry_while_it_drains() {
    // Graceful shutdown: the node calls leave() first, then keeps running
    // while its clients are disconnected over the drain period. The others
    // must not list it again in that time (Centrifugo stops heartbeats on
    // shutdown).
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("leavestay");
    let a = healthy_node(config(vec![redis.url()], &prefix), "node-a").await;
    let c = healthy_node(config(vec![redis.url()], &prefix), "node-c").await;
    let engine = a.engine.clone();
    wait_until(
        "node-c in A's registry",
        5.0,
        || uids(&engine) == ["node-a", "node-c"],
        || engine.nodes(),
    )
    .await;
    c.leave().await.unwrap();
    wait_until(
        "node-c to leave A's registry",
        1.0,
        || uids(&engine) == ["node-a"],
        || engine.nodes(),
    )
    .await;
    // Five heartbeat intervals of node-c, still running.
    let left = Instant::now();
    while left.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            uids(&engine),
            ["node-a"],
            "node-c is listed again {:?} after leave() (its heartbeats go on)",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.healthy(), "node-c kept running");
}
