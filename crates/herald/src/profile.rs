//! The zero-config development profile and `herald genconfig`. Both come
//! from one commented TOML template, so `herald serve` without a config and a
//! node started from a generated file behave the same. `genconfig --profile
//! production` fills the same template with the production choices: every
//! listener on all interfaces with the internal routes on their own port,
//! the abuse limits on, and no channel open to clients until a namespace
//! says so.

use std::fmt::Write as _;

use base64::Engine as _;
use rand::RngCore as _;

/// The user the dev banner's token is minted for.
pub const DEV_USER: &str = "dev-user";

/// Freshly generated secrets for one profile.
pub struct Secrets {
    /// HMAC key for connection tokens: 32 random bytes as hex text (the key is
    /// the text itself, as in Centrifugo).
    pub hmac_secret: String,
    /// Server API key: 32 random bytes as hex.
    pub api_key: String,
    /// Bus signing key: base64 of 32 random bytes.
    pub bus_key: String,
    /// History sealing key: base64 of 32 random bytes.
    pub history_key: String,
    /// The web console's password (shown once, never written to the file)
    /// and its Argon2id hash (what the file holds).
    pub admin_password: String,
    pub admin_password_hash: String,
}

impl Secrets {
    pub fn generate() -> Self {
        // 16 random bytes as hex: 128 bits, easy to copy.
        let admin_password = hex(&random_bytes()[..16]);
        let admin_password_hash = herald_gateway::admin_password::hash(&admin_password)
            .expect("a 32-character password hashes");
        Self {
            hmac_secret: hex(&random_bytes()),
            api_key: hex(&random_bytes()),
            bus_key: random_key_base64(),
            history_key: random_key_base64(),
            admin_password,
            admin_password_hash,
        }
    }
}

/// Base64 (standard, padded) of 32 random bytes: a bus or history keyring key.
pub fn random_key_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(random_bytes())
}

/// Which configuration `genconfig` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// One node on 127.0.0.1:8000, every route on one port, the default
    /// namespace open to authenticated clients (what `serve` runs without a
    /// config).
    #[default]
    Dev,
    /// A node behind its own address: internal routes on 9000, the
    /// per-address and command rate limits on, channels closed.
    Production,
}

/// The production choice of `client.connection_limit_per_ip`: every TCP
/// connection of the public listener from one address. High enough for a
/// large NAT, low enough that one address cannot take a node's sockets.
/// Behind a proxy that does not keep client addresses every client shares
/// the proxy's address: the template says to set 0 there.
pub const PRODUCTION_CONNECTION_LIMIT_PER_IP: usize = 1000;

/// The production choice of `client.command_rate_limit`: commands per second
/// per connection, also the burst. Above what an SDK sends at connect (its
/// connect and up to `channel_limit` = 128 subscribes in one frame) and far
/// above any steady use, far below what a flood needs.
pub const PRODUCTION_COMMAND_RATE_LIMIT: u32 = 200;

/// The dev profile as a commented TOML config holding `secrets`.
pub fn config_text(secrets: &Secrets) -> String {
    profile_text(Profile::Dev, secrets)
}

/// `profile` as a commented TOML config holding `secrets`.
pub fn profile_text(profile: Profile, secrets: &Secrets) -> String {
    let (about, http_server, limits, channels, demo) = match profile {
        Profile::Dev => (
            DEV_ABOUT,
            DEV_HTTP_SERVER,
            DEV_LIMITS.to_owned(),
            DEV_CHANNELS,
            DEV_DEMO,
        ),
        Profile::Production => (
            PRODUCTION_ABOUT,
            PRODUCTION_HTTP_SERVER,
            PRODUCTION_LIMITS
                .replace("@PER_IP@", &PRODUCTION_CONNECTION_LIMIT_PER_IP.to_string())
                .replace("@RATE@", &PRODUCTION_COMMAND_RATE_LIMIT.to_string()),
            PRODUCTION_CHANNELS,
            PRODUCTION_DEMO,
        ),
    };
    TEMPLATE
        .replace("@ABOUT@", about)
        .replace("@HTTP_SERVER@", http_server)
        .replace("@LIMITS@", &limits)
        .replace("@CHANNELS@", channels)
        .replace("@DEMO@", demo)
        .replace("@ADMIN_PASSWORD_HASH@", &secrets.admin_password_hash)
        .replace("@HMAC_SECRET@", &secrets.hmac_secret)
        .replace("@API_KEY@", &secrets.api_key)
        .replace("@BUS_KEY@", &secrets.bus_key)
        .replace("@HISTORY_KEY@", &secrets.history_key)
}

/// What the dev profile prints to stdout once the node listens.
pub struct Banner<'a> {
    pub ws_url: &'a str,
    pub api_url: &'a str,
    pub api_key: &'a str,
    pub hmac_secret: &'a str,
    pub token: &'a str,
    /// The console's URL and password.
    pub console_url: &'a str,
    pub console_password: &'a str,
    /// The demo page's URL.
    pub demo_url: &'a str,
}

impl Banner<'_> {
    pub fn render(&self) -> String {
        let Banner {
            ws_url,
            api_url,
            api_key,
            hmac_secret,
            token,
            console_url,
            console_password,
            demo_url,
        } = self;
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "\n\
             herald dev profile: one node, in-memory engine, secrets generated for this run.\n\
             Not for production; `herald genconfig herald.toml` writes this profile to a file.\n\
             \n\
             \x20 Demo chat    {demo_url}   (open it in two browser tabs)\n\
             \x20 Console      {console_url}   (password {console_password})\n\
             \x20 WebSocket    {ws_url}\n\
             \x20 Server API   {api_url}/api/<method>   (header X-API-Key)\n\
             \x20 API key      {api_key}\n\
             \x20 Metrics      {api_url}/metrics\n\
             \x20 HMAC secret  {hmac_secret}\n\
             \x20 Token        {token}\n\
             \x20              (user \"{DEV_USER}\", valid for 1 hour)\n\
             \n\
             Try:\n\
             \x20 curl -s -H 'X-API-Key: {api_key}' -d '{{\"channel\":\"news\",\"data\":{{\"text\":\"hi\"}}}}' {api_url}/api/publish\n"
        );
        text
    }
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

const DEV_ABOUT: &str = "\
# The development profile: one node on 127.0.0.1:8000 with the in-memory
# engine; the server API, /metrics and /health share the public port; channels
# without a namespace are open to authenticated clients. For a deployment,
# start from `herald genconfig --profile production` instead.";

const PRODUCTION_ABOUT: &str = "\
# The production profile: the public port 8000 on every interface, the server
# API, /metrics and /health on the internal port 9000 (keep it inside the
# cluster); per-address and per-connection limits on; no channel open to
# clients until a namespace below allows it (docs/security.md, \"Running herald
# securely\"). One node with the in-memory engine: for several, [engine.redis].";

const DEV_HTTP_SERVER: &str = "\
address = \"127.0.0.1\"          # \"0.0.0.0\" listens on every interface
port = 8000                    # public: the WebSocket endpoint /connection/websocket
internal_port = 0              # API, /metrics, /health, /ready; 0 = on `port`";

const PRODUCTION_HTTP_SERVER: &str = "\
address = \"0.0.0.0\"            # every interface
port = 8000                    # public: the WebSocket endpoint /connection/websocket
internal_port = 9000           # API, /metrics, /health, /ready: not for the Internet";

const DEV_LIMITS: &str = "\
# connection_limit_per_ip = 0  # connections of the public port per address; 0 = unlimited
# command_rate_limit = 0       # commands per second per connection; 0 = unlimited";

const PRODUCTION_LIMITS: &str = "\
# Every connection of the public port from one address (WebSocket or not).
# Behind a proxy or load balancer that does not keep client addresses, every
# client shares its address: set 0 and limit at the proxy.
connection_limit_per_ip = @PER_IP@
# Commands per second per connection (and the burst): 111 past it, then 3013.
command_rate_limit = @RATE@";

const DEV_DEMO: &str = "\
[demo]                         # the chat page at / (development only: it mints tokens for anyone)
enabled = true";

const PRODUCTION_DEMO: &str = "\
# [demo]                       # the chat page at /: development only, it mints tokens for anyone
# enabled = false";

const DEV_CHANNELS: &str = r#"[channel.without_namespace]    # channels without a "namespace:" prefix
presence = true
join_leave = true
force_push_join_leave = false
history_size = 100
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_client = true
allow_history_for_client = true

# [[channel.namespaces]]       # channels "chat:<name>"; every option above applies
# name = "chat"
# allow_subscribe_for_client = true"#;

const PRODUCTION_CHANNELS: &str = r#"# [channel.without_namespace]  # channels without a "namespace:" prefix
# Nothing is allowed by default: clients subscribe with a subscription token
# (or the server API subscribes them); open what your app needs, e.g.:
# history_size = 100
# history_ttl = "300s"
# force_recovery = true
# allow_subscribe_for_client = true

# [[channel.namespaces]]       # channels "chat:<name>"; every option above applies
# name = "chat"
# presence = true
# allow_subscribe_for_client = true"#;

const TEMPLATE: &str = r#"# herald configuration, written by `herald genconfig`.
#
@ABOUT@
# The secrets below were generated for this file: keep it private, out of
# version control.
#
# Every key can be overridden from the environment: HERALD_ and the key's path
# in capitals with "__" between levels, e.g. HERALD_HTTP_SERVER__PORT=9000 or
# HERALD_CLIENT__TOKEN__HMAC_SECRET_KEY=...; list values are comma-separated
# (HERALD_CLIENT__ALLOWED_ORIGINS=https://a.example,https://b.example).
# Every secret can be read from a file instead: add "_file" to its key
# (hmac_secret_key_file = "/run/secrets/hmac").
# Commented-out keys show their defaults.

[http_server]
@HTTP_SERVER@
# request_body_timeout = "10s"  # longest an HTTP request body may take to arrive

# [http_server.tls]            # rustls
# enabled = false
# cert_pem_file = ""
# key_pem_file = ""
# client_ca_pem_file = ""      # CA of client certificates (client_auth optional or required)
# client_auth = "none"         # none | optional | required
# min_version = "1.3"          # "1.3" | "1.2"

[client]
# allowed_origins = []         # glob patterns; empty = only requests without Origin
# ping_interval = "25s"
# pong_timeout = "8s"
# message_size_limit = 65536   # bytes, incoming frame
# queue_max_size = 1048576     # bytes queued to one client before disconnect (slow)
# channel_limit = 128          # subscriptions per connection
# user_connection_limit = 0    # 0 = unlimited
@LIMITS@
# handshake_timeout = "10s"    # the connect command must arrive within this
# expired_close_delay = "25s"
# expired_sub_close_delay = "25s"
# allow_anonymous_connect_without_token = false
# tls_identity_as_user = false
# tls_identity_order = ["san_uri", "san_dns", "cn"]  # which certificate field names the user
# insecure = false             # development only: no auth, every permission

[client.token]                 # connection tokens
# HMAC key for HS256/HS384/HS512 tokens; `herald gentoken` signs with it.
hmac_secret_key = "@HMAC_SECRET@"
# hmac_previous_secret_key = ""  # still accepted while rotating
# rsa_public_key = ""          # PEM text (or rsa_public_key_file): RS256/384/512, PS256/384/512
# ecdsa_public_key = ""        # PEM text (or ecdsa_public_key_file): ES256/ES384, or Ed25519 for EdDSA
# jwks_public_endpoint = ""    # https URL of a JWK set; keys by `kid` (docs/auth.md)
# audience = ""
# issuer = ""
# leeway = "5s"                # at most 30s

# [client.subscription_token]  # the same keys as [client.token]
# enabled = false              # false: subscription tokens use [client.token]

# [client.introspection]       # RFC 7662, for opaque access tokens
# endpoint = ""
# client_id = ""
# client_secret = ""
# cache_ttl = "60s"            # longest an active answer is cached (never past exp)
# subscribe_scope_prefix = ""  # e.g. "herald:sub:": scope herald:sub:news grants channel news

[channel]
# history_meta_ttl = "720h"    # life of a stream's epoch and top offset

@CHANNELS@

[http_api]
# Server API key: header "X-API-Key: <key>" or "Authorization: apikey <key>".
key = "@API_KEY@"
# max_concurrent_requests = 64 # more wait up to 1 s, then 503
# max_batch_size = 1000        # commands in one batch, channels in one broadcast

[engine]
type = "memory"                # memory | redis
# [engine.memory]
# stream_limit = 100000        # history streams kept; past it the least recently used go
# [engine.redis]
# address = ["redis://127.0.0.1:6379"]  # several = sharding; rediss:// = TLS
# cluster_address = []         # Redis Cluster seed nodes
# prefix = "herald"
# user = ""                    # ACL user
# password = ""                # or password_file
# tls_ca_pem_file = ""         # CA for rediss:// (system roots when empty)
# sentinel_address = []        # Sentinels ("host:port"); replaces address
# sentinel_master_name = ""    # the master's name in the Sentinels' config

[bus_integrity]                # HMAC-SHA256 tag on every envelope crossing Redis
active = "bus1"                # key id to sign with (must be among keys)
# Every node of a cluster needs the same keys; with keys, unsigned envelopes are
# refused. Rotate in three steps (docs/operations.md). New key: herald genkey --kind bus
keys = [{ id = "bus1", secret = "@BUS_KEY@" }]

[history_encryption]           # XChaCha20-Poly1305 for history records and presence
active = "hist1"               # key id new records are sealed with
# Removing a key makes what it sealed unreadable (recovered: false); rotate in
# three steps (docs/operations.md). New key: herald genkey --kind history
keys = [{ id = "hist1", key = "@HISTORY_KEY@" }]

[admin]                        # the web console (docs/operations.md, "The web console")
enabled = true
# path = "/admin"              # on the internal listener (listener = "public" to move it)
# Argon2id hash of the console password, never the password: `herald hashpassword`.
password = "@ADMIN_PASSWORD_HASH@"
# secret = ""                  # signs session cookies; empty = random per start
# session_ttl = "8h"
# token_auth = false           # also log in with a client.token JWT carrying "admin": true
# stats_interval = "2s"        # how often each node publishes its figures to the console
# insecure = false             # no login at all: development only

@DEMO@

[prometheus]
enabled = true

[health]
enabled = true

[log]
level = "info"                 # tracing filter directive; RUST_LOG overrides it
format = "text"                # text | json

[shutdown]
timeout = "30s"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_well_formed() {
        let a = Secrets::generate();
        let b = Secrets::generate();
        assert_ne!(a.hmac_secret, b.hmac_secret);
        assert_ne!(a.api_key, b.api_key);
        assert_ne!(a.bus_key, b.bus_key);
        assert_ne!(a.history_key, b.history_key);
        assert_ne!(a.admin_password, b.admin_password);
        assert!(herald_gateway::admin_password::verify(
            &a.admin_password_hash,
            &a.admin_password
        ));
        assert_eq!(a.hmac_secret.len(), 64);
        assert!(a.hmac_secret.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.api_key.len(), 64);
        let bus = base64::engine::general_purpose::STANDARD
            .decode(&a.bus_key)
            .unwrap();
        assert_eq!(bus.len(), 32);
    }

    #[test]
    fn template_has_no_placeholder_left() {
        let text = config_text(&Secrets::generate());
        assert!(!text.contains('@'), "{text}");
    }

    #[test]
    fn banner_shows_urls_key_and_token() {
        let text = Banner {
            ws_url: "ws://127.0.0.1:8000/connection/websocket",
            api_url: "http://127.0.0.1:8000",
            api_key: "KEY",
            hmac_secret: "SECRET",
            token: "TOKEN",
            console_url: "http://127.0.0.1:8000/admin/",
            console_password: "PASSWORD",
            demo_url: "http://127.0.0.1:8000/",
        }
        .render();
        for want in [
            "ws://127.0.0.1:8000/connection/websocket",
            "http://127.0.0.1:8000/api/publish",
            "http://127.0.0.1:8000/metrics",
            "KEY",
            "SECRET",
            "TOKEN",
            "dev-user",
            "http://127.0.0.1:8000/admin/",
            "PASSWORD",
            "Demo chat    http://127.0.0.1:8000/",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }
}
