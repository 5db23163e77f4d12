//! Sealed history and presence (SEC-REST-1): no plaintext at rest, shredding, moved records.

use super::*;

// ---------------------------------------------------------------------------
// Sealed history (SEC-REST-1)

async fn sealing_node(config: RedisConfig, uid: &str, keys: HistoryKeyring) -> Node {
    keyed_node(config, uid, BusKeyring::off(), keys).await
}

/// Every value stored under `prefix`, read by its type.
fn every_stored_value(redis: &RedisServer, prefix: &str) -> String {
    let mut dump = String::new();
    for key in redis.scan(&format!("{prefix}*")) {
        let kind = redis.cli(&["TYPE", &key]);
        let value = match kind.trim() {
            "string" => redis.cli(&["GET", &key]),
            "hash" => redis.cli(&["HGETALL", &key]),
            "stream" => redis.cli(&["XRANGE", &key, "-", "+"]),
            "zset" => redis.cli(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
            "list" => redis.cli(&["LRANGE", &key, "0", "-1"]),
            "set" => redis.cli(&["SMEMBERS", &key]),
            other => panic!("{key}: unexpected type {other}"),
        };
        dump.push_str(&format!("{key} ({}): {value}\n", kind.trim()));
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_history_stores_no_plaintext_and_survives_concurrent_publishers() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("sealed");
    let keys = || history_keyring("h1", &[("h1", 1)]);
    let a = sealing_node(config(vec![redis.url()], &prefix), "node-a", keys()).await;
    let b = sealing_node(config(vec![redis.url()], &prefix), "node-b", keys()).await;
    b.subscribe("secret").await.unwrap();

    // Two nodes publish into one stream at once: each seals for the offset
    // it expects; the script refuses a record made for a taken offset and
    // the node seals again.
    let mut tasks = Vec::new();
    for (node, tag) in [(a.engine.clone(), "a"), (b.engine.clone(), "b")] {
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                let data = format!(r#"{{"text":"marker-9c1e {tag}{n}"}}"#);
                node.publish("secret", publication(&data), &history_options(200))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let page = a
        .history("secret", &query(None, None, false))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), (1..=100).collect::<Vec<u64>>());
    let events = b.events.clone();
    wait_until(
        "100 live publications",
        5.0,
        || events.data("secret").len() == 100,
        || events.data("secret").len(),
    )
    .await;

    // Presence (user ids and connection info) is sealed the same way.
    let visitor = ClientInfo {
        user: "marker-9c1e-user".into(),
        client: "c-1".into(),
        conn_info: Some(RawJson::from_str(r#"{"name":"marker-9c1e"}"#).unwrap()),
        chan_info: None,
    };
    a.add_presence("secret", visitor.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let present = b.presence("secret").await.unwrap();
    assert_eq!(
        present.get("c-1"),
        Some(&visitor),
        "node B opens what node A sealed"
    );
    assert_eq!(b.presence_stats("secret").await.unwrap().num_users, 1);

    let dump = every_stored_value(&redis, &prefix);
    assert!(
        dump.contains(".stream."),
        "the stream is among the keys read: {dump}"
    );
    assert!(
        !dump.contains("marker-9c1e"),
        "plaintext stored in Redis:\n{dump}"
    );

    // A record moved to another channel's stream does not open there.
    let stream_key = |ch: &str| {
        redis
            .scan(&format!("{prefix}*"))
            .into_iter()
            .find(|k| k.contains(".stream.") && !k.contains(".stream.meta.") && k.ends_with(ch))
            .unwrap_or_else(|| panic!("no stream key for {ch}"))
    };
    a.publish("other", publication(r#"{"x":1}"#), &history_options(10))
        .await
        .unwrap();
    let source = stream_key("secret");
    let record = redis.cli(&["--no-raw", "XRANGE", &source, "1-0", "1-0"]);
    assert!(
        record.contains("e1:"),
        "sealed records start with e1: {record}"
    );
    let raw: Vec<u8> = {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(&source)
            .arg("1-0")
            .arg("1-0")
            .query_async(&mut connection)
            .await
            .unwrap();
        let target = stream_key("other");
        let _: String = redis::cmd("XADD")
            .arg(&target)
            .arg("2-0")
            .arg("d")
            .arg(&entries[0].1[0].1)
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg(target.replace(".stream.", ".stream.meta."))
            .arg("s")
            .arg(2)
            .query_async(&mut connection)
            .await
            .unwrap_or(0);
        entries[0].1[0].1.clone()
    };
    assert!(raw.starts_with(b"e1:"));
    let before = a.stats().history_undecryptable;
    assert!(matches!(
        a.history("other", &query(None, None, false)).await,
        Err(BusError::Undecryptable)
    ));
    assert_eq!(a.stats().history_undecryptable, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_history_key_shreds_what_it_sealed() {
    let redis = blocking(RedisServer::start).await;
    let prefix = prefix("shred");
    let a = sealing_node(
        config(vec![redis.url()], &prefix),
        "node-a",
        history_keyring("h1", &[("h1", 1)]),
    )
    .await;
    a.publish("log", publication(r#"{"n":1}"#), &history_options(10))
        .await
        .unwrap();
    // Rotation: h2 active, h1 kept to open older records.
    a.reload_history_keys(history_keyring("h2", &[("h1", 1), ("h2", 2)]));
    a.publish("log", publication(r#"{"n":2}"#), &history_options(10))
        .await
        .unwrap();
    let page = a.history("log", &query(None, None, false)).await.unwrap();
    assert_eq!(a.events.data("log").len(), 0, "not subscribed");
    assert_eq!(page.publications.len(), 2);
    // h1 removed: its record is gone for good; h2's still opens.
    a.reload_history_keys(history_keyring("h2", &[("h2", 2)]));
    assert!(matches!(
        a.history("log", &query(None, None, false)).await,
        Err(BusError::Undecryptable)
    ));
    assert_eq!(a.stats().history_undecryptable, 1);
    let since_one = query(
        Some(StreamPosition {
            offset: 1,
            epoch: page.position.epoch.clone(),
        }),
        None,
        false,
    );
    let newer = a.history("log", &since_one).await.unwrap();
    assert_eq!(offsets(&newer.publications), [2]);
    // The top is still known (recovery answers `recovered: false`).
    let top = a
        .history("log", &query(None, Some(0), false))
        .await
        .unwrap();
    assert_eq!(top.position.offset, 2);
}
