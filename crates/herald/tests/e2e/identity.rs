//! Connect with an opaque token checked by token introspection (RFC 7662),
//! against an authorization-server double on loopback: the edges a real
//! server will not produce on demand (a slow answer, 503, a revocation at a
//! chosen moment). The real oidc-provider is driven from
//! tests/sdk/js/idp.test.mjs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{error_code, unix_now, Client, Server};

/// What the double answers next: status, JSON body, delay.
type Answer = (u16, Value, Duration);

/// An introspection endpoint that answers every POST with the current
/// `answer` and counts requests.
struct AuthorizationServer {
    url: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl AuthorizationServer {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (current, count) = (answer.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (current, count) = (current.clone(), count.clone());
                tokio::spawn(async move {
                    // Requests are small: one read holds the whole of one.
                    let mut request = vec![0u8; 16 * 1024];
                    if stream.read(&mut request).await.unwrap_or(0) == 0 {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let (status, body, delay) = current.lock().unwrap().clone();
                    tokio::time::sleep(delay).await;
                    let body = body.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            answer,
            requests,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// herald's config: the endpoint, its credentials, scopes to channels.
    fn config(&self, extra: &str) -> String {
        format!(
            "[client]\npresence_update_interval = \"1s\"\n\n\
             [client.introspection]\nendpoint = \"{}\"\nclient_id = \"herald\"\n\
             client_secret = \"e2e-secret\"\ncache_ttl = \"1s\"\n\
             subscribe_scope_prefix = \"herald:sub:\"\n{extra}",
            self.url
        )
    }
}

fn active(client_id: &str, scope: &str) -> Value {
    json!({"active": true, "client_id": client_id, "exp": unix_now() + 3600, "scope": scope})
}

#[tokio::test]
async fn connect_waiting_on_introspection_keeps_later_commands_in_order() {
    let server_answer = (
        200,
        active("svc-a", "herald:sub:news"),
        Duration::from_millis(500),
    );
    let authorization = AuthorizationServer::start(server_answer).await;
    let server = Server::start(&authorization.config("")).await;
    let mut client = Client::open(server.ws_url()).await;

    // One frame: connect with an opaque token, then two subscribes.
    let frame = [
        json!({"id": 1, "connect": {"token": "opaque-token-a"}}),
        json!({"id": 2, "subscribe": {"channel": "news"}}),
        json!({"id": 3, "subscribe": {"channel": "sport"}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    client.send_text(frame).await;
    let replies = [
        client.next_reply().await,
        client.next_reply().await,
        client.next_reply().await,
    ];
    let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3], "replies in command order: {replies:?}");
    assert!(
        replies[0]["connect"]["client"].is_string(),
        "{}",
        replies[0]
    );
    assert_eq!(
        replies[0]["connect"]["expires"],
        json!(true),
        "expires with the token's exp"
    );
    assert!(
        replies[1]["subscribe"].is_object(),
        "news is granted by scope: {}",
        replies[1]
    );
    assert_eq!(
        error_code(&replies[2]),
        Some(103),
        "sport is not granted: {}",
        replies[2]
    );
    assert_eq!(authorization.requests(), 1);
    assert_eq!(
        server
            .metric("herald_auth_introspection_requests_total{result=\"active\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn authorization_server_down_is_a_temporary_refusal() {
    let authorization = AuthorizationServer::start((503, json!({}), Duration::ZERO)).await;
    let server = Server::start(&authorization.config("")).await;
    let mut client = Client::open(server.ws_url()).await;
    let reply = client.connect("opaque-token-b").await;
    assert_eq!(error_code(&reply), Some(100), "{reply}");
    assert_eq!(reply["error"]["temporary"], json!(true), "{reply}");
    // The client retries on a new connection (what SDKs do after an error
    // reply to connect), and gets in once the server answers.
    authorization.set((200, active("svc-b", ""), Duration::ZERO));
    let mut retry = Client::open(server.ws_url()).await;
    let reply = retry.connect("opaque-token-b").await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert_eq!(
        server
            .metric("herald_auth_failures_total{reason=\"unavailable\"}")
            .await,
        1.0
    );

    // An inactive token is invalid, not temporary: 3500, terminal.
    authorization.set((200, json!({"active": false}), Duration::ZERO));
    let mut other = Client::open(server.ws_url()).await;
    other
        .send_line(&json!({"id": 1, "connect": {"token": "opaque-token-c"}}).to_string())
        .await;
    assert_eq!(other.expect_close().await.0, 3500);
}

#[tokio::test]
async fn revocation_at_the_authorization_server_closes_the_connection() {
    let authorization =
        AuthorizationServer::start((200, active("svc-c", ""), Duration::ZERO)).await;
    let server = Server::start(&authorization.config("")).await;
    let mut revoked = Client::open(server.ws_url()).await;
    let reply = revoked.connect("opaque-token-d").await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");

    // While the server is unreachable the connection lives on.
    authorization.set((503, json!({}), Duration::ZERO));
    // (expect_open_for panics if the server closes.)
    revoked
        .expect_open_for(Duration::from_millis(2_500), true)
        .await;
    let asked_while_down = authorization.requests();
    assert!(
        asked_while_down >= 2,
        "re-checked while down: {asked_while_down} requests"
    );

    // Revoked: closed with 3500 within a re-check or two.
    authorization.set((200, json!({"active": false}), Duration::ZERO));
    let (code, _) = revoked.expect_close_within(Duration::from_secs(5)).await;
    assert_eq!(code, 3500);
}
