//! TLS to Redis, ACL users, and the documented least-privileged user (SEC-REDIS-1).

use super::*;

// ---------------------------------------------------------------------------
// TLS and ACL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_publishes_and_receives() {
    let tls = TlsMaterial::generate();
    let ca_pem = tls.ca_pem.clone().into_bytes();
    let redis = blocking(move || RedisServer::start_tls(&tls)).await;
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let prefix = prefix("tls");
    let with_ca = RedisConfig {
        tls_ca_pem: Some(ca_pem),
        ..config(vec![redis.url()], &prefix)
    };
    let a = healthy_node(with_ca.clone(), "node-a").await;
    let b = healthy_node(with_ca, "node-b").await;
    a.subscribe("secure").await.unwrap();
    let position = b
        .publish("secure", publication(&odd_data(1)), &history_options(10))
        .await
        .unwrap();
    assert_eq!(position.offset, 1);
    let events = a.events.clone();
    wait_until(
        "the publication over TLS",
        5.0,
        || events.publications("secure").len() == 1,
        || events.events(),
    )
    .await;
    assert_eq!(a.events.data("secure"), [odd_data(1)]);
    let page = a
        .history("secure", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_ca_is_unavailable() {
    let tls = TlsMaterial::generate();
    let redis = blocking(move || RedisServer::start_tls(&tls)).await;
    let prefix = prefix("tlsnoca");
    // System roots do not know the test CA.
    let c = node(config(vec![redis.url()], &prefix), "node-c").await;
    let started = Instant::now();
    match c
        .publish("secure", publication("{}"), &PublishOptions::default())
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publishing without trusting the CA: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failing took {:?}",
        started.elapsed()
    );
    assert!(c
        .history("secure", &query(None, None, false))
        .await
        .is_err());
    assert_unhealthy_for(&c, Duration::from_millis(2500)).await;
}

/// Checks `healthy()` stays false for `window` (health is probed every
/// second, so this spans at least two probes).
async fn assert_unhealthy_for(node: &RedisEngine, window: Duration) {
    let started = Instant::now();
    while started.elapsed() < window {
        assert!(!node.healthy(), "healthy() turned true");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_credentials_in_the_url_or_the_fields_work() {
    let redis = blocking(|| RedisServer::start_acl("alice", "s3cret")).await;
    let anonymous = redis.cli_anonymous(&["PING"]);
    assert!(
        anonymous.contains("NOAUTH"),
        "the test server must refuse anonymous clients: {anonymous}"
    );
    let prefix = prefix("acl");
    let port = redis.port();
    let a = healthy_node(
        config(
            vec![format!("redis://alice:s3cret@127.0.0.1:{port}")],
            &prefix,
        ),
        "node-a",
    )
    .await;
    let b = healthy_node(
        RedisConfig {
            user: Some("alice".into()),
            password: Some("s3cret".into()),
            ..config(vec![redis.url()], &prefix)
        },
        "node-b",
    )
    .await;
    // The fields win over what the URL says.
    let c = healthy_node(
        RedisConfig {
            password: Some("s3cret".into()),
            ..config(
                vec![format!("redis://alice:wrong@127.0.0.1:{port}")],
                &prefix,
            )
        },
        "node-c",
    )
    .await;
    a.subscribe("acl").await.unwrap();
    b.subscribe("acl").await.unwrap();
    c.subscribe("acl").await.unwrap();
    b.publish("acl", publication(r#"{"from":"b"}"#), &history_options(10))
        .await
        .unwrap();
    a.publish("acl", publication(r#"{"from":"a"}"#), &history_options(10))
        .await
        .unwrap();
    c.publish("acl", publication(r#"{"from":"c"}"#), &history_options(10))
        .await
        .unwrap();
    for node in [&a, &b, &c] {
        let events = node.events.clone();
        wait_until(
            "3 publications on every node",
            5.0,
            || events.publications("acl").len() == 3,
            || events.events(),
        )
        .await;
    }
    let page = c.history("acl", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_wrong_password_is_unavailable_and_unhealthy() {
    let redis = blocking(|| RedisServer::start_acl("alice", "s3cret")).await;
    let prefix = prefix("aclbad");
    let port = redis.port();
    let wrong = node(
        config(
            vec![format!("redis://alice:nope@127.0.0.1:{port}")],
            &prefix,
        ),
        "node-w",
    )
    .await;
    let anonymous = node(config(vec![redis.url()], &prefix), "node-anon").await;
    for n in [&wrong, &anonymous] {
        let started = Instant::now();
        match n
            .publish("x", publication("{}"), &history_options(10))
            .await
        {
            Err(BusError::Unavailable(_)) => {}
            other => panic!("{}: publish with bad credentials: {other:?}", n.events.uid),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        match n.presence("x").await {
            Err(BusError::Unavailable(_)) => {}
            other => panic!("presence with bad credentials: {other:?}"),
        }
    }
    assert_unhealthy_for(&wrong, Duration::from_millis(2500)).await;
    assert!(!anonymous.healthy());
    // Nothing was written.
    assert!(redis.scan(&format!("{prefix}.*")).is_empty());
}

// ---------------------------------------------------------------------------
// Least privilege (SEC-REDIS-1)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_works_as_the_documented_least_privileged_acl_user() {
    let prefix = prefix("leastpriv");
    let rules = herald_bus::redis::acl_rules(&prefix);
    let docs = include_str!("../../../../docs/redis.md");
    assert!(
        docs.contains("herald_bus::redis::acl_rules")
            && docs.contains(&herald_bus::redis::acl_rules("herald")),
        "docs/redis.md shows the rules acl_rules(\"herald\") gives"
    );
    let redis = blocking({
        let rules = rules.clone();
        move || {
            RedisServer::launch(support::Options {
                acl: Some(("herald".into(), "least-s3cret".into())),
                acl_rules: Some(rules),
                ..Default::default()
            })
        }
    })
    .await;
    let node_config = || RedisConfig {
        user: Some("herald".into()),
        password: Some("least-s3cret".into()),
        ..config(vec![redis.url()], &prefix)
    };
    let ring = || keyring("k1", &[("k1", 3)]);
    let a = signed_node(node_config(), "node-a", ring()).await;
    let b = signed_node(node_config(), "node-b", ring()).await;

    // Everything a node does: pub/sub with and without history, idempotent
    // publish, join/leave, presence, history, control commands, the registry.
    b.subscribe("room").await.unwrap();
    a.publish("room", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    a.publish(
        "room",
        publication(r#"{"n":2}"#),
        &PublishOptions::default(),
    )
    .await
    .unwrap();
    let idempotent = PublishOptions {
        idempotency_key: Some("once".into()),
        ..history_options(10)
    };
    a.publish("room", publication(r#"{"n":3}"#), &idempotent)
        .await
        .unwrap();
    a.publish_join("room", info("u1", "c1")).await.unwrap();
    a.add_presence("room", info("u1", "c1"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(b.presence_stats("room").await.unwrap().num_clients, 1);
    assert_eq!(b.presence("room").await.unwrap().len(), 1);
    a.remove_presence("room", "c1").await.unwrap();
    let page = b.history("room", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1, 2]);
    a.publish_control(&disconnect("u1")).await.unwrap();
    let events = b.events.clone();
    wait_until(
        "publications, join and control on node B",
        5.0,
        || events.data("room").len() == 3 && !events.controls().is_empty(),
        || events.events(),
    )
    .await;
    let engine = b.engine.clone();
    wait_until(
        "both nodes in the registry",
        5.0,
        || uids(&engine).len() == 2,
        || uids(&engine),
    )
    .await;
    b.remove_history("room").await.unwrap();
    assert!(a.healthy() && b.healthy());
    assert_eq!(refused(&b.engine), BTreeMap::new());

    // The same user may not do anything else.
    for command in [
        vec!["FLUSHALL"],
        vec!["KEYS", "*"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["GET", "someone-else:key"],
        vec!["SET", "someone-else:key", "x"],
        vec!["PUBLISH", "someone-else-channel", "x"],
        vec!["ACL", "LIST"],
    ] {
        let reply = redis.cli(&command);
        assert!(
            reply.contains("NOPERM"),
            "{command:?} must be refused: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privileged_acl_user_also_works_in_cluster_mode() {
    let cluster = blocking(|| RedisCluster::start(3)).await;
    let prefix = prefix("leastprivcluster");
    let rules = herald_bus::redis::acl_rules(&prefix);
    for node in &cluster.nodes {
        let mut args = vec!["ACL", "SETUSER", "herald", "on", ">least-s3cret"];
        args.extend(rules.split(' '));
        assert_eq!(
            node.cli(&args).trim(),
            "OK",
            "ACL SETUSER on {}",
            node.port()
        );
    }
    let node_config = || RedisConfig {
        user: Some("herald".into()),
        password: Some("least-s3cret".into()),
        ..cluster_config(&cluster, &prefix)
    };
    let ring = || keyring("k1", &[("k1", 4)]);
    let a = signed_node(node_config(), "node-a", ring()).await;
    let b = signed_node(node_config(), "node-b", ring()).await;
    let channels = ["alpha", "beta", "gamma", "delta"];
    for channel in channels {
        b.subscribe(channel).await.unwrap();
    }
    for channel in channels {
        a.publish(channel, publication(r#"{"n":1}"#), &history_options(10))
            .await
            .unwrap();
        a.add_presence(channel, info("u1", "c1"), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(b.presence_stats(channel).await.unwrap().num_clients, 1);
        let page = b.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(offsets(&page.publications), [1]);
    }
    let events = b.events.clone();
    wait_until(
        "a publication on every channel",
        5.0,
        || channels.iter().all(|c| events.data(c).len() == 1),
        || events.events(),
    )
    .await;
    assert!(a.healthy() && b.healthy());
    assert_eq!(refused(&b.engine), BTreeMap::new());
}
