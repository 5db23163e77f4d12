//! Sections `admin` (the web console) and `demo` (the development profile's
//! chat page). docs/operations.md, "The web console".

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Section `admin`: the operator console at `path`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// Where the console lives, e.g. `/admin` (no trailing slash).
    pub path: String,
    /// Which listener serves it: `internal` (the API's) or `public`.
    pub listener: AdminListener,
    /// The operator password as a PHC string (`$argon2id$...`), written by
    /// `herald hashpassword` or `herald genconfig`; never the password itself.
    pub password: String,
    /// Key that signs session cookies and CSRF tokens. Empty: a random key
    /// per start (sessions end with the process, and each node of a
    /// cluster has its own).
    pub secret: String,
    /// How long a login lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// No login at all, with a banner on every page. Development only.
    pub insecure: bool,
    /// Also accept a connection token (JWT/JWKS of `client.token`, or
    /// introspection) whose claims carry `admin: true`.
    pub token_auth: bool,
    /// How often each node publishes its figures to the console's stats
    /// channel.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/admin".to_owned(),
            listener: AdminListener::Internal,
            password: String::new(),
            secret: String::new(),
            session_ttl: Duration::from_secs(8 * 3600),
            insecure: false,
            token_auth: false,
            stats_interval: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("path", &self.path)
            .field("listener", &self.listener)
            .field("password", &super::redacted(&self.password))
            .field("secret", &super::redacted(&self.secret))
            .field("session_ttl", &self.session_ttl)
            .field("insecure", &self.insecure)
            .field("token_auth", &self.token_auth)
            .field("stats_interval", &self.stats_interval)
            .finish()
    }
}

impl AdminConfig {
    /// Why this section cannot run, naming the key; None when it can. The
    /// password hash itself is checked by `admin::password::check_hash`.
    pub fn problem(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let path = self.path.as_str();
        if !path.starts_with('/')
            || path.len() < 2
            || path.ends_with('/')
            || !path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        {
            return Some(format!(
                "admin.path: {path:?} must start with '/', not end with one, and use only letters, digits, '/', '-', '_', '.'"
            ));
        }
        if [
            "/api",
            "/connection",
            "/metrics",
            "/health",
            "/ready",
            "/emulation",
            "/demo",
        ]
        .iter()
        .any(|taken| path == *taken || path.starts_with(&format!("{taken}/")))
        {
            return Some(format!("admin.path: {path:?} is taken by another route"));
        }
        if self.session_ttl < Duration::from_secs(1) {
            return Some("admin.session_ttl: at least 1s".to_owned());
        }
        if self.stats_interval < Duration::from_millis(100) {
            return Some("admin.stats_interval: at least 100ms".to_owned());
        }
        if !self.insecure && self.password.is_empty() && !self.token_auth {
            return Some(
                "admin.password: the console needs a password hash (herald hashpassword), \
                 admin.token_auth = true, or admin.insecure = true (development only)"
                    .to_owned(),
            );
        }
        if !self.secret.is_empty() && self.secret.len() < 32 {
            return Some("admin.secret: at least 32 characters".to_owned());
        }
        None
    }
}

/// `admin.listener`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String", into = "String")]
pub enum AdminListener {
    #[default]
    Internal,
    Public,
}

impl TryFrom<String> for AdminListener {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "internal" => Ok(Self::Internal),
            "public" => Ok(Self::Public),
            _ => Err(format!("{value:?} is not one of internal, public")),
        }
    }
}

impl From<AdminListener> for String {
    fn from(value: AdminListener) -> Self {
        match value {
            AdminListener::Internal => "internal",
            AdminListener::Public => "public",
        }
        .to_owned()
    }
}

/// Section `demo`: the chat page at `/` of the public listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DemoConfig {
    pub enabled: bool,
}

/// Mints the demo page's connection tokens (the binary owns token minting
/// and the HMAC key): a user id in, a token out, or why not.
#[derive(Clone)]
pub struct DemoTokens(pub Arc<MintToken>);

/// A user id in, a connection token out (or why not).
pub type MintToken = dyn Fn(&str) -> Result<String, String> + Send + Sync;

impl std::fmt::Debug for DemoTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoTokens(..)")
    }
}
