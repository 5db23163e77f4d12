//! Prometheus metrics (names fixed in interface.md).
//!
//! One process-wide set in the default registry, so the process collector
//! (`process_*`) comes along. Every labelled family is pre-initialised at 0
//! for its closed label set, so dashboards and alerts see the series before
//! the first event. Label values only ever come from those closed sets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use herald_auth::{InvalidReason, TokenError};
use herald_protocol::api::ApiError;
use herald_protocol::{Disconnect, ErrorCode, Format};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::transport::Transport;

use herald_bus::{BrokerCounters, ClockReading};

/// Client protocol methods, the `method` label of client metrics.
pub(crate) const CLIENT_METHODS: &[&str] = &[
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
];

/// Server API methods, the `method` label of API metrics.
pub(crate) const API_METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "batch",
    "revoke_token",
    "invalidate_user_tokens",
];

/// `frame_type` values of the transport metrics.
pub(crate) const FRAME_TYPES: &[&str] = &[
    "server_ping",
    "unknown",
    "reply",
    "push_publication",
    "push_join",
    "push_leave",
    "push_unsubscribe",
    "push_subscribe",
    "push_message",
    "push_connect",
    "push_refresh",
    "client_pong",
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
];

/// `reason` values of `herald_client_handshake_refusals_total`: the
/// handshake's refusals (`ws::Refusal::label`), and `address_limit` for a
/// connection closed at accept over `client.connection_limit_per_ip`.
pub(crate) const HANDSHAKE_REFUSAL_REASONS: [&str; 10] = [
    "not_found",
    "method",
    "not_websocket",
    "version",
    "key",
    "origin",
    "draining",
    "http_version",
    "body",
    ADDRESS_LIMIT,
];

/// `reason` of `herald_client_handshake_refusals_total` for a connection
/// closed at accept over `client.connection_limit_per_ip` (listener.rs).
pub(crate) const ADDRESS_LIMIT: &str = "address_limit";

/// `limit` values of `herald_client_connection_limit_refusals_total`:
/// `client.connection_limit` (`node`) and `client.connection_rate_limit` (`rate`).
pub(crate) const CONNECTION_LIMITS: [&str; 2] = ["node", "rate"];

/// `reason` values of `herald_client_bad_messages_total` (`format::BadMessage`).
pub(crate) const BAD_MESSAGE_REASONS: [&str; 3] = ["undecodable", "wrong_type", "payload_not_json"];

/// `reason` values of `herald_transport_refusals_total`.
pub(crate) const TRANSPORT_REFUSAL_REASONS: [&str; 5] =
    ["method", "origin", "too_large", "bad_request", "draining"];

/// `result` values of `herald_emulation_requests_total`.
pub(crate) const EMULATION_RESULTS: [&str; 9] = [
    "local",
    "forwarded",
    "no_session",
    "unknown_node",
    "bad_request",
    "too_large",
    "method",
    "origin",
    "failed",
];

/// `proxy` values of the proxy metrics.
pub(crate) const PROXIES: [&str; 2] = ["connect", "rpc"];

/// `result` values of `herald_proxy_requests_total`.
pub(crate) const PROXY_RESULTS: [&str; 7] = [
    "ok",
    "error",
    "disconnect",
    "timeout",
    "unreachable",
    "status",
    "invalid",
];

/// `reason` values of `herald_http_request_bodies_cut_total`.
pub(crate) const BODY_CUT_REASONS: [&str; 3] = ["timeout", "too_large", "unread"];

/// `reason` values of `herald_api_requests_refused_total`.
pub(crate) const API_REFUSAL_REASONS: [&str; 4] =
    ["unauthorized", "method", "not_found", "concurrency"];

/// Server API methods the web console may run (`herald_admin_actions_total{method}`).
pub(crate) const ADMIN_METHODS: &[&str] = &[
    "info",
    "channels",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "publish",
    "unsubscribe",
    "disconnect",
    "revoke_token",
    "invalidate_user_tokens",
];

/// `result` values of `herald_admin_logins_total`.
pub(crate) const ADMIN_LOGIN_RESULTS: [&str; 5] =
    ["ok", "wrong_password", "wrong_token", "throttled", "busy"];

/// `reason` values of `herald_admin_requests_refused_total`.
pub(crate) const ADMIN_REFUSAL_REASONS: [&str; 14] = [
    "unauthorized",
    "session_expired",
    "cross_origin",
    "csrf",
    "content_type",
    "too_large",
    "invalid_json",
    "bad_request",
    "invalid_credentials",
    "unknown_method",
    "too_many_requests",
    "too_many_attempts",
    "busy",
    "engine_unreachable",
];

/// `kind` values of `herald_websocket_compressions_total`: a shared frame's
/// one compression per node, or a message compressed for one connection.
pub(crate) const COMPRESSION_KINDS: [&str; 2] = ["shared", "connection"];

/// `result` values of `herald_websocket_inflations_total`.
pub(crate) const INFLATION_RESULTS: [&str; 3] = ["ok", "too_big", "corrupt"];

/// `reason` values of `herald_bus_rejected_envelopes_total`.
pub(crate) const REJECT_REASONS: [&str; 7] = [
    "malformed",
    "overflow",
    "unsigned",
    "unknown_key",
    "bad_mac",
    "stale",
    "replay",
];

/// What the node reports at a scrape: a plain snapshot, so this module
/// needs nothing of the node.
#[derive(Debug, Default)]
pub(crate) struct NodeFigures {
    pub(crate) clients: usize,
    pub(crate) users: usize,
    pub(crate) channels: usize,
    pub(crate) subscriptions: usize,
    pub(crate) nodes: usize,
    pub(crate) engine_healthy: bool,
    /// This node's clock against the engine's (`None`: not measured).
    pub(crate) clock: Option<ClockReading>,
    pub(crate) counters: BrokerCounters,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) num_clients: IntGauge,
    pub(crate) num_users: IntGauge,
    pub(crate) num_channels: IntGauge,
    pub(crate) num_subscriptions: IntGauge,
    pub(crate) num_nodes: IntGauge,
    /// 1 while the engine answers (what `/ready` checks), else 0: the direct
    /// signal for a Redis outage, even on a single idle node.
    pub(crate) engine_healthy: IntGauge,
    /// This node's clock minus Redis's, in seconds (0 until measured, and
    /// with the memory engine).
    pub(crate) engine_clock_skew: Gauge,
    pub(crate) connections_accepted: IntCounter,
    pub(crate) reply_errors: IntCounterVec,
    pub(crate) server_disconnects: IntCounterVec,
    pub(crate) command_duration: HistogramVec,
    pub(crate) messages_sent: IntCounterVec,
    pub(crate) messages_received: IntCounterVec,
    pub(crate) bytes_sent: IntCounter,
    pub(crate) publish_duration: Histogram,
    pub(crate) broker_messages_received: IntCounter,
    pub(crate) bus_rejected: IntCounterVec,
    pub(crate) history_undecryptable: IntCounter,
    pub(crate) auth_failures: IntCounterVec,
    pub(crate) api_duration: HistogramVec,
    pub(crate) api_errors: IntCounterVec,
    pub(crate) handshake_refusals: IntCounterVec,
    pub(crate) bodies_cut: IntCounterVec,
    pub(crate) api_refused: IntCounterVec,
    /// Console logins by result (`admin::LOGIN_RESULTS`).
    pub(crate) admin_logins: IntCounterVec,
    /// Console requests refused, by reason (`admin::REFUSALS`).
    pub(crate) admin_refused: IntCounterVec,
    /// Console actions run through the server API, by method.
    pub(crate) admin_actions: IntCounterVec,
    /// History streams the engine keeps (memory engine).
    pub(crate) engine_streams: IntGauge,
    pub(crate) engine_streams_evicted: IntCounter,
    /// Connections closed because their bounded mailbox was full.
    pub(crate) mailbox_overflows: IntCounter,
    /// Connection requests answered 503 over a node limit, by limit.
    pub(crate) connection_limit_refusals: IntCounterVec,
    pub(crate) tls_reloads: IntCounterVec,
    /// Client messages refused, by format and reason (`format::BadMessage`).
    pub(crate) bad_messages: IntCounterVec,
    /// WebSocket connections upgraded, by the format they speak.
    pub(crate) upgrades: IntCounterVec,
    /// Client connections open now, by transport.
    pub(crate) transport_connections: IntGaugeVec,
    /// Client connections opened, by transport.
    pub(crate) transport_connects: IntCounterVec,
    /// Requests of the HTTP transports refused before a connection.
    pub(crate) transport_refusals: IntCounterVec,
    /// `/emulation` requests, by what became of them.
    pub(crate) emulation_requests: IntCounterVec,
    /// Calls to the backend (proxies), by proxy and result.
    pub(crate) proxy_requests: IntCounterVec,
    pub(crate) proxy_duration: HistogramVec,
    /// Pre-resolved series of `messages_sent` for the fan-out path, so a
    /// publication costs an atomic add, not a label lookup under a lock.
    pub(crate) sent_publication: IntCounter,
    pub(crate) sent_join: IntCounter,
    pub(crate) sent_leave: IntCounter,
    /// Pre-resolved series of `herald_delta_encodings_total`: fossil deltas
    /// computed for delta subscribers, `delta` (sent as a delta) or `full`
    /// (the delta was not smaller than the data).
    pub(crate) delta_patch: IntCounter,
    pub(crate) delta_full: IntCounter,
    /// Messages compressed with permessage-deflate, by kind
    /// ([`COMPRESSION_KINDS`]), and its two series resolved.
    pub(crate) compressions: IntCounterVec,
    compressed_shared: IntCounter,
    compressed_connection: IntCounter,
    /// Compressed client messages, by result ([`INFLATION_RESULTS`]).
    pub(crate) inflations: IntCounterVec,
    /// WebSocket connections that negotiated permessage-deflate.
    pub(crate) deflate_negotiated: IntCounter,
    /// Engine counters already added to `bus_rejected`, by reason.
    seen_rejected: [AtomicU64; REJECT_REASONS.len()],
    /// Engine count already added to `history_undecryptable`.
    seen_undecryptable: AtomicU64,
    /// Engine count already added to `engine_streams_evicted`.
    seen_evicted: AtomicU64,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let registry = prometheus::default_registry().clone();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "herald_broker_publish_duration_seconds",
                "Time to hand one publication to the engine.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(publish_duration.clone()))
            .expect("unique metric");

        let delta_encodings = counter_vec(
            "herald_delta_encodings_total",
            "Fossil deltas computed for delta subscribers (once per publication per format for those in step), by result: delta (sent) or full (not smaller than the data).",
            &["result"],
        );
        let messages_sent = counter_vec(
            "herald_transport_messages_sent_total",
            "Frames queued to clients.",
            &["frame_type"],
        );
        let compressions = counter_vec(
            "herald_websocket_compressions_total",
            "Messages compressed with permessage-deflate: shared (a publication's one compression on this node, sent to every subscriber with compression) or connection (for one connection).",
            &["kind"],
        );
        let metrics = Self {
            num_clients: gauge("herald_node_num_clients", "Connected clients on this node."),
            num_users: gauge(
                "herald_node_num_users",
                "Distinct users connected on this node.",
            ),
            num_channels: gauge(
                "herald_node_num_channels",
                "Channels with subscribers on this node.",
            ),
            num_subscriptions: gauge(
                "herald_node_num_subscriptions",
                "Client subscriptions on this node.",
            ),
            num_nodes: gauge("herald_node_num_nodes", "Live nodes in the cluster."),
            engine_healthy: gauge(
                "herald_engine_healthy",
                "1 while this node's engine (Redis) is reachable, else 0.",
            ),
            engine_clock_skew: {
                let g = Gauge::new(
                    "herald_engine_clock_skew_seconds",
                    "This node's clock minus Redis's (TIME, measured with every heartbeat), in seconds; 0 with the memory engine. Past 30 s either way the signed bus refuses envelopes between this node and the nodes in step, and /ready reports not ready.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            connections_accepted: counter(
                "herald_client_connections_accepted_total",
                "Connections that completed connect.",
            ),
            reply_errors: counter_vec(
                "herald_client_num_reply_errors_total",
                "Error replies to client commands.",
                &["method", "code"],
            ),
            server_disconnects: counter_vec(
                "herald_client_num_server_disconnects_total",
                "Connections the server closed, by disconnect code.",
                &["code"],
            ),
            command_duration: histogram_vec(
                "herald_client_command_duration_seconds",
                "Time to answer one client command.",
                &["method"],
            ),
            messages_received: counter_vec(
                "herald_transport_messages_received_total",
                "Frames received from clients.",
                &["frame_type"],
            ),
            bytes_sent: counter(
                "herald_transport_bytes_sent_total",
                "Bytes written to client sockets.",
            ),
            publish_duration,
            broker_messages_received: counter(
                "herald_broker_messages_received_total",
                "Publications, joins and leaves the engine delivered to this node.",
            ),
            history_undecryptable: counter(
                "herald_history_undecryptable_records_total",
                "History records that could not be opened: sealed with a removed key (crypto-shredded) or tampered with.",
            ),
            bus_rejected: counter_vec(
                "herald_bus_rejected_envelopes_total",
                "Messages from the bus dropped: undecodable, a full queue, or refused by the integrity check (unsigned, unknown_key, bad_mac, stale, replay).",
                &["reason"],
            ),
            auth_failures: counter_vec(
                "herald_auth_failures_total",
                "Rejected connection and subscription tokens.",
                &["reason"],
            ),
            api_duration: histogram_vec(
                "herald_api_command_duration_seconds",
                "Time to answer one server API command.",
                &["method"],
            ),
            api_errors: counter_vec(
                "herald_api_errors_total",
                "Server API commands answered with an error.",
                &["method", "code"],
            ),
            handshake_refusals: counter_vec(
                "herald_client_handshake_refusals_total",
                "WebSocket upgrade requests answered with an HTTP error, and connections closed at accept over the per-address limit (address_limit), by reason.",
                &["reason"],
            ),
            bodies_cut: counter_vec(
                "herald_http_request_bodies_cut_total",
                "HTTP requests whose body was cut off (the connection closed): not complete within http_server.request_body_timeout, too large, or left unread by an early response.",
                &["reason"],
            ),
            api_refused: counter_vec(
                "herald_api_requests_refused_total",
                "Server API requests refused before their body was read: wrong key, method or path, or http_api.max_concurrent_requests reached.",
                &["reason"],
            ),
            admin_logins: counter_vec(
                "herald_admin_logins_total",
                "Web console logins, by result: ok, wrong_password, wrong_token (invalid, or without the admin claim), throttled (too many failures from the address), busy.",
                &["result"],
            ),
            admin_refused: counter_vec(
                "herald_admin_requests_refused_total",
                "Web console requests refused, by reason: unauthorized, session_expired, cross_origin, csrf, content_type, too_large, invalid_json, bad_request, invalid_credentials, unknown_method, too_many_requests, too_many_attempts, busy, engine_unreachable.",
                &["reason"],
            ),
            admin_actions: counter_vec(
                "herald_admin_actions_total",
                "Server API methods the web console ran, by method.",
                &["method"],
            ),
            engine_streams: gauge(
                "herald_engine_streams",
                "History streams the memory engine keeps (0 with Redis, which keeps its own).",
            ),
            connection_limit_refusals: counter_vec(
                "herald_client_connection_limit_refusals_total",
                "Connection requests answered with HTTP 503 because the node was at client.connection_limit (node) or client.connection_rate_limit (rate), by limit.",
                &["limit"],
            ),
            mailbox_overflows: counter(
                "herald_client_mailbox_overflows_total",
                "Connections closed with 3010 because control commands and gap signals for them piled up past their bounded mailbox.",
            ),
            engine_streams_evicted: counter(
                "herald_engine_streams_evicted_total",
                "History streams the memory engine evicted at engine.memory.stream_limit (least recently used first).",
            ),
            tls_reloads: counter_vec(
                "herald_tls_certificate_reloads_total",
                "Certificate reloads: loaded, or refused with the old pair kept.",
                &["result"],
            ),
            bad_messages: counter_vec(
                "herald_client_bad_messages_total",
                "Client messages refused: undecodable (3501), of the wrong WebSocket message type for the connection's format (3501), or carrying a command payload that is not JSON (error 107), by format and reason.",
                &["format", "reason"],
            ),
            upgrades: counter_vec(
                "herald_client_upgrades_total",
                "WebSocket connections upgraded on the client route, by the format of the client protocol they speak (json, protobuf).",
                &["format"],
            ),
            transport_connections: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "herald_transport_connections",
                        "Client connections open now, by transport (websocket, http_stream, sse, uni_websocket, uni_sse, uni_http_stream, uni_grpc).",
                    ),
                    &["transport"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            transport_connects: counter_vec(
                "herald_transport_connects_total",
                "Client connections opened, by transport.",
                &["transport"],
            ),
            transport_refusals: counter_vec(
                "herald_transport_refusals_total",
                "Requests of the HTTP-streaming, SSE and unidirectional transports refused before a connection, by transport and reason.",
                &["transport", "reason"],
            ),
            emulation_requests: counter_vec(
                "herald_emulation_requests_total",
                "Requests to /emulation, by result (local, forwarded, no_session, unknown_node, bad_request, too_large, method, origin, failed).",
                &["result"],
            ),
            proxy_requests: counter_vec(
                "herald_proxy_requests_total",
                "Calls to the application backend, by proxy (connect, rpc) and result (ok, error, disconnect, timeout, unreachable, status, invalid).",
                &["proxy", "result"],
            ),
            proxy_duration: histogram_vec(
                "herald_proxy_duration_seconds",
                "Time of one call to the application backend, by proxy.",
                &["proxy"],
            ),
            compressed_shared: compressions.with_label_values(&["shared"]),
            compressed_connection: compressions.with_label_values(&["connection"]),
            compressions,
            inflations: counter_vec(
                "herald_websocket_inflations_total",
                "Compressed client messages inflated, by result (too_big: past client.message_size_limit, closed 1009).",
                &["result"],
            ),
            deflate_negotiated: counter(
                "herald_websocket_compression_negotiated_total",
                "WebSocket connections that negotiated permessage-deflate.",
            ),
            seen_rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            seen_undecryptable: AtomicU64::new(0),
            seen_evicted: AtomicU64::new(0),
            sent_publication: messages_sent.with_label_values(&["push_publication"]),
            sent_join: messages_sent.with_label_values(&["push_join"]),
            sent_leave: messages_sent.with_label_values(&["push_leave"]),
            messages_sent,
            delta_patch: delta_encodings.with_label_values(&["delta"]),
            delta_full: delta_encodings.with_label_values(&["full"]),
            registry,
        };
        metrics.preinitialise();
        metrics
    }

    fn preinitialise(&self) {
        for method in CLIENT_METHODS {
            self.command_duration.with_label_values(&[method]);
            for code in ErrorCode::ALL {
                self.reply_errors
                    .with_label_values(&[*method, code.code().to_string().as_str()]);
            }
        }
        // Codes a backend chose (proxies).
        for method in ["connect", "rpc"] {
            self.reply_errors.with_label_values(&[method, "custom"]);
        }
        for disconnect in Disconnect::ALL {
            self.server_disconnects
                .with_label_values(&[&disconnect.code.to_string()]);
        }
        self.server_disconnects.with_label_values(&["custom"]);
        for frame_type in FRAME_TYPES {
            self.messages_sent.with_label_values(&[frame_type]);
            self.messages_received.with_label_values(&[frame_type]);
        }
        for reason in REJECT_REASONS {
            self.bus_rejected.with_label_values(&[reason]);
        }
        for reason in HANDSHAKE_REFUSAL_REASONS {
            self.handshake_refusals.with_label_values(&[reason]);
        }
        for reason in BODY_CUT_REASONS {
            self.bodies_cut.with_label_values(&[reason]);
        }
        for limit in CONNECTION_LIMITS {
            self.connection_limit_refusals.with_label_values(&[limit]);
        }
        for result in ADMIN_LOGIN_RESULTS {
            self.admin_logins.with_label_values(&[result]);
        }
        for reason in ADMIN_REFUSAL_REASONS {
            self.admin_refused.with_label_values(&[reason]);
        }
        for method in ADMIN_METHODS {
            self.admin_actions.with_label_values(&[method]);
        }
        for reason in API_REFUSAL_REASONS {
            self.api_refused.with_label_values(&[reason]);
        }
        for result in ["loaded", "refused"] {
            self.tls_reloads.with_label_values(&[result]);
        }
        for result in INFLATION_RESULTS {
            self.inflations.with_label_values(&[result]);
        }
        for kind in COMPRESSION_KINDS {
            self.compressions.with_label_values(&[kind]);
        }
        for transport in Transport::ALL {
            self.transport_connections
                .with_label_values(&[transport.label()]);
            self.transport_connects
                .with_label_values(&[transport.label()]);
            if transport != Transport::WebSocket {
                for reason in TRANSPORT_REFUSAL_REASONS {
                    self.transport_refusals
                        .with_label_values(&[transport.label(), reason]);
                }
            }
        }
        for result in EMULATION_RESULTS {
            self.emulation_requests.with_label_values(&[result]);
        }
        for proxy in PROXIES {
            self.proxy_duration.with_label_values(&[proxy]);
            for result in PROXY_RESULTS {
                self.proxy_requests.with_label_values(&[proxy, result]);
            }
        }
        for format in [Format::Json, Format::Protobuf] {
            self.upgrades.with_label_values(&[format.label()]);
            for reason in BAD_MESSAGE_REASONS {
                self.bad_messages
                    .with_label_values(&[format.label(), reason]);
            }
        }
        for label in ["expired", "unavailable", "unknown_key_pending"] {
            self.auth_failures.with_label_values(&[label]);
        }
        for reason in InvalidReason::ALL {
            self.auth_failures.with_label_values(&[reason.as_str()]);
        }
        for method in API_METHODS {
            self.api_errors.with_label_values(&[*method, "other"]);
            self.api_duration.with_label_values(&[method]);
            for code in ErrorCode::ALL {
                self.api_errors
                    .with_label_values(&[*method, code.code().to_string().as_str()]);
            }
        }
    }

    /// The text exposition, with the node's figures read now.
    pub(crate) fn render(&self, node: &NodeFigures) -> String {
        self.num_clients.set(gauge_value(node.clients));
        self.num_users.set(gauge_value(node.users));
        self.num_channels.set(gauge_value(node.channels));
        self.num_subscriptions.set(gauge_value(node.subscriptions));
        self.num_nodes.set(gauge_value(node.nodes));
        self.engine_healthy.set(i64::from(node.engine_healthy));
        self.engine_clock_skew
            .set(node.clock.map_or(0.0, |c| c.skew_ms as f64 / 1000.0));
        let counters = &node.counters;
        let before = self
            .seen_undecryptable
            .swap(counters.history_undecryptable, Ordering::Relaxed);
        if counters.history_undecryptable > before {
            self.history_undecryptable
                .inc_by(counters.history_undecryptable - before);
        }
        self.engine_streams.set(
            counters
                .streams
                .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        );
        let before = self
            .seen_evicted
            .swap(counters.streams_evicted, Ordering::Relaxed);
        if counters.streams_evicted > before {
            self.engine_streams_evicted
                .inc_by(counters.streams_evicted - before);
        }
        for (i, reason) in REJECT_REASONS.iter().enumerate() {
            let integrity = counters
                .envelopes_rejected
                .iter()
                .filter(|(r, _)| r == reason)
                .map(|(_, n)| n)
                .sum::<u64>();
            let total = integrity
                + match *reason {
                    "malformed" => counters.messages_rejected,
                    "overflow" => counters.messages_dropped,
                    _ => 0,
                };
            let before = self.seen_rejected[i].swap(total, Ordering::Relaxed);
            if total > before {
                self.bus_rejected
                    .with_label_values(&[reason])
                    .inc_by(total - before);
            }
        }
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One answered server API command.
pub(crate) fn api_command(method: &str, took: Duration, error: Option<&ApiError>) {
    let method = API_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("batch");
    let m = &*METRICS;
    m.api_duration
        .with_label_values(&[method])
        .observe(took.as_secs_f64());
    if let Some(error) = error {
        m.api_errors
            .with_label_values(&[method, &closed_code(error.code)])
            .inc();
    }
}

/// A connection closed at accept over the per-address limit.
pub(crate) fn address_limit_refusal() {
    METRICS
        .handshake_refusals
        .with_label_values(&[ADDRESS_LIMIT])
        .inc();
}

/// A client message refused; `reason` is one of [`BAD_MESSAGE_REASONS`].
pub(crate) fn bad_message(format: Format, reason: &'static str) {
    METRICS
        .bad_messages
        .with_label_values(&[format.label(), reason])
        .inc();
}

/// A publish whose data is not JSON, on a channel that carries JSON. Only
/// protobuf clients send data that is not JSON (a JSON client's frame would
/// not decode), so it counts under that format.
pub(crate) fn payload_not_json() {
    bad_message(Format::Protobuf, "payload_not_json");
}

/// A request of `transport` refused before a connection; `reason` is one
/// of [`TRANSPORT_REFUSAL_REASONS`].
pub(crate) fn transport_refused(transport: Transport, reason: &'static str) {
    METRICS
        .transport_refusals
        .with_label_values(&[transport.label(), reason])
        .inc();
}

/// An `/emulation` request's result, one of [`EMULATION_RESULTS`].
pub(crate) fn emulation_request(result: &'static str) {
    METRICS
        .emulation_requests
        .with_label_values(&[result])
        .inc();
}

/// A client connection of `transport` opened (`open`) or ended.
pub(crate) fn transport_connection(transport: Transport, open: bool) {
    let gauge = METRICS
        .transport_connections
        .with_label_values(&[transport.label()]);
    if open {
        gauge.inc();
        METRICS
            .transport_connects
            .with_label_values(&[transport.label()])
            .inc();
    } else {
        gauge.dec();
    }
}

/// One message compressed: a shared frame's one compression per node
/// (`shared`), or one for a single connection.
pub(crate) fn deflated(shared: bool) {
    if shared {
        METRICS.compressed_shared.inc();
    } else {
        METRICS.compressed_connection.inc();
    }
}

/// A compressed client message inflated; `result` is one of [`INFLATION_RESULTS`].
pub(crate) fn inflated(result: &'static str) {
    METRICS.inflations.with_label_values(&[result]).inc();
}

/// A WebSocket connection upgraded on the client route.
pub(crate) fn upgraded(format: Format) {
    METRICS.upgrades.with_label_values(&[format.label()]).inc();
}

/// A request body cut off; `reason` is one of [`BODY_CUT_REASONS`].
pub(crate) fn body_cut(reason: &'static str) {
    METRICS.bodies_cut.with_label_values(&[reason]).inc();
}

/// A server API request refused before its body was read; `reason` is one
/// of [`API_REFUSAL_REASONS`].
pub(crate) fn api_refused(reason: &'static str) {
    METRICS.api_refused.with_label_values(&[reason]).inc();
}

/// One answered client command.
pub(crate) fn client_command(method: &'static str, took: Duration) {
    METRICS
        .command_duration
        .with_label_values(&[method])
        .observe(took.as_secs_f64());
}

pub(crate) fn reply_error(method: &'static str, code: ErrorCode) {
    METRICS
        .reply_errors
        .with_label_values(&[method, &code.code().to_string()])
        .inc();
}

/// An error reply whose code the backend chose (a proxy's `error`, 400–1999):
/// one `custom` label value, as for custom disconnect codes.
pub(crate) fn reply_error_code(method: &'static str, code: u32) {
    let known = ErrorCode::ALL.iter().find(|c| c.code() == code);
    let label = known.map_or_else(|| "custom".to_owned(), |c| c.code().to_string());
    METRICS
        .reply_errors
        .with_label_values(&[method, &label])
        .inc();
}

/// A proxy call and its result: `ok`, `error`, `disconnect`, or a failure
/// label (`herald_proxy::Failure::label`).
pub(crate) fn proxy_call(proxy: &'static str, result: &'static str, took: Duration) {
    METRICS
        .proxy_requests
        .with_label_values(&[proxy, result])
        .inc();
    METRICS
        .proxy_duration
        .with_label_values(&[proxy])
        .observe(took.as_secs_f64());
}

pub(crate) fn server_disconnect(code: u16) {
    // Custom codes from the API (4000-4999) share one label value.
    let label = if Disconnect::ALL.iter().any(|d| d.code == code) {
        code.to_string()
    } else {
        "custom".to_owned()
    };
    METRICS
        .server_disconnects
        .with_label_values(&[&label])
        .inc();
}

pub(crate) fn auth_failure(error: &TokenError) {
    METRICS
        .auth_failures
        .with_label_values(&[error.as_str()])
        .inc();
}

pub(crate) fn sent(frame_type: &'static str, frames: u64) {
    METRICS
        .messages_sent
        .with_label_values(&[frame_type])
        .inc_by(frames);
}

pub(crate) fn received(frame_type: &'static str) {
    METRICS
        .messages_received
        .with_label_values(&[frame_type])
        .inc();
}

fn closed_code(code: u32) -> String {
    match ErrorCode::from_code(code) {
        Some(c) => c.code().to_string(),
        None => "other".to_owned(),
    }
}
