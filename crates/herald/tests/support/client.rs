//! A WebSocket client that speaks the JSON wire protocol as raw lines, so the
//! tests read like the wire.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, MaybeTlsStream, WebSocketStream};

use super::token::token;

/// The longest any single expected frame may take to arrive.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One thing the server sent, a line of a text frame at a time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// A reply or a push: a JSON object with at least one key.
    Line(Value),
    /// An app-level server ping: the empty reply `{}`.
    Ping,
    /// A WebSocket close frame (1005 when it carried no code).
    Close(u16, String),
    /// The connection ended or failed without a close frame.
    Gone(String),
}

pub(crate) struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Incoming>,
    ended: Option<Incoming>,
    /// Pushes read past by [`Client::reply_to`] and [`Client::expect_open_for`].
    pub(crate) pushes: Vec<Value>,
    /// Reply and push lines received so far (pings excluded).
    pub(crate) lines_received: usize,
}

impl Client {
    /// Opens the WebSocket (no Origin header, no subprotocol: what SDKs send).
    pub(crate) async fn open(url: &str) -> Client {
        Client::open_inner(url, None).await
    }

    /// Like [`Client::open`], with the TCP receive buffer shrunk before the
    /// connection is made, so a client that stops reading pushes back quickly.
    pub(crate) async fn open_with_recv_buffer(url: &str, bytes: u32) -> Client {
        Client::open_inner(url, Some(bytes)).await
    }

    /// Opens the WebSocket and connects as `user` with a non-expiring token;
    /// panics unless the connect succeeds.
    pub(crate) async fn connected(url: &str, user: &str) -> Client {
        let mut client = Client::open(url).await;
        let reply = client.connect(&token(user)).await;
        assert!(
            reply["connect"]["client"].is_string(),
            "connect as {user:?} failed: {reply}"
        );
        client
    }

    /// Sends `{"id":1,"connect":{"token":...}}` and returns the reply line.
    pub(crate) async fn connect(&mut self, token: &str) -> Value {
        let line = serde_json::json!({ "id": 1, "connect": { "token": token } }).to_string();
        self.call(1, &line).await
    }

    /// Sends one text frame.
    pub(crate) async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        let len = text.len();
        tokio::time::timeout(READ_TIMEOUT, self.ws.send(Message::text(text)))
            .await
            .unwrap_or_else(|_| panic!("sending a {len}-byte frame timed out"))
            .unwrap_or_else(|e| panic!("sending a {len}-byte frame failed: {e}"));
    }

    /// Sends one command (or several, newline-joined) as one text frame.
    pub(crate) async fn send_line(&mut self, json: &str) {
        self.send_text(json).await;
    }

    /// Answers a server ping.
    pub(crate) async fn pong(&mut self) {
        self.send_text("{}").await;
    }

    /// Sends `line` and returns the reply with `id`.
    pub(crate) async fn call(&mut self, id: u64, line: &str) -> Value {
        self.send_line(line).await;
        self.reply_to(id).await
    }

    /// The next thing the server sent, pings and closes included; `None` if
    /// nothing arrived within `wait`.
    pub(crate) async fn next_incoming(&mut self, wait: Duration) -> Option<Incoming> {
        if let Some(item) = self.pending.pop_front() {
            return Some(item);
        }
        if let Some(ended) = &self.ended {
            return Some(ended.clone());
        }
        let deadline = Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(self.end(Incoming::Gone("stream ended".into()))),
                Ok(Some(Err(e))) => return Some(self.end(Incoming::Gone(e.to_string()))),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    let text = text.as_str();
                    let body = text.strip_suffix('\n').unwrap_or(text);
                    for line in body.split('\n') {
                        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                            panic!("server sent a line that is not JSON ({e}): {line:?}")
                        });
                        let item = match value.as_object() {
                            Some(object) if object.is_empty() => Incoming::Ping,
                            Some(_) => {
                                self.lines_received += 1;
                                Incoming::Line(value)
                            }
                            None => panic!("server sent a line that is not an object: {line}"),
                        };
                        self.pending.push_back(item);
                    }
                    if let Some(item) = self.pending.pop_front() {
                        return Some(item);
                    }
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    return Some(self.end(Incoming::Close(code, reason)));
                }
                Message::Binary(bytes) => {
                    panic!(
                        "server sent a binary frame ({} bytes) to a JSON client",
                        bytes.len()
                    )
                }
                // WebSocket-level ping/pong: tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next thing the server sent, within [`READ_TIMEOUT`].
    pub(crate) async fn next_item(&mut self) -> Incoming {
        self.next_incoming(READ_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("nothing from the server within {READ_TIMEOUT:?}"))
    }

    /// The next reply or push line, skipping pings; panics on a close.
    pub(crate) async fn next_reply(&mut self) -> Value {
        loop {
            match self.next_item().await {
                Incoming::Line(value) => return value,
                Incoming::Ping => {}
                other => panic!("expected a reply or push, got {other:?}"),
            }
        }
    }

    /// Reads until the reply with `id`, keeping pushes in [`Client::pushes`];
    /// panics on a reply to another id or a close.
    pub(crate) async fn reply_to(&mut self, id: u64) -> Value {
        loop {
            let line = self.next_reply().await;
            if is_push(&line) {
                self.pushes.push(line);
                continue;
            }
            assert_eq!(
                line["id"].as_u64(),
                Some(id),
                "expected the reply to id {id}, got {line}"
            );
            return line;
        }
    }

    /// Reads (discarding lines and pings) until a close frame arrives within
    /// [`READ_TIMEOUT`]; returns its code and reason.
    pub(crate) async fn expect_close(&mut self) -> (u16, String) {
        self.expect_close_within(READ_TIMEOUT).await
    }

    /// Reads (discarding lines and pings) until a close frame arrives within
    /// `wait`; returns its code and reason.
    pub(crate) async fn expect_close_within(&mut self, wait: Duration) -> (u16, String) {
        let deadline = Instant::now() + wait;
        let mut skipped = 0usize;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_incoming(left).await {
                Some(Incoming::Close(code, reason)) => return (code, reason),
                Some(Incoming::Gone(why)) => panic!(
                    "connection ended without a close frame ({why}) after {skipped} other lines; \
                     last: {last:?}"
                ),
                Some(Incoming::Line(line)) => {
                    skipped += 1;
                    last = Some(line);
                }
                Some(Incoming::Ping) => skipped += 1,
                None => panic!(
                    "no close frame within {wait:?}; {skipped} other lines read, last: {last:?}"
                ),
            }
        }
    }

    /// Stays connected for `wait`, answering pings when `answer_pings`;
    /// panics if the server closes. Returns how many pings arrived. Other
    /// lines go to [`Client::pushes`].
    pub(crate) async fn expect_open_for(&mut self, wait: Duration, answer_pings: bool) -> usize {
        let deadline = Instant::now() + wait;
        let mut pings = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return pings;
            }
            match self.next_incoming(left).await {
                None => return pings,
                Some(Incoming::Ping) => {
                    pings += 1;
                    if answer_pings {
                        self.pong().await;
                    }
                }
                Some(Incoming::Line(line)) => self.pushes.push(line),
                Some(ended) => panic!("expected the connection to stay open, got {ended:?}"),
            }
        }
    }

    async fn open_inner(url: &str, recv_buffer: Option<u32>) -> Client {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not a ws:// url: {url}"));
        let addr = tokio::net::lookup_host(authority)
            .await
            .unwrap_or_else(|e| panic!("cannot resolve {authority}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("{authority} resolves to nothing"));
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("create a TCP socket");
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("set SO_RCVBUF");
        }
        let stream = tokio::time::timeout(READ_TIMEOUT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("TCP connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("TCP connect to {addr} failed: {e}"));
        Client::over(url, MaybeTlsStream::Plain(stream)).await
    }

    /// The WebSocket handshake over a TLS connection already made
    /// (`url` is the `wss://` URL it goes to).
    pub(crate) async fn over_tls(
        url: &str,
        stream: tokio_rustls::client::TlsStream<TcpStream>,
    ) -> Client {
        Client::over(url, MaybeTlsStream::Rustls(stream)).await
    }

    async fn over(url: &str, stream: MaybeTlsStream<TcpStream>) -> Client {
        let (ws, _response) = tokio::time::timeout(READ_TIMEOUT, client_async(url, stream))
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
        Client {
            ws,
            pending: VecDeque::new(),
            ended: None,
            pushes: Vec::new(),
            lines_received: 0,
        }
    }

    fn end(&mut self, item: Incoming) -> Incoming {
        self.ended = Some(match &item {
            Incoming::Close(..) => Incoming::Gone("closed by the server earlier".into()),
            other => other.clone(),
        });
        item
    }
}

/// The error code of an error reply.
pub(crate) fn error_code(reply: &Value) -> Option<u64> {
    reply["error"]["code"].as_u64()
}

pub(crate) fn is_push(line: &Value) -> bool {
    line.get("push").is_some()
}

/// The publication of a `pub` push on `channel`.
pub(crate) fn push_pub<'a>(line: &'a Value, channel: &str) -> Option<&'a Value> {
    let push = line.get("push")?;
    (push["channel"] == channel)
        .then(|| push.get("pub"))
        .flatten()
}
