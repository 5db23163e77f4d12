//! Entry point of the `config_loader` fuzz target (`fuzz/`), also driven by
//! the property tests below so `cargo test` covers the same path: a config
//! file's text and `HERALD_*` variables through [`config::load`], the
//! loader `serve`, `checkconfig` and `gentoken` use.
//!
//! Not an API: hidden from the docs and free to change.

use ::config::FileFormat;

use crate::config::{self, ConfigError, FileLayer, Loaded};

/// Loads `data` as a config, never panicking unless an invariant breaks.
/// The first byte picks the file format (TOML, YAML, JSON, or no file);
/// the rest, split on NUL bytes, is the file's text and then
/// `NAME=VALUE` variables (`HERALD_` is prefixed to a name without it).
///
/// `None` when the input is skipped: not UTF-8, or able to name a `*_file`
/// key (see `reads_files`). `Some(Ok(warnings))` or `Some(Err(message))`
/// otherwise.
pub fn fuzz_config(data: &[u8]) -> Option<Result<Vec<String>, String>> {
    let (&selector, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut parts = text.split('\0');
    let file = parts.next().unwrap_or_default();
    let env = parts
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = if name.starts_with(config::ENV_PREFIX) {
                name.to_owned()
            } else {
                format!("{}{name}", config::ENV_PREFIX)
            };
            (name, value.to_owned())
        })
        .collect::<Vec<_>>();
    let format = match selector % 4 {
        0 => Some(FileFormat::Toml),
        1 => Some(FileFormat::Yaml),
        2 => Some(FileFormat::Json),
        _ => None,
    };
    let loaded = load_untrusted(file, format, &env)?;
    Some(loaded.map(|l| l.warnings).map_err(|e| e.to_string()))
}

/// [`config::load`] on a file of `text` in `format` (no file when `None`)
/// and the variables `env`, then checks that an accepted config, written
/// back out, loads to the same config. `None` when the input is skipped
/// (see [`reads_files`]).
pub(crate) fn load_untrusted(
    text: &str,
    format: Option<FileFormat>,
    env: &[(String, String)],
) -> Option<Result<Loaded, ConfigError>> {
    if reads_files(text, env) {
        return None;
    }
    let file = match format {
        Some(format) => FileLayer::Text(text, format),
        None => FileLayer::None,
    };
    let result = config::load(file, env.iter().cloned());
    match &result {
        Ok(loaded) => assert_round_trips(loaded),
        Err(error) => assert!(!error.to_string().is_empty(), "an empty error message"),
    }
    Some(result)
}

/// Whether the input could set a `*_file` key (the loader would read that
/// path: `/dev/zero` or a FIFO would hang the fuzzer), conservatively:
/// "file" in any case anywhere but a comment line, or a backslash (an
/// escape could spell a key without the letters). Every key the loader
/// reads a file for ends in `_file`.
pub(crate) fn reads_files(text: &str, env: &[(String, String)]) -> bool {
    let names_file = |s: &str| s.to_lowercase().contains("file");
    // A line whose first non-blank character is `#` sets no key: it is a
    // comment in TOML and YAML (or text inside a multi-line string), and
    // not JSON. Split on every line break YAML 1.1 knows.
    let mut lines = text
        .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .filter(|line| !line.trim_start_matches([' ', '\t']).starts_with('#'));
    text.contains('\\') || lines.any(names_file) || env.iter().any(|(name, _)| names_file(name))
}

/// An accepted config, serialized and loaded again, is the same config
/// with the same warnings: nothing the loader accepts is lost or changed
/// by writing it back out (what `genconfig`-style tooling would do).
fn assert_round_trips(loaded: &Loaded) {
    let json = serde_json::to_string(&loaded.config).expect("a config serializes");
    let again = config::load(FileLayer::Text(&json, FileFormat::Json), [])
        .unwrap_or_else(|e| panic!("an accepted config, written back, is refused: {e}\n{json}"));
    let before = serde_json::to_value(&loaded.config).expect("a config serializes");
    let after = serde_json::to_value(&again.config).expect("a config serializes");
    assert_eq!(before, after, "a config changes when written back");
    assert_eq!(
        loaded.warnings, again.warnings,
        "warnings change when written back"
    );
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Every key of the config with its default value, as
    /// `("client.token.leeway", "5s")`, less the `*_file` keys.
    fn known_keys() -> Vec<(String, Value)> {
        fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
            match value {
                Value::Object(map) => {
                    for (key, value) in map {
                        let path = if prefix.is_empty() {
                            key.clone()
                        } else {
                            format!("{prefix}.{key}")
                        };
                        walk(&path, value, out);
                    }
                }
                _ => out.push((prefix.to_owned(), value.clone())),
            }
        }
        let defaults = serde_json::to_value(config::Config::default()).unwrap();
        let mut out = Vec::new();
        walk("", &defaults, &mut out);
        out.retain(|(key, _)| !key.contains("file"));
        out
    }

    /// A TOML value for a key whose default is `default`: mostly one of
    /// the same type (often valid), sometimes one of any type.
    fn toml_value(default: Value) -> impl Strategy<Value = String> {
        let literal = toml_literal(&default);
        let same_type = match &default {
            Value::Bool(_) => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            Value::Number(_) => prop_oneof![
                Just(literal.clone()),
                (0u32..100_000).prop_map(|n| n.to_string())
            ]
            .boxed(),
            Value::String(s) if is_duration(s) => prop_oneof![
                Just(literal.clone()),
                prop_oneof![
                    Just("0s"),
                    Just("1ms"),
                    Just("5s"),
                    Just("30s"),
                    Just("2h 3m")
                ]
                .prop_map(|s| format!("{s:?}")),
            ]
            .boxed(),
            Value::Array(_) => prop_oneof![
                Just(literal.clone()),
                prop::collection::vec("[a-z:/.0-9]{0,12}", 0..3)
                    .prop_map(|items| format!("{items:?}")),
            ]
            .boxed(),
            _ => prop_oneof![
                Just(literal.clone()),
                "[a-z0-9 .:/_-]{0,40}".prop_map(|s| format!("{s:?}"))
            ]
            .boxed(),
        };
        let any_type = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            "[a-z0-9 .:/_-]{0,40}".prop_map(|s| format!("{s:?}")),
            prop_oneof![Just("-1s"), Just("1x"), Just("99999999999h"), Just("")]
                .prop_map(|s| format!("{s:?}")),
            Just("[1, \"a\"]".to_owned()),
            Just("{ a = 1 }".to_owned()),
        ];
        prop_oneof![6 => same_type, 1 => any_type]
    }

    /// Whether a default looks like a humantime duration ("25s", "720h").
    fn is_duration(s: &str) -> bool {
        s.starts_with(|c: char| c.is_ascii_digit())
            && s.ends_with(|c: char| c.is_ascii_alphabetic())
            && !s.contains(['.', ':'])
    }

    fn toml_literal(value: &Value) -> String {
        match value {
            Value::String(s) => format!("{s:?}"),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(toml_literal).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Null => "\"\"".to_owned(),
            other => other.to_string(),
        }
    }

    /// A TOML-ish file: known keys (each once) with values of the same or
    /// any type, unknown keys, then namespaces and keyrings as tables;
    /// sometimes a junk line anywhere.
    fn toml_text() -> impl Strategy<Value = String> {
        let keys = known_keys();
        let n = keys.len();
        let assignments = prop::sample::subsequence(keys, 0..n.min(10)).prop_flat_map(|keys| {
            keys.into_iter()
                .map(|(key, default)| toml_value(default).prop_map(move |v| format!("{key} = {v}")))
                .collect::<Vec<_>>()
        });
        let unknown = prop::option::weighted(
            0.15,
            "[a-z_]{1,10}(\\.[a-z_]{1,10}){0,2}".prop_map(|key| format!("{key} = 1")),
        );
        let namespace = ("[a-z]{1,8}", any::<bool>()).prop_map(|(name, presence)| {
            format!("[[channel.namespaces]]\nname = {name:?}\npresence = {presence}\nhistory_size = 10\nhistory_ttl = \"1m\"")
        });
        let keyring = prop_oneof![
            Just(("bus_integrity", "secret")),
            Just(("history_encryption", "key"))
        ]
        .prop_map(|(ring, field)| {
            // Base64 of 32 bytes.
            let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
            format!("[{ring}]\nactive = \"k1\"\n[[{ring}.keys]]\nid = \"k1\"\n{field} = {key:?}")
        });
        let tables = prop::collection::vec(prop_oneof![namespace, keyring], 0..3);
        // Printable junk without a backslash, in one file out of ten.
        let junk =
            prop::option::weighted(0.1, ("[ -\\[\\]-~]{0,30}", any::<prop::sample::Index>()));
        (assignments, unknown, tables, junk).prop_map(|(mut lines, unknown, tables, junk)| {
            lines.extend(unknown);
            lines.extend(tables);
            if let Some((line, at)) = junk {
                lines.insert(at.index(lines.len() + 1), line);
            }
            lines.join("\n")
        })
    }

    /// `HERALD_*` variables: known keys with values mostly of the right
    /// type, and unknown names.
    fn env_vars() -> impl Strategy<Value = Vec<(String, String)>> {
        let known = prop::sample::select(known_keys()).prop_flat_map(|(key, default)| {
            let name = env_name(&key);
            let same_type = match &default {
                Value::Bool(_) => any::<bool>().prop_map(|b| b.to_string()).boxed(),
                Value::Number(_) => (0u32..100_000).prop_map(|n| n.to_string()).boxed(),
                Value::String(s) if is_duration(s) => {
                    prop_oneof![Just("1ms"), Just("5s"), Just("30s"), Just("2h")]
                        .prop_map(str::to_owned)
                        .boxed()
                }
                Value::Array(_) => "[a-z:/.0-9,]{0,30}".boxed(),
                _ => "[a-z0-9 .:/_-]{0,30}".boxed(),
            };
            let value = prop_oneof![4 => same_type, 1 => "[ -~]{0,24}"];
            value.prop_map(move |value| (name.clone(), value))
        });
        let unknown = ("HERALD_[A-Z_]{0,16}", "[ -~]{0,8}");
        prop::collection::vec(prop_oneof![8 => known, 1 => unknown], 0..4)
    }

    fn env_name(key: &str) -> String {
        format!("HERALD_{}", key.to_ascii_uppercase().replace('.', "__"))
    }

    proptest! {
        /// TOML-ish text and `HERALD_*` variables: the loader accepts or
        /// refuses, never panics, and gives the same verdict twice; what it
        /// accepts writes back out unchanged (checked by `load_untrusted`).
        #[test]
        fn any_file_and_env_load_or_fail_cleanly(text in toml_text(), env in env_vars()) {
            let first = load_untrusted(&text, Some(FileFormat::Toml), &env);
            let again = load_untrusted(&text, Some(FileFormat::Toml), &env);
            // Which of several bad keys an error names may vary from run to
            // run (the config crate's tables are hash maps); the verdict
            // and an accepted config may not.
            let summary = |r: Option<Result<Loaded, ConfigError>>| {
                r.map(|r| {
                    r.map(|l| (serde_json::to_value(&l.config).unwrap(), l.warnings))
                        .map_err(|_| ())
                })
            };
            prop_assert_eq!(summary(first), summary(again));
        }

        /// An unknown `HERALD_*` variable (top-level or in a known
        /// section) is refused and named, whatever else the file and the
        /// environment hold.
        #[test]
        fn an_unknown_variable_is_named(
            text in toml_text(),
            mut env in env_vars(),
            section in prop::sample::select(vec!["", "client.", "engine.redis.", "log."]),
            name in "[A-Z]{3,10}",
        ) {
            let key = format!("{section}no_such_{}", name.to_ascii_lowercase());
            let variable = env_name(&key);
            env.push((variable.clone(), "1".to_owned()));
            let Some(Err(ConfigError::UnknownKeys { keys })) =
                load_untrusted(&text, Some(FileFormat::Toml), &env)
            else {
                // Skipped (a generated name holds "file"), or refused
                // before the unknown-key check.
                return Ok(());
            };
            prop_assert!(
                keys.iter().any(|k| k.key == key && k.env.as_deref() == Some(variable.as_str())),
                "{:?}", keys
            );
        }

        /// Arbitrary bytes through the fuzz entry point: no panic.
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = fuzz_config(&data);
        }

        /// Arbitrary text in every format.
        #[test]
        fn arbitrary_text_in_any_format_never_panics(
            selector in any::<u8>(),
            text in "[ -~\n\t]{0,300}",
        ) {
            let mut data = vec![selector];
            data.extend_from_slice(text.as_bytes());
            let _ = fuzz_config(&data);
        }
    }

    #[test]
    fn the_dev_profile_loads_and_writes_back() {
        // Its comments mention `*_file` keys; it sets none.
        let text = crate::profile::config_text(&crate::profile::Secrets::generate());
        let loaded = load_untrusted(&text, Some(FileFormat::Toml), &[]);
        assert!(matches!(loaded, Some(Ok(_))), "{loaded:?}");
    }

    #[test]
    fn file_keys_are_skipped() {
        let env = |name: &str| vec![(name.to_owned(), "/dev/zero".to_owned())];
        for (text, env) in [
            ("client.token.hmac_secret_key_file = \"/dev/zero\"", vec![]),
            ("\"http_api.key_fil\\u0065\" = \"/dev/zero\"", vec![]),
            ("engine.redis.TLS_CA_PEM_FILE = \"/dev/zero\"", vec![]),
            ("# comment\rhttp_api.key_file = \"/dev/zero\"", vec![]),
            ("a = { b = \"#\", key_file = \"/dev/zero\" }", vec![]),
            ("", env("HERALD_HTTP_API__KEY_FILE")),
            ("", env("herald_http_api__key_file")),
        ] {
            assert!(
                load_untrusted(text, Some(FileFormat::Toml), &env).is_none(),
                "{text} {env:?}"
            );
        }
        assert!(load_untrusted("log.level = \"debug\"", Some(FileFormat::Toml), &[]).is_some());
        assert_eq!(fuzz_config(&[3]), Some(Ok(vec![])));
        assert_eq!(
            fuzz_config(b"\x00log.level = \"debug\"\0LOG__FORMAT=json"),
            Some(Ok(vec![]))
        );
        assert!(
            matches!(fuzz_config(b"\x00\0HERALD_NOPE=1"), Some(Err(e)) if e.contains("HERALD_NOPE"))
        );
    }
}
