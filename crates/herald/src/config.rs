//! The node's configuration: every section of interface.md, how it is loaded
//! (a file, then `HERALD_*` environment variables, then `*_file` secrets) and
//! how it is validated.
//!
//! Sections the gateway and auth crates consume reuse their structs; the rest
//! (engine, keyrings, prometheus, health, log) are defined here. A bad value
//! is named by `serde_path_to_error`. Unknown keys are errors: after
//! deserializing, the typed config is serialized back and every key of the
//! input that did not come back out is unknown. (A deserialize-time tracker
//! such as `serde_ignored` cannot see into `#[serde(flatten)]` sections, which
//! auth uses for `client.subscription_token` and `channel.namespaces`.)

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use config::{FileFormat, Value, ValueKind};
use herald_auth::{ChannelConfig, ChannelOptions, ChannelPolicy, TokenConfig, TokenVerifier};
use herald_gateway::config::{
    EmulatedStreamConfig, EmulationConfig, TransportsConfig, UniGrpcConfig, UniHttpConfig,
    UniWebSocketConfig,
};
use herald_gateway::{
    ClientAuth, ClientConfig, GatewayConfig, GrpcApiConfig, HttpApiConfig, HttpServerConfig,
    ShutdownConfig, WebSocketConfig,
};
use serde::{Deserialize, Serialize};

/// Prefix of every variable of the environment layer.
pub const ENV_PREFIX: &str = "HERALD_";
/// Read by the CLI as `--config`; never part of the environment layer.
pub const CONFIG_PATH_ENV: &str = "HERALD_CONFIG";

/// Keys that hold a secret (or a key's PEM text) and may instead be given as a
/// path in the sibling key `<key>_file`.
pub const FILE_KEYS: &[&str] = &[
    "client.token.hmac_secret_key",
    "client.token.hmac_previous_secret_key",
    "client.token.rsa_public_key",
    "client.token.ecdsa_public_key",
    "client.subscription_token.hmac_secret_key",
    "client.subscription_token.hmac_previous_secret_key",
    "client.subscription_token.rsa_public_key",
    "client.subscription_token.ecdsa_public_key",
    "client.introspection.client_secret",
    "http_api.key",
    "grpc_api.key",
    "engine.redis.password",
    "engine.redis.sentinel_password",
    "admin.password",
    "admin.secret",
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "client.allowed_origins",
    "client.tls_identity_order",
    "engine.redis.address",
    "engine.redis.cluster_address",
    "engine.redis.sentinel_address",
];

/// Why a configuration cannot be used. Every variant names the key at fault
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: unsupported extension (use .toml, .yaml, .yml or .json)")]
    UnsupportedFormat { path: PathBuf },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("environment variable {name}: value is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("{}", unknown_keys_message(.keys))]
    UnknownKeys { keys: Vec<UnknownKey> },
    /// A value of the wrong type or out of range, or a failed check.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{key}_file: cannot read {path}: {source}")]
    SecretFile {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: set either {key} or {key}_file, not both")]
    SecretConflict { key: String },
    /// Refused by the auth crate (channel policy, token keys); names its key.
    #[error(transparent)]
    Auth(#[from] herald_auth::AuthConfigError),
    /// Refused by the identity crate (`client.introspection`).
    #[error(transparent)]
    Identity(#[from] herald_identity::IdentityError),
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// A key no section knows, and the environment variable that set it, if one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    pub env: Option<String>,
}

/// Every section of the configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http_server: HttpServerConfig,
    pub client: ClientConfig,
    /// `websocket`: permessage-deflate on `/connection/websocket`.
    pub websocket: WebSocketConfig,
    pub channel: ChannelSection,
    pub http_api: HttpApiConfig,
    /// `grpc_api`: the server API over gRPC (docs/protocol.md).
    pub grpc_api: GrpcApiConfig,
    pub engine: EngineConfig,
    pub bus_integrity: BusIntegrityConfig,
    pub history_encryption: HistoryEncryptionConfig,
    /// HMAC keyring signing the requests to the application backend
    /// (docs/proxy.md, "Signed proxy requests").
    pub proxy_signing: ProxySigningConfig,
    pub prometheus: PrometheusConfig,
    pub health: HealthConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    /// The transports besides WebSocket: top-level sections, as in
    /// Centrifugo (not flattened from one struct: the environment layer's
    /// strings only convert to numbers and booleans in plain fields).
    pub http_stream: EmulatedStreamConfig,
    pub sse: EmulatedStreamConfig,
    pub emulation: EmulationConfig,
    pub uni_websocket: UniWebSocketConfig,
    pub uni_sse: UniHttpConfig,
    pub uni_http_stream: UniHttpConfig,
    pub uni_grpc: UniGrpcConfig,
    /// `rpc`: client RPC calls answered by the backend (docs/proxy.md).
    pub rpc: herald_proxy::RpcConfig,
    /// `proxies`: named proxies a namespace or RPC namespace may select.
    pub proxies: Vec<herald_proxy::NamedProxy>,
    /// `admin`: the web console (docs/operations.md, "The web console").
    pub admin: herald_gateway::config::AdminConfig,
    /// `demo`: the development profile's chat page at `/`.
    pub demo: herald_gateway::config::DemoConfig,
}

/// Section `[channel]`: the namespaces (herald-auth's [`ChannelConfig`])
/// and `channel.proxy`. Its fields are written out rather than flattened:
/// the environment layer's strings only convert to numbers and booleans in
/// plain fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelSection {
    #[serde(with = "humantime_serde")]
    pub history_meta_ttl: std::time::Duration,
    pub without_namespace: ChannelOptions,
    pub namespaces: Vec<herald_auth::NamespaceConfig>,
    pub proxy: herald_proxy::ChannelProxies,
}

impl Default for ChannelSection {
    fn default() -> Self {
        let policy = ChannelConfig::default();
        Self {
            history_meta_ttl: policy.history_meta_ttl,
            without_namespace: policy.without_namespace,
            namespaces: policy.namespaces,
            proxy: herald_proxy::ChannelProxies::default(),
        }
    }
}

impl ChannelSection {
    /// The namespaces, as herald-auth reads them.
    pub fn policy(&self) -> ChannelConfig {
        ChannelConfig {
            history_meta_ttl: self.history_meta_ttl,
            without_namespace: self.without_namespace.clone(),
            namespaces: self.namespaces.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    #[serde(rename = "type")]
    pub kind: EngineKind,
    pub memory: MemoryConfig,
    pub redis: RedisConfig,
}

/// `[engine.memory]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Most history streams kept; past it the least recently used are
    /// evicted (their clients told). 0 = no limit.
    pub stream_limit: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            stream_limit: herald_bus::memory::DEFAULT_STREAM_LIMIT,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum EngineKind {
    #[default]
    Memory,
    Redis,
}

impl TryFrom<String> for EngineKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            _ => Err(format!("{value:?} is not one of memory, redis")),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Several addresses shard channels over several servers.
    pub address: Vec<String>,
    /// Redis Cluster seed nodes.
    pub cluster_address: Vec<String>,
    pub prefix: String,
    pub user: String,
    pub password: String,
    pub tls_ca_pem_file: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How often a node announces itself to the others.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node silent this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// Pub/sub connections per Redis server (or per cluster).
    pub pubsub_connections: usize,
    /// TLS to the servers herald is not given a URL for: the masters
    /// Sentinel names.
    pub tls: RedisTlsConfig,
    /// Sentinels of the one master herald uses; replaces `address`.
    pub sentinel_address: Vec<String>,
    pub sentinel_master_name: String,
    pub sentinel_user: String,
    pub sentinel_password: String,
    pub sentinel_tls: SentinelTlsConfig,
}

/// `[engine.redis.tls]`: TLS to Sentinel-named masters (`rediss://` URLs
/// decide it for `address` and `cluster_address`; the CA is `tls_ca_pem_file`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisTlsConfig {
    pub enabled: bool,
}

/// `[engine.redis.sentinel_tls]`: TLS to the Sentinels.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SentinelTlsConfig {
    /// Sentinel addresses given as `host:port` or `redis://` are reached
    /// over TLS (`rediss://` always is).
    pub enabled: bool,
    /// CA certificate(s) trusted for the Sentinels; empty = system roots.
    pub server_ca_pem_file: String,
}

/// The engine's own defaults: one set, in herald-bus.
impl Default for RedisConfig {
    fn default() -> Self {
        let engine = herald_bus::redis::RedisConfig::default();
        Self {
            address: engine.addresses,
            cluster_address: engine.cluster_addresses,
            prefix: engine.prefix,
            user: engine.user.unwrap_or_default(),
            password: engine.password.unwrap_or_default(),
            tls_ca_pem_file: String::new(),
            connect_timeout: engine.connect_timeout,
            command_timeout: engine.command_timeout,
            heartbeat_interval: engine.heartbeat_interval,
            node_ttl: engine.node_ttl,
            pubsub_connections: engine.pubsub_connections,
            tls: RedisTlsConfig {
                enabled: engine.master_tls,
            },
            sentinel_address: Vec::new(),
            sentinel_master_name: String::new(),
            sentinel_user: String::new(),
            sentinel_password: String::new(),
            sentinel_tls: SentinelTlsConfig::default(),
        }
    }
}

/// HMAC keyring for envelopes that cross Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BusIntegrityConfig {
    /// Key id used to sign; empty = signing off.
    pub active: String,
    pub keys: Vec<BusKeyConfig>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BusKeyConfig {
    pub id: String,
    /// Base64 of at least 32 bytes.
    pub secret: String,
    pub secret_file: String,
}

/// HMAC keyring signing proxy requests: the shape of `[bus_integrity]`.
/// herald signs with the active key only; the others are there for the
/// backend's verify-only period of a rotation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxySigningConfig {
    /// Key id used to sign; empty = requests go unsigned.
    pub active: String,
    pub keys: Vec<ProxySigningKeyConfig>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxySigningKeyConfig {
    /// Visible ASCII without `,` (it is written into the header).
    pub id: String,
    /// Base64 of at least 32 bytes; the HMAC key is the decoded bytes.
    pub secret: String,
    pub secret_file: String,
}

/// AEAD keyring for payloads stored in history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryEncryptionConfig {
    pub active: String,
    pub keys: Vec<HistoryKeyConfig>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryKeyConfig {
    pub id: String,
    /// Base64 of exactly 32 bytes (an XChaCha20-Poly1305 key).
    pub key: String,
    pub key_file: String,
}

// Hand-written Debug for the structs holding secrets: a `{:?}` of the
// config never prints one.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("cluster_address", &self.cluster_address)
            .field("prefix", &self.prefix)
            .field("user", &self.user)
            .field("password", &Redacted(&self.password))
            .field("tls_ca_pem_file", &self.tls_ca_pem_file)
            .field("tls", &self.tls)
            .field("sentinel_address", &self.sentinel_address)
            .field("sentinel_master_name", &self.sentinel_master_name)
            .field("sentinel_user", &self.sentinel_user)
            .field("sentinel_password", &Redacted(&self.sentinel_password))
            .field("sentinel_tls", &self.sentinel_tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_ttl", &self.node_ttl)
            .field("pubsub_connections", &self.pubsub_connections)
            .finish()
    }
}

impl std::fmt::Debug for BusKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusKeyConfig")
            .field("id", &self.id)
            .field("secret", &Redacted(&self.secret))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

impl std::fmt::Debug for ProxySigningKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySigningKeyConfig")
            .field("id", &self.id)
            .field("secret", &Redacted(&self.secret))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

impl std::fmt::Debug for HistoryKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryKeyConfig")
            .field("id", &self.id)
            .field("key", &Redacted(&self.key))
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// Shows whether a secret is set, never its value.
struct Redacted<'a>(&'a str);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    pub enabled: bool,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    pub enabled: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{value:?} is not one of text, json")),
        }
    }
}

impl Config {
    /// The sections the gateway runs a node with.
    pub fn gateway(&self) -> GatewayConfig {
        GatewayConfig {
            http_server: self.http_server.clone(),
            client: self.client.clone(),
            websocket: self.websocket.clone(),
            channel: self.channel.policy(),
            http_api: self.http_api.clone(),
            grpc_api: self.grpc_api.clone(),
            shutdown: self.shutdown.clone(),
            endpoints: herald_gateway::EndpointsConfig {
                prometheus: self.prometheus.enabled,
                health: self.health.enabled,
            },
            transports: TransportsConfig {
                http_stream: self.http_stream.clone(),
                sse: self.sse.clone(),
                emulation: self.emulation.clone(),
                uni_websocket: self.uni_websocket.clone(),
                uni_sse: self.uni_sse.clone(),
                uni_http_stream: self.uni_http_stream.clone(),
                uni_grpc: self.uni_grpc.clone(),
            }
            .resolved(),
            rpc: self.rpc.clone(),
            channel_proxy: self.channel.proxy.clone(),
            proxies: self.proxies.clone(),
            // Built from `proxy_signing` by the caller (`proxy_signing_keyring`),
            // which also hands it to the keyring watcher.
            proxy_signer: herald_proxy::ProxySigner::default(),
            admin: self.admin.clone(),
            demo: self.demo.clone(),
            // Set by `serve`, which mints tokens (`token::mint`).
            demo_tokens: None,
        }
    }
}

/// A configuration that passed validation, and what an operator should hear about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Accepted but doubtful settings (short HMAC secret, insecure mode, ...).
    pub warnings: Vec<String>,
}

/// Where the file layer comes from.
#[derive(Debug, Clone, Copy)]
pub enum FileLayer<'a> {
    None,
    Path(&'a Path),
    /// Text in a given format (the dev profile, tests).
    Text(&'a str, FileFormat),
}

/// Loads and validates: the file layer, then the environment layer (`env`
/// holds `HERALD_*` pairs; anything else and `HERALD_CONFIG` are skipped), then
/// `*_file` secrets.
pub fn load<I>(file: FileLayer<'_>, env: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let config = parse(file, EnvLayer::new(env))?;
    let warnings = validate(&config)?;
    Ok(Loaded { config, warnings })
}

/// The `HERALD_*` variables of this process, less `HERALD_CONFIG`.
pub fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(ENV_PREFIX) || name == CONFIG_PATH_ENV {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::EnvNotUnicode {
                name: name.to_owned(),
            })?;
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

/// The file format a path's extension names.
pub fn format_of(path: &Path) -> Result<FileFormat, ConfigError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("toml") => Ok(FileFormat::Toml),
        Some("yaml" | "yml") => Ok(FileFormat::Yaml),
        Some("json") => Ok(FileFormat::Json),
        _ => Err(ConfigError::UnsupportedFormat {
            path: path.to_owned(),
        }),
    }
}

/// The environment layer: `HERALD_CLIENT__TOKEN__HMAC_SECRET_KEY` sets
/// `client.token.hmac_secret_key`. Values stay strings (the deserializer
/// converts them where a number or bool is wanted, so a numeric-looking secret
/// is never reinterpreted); list keys are split on commas.
#[derive(Debug, Clone)]
struct EnvLayer {
    /// key path -> (variable name, value)
    vars: BTreeMap<String, (String, String)>,
}

impl EnvLayer {
    fn new<I>(env: I) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut vars = BTreeMap::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_PATH_ENV || rest.is_empty() {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            vars.insert(key, (name, value));
        }
        Self { vars }
    }

    fn variable(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|(name, _)| name.as_str())
    }
}

impl config::Source for EnvLayer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, Value>, config::ConfigError> {
        let origin = "the environment".to_owned();
        let mut map = config::Map::new();
        for (key, (_, value)) in &self.vars {
            let kind = if LIST_KEYS.contains(&key.as_str()) {
                let items = value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::new(Some(&origin), item))
                    .collect::<Vec<_>>();
                ValueKind::Array(items)
            } else {
                ValueKind::String(value.clone())
            };
            map.insert(key.clone(), Value::new(Some(&origin), kind));
        }
        Ok(map)
    }
}

fn parse(file: FileLayer<'_>, env: EnvLayer) -> Result<Config, ConfigError> {
    let (text, format, origin) = match file {
        FileLayer::None => (None, FileFormat::Toml, "config".to_owned()),
        FileLayer::Path(path) => {
            let format = format_of(path)?;
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.to_owned(),
                source,
            })?;
            (
                Some(text),
                format,
                format!("config file {}", path.display()),
            )
        }
        FileLayer::Text(text, format) => (Some(text.to_owned()), format, "config".to_owned()),
    };

    let mut builder = config::Config::builder();
    if let Some(text) = &text {
        builder = builder.add_source(config::File::from_str(text, format));
    }
    builder = builder.add_source(env.clone());
    let parse_error = |e: config::ConfigError| ConfigError::Parse {
        origin: origin.clone(),
        message: e.to_string(),
    };

    // `*_file` keys are read from the merged tree, then their contents
    // override the key they stand for.
    let raw = builder.clone().build().map_err(parse_error)?;
    for &key in FILE_KEYS {
        let file_key = format!("{key}_file");
        let Some(path) = string_at(&raw, &file_key)?.filter(|p| !p.is_empty()) else {
            continue;
        };
        if string_at(&raw, key)?.is_some_and(|v| !v.is_empty()) {
            return Err(ConfigError::SecretConflict {
                key: key.to_owned(),
            });
        }
        let secret = read_secret(key, Path::new(&path))?;
        builder = builder
            .set_override(key, secret)
            .map_err(|e| ConfigError::invalid(key, e))?;
    }
    let merged = builder.build().map_err(parse_error)?;

    let input = config::Source::collect(&merged).map_err(parse_error)?;
    let mut config: Config = match serde_path_to_error::deserialize(merged.clone()) {
        Ok(config) => config,
        Err(error) => {
            let key = error.path().to_string();
            return Err(flattened_field_error(&merged, &key)
                .unwrap_or_else(|| ConfigError::invalid(key.as_str(), describe(error.inner()))));
        }
    };

    let known = serde_json::to_value(&config).map_err(|e| ConfigError::invalid("config", e))?;
    let file_keys: HashSet<String> = FILE_KEYS.iter().map(|k| format!("{k}_file")).collect();
    let mut unknown = Vec::new();
    unknown_keys(&input, &known, "", &mut unknown);
    unknown.retain(|key| !file_keys.contains(key));
    if !unknown.is_empty() {
        unknown.sort();
        let keys = unknown
            .into_iter()
            .map(|key| UnknownKey {
                env: env.variable(&key).map(str::to_owned),
                key,
            })
            .collect();
        return Err(ConfigError::UnknownKeys { keys });
    }

    resolve_keyring_files(&mut config)?;
    Ok(config)
}

fn unknown_keys_message(keys: &[UnknownKey]) -> String {
    let mut lines = Vec::with_capacity(keys.len());
    for unknown in keys {
        match &unknown.env {
            Some(name) => lines.push(format!("{}: unknown key (set by {name})", unknown.key)),
            None => lines.push(format!("{}: unknown key", unknown.key)),
        }
    }
    lines.join("; ")
}

/// Fields of a `#[serde(flatten)]` struct fail with the path of the section
/// that holds them (`client.subscription_token`, `channel.namespaces[0]`):
/// deserializing the section's flattened part alone names the field.
fn flattened_field_error(merged: &config::Config, key: &str) -> Option<ConfigError> {
    let table = merged.get_table(key).ok()?;
    if key == "client.subscription_token" {
        return field_error::<TokenConfig>(key, table, "enabled");
    }
    let index = key.strip_prefix("channel.namespaces[")?.strip_suffix(']')?;
    if !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field_error::<ChannelOptions>(key, table, "name")
}

fn field_error<T: serde::de::DeserializeOwned>(
    section: &str,
    mut table: config::Map<String, Value>,
    own_key: &str,
) -> Option<ConfigError> {
    table.remove(own_key);
    let value = Value::new(None, ValueKind::Table(table));
    let error = serde_path_to_error::deserialize::<_, T>(value).err()?;
    Some(ConfigError::invalid(
        format!("{section}.{}", error.path()),
        describe(error.inner()),
    ))
}

/// A `config` error without the key it appends (our message starts with
/// the key already).
fn describe(error: &config::ConfigError) -> String {
    match error {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            ..
        } => match origin {
            Some(origin) => {
                format!("invalid type: {unexpected}, expected {expected} (in {origin})")
            }
            None => format!("invalid type: {unexpected}, expected {expected}"),
        },
        config::ConfigError::At { error, .. } => describe(error),
        other => other.to_string(),
    }
}

/// The string at `key`, `None` when the key is absent.
fn string_at(config: &config::Config, key: &str) -> Result<Option<String>, ConfigError> {
    match config.get_string(key) {
        Ok(value) => Ok(Some(value)),
        Err(config::ConfigError::NotFound(_)) => Ok(None),
        Err(e) => Err(ConfigError::invalid(key, e)),
    }
}

/// A secret file's contents without the trailing newline editors and
/// `kubectl create secret --from-file` leave.
fn read_secret(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

fn resolve_keyring_files(config: &mut Config) -> Result<(), ConfigError> {
    let bus = config.bus_integrity.keys.iter_mut();
    read_key_files(
        "bus_integrity",
        "secret",
        bus.map(|k| (&mut k.secret, &k.secret_file)),
    )?;
    let history = config.history_encryption.keys.iter_mut();
    read_key_files(
        "history_encryption",
        "key",
        history.map(|k| (&mut k.key, &k.key_file)),
    )?;
    let proxy = config.proxy_signing.keys.iter_mut();
    read_key_files(
        "proxy_signing",
        "secret",
        proxy.map(|k| (&mut k.secret, &k.secret_file)),
    )
}

/// Fills each key's `material` from its `<material>_file`, if one is set
/// (and the material is not also set).
fn read_key_files<'a>(
    section: &str,
    material: &str,
    keys: impl Iterator<Item = (&'a mut String, &'a String)>,
) -> Result<(), ConfigError> {
    for (i, (value, file)) in keys.enumerate() {
        if file.is_empty() {
            continue;
        }
        let name = format!("{section}.keys[{i}].{material}");
        if !value.is_empty() {
            return Err(ConfigError::SecretConflict { key: name });
        }
        *value = read_secret(&name, Path::new(file))?;
    }
    Ok(())
}

/// Collects the keys of `input` (the merged layers) that `known` (the typed
/// config serialized back) lacks, as `client.token.x` or
/// `channel.namespaces[0].name`, the shape `serde_path_to_error` prints.
fn unknown_keys(
    input: &config::Map<String, Value>,
    known: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (key, value) in input {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        // An explicit null (JSON, YAML) is an absent optional value, which
        // serializes to nothing.
        if matches!(value.kind, ValueKind::Nil) {
            continue;
        }
        let Some(known) = known.get(key) else {
            out.push(path);
            continue;
        };
        nested_unknown_keys(value, known, &path, out);
    }
}

fn nested_unknown_keys(
    value: &Value,
    known: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    match (&value.kind, known) {
        (ValueKind::Table(table), serde_json::Value::Object(_)) => {
            unknown_keys(table, known, path, out);
        }
        (ValueKind::Array(items), serde_json::Value::Array(known_items)) => {
            for (index, (item, known)) in items.iter().zip(known_items).enumerate() {
                nested_unknown_keys(item, known, &format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

/// The console and the demo page.
fn validate_admin(config: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let admin = &config.admin;
    if let Some(problem) = admin.problem() {
        let (key, message) = problem
            .split_once(": ")
            .unwrap_or(("admin", problem.as_str()));
        return Err(ConfigError::invalid(key, message));
    }
    if admin.enabled && !admin.password.is_empty() {
        herald_gateway::admin_password::check_hash(&admin.password)
            .map_err(|why| ConfigError::invalid("admin.password", &why))?;
    }
    if admin.enabled && admin.insecure {
        warnings.push(
            "admin.insecure is on: the web console asks for no login; development only".to_owned(),
        );
    }
    if config.demo.enabled {
        if config.client.token.hmac_secret_key.is_empty() {
            return Err(ConfigError::invalid(
                "demo.enabled",
                "the demo page mints tokens with client.token.hmac_secret_key, which is empty",
            ));
        }
        warnings.push(
            "demo.enabled: the chat page at / mints a token for any user name; development only"
                .to_owned(),
        );
    }
    Ok(())
}

/// Checks what serde cannot, and builds the channel policy and token
/// verifier to surface their errors. Returns warnings.
fn validate(config: &Config) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();

    let tls = &config.http_server.tls;
    if tls.enabled && tls.cert_pem_file.is_empty() {
        return Err(ConfigError::invalid(
            "http_server.tls.cert_pem_file",
            "required when http_server.tls.enabled is true",
        ));
    }
    if tls.enabled && tls.key_pem_file.is_empty() {
        return Err(ConfigError::invalid(
            "http_server.tls.key_pem_file",
            "required when http_server.tls.enabled is true",
        ));
    }
    if tls.client_auth != ClientAuth::None && tls.client_ca_pem_file.is_empty() {
        return Err(ConfigError::invalid(
            "http_server.tls.client_ca_pem_file",
            "required when http_server.tls.client_auth is optional or required",
        ));
    }
    if tls.client_auth == ClientAuth::None && !tls.client_ca_pem_file.is_empty() {
        return Err(ConfigError::invalid(
            "http_server.tls.client_auth",
            "is \"none\" while client_ca_pem_file is set: say \"optional\" or \"required\"",
        ));
    }
    if config.client.tls_identity_as_user && (!tls.enabled || tls.client_auth == ClientAuth::None) {
        warnings.push(
            "client.tls_identity_as_user is on but no client certificate is asked for \
             (http_server.tls.client_auth = none): it has no effect"
                .to_owned(),
        );
    }
    if config.http_server.conformance_echo {
        warnings.push(
            "http_server.conformance_echo is on: /conformance/echo echoes anything; never in production"
                .to_owned(),
        );
    }

    validate_admin(config, &mut warnings)?;
    validate_transports(config)?;
    validate_proxies(config)?;
    validate_grpc_api(config)?;

    if config.http_server.request_body_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "http_server.request_body_timeout",
            "must be greater than 0: a body without a deadline can hold a connection for ever",
        ));
    }
    for (key, value) in [
        (
            "http_api.max_concurrent_requests",
            config.http_api.max_concurrent_requests,
        ),
        ("http_api.max_batch_size", config.http_api.max_batch_size),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
    }

    let client = &config.client;
    if !client.ping_interval.is_zero()
        && !client.pong_timeout.is_zero()
        && client.ping_interval <= client.pong_timeout
    {
        return Err(ConfigError::invalid(
            "client.ping_interval",
            format!(
                "must be greater than client.pong_timeout ({} <= {})",
                humantime::format_duration(client.ping_interval),
                humantime::format_duration(client.pong_timeout)
            ),
        ));
    }
    if client.insecure {
        warnings.push(
            "client.insecure is true: clients connect without credentials and get every \
             permission; never use this in production"
                .to_owned(),
        );
    }

    ChannelPolicy::new(&config.channel.policy())?;
    warnings.extend(validate_client_options(config)?);
    let verifier = TokenVerifier::new(&client.token, &client.subscription_token)?;
    warnings.extend(verifier.warnings());
    warnings.extend(herald_identity::check_introspection(&client.introspection)?);

    if config.engine.kind == EngineKind::Redis {
        validate_redis(&config.engine.redis)?;
    }

    validate_keyring(
        "bus_integrity",
        &config.bus_integrity.active,
        config
            .bus_integrity
            .keys
            .iter()
            .map(|k| (k.id.as_str(), k.secret.as_str())),
        "secret",
        KeyLength::AtLeast(32),
    )?;
    validate_keyring(
        "history_encryption",
        &config.history_encryption.active,
        config
            .history_encryption
            .keys
            .iter()
            .map(|k| (k.id.as_str(), k.key.as_str())),
        "key",
        KeyLength::Exactly(32),
    )?;
    let proxy_signing = &config.proxy_signing;
    validate_keyring(
        "proxy_signing",
        &proxy_signing.active,
        proxy_signing
            .keys
            .iter()
            .map(|k| (k.id.as_str(), k.secret.as_str())),
        "secret",
        KeyLength::AtLeast(herald_proxy::MIN_SIGNING_KEY_LEN),
    )?;
    for (i, key) in proxy_signing.keys.iter().enumerate() {
        if !herald_proxy::valid_signing_key_id(&key.id) {
            return Err(ConfigError::invalid(
                format!("proxy_signing.keys[{i}].id"),
                "1 to 255 visible ASCII characters other than ',' (it goes into a header)",
            ));
        }
    }

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        return Err(ConfigError::invalid("log.level", e));
    }
    Ok(warnings)
}

/// The personal channel's namespace and the user id header.
fn validate_client_options(config: &Config) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let client = &config.client;
    let personal = &client.subscribe_to_user_personal_channel;
    if personal.enabled {
        let name = &personal.personal_channel_namespace;
        let options = if name.is_empty() {
            Some(&config.channel.without_namespace)
        } else {
            config
                .channel
                .namespaces
                .iter()
                .find(|n| n.name == *name)
                .map(|n| &n.options)
        };
        let Some(options) = options else {
            return Err(ConfigError::invalid(
                "client.subscribe_to_user_personal_channel.personal_channel_namespace",
                format!("namespace {name:?} is not in channel.namespaces"),
            ));
        };
        if personal.single_connection && !options.presence {
            return Err(ConfigError::invalid(
                "client.subscribe_to_user_personal_channel.single_connection",
                "needs presence = true in the personal channel's namespace",
            ));
        }
    }
    let header = &client.user_id_http_header;
    if !header.is_empty() {
        if actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                "client.user_id_http_header",
                "is not a valid HTTP header name",
            ));
        }
        warnings.push(format!(
            "client.user_id_http_header is {header:?}: whoever can send this header connects \
             as any user; safe only behind a proxy that sets it and strips it from clients"
        ));
    }
    Ok(warnings)
}

#[derive(Debug, Clone, Copy)]
enum KeyLength {
    AtLeast(usize),
    Exactly(usize),
}

/// The transport sections: paths that can be routed, limits above 0, TLS
/// files for uni_grpc's TLS.
fn validate_transports(config: &Config) -> Result<(), ConfigError> {
    if !(-1..=9).contains(&config.websocket.compression_level) {
        return Err(ConfigError::invalid(
            "websocket.compression_level",
            "must be -1 (zlib's default, 6) or 0 to 9",
        ));
    }
    let prefixes = [
        (
            "http_stream.handler_prefix",
            &config.http_stream.handler_prefix,
        ),
        ("sse.handler_prefix", &config.sse.handler_prefix),
        ("emulation.handler_prefix", &config.emulation.handler_prefix),
        (
            "uni_websocket.handler_prefix",
            &config.uni_websocket.handler_prefix,
        ),
        ("uni_sse.handler_prefix", &config.uni_sse.handler_prefix),
        (
            "uni_http_stream.handler_prefix",
            &config.uni_http_stream.handler_prefix,
        ),
    ];
    for (key, prefix) in prefixes {
        // Empty: the transport's default path.
        if !prefix.is_empty() && (!prefix.starts_with('/') || prefix == "/connection/websocket") {
            return Err(ConfigError::invalid(
                key,
                "must be a path starting with / other than /connection/websocket",
            ));
        }
    }
    for (key, value) in [
        (
            "http_stream.max_request_body_size",
            config.http_stream.max_request_body_size,
        ),
        (
            "sse.max_request_body_size",
            config.sse.max_request_body_size,
        ),
        (
            "emulation.max_request_body_size",
            config.emulation.max_request_body_size,
        ),
        (
            "uni_websocket.message_size_limit",
            config.uni_websocket.message_size_limit,
        ),
        (
            "uni_sse.max_request_body_size",
            config.uni_sse.max_request_body_size,
        ),
        (
            "uni_http_stream.max_request_body_size",
            config.uni_http_stream.max_request_body_size,
        ),
        (
            "uni_grpc.max_receive_message_size",
            config.uni_grpc.max_receive_message_size,
        ),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
    }
    let tls = &config.uni_grpc.tls;
    for (key, file) in [
        ("uni_grpc.tls.cert_pem_file", &tls.cert_pem_file),
        ("uni_grpc.tls.key_pem_file", &tls.key_pem_file),
    ] {
        if config.uni_grpc.enabled && tls.enabled && file.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "required when uni_grpc.tls.enabled is true",
            ));
        }
    }
    Ok(())
}

/// `grpc_api`, when enabled: a key to check calls against, a message size
/// above 0, the TLS files when TLS is on.
fn validate_grpc_api(config: &Config) -> Result<(), ConfigError> {
    let grpc_api = &config.grpc_api;
    if !grpc_api.enabled {
        return Ok(());
    }
    if grpc_api.effective_key(&config.http_api).is_empty() {
        return Err(ConfigError::invalid(
            "grpc_api.key",
            "required when grpc_api.enabled is true and http_api.key is empty: \
             without a key every call would be refused",
        ));
    }
    if grpc_api.max_receive_message_size == 0 {
        return Err(ConfigError::invalid(
            "grpc_api.max_receive_message_size",
            "must be at least 1",
        ));
    }
    for (key, file) in [
        ("grpc_api.tls.cert_pem_file", &grpc_api.tls.cert_pem_file),
        ("grpc_api.tls.key_pem_file", &grpc_api.tls.key_pem_file),
    ] {
        if grpc_api.tls.enabled && file.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "required when grpc_api.tls.enabled is true",
            ));
        }
    }
    Ok(())
}

fn validate_redis(redis: &RedisConfig) -> Result<(), ConfigError> {
    if !redis.sentinel_address.is_empty() || !redis.sentinel_master_name.is_empty() {
        validate_sentinel(redis)?;
    }
    let (key, addresses) = if redis.cluster_address.is_empty() {
        ("engine.redis.address", &redis.address)
    } else {
        ("engine.redis.cluster_address", &redis.cluster_address)
    };
    if addresses.is_empty() {
        return Err(ConfigError::invalid(key, "lists no Redis server"));
    }
    for address in addresses {
        if !(address.starts_with("redis://") || address.starts_with("rediss://")) {
            return Err(ConfigError::invalid(
                key,
                "every address must start with redis:// or rediss://",
            ));
        }
    }
    if redis.prefix.is_empty() {
        return Err(ConfigError::invalid(
            "engine.redis.prefix",
            "must not be empty",
        ));
    }
    for (key, value) in [
        ("engine.redis.connect_timeout", redis.connect_timeout),
        ("engine.redis.command_timeout", redis.command_timeout),
        ("engine.redis.heartbeat_interval", redis.heartbeat_interval),
    ] {
        if value.is_zero() {
            return Err(ConfigError::invalid(key, "must be more than 0s"));
        }
    }
    if redis.node_ttl <= redis.heartbeat_interval {
        return Err(ConfigError::invalid(
            "engine.redis.node_ttl",
            "must be longer than engine.redis.heartbeat_interval",
        ));
    }
    if !(1..=64).contains(&redis.pubsub_connections) {
        return Err(ConfigError::invalid(
            "engine.redis.pubsub_connections",
            "must be between 1 and 64",
        ));
    }
    if !redis.tls_ca_pem_file.is_empty() {
        redis_ca(redis)?;
    }
    Ok(())
}

/// The Sentinel keys: both the addresses and the master name, no
/// `cluster_address` beside them, addresses as `host:port` or URLs.
fn validate_sentinel(redis: &RedisConfig) -> Result<(), ConfigError> {
    if redis.sentinel_address.is_empty() {
        return Err(ConfigError::invalid(
            "engine.redis.sentinel_address",
            "lists no Sentinel (sentinel_master_name is set)",
        ));
    }
    if redis.sentinel_master_name.is_empty() {
        return Err(ConfigError::invalid(
            "engine.redis.sentinel_master_name",
            "is needed with sentinel_address",
        ));
    }
    if !redis.cluster_address.is_empty() {
        return Err(ConfigError::invalid(
            "engine.redis.sentinel_address",
            "cannot be used with cluster_address",
        ));
    }
    for address in &redis.sentinel_address {
        let (_, host_port) = address.split_once("://").unwrap_or(("", address));
        let scheme_ok = !address.contains("://")
            || address.starts_with("redis://")
            || address.starts_with("rediss://");
        let port_ok = host_port
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !scheme_ok || !port_ok {
            return Err(ConfigError::invalid(
                "engine.redis.sentinel_address",
                "every address must be host:port, redis://host:port or rediss://host:port",
            ));
        }
    }
    pem_file(
        "engine.redis.sentinel_tls.server_ca_pem_file",
        &redis.sentinel_tls.server_ca_pem_file,
    )?;
    Ok(())
}

/// The Sentinel URLs: `host:port` gets `redis://`, or `rediss://` with
/// `sentinel_tls.enabled` (which also turns `redis://` into `rediss://`).
fn sentinel_urls(redis: &RedisConfig) -> Vec<String> {
    redis
        .sentinel_address
        .iter()
        .map(|address| {
            let host_port = address
                .strip_prefix("redis://")
                .or_else(|| address.strip_prefix("rediss://"))
                .unwrap_or(address);
            let tls = redis.sentinel_tls.enabled || address.starts_with("rediss://");
            let scheme = if tls { "rediss" } else { "redis" };
            format!("{scheme}://{host_port}")
        })
        .collect()
}

fn redis_ca(redis: &RedisConfig) -> Result<Option<Vec<u8>>, ConfigError> {
    pem_file("engine.redis.tls_ca_pem_file", &redis.tls_ca_pem_file)
}

/// The PEM text of the CA file at `key` (`None` when the key is empty).
fn pem_file(key: &str, path: &str) -> Result<Option<Vec<u8>>, ConfigError> {
    if path.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {path}: {e}")))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ConfigError::invalid(
            key,
            format!("{path} holds no PEM certificate"),
        ));
    }
    Ok(Some(pem))
}

impl Config {
    /// The Redis engine settings (reads the CA file, if one is set).
    pub fn redis_engine(&self) -> Result<herald_bus::redis::RedisConfig, ConfigError> {
        let redis = &self.engine.redis;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(herald_bus::redis::RedisConfig {
            addresses: redis.address.clone(),
            cluster_addresses: redis.cluster_address.clone(),
            prefix: redis.prefix.clone(),
            user: non_empty(&redis.user),
            password: non_empty(&redis.password),
            tls_ca_pem: redis_ca(redis)?,
            connect_timeout: redis.connect_timeout,
            command_timeout: redis.command_timeout,
            heartbeat_interval: redis.heartbeat_interval,
            node_ttl: redis.node_ttl,
            pubsub_connections: redis.pubsub_connections,
            master_tls: redis.tls.enabled,
            sentinel: if redis.sentinel_address.is_empty() {
                None
            } else {
                Some(herald_bus::redis::SentinelConfig {
                    addresses: sentinel_urls(redis),
                    master_name: redis.sentinel_master_name.clone(),
                    user: non_empty(&redis.sentinel_user),
                    password: non_empty(&redis.sentinel_password),
                    tls_ca_pem: pem_file(
                        "engine.redis.sentinel_tls.server_ca_pem_file",
                        &redis.sentinel_tls.server_ca_pem_file,
                    )?,
                })
            },
            ..Default::default()
        })
    }
}

impl Config {
    /// The bus keyring of `[bus_integrity]` (keys already checked by
    /// `validate`: base64 of at least 32 bytes, the active id among them).
    pub fn bus_keyring(&self) -> Result<herald_bus::integrity::BusKeyring, ConfigError> {
        let encoded = self.bus_integrity.keys.iter();
        let keys = decoded_keys(
            "bus_integrity",
            "secret",
            encoded.map(|k| (&k.id, &k.secret)),
        )?
        .into_iter()
        .map(|(id, secret)| herald_bus::integrity::BusKey { id, secret })
        .collect();
        herald_bus::integrity::BusKeyring::new(&self.bus_integrity.active, keys)
            .map_err(|e| ConfigError::invalid("bus_integrity", e))
    }

    /// The history keyring of `[history_encryption]` (keys already checked
    /// by `validate`: base64 of exactly 32 bytes).
    pub fn history_keyring(&self) -> Result<herald_bus::seal::HistoryKeyring, ConfigError> {
        let encoded = self.history_encryption.keys.iter();
        let keys = decoded_keys(
            "history_encryption",
            "key",
            encoded.map(|k| (&k.id, &k.key)),
        )?
        .into_iter()
        .map(|(id, key)| herald_bus::seal::HistoryKey { id, key })
        .collect();
        herald_bus::seal::HistoryKeyring::new(&self.history_encryption.active, keys)
            .map_err(|e| ConfigError::invalid("history_encryption", e))
    }

    /// The proxy signing keyring of `[proxy_signing]` (keys already checked
    /// by `validate`: base64 of at least 32 bytes, ids fit for the header,
    /// the active id among them).
    pub fn proxy_signing_keyring(&self) -> Result<herald_proxy::ProxySigningKeyring, ConfigError> {
        let encoded = self.proxy_signing.keys.iter();
        let keys = decoded_keys(
            "proxy_signing",
            "secret",
            encoded.map(|k| (&k.id, &k.secret)),
        )?
        .into_iter()
        .map(|(id, secret)| herald_proxy::ProxySigningKey { id, secret })
        .collect();
        herald_proxy::ProxySigningKeyring::new(&self.proxy_signing.active, keys)
            .map_err(|e| ConfigError::invalid("proxy_signing", e))
    }

    /// Files whose change means the keyrings may have changed: the
    /// `secret_file`/`key_file` of every key.
    pub fn keyring_files(&self) -> Vec<PathBuf> {
        let bus = self.bus_integrity.keys.iter().map(|k| &k.secret_file);
        let history = self.history_encryption.keys.iter().map(|k| &k.key_file);
        let proxy = self.proxy_signing.keys.iter().map(|k| &k.secret_file);
        bus.chain(history)
            .chain(proxy)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// A keyring key's id and bytes (wiped when dropped).
type DecodedKey = (String, zeroize::Zeroizing<Vec<u8>>);

/// The keys of a keyring section decoded (with the same decoder `validate`
/// accepted them with), as (id, bytes) wiped when dropped.
fn decoded_keys<'a>(
    section: &str,
    material: &str,
    keys: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<DecodedKey>, ConfigError> {
    keys.enumerate()
        .map(|(i, (id, encoded))| {
            let bytes = decode_key(encoded.trim()).ok_or_else(|| {
                ConfigError::invalid(format!("{section}.keys[{i}].{material}"), "not base64")
            })?;
            Ok((id.clone(), zeroize::Zeroizing::new(bytes)))
        })
        .collect()
}

fn validate_keyring<'a>(
    section: &str,
    active: &str,
    keys: impl Iterator<Item = (&'a str, &'a str)>,
    material: &str,
    length: KeyLength,
) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    for (i, (id, encoded)) in keys.enumerate() {
        if id.is_empty() {
            return Err(ConfigError::invalid(
                format!("{section}.keys[{i}].id"),
                "must not be empty",
            ));
        }
        if !ids.insert(id) {
            return Err(ConfigError::invalid(
                format!("{section}.keys[{i}].id"),
                format!("duplicate key id {id:?}"),
            ));
        }
        let key = format!("{section}.keys[{i}].{material}");
        if encoded.is_empty() {
            return Err(ConfigError::invalid(
                key,
                format!("required (or {material}_file)"),
            ));
        }
        // Never echo the value: it is a secret.
        let bytes = decode_key(encoded)
            .ok_or_else(|| ConfigError::invalid(key.as_str(), "not valid base64"))?;
        match length {
            KeyLength::AtLeast(n) if bytes.len() < n => {
                return Err(ConfigError::invalid(
                    key,
                    format!("must decode to at least {n} bytes, got {}", bytes.len()),
                ));
            }
            KeyLength::Exactly(n) if bytes.len() != n => {
                return Err(ConfigError::invalid(
                    key,
                    format!("must decode to exactly {n} bytes, got {}", bytes.len()),
                ));
            }
            _ => {}
        }
    }
    if !active.is_empty() && !ids.contains(active) {
        return Err(ConfigError::invalid(
            format!("{section}.active"),
            format!("no key with id {active:?} in {section}.keys"),
        ));
    }
    Ok(())
}

/// Standard or URL-safe base64, padded or not.
fn decode_key(encoded: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let encoded = encoded.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())
}

#[cfg(test)]
mod tests;

/// The proxies: each one in use has a valid endpoint, and every
/// `*_proxy_name` names an entry of `proxies`.
fn validate_proxies(config: &Config) -> Result<(), ConfigError> {
    let invalid = |(key, message): (String, String)| ConfigError::invalid(key, message);
    let client = &config.client.proxy;
    client
        .connect
        .check("client.proxy.connect")
        .map_err(invalid)?;
    client
        .refresh
        .check("client.proxy.refresh")
        .map_err(invalid)?;
    herald_proxy::check_named(&config.proxies).map_err(invalid)?;
    config.rpc.check().map_err(invalid)?;
    let named = |name: &str| config.proxies.iter().any(|p| p.name == name);
    let channel = &config.channel;
    let namespaces = std::iter::once((
        "channel.without_namespace".to_owned(),
        &channel.without_namespace,
    ))
    .chain(
        channel
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("channel.namespaces[{i}]"), &n.options)),
    );
    for (key, options) in namespaces {
        let uses = [
            (
                "subscribe",
                options.subscribe_proxy_enabled,
                &options.subscribe_proxy_name,
                &channel.proxy.subscribe,
            ),
            (
                "publish",
                options.publish_proxy_enabled,
                &options.publish_proxy_name,
                &channel.proxy.publish,
            ),
            (
                "sub_refresh",
                options.sub_refresh_proxy_enabled,
                &options.sub_refresh_proxy_name,
                &channel.proxy.sub_refresh,
            ),
        ];
        for (kind, enabled, name, own) in uses {
            if !enabled {
                continue;
            }
            if herald_proxy::is_default(name) {
                own.check(&format!("channel.proxy.{kind}"))
                    .map_err(invalid)?;
            } else if !named(name) {
                return Err(ConfigError::invalid(
                    format!("{key}.{kind}_proxy_name"),
                    format!("{name:?} is not the name of an entry of proxies"),
                ));
            }
        }
    }
    let rpc = &config.rpc;
    let rpc_names = std::iter::once((
        "rpc.without_namespace".to_owned(),
        rpc.without_namespace.proxy_enabled,
        &rpc.without_namespace.proxy_name,
    ))
    .chain(rpc.namespaces.iter().enumerate().map(|(i, n)| {
        (
            format!("rpc.namespaces[{i}]"),
            n.proxy_enabled,
            &n.proxy_name,
        )
    }));
    for (key, enabled, name) in rpc_names {
        if enabled && !herald_proxy::is_default(name) && !named(name) {
            return Err(ConfigError::invalid(
                format!("{key}.proxy_name"),
                format!("{name:?} is not the name of an entry of proxies"),
            ));
        }
    }
    Ok(())
}
