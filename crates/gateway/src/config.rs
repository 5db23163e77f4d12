//! Configuration the gateway consumes (sections `http_server`, `client`,
//! `channel`, `http_api`, `shutdown` of interface.md). Defaults are the
//! documented ones.

use std::time::Duration;

use herald_auth::{ChannelConfig, SubscriptionTokenConfig, TokenConfig};
pub use herald_identity::IntrospectionConfig;
use serde::{Deserialize, Serialize};

mod admin;
mod transports;

pub use self::admin::{AdminConfig, AdminListener, DemoConfig, DemoTokens, MintToken};

pub use self::transports::{
    ConnectCodeToHttpResponse, ConnectCodeToUnidirectionalDisconnect, EmulatedStreamConfig,
    EmulationConfig, GrpcTlsConfig, HttpResponseTo, HttpResponseTransform, TransportsConfig,
    UniDisconnectTo, UniDisconnectTransform, UniGrpcConfig, UniHttpConfig, UniWebSocketConfig,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServerConfig {
    pub address: String,
    /// Public listener: the WebSocket endpoint. 0 picks a free port.
    pub port: u16,
    /// API, metrics and health; 0 serves them on `port`.
    pub internal_port: u16,
    pub tls: TlsConfig,
    /// Serves the WebSocket conformance echo at `/conformance/echo` on the
    /// public port, for the Autobahn test cases. Never in production.
    pub conformance_echo: bool,
    /// Longest an HTTP request body (either listener) may take to arrive,
    /// counted from its request head; the connection is closed after.
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".to_owned(),
            port: 8000,
            internal_port: 9000,
            tls: TlsConfig::default(),
            conformance_echo: false,
            request_body_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub enabled: bool,
    pub cert_pem_file: String,
    pub key_pem_file: String,
    pub client_ca_pem_file: String,
    pub client_auth: ClientAuth,
    pub min_version: MinVersion,
}

/// `http_server.tls.client_auth`: whether clients present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    None,
    /// Asked for; a client without one still connects.
    Optional,
    /// Required: the handshake fails without one from the configured CA.
    Required,
}

impl TryFrom<String> for ClientAuth {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            _ => Err(format!("{value:?} is not one of none, optional, required")),
        }
    }
}

/// `http_server.tls.min_version`: the oldest TLS version served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum MinVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

impl TryFrom<String> for MinVersion {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(format!("{value:?} is not one of \"1.2\", \"1.3\"")),
        }
    }
}

/// Which part of a client certificate names its holder
/// (`client.tls_identity_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum IdentitySource {
    /// A URI subject alternative name.
    #[serde(rename = "san_uri")]
    SanUri,
    /// A DNS subject alternative name.
    #[serde(rename = "san_dns")]
    SanDns,
    /// The subject's common name.
    #[serde(rename = "cn")]
    CommonName,
}

impl TryFrom<String> for IdentitySource {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "san_uri" => Ok(Self::SanUri),
            "san_dns" => Ok(Self::SanDns),
            "cn" => Ok(Self::CommonName),
            _ => Err(format!("{value:?} is not one of san_uri, san_dns, cn")),
        }
    }
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Glob patterns; empty = only requests without `Origin`.
    pub allowed_origins: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// Largest incoming frame in bytes (close 1009 above it).
    pub message_size_limit: usize,
    /// Bytes queued to one client before disconnect 3008.
    pub queue_max_size: usize,
    pub channel_limit: usize,
    pub user_connection_limit: usize,
    pub connection_limit_per_ip: usize,
    /// Most clients connected to this node at once; a connection request
    /// past it gets HTTP 503 (the SDKs retry). 0 = no limit.
    pub connection_limit: usize,
    /// Most new connections this node accepts per second (burst the same);
    /// past it HTTP 503. 0 = no limit.
    pub connection_rate_limit: u32,
    pub command_rate_limit: u32,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub expired_close_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub expired_sub_close_delay: Duration,
    /// How often a node refreshes presence of its clients and checks
    /// subscription expiry.
    #[serde(with = "humantime_serde")]
    pub presence_update_interval: Duration,
    /// Most publications one history call returns.
    pub history_max_publication_limit: usize,
    /// Most publications a recovery returns; beyond it `recovered: false`.
    pub recovery_max_publication_limit: usize,
    pub allow_anonymous_connect_without_token: bool,
    /// A connection token without `sub` (anonymous) is refused with 3507.
    pub disallow_anonymous_connection_tokens: bool,
    /// Name of an HTTP header of the request that opens a connection whose
    /// value is the user, when the connect carries no token. Only behind a
    /// proxy that sets it and strips it from clients (docs/security.md).
    pub user_id_http_header: String,
    /// The connect result carries the server's time (`time`, Unix ms).
    pub connect_include_server_time: bool,
    /// Every connection of a user is subscribed to the user's personal
    /// channel, server-side.
    pub subscribe_to_user_personal_channel: PersonalChannelConfig,
    pub tls_identity_as_user: bool,
    /// Which part of a client certificate names the user, first found wins:
    /// `san_uri`, `san_dns`, `cn`.
    pub tls_identity_order: Vec<IdentitySource>,
    /// Development only: no auth, every permission.
    pub insecure: bool,
    pub token: TokenConfig,
    pub subscription_token: SubscriptionTokenConfig,
    pub introspection: IntrospectionConfig,
    /// Which disconnect a unidirectional client gets for a connect error.
    pub connect_code_to_unidirectional_disconnect: ConnectCodeToUnidirectionalDisconnect,
    /// `client.proxy`: the connect and refresh proxies (docs/proxy.md).
    pub proxy: herald_proxy::ClientProxies,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            message_size_limit: 65536,
            queue_max_size: 1_048_576,
            channel_limit: 128,
            user_connection_limit: 0,
            connection_limit_per_ip: 0,
            connection_limit: 0,
            connection_rate_limit: 0,
            command_rate_limit: 0,
            handshake_timeout: Duration::from_secs(10),
            expired_close_delay: Duration::from_secs(25),
            expired_sub_close_delay: Duration::from_secs(25),
            presence_update_interval: Duration::from_secs(27),
            history_max_publication_limit: 300,
            recovery_max_publication_limit: 300,
            allow_anonymous_connect_without_token: false,
            disallow_anonymous_connection_tokens: false,
            user_id_http_header: String::new(),
            connect_include_server_time: false,
            subscribe_to_user_personal_channel: PersonalChannelConfig::default(),
            tls_identity_as_user: false,
            tls_identity_order: vec![
                IdentitySource::SanUri,
                IdentitySource::SanDns,
                IdentitySource::CommonName,
            ],
            insecure: false,
            token: TokenConfig::default(),
            subscription_token: SubscriptionTokenConfig::default(),
            introspection: IntrospectionConfig::default(),
            connect_code_to_unidirectional_disconnect: Default::default(),
            proxy: Default::default(),
        }
    }
}

/// `client.subscribe_to_user_personal_channel`: a server-side subscription
/// of every connection with a user to `<namespace>:#<user>` (`#<user>`
/// without a namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersonalChannelConfig {
    pub enabled: bool,
    /// The personal channel's namespace; empty: `channel.without_namespace`.
    pub personal_channel_namespace: String,
    /// A user keeps one connection: a new one closes the user's others, on
    /// every node, with 3504. Needs presence in the personal namespace.
    pub single_connection: bool,
}

impl PersonalChannelConfig {
    /// `user`'s personal channel.
    pub fn channel(&self, user: &str) -> String {
        if self.personal_channel_namespace.is_empty() {
            format!("#{user}")
        } else {
            format!("{}:#{user}", self.personal_channel_namespace)
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpApiConfig {
    pub key: String,
    /// Server API requests handled at once; more wait up to 1 s for a
    /// place, then get 503.
    pub max_concurrent_requests: usize,
    /// Most commands in one `batch` and channels in one `broadcast`.
    pub max_batch_size: usize,
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            max_concurrent_requests: 64,
            max_batch_size: 1000,
        }
    }
}

impl std::fmt::Debug for HttpApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApiConfig")
            .field("key", &redacted(&self.key))
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_batch_size", &self.max_batch_size)
            .finish()
    }
}

/// `grpc_api`: the server API over gRPC, on its own port (Centrifugo v6's
/// section and defaults but the address, loopback like `uni_grpc`'s).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcApiConfig {
    pub enabled: bool,
    pub address: String,
    /// 0 picks a free port (printed in the ready line).
    pub port: u16,
    /// `authorization: apikey <key>`; empty = `http_api.key`.
    pub key: String,
    /// Largest request message accepted, in bytes.
    pub max_receive_message_size: usize,
    pub tls: GrpcTlsConfig,
}

impl GrpcApiConfig {
    /// The key calls must carry: `grpc_api.key`, else `http_api.key`.
    pub fn effective_key<'a>(&'a self, http_api: &'a HttpApiConfig) -> &'a str {
        if self.key.is_empty() {
            &http_api.key
        } else {
            &self.key
        }
    }
}

impl Default for GrpcApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "127.0.0.1".to_owned(),
            port: 10000,
            key: String::new(),
            max_receive_message_size: 4 * 1024 * 1024,
            tls: GrpcTlsConfig::default(),
        }
    }
}

impl std::fmt::Debug for GrpcApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcApiConfig")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("key", &redacted(&self.key))
            .field("max_receive_message_size", &self.max_receive_message_size)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

/// `websocket`: permessage-deflate on `/connection/websocket` (Centrifugo
/// v6's names and defaults; docs/protocol.md, "WebSocket compression").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSocketConfig {
    /// Accept a client's permessage-deflate offer.
    pub compression: bool,
    /// Messages with fewer payload bytes go uncompressed; 0 compresses all.
    pub compression_min_size: usize,
    /// zlib level: 0 (stored) to 9 (smallest), -1 for zlib's default (6).
    pub compression_level: i32,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            compression: false,
            compression_min_size: 0,
            compression_level: 1,
        }
    }
}

impl WebSocketConfig {
    /// The zlib level to compress with (`compression_level`, -1 being 6;
    /// outside 0–9 is refused by the config check).
    pub fn zlib_level(&self) -> u32 {
        match self.compression_level {
            -1 => 6,
            level => level.clamp(0, 9) as u32,
        }
    }
}

/// Everything the gateway needs to run a node.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    pub http_server: HttpServerConfig,
    pub client: ClientConfig,
    /// `websocket`: compression of the bidirectional WebSocket.
    pub websocket: WebSocketConfig,
    pub channel: ChannelConfig,
    pub http_api: HttpApiConfig,
    pub grpc_api: GrpcApiConfig,
    pub shutdown: ShutdownConfig,
    pub endpoints: EndpointsConfig,
    pub transports: TransportsConfig,
    /// `rpc`: client RPC calls answered by the backend.
    pub rpc: herald_proxy::RpcConfig,
    /// `channel.proxy`: the namespaces' default subscribe, publish and
    /// sub_refresh proxies.
    pub channel_proxy: herald_proxy::ChannelProxies,
    /// `proxies`: named proxies a namespace may select.
    pub proxies: Vec<herald_proxy::NamedProxy>,
    /// Signs every proxy request (`proxy_signing`); the default signs
    /// nothing. A shared handle: the keyring reload swaps its keys.
    pub proxy_signer: herald_proxy::ProxySigner,
    /// `admin`: the web console.
    pub admin: AdminConfig,
    /// `demo`: the chat page of the development profile.
    pub demo: DemoConfig,
    /// How the demo page gets tokens; required when `demo.enabled`.
    pub demo_tokens: Option<DemoTokens>,
}

/// Which optional internal endpoints are served (`prometheus.enabled`,
/// `health.enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointsConfig {
    /// `/metrics`.
    pub prometheus: bool,
    /// `/health` and `/ready`.
    pub health: bool,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self {
            prometheus: true,
            health: true,
        }
    }
}
