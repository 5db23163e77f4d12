//! Sharded mode: channels spread over several independent Redis servers.

use super::*;

// ---------------------------------------------------------------------------
// Sharded mode: several independent Redis servers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_mode_spreads_channels_over_servers() {
    let (s1, s2) = blocking(|| {
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
    let prefix = prefix("sharded");
    let addresses = vec![s1.url(), s2.url()];
    let a = healthy_node(config(addresses.clone(), &prefix), "node-a").await;
    let b = healthy_node(config(addresses, &prefix), "node-b").await;

    let channels: Vec<String> = (0..50).map(|i| format!("ch{i}")).collect();
    for channel in &channels {
        a.subscribe(channel).await.unwrap();
    }
    for channel in &channels {
        let position = b
            .publish(
                channel,
                publication(&format!(r#"{{"ch":"{channel}"}}"#)),
                &history_options(10),
            )
            .await
            .unwrap();
        assert_eq!(position.offset, 1, "{channel}");
    }
    let events = a.events.clone();
    let all = channels.clone();
    wait_until(
        "every channel's publication on node A",
        10.0,
        || all.iter().all(|c| events.publications(c).len() == 1),
        || {
            all.iter()
                .filter(|c| events.publications(c).is_empty())
                .cloned()
                .collect::<Vec<_>>()
        },
    )
    .await;
    for channel in &channels {
        let (p, epoch) = &a.events.publications(channel)[0];
        assert_eq!(p.data.get(), format!(r#"{{"ch":"{channel}"}}"#));
        assert_eq!(p.offset, 1);
        assert!(!epoch.is_empty());
        let page = a.history(channel, &query(None, None, false)).await.unwrap();
        assert_eq!(offsets(&page.publications), [1], "{channel}");
    }

    let pattern = format!("{prefix}.stream.*");
    let meta = format!("{prefix}.stream.meta.");
    let streams = |server: &RedisServer| -> Vec<String> {
        server
            .scan(&pattern)
            .into_iter()
            .filter(|k| !k.starts_with(&meta))
            .collect()
    };
    let (on1, on2) = (streams(&s1), streams(&s2));
    assert!(
        !on1.is_empty() && !on2.is_empty(),
        "both servers hold streams: {} and {}",
        on1.len(),
        on2.len()
    );
    for channel in &channels {
        let key = format!("{prefix}.stream.{channel}");
        let holders = [&on1, &on2].iter().filter(|s| s.contains(&key)).count();
        assert_eq!(holders, 1, "{key} lives on exactly one server");
    }
    assert_eq!(on1.len() + on2.len(), channels.len(), "{on1:?} {on2:?}");

    // Presence follows the same sharding, and both nodes agree.
    for channel in channels.iter().take(10) {
        a.add_presence(channel, info("u", "c"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(b.presence(channel).await.unwrap().len(), 1, "{channel}");
    }
    // The registry and control work over several shards too.
    let engine = b.engine.clone();
    wait_until(
        "both nodes in B's registry",
        5.0,
        || uids(&engine) == ["node-a", "node-b"],
        || engine.nodes(),
    )
    .await;
    for i in 0..4 {
        a.publish_control(&disconnect(&format!("u{i}")))
            .await
            .unwrap();
    }
    let events = b.events.clone();
    wait_until(
        "4 control commands on node B",
        5.0,
        || events.controls().len() >= 4,
        || events.controls(),
    )
    .await;
}
