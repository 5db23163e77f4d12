//! What one peer can make a node hold, and the bound on each
//! (docs/security.md, "Resources a peer can make a node hold"): sockets of
//! the public listener, request bodies, server API concurrency and batches,
//! per-name stream state, and the handshake's HTTP version and body. Each
//! test observes what an attacker would: the server's open sockets, its
//! RSS, status codes, when the server closes the connection.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::support::{Client, Server};
use super::{assert_metric_at_least, error_code, subscribe, ws_addr, KEY, OPEN};

const API_KEY: &str = "limits-api-key";

/// What the server did with a connection after the request was sent.
#[derive(Debug)]
struct Outcome {
    /// The response head, empty when none came.
    head: String,
    /// When the server closed the connection (EOF or reset), after the
    /// request was written; None when still open at the deadline.
    closed_after: Option<Duration>,
}

/// Writes `request` (from another task: the server may stop reading it, or
/// close) and reads until the server closes or `wait` passes.
async fn send_and_watch(addr: &str, request: &[u8], wait: Duration) -> Outcome {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let (mut stream, mut writer) = stream.into_split();
    let request = request.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        // Keep the write half open (no FIN): a client still sending.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(writer);
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        match tokio::time::timeout_at(started + wait, stream.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    };
    writing.abort();
    let text = String::from_utf8_lossy(&seen);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    Outcome { head, closed_after }
}

fn status(head: &str) -> Option<u16> {
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The server's open sockets once its workers have started (each holds a
/// copy of the listener, taken when it first runs): after one request on
/// each listener, when the count holds still.
async fn settled_sockets(server: &Server, addr: &str) -> usize {
    send_and_watch(
        addr,
        b"GET /warm-up HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    server.metric("herald_node_num_clients").await;
    let mut count = server.open_sockets();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = server.open_sockets();
        if now == count {
            return count;
        }
        count = now;
    }
}

/// Waits up to 5 s for the server's open sockets to come back to `want`.
async fn assert_sockets_back_to(server: &Server, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = server.open_sockets();
        if now <= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server still holds {now} sockets, {want} before"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CHUNKED_FOREVER: &[u8] =
    b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";

#[tokio::test]
async fn every_public_connection_counts_and_an_unread_body_does_not_hold_it() {
    // The internal listener on its own port: scrapes do not count.
    let server = Server::start_with_internal_port(&format!(
        "[client]\nconnection_limit_per_ip = 10\n{OPEN}"
    ))
    .await;
    let addr = ws_addr(&server);
    let before = settled_sockets(&server, &addr).await;

    // 30 connections at once, each a chunked body that never ends.
    let watches: Vec<_> = (0..30)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                send_and_watch(&addr, CHUNKED_FOREVER, Duration::from_secs(8)).await
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = futures_join(watches).await;
    let answered = outcomes
        .iter()
        .filter(|o| status(&o.head) == Some(404))
        .count();
    let refused = outcomes.iter().filter(|o| o.head.is_empty()).count();
    assert!(
        answered <= 10 && answered + refused == 30,
        "at most 10 admitted, the rest closed at accept: {outcomes:?}"
    );
    // Every connection, admitted or not, was closed by the server within a
    // few seconds, though the client never finished its body.
    for outcome in &outcomes {
        let after = outcome
            .closed_after
            .unwrap_or_else(|| panic!("a connection was still open after 8 s: {outcome:?}"));
        assert!(
            after < Duration::from_secs(4),
            "closed only after {after:?}: {outcome:?}"
        );
    }
    assert_sockets_back_to(&server, before).await;
    assert_metric_at_least(
        &server,
        "herald_client_handshake_refusals_total{reason=\"address_limit\"}",
        20.0,
    )
    .await;
    assert_metric_at_least(
        &server,
        "herald_http_request_bodies_cut_total{reason=\"unread\"}",
        1.0,
    )
    .await;

    // Any error response closes a public connection, body or not.
    let outcome = send_and_watch(
        &addr,
        b"GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status(&outcome.head), Some(404), "{outcome:?}");
    assert!(
        outcome.closed_after.is_some(),
        "a 404 left the connection open: {outcome:?}"
    );
}

#[tokio::test]
async fn the_address_limit_counts_websockets_and_gives_places_back() {
    let server =
        Server::start_with_internal_port(&format!("[client]\nconnection_limit_per_ip = 2\n{OPEN}"))
            .await;
    let addr = ws_addr(&server);
    let first = Client::connected(server.ws_url(), "a").await;
    let _second = Client::connected(server.ws_url(), "b").await;
    let upgrade = super::upgrade_request(&addr, "/connection/websocket", "13", KEY);
    let third = send_and_watch(&addr, upgrade.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        third.head.is_empty() && third.closed_after.is_some(),
        "a third connection from one address is closed at accept: {third:?}"
    );
    assert_metric_at_least(
        &server,
        "herald_client_handshake_refusals_total{reason=\"address_limit\"}",
        1.0,
    )
    .await;
    drop(first);
    // The closed connection's place comes back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Closed at accept until the place is back, then a 101.
        let outcome = send_and_watch(&addr, upgrade.as_bytes(), Duration::from_millis(300)).await;
        if outcome.head.starts_with("HTTP/1.1 101 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place never came back: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn handshakes_need_http_1_1_and_no_body() {
    let server = Server::start(OPEN).await;
    let addr = ws_addr(&server);
    let good = super::upgrade_request(&addr, "/connection/websocket", "13", KEY);
    let cases = [
        ("HTTP/1.0", good.replacen("HTTP/1.1", "HTTP/1.0", 1)),
        (
            "Content-Length body",
            good.replace("\r\n\r\n", "\r\nContent-Length: 4\r\n\r\nabcd"),
        ),
        (
            "chunked body",
            good.replace(
                "\r\n\r\n",
                "\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            ),
        ),
    ];
    for (name, request) in cases {
        let outcome = send_and_watch(&addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(status(&outcome.head), Some(400), "{name}: {outcome:?}");
        assert!(outcome.closed_after.is_some(), "{name}: left open");
    }
    let (_, head) = super::raw_request(&addr, &good).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    for reason in ["http_version", "body"] {
        assert_metric_at_least(
            &server,
            &format!("herald_client_handshake_refusals_total{{reason=\"{reason}\"}}"),
            1.0,
        )
        .await;
    }
}

fn api_head(method: &str, key: Option<&str>, framing: &str) -> String {
    let key = key.map_or(String::new(), |k| format!("X-API-Key: {k}\r\n"));
    format!("POST /api/{method} HTTP/1.1\r\nHost: h\r\n{key}{framing}\r\n")
}

#[tokio::test]
async fn the_server_api_reads_no_body_it_refuses_and_cuts_slow_ones() {
    let server = Server::start_with_http(
        "request_body_timeout = \"2s\"",
        &format!("[http_api]\nkey = \"{API_KEY}\"\nmax_concurrent_requests = 2\n{OPEN}"),
    )
    .await;
    let addr = ws_addr(&server);
    let rss_before = server.rss_kib();

    // Eight unauthenticated 9 MiB bodies: 401 from the head, before any
    // body byte is kept, and the connection closed.
    let body = vec![b'x'; 9 << 20];
    let floods: Vec<_> = (0..8)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            tokio::spawn(async move {
                let mut request = api_head(
                    "publish",
                    None,
                    &format!("Content-Length: {}\r\n", body.len()),
                )
                .into_bytes();
                request.extend_from_slice(&body);
                send_and_watch(&addr, &request, Duration::from_secs(8)).await
            })
        })
        .collect();
    for outcome in futures_join(floods).await {
        assert_eq!(status(&outcome.head), Some(401), "{outcome:?}");
        assert!(
            outcome
                .closed_after
                .is_some_and(|d| d < Duration::from_secs(5)),
            "an unauthenticated body kept its connection: {outcome:?}"
        );
    }
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 24 * 1024,
        "RSS grew {grown} KiB for eight refused 9 MiB bodies (it buffered them)"
    );
    assert_metric_at_least(
        &server,
        "herald_api_requests_refused_total{reason=\"unauthorized\"}",
        8.0,
    )
    .await;

    // With the key, a body trickled a byte at a time, or a chunked one that
    // never ends: 408 at the deadline, connection closed.
    let trickle = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let started = Instant::now();
            stream
                .write_all(api_head("publish", Some(API_KEY), "Content-Length: 100\r\n").as_bytes())
                .await
                .unwrap();
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                // One byte every 300 ms, as long as the server takes them.
                let _ = stream.write_all(b"x").await;
                match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break (answer, started.elapsed()),
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "trickled body still open after 10 s"
                );
            }
        })
    };
    let chunked = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let request = api_head("publish", Some(API_KEY), "Transfer-Encoding: chunked\r\n")
                + "2\r\n{}\r\n";
            send_and_watch(&addr, request.as_bytes(), Duration::from_secs(8)).await
        })
    };
    let (answer, took) = trickle.await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status(&answer), Some(408), "trickled body: {answer}");
    assert!(
        took < Duration::from_secs(5),
        "trickled body cut only after {took:?}"
    );
    let outcome = chunked.await.unwrap();
    assert_eq!(
        status(&outcome.head),
        Some(408),
        "endless chunked body: {outcome:?}"
    );
    assert!(
        outcome
            .closed_after
            .is_some_and(|d| d < Duration::from_secs(5)),
        "{outcome:?}"
    );
    assert_metric_at_least(
        &server,
        "herald_http_request_bodies_cut_total{reason=\"timeout\"}",
        2.0,
    )
    .await;

    // Two stalled requests take both API places: a third waits 1 s, then 503.
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let request = api_head("publish", Some(API_KEY), "Content-Length: 100\r\n") + "{";
                send_and_watch(&addr, request.as_bytes(), Duration::from_secs(6)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = r#"{"channel":"news","data":{}}"#;
    let request = api_head(
        "publish",
        Some(API_KEY),
        &format!("Content-Length: {}\r\n", body.len()),
    ) + body;
    let third = send_and_watch(&addr, request.as_bytes(), Duration::from_secs(4)).await;
    assert_eq!(status(&third.head), Some(503), "{third:?}");
    assert!(
        third.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{third:?}"
    );
    for outcome in futures_join(stalled).await {
        assert_eq!(status(&outcome.head), Some(408), "{outcome:?}");
    }
    assert_metric_at_least(
        &server,
        "herald_api_requests_refused_total{reason=\"concurrency\"}",
        1.0,
    )
    .await;
    // Places come back: the same request now succeeds.
    let again = send_and_watch(&addr, request.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(status(&again.head), Some(200), "{again:?}");
}

/// `POST /api/<method>` with the key and `body`; the JSON answer.
async fn api(addr: &str, method: &str, body: &str) -> Value {
    let request = api_head(
        method,
        Some(API_KEY),
        &format!("Content-Length: {}\r\nConnection: close\r\n", body.len()),
    ) + body;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("API answer in time")
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn batches_and_broadcasts_are_capped_and_streamed() {
    let server = Server::start(&format!(
        "[http_api]\nkey = \"{API_KEY}\"\nmax_batch_size = 50\n{OPEN}"
    ))
    .await;
    let addr = ws_addr(&server);
    let publish =
        |n: usize| json!({ "publish": { "channel": format!("c{n}"), "data": { "n": n } } });

    let within: Vec<Value> = (0..50).map(publish).collect();
    for parallel in [false, true] {
        let answer = api(
            &addr,
            "batch",
            &json!({ "commands": within, "parallel": parallel }).to_string(),
        )
        .await;
        let replies = answer["replies"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(replies.len(), 50, "{answer}");
        assert!(replies.iter().all(|r| r["publish"].is_object()), "{answer}");
    }
    let over: Vec<Value> = (0..51).map(publish).collect();
    let answer = api(&addr, "batch", &json!({ "commands": over }).to_string()).await;
    assert_eq!(error_code(&answer), Some(107), "{answer}");
    assert!(
        answer.to_string().contains("http_api.max_batch_size"),
        "{answer}"
    );
    let channels: Vec<String> = (0..51).map(|n| format!("c{n}")).collect();
    let answer = api(
        &addr,
        "broadcast",
        &json!({ "channels": channels, "data": {} }).to_string(),
    )
    .await;
    assert_eq!(error_code(&answer), Some(107), "{answer}");

    // 100,000 commands (3.7 MiB): refused at the 51st, memory not kept.
    let rss_before = server.rss_kib();
    let huge: Vec<Value> = (0..100_000).map(publish).collect();
    let answer = api(&addr, "batch", &json!({ "commands": huge }).to_string()).await;
    assert_eq!(error_code(&answer), Some(107), "{answer}");
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 32 * 1024,
        "RSS grew {grown} KiB for a refused batch"
    );
}

/// History on, recoverable, and history reads for clients.
const FRESH_NAMES: &str = r#"
[channel.without_namespace]
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_history_for_client = true
history_size = 10
history_ttl = "600s"
force_recovery = true
"#;

/// Sends `lines` in frames of at most 500 commands and waits for every reply.
async fn run_all(client: &mut Client, lines: Vec<String>) {
    for frame in lines.chunks(500) {
        client.send_text(frame.join("\n")).await;
        for _ in frame {
            let reply = client.next_reply().await;
            assert!(reply.get("error").is_none(), "{reply}");
        }
    }
}

#[tokio::test]
async fn reads_and_subscriptions_of_fresh_names_leave_no_state() {
    let server = Server::start(FRESH_NAMES).await;
    let mut client = Client::connected(server.ws_url(), "prober").await;
    // Warm up whatever a first command allocates.
    run_all(
        &mut client,
        vec![json!({"id": 1, "history": {"channel": "warm", "limit": 1}}).to_string()],
    )
    .await;
    let rss_before = server.rss_kib();

    let reads: Vec<String> = (0..60_000u64)
        .map(|n| {
            json!({"id": 10 + n, "history": {"channel": format!("probe-{n}"), "limit": 10}})
                .to_string()
        })
        .collect();
    run_all(&mut client, reads).await;
    // Recoverable subscribe and unsubscribe over 30,000 more names, 100 at
    // a time (within client.channel_limit).
    let mut id = 100_000;
    for round in 0..300 {
        let names: Vec<String> = (0..100).map(|n| format!("churn-{round}-{n}")).collect();
        let subscribes = names.iter().map(|c| {
            id += 1;
            subscribe(id, c)
        });
        let subscribes: Vec<String> = subscribes.collect();
        run_all(&mut client, subscribes).await;
        let unsubscribes = names.iter().map(|c| {
            id += 1;
            json!({"id": id, "unsubscribe": {"channel": c}}).to_string()
        });
        let unsubscribes: Vec<String> = unsubscribes.collect();
        run_all(&mut client, unsubscribes).await;
    }
    assert_eq!(
        server.metric("herald_engine_streams").await,
        0.0,
        "reads created streams"
    );
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB over 60,000 reads and 30,000 subscriptions of fresh names"
    );
    // A publish is what creates a stream.
    let reply = client
        .call(id + 1, &super::publish(id + 1, "probe-7", &json!({"x": 1})))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(server.metric("herald_engine_streams").await, 1.0);
}

#[tokio::test]
async fn the_memory_engine_keeps_at_most_stream_limit_streams_and_tells_subscribers() {
    let server = Server::start(&format!(
        "[engine.memory]\nstream_limit = 64\n{FRESH_NAMES}"
    ))
    .await;
    let mut watcher = Client::connected(server.ws_url(), "watcher").await;
    let reply = watcher.call(1, &subscribe(1, "first")).await;
    assert!(reply.get("error").is_none(), "{reply}");
    let reply = watcher
        .call(2, &super::publish(2, "first", &json!({"n": 1})))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");

    let mut flooder = Client::connected(server.ws_url(), "flooder").await;
    let lines: Vec<String> = (0..300)
        .map(|n| super::publish(10 + n, &format!("flood-{n}"), &json!({"n": n})))
        .collect();
    run_all(&mut flooder, lines).await;
    assert!(
        server.metric("herald_engine_streams").await <= 64.0,
        "{} streams kept",
        server.metric("herald_engine_streams").await
    );
    assert_metric_at_least(&server, "herald_engine_streams_evicted_total", 236.0).await;

    // The subscriber of the evicted "first" was told: unsubscribed with
    // 2500 (insufficient state), so its SDK resubscribes and recovers.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = watcher.next_item().await;
        let line = format!("{line:?}");
        if line.contains("2500") && line.contains("first") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no unsubscribe 2500 for the evicted channel"
        );
    }
}

async fn futures_join<T: Send + 'static>(
    handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}
