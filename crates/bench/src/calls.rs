//! Round trips on open connections, for the proxy scenarios: `rpc` (client
//! `rpc` calls, answered by herald's RPC proxy) and `subscribe` (a subscribe
//! and its unsubscribe, timed from the subscribe to its answer), and
//! `backend` (the same calls' HTTP requests straight to the backend, without
//! herald, to tell the backend's share from herald's).
//!
//! Each connection keeps `--window` operations in flight and sends the next
//! one as an answer comes. An operation's latency is from its send to its
//! first command's answer; operations sent before `measure_from` are warm-up.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_protocol::UnsubscribeRequest;
use herald_protocol::{Command, Format, Method, RawJson, RpcRequest, SubscribeRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{disconnects, now_micros, wire, Ws};

/// What one connection's loop did in the measured window.
pub(crate) struct Outcome {
    pub(crate) histogram: Histogram<u64>,
    /// Operations answered without an error, sent after `measure_from`.
    pub(crate) done: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            done: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, sent: u64, now: u64, measure_from: u64) {
        if sent >= measure_from {
            self.done += 1;
            let _ = self.histogram.record(now.saturating_sub(sent).max(1));
        }
    }

    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// What an operation is: its commands, the first one timed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `rpc` of `method` with `data`.
    Rpc { method: String, data: String },
    /// Subscribe to a channel named from `prefix`, the connection and the
    /// operation's number (a new channel each time), then unsubscribe.
    Subscribe { prefix: String },
}

impl Op {
    /// The commands of operation `n` of connection `conn`.
    pub(crate) fn methods(&self, conn: usize, n: u64) -> anyhow::Result<Vec<Method>> {
        Ok(match self {
            Op::Rpc { method, data } => vec![Method::Rpc(RpcRequest {
                method: method.clone(),
                data: Some(RawJson::from_str(data)?),
            })],
            Op::Subscribe { prefix } => {
                let channel = format!("{prefix}-{conn}-{n}");
                vec![
                    Method::Subscribe(SubscribeRequest {
                        channel: channel.clone(),
                        ..Default::default()
                    }),
                    Method::Unsubscribe(UnsubscribeRequest { channel }),
                ]
            }
        })
    }
}

/// Runs `op` on `ws` with `window` in flight until `until` (bench
/// microseconds), recording what was sent from `measure_from` on.
pub(crate) async fn drive(
    mut ws: Ws,
    format: Format,
    conn: usize,
    op: &Op,
    window: usize,
    measure_from: u64,
    until: u64,
) -> Outcome {
    let mut outcome = Outcome::new();
    // Timed command id -> send time; the others' ids are only checked for errors.
    let mut timed: HashMap<u32, u64> = HashMap::new();
    let mut next_id: u32 = 1000;
    let mut n: u64 = 0;
    for _ in 0..window.max(1) {
        if let Err(e) = send_op(&mut ws, format, conn, op, &mut n, &mut next_id, &mut timed).await {
            outcome.fail(e.to_string());
            return outcome;
        }
    }
    while !timed.is_empty() {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        let message = match next {
            Ok(Some(Ok(Message::Close(frame)))) => {
                disconnects::record(&wire::closed(frame.as_ref()));
                outcome.fail(format!("closed: {frame:?}"));
                break;
            }
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => {
                disconnects::record(&disconnects::Ended::Io(e.to_string()));
                outcome.fail(e.to_string());
                break;
            }
            Ok(None) => {
                disconnects::record(&disconnects::Ended::Eof);
                outcome.fail("connection closed".into());
                break;
            }
            Err(_) => {
                outcome.fail("no answer within 10 s".into());
                break;
            }
        };
        let now = now_micros();
        let received = wire::read(format, &message);
        for _ in 0..received.pings {
            let _ = ws.send(wire::pong(format)).await;
        }
        for (id, error) in received.answers {
            let sent = timed.remove(&id);
            if let Some(error) = error {
                outcome.fail(format!("command {id}: {error}"));
            } else if let Some(sent) = sent {
                outcome.record(sent, now, measure_from);
            }
            if sent.is_some() && now < until {
                let sent = send_op(&mut ws, format, conn, op, &mut n, &mut next_id, &mut timed);
                if let Err(e) = sent.await {
                    outcome.fail(e.to_string());
                    return outcome;
                }
            }
        }
    }
    let _ = ws.close(None).await;
    outcome
}

async fn send_op(
    ws: &mut Ws,
    format: Format,
    conn: usize,
    op: &Op,
    n: &mut u64,
    next_id: &mut u32,
    timed: &mut HashMap<u32, u64>,
) -> anyhow::Result<()> {
    let methods = op.methods(conn, *n)?;
    *n += 1;
    let sent = now_micros();
    for (i, method) in methods.into_iter().enumerate() {
        let id = *next_id;
        *next_id += 1;
        if i == 0 {
            timed.insert(id, sent);
        }
        ws.feed(wire::command(format, &Command { id, method }))
            .await?;
    }
    ws.flush().await?;
    Ok(())
}

/// A keep-alive HTTP/1.1 connection POSTing one body to one path: the
/// backend alone, as herald would call it.
pub(crate) struct Poster {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl Poster {
    /// A poster to `url` (`http://host:port/path`) sending `body` with
    /// `headers` (`Name: value` lines).
    pub(crate) async fn connect(url: &str, body: &str, headers: &[String]) -> anyhow::Result<Self> {
        let (host, path) = split_http_url(url)?;
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("connect to {host}"))?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        Ok(Self {
            stream: BufReader::new(stream),
            request: request.into_bytes(),
        })
    }

    /// Sends the request and reads the answer; an error unless HTTP 200.
    pub(crate) async fn post(&mut self) -> anyhow::Result<()> {
        self.stream.get_mut().write_all(&self.request).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if self.stream.read_line(&mut header).await? == 0 {
                bail!("connection closed in the answer's head");
            }
            if let Some(value) = content_length(&header) {
                length = value;
            }
            if header.trim_end().is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        if status_code(&status) != Some(200) {
            bail!("{}", status.trim_end());
        }
        Ok(())
    }
}

/// POSTs back-to-back on `poster` until `until`, timing each.
pub(crate) async fn drive_http(mut poster: Poster, measure_from: u64, until: u64) -> Outcome {
    let mut outcome = Outcome::new();
    while now_micros() < until {
        let sent = now_micros();
        match poster.post().await {
            Ok(()) => outcome.record(sent, now_micros(), measure_from),
            Err(e) => {
                outcome.fail(e.to_string());
                break;
            }
        }
    }
    outcome
}

/// (`host:port`, `/path`) of an `http://` URL.
fn split_http_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("want an http:// URL, got {url}"))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

/// The code of an HTTP status line.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// The value of a `Content-Length` header line.
fn content_length(line: &str) -> Option<usize> {
    let (name, value) = line.split_once(':')?;
    name.trim()
        .eq_ignore_ascii_case("content-length")
        .then(|| value.trim().parse().ok())
        .flatten()
}

/// Microseconds of CPU per operation, to two decimals.
pub(crate) fn per_op(cpu_micros: u64, ops: u64) -> f64 {
    (cpu_micros as f64 / ops.max(1) as f64 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_is_split_into_host_and_path() {
        assert_eq!(
            split_http_url("http://127.0.0.1:8080/rpc?x=1").unwrap(),
            ("127.0.0.1:8080", "/rpc?x=1")
        );
        assert_eq!(split_http_url("http://h:1").unwrap(), ("h:1", "/"));
        assert!(split_http_url("https://h/rpc").is_err());
    }

    #[test]
    fn status_and_length_are_read_from_their_lines() {
        assert_eq!(status_code("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code("HTTP/1.1 500 Internal Server Error\r\n"),
            Some(500)
        );
        assert_eq!(status_code("garbage"), None);
        assert_eq!(content_length("Content-Length: 42\r\n"), Some(42));
        assert_eq!(content_length("content-length:7"), Some(7));
        assert_eq!(content_length("Content-Type: application/json\r\n"), None);
        assert_eq!(content_length("Content-Length: x\r\n"), None);
    }

    #[test]
    fn cpu_per_op_rounds_and_survives_zero() {
        assert_eq!(per_op(1_000_000, 3), 333_333.33);
        assert_eq!(per_op(500, 0), 500.0);
    }

    #[test]
    fn subscribe_op_uses_a_new_channel_and_unsubscribes_it() {
        let op = Op::Subscribe {
            prefix: "sp:b".into(),
        };
        let methods = op.methods(3, 7).unwrap();
        assert_eq!(
            methods,
            vec![
                Method::Subscribe(SubscribeRequest {
                    channel: "sp:b-3-7".into(),
                    ..Default::default()
                }),
                Method::Unsubscribe(UnsubscribeRequest {
                    channel: "sp:b-3-7".into()
                }),
            ]
        );
        let rpc = Op::Rpc {
            method: "echo".into(),
            data: "{\"a\":1}".into(),
        };
        assert_eq!(rpc.methods(0, 0).unwrap().len(), 1);
    }

    #[test]
    fn outcome_records_only_the_measured_window() {
        let mut outcome = Outcome::new();
        outcome.record(5, 105, 10);
        outcome.record(20, 320, 10);
        assert_eq!(outcome.done, 1);
        assert_eq!(outcome.histogram.max(), 300);
    }
}
