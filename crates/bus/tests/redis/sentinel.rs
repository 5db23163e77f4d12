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
    assert_eq!(setup.servers[master].scan(&stream), [stream.clone()]);
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
