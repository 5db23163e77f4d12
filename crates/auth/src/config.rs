//! The `client.token`, `client.subscription_token` and `channel` config sections.
//!
//! Key names follow Centrifugo v6 so a Centrifugo config carries over. Every
//! struct is `#[serde(default)]`: an absent key takes the documented default.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest clock-skew allowance we accept for `exp`, `nbf` and `iat`.
pub(crate) const MAX_LEEWAY: Duration = Duration::from_secs(30);

/// Keys and checks for one kind of token (config section `client.token`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// HMAC secret for HS256/HS384/HS512 tokens; empty = HMAC tokens refused.
    pub hmac_secret_key: String,
    /// The secret being rotated out; tried after `hmac_secret_key`.
    pub hmac_previous_secret_key: String,
    /// PEM text of the RSA public key for RS256/384/512 and PS256/384/512.
    pub rsa_public_key: String,
    /// PEM text of the ECDSA public key for ES256/ES384.
    pub ecdsa_public_key: String,
    /// JWKS URL: https, or http for a loopback host (with a warning).
    pub jwks_public_endpoint: String,
    /// Required `aud` member when non-empty.
    pub audience: String,
    /// Required `iss` when non-empty.
    pub issuer: String,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`; at most 30s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            hmac_secret_key: String::new(),
            hmac_previous_secret_key: String::new(),
            rsa_public_key: String::new(),
            ecdsa_public_key: String::new(),
            jwks_public_endpoint: String::new(),
            audience: String::new(),
            issuer: String::new(),
            leeway: Duration::from_secs(5),
        }
    }
}

// Hand-written so that a `{:?}` of the config never prints a secret.
impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("hmac_secret_key", &Redacted(&self.hmac_secret_key))
            .field(
                "hmac_previous_secret_key",
                &Redacted(&self.hmac_previous_secret_key),
            )
            .field("rsa_public_key", &Redacted(&self.rsa_public_key))
            .field("ecdsa_public_key", &Redacted(&self.ecdsa_public_key))
            .field("jwks_public_endpoint", &self.jwks_public_endpoint)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Config section `client.subscription_token`.
///
/// With `enabled = false` subscription tokens are verified with the
/// `client.token` keys and checks, and the keys here are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionTokenConfig {
    /// Use the keys of this section instead of `client.token`'s.
    pub enabled: bool,
    /// The same keys as `client.token`.
    #[serde(flatten)]
    pub token: TokenConfig,
}

/// Options of a channel namespace (Centrifugo v6 names). Everything defaults
/// to off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelOptions {
    /// Track presence.
    pub presence: bool,
    /// Emit join/leave events.
    pub join_leave: bool,
    /// Push join/leave to every subscriber without the client asking.
    pub force_push_join_leave: bool,
    /// Publications kept in history; history needs this and `history_ttl`.
    pub history_size: usize,
    /// How long history is kept; history needs this and `history_size`.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Server forces recovery on every subscription.
    pub force_recovery: bool,
    /// Client may ask for recovery.
    pub allow_recovery: bool,
    /// How a recovering subscriber catches up: `stream` (every missed
    /// publication) or `cache` (only the latest one).
    pub force_recovery_mode: RecoveryMode,
    /// In cache mode, every subscribe recovers (the latest publication
    /// arrives) without the client asking; needs `force_recovery` and
    /// `force_recovery_mode = "cache"`.
    pub auto_cache_recover: bool,
    /// Server forces position tracking on every subscription.
    pub force_positioning: bool,
    /// Client may ask for position tracking.
    pub allow_positioning: bool,
    /// Authenticated clients may subscribe without a subscription token.
    pub allow_subscribe_for_client: bool,
    /// With `allow_subscribe_for_client`, anonymous clients may too.
    pub allow_subscribe_for_anonymous: bool,
    /// Subscribed clients may publish.
    pub allow_publish_for_subscriber: bool,
    /// Authenticated clients may publish.
    pub allow_publish_for_client: bool,
    /// Anonymous clients may publish where the two flags above allow it.
    pub allow_publish_for_anonymous: bool,
    /// Subscribed clients may call presence and presence_stats.
    pub allow_presence_for_subscriber: bool,
    /// Authenticated clients may call presence and presence_stats.
    pub allow_presence_for_client: bool,
    /// Anonymous clients may call presence where the two flags above allow it.
    pub allow_presence_for_anonymous: bool,
    /// Subscribed clients may call history.
    pub allow_history_for_subscriber: bool,
    /// Authenticated clients may call history.
    pub allow_history_for_client: bool,
    /// Anonymous clients may call history where the two flags above allow it.
    pub allow_history_for_anonymous: bool,
    /// Channels with `#` list the users allowed to subscribe after the last `#`.
    pub allow_user_limited_channels: bool,
    /// A regular expression the channel name after the namespace must
    /// match (the whole name for `without_namespace`); other names are
    /// refused with 107. Empty: names must be ASCII.
    pub channel_regex: String,
    /// Overrides `channel.history_meta_ttl` for this namespace.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub history_meta_ttl: Option<Duration>,
    /// What publication data of the namespace is: JSON (every client), or
    /// bytes (protobuf clients only).
    pub publication_data_format: PublicationDataFormat,
    /// A subscribe without a token asks the backend (`channel.proxy.subscribe`,
    /// or the named proxy of `subscribe_proxy_name`); not for user-limited
    /// (`#`) channels.
    pub subscribe_proxy_enabled: bool,
    /// An entry of the top-level `proxies`; empty or `default`: `channel.proxy.subscribe`.
    pub subscribe_proxy_name: String,
    /// A client publish asks the backend, which decides instead of the
    /// `allow_publish_*` flags and may rewrite it.
    pub publish_proxy_enabled: bool,
    pub publish_proxy_name: String,
    /// A subscription's expiry (set by the subscribe proxy) asks the backend
    /// for a new one instead of the client.
    pub sub_refresh_proxy_enabled: bool,
    pub sub_refresh_proxy_name: String,
    /// Clients may send a tags filter (`tf`) on subscribe and then receive
    /// only the publications whose tags match it; without this a subscribe
    /// with `tf` gets error 107.
    pub allow_tags_filter: bool,
    /// Delta types a subscriber may ask for (`delta` of subscribe): empty
    /// (the default) turns delta compression off; `["fossil"]` allows it.
    pub allowed_delta_types: Vec<DeltaType>,
    /// Every publication of the namespace asks for delta delivery, as a
    /// publish call's `delta: true` does.
    pub delta_publish: bool,
}

/// A delta compression a subscriber may negotiate (docs/protocol.md,
/// "Delta compression").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaType {
    /// Fossil SCM's delta format.
    Fossil,
}

impl DeltaType {
    /// The type a subscribe's `delta` names, if herald knows it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fossil" => Some(DeltaType::Fossil),
            _ => None,
        }
    }
}

/// `publication_data_format` of a namespace (docs/protocol.md, "Protobuf").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicationDataFormat {
    /// Publication data must be JSON; JSON and protobuf clients share the channel.
    #[default]
    Json,
    /// Publication data is any bytes; only protobuf clients may subscribe,
    /// publish and read history (JSON clients get error 107).
    Binary,
}

/// `force_recovery_mode` of a namespace (docs/protocol.md, "Cache recovery").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum RecoveryMode {
    /// Every publication the subscriber missed, or `recovered: false`.
    #[default]
    Stream,
    /// Only the channel's latest publication.
    Cache,
}

impl TryFrom<String> for RecoveryMode {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            // Centrifugo reads an empty value as the default.
            "" | "stream" => Ok(Self::Stream),
            "cache" => Ok(Self::Cache),
            _ => Err(format!("{value:?} is not one of stream, cache")),
        }
    }
}

impl ChannelOptions {
    /// Whether publication data is bytes (protobuf clients only).
    pub fn binary_data(&self) -> bool {
        self.publication_data_format == PublicationDataFormat::Binary
    }

    /// Whether publications are kept: both `history_size` and `history_ttl` set.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// One entry of `[[channel.namespaces]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceConfig {
    /// The part of a channel name before the first `:`.
    pub name: String,
    /// The namespace's options, written beside `name`.
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// Config section `[channel]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelConfig {
    /// How long a stream's epoch and top offset live.
    #[serde(with = "humantime_serde")]
    pub history_meta_ttl: Duration,
    /// Options of channels without a namespace.
    pub without_namespace: ChannelOptions,
    /// Named namespaces.
    pub namespaces: Vec<NamespaceConfig>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            history_meta_ttl: Duration::from_secs(720 * 3600),
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
        }
    }
}

/// Checks the URL of an identity provider endpoint (`key` names it in
/// errors): https, or http when the host is loopback — then the returned
/// warning says so. Credentials in the URL are refused: they would end up in
/// logs.
pub fn check_endpoint(key: &str, url: &str) -> Result<Option<String>, AuthConfigError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| AuthConfigError::invalid(key, "is not an absolute http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(AuthConfigError::invalid(
            key,
            "must not carry credentials in the URL",
        ));
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(AuthConfigError::invalid(key, "has no host"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(None),
        "http" if is_loopback_host(host) => Ok(Some(format!(
            "{key} uses plain http to a loopback host; use https anywhere else"
        ))),
        "http" => Err(AuthConfigError::invalid(
            key,
            "must be https (http is allowed only for a loopback host)",
        )),
        _ => Err(AuthConfigError::invalid(key, "is not an http(s) URL")),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A config value this crate refuses. `Display` starts with the full key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// `leeway` above 30 seconds.
    #[error("{key}: at most 30s (got {got:?})")]
    LeewayTooLarge {
        /// Full config key, e.g. `client.token.leeway`.
        key: String,
        /// The configured value.
        got: Duration,
    },
    /// A feature herald does not implement yet.
    #[error("{key}: not supported yet")]
    NotSupported {
        /// Full config key.
        key: String,
    },
    /// Any other bad value.
    #[error("{key}: {reason}")]
    Invalid {
        /// Full config key.
        key: String,
        /// What is wrong with it; never contains a secret.
        reason: String,
    },
}

impl AuthConfigError {
    /// The full config key at fault, e.g. `client.token.leeway`.
    pub fn key(&self) -> &str {
        match self {
            Self::LeewayTooLarge { key, .. }
            | Self::NotSupported { key }
            | Self::Invalid { key, .. } => key,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Shows whether a secret is set, never its value.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let token = TokenConfig::default();
        assert_eq!(token.leeway, Duration::from_secs(5));
        assert!(token.hmac_secret_key.is_empty());
        let channel = ChannelConfig::default();
        assert_eq!(channel.history_meta_ttl, Duration::from_secs(720 * 3600));
        assert_eq!(channel.without_namespace, ChannelOptions::default());
        assert!(!SubscriptionTokenConfig::default().enabled);
    }

    #[test]
    fn deserializes_centrifugo_names_and_humantime_durations() {
        let json = r#"{
            "history_meta_ttl": "1h",
            "without_namespace": {"presence": true, "history_size": 10, "history_ttl": "300s"},
            "namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "history_meta_ttl": "2h"},
                {"name": "feed"}
            ]
        }"#;
        let config: ChannelConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.history_meta_ttl, Duration::from_secs(3600));
        assert!(config.without_namespace.presence);
        assert!(config.without_namespace.history_enabled());
        assert_eq!(
            config.without_namespace.history_ttl,
            Duration::from_secs(300)
        );
        assert_eq!(config.namespaces.len(), 2);
        assert_eq!(config.namespaces[0].name, "chat");
        assert!(config.namespaces[0].options.allow_subscribe_for_client);
        assert_eq!(
            config.namespaces[0].options.history_meta_ttl,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(config.namespaces[1].options, ChannelOptions::default());
    }

    #[test]
    fn subscription_token_section_flattens_token_keys() {
        let json = r#"{"enabled": true, "hmac_secret_key": "s", "leeway": "2s", "audience": "a"}"#;
        let config: SubscriptionTokenConfig = serde_json::from_str(json).unwrap();
        assert!(config.enabled);
        assert_eq!(config.token.hmac_secret_key, "s");
        assert_eq!(config.token.leeway, Duration::from_secs(2));
        assert_eq!(config.token.audience, "a");

        let empty: SubscriptionTokenConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, SubscriptionTokenConfig::default());
    }

    #[test]
    fn round_trips_through_serialize() {
        let mut config = ChannelConfig::default();
        config.without_namespace.history_ttl = Duration::from_secs(90);
        config.namespaces.push(NamespaceConfig {
            name: "chat".into(),
            options: ChannelOptions {
                history_meta_ttl: Some(Duration::from_secs(60)),
                join_leave: true,
                ..ChannelOptions::default()
            },
        });
        let text = serde_json::to_string(&config).unwrap();
        let back: ChannelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);

        let token = SubscriptionTokenConfig {
            enabled: true,
            token: TokenConfig {
                issuer: "me".into(),
                ..TokenConfig::default()
            },
        };
        let text = serde_json::to_string(&token).unwrap();
        assert!(text.contains("\"leeway\":\"5s\""), "{text}");
        let back: SubscriptionTokenConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, token);
    }

    #[test]
    fn history_enabled_needs_size_and_ttl() {
        let table = [
            (0, 0, false),
            (10, 0, false),
            (0, 60, false),
            (10, 60, true),
        ];
        for (size, ttl, want) in table {
            let options = ChannelOptions {
                history_size: size,
                history_ttl: Duration::from_secs(ttl),
                ..ChannelOptions::default()
            };
            assert_eq!(options.history_enabled(), want, "size={size} ttl={ttl}");
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let config = TokenConfig {
            hmac_secret_key: "very-secret-value".into(),
            hmac_previous_secret_key: "older-secret-value".into(),
            ..TokenConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("very-secret-value"), "{text}");
        assert!(!text.contains("older-secret-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn error_display_names_the_key() {
        let table: [(AuthConfigError, &str); 3] = [
            (
                AuthConfigError::LeewayTooLarge {
                    key: "client.token.leeway".into(),
                    got: Duration::from_secs(31),
                },
                "client.token.leeway: at most 30s (got 31s)",
            ),
            (
                AuthConfigError::NotSupported {
                    key: "client.token.jwks_public_endpoint".into(),
                },
                "client.token.jwks_public_endpoint: not supported yet",
            ),
            (
                AuthConfigError::invalid("channel.namespaces[chat].history_ttl", "bad"),
                "channel.namespaces[chat].history_ttl: bad",
            ),
        ];
        for (error, want) in table {
            assert_eq!(error.to_string(), want);
            assert!(want.starts_with(error.key()));
        }
    }
}
