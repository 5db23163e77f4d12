//! Subscribers over the HTTP transports (`--transport`): bidirectional
//! emulation over HTTP-streaming (`http_stream`) and SSE (`sse`), whose
//! first request carries the connect and subscribe commands and whose pongs
//! go by `POST /emulation`; and unidirectional SSE (`uni_sse`), subscribed
//! on the server's side by the token's `channels` claim. JSON only. Each
//! line of a stream is read by `wire::read_json_line`, as the lines of a
//! WebSocket message are.

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::ValueEnum;
use herald_protocol::{Command, ConnectRequest, Method, SubscribeRequest};
use reqwest::Url;

use crate::wire::{self, Received};

/// The transport of the subscribers (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum Transport {
    Websocket,
    HttpStream,
    Sse,
    UniSse,
}

impl Transport {
    /// True when the server subscribes the connection to the channels its
    /// token names, rather than the client asking.
    pub(crate) fn subscribes_by_token(self) -> bool {
        self == Transport::UniSse
    }

    fn path(self) -> &'static str {
        match self {
            Transport::Websocket => "/connection/websocket",
            Transport::HttpStream => "/connection/http_stream",
            Transport::Sse => "/connection/sse",
            Transport::UniSse => "/connection/uni_sse",
        }
    }
}

/// The HTTP client every stream and pong goes through, made once by `init`.
static HTTP: OnceLock<reqwest::Client> = OnceLock::new();

/// Makes the HTTP client; `tls` is the `--ca-file` configuration (the
/// system roots otherwise).
pub(crate) fn init(tls: Option<&Arc<rustls::ClientConfig>>) -> anyhow::Result<()> {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(tls));
    }
    let _ = HTTP.set(builder.build()?);
    Ok(())
}

/// One subscriber's stream, connected and subscribed.
pub(crate) struct StreamClient {
    response: reqwest::Response,
    sse: bool,
    /// What was read and not handed out yet, from `read` on.
    buffer: Vec<u8>,
    read: usize,
    /// Where pongs go: bidirectional emulation only.
    pong: Option<Pong>,
}

/// Opens a `transport` stream on the host of `ws_url` with `token`,
/// subscribed to `channels` (by commands, or by the token for `uni_sse`).
pub(crate) async fn open(
    transport: Transport,
    ws_url: &str,
    token: &str,
    channels: &[String],
) -> anyhow::Result<StreamClient> {
    let http = HTTP
        .get()
        .ok_or_else(|| anyhow!("the HTTP client was not made"))?;
    let mut url = http_url(ws_url, transport.path())?;
    let request = match transport {
        Transport::HttpStream => http.post(url).body(commands(token, channels)),
        Transport::Sse => {
            url.query_pairs_mut()
                .append_pair("cf_connect", &commands(token, channels));
            http.get(url)
        }
        Transport::UniSse => {
            let connect = serde_json::json!({ "token": token }).to_string();
            url.query_pairs_mut().append_pair("cf_connect", &connect);
            http.get(url)
        }
        Transport::Websocket => bail!("a WebSocket is not a stream"),
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("{} to {ws_url}", transport.path()))?
        .error_for_status()?;
    let mut client = StreamClient {
        response,
        sse: transport != Transport::HttpStream,
        buffer: Vec::new(),
        read: 0,
        pong: None,
    };
    let answers = if transport.subscribes_by_token() {
        0
    } else {
        1 + channels.len()
    };
    let session = tokio::time::timeout(Duration::from_secs(30), client.handshake(answers))
        .await
        .map_err(|_| anyhow!("no connect within 30s"))??;
    if let Some((session, node)) = session {
        let body = serde_json::json!({ "session": session, "node": node, "data": "{}" });
        client.pong = Some(Pong {
            url: http_url(ws_url, "/emulation")?,
            body: body.to_string(),
        });
    }
    Ok(client)
}

impl StreamClient {
    /// Reads what the server sent next: the time it was read (bench
    /// microseconds) and what it held; its pings are answered. None at the
    /// end of the stream. Cancel-safe: nothing read is lost.
    pub(crate) async fn next(&mut self) -> Option<anyhow::Result<(u64, Received)>> {
        loop {
            if self.has_line() {
                let at = crate::now_micros();
                let mut received = Received::default();
                while let Some(line) = self.next_line() {
                    if let Some(text) = event(&self.buffer[line], self.sse) {
                        wire::read_json_line(text, &mut received);
                    }
                }
                self.answer(received.pings);
                return Some(Ok((at, received)));
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads up to the answers to the first `answers` commands, or to the
    /// connect push when `answers` is 0 (unidirectional). The session and
    /// node of the connect result, when there is one.
    async fn handshake(&mut self, answers: usize) -> anyhow::Result<Option<(String, String)>> {
        let mut session = None;
        let mut answered = 0;
        loop {
            let Some(line) = self.next_line() else {
                if !self.fill().await? {
                    bail!("the stream ended during the connect");
                }
                continue;
            };
            let Some(text) = event(&self.buffer[line], self.sse) else {
                continue;
            };
            let value: serde_json::Value =
                serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))?;
            if let Some(disconnect) = value
                .get("disconnect")
                .or_else(|| value.pointer("/push/disconnect"))
            {
                bail!("disconnected: {disconnect}");
            }
            if answers == 0 && value.get("connect").is_some() {
                return Ok(None);
            }
            let id = value.get("id").and_then(serde_json::Value::as_u64);
            let Some(id) = id.filter(|id| *id > 0) else {
                continue;
            };
            if let Some(error) = value.get("error") {
                bail!("command {id} failed: {error}");
            }
            if id == 1 {
                session = Some(session_of(&value)?);
            }
            answered += 1;
            if answered == answers {
                return Ok(session);
            }
        }
    }

    fn has_line(&self) -> bool {
        self.buffer[self.read..].contains(&b'\n')
    }

    /// The next complete line in the buffer, without its `\n`.
    fn next_line(&mut self) -> Option<Range<usize>> {
        let length = self.buffer[self.read..].iter().position(|b| *b == b'\n')?;
        let line = self.read..self.read + length;
        self.read += length + 1;
        Some(line)
    }

    /// Reads one more chunk of the body; false at its end.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.buffer.drain(..self.read);
        self.read = 0;
        let Some(chunk) = self.response.chunk().await? else {
            return Ok(false);
        };
        self.buffer.extend_from_slice(&chunk);
        Ok(true)
    }

    /// Sends a pong per ping, each by its own `POST /emulation` so reading
    /// goes on. A pong that fails is not counted here: the server then
    /// ends the stream, which counts as an error.
    fn answer(&self, pings: usize) {
        let (Some(pong), Some(http)) = (&self.pong, HTTP.get()) else {
            return;
        };
        for _ in 0..pings {
            let request = http.post(pong.url.clone()).body(pong.body.clone());
            tokio::spawn(request.send());
        }
    }
}

/// A pong's request: `{"session","node","data":"{}"}` to `/emulation`.
struct Pong {
    url: Url,
    body: String,
}

/// The HTTP URL of `path` on the host and port of a `ws://` or `wss://` URL.
fn http_url(ws_url: &str, path: &str) -> anyhow::Result<Url> {
    let mut url = Url::parse(ws_url).with_context(|| format!("parse {ws_url}"))?;
    let scheme = match url.scheme() {
        "ws" => "http",
        "wss" => "https",
        other => bail!("--url must be ws:// or wss://, not {other}://"),
    };
    url.set_scheme(scheme)
        .map_err(|()| anyhow!("cannot make {ws_url} an {scheme} URL"))?;
    url.set_path(path);
    url.set_query(None);
    Ok(url)
}

/// The first commands of an emulated connection, one JSON command a line:
/// connect (id 1), then a subscribe per channel.
fn commands(token: &str, channels: &[String]) -> String {
    let connect = Command {
        id: 1,
        method: Method::Connect(ConnectRequest {
            token: token.to_owned(),
            ..Default::default()
        }),
    };
    let subscribes = channels.iter().zip(2..).map(|(channel, id)| Command {
        id,
        method: Method::Subscribe(SubscribeRequest {
            channel: channel.clone(),
            ..Default::default()
        }),
    });
    std::iter::once(connect)
        .chain(subscribes)
        .map(|command| String::from_utf8_lossy(&command.encode()).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The session and node of a connect reply.
fn session_of(reply: &serde_json::Value) -> anyhow::Result<(String, String)> {
    let field = |name: &str| {
        reply
            .pointer(&format!("/connect/{name}"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the connect reply has no {name}: {reply}"))
    };
    Ok((field("session")?, field("node")?))
}

/// The JSON text a line carries: the line itself on HTTP-streaming, the
/// `data:` field on SSE (the opening `\r\n`, blank lines and other fields
/// carry nothing here).
fn event(line: &[u8], sse: bool) -> Option<&str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = if sse {
        let data = line.strip_prefix(b"data:")?;
        data.strip_prefix(b" ").unwrap_or(data)
    } else {
        line
    };
    std::str::from_utf8(text).ok().filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_json_on_each_framing() {
        for (line, sse, want) in [
            (&b"{\"id\":1}"[..], false, Some("{\"id\":1}")),
            (b"", false, None),
            (b"\r", true, None),
            (b"", true, None),
            (b"data: {}", true, Some("{}")),
            (b"data:{}", true, Some("{}")),
            (b"event: x", true, None),
        ] {
            assert_eq!(event(line, sse), want, "{line:?}");
        }
    }

    #[test]
    fn urls_follow_the_websocket_url() {
        let url = http_url("ws://127.0.0.1:8000/connection/websocket", "/emulation").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8000/emulation");
        let url = http_url("wss://h:1/x?y=1", "/connection/sse").unwrap();
        assert_eq!(url.as_str(), "https://h:1/connection/sse");
        assert!(http_url("http://h/", "/x").is_err());
    }

    #[test]
    fn the_first_commands_are_connect_then_subscribes() {
        let text = commands("T", &["a".into(), "b".into()]);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], 1);
        assert_eq!(lines[0]["connect"]["token"], "T");
        assert_eq!(lines[1]["id"], 2);
        assert_eq!(lines[1]["subscribe"]["channel"], "a");
        assert_eq!(lines[2]["id"], 3);
        assert_eq!(lines[2]["subscribe"]["channel"], "b");
    }
}
