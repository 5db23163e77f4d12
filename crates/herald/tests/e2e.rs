//! End-to-end tests of the client protocol: a real `herald serve` process per
//! test, real WebSocket connections, and assertions on what a client
//! observes (reply lines, pushes, close codes) per docs/protocol.md.

#[path = "e2e/identity.rs"]
mod identity;
#[path = "e2e/keys.rs"]
mod keys;
#[path = "e2e/limits.rs"]
mod limits;
mod support;
#[path = "e2e/tls.rs"]
mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::time::Instant;

use support::{
    error_code, is_push, push_pub, token_signed_with, token_with_exp, unix_now, Client, Incoming,
    Server,
};

/// The default namespace open to authenticated clients.
const OPEN: &str = r#"
[channel.without_namespace]
allow_subscribe_for_client = true
allow_publish_for_client = true
"#;

/// The default namespace open, with recoverable history.
const HISTORY: &str = r#"
[channel.without_namespace]
allow_subscribe_for_client = true
allow_publish_for_client = true
history_size = 10
history_ttl = "60s"
force_recovery = true
"#;

fn subscribe(id: u64, channel: &str) -> String {
    json!({ "id": id, "subscribe": { "channel": channel } }).to_string()
}

fn publish(id: u64, channel: &str, data: &Value) -> String {
    json!({ "id": id, "publish": { "channel": channel, "data": data } }).to_string()
}

#[track_caller]
fn assert_error(reply: &Value, code: u64) {
    assert_eq!(
        error_code(reply),
        Some(code),
        "expected error {code}, got {reply}"
    );
}

#[track_caller]
fn assert_ok(reply: &Value, method: &str) {
    assert!(
        reply.get("error").is_none() && reply[method].is_object(),
        "expected a `{method}` result, got {reply}"
    );
}

/// Proves a connection is usable: a subscribe to a fresh channel succeeds.
async fn assert_alive(client: &mut Client, id: u64) {
    let reply = client
        .call(id, &subscribe(id, &format!("alive-{id}")))
        .await;
    assert_ok(&reply, "subscribe");
}

// ---- handshake and framing --------------------------------------------------

#[tokio::test]
async fn stale_without_connect() {
    let server = Server::start("[client]\nhandshake_timeout = \"300ms\"\n").await;
    let mut client = Client::open(server.ws_url()).await;
    let started = Instant::now();
    let (code, reason) = client.expect_close_within(Duration::from_secs(2)).await;
    let waited = started.elapsed();
    assert_eq!(code, 3502, "close reason {reason:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the 300ms handshake timeout"
    );
    assert_metric_at_least(&server, DISCONNECTS_3502, 1.0).await;
}

const DISCONNECTS_3502: &str = "herald_client_num_server_disconnects_total{code=\"3502\"}";

/// Waits (up to 5 s) for a counter to reach `want`.
async fn assert_metric_at_least(server: &Server, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = server.metric(series).await;
        if value >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {value}, expected at least {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn garbage_frame_closes_3501() {
    let mut server = Server::start(OPEN).await;
    let url = server.ws_url().to_owned();

    // Not JSON after a successful connect.
    let mut client = Client::connected(&url, "u").await;
    client.send_line("not json").await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (3501, "bad request"),
        "after `not json`"
    );

    // A first command that is not connect.
    let mut client = Client::open(&url).await;
    client.send_line(&subscribe(1, "ch")).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3501, "subscribe before connect; reason {reason:?}");

    // A second connect on an authenticated connection.
    let mut client = Client::connected(&url, "u").await;
    let again = json!({ "id": 2, "connect": { "token": support::token("u") } }).to_string();
    client.send_line(&again).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3501, "second connect; reason {reason:?}");

    // The `ping` command is not part of protocol v2 (docs/protocol.md, "Commands").
    let mut client = Client::connected(&url, "u").await;
    client.send_line(r#"{"id":2,"ping":{}}"#).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3501, "ping command after connect; reason {reason:?}");

    let mut client = Client::open(&url).await;
    client.send_line(r#"{"id":1,"ping":{}}"#).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(
        code, 3501,
        "ping command as the first command; reason {reason:?}"
    );

    // A frame with zero commands.
    let mut client = Client::connected(&url, "u").await;
    client.send_text("").await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3501, "empty frame; reason {reason:?}");

    // A pong while no ping is outstanding (docs/protocol.md, "Ping and pong").
    let mut client = Client::connected(&url, "u").await;
    client.pong().await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3501, "unsolicited pong; reason {reason:?}");

    assert!(server.is_running(), "herald exited on bad input");
    let mut client = Client::connected(&url, "u").await;
    assert_alive(&mut client, 2).await;
}

#[tokio::test]
async fn oversize_frame_closes_1009() {
    let server = Server::start(&format!("[client]\nmessage_size_limit = 1024\n{OPEN}")).await;
    let mut client = Client::connected(server.ws_url(), "u").await;

    // Just under the limit is fine, so the limit is not lower than configured.
    let small = publish(2, "ch", &json!({ "x": "a".repeat(900) }));
    assert!(small.len() < 1024);
    let reply = client.call(2, &small).await;
    assert_ok(&reply, "publish");

    let big = publish(3, "ch", &json!({ "x": "a".repeat(4096) }));
    assert!(big.len() > 4096);
    client.send_line(&big).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(
        code, 1009,
        "4 KB frame over a 1 KiB limit; reason {reason:?}"
    );
    assert_metric_at_least(
        &server,
        "herald_client_num_server_disconnects_total{code=\"1009\"}",
        1.0,
    )
    .await;
}

// ---- ping / pong ----------------------------------------------------------------

const FAST_PING: &str = r#"
[client]
ping_interval = "300ms"
pong_timeout = "200ms"

[channel.without_namespace]
allow_subscribe_for_client = true
"#;

#[tokio::test]
async fn no_pong_closes_3012() {
    let server = Server::start(FAST_PING).await;
    let mut client = Client::open(server.ws_url()).await;
    let connected = Instant::now();
    let reply = client.connect(&support::token("u")).await;
    assert_ok(&reply, "connect");

    let mut pings = 0;
    let (code, reason) = loop {
        let left = Duration::from_secs(2).saturating_sub(connected.elapsed());
        match client.next_incoming(left).await {
            Some(Incoming::Ping) => pings += 1, // deliberately not answered
            Some(Incoming::Close(code, reason)) => break (code, reason),
            Some(other) => panic!("expected pings then a close, got {other:?}"),
            None => panic!("no close within 2s of connect ({pings} pings seen)"),
        }
    };
    assert!(
        pings >= 1,
        "closed {code} {reason:?} without sending a ping first"
    );
    assert_eq!(code, 3012, "close reason {reason:?}");
    // A server that enforces pongs must ask for them (docs/protocol.md, "Ping and pong"): SDKs
    // answer pings only when the connect result says `pong: true`.
    assert_eq!(
        reply["connect"]["pong"], true,
        "connect result must advertise pong: {reply}"
    );
}

#[tokio::test]
async fn answered_pings_keep_the_connection() {
    let server = Server::start(FAST_PING).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    // Six ping intervals, answering each ping with `{}`.
    let pings = client
        .expect_open_for(Duration::from_millis(1800), true)
        .await;
    assert!(
        pings >= 4,
        "only {pings} pings in 6 ping intervals of 300ms"
    );
    assert!(
        client.pushes.is_empty(),
        "unexpected lines: {:?}",
        client.pushes
    );
    assert_alive(&mut client, 2).await;
}

// ---- slow consumer ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_closes_3008_with_bounded_memory() {
    const PUBLICATION: usize = 10 * 1024;
    // Kernel socket buffers absorb a few MB before anything queues in the
    // server, so 20 MB makes an unbounded queue exceed the 8 MB bound by far.
    const TOTAL: usize = 20 * 1024 * 1024;
    let server = Server::start(&format!("[client]\nqueue_max_size = 1048576\n{OPEN}")).await;
    let url = server.ws_url().to_owned();

    let mut slow = Client::open_with_recv_buffer(&url, 4096).await;
    let reply = slow.connect(&support::token("slow")).await;
    assert_ok(&reply, "connect");
    let reply = slow.call(2, &subscribe(2, "firehose")).await;
    assert_ok(&reply, "subscribe");
    // From here on `slow` is not polled: nothing reads its socket.

    let mut publisher = Client::connected(&url, "publisher").await;
    let data = json!({ "blob": "x".repeat(PUBLICATION - 12) });
    let mut id = 1;
    // A few publications before the baseline, so one-time allocations of the
    // publish path are not counted as growth.
    for _ in 0..5 {
        id += 1;
        let reply = publisher.call(id, &publish(id, "firehose", &data)).await;
        assert_ok(&reply, "publish");
    }
    let before = server.rss_kib();
    let mut peak = before;
    let mut sent = 0;
    while sent < TOTAL {
        id += 1;
        let line = publish(id, "firehose", &data);
        sent += line.len();
        let reply = publisher.call(id, &line).await;
        assert_ok(&reply, "publish");
        if id % 25 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    let after = server.rss_kib();
    peak = peak.max(after);
    let growth = after.saturating_sub(before);
    let peak_growth = peak.saturating_sub(before);
    println!(
        "slow client: published {} publications ({} KiB); server RSS before {before} KiB, \
         after {after} KiB (growth {growth} KiB), peak growth {peak_growth} KiB",
        id - 1,
        sent / 1024
    );
    assert!(
        growth < 8 * 1024,
        "server RSS grew by {growth} KiB for one slow client"
    );
    assert!(
        peak_growth < 8 * 1024,
        "server RSS peaked {peak_growth} KiB above the baseline"
    );

    // The slow client now reads: whatever was queued, then close 3008.
    let before_close = slow.lines_received;
    let (code, reason) = slow.expect_close_within(Duration::from_secs(30)).await;
    println!(
        "slow client: {} publications were buffered for it before close {code}",
        slow.lines_received - before_close
    );
    assert_eq!(code, 3008, "close reason {reason:?}");

    // The publisher was never affected.
    id += 1;
    let reply = publisher.call(id, &publish(id, "firehose", &data)).await;
    assert_ok(&reply, "publish");
    assert!(
        publisher.pushes.is_empty(),
        "publisher got pushes: {}",
        publisher.pushes.len()
    );
}

/// A client that never reads again is closed as slow, and its socket is
/// released even though the close frame can never reach it.
#[tokio::test]
async fn dead_peer_is_dropped_after_overflow() {
    const PUBLICATION: usize = 10 * 1024;
    const TOTAL: usize = 12 * 1024 * 1024;
    let server = Server::start(&format!("[client]\nqueue_max_size = 65536\n{OPEN}")).await;
    let url = server.ws_url().to_owned();

    let mut dead = Client::open_with_recv_buffer(&url, 4096).await;
    let reply = dead.connect(&support::token("dead")).await;
    assert_ok(&reply, "connect");
    let reply = dead.call(2, &subscribe(2, "firehose")).await;
    assert_ok(&reply, "subscribe");
    // `dead` is never polled again, and never closed by this side.

    let mut publisher = Client::connected(&url, "publisher").await;
    let with_dead = server.open_sockets();
    let data = json!({ "blob": "x".repeat(PUBLICATION - 12) });
    let (mut id, mut sent) = (1, 0);
    while sent < TOTAL {
        id += 1;
        let line = publish(id, "firehose", &data);
        sent += line.len();
        assert_ok(&publisher.call(id, &line).await, "publish");
    }
    let deadline = Instant::now() + Duration::from_secs(25);
    while server.open_sockets() >= with_dead {
        assert!(
            Instant::now() < deadline,
            "the server still holds the dead client's socket ({} sockets)",
            server.open_sockets()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    id += 1;
    assert_ok(
        &publisher.call(id, &publish(id, "firehose", &data)).await,
        "publish",
    );
    drop(dead);
}

// ---- subscribe errors -----------------------------------------------------------

#[tokio::test]
async fn duplicate_subscribe_105() {
    let server = Server::start(OPEN).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_ok(&client.call(2, &subscribe(2, "ch")).await, "subscribe");
    assert_error(&client.call(3, &subscribe(3, "ch")).await, 105);
    assert_alive(&mut client, 4).await;
}

#[tokio::test]
async fn unknown_namespace_102() {
    let server = Server::start(
        r#"
[[channel.namespaces]]
name = "chat"
allow_subscribe_for_client = true
"#,
    )
    .await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_error(&client.call(2, &subscribe(2, "nope:x")).await, 102);
    assert_ok(&client.call(3, &subscribe(3, "chat:x")).await, "subscribe");
}

#[tokio::test]
async fn forbidden_channel_103() {
    let server = Server::start(
        r#"
[[channel.namespaces]]
name = "locked"
presence = true

[[channel.namespaces]]
name = "open"
allow_subscribe_for_client = true
"#,
    )
    .await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_error(&client.call(2, &subscribe(2, "locked:x")).await, 103);
    assert_ok(&client.call(3, &subscribe(3, "open:x")).await, "subscribe");
    // The default namespace has no allow_subscribe_for_client either.
    assert_error(&client.call(4, &subscribe(4, "plain")).await, 103);
}

#[tokio::test]
async fn bad_request_107() {
    let server = Server::start(OPEN).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_error(&client.call(2, &subscribe(2, &"c".repeat(256))).await, 107);
    assert_ok(
        &client.call(3, &subscribe(3, &"c".repeat(255))).await,
        "subscribe",
    );
}

#[tokio::test]
async fn channel_limit_106() {
    let server = Server::start(&format!("[client]\nchannel_limit = 2\n{OPEN}")).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_ok(&client.call(2, &subscribe(2, "a")).await, "subscribe");
    assert_ok(&client.call(3, &subscribe(3, "b")).await, "subscribe");
    assert_error(&client.call(4, &subscribe(4, "c")).await, 106);
    assert_metric_at_least(
        &server,
        "herald_client_num_reply_errors_total{code=\"106\",method=\"subscribe\"}",
        1.0,
    )
    .await;
    // Freeing a slot makes room again.
    let unsubscribe = r#"{"id":5,"unsubscribe":{"channel":"a"}}"#;
    assert_ok(&client.call(5, unsubscribe).await, "unsubscribe");
    assert_ok(&client.call(6, &subscribe(6, "c")).await, "subscribe");
}

// ---- history and recovery -------------------------------------------------------

async fn publish_n(client: &mut Client, first_id: u64, channel: &str, n: u64) {
    for i in 0..n {
        let id = first_id + i;
        let reply = client
            .call(id, &publish(id, channel, &json!({ "n": i + 1 })))
            .await;
        assert_ok(&reply, "publish");
    }
}

#[tokio::test]
async fn unrecoverable_position_112() {
    let server = Server::start(HISTORY).await;
    let mut publisher = Client::connected(server.ws_url(), "p").await;
    publish_n(&mut publisher, 2, "h", 3).await;

    let mut client = Client::connected(server.ws_url(), "u").await;
    let rejecting = json!({ "id": 2, "subscribe": {
        "channel": "h", "recover": true, "epoch": "wrong", "offset": 1, "flag": 2 } });
    assert_error(&client.call(2, &rejecting.to_string()).await, 112);

    let lenient = json!({ "id": 3, "subscribe": {
        "channel": "h", "recover": true, "epoch": "wrong", "offset": 1 } });
    let reply = client.call(3, &lenient.to_string()).await;
    assert_ok(&reply, "subscribe");
    let result = &reply["subscribe"];
    assert!(
        result.get("recovered").is_none() || result["recovered"] == false,
        "recovered with a wrong epoch: {reply}"
    );
    assert_eq!(result["was_recovering"], true, "{reply}");
    assert!(
        result.get("publications").is_none()
            || result["publications"].as_array().is_some_and(Vec::is_empty),
        "publications without recovered:true (docs/protocol.md, History, positioning and recovery): {reply}"
    );
    assert!(
        result["epoch"]
            .as_str()
            .is_some_and(|e| !e.is_empty() && e != "wrong"),
        "{reply}"
    );
    assert_eq!(
        result["offset"], 3,
        "a failed recovery reports the stream top: {reply}"
    );
}

#[tokio::test]
async fn recovery_in_order() {
    let server = Server::start(HISTORY).await;
    let mut first = Client::connected(server.ws_url(), "u").await;
    let reply = first.call(2, &subscribe(2, "h")).await;
    assert_ok(&reply, "subscribe");
    assert_eq!(reply["subscribe"]["recoverable"], true, "{reply}");
    let epoch = reply["subscribe"]["epoch"]
        .as_str()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| panic!("no epoch in the subscribe result: {reply}"))
        .to_owned();

    let mut publisher = Client::connected(server.ws_url(), "p").await;
    publish_n(&mut publisher, 2, "h", 3).await;
    let mut live = Vec::new();
    while live.len() < 3 {
        let line = first.next_reply().await;
        let publication = push_pub(&line, "h").unwrap_or_else(|| panic!("not a pub on h: {line}"));
        live.push(publication["offset"].as_u64().unwrap_or(0));
    }
    assert_eq!(live, [1, 2, 3], "live offsets");
    let reply = first
        .call(3, r#"{"id":3,"unsubscribe":{"channel":"h"}}"#)
        .await;
    assert_ok(&reply, "unsubscribe");

    let mut client = Client::connected(server.ws_url(), "u").await;
    let recover = json!({ "id": 2, "subscribe": {
        "channel": "h", "recover": true, "epoch": epoch, "offset": 1, "flag": 2 } });
    let reply = client.call(2, &recover.to_string()).await;
    assert_ok(&reply, "subscribe");
    let result = &reply["subscribe"];
    assert_eq!(result["recovered"], true, "{reply}");
    assert_eq!(result["was_recovering"], true, "{reply}");
    assert_eq!(result["epoch"], epoch.as_str(), "{reply}");
    assert_eq!(
        result["offset"], 1,
        "result offset must be the requested one (docs/protocol.md, History, positioning and recovery): {reply}"
    );
    let publications = result["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications in a recovered subscribe: {reply}"));
    let recovered: Vec<(u64, Value)> = publications
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap_or(0), p["data"].clone()))
        .collect();
    assert_eq!(
        recovered,
        [(2, json!({ "n": 2 })), (3, json!({ "n": 3 }))],
        "recovered publications: {reply}"
    );
    assert!(
        client.pushes.is_empty(),
        "pushes before the subscribe reply: {:?}",
        client.pushes
    );
}

// ---- ordering -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_after_subscribe_reply() {
    const CHANNEL: &str = "race";
    const ROUNDS: usize = 10;
    const PUBS_PER_ROUND: usize = 30;
    let server = Server::start(&HISTORY.replace("history_size = 10", "history_size = 1000")).await;
    let url = server.ws_url().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let (url, stop, published) = (url.clone(), stop.clone(), published.clone());
        async move {
            let mut client = Client::connected(&url, "publisher").await;
            let mut id = 1;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let reply = client
                    .call(id, &publish(id, CHANNEL, &json!({ "seq": id })))
                    .await;
                assert_ok(&reply, "publish");
                published.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let started = Instant::now();
    while published.load(Ordering::Relaxed) < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "publisher is not publishing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    for round in 0..ROUNDS {
        let mut subscriber = Client::connected(&url, &format!("sub{round}")).await;
        subscriber.send_line(&subscribe(2, CHANNEL)).await;
        let mut result: Option<Value> = None;
        let mut offsets = Vec::new();
        while offsets.len() < PUBS_PER_ROUND {
            let line = subscriber.next_reply().await;
            if let Some(publication) = push_pub(&line, CHANNEL) {
                assert!(
                    result.is_some(),
                    "round {round}: pub push before the subscribe reply: {line}"
                );
                let offset = publication["offset"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("round {round}: pub without offset: {line}"));
                offsets.push(offset);
            } else {
                assert!(result.is_none(), "round {round}: unexpected line: {line}");
                assert_eq!(line["id"], 2, "round {round}: unexpected line: {line}");
                assert_ok(&line, "subscribe");
                result = Some(line["subscribe"].clone());
            }
        }
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "round {round}: offsets not strictly increasing: {offsets:?}"
        );
        // A recoverable subscription must continue exactly after the position
        // the reply reported: a gap is a lost message, a repeat a duplicate.
        let top = result
            .as_ref()
            .and_then(|r| r["offset"].as_u64())
            .unwrap_or_else(|| {
                panic!("round {round}: subscribe result without offset: {result:?}")
            });
        let expected: Vec<u64> = (top + 1..).take(offsets.len()).collect();
        assert_eq!(
            offsets, expected,
            "round {round}: after subscribe result offset {top}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("publisher stops")
        .expect("publisher task did not panic");
}

#[tokio::test]
async fn connect_batched_with_subscribe() {
    let server = Server::start(OPEN).await;
    let mut client = Client::open(server.ws_url()).await;
    let frame = [
        json!({ "id": 1, "connect": { "token": support::token("u") } }).to_string(),
        subscribe(2, "ch"),
        publish(3, "ch", &json!({ "text": "hi" })),
    ]
    .join("\n");
    client.send_text(frame).await;

    let mut lines = Vec::new();
    while lines.len() < 4 {
        lines.push(client.next_reply().await);
    }
    let position = |id: u64| {
        lines
            .iter()
            .position(|l| !is_push(l) && l["id"] == id)
            .unwrap_or_else(|| panic!("no reply to id {id} in {lines:?}"))
    };
    let (connect, sub, publ) = (position(1), position(2), position(3));
    assert_ok(&lines[connect], "connect");
    assert_ok(&lines[sub], "subscribe");
    assert_ok(&lines[publ], "publish");
    assert!(
        connect < sub && sub < publ,
        "replies out of order: {lines:?}"
    );
    let own = lines
        .iter()
        .position(|l| push_pub(l, "ch").is_some())
        .unwrap_or_else(|| panic!("own publication not delivered: {lines:?}"));
    assert!(
        own > sub,
        "publication before the subscribe reply: {lines:?}"
    );
    assert_eq!(
        push_pub(&lines[own], "ch").unwrap()["data"],
        json!({ "text": "hi" })
    );
}

// ---- tokens and expiry ------------------------------------------------------------

#[tokio::test]
async fn expired_token_error_109_and_invalid_3500() {
    let server = Server::start(OPEN).await;

    let mut client = Client::open(server.ws_url()).await;
    let reply = client.connect(&token_with_exp("u", unix_now() - 60)).await;
    assert_error(&reply, 109);
    assert!(reply.get("connect").is_none(), "{reply}");

    let mut client = Client::open(server.ws_url()).await;
    let forged = token_signed_with(
        "another-secret-of-at-least-32-bytes!!",
        &json!({ "sub": "u" }),
    );
    client
        .send_line(&json!({ "id": 1, "connect": { "token": forged } }).to_string())
        .await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3500, "wrong signature; reason {reason:?}");

    let mut client = Client::open(server.ws_url()).await;
    client
        .send_line(r#"{"id":1,"connect":{"token":"not.a.jwt"}}"#)
        .await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3500, "malformed token; reason {reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_expiry_3005() {
    let server = Server::start(&format!(
        "[client]\nexpired_close_delay = \"1s\"\npresence_update_interval = \"250ms\"\n{OPEN}"
    ))
    .await;
    // Start 50ms after a whole second, so `exp` (whole seconds) is 1.95s away.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    tokio::time::sleep(
        Duration::from_millis(1050) - Duration::from_nanos(now.subsec_nanos().into()),
    )
    .await;
    let t0 = Instant::now();
    let exp = unix_now() + 2;
    let token = token_with_exp("u", exp);

    let mut lapsing = Client::open(server.ws_url()).await;
    let reply = lapsing.connect(&token).await;
    assert_eq!(reply["connect"]["expires"], true, "{reply}");
    assert!(
        reply["connect"]["ttl"].as_u64().is_some_and(|ttl| ttl <= 2),
        "{reply}"
    );

    let mut refreshing = Client::open(server.ws_url()).await;
    let reply = refreshing.connect(&token).await;
    assert_eq!(reply["connect"]["expires"], true, "{reply}");

    let watch = tokio::spawn(async move {
        let (code, reason) = lapsing.expect_close_within(Duration::from_secs(5)).await;
        (code, reason, t0.elapsed())
    });

    tokio::time::sleep_until(t0 + Duration::from_secs(1)).await;
    let refresh = json!({ "id": 2, "refresh": { "token": token_with_exp("u", unix_now() + 3) } });
    let reply = refreshing.call(2, &refresh.to_string()).await;
    assert_ok(&reply, "refresh");
    assert_eq!(reply["refresh"]["expires"], true, "{reply}");

    // The first token lapsed at t0+1.95s, so without the refresh this
    // connection would be closed by t0+2.95s plus the check interval.
    let until = (t0 + Duration::from_secs(4)).saturating_duration_since(Instant::now());
    refreshing.expect_open_for(until, true).await;
    assert_alive(&mut refreshing, 3).await;

    let (code, reason, after) = watch.await.expect("watcher");
    assert_eq!(code, 3005, "close reason {reason:?}");
    assert!(
        after >= Duration::from_millis(1900),
        "closed {after:?} after connect, before the token expired at ~1.95s"
    );
}

// ---- other commands -------------------------------------------------------------

#[tokio::test]
async fn send_closes_3508() {
    let server = Server::start(OPEN).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    client.send_line(r#"{"send":{"data":{}}}"#).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3508, "close reason {reason:?}");
}

#[tokio::test]
async fn rpc_108() {
    let server = Server::start(OPEN).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    let reply = client
        .call(2, r#"{"id":2,"rpc":{"method":"m","data":{}}}"#)
        .await;
    assert_error(&reply, 108);
    assert_alive(&mut client, 3).await;
}

#[tokio::test]
async fn presence_and_history_errors() {
    let server = Server::start(
        r#"
[channel.without_namespace]
allow_subscribe_for_client = true
allow_presence_for_client = true
allow_history_for_client = true

[[channel.namespaces]]
name = "full"
presence = true
history_size = 10
history_ttl = "60s"
allow_subscribe_for_client = true
allow_presence_for_client = true
allow_history_for_client = true
"#,
    )
    .await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_ok(&client.call(2, &subscribe(2, "bare")).await, "subscribe");

    let reply = client
        .call(3, r#"{"id":3,"presence":{"channel":"bare"}}"#)
        .await;
    assert_error(&reply, 108);
    let reply = client
        .call(4, r#"{"id":4,"presence_stats":{"channel":"bare"}}"#)
        .await;
    assert_error(&reply, 108);
    let reply = client
        .call(5, r#"{"id":5,"history":{"channel":"bare","limit":10}}"#)
        .await;
    assert_error(&reply, 108);

    // The same calls where the features are on succeed.
    assert_ok(&client.call(6, &subscribe(6, "full:x")).await, "subscribe");
    let reply = client
        .call(7, r#"{"id":7,"presence":{"channel":"full:x"}}"#)
        .await;
    assert_ok(&reply, "presence");
    assert!(reply["presence"]["presence"].is_object(), "{reply}");
    let reply = client
        .call(8, r#"{"id":8,"history":{"channel":"full:x","limit":10}}"#)
        .await;
    assert_ok(&reply, "history");
    assert!(reply["history"]["publications"].is_array(), "{reply}");
}

/// The access log names method, path and status, and never the query string
/// or a header, which may carry tokens.
#[tokio::test]
async fn access_log_leaves_out_query_and_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start("[log]\nlevel = \"info\"\n[http_api]\nkey = \"api-key-x7\"\n").await;
    let addr = server.api_url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /health?token=query-secret-q1 HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: apikey header-secret-h2\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr_tail().contains("/health") {
        assert!(
            Instant::now() < deadline,
            "no access log line:\n{}",
            server.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = server.stderr_tail();
    let line = logs.lines().find(|l| l.contains("/health")).unwrap();
    assert!(line.contains("200") && line.contains("GET"), "{line}");
    for secret in ["query-secret-q1", "header-secret-h2", "api-key-x7"] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the log:\n{logs}"
        );
    }
}

// ---- the WebSocket layer, byte by byte --------------------------------------------

/// Sends `request` on a fresh TCP connection and returns the response head.
async fn raw_request(addr: &str, request: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(n, 1, "connection closed mid-head: {head:?}");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

fn upgrade_request(addr: &str, path: &str, version: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn ws_addr(server: &Server) -> String {
    let url = server.ws_url().trim_start_matches("ws://");
    url[..url.find('/').unwrap()].to_owned()
}

/// A masked client frame.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first_byte];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until a close frame; returns its code.
async fn read_close_code(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;

    let deadline = Duration::from_secs(5);
    loop {
        let mut head = [0u8; 2];
        tokio::time::timeout(deadline, stream.read_exact(&mut head))
            .await
            .expect("a frame in time")
            .expect("a frame, not EOF");
        let len = match head[1] & 0x7F {
            126 => {
                let mut ext = [0u8; 2];
                stream.read_exact(&mut ext).await.unwrap();
                u16::from_be_bytes(ext) as usize
            }
            127 => panic!("unexpectedly large frame"),
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        if head[0] & 0x0F == 0x8 {
            assert!(payload.len() >= 2, "close frame without a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// The handshake checks answer with the status a client can act on.
#[tokio::test]
async fn handshake_refusals() {
    let server = Server::start(OPEN).await;
    let addr = ws_addr(&server);
    let (_, head) = raw_request(
        &addr,
        &upgrade_request(&addr, "/connection/websocket", "8", KEY),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13\r\n"),
        "{head}"
    );
    let (_, head) = raw_request(
        &addr,
        &upgrade_request(&addr, "/connection/websocket", "13", "c2hvcnQ="),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400 "), "short key: {head}");
    let (_, head) = raw_request(&addr, &upgrade_request(&addr, "/elsewhere", "13", KEY)).await;
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    let (_, head) = raw_request(
        &addr,
        &format!("GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400 "), "plain GET: {head}");
    let (_, head) = raw_request(
        &addr,
        &upgrade_request(&addr, "/connection/websocket", "13", KEY),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 sample accept key: {head}"
    );
}

/// Frames the RFC forbids close the connection with the code it names, and
/// a ping is answered with a pong carrying the same bytes.
#[tokio::test]
async fn websocket_violations_close_with_rfc_codes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start(OPEN).await;
    let addr = ws_addr(&server);
    let open = || async {
        let (stream, head) = raw_request(
            &addr,
            &upgrade_request(&addr, "/connection/websocket", "13", KEY),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        stream
    };

    // Ping → pong with the same payload.
    let mut stream = open().await;
    stream
        .write_all(&client_frame(0x89, b"are you there"))
        .await
        .unwrap();
    let mut pong = [0u8; 15];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong[..2], &[0x8A, 13]);
    assert_eq!(&pong[2..], b"are you there");

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", vec![0x81, 0x02, b'{', b'}'], 1002),
        ("reserved opcode", client_frame(0x83, b""), 1002),
        ("invalid UTF-8", client_frame(0x81, &[0xC3, 0x28]), 1007),
        ("continuation first", client_frame(0x80, b"{}"), 1002),
        (
            "too many fragments",
            {
                let mut bytes = client_frame(0x01, b"{");
                for _ in 0..1100 {
                    bytes.extend(client_frame(0x00, b" "));
                }
                bytes
            },
            1009,
        ),
    ];
    for (name, bytes, want) in cases {
        let mut stream = open().await;
        stream.write_all(&bytes).await.unwrap();
        assert_eq!(read_close_code(&mut stream).await, want, "{name}");
    }

    // A client close is answered with the client's code.
    let mut stream = open().await;
    let mut body = 4001u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    stream.write_all(&client_frame(0x88, &body)).await.unwrap();
    assert_eq!(read_close_code(&mut stream).await, 4001);
}

// ---- abuse limits -----------------------------------------------------------------

#[tokio::test]
async fn command_rate_limit_111_then_3013() {
    let server = Server::start(&format!("[client]\ncommand_rate_limit = 5\n{OPEN}")).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    // Within the rate (the bucket refills while we wait): answered.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_alive(&mut client, 2).await;
    // A burst over it: the excess is refused with 111.
    let burst: Vec<String> = (10..18)
        .map(|id| subscribe(id, &format!("burst-{id}")))
        .collect();
    client.send_text(burst.join("\n")).await;
    let mut refused = 0;
    for _ in 10..18 {
        let reply = client.next_reply().await;
        if error_code(&reply) == Some(111) {
            refused += 1;
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of 8 commands over a rate of 5/s were refused"
    );
    assert_metric_at_least(
        &server,
        "herald_client_num_reply_errors_total{code=\"111\",method=\"subscribe\"}",
        3.0,
    )
    .await;
    // Keeping on: disconnected with 3013.
    let flood: Vec<String> = (100..130)
        .map(|id| subscribe(id, &format!("flood-{id}")))
        .collect();
    client.send_text(flood.join("\n")).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 3013, "reason {reason:?}");
    assert_metric_at_least(
        &server,
        "herald_client_num_server_disconnects_total{code=\"3013\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn user_connection_limit_3504() {
    let server = Server::start(&format!("[client]\nuser_connection_limit = 2\n{OPEN}")).await;
    let _one = Client::connected(server.ws_url(), "dana").await;
    let _two = Client::connected(server.ws_url(), "dana").await;
    let mut three = Client::open(server.ws_url()).await;
    three
        .send_line(&json!({ "id": 1, "connect": { "token": support::token("dana") } }).to_string())
        .await;
    let (code, reason) = three.expect_close().await;
    assert_eq!(
        code, 3504,
        "third connection of one user; reason {reason:?}"
    );
    assert_metric_at_least(
        &server,
        "herald_client_num_server_disconnects_total{code=\"3504\"}",
        1.0,
    )
    .await;
    // Another user is not affected.
    let _other = Client::connected(server.ws_url(), "erin").await;
}

#[tokio::test]
async fn foreign_origin_403() {
    let server = Server::start(&format!(
        "[client]\nallowed_origins = [\"https://*.herald.test\"]\n{OPEN}"
    ))
    .await;
    let addr = ws_addr(&server);
    let request = |origin: &str| {
        upgrade_request(&addr, "/connection/websocket", "13", KEY)
            .replace("\r\n\r\n", &format!("\r\nOrigin: {origin}\r\n\r\n"))
    };
    let (_, head) = raw_request(&addr, &request("https://evil.example")).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (_, head) = raw_request(&addr, &request("https://app.herald.test")).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_metric_at_least(
        &server,
        "herald_client_handshake_refusals_total{reason=\"origin\"}",
        1.0,
    )
    .await;
}

/// SIGHUP means "reload": it never stops a node, TLS or not.
#[tokio::test]
async fn sighup_does_not_stop_a_plain_node() {
    let mut server = Server::start(OPEN).await;
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.is_running(), "SIGHUP stopped the node");
    let mut client = Client::connected(server.ws_url(), "u").await;
    assert_alive(&mut client, 2).await;
}
