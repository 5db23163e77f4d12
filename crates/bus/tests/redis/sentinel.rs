//! Sentinel: the master is asked from the Sentinels (skipping one that is
//! down), and a failover is followed: the nodes move to the promoted
//! replica, subscribe again, tell positioned subscribers to recover, and
//! every stream gets a new epoch so no offset names two publications.

use herald_bus::redis::SentinelConfig;

use super::support::{MASTER_NAME, SENTINEL_PASSWORD};
use super::*;

fn sentinel_config(setup: &SentinelSetup, prefix: &str, master_name: &str) -> RedisConfig {
    RedisConfig {
        sentinel: Some(SentinelConfig {
            addresses: setup.sentinel_urls(),
            master_name: master_name.to_owned(),
            user: None,
            password: Some(SENTINEL_PASSWORD.to_owned()),
            tls_ca_pem: None,
        }),
        ..config(Vec::new(), prefix)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_is_found_through_sentinel_even_with_a_sentinel_down() {
    let mut setup = blocking(SentinelSetup::start).await;
    // The first Sentinel of the list does not answer.
    setup.sentinels[0].stop();
    let prefix = prefix("sentinel_discovery");
    let a = healthy_node(sentinel_config(&setup, &prefix, MASTER_NAME), "node-a").await;
    let b = healthy_node(sentinel_config(&setup, &prefix, MASTER_NAME), "node-b").await;
    a.subscribe("news").await.unwrap();
    let position = b
        .publish("news", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    assert_eq!(position.offset, 1);
    let events = a.events.clone();
    wait_until(
        "the publication through the discovered master",
        5.0,
        || events.data("news") == [r#"{"n":1}"#],
        || events.events(),
    )
    .await;
    // It went to the master, and the replica has it too.
    let master = setup.master_index();
    let stream = format!("{prefix}.stream.news");
    assert_eq!(
        setup.servers[master].scan(&stream),
        std::slice::from_ref(&stream)
    );
    let page = a.history("news", &query(None, None, false)).await.unwrap();
    assert_eq!(offsets(&page.publications), [1]);
    wait_until(
        "the two nodes to see each other",
        5.0,
        || uids(&a).len() == 2,
        || uids(&a),
    )
    .await;

    // A master name the Sentinels do not know: never healthy, calls fail
    // as with an unreachable Redis (error 100), not with a panic.
    let lost = node(
        sentinel_config(&setup, &prefix, "no-such-master"),
        "node-lost",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!lost.healthy());
    match lost
        .publish("news", publication(r#"{"n":0}"#), &history_options(10))
        .await
    {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish without a master: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_followed_with_a_new_epoch_and_signed_sealed_messages() {
    let mut setup = blocking(SentinelSetup::start).await;
    let prefix = prefix("sentinel_failover");
    let bus = || keyring("k1", &[("k1", 7)]);
    let history = || history_keyring("h1", &[("h1", 9)]);
    let a = keyed_node(
        sentinel_config(&setup, &prefix, MASTER_NAME),
        "node-a",
        bus(),
        history(),
    )
    .await;
    let b = keyed_node(
        sentinel_config(&setup, &prefix, MASTER_NAME),
        "node-b",
        bus(),
        history(),
    )
    .await;
    a.subscribe("feed").await.unwrap();
    b.subscribe("feed").await.unwrap();
    let mut before = StreamPosition::default();
    for n in 1..=5 {
        before = b
            .publish(
                "feed",
                publication(&format!(r#"{{"n":{n}}}"#)),
                &history_options(100),
            )
            .await
            .unwrap();
    }
    assert_eq!(before.offset, 5);
    let events = a.events.clone();
    wait_until(
        "five publications",
        5.0,
        || events.data("feed").len() == 5,
        || events.events(),
    )
    .await;
    assert_eq!(a.events.gaps("feed"), 0);

    let promoted = blocking(move || {
        let promoted = setup.kill_master_and_wait_failover();
        (setup, promoted)
    })
    .await;
    let (setup, promoted) = promoted;
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy on the promoted master",
            15.0,
            || engine.healthy(),
            || (),
        )
        .await;
    }
    // Positioned subscribers are told to recover, as after any reconnect.
    for node in [&a, &b] {
        let events = node.events.clone();
        wait_until(
            "a gap signal after the failover",
            5.0,
            || events.gaps("feed") >= 1,
            || events.events(),
        )
        .await;
    }
    // The promoted replica holds the first five publications, but it may
    // have lacked some: the stream starts again in a new epoch.
    let recovery = a
        .history("feed", &query(Some(before.clone()), None, false))
        .await;
    assert!(
        matches!(recovery, Err(BusError::UnrecoverablePosition)),
        "recovering the old epoch from the promoted master: {recovery:?}"
    );
    let after = b
        .publish("feed", publication(r#"{"n":6}"#), &history_options(100))
        .await
        .unwrap();
    assert_eq!(after.offset, 1, "offsets start again");
    assert_ne!(after.epoch, before.epoch, "in a new epoch");
    let events = a.events.clone();
    wait_until(
        "the publication after the failover, signed and delivered",
        5.0,
        || events.data("feed").len() == 6,
        || events.events(),
    )
    .await;
    let (last, epoch) = a.events.publications("feed").pop().unwrap();
    assert_eq!((last.offset, epoch), (1, after.epoch.clone()));
    // The sealed record opens on the new master.
    let page = b.history("feed", &query(None, None, false)).await.unwrap();
    assert_eq!(page.position, after);
    assert_eq!(offsets(&page.publications), [1]);
    assert_eq!(page.publications[0].data.get(), r#"{"n":6}"#);
    assert!(refused(&a).is_empty(), "{:?}", refused(&a));
    // The next publish keeps the new epoch: the lineage is stored.
    let next = a
        .publish("feed", publication(r#"{"n":7}"#), &history_options(100))
        .await
        .unwrap();
    assert_eq!((next.offset, next.epoch), (2, after.epoch));
    let stream = format!("{prefix}.stream.feed");
    assert_eq!(setup.servers[promoted].scan(&stream), [stream]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_the_promoted_replica_lacks_never_have_their_offsets_reused() {
    let setup = blocking(SentinelSetup::start).await;
    let prefix = prefix("sentinel_lost");
    let a = healthy_node(sentinel_config(&setup, &prefix, MASTER_NAME), "node-a").await;
    let b = healthy_node(sentinel_config(&setup, &prefix, MASTER_NAME), "node-b").await;
    a.subscribe("lost").await.unwrap();
    for n in 1..=3 {
        b.publish(
            "lost",
            publication(&format!(r#"{{"n":{n}}}"#)),
            &history_options(500),
        )
        .await
        .unwrap();
    }
    let master = setup.master_index();
    let replica = 1 - master;
    let meta = format!("{prefix}.stream.meta.lost");
    let replicated = |setup: &SentinelSetup, index: usize| {
        setup.servers[index]
            .cli(&["HGET", &meta, "s"])
            .trim()
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while replicated(&setup, replica) != "3" {
        assert!(Instant::now() < deadline, "the replica never got offset 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The replica stops reading while the master acknowledges more than
    // the socket buffers between them hold; then the master dies. What the
    // master had not sent is lost: asynchronous replication.
    setup.servers[replica].pause();
    let pad = "x".repeat(256 * 1024);
    let mut acknowledged = StreamPosition::default();
    for n in 4..=80 {
        acknowledged = b
            .publish(
                "lost",
                publication(&format!(r#"{{"n":{n},"pad":"{pad}"}}"#)),
                &history_options(500),
            )
            .await
            .unwrap();
    }
    assert_eq!(acknowledged.offset, 80);
    let setup = blocking(move || {
        let mut setup = setup;
        setup.servers[master].stop();
        setup.servers[replica].resume();
        setup.wait_failover_to(replica);
        setup
    })
    .await;
    let kept: u64 = replicated(&setup, replica).parse().unwrap_or(0);
    assert!(
        kept < acknowledged.offset,
        "the test needs a lossy failover, but the promoted replica holds offset {kept} of {}",
        acknowledged.offset
    );

    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy on the promoted master",
            15.0,
            || engine.healthy(),
            || (),
        )
        .await;
    }
    // A subscriber positioned at the last acknowledged offset cannot recover
    // it from the promoted replica: it is told, not given other data.
    let recovery = a
        .history("lost", &query(Some(acknowledged.clone()), None, false))
        .await;
    assert!(
        matches!(recovery, Err(BusError::UnrecoverablePosition)),
        "recovery from the lost offset: {recovery:?}"
    );
    // New publications never take an offset the lost ones had in their epoch.
    let next = b
        .publish("lost", publication(r#"{"n":81}"#), &history_options(500))
        .await
        .unwrap();
    assert_ne!(
        next.epoch, acknowledged.epoch,
        "offset {} would name two publications in epoch {}",
        next.offset, acknowledged.epoch
    );
    assert_eq!(next.offset, 1);
    let events = a.events.clone();
    wait_until(
        "the first publication of the new epoch",
        5.0,
        || {
            events
                .publications("lost")
                .iter()
                .any(|(p, e)| *e == next.epoch && p.offset == 1)
        },
        || events.gaps("lost"),
    )
    .await;
    assert!(
        a.events.gaps("lost") >= 1,
        "the subscriber's node was told to recover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_masters_are_reached_over_tls() {
    let tls = TlsMaterial::generate();
    let ca = tls.ca_pem.clone().into_bytes();
    let mut setup = blocking(move || SentinelSetup::start_tls(&tls)).await;
    assert!(setup
        .sentinel_urls()
        .iter()
        .all(|u| u.starts_with("rediss://")));
    let prefix = prefix("sentinel_tls");
    let mut config = sentinel_config(&setup, &prefix, MASTER_NAME);
    config.master_tls = true;
    config.tls_ca_pem = Some(ca.clone());
    if let Some(sentinel) = &mut config.sentinel {
        sentinel.tls_ca_pem = Some(ca);
    }
    let a = healthy_node(config.clone(), "node-a").await;
    let b = healthy_node(config, "node-b").await;
    a.subscribe("tls").await.unwrap();
    let first = b
        .publish("tls", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    let events = a.events.clone();
    wait_until(
        "a publication over TLS",
        5.0,
        || events.data("tls").len() == 1,
        || events.events(),
    )
    .await;

    setup = blocking(move || {
        setup.kill_master_and_wait_failover();
        setup
    })
    .await;
    for node in [&a, &b] {
        let engine = node.engine.clone();
        wait_until(
            "healthy on the promoted TLS master",
            15.0,
            || engine.healthy(),
            || (),
        )
        .await;
    }
    let second = b
        .publish("tls", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    assert_ne!(second.epoch, first.epoch);
    wait_until(
        "a publication after the failover",
        5.0,
        || events.data("tls").len() == 2,
        || events.events(),
    )
    .await;
    drop(setup);
}
