//! herald-bench: a load generator speaking the client protocol (JSON or
//! protobuf over WebSocket, `--format`) to herald, with HS256 tokens minted
//! from `--secret` (or ES256 ones from `--es256-key`). The subscribers of
//! `fanout` and `idle` may instead use an HTTP transport (`--transport`,
//! stream.rs).
//!
//! Scenarios:
//! - `fanout`: S subscribers on one channel, publications at rate R;
//! - `channels`: C channels × S subscribers, publications spread over them;
//! - `connect`: a connection storm (connect with token verification plus the
//!   first subscribe), connects per second and failures;
//! - `idle`: N idle subscribed connections held for the duration, server RSS
//!   per connection when `--server-pid` is given;
//! - `cluster`: fanout with subscribers spread over several `--url`s;
//! - `rpc`: `--subscribers` connections each keeping `--window` client `rpc`
//!   calls (`--rpc-method`, answered by herald's RPC proxy) in flight, round
//!   trips per second and their latency;
//! - `subscribe`: the same with subscribes, each to a new channel of
//!   `--channel` (a namespace's prefix, e.g. `sp:b`) and unsubscribed at once,
//!   timed from the subscribe to its answer;
//! - `backend`: the RPC proxy's requests POSTed straight to the backend
//!   (`--url http://…/rpc`) on `--subscribers` keep-alive connections: the
//!   backend's share of an `rpc` round trip, without herald;
//! - `document`: fanout of a ~2 KB JSON document of which ~1% changes per
//!   publication (docs/benchmarks.md uses 2,000 subscribers); with `--delta`
//!   the subscribers negotiate fossil delta compression and apply every
//!   delta, and the report adds the WebSocket payload bytes per delivery;
//! - `hold`: connections held for the duration that reconnect like
//!   centrifuge-js (its backoff, `recover: true` from their position),
//!   optional publications through the API, `--churn`, and a check of every
//!   offset received (gaps, duplicates, reorders) (hold.rs).
//!
//! Every connection answers the server's pings, from its connect to its
//! close (while the others open too). A connection that ends does not end
//! the run: the summary's `disconnects` counts them by close code (or
//! `io`, `eof`, `churn`) with a reason, `disconnects_total` sums them; a
//! client publisher that is closed reconnects. `--processes N` spreads the
//! connections over N worker processes and prints one merged summary
//! (workers.rs).
//!
//! `--compression` makes every WebSocket client offer permessage-deflate
//! and inflate what the server compresses (deflate.rs); every report of a
//! publishing scenario says how many WebSocket bytes the clients read per
//! delivery, with or without it.
//!
//! `--auth proxy` connects without a token and with a `Cookie:
//! session=bench-<i>` upgrade header, for herald's connect proxy to answer.
//! `--server-pid` and `--backend-pid` add the CPU each used per operation.
//!
//! Publications go through a subscribed client, or through `POST
//! /api/publish` with `--api-key`. Each carries its send time; receivers
//! record publish→receive latency in an HDR histogram. The last stdout line
//! is one JSON object (interface.md).

mod calls;
mod deflate;
mod disconnects;
mod hold;
mod stream;
mod wire;
mod workers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_protocol::{
    Command, ConnectRequest, Format, Method, PublishRequest, RawJson, SubscribeRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stream::Transport;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<deflate::Wire>>;

/// `--compression`: WebSocket clients offer permessage-deflate.
static COMPRESSION: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Fanout,
    Channels,
    Connect,
    Idle,
    Cluster,
    Rpc,
    Subscribe,
    Backend,
    Document,
    Hold,
}

/// How WebSocket clients authenticate (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthArg {
    /// A connection token (HS256 with `--secret`, or ES256 with `--es256-key`).
    Jwt,
    /// No token, a `Cookie: session=bench-<i>` header on the upgrade: herald's
    /// connect proxy asks the backend.
    Proxy,
}

/// The format clients speak (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Json,
    Protobuf,
    /// Subscribers alternate JSON and protobuf; the publisher speaks JSON.
    Mixed,
}

impl FormatArg {
    /// The format of subscriber `i`.
    fn subscriber(self, i: usize) -> Format {
        match self {
            FormatArg::Json => Format::Json,
            FormatArg::Protobuf => Format::Protobuf,
            FormatArg::Mixed if i % 2 == 1 => Format::Protobuf,
            FormatArg::Mixed => Format::Json,
        }
    }

    fn publisher(self) -> Format {
        match self {
            FormatArg::Protobuf => Format::Protobuf,
            FormatArg::Json | FormatArg::Mixed => Format::Json,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "herald-bench", about = "Load generator for herald")]
struct Args {
    scenario: Scenario,
    /// WebSocket endpoint, e.g. ws://127.0.0.1:8000/connection/websocket;
    /// repeat for `cluster`.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// HMAC secret the server verifies connection tokens with.
    #[arg(long)]
    secret: String,
    /// Sign connection tokens ES256 with this P-256 private key (PEM)
    /// instead of HS256 with `--secret`.
    #[arg(long)]
    es256_key: Option<std::path::PathBuf>,
    /// Subscribers (per channel for `channels`); connections for `connect`,
    /// `idle`, `rpc`, `subscribe` and `backend`.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Channels of the `channels` and `hold` scenarios.
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// The channel; for `subscribe`, the prefix of its channels (`ns:name`).
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Publications per second (all channels together).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long to publish (or hold, for `idle`).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Publication size in bytes (JSON).
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Publish through POST /api/publish with this key instead of a client.
    #[arg(long)]
    api_key: Option<String>,
    /// Server process whose RSS is read from /proc (idle scenario).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Publishing before measurement starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// PEM file of the CA that signed the server's certificate, for
    /// `wss://` URLs (the system roots otherwise).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// The client protocol's format: json, protobuf, or mixed (subscribers
    /// alternate, the publisher speaks JSON).
    #[arg(long, value_enum, default_value = "json")]
    format: FormatArg,
    /// The subscribers' transport: websocket, or (fanout and idle only,
    /// JSON) http_stream or sse (bidirectional emulation: connect and
    /// subscribe in the first request, pongs by POST /emulation), or uni_sse
    /// (subscribed by the token's `channels` claim). Endpoints on --url's
    /// host and port; the publisher stays a WebSocket client (or the API).
    #[arg(long, value_enum, default_value = "websocket")]
    transport: Transport,
    /// How clients authenticate: jwt, or proxy (no token, a session cookie
    /// for the connect proxy; WebSocket only).
    #[arg(long, value_enum, default_value = "jwt")]
    auth: AuthArg,
    /// Operations each connection keeps in flight (`rpc`, `subscribe`).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// The method of `rpc` calls.
    #[arg(long, default_value = "echo")]
    rpc_method: String,
    /// The backend's process, whose CPU is read from /proc like --server-pid's.
    #[arg(long)]
    backend_pid: Option<u32>,
    /// Subscribers negotiate delta compression (`delta: "fossil"`) and
    /// publications through the API ask for it (`delta: true`); a client
    /// publisher needs the namespace's `delta_publish`.
    #[arg(long)]
    delta: bool,
    /// Every WebSocket client (subscribers and publisher, every scenario)
    /// offers permessage-deflate and inflates the compressed messages it
    /// gets; the run fails if the server does not negotiate it. ws:// only.
    #[arg(long)]
    compression: bool,
    /// Spread the connections over this many processes (each process is
    /// limited in open files): fanout, channels, document, connect, idle,
    /// cluster and hold. The summary merges theirs.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// `hold`: the percentage of the connections the bench itself closes
    /// per minute (spread evenly), each reconnecting as after any close.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// A worker of `--processes`: its index and the number of workers (I/N).
    #[arg(long, hide = true, value_parser = workers::parse_worker)]
    worker: Option<(usize, usize)>,
    /// A worker's clock zero (Unix microseconds), shared by all workers.
    #[arg(long, hide = true, default_value_t = 0)]
    epoch: u64,
}

/// How subscribers ask for publications to be encoded on the wire (more
/// such switches, e.g. permessage-deflate, belong here).
#[derive(Debug, Clone, Copy, Default)]
struct Encoding {
    /// `delta: "fossil"` on every subscribe.
    delta: bool,
}

impl Encoding {
    fn from_args(args: &Args) -> Self {
        Self { delta: args.delta }
    }

    /// The report's fields that say how the run was encoded.
    fn describe(self, extra: &mut serde_json::Map<String, serde_json::Value>) {
        extra.insert("delta".into(), self.delta.into());
    }
}

impl Args {
    /// Why `--transport` cannot serve this run, if it cannot.
    fn transport_conflict(&self) -> Option<String> {
        if self.compression && self.url.iter().any(|u| u.starts_with("wss:")) {
            return Some("--compression works with ws:// URLs only".into());
        }
        if self.auth == AuthArg::Proxy && self.transport != Transport::Websocket {
            return Some("--auth proxy works with --transport websocket only".into());
        }
        if self.transport == Transport::Websocket {
            return None;
        }
        let name = label(self.transport);
        if !matches!(self.scenario, Scenario::Fanout | Scenario::Idle) {
            return Some(format!(
                "--transport {name} works with the fanout and idle scenarios only"
            ));
        }
        (self.format != FormatArg::Json)
            .then(|| format!("--transport {name} speaks JSON only (drop --format)"))
    }
}

/// The command-line name of a value.
fn label(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// How `wss://` and `https://` connections verify the server (`--ca-file`).
static TLS: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();

fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    use rustls::pki_types::pem::PemObject;
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("read {}", path.display()))?
    {
        roots.add(cert.with_context(|| format!("parse {}", path.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// `--epoch` (Unix microseconds): the zero of the bench clock shared by the
/// workers of `--processes`; 0 = this process's start.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Microseconds since the bench started (since `--epoch` in a worker): the
/// clock of send timestamps.
pub(crate) fn now_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(|| {
        let epoch = EPOCH.load(Ordering::Relaxed);
        let now = Instant::now();
        let since = workers::unix_micros().saturating_sub(epoch);
        if epoch == 0 {
            now
        } else {
            now.checked_sub(Duration::from_micros(since)).unwrap_or(now)
        }
    });
    start.elapsed().as_micros() as u64
}

/// How connection tokens are signed: HS256 with `--secret`, or ES256 with
/// `--es256-key`.
#[derive(Clone)]
struct Signer {
    alg: jsonwebtoken::Algorithm,
    key: jsonwebtoken::EncodingKey,
}

impl Signer {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        Ok(match &args.es256_key {
            Some(path) => Self {
                alg: jsonwebtoken::Algorithm::ES256,
                key: jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(path)?)?,
            },
            None => Self {
                alg: jsonwebtoken::Algorithm::HS256,
                key: jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes()),
            },
        })
    }

    /// A connection token; `channels` non-empty adds the `channels` claim
    /// (server-side subscriptions).
    fn token(&self, user: &str, channels: &[String]) -> anyhow::Result<String> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 24 * 3600;
        let mut claims = serde_json::json!({ "sub": user, "exp": exp });
        if !channels.is_empty() {
            claims["channels"] = channels.into();
        }
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(self.alg),
            &claims,
            &self.key,
        )?)
    }
}

/// What every receiver adds up.
#[derive(Default)]
struct Counters {
    errors: AtomicU64,
    published: AtomicU64,
}

struct Receiver {
    histogram: Histogram<u64>,
    deliveries: u64,
    /// WebSocket payload bytes of the messages that carried measured deliveries.
    bytes: u64,
    /// A delta subscriber's last publication: the base of the next delta.
    held: Vec<u8>,
}

/// Connects, authenticates and subscribes to `channels`, in `format`.
async fn open_client(
    url: &str,
    token: &str,
    cookie: Option<&str>,
    channels: &[String],
    format: Format,
    encoding: Encoding,
) -> anyhow::Result<Ws> {
    let mut ws = connect_ws(url, cookie, format).await?;
    let connect = Command {
        id: 1,
        method: Method::Connect(ConnectRequest {
            token: token.to_owned(),
            ..Default::default()
        }),
    };
    ws.send(wire::command(format, &connect)).await?;
    await_reply(&mut ws, 1, format).await?;
    for (i, channel) in channels.iter().enumerate() {
        let id = 2 + i as u32;
        let subscribe = Command {
            id,
            method: Method::Subscribe(SubscribeRequest {
                channel: channel.clone(),
                delta: if encoding.delta {
                    "fossil".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
        };
        ws.send(wire::command(format, &subscribe)).await?;
        await_reply(&mut ws, id, format).await?;
    }
    Ok(ws)
}

/// A WebSocket to `url` speaking `format` (`--compression` and `--ca-file`
/// applied), before any command.
async fn connect_ws(url: &str, cookie: Option<&str>, format: Format) -> anyhow::Result<Ws> {
    let connector = TLS
        .get()
        .cloned()
        .flatten()
        .map(tokio_tungstenite::Connector::Rustls);
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(wire::subprotocol(format)),
    );
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(cookie)?);
    }
    let compression = COMPRESSION.load(Ordering::Relaxed);
    if compression {
        request.headers_mut().insert(
            "sec-websocket-extensions",
            HeaderValue::from_static(deflate::OFFER),
        );
    }
    let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if url.starts_with("wss:") { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connect to {url}"))?;
    tcp.set_nodelay(true)?;
    let stream = deflate::Wire::new(tcp, compression);
    let (ws, response) =
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, connector)
            .await
            .with_context(|| format!("connect to {url}"))?;
    if compression
        && !response
            .headers()
            .get("sec-websocket-extensions")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("permessage-deflate"))
    {
        bail!("{url} did not negotiate permessage-deflate (websocket.compression off?)");
    }
    Ok(ws)
}

async fn await_reply(ws: &mut Ws, id: u32, format: Format) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no reply to command {id} within 30s"))?
            .ok_or_else(|| anyhow!("connection closed before reply {id}"))??;
        if let Message::Close(frame) = message {
            bail!("closed: {frame:?}");
        }
        let received = wire::read(format, &message);
        for _ in 0..received.pings {
            ws.send(wire::pong(format)).await?;
        }
        if let Some((_, error)) = received.answers.into_iter().find(|(got, _)| *got == id) {
            if let Some(error) = error {
                bail!("command {id} failed: {error}");
            }
            return Ok(());
        }
    }
}

/// Publications stamped before this (bench microseconds) are warm-up: not
/// counted or recorded.
static MEASURE_FROM: AtomicU64 = AtomicU64::new(u64::MAX);

/// Reads until `stop`, recording the latency of every measured
/// publication and answering every ping. A connection that ends is counted
/// in `disconnects` (and `errors` before `stop`); the others go on.
async fn receive(mut client: Client, stop: Arc<AtomicBool>, counters: Arc<Counters>) -> Receiver {
    let mut receiver = Receiver {
        histogram: workers::new_histogram(),
        deliveries: 0,
        bytes: 0,
        held: Vec::new(),
    };
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), client.next()).await;
        let ended = match next {
            Ok(Some(Ok((now, received)))) => {
                client.answer(received.pings).await;
                let ended = receiver.take(now, received, &counters);
                if ended.is_none() {
                    continue;
                }
                ended
            }
            Ok(Some(Err(e))) => Some(disconnects::Ended::Io(format!("{e:#}"))),
            Ok(None) => Some(disconnects::Ended::Eof),
            Err(_) if stop.load(Ordering::Relaxed) => None,
            Err(_) => continue,
        };
        if let Some(ended) = ended {
            disconnects::record(&ended);
            if !stop.load(Ordering::Relaxed) {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        break;
    }
    client.close().await;
    receiver
}

impl Receiver {
    /// Records the measured deliveries of what was read at `now`; returns
    /// how the connection ended if the message says it did.
    fn take(
        &mut self,
        now: u64,
        received: wire::Received,
        counters: &Counters,
    ) -> Option<disconnects::Ended> {
        let mut stamps = received.stamps;
        for (is_delta, data) in received.payloads {
            let document = if is_delta {
                match herald_fossil::decode(&self.held, &data) {
                    Ok(document) => document,
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            } else {
                data
            };
            if let Ok(stamp) = serde_json::from_slice::<wire::Stamp>(&document) {
                stamps.push(stamp.t);
            }
            self.held = document;
        }
        let measure_from = MEASURE_FROM.load(Ordering::Relaxed);
        let measured = stamps.iter().filter(|s| **s >= measure_from).count() as u64;
        if measured > 0 {
            self.bytes += received.bytes as u64;
        }
        self.deliveries += measured;
        for stamp in stamps.into_iter().filter(|s| *s >= measure_from) {
            let _ = self.histogram.record(now.saturating_sub(stamp).max(1));
        }
        received.ended
    }
}

/// The `document` scenario's JSON document: `FIELDS` string fields of
/// `FIELD_LEN` characters (~2 KB in all); each version rewrites `CHANGE`
/// characters of one field (~1%), chosen by a fixed-seed generator.
struct Document {
    fields: Vec<Vec<u8>>,
    seed: u64,
}

const FIELDS: usize = 40;
const FIELD_LEN: usize = 42;
const CHANGE: usize = 20;

impl Document {
    fn new() -> Self {
        let mut document = Self {
            fields: Vec::with_capacity(FIELDS),
            seed: 0x9e37_79b9_7f4a_7c15,
        };
        for _ in 0..FIELDS {
            let field = (0..FIELD_LEN).map(|_| document.letter()).collect();
            document.fields.push(field);
        }
        document
    }

    /// xorshift64*: reproducible, no dependency.
    fn next(&mut self) -> u64 {
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn letter(&mut self) -> u8 {
        b'a' + (self.next() % 26) as u8
    }

    /// The next version, stamped with the send time.
    fn next_version(&mut self, stamp: u64) -> String {
        let field = (self.next() % FIELDS as u64) as usize;
        let at = (self.next() % (FIELD_LEN - CHANGE) as u64) as usize;
        for i in at..at + CHANGE {
            let letter = self.letter();
            self.fields[field][i] = letter;
        }
        let mut out = format!("{{\"t\":{stamp}");
        for (i, value) in self.fields.iter().enumerate() {
            out.push_str(&format!(",\"f{i:02}\":\""));
            out.push_str(std::str::from_utf8(value).unwrap_or_default());
            out.push('"');
        }
        out.push('}');
        out
    }
}

fn payload(size: usize) -> String {
    // {"t":<micros>,"p":"xxx"}: the padding brings the JSON to about `size` bytes.
    let pad = size.saturating_sub(24);
    "x".repeat(pad)
}

/// Publishes at `rate` per second over `channels` until `until`; returns
/// how many it sent. A publication that fails counts as an error, and the
/// publisher reconnects (at most once a second) rather than ending the run.
async fn publish(
    args: &Args,
    publisher: &mut Publisher,
    document: &mut Option<Document>,
    channels: &[String],
    until: Instant,
    counters: &Counters,
) -> u64 {
    let pad = payload(args.payload);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: u64 = 0;
    while Instant::now() < until {
        ticker.tick().await;
        let due = (start.elapsed().as_secs_f64() * args.rate) as u64;
        while sent < due {
            let channel = &channels[sent as usize % channels.len()];
            let data = match document {
                Some(document) => document.next_version(now_micros()),
                None => format!("{{\"t\":{},\"p\":\"{pad}\"}}", now_micros()),
            };
            if let Err(e) = publisher.publish(channel, &data, counters).await {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                publisher.repair(args, &e).await;
            }
            sent += 1;
        }
    }
    sent
}

/// Where publications go: a client, or the server API.
struct Publisher {
    kind: PublisherKind,
    channels: Vec<String>,
    counters: Arc<Counters>,
    /// No reconnect before this, after one failed.
    next_repair: Instant,
}

enum PublisherKind {
    /// A client: its sink (shared with the reader, which answers pings),
    /// the reader, the last command id, its format.
    Ws(
        Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
        tokio::task::JoinHandle<()>,
        u32,
        Format,
    ),
    /// The API, and whether publications ask for delta delivery.
    Api(ApiClient, bool),
    /// Not connected (the last attempt failed).
    Broken,
}

impl Publisher {
    /// A publisher for `channels`: through the API with `--api-key`, else a
    /// client subscribed to them (so namespaces that let only subscribers
    /// publish accept it).
    async fn open(
        args: &Args,
        channels: &[String],
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let kind = Self::connect(args, channels, &counters).await?;
        Ok(Self {
            kind,
            channels: channels.to_vec(),
            counters,
            next_repair: Instant::now(),
        })
    }

    async fn connect(
        args: &Args,
        channels: &[String],
        counters: &Arc<Counters>,
    ) -> anyhow::Result<PublisherKind> {
        Ok(match &args.api_key {
            Some(key) => {
                PublisherKind::Api(ApiClient::connect(&args.url[0], key).await?, args.delta)
            }
            None => {
                let token = Signer::from_args(args)?.token("bench-publisher", &[])?;
                let format = args.format.publisher();
                let encoding = Encoding::default();
                let ws =
                    open_client(&args.url[0], &token, None, channels, format, encoding).await?;
                let (sink, stream) = ws.split();
                let sink = Arc::new(tokio::sync::Mutex::new(sink));
                let reader = tokio::spawn(read_publish_replies(
                    stream,
                    sink.clone(),
                    format,
                    counters.clone(),
                ));
                PublisherKind::Ws(sink, reader, 100, format)
            }
        })
    }

    /// After a failed publication: a new connection, unless one was tried
    /// less than a second ago.
    async fn repair(&mut self, args: &Args, error: &anyhow::Error) {
        if Instant::now() < self.next_repair {
            return;
        }
        self.next_repair = Instant::now() + Duration::from_secs(1);
        if let PublisherKind::Ws(_, reader, ..) = &self.kind {
            reader.abort();
        }
        if let PublisherKind::Api(..) = self.kind {
            disconnects::record(&disconnects::Ended::Io(format!(
                "the API publisher: {error:#}"
            )));
        }
        self.kind = match Self::connect(args, &self.channels, &self.counters).await {
            Ok(kind) => kind,
            Err(e) => {
                eprintln!("herald-bench: the publisher cannot reconnect: {e:#}");
                PublisherKind::Broken
            }
        };
    }

    async fn publish(
        &mut self,
        channel: &str,
        data: &str,
        counters: &Counters,
    ) -> anyhow::Result<()> {
        match &mut self.kind {
            PublisherKind::Ws(sink, _, id, format) => {
                *id += 1;
                let command = Command {
                    id: *id,
                    method: Method::Publish(PublishRequest {
                        channel: channel.to_owned(),
                        data: Some(RawJson::from_str(data)?),
                    }),
                };
                sink.lock()
                    .await
                    .send(wire::command(*format, &command))
                    .await?;
            }
            PublisherKind::Api(api, delta) => {
                let delta = if *delta { ",\"delta\":true" } else { "" };
                let body = format!(
                    "{{\"channel\":{},\"data\":{data}{delta}}}",
                    serde_json::to_string(channel)?
                );
                if !api.post("/api/publish", &body).await? {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            PublisherKind::Broken => bail!("the publisher is not connected"),
        }
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let PublisherKind::Ws(_, reader, ..) = &self.kind {
            reader.abort();
        }
    }
}

/// The publisher client's reader: counts failed publications, answers the
/// server's pings, and counts how the connection ended.
async fn read_publish_replies(
    mut stream: SplitStream<Ws>,
    sink: Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
    format: Format,
    counters: Arc<Counters>,
) {
    let ended = loop {
        match stream.next().await {
            Some(Ok(message)) => {
                let received = wire::read(format, &message);
                let failed = received
                    .answers
                    .iter()
                    .filter(|(_, error)| error.is_some())
                    .count();
                counters.errors.fetch_add(failed as u64, Ordering::Relaxed);
                for _ in 0..received.pings {
                    let _ = sink.lock().await.send(wire::pong(format)).await;
                }
                if let Some(ended) = received.ended {
                    break ended;
                }
            }
            Some(Err(e)) => break disconnects::Ended::Io(e.to_string()),
            None => break disconnects::Ended::Eof,
        }
    };
    disconnects::record(&ended);
}

/// A keep-alive HTTP/1.1 client for POST /api/publish.
struct ApiClient {
    stream: BufReader<TcpStream>,
    host: String,
    key: String,
}

impl ApiClient {
    async fn connect(ws_url: &str, key: &str) -> anyhow::Result<Self> {
        let rest = ws_url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("--api-key needs a ws:// --url"))?;
        let host = rest.split('/').next().unwrap_or(rest).to_owned();
        let stream = TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host,
            key: key.to_owned(),
        })
    }

    /// True on HTTP 200 without an `error` in the body.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<bool> {
        Ok(self.post_body(path, body).await?.0)
    }

    /// [`ApiClient::post`], and the response body.
    async fn post_body(&mut self, path: &str, body: &str) -> anyhow::Result<(bool, Vec<u8>)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.key,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            self.stream.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut response = vec![0; length];
        self.stream.read_exact(&mut response).await?;
        if status.is_empty() {
            bail!("the API connection closed");
        }
        let ok = status.contains(" 200 ") && !response.windows(8).any(|w| w == b"\"error\":");
        Ok((ok, response))
    }
}

/// A subscribed client: a WebSocket and the format it speaks, or an HTTP
/// stream. Each lives in its own task, moved there once: the size of the
/// larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Client {
    /// A WebSocket, its format, and whether it holds documents to apply
    /// deltas to (`--delta`).
    Ws(Ws, Format, bool),
    Stream(stream::StreamClient),
}

impl Client {
    /// Opens a client of `transport` on `url`, subscribed to `channels`.
    async fn open(
        transport: Transport,
        url: &str,
        auth: Option<&Signer>,
        user: &str,
        channels: &[String],
        format: Format,
        encoding: Encoding,
    ) -> anyhow::Result<Self> {
        let claimed: &[String] = if transport.subscribes_by_token() {
            channels
        } else {
            &[]
        };
        // No signer: no token, the session cookie for the connect proxy.
        let (token, cookie) = match auth {
            Some(signer) => (signer.token(user, claimed)?, None),
            None => (String::new(), Some(format!("session={user}"))),
        };
        Ok(match transport {
            Transport::Websocket => Client::Ws(
                open_client(url, &token, cookie.as_deref(), channels, format, encoding).await?,
                format,
                encoding.delta,
            ),
            _ => Client::Stream(stream::open(transport, url, &token, channels).await?),
        })
    }

    /// What the server sent next, with the time it was read (bench
    /// microseconds); None once the connection is closed.
    async fn next(&mut self) -> Option<anyhow::Result<(u64, wire::Received)>> {
        match self {
            Client::Ws(ws, format, delta) => {
                Some(ws.next().await?.map_err(Into::into).map(|message| {
                    let now = now_micros();
                    (now, wire::read_documents(*format, &message, *delta))
                }))
            }
            Client::Stream(stream) => stream.next().await,
        }
    }

    /// Answers `pings` server pings (a stream answered them as it read).
    async fn answer(&mut self, pings: usize) {
        if let Client::Ws(ws, format, _) = self {
            for _ in 0..pings {
                let _ = ws.send(wire::pong(*format)).await;
            }
        }
    }

    async fn close(self) {
        if let Client::Ws(mut ws, ..) = self {
            let _ = ws.close(None).await;
        }
    }
}

/// Opens this process's share of `n` subscribed clients (all of them
/// without `--processes`), `concurrency` at a time, spread over `urls` by
/// their global index. A client that is open keeps answering pings while
/// the others open and until `workers::sync` lets the run go on (every
/// worker's clients open); one that ends meanwhile is counted in
/// `disconnects` and left out.
async fn open_many(
    args: &Args,
    n: usize,
    channels_of: impl Fn(usize) -> Vec<String>,
    counters: &Counters,
) -> (Vec<Client>, Histogram<u64>) {
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    // Checked in main before any scenario runs.
    let signer = Signer::from_args(args).expect("the token key was readable at start");
    let (release, released) = tokio::sync::watch::channel(false);
    let (opened_tx, mut opened) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in workers::indices(n) {
        let url = args.url[i % args.url.len()].clone();
        let signer = signer.clone();
        let channels = channels_of(i);
        let gate = gate.clone();
        let format = args.format.subscriber(i);
        let transport = args.transport;
        let encoding = Encoding::from_args(args);
        let jwt = args.auth == AuthArg::Jwt;
        let mut released = released.clone();
        // Says this connection's attempt is over, however the task ends.
        let opened_guard = Opened(opened_tx.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let started = Instant::now();
            let user = format!("bench-{i}");
            let auth = jwt.then_some(&signer);
            let client =
                Client::open(transport, &url, auth, &user, &channels, format, encoding).await;
            let took = started.elapsed();
            drop(permit);
            drop(opened_guard);
            let mut client = client?;
            // Parked: pings answered until the run takes the client.
            loop {
                tokio::select! {
                    biased;
                    _ = async { released.wait_for(|go| *go).await.map(|_| ()) } => break,
                    next = client.next() => {
                        let ended = match next {
                            Some(Ok((_, received))) => {
                                client.answer(received.pings).await;
                                received.ended
                            }
                            Some(Err(e)) => Some(disconnects::Ended::Io(format!("{e:#}"))),
                            None => Some(disconnects::Ended::Eof),
                        };
                        if let Some(ended) = ended {
                            disconnects::record(&ended);
                            bail!("closed before the run started ({}: {})", ended.key(), ended.reason());
                        }
                    }
                }
            }
            anyhow::Ok((client, took))
        }));
    }
    drop(opened_tx);
    for _ in 0..tasks.len() {
        if opened.recv().await.is_none() {
            break;
        }
    }
    workers::sync().await;
    let _ = release.send(true);
    let mut clients = Vec::with_capacity(tasks.len());
    let mut histogram = workers::new_histogram();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok((client, took))) => {
                let _ = histogram.record((took.as_micros() as u64).max(1));
                clients.push(client);
            }
            Ok(Err(e)) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("herald-bench: some connections failed, first: {e}");
    }
    (clients, histogram)
}

/// Sends once when dropped: a connection attempt of `open_many` is over.
struct Opened(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for Opened {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// `--subscribers` clients, all subscribed to `--channel`.
async fn open_on_one_channel(args: &Args, counters: &Counters) -> (Vec<Client>, Histogram<u64>) {
    let channel = args.channel.clone();
    open_many(args, args.subscribers, |_| vec![channel.clone()], counters).await
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) the process has used, in microseconds. Linux
/// reports it in clock ticks; USER_HZ is 100 on every Linux platform herald
/// targets.
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

struct Report {
    scenario: &'static str,
    deliveries_per_sec: f64,
    histogram: Histogram<u64>,
    errors: u64,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn print(&self) {
        let h = &self.histogram;
        let mut json = serde_json::Map::new();
        json.insert("scenario".into(), self.scenario.into());
        json.insert(
            "deliveries_per_sec".into(),
            ((self.deliveries_per_sec * 10.0).round() / 10.0).into(),
        );
        for (name, q) in [
            ("p50_ms", 0.5),
            ("p90_ms", 0.9),
            ("p99_ms", 0.99),
            ("p999_ms", 0.999),
        ] {
            json.insert(name.into(), ms(h.value_at_quantile(q)).into());
        }
        json.insert("max_ms".into(), ms(h.max()).into());
        json.insert("errors".into(), self.errors.into());
        json.insert("disconnects".into(), disconnects::json());
        json.insert("disconnects_total".into(), disconnects::total().into());
        json.extend(self.extra.clone());
        if workers::is_worker() {
            // Raw figures for the parent's merge (workers.rs).
            let mut worker = match json.remove("worker") {
                Some(serde_json::Value::Object(worker)) => worker,
                _ => serde_json::Map::new(),
            };
            worker.insert("histogram".into(), workers::histogram_pairs(h));
            json.insert("worker".into(), worker.into());
        } else {
            json.remove("worker");
        }
        eprintln!(
            "{}: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            self.scenario,
            self.deliveries_per_sec,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
            self.errors
        );
        println!("{}", serde_json::Value::Object(json));
    }
}

/// Publishes for warm-up + duration and collects every receiver. The
/// timeline starts at the go of `workers::sync` (passed in `open_many`), so
/// the workers of `--processes` measure the same window; only the first
/// publishes.
async fn run_publishing(
    args: &Args,
    scenario: &'static str,
    clients: Vec<Client>,
    channels: Vec<String>,
    counters: Arc<Counters>,
) -> anyhow::Result<Report> {
    let stop = Arc::new(AtomicBool::new(false));
    let subscribers = clients.len() as u64;
    let go = workers::sync().await;
    let warm_until = go + args.warmup.as_micros() as u64;
    let measure_from = if args.warmup.is_zero() {
        go
    } else {
        warm_until + 500_000
    };
    let measure_until = measure_from + args.duration.as_micros() as u64;
    MEASURE_FROM.store(measure_from, Ordering::Relaxed);
    let receivers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(receive(client, stop.clone(), counters.clone())))
        .collect();
    let mut publisher = if workers::publishes() {
        Some(Publisher::open(args, &channels, counters.clone()).await?)
    } else {
        None
    };
    let mut document = (args.scenario == Scenario::Document).then(Document::new);
    if let Some(publisher) = publisher.as_mut() {
        if !args.warmup.is_zero() {
            let warm = Counters::default();
            let until = workers::at(warm_until).into_std();
            publish(args, publisher, &mut document, &channels, until, &warm).await;
        }
    }
    tokio::time::sleep_until(workers::at(measure_from)).await;
    let cpu_before = args.server_pid.and_then(cpu_micros);
    let wire_before = deflate::WIRE_BYTES_READ.load(Ordering::Relaxed);
    let started = Instant::now();
    if let Some(publisher) = publisher.as_mut() {
        let until = workers::at(measure_until).into_std();
        let sent = publish(args, publisher, &mut document, &channels, until, &counters).await;
        counters.published.store(sent, Ordering::Relaxed);
    } else {
        tokio::time::sleep_until(workers::at(measure_until)).await;
    }
    let published_for = started.elapsed();
    // Let the last publications arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_after = args.server_pid.and_then(cpu_micros);
    let wire_read = deflate::WIRE_BYTES_READ.load(Ordering::Relaxed) - wire_before;
    stop.store(true, Ordering::Relaxed);
    drop(publisher);
    let mut histogram = workers::new_histogram();
    let mut delivered = 0;
    let mut bytes = 0;
    for receiver in receivers {
        if let Ok(r) = receiver.await {
            histogram.add(&r.histogram).ok();
            delivered += r.deliveries;
            bytes += r.bytes;
        }
    }
    let published = counters.published.load(Ordering::Relaxed);
    let per_publication = subscribers / channels.len().max(1) as u64;
    let expected = published * per_publication;
    let missing = expected.saturating_sub(delivered);
    let mut extra = serde_json::Map::new();
    extra.insert("subscribers".into(), subscribers.into());
    extra.insert("publications".into(), published.into());
    extra.insert("expected_deliveries".into(), expected.into());
    extra.insert("missing_deliveries".into(), missing.into());
    extra.insert(
        "wire_bytes_per_delivery".into(),
        ((bytes as f64 / delivered.max(1) as f64 * 10.0).round() / 10.0).into(),
    );
    Encoding::from_args(args).describe(&mut extra);
    extra.insert("compression".into(), args.compression.into());
    if args.transport == Transport::Websocket {
        // Everything the WebSocket clients read while measuring (the
        // publisher's replies included), per delivery.
        extra.insert("ws_bytes_read".into(), wire_read.into());
        let per = wire_read as f64 / delivered.max(1) as f64;
        extra.insert(
            "ws_bytes_per_delivery".into(),
            ((per * 10.0).round() / 10.0).into(),
        );
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let per = after.saturating_sub(before) as f64 / delivered.max(1) as f64;
        extra.insert(
            "server_cpu_ms".into(),
            (after.saturating_sub(before) / 1000).into(),
        );
        extra.insert(
            "server_cpu_us_per_delivery".into(),
            ((per * 100.0).round() / 100.0).into(),
        );
    }
    extra.insert(
        "worker".into(),
        serde_json::json!({
            "delivered": delivered, "bytes": bytes, "missing": missing,
            "published_for_s": published_for.as_secs_f64(),
        }),
    );
    Ok(Report {
        scenario,
        deliveries_per_sec: delivered.min(expected) as f64 / published_for.as_secs_f64(),
        histogram,
        errors: counters.errors.load(Ordering::Relaxed) + missing,
        extra,
    })
}

/// Server and backend CPU (`--server-pid`, `--backend-pid`) over a window.
struct CpuWatch {
    pids: [(&'static str, Option<u32>, Option<u64>); 2],
}

impl CpuWatch {
    fn start(args: &Args) -> Self {
        let read = |pid: Option<u32>| pid.and_then(cpu_micros);
        Self {
            pids: [
                ("server", args.server_pid, read(args.server_pid)),
                ("backend", args.backend_pid, read(args.backend_pid)),
            ],
        }
    }

    /// The CPU each used since `start`.
    fn stop(&self) -> CpuUsed {
        CpuUsed(self.pids.map(|(who, pid, before)| {
            let after = pid.and_then(cpu_micros);
            (who, before.zip(after).map(|(b, a)| a.saturating_sub(b)))
        }))
    }
}

/// Microseconds of CPU the server and the backend used in a window.
struct CpuUsed([(&'static str, Option<u64>); 2]);

impl CpuUsed {
    /// Adds `<who>_cpu_ms` and `<who>_cpu_us_per_<op>` over `ops` operations.
    fn insert(&self, extra: &mut serde_json::Map<String, serde_json::Value>, op: &str, ops: u64) {
        for (who, used) in self.0 {
            if let Some(used) = used {
                extra.insert(format!("{who}_cpu_ms"), (used / 1000).into());
                extra.insert(
                    format!("{who}_cpu_us_per_{op}"),
                    calls::per_op(used, ops).into(),
                );
            }
        }
    }
}

/// The `rpc`, `subscribe` and `backend` scenarios: round trips on open
/// connections for warm-up + duration.
async fn run_calls(args: &Args, counters: &Counters) -> anyhow::Result<Report> {
    let data = format!("{{\"p\":\"{}\"}}", payload(args.payload));
    let warmup = args.warmup.as_micros() as u64;
    let duration = args.duration.as_micros() as u64;
    let (name, op): (&'static str, _) = match args.scenario {
        Scenario::Rpc => (
            "rpc",
            calls::Op::Rpc {
                method: args.rpc_method.clone(),
                data: data.clone(),
            },
        ),
        Scenario::Subscribe => (
            "subscribe",
            calls::Op::Subscribe {
                prefix: args.channel.clone(),
            },
        ),
        _ => (
            "backend",
            calls::Op::Rpc {
                method: String::new(),
                data: String::new(),
            },
        ),
    };
    let mut tasks = Vec::new();
    let (measure_from, started);
    if args.scenario == Scenario::Backend {
        // The body herald's RPC proxy sends for the same call.
        let body = serde_json::json!({
            "client": "00000000-0000-0000-0000-000000000000", "transport": "websocket",
            "protocol": "json", "encoding": "json", "user": "bench-0",
            "method": args.rpc_method, "data": serde_json::from_str::<serde_json::Value>(&data)?,
        })
        .to_string();
        let mut posters = Vec::new();
        for _ in 0..args.subscribers {
            posters.push(calls::Poster::connect(&args.url[0], &body, &[]).await?);
        }
        started = tokio::time::Instant::now();
        measure_from = now_micros() + warmup;
        let until = measure_from + duration;
        for poster in posters {
            tasks.push(tokio::spawn(calls::drive_http(poster, measure_from, until)));
        }
    } else {
        let (clients, _) = open_many(args, args.subscribers, |_| Vec::new(), counters).await;
        started = tokio::time::Instant::now();
        measure_from = now_micros() + warmup;
        let until = measure_from + duration;
        for (conn, client) in clients.into_iter().enumerate() {
            let Client::Ws(ws, format, _) = client else {
                bail!("{name} needs WebSocket clients");
            };
            let op = op.clone();
            let window = args.window;
            tasks.push(tokio::spawn(async move {
                calls::drive(ws, format, conn, &op, window, measure_from, until).await
            }));
        }
    }
    tokio::time::sleep_until(started + args.warmup).await;
    let cpu = CpuWatch::start(args);
    tokio::time::sleep(args.duration).await;
    let cpu = cpu.stop();
    let mut extra = serde_json::Map::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut done, mut errors, mut first_error) =
        (0, counters.errors.load(Ordering::Relaxed), None);
    let connections = tasks.len();
    for task in tasks {
        let outcome = task.await?;
        histogram.add(&outcome.histogram).ok();
        done += outcome.done;
        errors += outcome.errors;
        if first_error.is_none() {
            first_error = outcome.first_error;
        }
    }
    cpu.insert(&mut extra, "op", done);
    if let Some(e) = first_error {
        eprintln!("herald-bench: some {name} operations failed, first: {e}");
    }
    extra.insert("connections".into(), connections.into());
    extra.insert("window".into(), args.window.into());
    extra.insert("operations".into(), done.into());
    let per_sec = done as f64 / args.duration.as_secs_f64();
    extra.insert("ops_per_sec".into(), per_sec.round().into());
    Ok(Report {
        scenario: name,
        deliveries_per_sec: 0.0,
        histogram,
        errors,
        extra,
    })
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let counters = Arc::new(Counters::default());
    match args.scenario {
        Scenario::Fanout | Scenario::Cluster | Scenario::Document => {
            if args.scenario == Scenario::Cluster && args.url.len() < 2 {
                bail!("cluster needs at least two --url");
            }
            let (clients, _) = open_on_one_channel(&args, &counters).await;
            let name = match args.scenario {
                Scenario::Fanout => "fanout",
                Scenario::Document => "document",
                _ => "cluster",
            };
            run_publishing(&args, name, clients, vec![args.channel.clone()], counters).await
        }
        Scenario::Channels => {
            let channels: Vec<String> = (0..args.channels.max(1))
                .map(|c| format!("{}-{c}", args.channel))
                .collect();
            let all = channels.clone();
            let (clients, _) = open_many(
                &args,
                args.subscribers * channels.len(),
                move |i| vec![all[i % all.len()].clone()],
                &counters,
            )
            .await;
            run_publishing(&args, "channels", clients, channels, counters).await
        }
        Scenario::Connect => {
            // Every worker starts connecting at once.
            workers::sync().await;
            let cpu = CpuWatch::start(&args);
            let started = Instant::now();
            let (clients, histogram) = open_on_one_channel(&args, &counters).await;
            let took = started.elapsed();
            let connected = clients.len();
            let mut extra = serde_json::Map::new();
            cpu.stop().insert(&mut extra, "connect", connected as u64);
            for client in clients {
                client.close().await;
            }
            extra.insert("connections".into(), connected.into());
            extra.insert(
                "connects_per_sec".into(),
                ((connected as f64 / took.as_secs_f64()).round()).into(),
            );
            extra.insert(
                "worker".into(),
                serde_json::json!({ "took_s": took.as_secs_f64() }),
            );
            Ok(Report {
                scenario: "connect",
                deliveries_per_sec: 0.0,
                histogram,
                errors: counters.errors.load(Ordering::Relaxed),
                extra,
            })
        }
        Scenario::Rpc | Scenario::Subscribe | Scenario::Backend => {
            run_calls(&args, &counters).await
        }
        Scenario::Hold => hold::run(&args).await,
        Scenario::Idle => {
            let before = args.server_pid.and_then(rss_kib);
            let (clients, histogram) = open_on_one_channel(&args, &counters).await;
            let connected = clients.len() as u64;
            let stop = Arc::new(AtomicBool::new(false));
            let holders: Vec<_> = clients
                .into_iter()
                .map(|client| tokio::spawn(receive(client, stop.clone(), counters.clone())))
                .collect();
            let go = workers::sync().await;
            tokio::time::sleep_until(workers::at(go + args.duration.as_micros() as u64)).await;
            let after = args.server_pid.and_then(rss_kib);
            stop.store(true, Ordering::Relaxed);
            for holder in holders {
                let _ = holder.await;
            }
            let mut extra = serde_json::Map::new();
            extra.insert("connections".into(), connected.into());
            if let (Some(before), Some(after)) = (before, after) {
                let per = (after.saturating_sub(before)) as f64 / connected.max(1) as f64;
                extra.insert("rss_before_kib".into(), before.into());
                extra.insert("rss_after_kib".into(), after.into());
                extra.insert(
                    "rss_per_conn_kib".into(),
                    ((per * 100.0).round() / 100.0).into(),
                );
            }
            Ok(Report {
                scenario: "idle",
                deliveries_per_sec: 0.0,
                histogram,
                errors: counters.errors.load(Ordering::Relaxed),
                extra,
            })
        }
    }
}

/// Why `--processes` cannot serve this run, if it cannot.
fn processes_conflict(args: &Args) -> Option<String> {
    if args.processes == 0 {
        return Some("--processes must be at least 1".into());
    }
    if args.processes > 1
        && matches!(
            args.scenario,
            Scenario::Rpc | Scenario::Subscribe | Scenario::Backend
        )
    {
        return Some(format!(
            "--processes works with fanout, channels, document, connect, idle, cluster and hold, \
             not {} (its connections are few enough for one process)",
            label(args.scenario)
        ));
    }
    None
}

/// How the parent of `--processes N` merges `hold`'s records and prints its
/// progress (the other scenarios have neither).
pub(crate) const HOLD_HOOKS: workers::Hooks = workers::Hooks {
    merge_records: hold::merge_raw,
    progress_text: hold::progress_text,
};

/// The parent of `--processes N`: runs the workers, prints their merged
/// summary.
fn run_processes(args: &Args, runtime: &tokio::runtime::Runtime) -> ! {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let channels = match args.scenario {
        Scenario::Channels => args.channels.max(1),
        _ => 1,
    };
    match runtime.block_on(workers::run_parent(
        args.processes,
        raw,
        channels,
        HOLD_HOOKS,
    )) {
        Ok(summary) => {
            let get = |key: &str| {
                summary
                    .get(key)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0)
            };
            eprintln!(
                "{} over {} processes: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
                summary["scenario"].as_str().unwrap_or("?"),
                args.processes,
                get("deliveries_per_sec"),
                get("p50_ms"),
                get("p99_ms"),
                get("max_ms"),
                get("errors"),
            );
            println!("{summary}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::exit(1)
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Some((index, total)) = args.worker {
        workers::set_share(index, total);
        EPOCH.store(args.epoch, Ordering::Relaxed);
    }
    now_micros();
    if let Some(conflict) = processes_conflict(&args).or_else(|| hold::conflict(&args)) {
        eprintln!("herald-bench: {conflict}");
        std::process::exit(2);
    }
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A bad --es256-key is reported here, before any connection is made.
    if let Err(e) = Signer::from_args(&args) {
        eprintln!("herald-bench: --es256-key: {e:#}");
        std::process::exit(2);
    }
    if let Some(conflict) = args.transport_conflict() {
        eprintln!("herald-bench: {conflict}");
        std::process::exit(2);
    }
    COMPRESSION.store(args.compression, Ordering::Relaxed);
    match tls_config(args.ca_file.as_deref()) {
        Ok(config) => {
            let _ = TLS.set(config);
        }
        Err(e) => {
            eprintln!("herald-bench: --ca-file: {e:#}");
            std::process::exit(2);
        }
    }
    if args.transport != Transport::Websocket {
        if let Err(e) = stream::init(TLS.get().and_then(Option::as_ref)) {
            eprintln!("herald-bench: the HTTP client: {e:#}");
            std::process::exit(1);
        }
    }
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("herald-bench: cannot raise the open-file limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            std::process::exit(1);
        }
    };
    if args.processes > 1 && args.worker.is_none() {
        run_processes(&args, &runtime);
    }
    let (format, transport, auth) = (args.format, args.transport, args.auth);
    match runtime.block_on(run(args)) {
        Ok(mut report) => {
            report.extra.insert("format".into(), label(format).into());
            report
                .extra
                .insert("transport".into(), label(transport).into());
            report.extra.insert("auth".into(), label(auth).into());
            report.print()
        }
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::exit(1);
        }
    }
}
