use std::collections::BTreeSet;

use herald_protocol::RawJson;

use super::stream::IDEMPOTENCY_TTL;
use super::*;
use crate::HistoryOptions;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Publication {
        channel: String,
        offset: u64,
        epoch: String,
        data: String,
    },
    Join {
        channel: String,
        client: String,
    },
    Leave {
        channel: String,
        client: String,
    },
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    controls: Mutex<Vec<ControlCommand>>,
    gaps: Mutex<Vec<String>>,
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl BrokerEvents for Recorder {
    fn on_control(&self, command: ControlCommand) {
        self.controls.lock().push(command);
    }

    fn on_gap(&self, channel: &str) {
        self.gaps.lock().push(channel.to_owned());
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            uid: "test-node".into(),
            ..Default::default()
        }
    }

    fn on_publication(&self, channel: &str, publication: Publication, epoch: &str) {
        self.events.lock().push(Event::Publication {
            channel: channel.to_owned(),
            offset: publication.offset,
            epoch: epoch.to_owned(),
            data: publication.data.get().to_owned(),
        });
    }

    fn on_join(&self, channel: &str, info: ClientInfo) {
        self.events.lock().push(Event::Join {
            channel: channel.to_owned(),
            client: info.client,
        });
    }

    fn on_leave(&self, channel: &str, info: ClientInfo) {
        self.events.lock().push(Event::Leave {
            channel: channel.to_owned(),
            client: info.client,
        });
    }
}

fn setup() -> (Arc<MemoryEngine>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let engine = MemoryEngine::new(recorder.clone());
    (engine, recorder)
}

fn publication(n: u64) -> Publication {
    Publication {
        data: RawJson::from_str(&format!("{{\"n\":{n}}}")).unwrap(),
        info: None,
        offset: 0,
        tags: BTreeMap::new(),
        delta: false,
    }
}

fn with_history(size: usize, ttl_secs: u64, meta_ttl_secs: u64) -> PublishOptions {
    PublishOptions {
        history: Some(HistoryOptions {
            size,
            ttl: Duration::from_secs(ttl_secs),
            meta_ttl: Duration::from_secs(meta_ttl_secs),
        }),
        idempotency_key: None,
    }
}

fn query(since: Option<StreamPosition>, limit: Option<usize>, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since,
        limit,
        reverse,
        meta_ttl: Duration::from_secs(3600),
    }
}

fn all() -> HistoryQuery {
    query(None, None, false)
}

fn offsets(page: &HistoryPage) -> Vec<u64> {
    page.publications.iter().map(|p| p.offset).collect()
}

fn client(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.to_owned(),
        client: client.to_owned(),
        conn_info: None,
        chan_info: None,
    }
}

async fn publish_n(engine: &MemoryEngine, channel: &str, n: u64, options: &PublishOptions) {
    for i in 1..=n {
        engine
            .publish(channel, publication(i), options)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn offsets_are_contiguous_from_one_and_epoch_is_stable() {
    let (engine, recorder) = setup();
    let options = with_history(100, 60, 3600);
    engine.subscribe("news").await.unwrap();

    let mut positions = Vec::new();
    for i in 1..=5 {
        positions.push(
            engine
                .publish("news", publication(i), &options)
                .await
                .unwrap(),
        );
    }

    let epoch = positions[0].epoch.clone();
    assert_eq!(epoch.len(), 8);
    assert!(positions.iter().all(|p| p.epoch == epoch));
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    let page = engine.history("news", &all()).await.unwrap();
    assert_eq!(offsets(&page), [1, 2, 3, 4, 5]);
    assert_eq!(page.publications[2].data.get(), "{\"n\":3}");
    assert_eq!(
        page.position,
        StreamPosition {
            offset: 5,
            epoch: epoch.clone()
        }
    );

    let delivered = recorder.take();
    let expected: Vec<Event> = (1..=5)
        .map(|i| Event::Publication {
            channel: "news".into(),
            offset: i,
            epoch: epoch.clone(),
            data: format!("{{\"n\":{i}}}"),
        })
        .collect();
    assert_eq!(delivered, expected);
}

#[tokio::test]
async fn delivers_only_while_subscribed() {
    let (engine, recorder) = setup();
    let history = with_history(10, 60, 3600);
    let plain = PublishOptions::default();

    engine.publish("a", publication(1), &plain).await.unwrap();
    engine.publish("a", publication(2), &history).await.unwrap();
    engine.publish_join("a", client("u", "c1")).await.unwrap();
    assert!(recorder.take().is_empty());

    // Twice: subscribing is idempotent.
    engine.subscribe("a").await.unwrap();
    engine.subscribe("a").await.unwrap();
    let position = engine.publish("a", publication(3), &plain).await.unwrap();
    assert_eq!(position, StreamPosition::default());
    let position = engine.publish("a", publication(4), &history).await.unwrap();
    assert_eq!(position.offset, 2);
    engine.publish_join("a", client("u", "c1")).await.unwrap();
    engine.publish_leave("a", client("u", "c1")).await.unwrap();
    engine
        .publish("other", publication(5), &plain)
        .await
        .unwrap();
    engine
        .publish_join("other", client("u", "c1"))
        .await
        .unwrap();

    let delivered = recorder.take();
    assert_eq!(
        delivered,
        [
            Event::Publication {
                channel: "a".into(),
                offset: 0,
                epoch: String::new(),
                data: "{\"n\":3}".into(),
            },
            Event::Publication {
                channel: "a".into(),
                offset: 2,
                epoch: position.epoch.clone(),
                data: "{\"n\":4}".into(),
            },
            Event::Join {
                channel: "a".into(),
                client: "c1".into()
            },
            Event::Leave {
                channel: "a".into(),
                client: "c1".into()
            },
        ]
    );

    engine.unsubscribe("a").await.unwrap();
    engine.unsubscribe("a").await.unwrap();
    engine.publish("a", publication(6), &plain).await.unwrap();
    engine.publish("a", publication(7), &history).await.unwrap();
    engine.publish_leave("a", client("u", "c1")).await.unwrap();
    assert!(recorder.take().is_empty());
}

#[tokio::test]
async fn publication_without_history_is_not_kept() {
    let (engine, recorder) = setup();
    engine.subscribe("a").await.unwrap();
    let mut with_offset = publication(1);
    with_offset.offset = 42;
    engine
        .publish("a", with_offset, &PublishOptions::default())
        .await
        .unwrap();

    let page = engine.history("a", &all()).await.unwrap();
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 0);
    assert!(matches!(
        &recorder.take()[..],
        [Event::Publication { offset: 0, .. }]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_deliver_in_offset_order_exactly_once() {
    const TASKS: u64 = 8;
    const EACH: u64 = 250;
    let (engine, recorder) = setup();
    engine.subscribe("busy").await.unwrap();

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let options = with_history(10, 60, 3600);
            let mut offsets = Vec::new();
            for i in 0..EACH {
                let position = engine
                    .publish("busy", publication(t * EACH + i), &options)
                    .await
                    .unwrap();
                offsets.push(position.offset);
                tokio::task::yield_now().await;
            }
            offsets
        }));
    }
    let mut returned = BTreeSet::new();
    for task in tasks {
        let offsets = task.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one publisher's offsets rise"
        );
        returned.extend(offsets);
    }

    let total = TASKS * EACH;
    assert_eq!(returned, (1..=total).collect::<BTreeSet<_>>());
    let delivered: Vec<u64> = recorder
        .take()
        .into_iter()
        .map(|event| match event {
            Event::Publication { offset, .. } => offset,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(delivered, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn stream_is_trimmed_to_size() {
    let (engine, _recorder) = setup();
    publish_n(&engine, "t", 10, &with_history(3, 60, 3600)).await;

    let page = engine.history("t", &all()).await.unwrap();
    assert_eq!(offsets(&page), [8, 9, 10]);
    assert_eq!(page.position.offset, 10);

    publish_n(&engine, "zero", 2, &with_history(0, 60, 3600)).await;
    let page = engine.history("zero", &all()).await.unwrap();
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 2);
}

#[tokio::test(start_paused = true)]
async fn stream_expires_ttl_after_last_publish() {
    let (engine, _recorder) = setup();
    let options = with_history(100, 10, 3600);
    publish_n(&engine, "e", 2, &options).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    engine.publish("e", publication(3), &options).await.unwrap();

    // 12s after the first publishes, 7s after the last: all still there.
    tokio::time::advance(Duration::from_secs(7)).await;
    let page = engine.history("e", &all()).await.unwrap();
    assert_eq!(offsets(&page), [1, 2, 3]);
    let epoch = page.position.epoch;

    // All of them vanish together; the meta lives on.
    tokio::time::advance(Duration::from_secs(4)).await;
    let page = engine.history("e", &all()).await.unwrap();
    assert!(page.publications.is_empty());
    assert_eq!(
        page.position,
        StreamPosition {
            offset: 3,
            epoch: epoch.clone()
        }
    );

    let position = engine.publish("e", publication(4), &options).await.unwrap();
    assert_eq!(position, StreamPosition { offset: 4, epoch });
    let page = engine.history("e", &all()).await.unwrap();
    assert_eq!(offsets(&page), [4]);
}

#[tokio::test(start_paused = true)]
async fn expired_meta_starts_a_new_epoch_from_offset_one() {
    let (engine, _recorder) = setup();
    let options = with_history(100, 10, 30);

    let first = engine.publish("m", publication(1), &options).await.unwrap();
    publish_n(&engine, "m", 2, &options).await;
    tokio::time::advance(Duration::from_secs(31)).await;
    let position = engine.publish("m", publication(4), &options).await.unwrap();
    assert_eq!(position.offset, 1);
    assert_ne!(position.epoch, first.epoch);
    let page = engine.history("m", &all()).await.unwrap();
    assert_eq!(offsets(&page), [1]);

    // Publications outliving their meta do not survive into the new epoch.
    let long_stream = with_history(100, 3600, 30);
    let old = engine
        .publish("n", publication(1), &long_stream)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    let short_meta = HistoryQuery {
        meta_ttl: Duration::from_secs(30),
        ..all()
    };
    let page = engine.history("n", &short_meta).await.unwrap();
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 0);
    assert_ne!(page.position.epoch, old.epoch);
    let position = engine
        .publish("n", publication(2), &long_stream)
        .await
        .unwrap();
    assert_eq!(
        position,
        StreamPosition {
            offset: 1,
            epoch: page.position.epoch
        }
    );
}

#[tokio::test(start_paused = true)]
async fn history_reads_keep_the_meta_alive() {
    let (engine, _recorder) = setup();
    let options = with_history(100, 10, 30);
    let first = engine.publish("k", publication(1), &options).await.unwrap();
    let touch = HistoryQuery {
        meta_ttl: Duration::from_secs(30),
        ..all()
    };
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(20)).await;
        engine.history("k", &touch).await.unwrap();
    }
    let position = engine.publish("k", publication(2), &options).await.unwrap();
    assert_eq!(
        position,
        StreamPosition {
            offset: 2,
            epoch: first.epoch
        }
    );
}

#[tokio::test]
async fn history_since_limit_reverse() {
    let (engine, _recorder) = setup();
    publish_n(&engine, "h", 10, &with_history(100, 60, 3600)).await;
    let epoch = engine.history("h", &all()).await.unwrap().position.epoch;

    // (since offset, limit, reverse, expected offsets)
    type Case = (Option<u64>, Option<usize>, bool, &'static [u64]);
    let cases: &[Case] = &[
        (None, None, false, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (None, Some(3), false, &[1, 2, 3]),
        (None, Some(30), false, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (None, None, true, &[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
        (None, Some(3), true, &[10, 9, 8]),
        (Some(0), Some(2), false, &[1, 2]),
        (Some(4), None, false, &[5, 6, 7, 8, 9, 10]),
        (Some(4), Some(2), false, &[5, 6]),
        (Some(4), None, true, &[3, 2, 1]),
        (Some(4), Some(2), true, &[3, 2]),
        (Some(9), None, false, &[10]),
        (Some(10), None, false, &[]),
        (Some(20), None, false, &[]),
        (Some(1), None, true, &[]),
        (Some(11), Some(2), true, &[10, 9]),
    ];
    for (since, limit, reverse, expected) in cases {
        for epoch in [epoch.clone(), String::new()] {
            let since = since.map(|offset| StreamPosition {
                offset,
                epoch: epoch.clone(),
            });
            let q = query(since.clone(), *limit, *reverse);
            let page = engine.history("h", &q).await.unwrap();
            assert_eq!(
                offsets(&page),
                *expected,
                "since {since:?} limit {limit:?} reverse {reverse}"
            );
            assert_eq!(page.position.offset, 10);
        }
    }
}

#[tokio::test]
async fn history_since_another_epoch_is_unrecoverable() {
    let (engine, _recorder) = setup();
    publish_n(&engine, "h", 3, &with_history(100, 60, 3600)).await;
    let since = StreamPosition {
        offset: 1,
        epoch: "NotThis1".into(),
    };
    let result = engine.history("h", &query(Some(since), None, false)).await;
    assert!(
        matches!(result, Err(BusError::UnrecoverablePosition)),
        "{result:?}"
    );
}

#[tokio::test]
async fn limit_zero_returns_only_the_top() {
    let (engine, _recorder) = setup();
    let last = {
        publish_n(&engine, "h", 4, &with_history(100, 60, 3600)).await;
        engine
            .publish("h", publication(5), &with_history(100, 60, 3600))
            .await
            .unwrap()
    };
    for reverse in [false, true] {
        let page = engine
            .history("h", &query(None, Some(0), reverse))
            .await
            .unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.position, last);
    }
}

#[tokio::test]
async fn history_of_a_stream_nobody_published_to_keeps_nothing() {
    let (engine, _recorder) = setup();
    let first = engine.history("fresh", &all()).await.unwrap();
    assert!(first.publications.is_empty());
    assert_eq!(first.position.offset, 0);
    assert_eq!(first.position.epoch.len(), 8);
    // The read left nothing behind, in any map.
    assert_eq!(engine.num_channels(), 0);
    assert_eq!(engine.num_streams(), 0);

    // Yet it answers the same position again, and the first publish takes
    // that epoch: a client positioned at (epoch, 0) stays positioned.
    let again = engine
        .history("fresh", &query(None, Some(0), false))
        .await
        .unwrap();
    assert_eq!(again.position, first.position);
    let since = engine
        .history("fresh", &query(Some(first.position.clone()), None, false))
        .await
        .unwrap();
    assert_eq!(since.position, first.position);
    let position = engine
        .publish("fresh", publication(1), &with_history(10, 60, 3600))
        .await
        .unwrap();
    assert_eq!(
        position,
        StreamPosition {
            offset: 1,
            epoch: first.position.epoch
        }
    );
    assert_eq!(engine.num_streams(), 1);

    // A subscribed channel (state exists, no stream) reads the same way.
    engine.subscribe("watched").await.unwrap();
    let page = engine.history("watched", &all()).await.unwrap();
    assert_eq!(page.position.offset, 0);
    assert_eq!(engine.num_streams(), 1);
}

#[tokio::test]
async fn reads_of_many_fresh_names_leave_no_state() {
    let (engine, _recorder) = setup();
    for i in 0..10_000 {
        let name = format!("probe-{i}");
        engine.history(&name, &all()).await.unwrap();
        engine.subscribe(&name).await.unwrap();
        engine
            .history(&name, &query(None, Some(0), false))
            .await
            .unwrap();
        engine.unsubscribe(&name).await.unwrap();
    }
    assert_eq!(engine.num_streams(), 0);
    engine.sweep(Instant::now());
    assert_eq!(engine.num_channels(), 0);
}

fn limited(stream_limit: usize) -> (Arc<MemoryEngine>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let engine = MemoryEngine::with_options(
        recorder.clone(),
        HistoryKeyring::off(),
        MemoryOptions { stream_limit },
    );
    (engine, recorder)
}

#[tokio::test(start_paused = true)]
async fn stream_limit_evicts_the_least_recently_used_and_tells() {
    let (engine, recorder) = limited(64);
    let options = with_history(10, 3600, 3600);
    let mut positions = Vec::new();
    for i in 0..64 {
        positions.push(
            engine
                .publish(&format!("s{i}"), publication(1), &options)
                .await
                .unwrap(),
        );
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.num_streams(), 64);
    // s0 is read (touched) again, so s1 is now the least recently used.
    engine.history("s0", &all()).await.unwrap();
    engine.subscribe("s1").await.unwrap();
    engine
        .publish("s64", publication(1), &options)
        .await
        .unwrap();
    assert_eq!(engine.num_streams(), 64, "one evicted for the new one");
    assert_eq!(engine.counters().streams_evicted, 1);
    assert_eq!(engine.counters().streams, Some(64));
    // Its local subscribers were told.
    assert_eq!(*recorder.gaps.lock(), ["s1"]);
    // s0 kept its publication; s1 lost its stream.
    assert_eq!(offsets(&engine.history("s0", &all()).await.unwrap()), [1]);
    let gone = engine.history("s1", &all()).await.unwrap();
    assert!(gone.publications.is_empty());
    assert_eq!(gone.position.offset, 0);
    // Recovery from the evicted position is refused, never silently empty,
    // and the stream comes back with another epoch.
    let recovery = engine
        .history("s1", &query(Some(positions[1].clone()), None, false))
        .await;
    assert!(
        matches!(recovery, Err(BusError::UnrecoverablePosition)),
        "{recovery:?}"
    );
    engine.unsubscribe("s1").await.unwrap();
    let back = engine
        .publish("s1", publication(2), &options)
        .await
        .unwrap();
    assert_eq!(back.offset, 1);
    assert_ne!(back.epoch, positions[1].epoch);
}

#[tokio::test]
async fn stream_limit_holds_under_a_flood_of_new_names() {
    let (engine, _recorder) = limited(1_000);
    let options = with_history(10, 3600, 3600);
    for i in 0..20_000 {
        engine
            .publish(&format!("flood-{i}"), publication(1), &options)
            .await
            .unwrap();
        assert!(
            engine.num_streams() <= 1_000,
            "at {i}: {}",
            engine.num_streams()
        );
    }
    assert!(engine.counters().streams_evicted >= 19_000);
    // Zero: no limit.
    let (unlimited, _recorder) = limited(0);
    for i in 0..2_000 {
        unlimited
            .publish(&format!("n-{i}"), publication(1), &options)
            .await
            .unwrap();
    }
    assert_eq!(unlimited.num_streams(), 2_000);
}

#[tokio::test(start_paused = true)]
async fn expired_streams_leave_the_count() {
    let (engine, _recorder) = setup();
    engine
        .publish("short", publication(1), &with_history(10, 1, 2))
        .await
        .unwrap();
    assert_eq!(engine.num_streams(), 1);
    tokio::time::sleep(CLEANUP_INTERVAL * 2).await;
    assert_eq!(engine.num_streams(), 0);
}

#[tokio::test(start_paused = true)]
async fn idempotent_publish_returns_the_first_result() {
    let (engine, recorder) = setup();
    engine.subscribe("i").await.unwrap();
    let keyed = |key: &str| PublishOptions {
        idempotency_key: Some(key.to_owned()),
        ..with_history(100, 3600, 3600)
    };

    let first = engine
        .publish("i", publication(1), &keyed("k1"))
        .await
        .unwrap();
    let repeat = engine
        .publish("i", publication(2), &keyed("k1"))
        .await
        .unwrap();
    assert_eq!(repeat, first);
    let other_key = engine
        .publish("i", publication(3), &keyed("k2"))
        .await
        .unwrap();
    assert_eq!(other_key.offset, 2);
    let other_channel = engine
        .publish("j", publication(4), &keyed("k1"))
        .await
        .unwrap();
    assert_eq!(other_channel.offset, 1);
    assert_eq!(offsets(&engine.history("i", &all()).await.unwrap()), [1, 2]);
    assert_eq!(recorder.take().len(), 2);

    tokio::time::advance(Duration::from_secs(4 * 60)).await;
    let still = engine
        .publish("i", publication(5), &keyed("k1"))
        .await
        .unwrap();
    assert_eq!(still, first);
    tokio::time::advance(Duration::from_secs(61)).await;
    let again = engine
        .publish("i", publication(6), &keyed("k1"))
        .await
        .unwrap();
    assert_eq!(again.offset, 3);

    // Without history the key still suppresses the repeat.
    let plain = PublishOptions {
        idempotency_key: Some("p".into()),
        history: None,
    };
    engine.publish("i", publication(7), &plain).await.unwrap();
    engine.publish("i", publication(8), &plain).await.unwrap();
    let delivered = recorder.take();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
}

#[tokio::test]
async fn presence_add_remove_and_stats() {
    let (engine, _recorder) = setup();
    let ttl = Duration::from_secs(60);
    assert!(engine.presence("p").await.unwrap().is_empty());
    assert_eq!(
        engine.presence_stats("p").await.unwrap(),
        PresenceStats::default()
    );

    engine
        .add_presence("p", client("alice", "c1"), ttl)
        .await
        .unwrap();
    engine
        .add_presence("p", client("alice", "c2"), ttl)
        .await
        .unwrap();
    engine
        .add_presence("p", client("bob", "c3"), ttl)
        .await
        .unwrap();
    engine
        .add_presence("p", client("", "c4"), ttl)
        .await
        .unwrap();
    engine
        .add_presence("p", client("", "c5"), ttl)
        .await
        .unwrap();
    // A refresh does not add a client.
    engine
        .add_presence("p", client("bob", "c3"), ttl)
        .await
        .unwrap();
    engine
        .add_presence("q", client("carol", "c6"), ttl)
        .await
        .unwrap();

    let stats = engine.presence_stats("p").await.unwrap();
    assert_eq!(
        stats,
        PresenceStats {
            num_clients: 5,
            num_users: 3
        }
    );
    let members = engine.presence("p").await.unwrap();
    assert_eq!(
        members.keys().map(String::as_str).collect::<Vec<_>>(),
        ["c1", "c2", "c3", "c4", "c5"]
    );
    assert_eq!(members["c3"], client("bob", "c3"));

    engine.remove_presence("p", "c3").await.unwrap();
    engine.remove_presence("p", "missing").await.unwrap();
    engine.remove_presence("nowhere", "c1").await.unwrap();
    let stats = engine.presence_stats("p").await.unwrap();
    assert_eq!(
        stats,
        PresenceStats {
            num_clients: 4,
            num_users: 2
        }
    );
    assert!(!engine.presence("p").await.unwrap().contains_key("c3"));
}

#[tokio::test(start_paused = true)]
async fn presence_entries_expire_unless_refreshed() {
    let (engine, _recorder) = setup();
    let ttl = Duration::from_secs(10);
    engine
        .add_presence("p", client("alice", "c1"), ttl)
        .await
        .unwrap();
    engine
        .add_presence("p", client("bob", "c2"), ttl)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    engine
        .add_presence("p", client("bob", "c2"), ttl)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;

    let members = engine.presence("p").await.unwrap();
    assert_eq!(
        members.keys().map(String::as_str).collect::<Vec<_>>(),
        ["c2"]
    );
    let stats = engine.presence_stats("p").await.unwrap();
    assert_eq!(
        stats,
        PresenceStats {
            num_clients: 1,
            num_users: 1
        }
    );

    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(engine.presence("p").await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_history_keeps_epoch_and_top() {
    let (engine, _recorder) = setup();
    let options = with_history(100, 60, 3600);
    publish_n(&engine, "r", 3, &options).await;
    let before = engine.history("r", &all()).await.unwrap().position;

    engine.remove_history("r").await.unwrap();
    engine.remove_history("never").await.unwrap();
    let page = engine.history("r", &all()).await.unwrap();
    assert!(page.publications.is_empty());
    assert_eq!(page.position, before);

    let next = engine.publish("r", publication(4), &options).await.unwrap();
    assert_eq!(
        next,
        StreamPosition {
            offset: 4,
            epoch: before.epoch
        }
    );
    assert_eq!(offsets(&engine.history("r", &all()).await.unwrap()), [4]);
}

#[tokio::test(start_paused = true)]
async fn cleanup_forgets_idle_channels() {
    let (engine, _recorder) = setup();
    engine.subscribe("kept").await.unwrap();
    engine
        .add_presence("who", client("u", "c1"), Duration::from_secs(1))
        .await
        .unwrap();
    engine
        .publish("hist", publication(1), &with_history(10, 1, 2))
        .await
        .unwrap();
    let keyed = PublishOptions {
        idempotency_key: Some("k".into()),
        history: None,
    };
    engine
        .publish("idem", publication(2), &keyed)
        .await
        .unwrap();
    // Nothing to keep: no state is created at all.
    engine
        .publish("nobody", publication(3), &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.num_channels(), 4);

    // Sleeping (not `advance`) lets the paused clock stop at every cleanup tick.
    tokio::time::sleep(IDEMPOTENCY_TTL + CLEANUP_INTERVAL * 2).await;
    assert_eq!(engine.num_channels(), 1);

    engine.unsubscribe("kept").await.unwrap();
    tokio::time::sleep(CLEANUP_INTERVAL * 2).await;
    assert_eq!(engine.num_channels(), 0);
}

#[tokio::test(start_paused = true)]
async fn sweep_keeps_channels_with_live_state() {
    let (engine, _recorder) = setup();
    engine
        .add_presence("who", client("u", "c1"), Duration::from_secs(3600))
        .await
        .unwrap();
    engine
        .publish("hist", publication(1), &with_history(10, 1, 3600))
        .await
        .unwrap();
    engine
        .add_presence("gone", client("u", "c1"), Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(CLEANUP_INTERVAL * 2).await;
    assert_eq!(engine.num_channels(), 2, "only the expired one is dropped");
    assert_eq!(
        engine
            .history("hist", &all())
            .await
            .unwrap()
            .position
            .offset,
        1
    );
}

#[tokio::test]
async fn cleanup_task_stops_when_the_engine_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (engine, _recorder) = setup();
    assert_eq!(metrics.num_alive_tasks(), before + 1);

    let weak = Arc::downgrade(&engine);
    drop(engine);
    assert!(weak.upgrade().is_none());
    for _ in 0..10 {
        if metrics.num_alive_tasks() == before {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("cleanup task still alive");
}

#[test]
fn works_without_a_runtime() {
    let (engine, recorder) = setup();
    assert!(engine.cleanup.get().is_none());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        engine.subscribe("a").await.unwrap();
        engine
            .publish("a", publication(1), &with_history(10, 60, 60))
            .await
            .unwrap();
    });
    assert_eq!(recorder.take().len(), 1);
}

#[tokio::test]
async fn control_commands_reach_this_node_and_registry_lists_it() {
    let recorder = Arc::new(Recorder::default());
    let engine = MemoryEngine::new(recorder.clone());
    let command = ControlCommand::Disconnect {
        user: "42".into(),
        client: String::new(),
        whitelist: vec![],
        code: 3503,
        reason: "force disconnect".into(),
    };
    engine.publish_control(&command).await.unwrap();
    assert_eq!(recorder.controls.lock().as_slice(), [command]);
    let nodes = engine.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].uid, "test-node");
    assert!(engine.healthy());
}
