//! Channel names, namespaces and the permission policy of `[channel]`.

use std::collections::HashMap;
use std::time::Duration;

use regex::Regex;

use crate::config::{AuthConfigError, ChannelConfig, ChannelOptions, RecoveryMode};

/// Longest channel name, in bytes (Centrifugo's `channel.max_length`).
pub const MAX_CHANNEL_LENGTH: usize = 255;

const PRIVATE_PREFIX: char = '$';
const NAMESPACE_BOUNDARY: char = ':';
const USER_BOUNDARY: char = '#';
const USER_SEPARATOR: char = ',';

/// Why a channel name cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Empty, longer than 255 bytes, with control characters, non-ASCII
    /// where the namespace has no `channel_regex`, or not matching the
    /// namespace's `channel_regex` (wire error 107).
    #[error("bad channel name")]
    BadName,
    /// The namespace is not configured (wire error 102).
    #[error("unknown channel")]
    UnknownNamespace,
}

impl ChannelError {
    /// The wire error a client or API caller gets.
    pub fn code(self) -> herald_protocol::ErrorCode {
        match self {
            Self::BadName => herald_protocol::ErrorCode::BadRequest,
            Self::UnknownNamespace => herald_protocol::ErrorCode::UnknownChannel,
        }
    }
}

/// A channel name matched to its namespace options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedChannel<'a> {
    /// The full channel name, private prefix included.
    pub name: &'a str,
    /// The namespace name; `""` for `channel.without_namespace`.
    pub namespace: &'a str,
    /// The namespace's options.
    pub options: &'a ChannelOptions,
    /// Starts with the private prefix `$`: subscribing needs a token.
    pub private: bool,
}

impl ResolvedChannel<'_> {
    /// A user-limited channel: its name lists who may subscribe after the
    /// last `#` (`allow_user_limited_channels`).
    pub fn user_limited(&self) -> bool {
        self.options.allow_user_limited_channels && self.name.contains(USER_BOUNDARY)
    }

    /// Whether a subscribe without a token asks the subscribe proxy: the
    /// namespace turns it on, and the channel is neither private (a token
    /// decides) nor user-limited (its name decides), as in Centrifugo.
    pub fn subscribe_proxied(&self) -> bool {
        self.options.subscribe_proxy_enabled && !self.private && !self.user_limited()
    }
}

/// Namespace lookup and the permission checks that need no token.
#[derive(Debug, Clone)]
pub struct ChannelPolicy {
    history_meta_ttl: Duration,
    without_namespace: ChannelOptions,
    namespaces: HashMap<String, ChannelOptions>,
    /// The `channel_regex` of each namespace that has one, compiled once;
    /// `""` is `without_namespace`.
    channel_regex: HashMap<String, Regex>,
}

impl ChannelPolicy {
    /// Validates `config`: namespace names unique, non-empty, of
    /// `[A-Za-z0-9_.-]`; `history_size` and `history_ttl` set together;
    /// `history_ttl` not above the effective `history_meta_ttl`;
    /// `force_recovery` only with history; `auto_cache_recover` only with
    /// `force_recovery` in cache mode; `channel_regex` a valid expression.
    pub fn new(config: &ChannelConfig) -> Result<Self, AuthConfigError> {
        let meta_ttl = config.history_meta_ttl;
        let mut channel_regex = HashMap::new();
        check_options(
            "channel.without_namespace",
            &config.without_namespace,
            meta_ttl,
        )?;
        if let Some(regex) =
            compile_channel_regex("channel.without_namespace", &config.without_namespace)?
        {
            channel_regex.insert(String::new(), regex);
        }
        let mut namespaces = HashMap::with_capacity(config.namespaces.len());
        for (index, namespace) in config.namespaces.iter().enumerate() {
            let name = namespace.name.as_str();
            if name.is_empty() {
                return Err(AuthConfigError::invalid(
                    format!("channel.namespaces[{index}].name"),
                    "must not be empty",
                ));
            }
            // Centrifugo also allows '.', so its configs carry over.
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(AuthConfigError::invalid(
                    format!("channel.namespaces[{index}].name"),
                    "may only contain ASCII letters, digits, '_', '-' and '.'",
                ));
            }
            let prefix = format!("channel.namespaces[{name}]");
            check_options(&prefix, &namespace.options, meta_ttl)?;
            if let Some(regex) = compile_channel_regex(&prefix, &namespace.options)? {
                channel_regex.insert(name.to_owned(), regex);
            }
            if namespaces
                .insert(name.to_owned(), namespace.options.clone())
                .is_some()
            {
                return Err(AuthConfigError::invalid(
                    format!("{prefix}.name"),
                    "defined more than once",
                ));
            }
        }
        Ok(Self {
            history_meta_ttl: config.history_meta_ttl,
            without_namespace: config.without_namespace.clone(),
            namespaces,
            channel_regex,
        })
    }

    /// Whether any namespace carries binary data
    /// (`publication_data_format = "binary"`).
    pub fn has_binary_data(&self) -> bool {
        self.without_namespace.binary_data() || self.namespaces.values().any(|o| o.binary_data())
    }

    /// Validates `channel` and finds its namespace: the part before the first
    /// `:` once the private prefix `$` is stripped; no `:` (or nothing before
    /// it) means `channel.without_namespace`. A namespace with a
    /// `channel_regex` takes the names it matches (the part after the `:`,
    /// or the whole name without a namespace), non-ASCII ones included, as
    /// Centrifugo does; one without takes ASCII names.
    pub fn resolve<'a>(&'a self, channel: &'a str) -> Result<ResolvedChannel<'a>, ChannelError> {
        if channel.is_empty()
            || channel.len() > MAX_CHANNEL_LENGTH
            || channel.chars().any(char::is_control)
        {
            return Err(ChannelError::BadName);
        }
        let (private, rest) = match channel.strip_prefix(PRIVATE_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, channel),
        };
        let (namespace, name) = rest.split_once(NAMESPACE_BOUNDARY).unwrap_or(("", channel));
        let options = if namespace.is_empty() {
            &self.without_namespace
        } else {
            self.namespaces
                .get(namespace)
                .ok_or(ChannelError::UnknownNamespace)?
        };
        let valid = match self.channel_regex.get(namespace) {
            Some(regex) => regex.is_match(name),
            None => channel.is_ascii(),
        };
        if !valid {
            return Err(ChannelError::BadName);
        }
        Ok(ResolvedChannel {
            name: channel,
            namespace,
            options,
            private,
        })
    }

    /// Whether `user` may subscribe without a subscription token.
    ///
    /// Centrifugo's order: a private channel never; a user-limited channel
    /// (`#` in the name, `allow_user_limited_channels` on) only for a
    /// non-empty user listed after the last `#`, and `allow_subscribe_*`
    /// does not apply to it; otherwise `allow_subscribe_for_client`, which
    /// anonymous users pass only with `allow_subscribe_for_anonymous`.
    pub fn can_subscribe(&self, ch: &ResolvedChannel<'_>, user: &str) -> bool {
        if ch.private {
            return false;
        }
        let options = ch.options;
        if options.allow_user_limited_channels {
            if let Some((_, users)) = ch.name.rsplit_once(USER_BOUNDARY) {
                // Centrifugo lets the anonymous user "" into `ns:#`; an empty
                // list entry naming nobody should not open the channel.
                return !user.is_empty() && users.split(USER_SEPARATOR).any(|u| u == user);
            }
        }
        options.allow_subscribe_for_client
            && (!user.is_empty() || options.allow_subscribe_for_anonymous)
    }

    /// Whether `user` may publish from the client side.
    pub fn can_publish(&self, ch: &ResolvedChannel<'_>, user: &str, subscribed: bool) -> bool {
        let o = ch.options;
        access(
            o.allow_publish_for_client,
            o.allow_publish_for_subscriber,
            o.allow_publish_for_anonymous,
            user,
            subscribed,
        )
    }

    /// Whether `user` may call presence and presence_stats.
    pub fn can_presence(&self, ch: &ResolvedChannel<'_>, user: &str, subscribed: bool) -> bool {
        let o = ch.options;
        access(
            o.allow_presence_for_client,
            o.allow_presence_for_subscriber,
            o.allow_presence_for_anonymous,
            user,
            subscribed,
        )
    }

    /// Whether `user` may call history.
    pub fn can_history(&self, ch: &ResolvedChannel<'_>, user: &str, subscribed: bool) -> bool {
        let o = ch.options;
        access(
            o.allow_history_for_client,
            o.allow_history_for_subscriber,
            o.allow_history_for_anonymous,
            user,
            subscribed,
        )
    }

    /// The namespace's `history_meta_ttl`, else `channel.history_meta_ttl`.
    pub fn history_meta_ttl(&self, ch: &ResolvedChannel<'_>) -> Duration {
        effective_meta_ttl(ch.options, self.history_meta_ttl)
    }
}

/// Centrifugo's shape for publish, presence and history access: either flag
/// grants it, and an anonymous user additionally needs the anonymous flag in
/// both cases (Centrifugo v6 checks it on the subscriber path too).
fn access(
    for_client: bool,
    for_subscriber: bool,
    for_anonymous: bool,
    user: &str,
    subscribed: bool,
) -> bool {
    let identity_ok = !user.is_empty() || for_anonymous;
    (for_client || (for_subscriber && subscribed)) && identity_ok
}

/// A namespace override of zero means "not set", as in Centrifugo.
fn effective_meta_ttl(options: &ChannelOptions, global: Duration) -> Duration {
    options
        .history_meta_ttl
        .filter(|ttl| !ttl.is_zero())
        .unwrap_or(global)
}

fn check_options(
    prefix: &str,
    options: &ChannelOptions,
    global_meta_ttl: Duration,
) -> Result<(), AuthConfigError> {
    let has_size = options.history_size > 0;
    let has_ttl = !options.history_ttl.is_zero();
    if has_size && !has_ttl {
        return Err(AuthConfigError::invalid(
            format!("{prefix}.history_ttl"),
            "must be greater than 0 when history_size is set",
        ));
    }
    if has_ttl && !has_size {
        return Err(AuthConfigError::invalid(
            format!("{prefix}.history_size"),
            "must be greater than 0 when history_ttl is set",
        ));
    }
    let meta_ttl = effective_meta_ttl(options, global_meta_ttl);
    if options.history_ttl > meta_ttl {
        return Err(AuthConfigError::invalid(
            format!("{prefix}.history_ttl"),
            format!(
                "{:?} is greater than history_meta_ttl ({meta_ttl:?}): stream meta would expire before its publications",
                options.history_ttl
            ),
        ));
    }
    if options.force_recovery && !options.history_enabled() {
        return Err(AuthConfigError::invalid(
            format!("{prefix}.force_recovery"),
            "needs history_size and history_ttl",
        ));
    }
    if options.auto_cache_recover
        && !(options.force_recovery && options.force_recovery_mode == RecoveryMode::Cache)
    {
        return Err(AuthConfigError::invalid(
            format!("{prefix}.auto_cache_recover"),
            "needs force_recovery = true and force_recovery_mode = \"cache\"",
        ));
    }
    Ok(())
}

/// A namespace's `channel_regex`, compiled once at config load.
fn compile_channel_regex(
    prefix: &str,
    options: &ChannelOptions,
) -> Result<Option<Regex>, AuthConfigError> {
    if options.channel_regex.is_empty() {
        return Ok(None);
    }
    Regex::new(&options.channel_regex).map(Some).map_err(|e| {
        AuthConfigError::invalid(
            format!("{prefix}.channel_regex"),
            format!("is not a valid regular expression: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamespaceConfig;

    fn namespace(name: &str, options: ChannelOptions) -> NamespaceConfig {
        NamespaceConfig {
            name: name.to_owned(),
            options,
        }
    }

    fn policy(
        without_namespace: ChannelOptions,
        namespaces: Vec<NamespaceConfig>,
    ) -> ChannelPolicy {
        ChannelPolicy::new(&ChannelConfig {
            without_namespace,
            namespaces,
            ..ChannelConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn resolves_namespaces() {
        let chat = ChannelOptions {
            presence: true,
            ..ChannelOptions::default()
        };
        let p = policy(
            ChannelOptions::default(),
            vec![namespace("chat", chat.clone())],
        );
        let long = "a".repeat(256);
        let max = "a".repeat(255);
        // Ok((namespace, private, uses the chat options)) or the error.
        type Want = Result<(&'static str, bool, bool), ChannelError>;
        let table: Vec<(&str, Want)> = vec![
            ("chat:room", Ok(("chat", false, true))),
            ("room", Ok(("", false, false))),
            ("$chat:room", Ok(("chat", true, true))),
            ("$room", Ok(("", true, false))),
            ("chat:a:b", Ok(("chat", false, true))),
            (":room", Ok(("", false, false))),
            ("dialog#42", Ok(("", false, false))),
            ("unknown:x", Err(ChannelError::UnknownNamespace)),
            ("$unknown:x", Err(ChannelError::UnknownNamespace)),
            ("Chat:room", Err(ChannelError::UnknownNamespace)),
            ("", Err(ChannelError::BadName)),
            (long.as_str(), Err(ChannelError::BadName)),
            (max.as_str(), Ok(("", false, false))),
            ("chat:café", Err(ChannelError::BadName)),
            ("room\u{7f}", Err(ChannelError::BadName)),
            ("room\n", Err(ChannelError::BadName)),
            ("room\0", Err(ChannelError::BadName)),
        ];
        for (channel, want) in table {
            let got = p.resolve(channel).map(|r| {
                assert_eq!(r.name, channel);
                (r.namespace, r.private, *r.options == chat)
            });
            assert_eq!(got, want, "channel {channel:?}");
        }
    }

    #[test]
    fn channel_regex_decides_the_name_after_the_namespace() {
        let digits = ChannelOptions {
            channel_regex: "^[0-9]+$".into(),
            ..ChannelOptions::default()
        };
        let any_letter = ChannelOptions {
            channel_regex: r"^\p{L}+$".into(),
            ..ChannelOptions::default()
        };
        let p = policy(
            ChannelOptions {
                channel_regex: "^(room|\\$room)$".into(),
                ..ChannelOptions::default()
            },
            vec![
                namespace("n", digits),
                namespace("words", any_letter),
                namespace("free", ChannelOptions::default()),
            ],
        );
        let table: Vec<(&str, Result<&str, ChannelError>)> = vec![
            ("n:123", Ok("n")),
            ("$n:123", Ok("n")),
            ("n:12a", Err(ChannelError::BadName)),
            ("n:", Err(ChannelError::BadName)),
            ("n:1:2", Err(ChannelError::BadName)),
            // With a regex, non-ASCII names are the regex's to take.
            ("words:café", Ok("words")),
            ("words:cafe1", Err(ChannelError::BadName)),
            ("words:caf\u{85}", Err(ChannelError::BadName)),
            // Without one, ASCII only.
            ("free:café", Err(ChannelError::BadName)),
            ("free:anything-goes", Ok("free")),
            // Without a namespace the whole name is matched.
            ("room", Ok("")),
            ("$room", Ok("")),
            ("other", Err(ChannelError::BadName)),
            ("unknown:1", Err(ChannelError::UnknownNamespace)),
        ];
        for (channel, want) in table {
            let got = p.resolve(channel).map(|r| r.namespace);
            assert_eq!(got, want, "channel {channel:?}");
        }
    }

    #[test]
    fn can_subscribe_table() {
        let open = ChannelOptions {
            allow_subscribe_for_client: true,
            ..ChannelOptions::default()
        };
        let open_anonymous = ChannelOptions {
            allow_subscribe_for_client: true,
            allow_subscribe_for_anonymous: true,
            ..ChannelOptions::default()
        };
        let limited = ChannelOptions {
            allow_user_limited_channels: true,
            ..ChannelOptions::default()
        };
        let limited_open = ChannelOptions {
            allow_user_limited_channels: true,
            allow_subscribe_for_client: true,
            ..ChannelOptions::default()
        };
        let p = policy(
            ChannelOptions::default(),
            vec![
                namespace("open", open),
                namespace("anon", open_anonymous),
                namespace("dialog", limited),
                namespace("dlgopen", limited_open),
            ],
        );
        let table = [
            ("room", "42", false),
            ("open:x", "42", true),
            ("open:x", "", false),
            ("anon:x", "", true),
            ("anon:x", "42", true),
            ("$open:x", "42", false),
            ("$anon:x", "", false),
            ("dialog:#42,43", "42", true),
            ("dialog:#42,43", "43", true),
            ("dialog:#42,43", "44", false),
            ("dialog:#42,43", "4", false),
            ("dialog:#42,43", "", false),
            ("dialog:#", "", false),
            ("dialog:a#b#42", "42", true),
            ("dialog:a#42#b", "42", false),
            ("dialog:plain", "42", false),
            ("$dialog:#42", "42", false),
            // '#' without allow_user_limited_channels is an ordinary character.
            ("open:#43", "42", true),
            // For user-limited channels allow_subscribe_for_client does not apply.
            ("dlgopen:#43", "42", false),
            ("dlgopen:#42", "42", true),
            ("dlgopen:plain", "42", true),
        ];
        for (channel, user, want) in table {
            let ch = p.resolve(channel).unwrap();
            assert_eq!(
                p.can_subscribe(&ch, user),
                want,
                "channel {channel:?} user {user:?}"
            );
        }
    }

    /// Builds the three-flag table once for publish, presence and history.
    fn permission_table(
        set: fn(&mut ChannelOptions, bool, bool, bool),
        check: fn(&ChannelPolicy, &ResolvedChannel<'_>, &str, bool) -> bool,
    ) {
        // (for_client, for_subscriber, for_anonymous, user, subscribed, want)
        let table = [
            (false, false, false, "42", true, false),
            (true, false, false, "42", false, true),
            (true, false, false, "", false, false),
            (true, false, true, "", false, true),
            (false, true, false, "42", true, true),
            (false, true, false, "42", false, false),
            (false, true, false, "", true, false),
            (false, true, true, "", true, true),
            (false, true, true, "", false, false),
            (false, false, true, "", true, false),
            (true, true, false, "42", false, true),
            (true, true, false, "", true, false),
        ];
        for (client, subscriber, anonymous, user, subscribed, want) in table {
            let mut options = ChannelOptions::default();
            set(&mut options, client, subscriber, anonymous);
            let p = policy(options, vec![]);
            let ch = p.resolve("room").unwrap();
            assert_eq!(
                check(&p, &ch, user, subscribed),
                want,
                "client={client} subscriber={subscriber} anonymous={anonymous} user={user:?} subscribed={subscribed}"
            );
        }
    }

    #[test]
    fn can_publish_table() {
        permission_table(
            |o, c, s, a| {
                o.allow_publish_for_client = c;
                o.allow_publish_for_subscriber = s;
                o.allow_publish_for_anonymous = a;
            },
            ChannelPolicy::can_publish,
        );
    }

    #[test]
    fn can_presence_table() {
        permission_table(
            |o, c, s, a| {
                o.allow_presence_for_client = c;
                o.allow_presence_for_subscriber = s;
                o.allow_presence_for_anonymous = a;
            },
            ChannelPolicy::can_presence,
        );
    }

    #[test]
    fn can_history_table() {
        permission_table(
            |o, c, s, a| {
                o.allow_history_for_client = c;
                o.allow_history_for_subscriber = s;
                o.allow_history_for_anonymous = a;
            },
            ChannelPolicy::can_history,
        );
    }

    #[test]
    fn permission_flags_do_not_leak_between_operations() {
        let options = ChannelOptions {
            allow_publish_for_client: true,
            ..ChannelOptions::default()
        };
        let p = policy(options, vec![]);
        let ch = p.resolve("room").unwrap();
        assert!(p.can_publish(&ch, "42", false));
        assert!(!p.can_presence(&ch, "42", true));
        assert!(!p.can_history(&ch, "42", true));
        assert!(!p.can_subscribe(&ch, "42"));
    }

    #[test]
    fn history_meta_ttl_falls_back_to_global() {
        let p = ChannelPolicy::new(&ChannelConfig {
            history_meta_ttl: Duration::from_secs(100),
            namespaces: vec![namespace(
                "chat",
                ChannelOptions {
                    history_meta_ttl: Some(Duration::from_secs(7)),
                    ..ChannelOptions::default()
                },
            )],
            ..ChannelConfig::default()
        })
        .unwrap();
        let table = [("room", 100), ("chat:x", 7), ("$chat:x", 7)];
        for (channel, want) in table {
            let ch = p.resolve(channel).unwrap();
            assert_eq!(
                p.history_meta_ttl(&ch),
                Duration::from_secs(want),
                "{channel}"
            );
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let with_history = |size: usize, ttl: u64| ChannelOptions {
            history_size: size,
            history_ttl: Duration::from_secs(ttl),
            ..ChannelOptions::default()
        };
        let table: Vec<(ChannelConfig, &str)> = vec![
            (
                ChannelConfig {
                    namespaces: vec![namespace("", ChannelOptions::default())],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[0].name: must not be empty",
            ),
            (
                ChannelConfig {
                    namespaces: vec![
                        namespace("ok", ChannelOptions::default()),
                        namespace("a:b", ChannelOptions::default()),
                    ],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[1].name: may only contain ASCII letters, digits, '_', '-' and '.'",
            ),
            (
                ChannelConfig {
                    namespaces: vec![namespace("sp ace", ChannelOptions::default())],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[0].name: may only contain ASCII letters, digits, '_', '-' and '.'",
            ),
            (
                ChannelConfig {
                    namespaces: vec![
                        namespace("chat", ChannelOptions::default()),
                        namespace("chat", ChannelOptions::default()),
                    ],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[chat].name: defined more than once",
            ),
            (
                ChannelConfig {
                    namespaces: vec![namespace("chat", with_history(10, 0))],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[chat].history_ttl: must be greater than 0 when history_size is set",
            ),
            (
                ChannelConfig {
                    namespaces: vec![namespace("chat", with_history(0, 60))],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[chat].history_size: must be greater than 0 when history_ttl is set",
            ),
            (
                ChannelConfig {
                    without_namespace: with_history(5, 0),
                    ..ChannelConfig::default()
                },
                "channel.without_namespace.history_ttl: must be greater than 0 when history_size is set",
            ),
            (
                ChannelConfig {
                    history_meta_ttl: Duration::from_secs(60),
                    without_namespace: with_history(10, 120),
                    ..ChannelConfig::default()
                },
                "channel.without_namespace.history_ttl: 120s is greater than history_meta_ttl (60s): stream meta would expire before its publications",
            ),
            (
                ChannelConfig {
                    namespaces: vec![namespace(
                        "chat",
                        ChannelOptions {
                            history_meta_ttl: Some(Duration::from_secs(10)),
                            ..with_history(10, 11)
                        },
                    )],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[chat].history_ttl: 11s is greater than history_meta_ttl (10s): stream meta would expire before its publications",
            ),
            (
                ChannelConfig {
                    without_namespace: ChannelOptions {
                        force_recovery: true,
                        ..ChannelOptions::default()
                    },
                    ..ChannelConfig::default()
                },
                "channel.without_namespace.force_recovery: needs history_size and history_ttl",
            ),
            (
                ChannelConfig {
                    namespaces: vec![namespace(
                        "state",
                        ChannelOptions {
                            auto_cache_recover: true,
                            force_recovery: true,
                            ..with_history(1, 60)
                        },
                    )],
                    ..ChannelConfig::default()
                },
                "channel.namespaces[state].auto_cache_recover: needs force_recovery = true and force_recovery_mode = \"cache\"",
            ),
            (
                ChannelConfig {
                    without_namespace: ChannelOptions {
                        auto_cache_recover: true,
                        force_recovery_mode: RecoveryMode::Cache,
                        ..with_history(1, 60)
                    },
                    ..ChannelConfig::default()
                },
                "channel.without_namespace.auto_cache_recover: needs force_recovery = true and force_recovery_mode = \"cache\"",
            ),
        ];
        for (config, want) in table {
            let err = ChannelPolicy::new(&config).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn an_invalid_channel_regex_is_refused_at_load() {
        let config = ChannelConfig {
            namespaces: vec![namespace(
                "n",
                ChannelOptions {
                    channel_regex: "([a-z]".into(),
                    ..ChannelOptions::default()
                },
            )],
            ..ChannelConfig::default()
        };
        let err = ChannelPolicy::new(&config).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "channel.namespaces[n].channel_regex: is not a valid regular expression"
            ),
            "{err}"
        );
    }

    #[test]
    fn cache_recovery_with_auto_recover_is_accepted() {
        let options = ChannelOptions {
            history_size: 1,
            history_ttl: Duration::from_secs(60),
            force_recovery: true,
            force_recovery_mode: RecoveryMode::Cache,
            auto_cache_recover: true,
            ..ChannelOptions::default()
        };
        assert!(ChannelPolicy::new(&ChannelConfig {
            namespaces: vec![namespace("state", options)],
            ..ChannelConfig::default()
        })
        .is_ok());
        let parsed: ChannelOptions =
            serde_json::from_str(r#"{"force_recovery_mode": ""}"#).unwrap();
        assert_eq!(parsed.force_recovery_mode, RecoveryMode::Stream);
        let parsed: ChannelOptions =
            serde_json::from_str(r#"{"force_recovery_mode": "cache"}"#).unwrap();
        assert_eq!(parsed.force_recovery_mode, RecoveryMode::Cache);
        assert!(
            serde_json::from_str::<ChannelOptions>(r#"{"force_recovery_mode": "ring"}"#).is_err()
        );
    }

    #[test]
    fn accepts_valid_namespace_names() {
        let config = ChannelConfig {
            without_namespace: ChannelOptions {
                history_size: 100,
                history_ttl: Duration::from_secs(300),
                force_recovery: true,
                ..ChannelOptions::default()
            },
            namespaces: vec![
                namespace("chat", ChannelOptions::default()),
                namespace("Chat_2-b", ChannelOptions::default()),
                namespace("v1.chat", ChannelOptions::default()),
                namespace(
                    "meta",
                    ChannelOptions {
                        // Zero means "not set" and falls back to the global TTL.
                        history_meta_ttl: Some(Duration::ZERO),
                        history_size: 1,
                        history_ttl: Duration::from_secs(60),
                        ..ChannelOptions::default()
                    },
                ),
            ],
            ..ChannelConfig::default()
        };
        let p = ChannelPolicy::new(&config).unwrap();
        assert_eq!(p.resolve("Chat_2-b:x").unwrap().namespace, "Chat_2-b");
        assert_eq!(p.resolve("v1.chat:x").unwrap().namespace, "v1.chat");
        let meta = p.resolve("meta:x").unwrap();
        assert_eq!(p.history_meta_ttl(&meta), Duration::from_secs(720 * 3600));
    }
}
