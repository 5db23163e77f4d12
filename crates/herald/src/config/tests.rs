use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::profile::{self, Secrets};

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("herald-config-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml(text: &str, pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load(FileLayer::Text(text, FileFormat::Toml), env(pairs))
}

fn toml_err(text: &str, pairs: &[(&str, &str)]) -> String {
    match toml(text, pairs) {
        Ok(_) => panic!("config accepted: {text} {pairs:?}"),
        Err(e) => e.to_string(),
    }
}

/// A config file, env pairs, and the expected error (or its start).
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn empty_config_takes_documented_defaults() {
    let config = load(FileLayer::None, Vec::new()).unwrap().config;
    assert_eq!(config.http_server.address, "127.0.0.1");
    assert_eq!(config.http_server.port, 8000);
    assert_eq!(config.http_server.internal_port, 9000);
    assert_eq!(config.client.ping_interval, Duration::from_secs(25));
    assert_eq!(config.engine.kind, EngineKind::Memory);
    assert_eq!(config.engine.redis.address, ["redis://127.0.0.1:6379"]);
    assert_eq!(config.engine.redis.prefix, "herald");
    assert!(config.prometheus.enabled);
    assert!(config.health.enabled);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.shutdown.timeout, Duration::from_secs(30));
    assert!(config.bus_integrity.active.is_empty());
}

#[test]
fn env_overrides_file_with_double_underscore_levels() {
    let file = format!(
        "[http_server]\nport = 8001\n[client]\ninsecure = false\n[client.token]\nhmac_secret_key = \"{SECRET}\"\n"
    );
    let config = toml(
        &file,
        &[
            ("HERALD_HTTP_SERVER__PORT", "9001"),
            ("HERALD_CLIENT__INSECURE", "true"),
            ("HERALD_CLIENT__PING_INTERVAL", "40s"),
            ("HERALD_CLIENT__TOKEN__HMAC_SECRET_KEY", "1e10"),
            ("HERALD_CLIENT__TOKEN__AUDIENCE", "herald"),
            ("HERALD_CHANNEL__WITHOUT_NAMESPACE__HISTORY_SIZE", "10"),
            ("HERALD_CHANNEL__WITHOUT_NAMESPACE__HISTORY_TTL", "1m"),
            ("HERALD_LOG__FORMAT", "json"),
            ("HERALD_BUS_INTEGRITY__ACTIVE", ""),
            // Not part of the config layer.
            ("HERALD_CONFIG", "/nonexistent.toml"),
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(config.http_server.port, 9001);
    assert!(config.client.insecure);
    assert_eq!(config.client.ping_interval, Duration::from_secs(40));
    // A numeric-looking secret stays the text it was.
    assert_eq!(config.client.token.hmac_secret_key, "1e10");
    assert_eq!(config.client.token.audience, "herald");
    assert_eq!(config.channel.without_namespace.history_size, 10);
    assert_eq!(
        config.channel.without_namespace.history_ttl,
        Duration::from_secs(60)
    );
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn env_list_keys_are_comma_separated() {
    let config = toml(
        "",
        &[
            (
                "HERALD_CLIENT__ALLOWED_ORIGINS",
                "https://a.example, https://*.b.example",
            ),
            (
                "HERALD_ENGINE__REDIS__ADDRESS",
                "redis://10.0.0.1:6379,rediss://10.0.0.2:6380",
            ),
            ("HERALD_ENGINE__REDIS__CLUSTER_ADDRESS", ""),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(
        config.client.allowed_origins,
        ["https://a.example", "https://*.b.example"]
    );
    assert_eq!(
        config.engine.redis.address,
        ["redis://10.0.0.1:6379", "rediss://10.0.0.2:6380"]
    );
    assert!(config.engine.redis.cluster_address.is_empty());
}

#[test]
fn sentinel_keys_reach_the_engine() {
    let password = TempFile::new("sentinel-password", "s3cret\n");
    let password_path = password.0.display().to_string();
    let config = toml(
        "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_master_name = \"main\"\n\
         sentinel_user = \"watcher\"\ntls = { enabled = true }\n\
         sentinel_tls = { enabled = true }\n",
        &[
            (
                "HERALD_ENGINE__REDIS__SENTINEL_ADDRESS",
                "10.0.0.1:26379,redis://10.0.0.2:26379,rediss://[::1]:26380",
            ),
            (
                "HERALD_ENGINE__REDIS__SENTINEL_PASSWORD_FILE",
                &password_path,
            ),
        ],
    )
    .unwrap()
    .config;
    let engine = config.redis_engine().unwrap();
    let sentinel = engine.sentinel.expect("sentinel mode");
    assert_eq!(
        sentinel.addresses,
        [
            "rediss://10.0.0.1:26379",
            "rediss://10.0.0.2:26379",
            "rediss://[::1]:26380"
        ]
    );
    assert_eq!(sentinel.master_name, "main");
    assert_eq!(sentinel.user.as_deref(), Some("watcher"));
    assert_eq!(sentinel.password.as_deref(), Some("s3cret"));
    assert!(engine.master_tls);
    assert!(!format!("{:?}", config.engine.redis).contains("s3cret"));

    let plain = toml("", &[]).unwrap().config.redis_engine().unwrap();
    assert!(plain.sentinel.is_none());
}

#[test]
fn file_formats_follow_the_extension() {
    let yaml = TempFile::new(
        "herald.yaml",
        "http_server:\n  port: 8100\nclient:\n  allowed_origins: [\"https://x.example\"]\n",
    );
    let json = TempFile::new(
        "herald.json",
        r#"{"http_server": {"port": 8200}, "log": {"format": "json"}}"#,
    );
    let toml_file = TempFile::new("herald.toml", "[http_server]\nport = 8300\n");
    let yaml = load(FileLayer::Path(yaml.path()), Vec::new())
        .unwrap()
        .config;
    assert_eq!(yaml.http_server.port, 8100);
    assert_eq!(yaml.client.allowed_origins, ["https://x.example"]);
    let json = load(FileLayer::Path(json.path()), Vec::new())
        .unwrap()
        .config;
    assert_eq!(json.http_server.port, 8200);
    assert_eq!(json.log.format, LogFormat::Json);
    let toml_config = load(FileLayer::Path(toml_file.path()), Vec::new())
        .unwrap()
        .config;
    assert_eq!(toml_config.http_server.port, 8300);

    let ini = TempFile::new("herald.ini", "");
    let err = load(FileLayer::Path(ini.path()), Vec::new()).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnsupportedFormat { .. }),
        "{err}"
    );
    let missing = Path::new("/nonexistent/herald.toml");
    let err = load(FileLayer::Path(missing), Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/herald.toml"),
        "{err}"
    );
}

#[test]
fn secrets_come_from_file_keys_without_trailing_newline() {
    let hmac = TempFile::new("hmac", &format!("{SECRET}\n"));
    let api = TempFile::new("api", "api-key-from-file\r\n");
    let sub = TempFile::new("sub", "sub-secret-0123456789abcdef012345");
    let redis = TempFile::new("redis", "redis-password\n");
    let file = format!(
        "[client.token]\nhmac_secret_key_file = \"{}\"\n[http_api]\nkey_file = \"{}\"\n",
        hmac.path().display(),
        api.path().display()
    );
    let sub_path = sub.path().display().to_string();
    let redis_path = redis.path().display().to_string();
    let config = toml(
        &file,
        &[
            ("HERALD_CLIENT__SUBSCRIPTION_TOKEN__ENABLED", "true"),
            (
                "HERALD_CLIENT__SUBSCRIPTION_TOKEN__HMAC_SECRET_KEY_FILE",
                &sub_path,
            ),
            ("HERALD_ENGINE__REDIS__PASSWORD_FILE", &redis_path),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(config.client.token.hmac_secret_key, SECRET);
    assert_eq!(config.http_api.key, "api-key-from-file");
    assert_eq!(
        config.client.subscription_token.token.hmac_secret_key,
        "sub-secret-0123456789abcdef012345"
    );
    assert_eq!(config.engine.redis.password, "redis-password");
}

#[test]
fn secret_file_errors_name_the_key() {
    let err = toml_err("[http_api]\nkey_file = \"/nonexistent/api-key\"\n", &[]);
    assert!(
        err.starts_with("http_api.key_file: cannot read /nonexistent/api-key"),
        "{err}"
    );

    let hmac = TempFile::new("hmac", SECRET);
    let file = format!(
        "[client.token]\nhmac_secret_key = \"{SECRET}\"\nhmac_secret_key_file = \"{}\"\n",
        hmac.path().display()
    );
    let err = toml_err(&file, &[]);
    assert_eq!(
        err,
        "client.token.hmac_secret_key: set either client.token.hmac_secret_key or \
         client.token.hmac_secret_key_file, not both"
    );
}

#[test]
fn keyring_secrets_come_from_files() {
    let bus = TempFile::new("bus", &format!("{}\n", profile::random_key_base64()));
    let history = TempFile::new("history", &profile::random_key_base64());
    let file = format!(
        "[bus_integrity]\nactive = \"b1\"\nkeys = [{{ id = \"b1\", secret_file = \"{}\" }}]\n\
         [history_encryption]\nactive = \"h1\"\nkeys = [{{ id = \"h1\", key_file = \"{}\" }}]\n",
        bus.path().display(),
        history.path().display()
    );
    let config = toml(&file, &[]).unwrap().config;
    assert_eq!(config.bus_integrity.keys[0].secret.len(), 44);
    assert_eq!(config.history_encryption.keys[0].key.len(), 44);
}

#[test]
fn unknown_keys_are_named_by_full_path() {
    let table: &[Case] = &[
        (
            "[client]\npong_timout = \"8s\"\n",
            &[],
            "client.pong_timout: unknown key",
        ),
        ("[nonsense]\na = 1\n", &[], "nonsense: unknown key"),
        (
            "[client.token]\nhmac_secret = \"x\"\n",
            &[],
            "client.token.hmac_secret: unknown key",
        ),
        (
            "[client.subscription_token]\nhmac_secret_kye = \"x\"\n",
            &[],
            "client.subscription_token.hmac_secret_kye: unknown key",
        ),
        (
            "[[channel.namespaces]]\nname = \"chat\"\npresnce = true\n",
            &[],
            "channel.namespaces[0].presnce: unknown key",
        ),
        (
            "[engine.redis]\nadress = [\"redis://x\"]\n",
            &[],
            "engine.redis.adress: unknown key",
        ),
        (
            "",
            &[("HERALD_CLIENT__PONG_TIMOUT", "8s")],
            "client.pong_timout: unknown key (set by HERALD_CLIENT__PONG_TIMOUT)",
        ),
        (
            "[log]\nlevel = \"info\"\ncolour = true\n[shutdown]\ngrace = \"1s\"\n",
            &[],
            "log.colour: unknown key; shutdown.grace: unknown key",
        ),
    ];
    for (file, pairs, want) in table {
        assert_eq!(toml_err(file, pairs), *want, "{file} {pairs:?}");
    }
}

#[test]
fn bad_values_name_their_key() {
    let table: &[Case] = &[
        ("[http_server]\nport = \"abc\"\n", &[], "http_server.port: "),
        ("[http_server]\nport = 70000\n", &[], "http_server.port: "),
        (
            "",
            &[("HERALD_HTTP_SERVER__PORT", "eighty")],
            "http_server.port: ",
        ),
        (
            "[client]\nping_interval = \"soon\"\n",
            &[],
            "client.ping_interval: ",
        ),
        ("[client]\ninsecure = \"maybe\"\n", &[], "client.insecure: "),
        (
            "[client]\nallowed_origins = \"*\"\n",
            &[],
            "client.allowed_origins: ",
        ),
        ("[log]\nformat = \"xml\"\n", &[], "log.format: "),
        ("[log]\nlevel = \"info,[\"\n", &[], "log.level: "),
        ("[engine]\ntype = \"etcd\"\n", &[], "engine.type: "),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\naddress = [\"127.0.0.1:6379\"]\n",
            &[],
            "engine.redis.address: every address must start with redis:// or rediss://",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nheartbeat_interval = \"10s\"\nnode_ttl = \"5s\"\n",
            &[],
            "engine.redis.node_ttl: must be longer than engine.redis.heartbeat_interval",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\ntls_ca_pem_file = \"/nonexistent/ca.pem\"\n",
            &[],
            "engine.redis.tls_ca_pem_file: cannot read /nonexistent/ca.pem",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_master_name = \"m\"\n",
            &[],
            "engine.redis.sentinel_address: lists no Sentinel",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_address = [\"127.0.0.1:26379\"]\n",
            &[],
            "engine.redis.sentinel_master_name: is needed with sentinel_address",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_master_name = \"m\"\nsentinel_address = [\"127.0.0.1\"]\n",
            &[],
            "engine.redis.sentinel_address: every address must be host:port",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_master_name = \"m\"\nsentinel_address = [\"http://h:1\"]\n",
            &[],
            "engine.redis.sentinel_address: every address must be host:port",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_master_name = \"m\"\nsentinel_address = [\"h:1\"]\ncluster_address = [\"redis://h:2\"]\n",
            &[],
            "engine.redis.sentinel_address: cannot be used with cluster_address",
        ),
        (
            "[engine]\ntype = \"redis\"\n[engine.redis]\nsentinel_master_name = \"m\"\nsentinel_address = [\"h:1\"]\nsentinel_tls = { server_ca_pem_file = \"/nonexistent/s.pem\" }\n",
            &[],
            "engine.redis.sentinel_tls.server_ca_pem_file: cannot read /nonexistent/s.pem",
        ),
        (
            "[client]\nping_interval = \"5s\"\npong_timeout = \"8s\"\n",
            &[],
            "client.ping_interval: must be greater than client.pong_timeout",
        ),
        (
            "[client.token]\nleeway = \"1m\"\n",
            &[],
            "client.token.leeway: ",
        ),
        (
            "[http_server.tls]\nclient_auth = \"sometimes\"\n",
            &[],
            "http_server.tls.client_auth: ",
        ),
        (
            "[http_server.tls]\nmin_version = \"1.1\"\n",
            &[],
            "http_server.tls.min_version: ",
        ),
        (
            "[http_server.tls]\nenabled = true\n",
            &[],
            "http_server.tls.cert_pem_file: ",
        ),
        (
            "[http_server.tls]\nclient_auth = \"required\"\n",
            &[],
            "http_server.tls.client_ca_pem_file: required when",
        ),
        (
            "[client]\ntls_identity_order = [\"san_uri\", \"email\"]\n",
            &[],
            "client.tls_identity_order[1]: \"email\" is not one of",
        ),
        (
            "[[channel.namespaces]]\nname = \"bad name\"\n",
            &[],
            "channel.namespaces[0].name: ",
        ),
        (
            "[bus_integrity]\nactive = \"k2\"\nkeys = [{ id = \"k1\", secret = \"c2hvcnQ=\" }]\n",
            &[],
            "bus_integrity.keys[0].secret: must decode to at least 32 bytes",
        ),
        (
            "[history_encryption]\nactive = \"h9\"\n",
            &[],
            "history_encryption.active: ",
        ),
    ];
    for (file, pairs, want) in table {
        let err = toml_err(file, pairs);
        assert!(
            err.starts_with(want),
            "{file:?} {pairs:?}: got {err:?}, want {want:?}"
        );
    }
}

#[test]
fn disabled_ping_or_pong_skips_the_ordering_check() {
    for file in [
        "[client]\nping_interval = \"0s\"\npong_timeout = \"8s\"\n",
        "[client]\nping_interval = \"5s\"\npong_timeout = \"0\"\n",
    ] {
        toml(file, &[]).unwrap();
    }
}

#[test]
fn insecure_mode_and_short_secrets_warn() {
    let warnings = toml(
        "[client]\ninsecure = true\n[client.token]\nhmac_secret_key = \"tiny-x9\"\n",
        &[],
    )
    .unwrap()
    .warnings;
    assert!(
        warnings.iter().any(|w| w.contains("client.insecure")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("client.token.hmac_secret_key")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("tiny-x9")),
        "secret leaked: {warnings:?}"
    );
}

#[test]
fn the_console_refuses_a_password_in_clear_and_needs_a_way_in() {
    let clear = toml("[admin]\nenabled = true\npassword = \"hunter2\"\n", &[]).unwrap_err();
    assert!(clear.to_string().starts_with("admin.password"), "{clear}");
    assert!(clear.to_string().contains("herald hashpassword"), "{clear}");
    let none = toml("[admin]\nenabled = true\n", &[]).unwrap_err();
    assert!(none.to_string().starts_with("admin.password"), "{none}");
    let path = toml(
        "[admin]\nenabled = true\ninsecure = true\npath = \"/api\"\n",
        &[],
    )
    .unwrap_err();
    assert!(path.to_string().starts_with("admin.path"), "{path}");
    let insecure = toml("[admin]\nenabled = true\ninsecure = true\n", &[]).unwrap();
    assert!(
        insecure
            .warnings
            .iter()
            .any(|w| w.contains("admin.insecure")),
        "{:?}",
        insecure.warnings
    );
    let demo = toml("[demo]\nenabled = true\n", &[]).unwrap_err();
    assert!(demo.to_string().starts_with("demo.enabled"), "{demo}");
}

#[test]
fn dev_profile_values() {
    let secrets = Secrets::generate();
    let text = profile::config_text(&secrets);
    let loaded = toml(&text, &[]).unwrap();
    // The one warning: the demo page, which is what the profile is for.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].starts_with("demo.enabled"),
        "{:?}",
        loaded.warnings
    );
    let config = loaded.config;
    assert!(config.demo.enabled);
    assert!(config.admin.enabled && !config.admin.insecure);
    assert!(herald_gateway::admin_password::verify(
        &config.admin.password,
        &secrets.admin_password
    ));
    assert!(
        !text.contains(&secrets.admin_password),
        "the password is in the file"
    );
    assert_eq!(config.http_server.address, "127.0.0.1");
    assert_eq!(config.http_server.port, 8000);
    assert_eq!(config.http_server.internal_port, 0);
    assert!(!config.http_server.tls.enabled);
    assert_eq!(config.engine.kind, EngineKind::Memory);
    assert_eq!(config.client.token.hmac_secret_key, secrets.hmac_secret);
    assert_eq!(config.http_api.key, secrets.api_key);
    assert!(!config.client.insecure);
    assert!(!config.client.allow_anonymous_connect_without_token);

    let options = &config.channel.without_namespace;
    assert!(options.presence);
    assert!(options.join_leave);
    assert!(!options.force_push_join_leave);
    assert_eq!(options.history_size, 100);
    assert_eq!(options.history_ttl, Duration::from_secs(300));
    assert!(options.force_recovery);
    assert!(options.allow_subscribe_for_client);
    assert!(options.allow_publish_for_client);
    assert!(options.allow_presence_for_client);
    assert!(options.allow_history_for_client);
    assert!(!options.allow_subscribe_for_anonymous);
    assert!(config.channel.namespaces.is_empty());

    assert_eq!(
        config.bus_integrity.active, "bus1",
        "signs with the key it holds"
    );
    assert_eq!(config.bus_integrity.keys.len(), 1);
    assert_eq!(config.bus_integrity.keys[0].secret, secrets.bus_key);
    assert_eq!(config.history_encryption.active, "hist1");
    assert_eq!(config.history_encryption.keys[0].key, secrets.history_key);
    assert!(config.prometheus.enabled);
    assert!(config.health.enabled);
    assert_eq!(config.log.level, "info");
    // Convenient: no per-address or command limit on a laptop.
    assert_eq!(config.client.connection_limit_per_ip, 0);
    assert_eq!(config.client.command_rate_limit, 0);
}

#[test]
fn production_profile_values() {
    let secrets = Secrets::generate();
    let text = profile::profile_text(profile::Profile::Production, &secrets);
    assert!(!text.contains('@'), "a placeholder is left: {text}");
    let loaded = toml(&text, &[]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.http_server.address, "0.0.0.0");
    assert!(!config.demo.enabled, "no demo page in production");
    assert!(config.admin.enabled && !config.admin.insecure);
    assert_eq!(
        config.admin.listener,
        herald_gateway::config::AdminListener::Internal,
        "the console stays on the internal port"
    );
    assert_eq!(
        config.http_server.internal_port, 9000,
        "API and metrics off the public port"
    );
    assert_eq!(
        config.client.connection_limit_per_ip,
        profile::PRODUCTION_CONNECTION_LIMIT_PER_IP
    );
    assert_eq!(
        config.client.command_rate_limit,
        profile::PRODUCTION_COMMAND_RATE_LIMIT
    );
    // The rate limit lets an SDK send its connect and a full channel_limit
    // of subscribes in one frame.
    assert!(config.client.command_rate_limit as usize > config.client.channel_limit);
    // No channel open to clients.
    let options = &config.channel.without_namespace;
    assert!(!options.allow_subscribe_for_client);
    assert!(!options.allow_publish_for_client);
    assert!(!options.allow_history_for_client);
    assert!(!options.allow_presence_for_client);
    assert!(config.channel.namespaces.is_empty());
    assert_eq!(config.client.token.hmac_secret_key, secrets.hmac_secret);
    assert_eq!(config.http_api.key, secrets.api_key);
    assert_eq!(config.bus_integrity.active, "bus1");
    assert_eq!(config.history_encryption.active, "hist1");
}

#[test]
fn genconfig_output_loads_back_from_a_file() {
    let text = profile::config_text(&Secrets::generate());
    let file = TempFile::new("herald.toml", &text);
    let loaded = load(FileLayer::Path(file.path()), Vec::new()).unwrap();
    assert_eq!(loaded.config.http_server.internal_port, 0);
    // Every key the template shows as a commented default exists: uncomment
    // them all and the result still loads.
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if looks_like_toml(rest) => rest.to_owned(),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let loaded = toml(&uncommented, &[]).unwrap();
    assert_eq!(loaded.config.channel.namespaces.len(), 1);
    assert_eq!(loaded.config.channel.namespaces[0].name, "chat");
}

/// A commented-out key or table header, not prose.
fn looks_like_toml(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or_default();
    if first.starts_with('[') {
        return first.ends_with(']');
    }
    let Some((key, _)) = line.split_once(" = ") else {
        return false;
    };
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[test]
fn gateway_config_carries_the_sections() {
    let config = toml(
        "[http_server]\nport = 0\n[http_api]\nkey = \"k\"\n[shutdown]\ntimeout = \"2s\"\n",
        &[],
    )
    .unwrap()
    .config;
    let gateway = config.gateway();
    assert_eq!(gateway.http_server.port, 0);
    assert_eq!(gateway.http_api.key, "k");
    assert_eq!(gateway.shutdown.timeout, Duration::from_secs(2));
}

#[test]
fn debug_output_never_shows_secrets() {
    let secrets = Secrets::generate();
    let text = profile::config_text(&secrets);
    let loaded = toml(
        &text,
        &[("HERALD_ENGINE__REDIS__PASSWORD", "redis-pass-x9")],
    )
    .unwrap();
    let debug = format!("{:?}", loaded.config.bus_integrity);
    assert!(!debug.contains(&secrets.bus_key), "{debug}");
    let debug = format!("{:?}", loaded.config.engine);
    assert!(!debug.contains("redis-pass-x9"), "{debug}");
    let debug = format!("{:?}", loaded.config.client);
    assert!(!debug.contains(&secrets.hmac_secret), "{debug}");
    // The whole config, as a startup log line would print it.
    let debug = format!("{:?}", loaded.config);
    for secret in [&secrets.hmac_secret, &secrets.api_key, &secrets.bus_key] {
        assert!(!debug.contains(secret.as_str()), "{debug}");
    }
    assert!(!debug.contains("redis-pass-x9"), "{debug}");
}

#[test]
fn transport_sections_take_centrifugo_names_env_values_and_checks() {
    let loaded = toml(
        "[http_stream]\nenabled = true\n[uni_sse]\nenabled = true\nhandler_prefix = \"/u\"\n\
         [uni_sse.connect_code_to_http_response]\nenabled = true\n\
         transforms = [{ code = 3500, to = { status_code = 401, body = \"no\" } }]\n\
         [client.connect_code_to_unidirectional_disconnect]\nenabled = true\n\
         transforms = [{ code = 109, to = { code = 4501, reason = \"gone\" } }]\n",
        &[
            ("HERALD_SSE__ENABLED", "true"),
            ("HERALD_UNI_GRPC__PORT", "0"),
        ],
    )
    .expect("transport sections load");
    let gateway = loaded.config.gateway();
    let t = &gateway.transports;
    assert!(t.http_stream.enabled && t.sse.enabled && t.emulation_enabled());
    assert_eq!(t.http_stream.handler_prefix, "/connection/http_stream");
    assert_eq!(t.sse.handler_prefix, "/connection/sse");
    assert_eq!(t.uni_sse.handler_prefix, "/u");
    assert_eq!(
        t.uni_http_stream.handler_prefix,
        "/connection/uni_http_stream"
    );
    assert_eq!(t.uni_grpc.port, 0);
    let to = t
        .uni_sse
        .connect_code_to_http_response
        .response_for(3500)
        .expect("a transform");
    assert_eq!((to.status_code, to.body.as_str()), (401, "no"));
    let uni = &gateway.client.connect_code_to_unidirectional_disconnect;
    assert_eq!(uni.disconnect_for(109), Some((4501, "gone")));

    assert!(toml_err("[sse]\nhandler_prefix = \"sse\"\n", &[]).contains("sse.handler_prefix"));
    assert!(toml_err("[emulation]\nmax_request_body_size = 0\n", &[])
        .contains("emulation.max_request_body_size"));
    assert!(toml_err(
        "[uni_grpc]\nenabled = true\ntls = { enabled = true }\n",
        &[]
    )
    .contains("uni_grpc.tls.cert_pem_file"));
    assert!(toml_err("[uni_sse]\nenabeld = true\n", &[]).contains("uni_sse.enabeld"));
}

#[test]
fn proxy_signing_is_a_keyring_like_the_bus_one() {
    // Base64 of 32 bytes each.
    let k1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let k2 = profile::random_key_base64();
    let file = TempFile::new("proxy-k2", &format!("{k2}\n"));
    let text = format!(
        "[proxy_signing]\nactive = \"k1\"\nkeys = [{{ id = \"k1\", secret = \"{k1}\" }}, \
         {{ id = \"k2\", secret_file = \"{}\" }}]\n",
        file.path().display()
    );
    let config = toml(&text, &[]).unwrap().config;
    assert_eq!(
        config.proxy_signing.keys[1].secret, k2,
        "read from its file"
    );
    assert!(config.keyring_files().contains(&file.path().to_owned()));
    let keyring = config.proxy_signing_keyring().unwrap();
    assert_eq!(keyring.active_id(), Some("k1"));
    assert_eq!(keyring.ids(), ["k1", "k2"]);
    // The HMAC key is the decoded secret: the known answer of
    // crates/proxy/src/signing.rs.
    let signer = herald_proxy::ProxySigner::new(keyring);
    let (_, value) = signer
        .sign("POST", "/rpc?x=1", br#"{"method":"echo"}"#, 1_700_000_000)
        .unwrap();
    assert!(
        value.ends_with("sig=GWnWvnY1-CNECYW75jxzfQtRG5Wf8BB3SQGzRXcDg4U"),
        "{value}"
    );

    // The environment layer sets it as any other key.
    let config = toml(&text, &[("HERALD_PROXY_SIGNING__ACTIVE", "k2")])
        .unwrap()
        .config;
    assert_eq!(
        config.proxy_signing_keyring().unwrap().active_id(),
        Some("k2")
    );
    let config = toml(&text, &[("HERALD_PROXY_SIGNING__ACTIVE", "")])
        .unwrap()
        .config;
    assert_eq!(config.proxy_signing_keyring().unwrap().active_id(), None);

    // No section: nothing signed.
    let config = toml("", &[]).unwrap().config;
    assert_eq!(config.proxy_signing_keyring().unwrap().active_id(), None);
    assert_eq!(
        format!("{:?}", config.gateway().proxy_signer),
        "ProxySigner(ProxySigningKeyring { active: None, keys: {} })"
    );
}

#[test]
fn proxy_signing_is_checked_by_key() {
    let both = TempFile::new("proxy-both", SECRET);
    let conflict = format!(
        "[proxy_signing]\nkeys = [{{ id = \"k1\", secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\", \
         secret_file = \"{}\" }}]\n",
        both.path().display()
    );
    let err = toml_err(&conflict, &[]);
    assert!(
        err.starts_with("proxy_signing.keys[0].secret: set either"),
        "{err}"
    );
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let cases = [
        (
            format!("[proxy_signing]\nactive = \"k2\"\nkeys = [{{ id = \"k1\", secret = \"{key}\" }}]\n"),
            "proxy_signing.active: no key with id \"k2\"",
        ),
        (
            format!("[proxy_signing]\nkeys = [{{ id = \"k1\", secret = \"{key}\" }}, {{ id = \"k1\", secret = \"{key}\" }}]\n"),
            "proxy_signing.keys[1].id: duplicate key id",
        ),
        (
            "[proxy_signing]\nkeys = [{ id = \"k1\", secret = \"c2hvcnQ=\" }]\n".to_owned(),
            "proxy_signing.keys[0].secret: must decode to at least 32 bytes",
        ),
        (
            "[proxy_signing]\nkeys = [{ id = \"k1\", secret = \"%%%\" }]\n".to_owned(),
            "proxy_signing.keys[0].secret: not valid base64",
        ),
        (
            "[proxy_signing]\nkeys = [{ id = \"k1\" }]\n".to_owned(),
            "proxy_signing.keys[0].secret: required (or secret_file)",
        ),
        (
            format!("[proxy_signing]\nkeys = [{{ id = \"a,b\", secret = \"{key}\" }}]\n"),
            "proxy_signing.keys[0].id: 1 to 255 visible ASCII characters",
        ),
        (
            format!("[proxy_signing]\nkeys = [{{ id = \"a b\", secret = \"{key}\" }}]\n"),
            "proxy_signing.keys[0].id: 1 to 255 visible ASCII characters",
        ),
        (
            "[proxy_signing]\nmax_age = \"30s\"\n".to_owned(),
            "proxy_signing.max_age: unknown key",
        ),
    ];
    for (text, want) in &cases {
        let err = toml_err(text, &[]);
        assert!(
            err.starts_with(want),
            "{text:?}: got {err:?}, want {want:?}"
        );
        assert!(!err.contains(key), "the secret is never echoed: {err}");
    }
}

#[test]
fn debug_output_never_shows_proxy_signing_secrets() {
    let key = profile::random_key_base64();
    let text = format!(
        "[proxy_signing]\nactive = \"k1\"\nkeys = [{{ id = \"k1\", secret = \"{key}\" }}]\n"
    );
    let config = toml(&text, &[]).unwrap().config;
    for debug in [
        format!("{config:?}"),
        format!("{:?}", config.proxy_signing_keyring().unwrap()),
    ] {
        assert!(debug.contains("k1"), "{debug}");
        assert!(!debug.contains(key.as_str()), "{debug}");
    }
}

#[test]
fn grpc_api_section_takes_env_values_a_key_file_and_checks() {
    let key = TempFile::new("grpc-key", "grpc-key-from-file-x9\n");
    let key_path = key.path().display().to_string();
    let loaded = toml(
        "[grpc_api]\nenabled = true\n",
        &[
            ("HERALD_GRPC_API__PORT", "0"),
            ("HERALD_GRPC_API__MAX_RECEIVE_MESSAGE_SIZE", "1024"),
            ("HERALD_GRPC_API__KEY_FILE", &key_path),
        ],
    )
    .expect("grpc_api loads");
    let gateway = loaded.config.gateway();
    let grpc_api = &gateway.grpc_api;
    assert!(grpc_api.enabled);
    assert_eq!((grpc_api.address.as_str(), grpc_api.port), ("127.0.0.1", 0));
    assert_eq!(grpc_api.max_receive_message_size, 1024);
    assert_eq!(
        grpc_api.effective_key(&gateway.http_api),
        "grpc-key-from-file-x9"
    );
    let debug = format!("{:?}", loaded.config);
    assert!(!debug.contains("grpc-key-from-file-x9"), "{debug}");

    // Without its own key it takes http_api.key; without either it is refused.
    let loaded = toml(
        "[grpc_api]\nenabled = true\n[http_api]\nkey = \"http-key\"\n",
        &[],
    )
    .unwrap();
    let gateway = loaded.config.gateway();
    assert_eq!(
        gateway.grpc_api.effective_key(&gateway.http_api),
        "http-key"
    );
    assert_eq!(gateway.grpc_api.port, 10000);
    assert!(toml_err("[grpc_api]\nenabled = true\n", &[]).contains("grpc_api.key"));
    assert!(toml_err(
        "[grpc_api]\nenabled = true\nkey = \"k\"\ntls = { enabled = true }\n",
        &[]
    )
    .contains("grpc_api.tls.cert_pem_file"));
    assert!(toml_err(
        "[grpc_api]\nenabled = true\nkey = \"k\"\nmax_receive_message_size = 0\n",
        &[]
    )
    .contains("grpc_api.max_receive_message_size"));
    // Disabled, nothing is checked.
    assert!(toml("[grpc_api]\nmax_receive_message_size = 0\n", &[]).is_ok());
}

#[test]
fn issue_21_client_and_channel_options_load_with_centrifugo_names() {
    let loaded = toml(
        &format!(
            r#"
[client]
connection_limit = 1000
connection_rate_limit = 50
disallow_anonymous_connection_tokens = true
user_id_http_header = "X-User-Id"
connect_include_server_time = true
[client.token]
hmac_secret_key = "{SECRET}"
[client.subscribe_to_user_personal_channel]
enabled = true
personal_channel_namespace = "personal"
single_connection = true
[[channel.namespaces]]
name = "personal"
presence = true
[[channel.namespaces]]
name = "state"
history_size = 1
history_ttl = "1h"
force_recovery = true
force_recovery_mode = "cache"
auto_cache_recover = true
channel_regex = "^[a-z0-9_-]+$"
"#
        ),
        &[],
    )
    .unwrap();
    let client = &loaded.config.client;
    assert_eq!(client.connection_limit, 1000);
    assert_eq!(client.connection_rate_limit, 50);
    assert!(client.disallow_anonymous_connection_tokens);
    assert!(client.connect_include_server_time);
    assert_eq!(client.user_id_http_header, "X-User-Id");
    let personal = &client.subscribe_to_user_personal_channel;
    assert!(personal.enabled && personal.single_connection);
    assert_eq!(personal.channel("42"), "personal:#42");
    let state = &loaded.config.channel.namespaces[1].options;
    assert_eq!(state.force_recovery_mode, herald_auth::RecoveryMode::Cache);
    assert!(state.auto_cache_recover);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("client.user_id_http_header") && w.contains("strips")),
        "{:?}",
        loaded.warnings
    );
    // Off by default.
    let defaults = ClientConfig::default();
    assert_eq!(defaults.connection_limit, 0);
    assert_eq!(defaults.connection_rate_limit, 0);
    assert!(defaults.user_id_http_header.is_empty());
    assert!(!defaults.subscribe_to_user_personal_channel.enabled);
}

#[test]
fn issue_21_options_refused_at_load() {
    let cases: &[Case] = &[
        (
            "[[channel.namespaces]]\nname = \"n\"\nchannel_regex = \"([a-z]\"\n",
            &[],
            "channel.namespaces[n].channel_regex: is not a valid regular expression",
        ),
        (
            "[channel.without_namespace]\nchannel_regex = \"(\"\n",
            &[],
            "channel.without_namespace.channel_regex: is not a valid regular expression",
        ),
        (
            "[[channel.namespaces]]\nname = \"s\"\nhistory_size = 1\nhistory_ttl = \"1h\"\nauto_cache_recover = true\n",
            &[],
            "channel.namespaces[s].auto_cache_recover: needs force_recovery",
        ),
        (
            "[[channel.namespaces]]\nname = \"s\"\nforce_recovery_mode = \"ring\"\n",
            &[],
            "channel.namespaces",
        ),
        (
            "[client.subscribe_to_user_personal_channel]\nenabled = true\npersonal_channel_namespace = \"nope\"\n",
            &[],
            "client.subscribe_to_user_personal_channel.personal_channel_namespace: namespace \"nope\"",
        ),
        (
            "[client.subscribe_to_user_personal_channel]\nenabled = true\nsingle_connection = true\n",
            &[],
            "client.subscribe_to_user_personal_channel.single_connection: needs presence",
        ),
        (
            "[client]\nuser_id_http_header = \"bad header\"\n",
            &[],
            "client.user_id_http_header: is not a valid HTTP header name",
        ),
    ];
    for (text, pairs, want) in cases {
        let got = toml_err(text, pairs);
        assert!(got.starts_with(want), "{text}\ngot:  {got}\nwant: {want}");
    }
}

#[test]
fn delta_compression_keys() {
    let config = toml(
        "[[channel.namespaces]]\nname = \"doc\"\nallowed_delta_types = [\"fossil\"]\ndelta_publish = true\n",
        &[],
    )
    .unwrap()
    .config;
    let doc = &config.channel.namespaces[0].options;
    assert_eq!(doc.allowed_delta_types, [herald_auth::DeltaType::Fossil]);
    assert!(doc.delta_publish);
    let off = &config.channel.without_namespace;
    assert!(off.allowed_delta_types.is_empty() && !off.delta_publish);
    let error = toml_err(
        "[channel.without_namespace]\nallowed_delta_types = [\"zstd\"]\n",
        &[],
    );
    assert!(
        error.starts_with("channel.without_namespace.allowed_delta_types"),
        "{error}"
    );
}

// config/herald.toml, the reference of every key: it must name every key the
// code has, and what it sets must be the defaults.

/// config/herald.toml as committed.
const REFERENCE: &str = include_str!("../../../../config/herald.toml");

/// The reference with its example entries (lines starting with `#: `) in.
fn reference_with_examples() -> String {
    REFERENCE
        .lines()
        .map(|line| line.strip_prefix("#: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A default item of every list of tables, by the list's key (`[]` for an
/// index). A list whose default is empty shows its item's keys only so.
fn list_item(path: &str) -> Option<serde_json::Value> {
    use herald_gateway::config::{
        HttpResponseTo, HttpResponseTransform, UniDisconnectTo, UniDisconnectTransform,
    };
    let to_value = |v: Result<serde_json::Value, serde_json::Error>| Some(v.unwrap());
    let last = path.rsplit('.').next().unwrap_or(path);
    match path {
        "channel.namespaces" => {
            to_value(serde_json::to_value(herald_auth::NamespaceConfig::default()))
        }
        "proxies" => to_value(serde_json::to_value(herald_proxy::NamedProxy::default())),
        "rpc.namespaces" => to_value(serde_json::to_value(herald_proxy::RpcNamespace::default())),
        "bus_integrity.keys" => to_value(serde_json::to_value(BusKeyConfig::default())),
        "history_encryption.keys" => to_value(serde_json::to_value(HistoryKeyConfig::default())),
        "proxy_signing.keys" => to_value(serde_json::to_value(ProxySigningKeyConfig::default())),
        _ if path.ends_with("http.status_to_code_transforms") => to_value(serde_json::to_value(
            herald_proxy::StatusTransform::default(),
        )),
        _ if path.ends_with("connect_code_to_http_response.transforms") => {
            to_value(serde_json::to_value(HttpResponseTransform {
                code: 0,
                to: HttpResponseTo {
                    status_code: 0,
                    body: String::new(),
                },
            }))
        }
        "client.connect_code_to_unidirectional_disconnect.transforms" => {
            to_value(serde_json::to_value(UniDisconnectTransform {
                code: 0,
                to: UniDisconnectTo {
                    code: 0,
                    reason: String::new(),
                },
            }))
        }
        // Lists of strings.
        "client.allowed_origins"
        | "engine.redis.cluster_address"
        | "engine.redis.sentinel_address" => None,
        _ if last == "allowed_delta_types" => None,
        _ if matches!(last, "http_headers" | "grpc_metadata" | "emulated_headers") => None,
        _ => panic!(
            "{path} is a list that is empty by default and list_item does not know it: \
             add its item type (or, for a list of strings, its key) to list_item in \
             crates/herald/src/config/tests.rs"
        ),
    }
}

/// Keys that serialize only when set (`Option` with `skip_serializing_if`),
/// so a default config does not show them.
const SET_ONLY_KEYS: &[&str] = &["channel.namespaces[].history_meta_ttl"];

/// Every key path of `value`, tables included: `a.b`, `list[].c`. Lists of
/// tables contribute their item's keys (from `item` when the list is empty).
fn key_paths(
    value: &serde_json::Value,
    path: &str,
    item: &dyn Fn(&str) -> Option<serde_json::Value>,
    out: &mut BTreeSet<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                out.insert(at.clone());
                key_paths(value, &at, item, out);
            }
        }
        serde_json::Value::Array(items) => {
            let first = match items.first() {
                Some(first) => Some(first.clone()),
                None => item(path),
            };
            if let Some(first @ serde_json::Value::Object(_)) = first {
                key_paths(&first, &format!("{path}[]"), item, out);
            }
        }
        _ => {}
    }
}

/// Every leaf value of `value` by key path (`list[0].c` for list items).
fn leaves(value: &serde_json::Value, path: &str, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(value, &at, out);
            }
        }
        other => {
            out.insert(path.to_owned(), other.clone());
        }
    }
}

#[test]
fn reference_config_names_every_key_of_the_code() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut in_code = BTreeSet::new();
    key_paths(&defaults, "", &list_item, &mut in_code);
    in_code.extend(FILE_KEYS.iter().map(|key| format!("{key}_file")));
    in_code.extend(SET_ONLY_KEYS.iter().map(|key| (*key).to_owned()));

    let reference: toml::Value = toml::from_str(&reference_with_examples())
        .unwrap_or_else(|e| panic!("config/herald.toml with its examples is not TOML: {e}"));
    let reference = serde_json::to_value(reference).unwrap();
    let mut in_reference = BTreeSet::new();
    key_paths(&reference, "", &|_| None, &mut in_reference);

    let missing: Vec<&String> = in_code.difference(&in_reference).collect();
    assert!(
        missing.is_empty(),
        "config/herald.toml does not name these keys of the code ({} of them):\n  {}\n\
         Add each to config/herald.toml with its default value and a one-line comment \
         (the meaning as docs/configuration.md gives it); a key of a list item (`[]`) goes \
         into that list's example entry, on a line starting with \"#: \".",
        missing.len(),
        missing
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[test]
fn reference_config_sets_only_defaults_and_its_examples_load() {
    // As committed (examples commented out): exactly the built-in defaults.
    let loaded = toml(REFERENCE, &[]).unwrap_or_else(|e| panic!("config/herald.toml: {e}"));
    let mut got = BTreeMap::new();
    leaves(&serde_json::to_value(&loaded.config).unwrap(), "", &mut got);
    let mut want = BTreeMap::new();
    leaves(
        &serde_json::to_value(Config::default()).unwrap(),
        "",
        &mut want,
    );
    let differ: Vec<String> = want
        .iter()
        .filter(|(key, value)| got.get(*key) != Some(value))
        .map(|(key, value)| format!("{key}: default {value}, the file gives {:?}", got.get(key)))
        .collect();
    assert!(
        differ.is_empty(),
        "config/herald.toml must set every key to its default; these differ:\n  {}",
        differ.join("\n  ")
    );
    assert_eq!(got.len(), want.len(), "{got:?}");

    // With its example entries in: valid, the key files they name made here.
    let dir = TempFile::new("hist1", &profile::random_key_base64());
    let dir = dir.path().parent().unwrap().to_owned();
    for name in ["bus1", "proxy1"] {
        std::fs::write(dir.join(name), profile::random_key_base64()).unwrap();
    }
    let text = reference_with_examples().replace("\"secrets/", &format!("\"{}/", dir.display()));
    let loaded = toml(&text, &[]).unwrap_or_else(|e| panic!("config/herald.toml + examples: {e}"));
    let config = loaded.config;
    assert_eq!(config.channel.namespaces.len(), 1);
    assert_eq!(config.proxies.len(), 1);
    assert_eq!(config.rpc.namespaces.len(), 1);
    assert_eq!(config.bus_integrity.keys.len(), 1);
    assert_eq!(config.history_encryption.keys[0].key.len(), 44);
    assert_eq!(config.proxy_signing.keys.len(), 1);
    assert_eq!(
        config.client.proxy.connect.http.status_to_code_transforms[0].status_code,
        404
    );
}

#[test]
fn websocket_compression_keys() {
    let config = load(FileLayer::None, Vec::new()).unwrap().config;
    assert_eq!(config.websocket, WebSocketConfig::default());
    assert!(!config.websocket.compression);
    assert_eq!(config.websocket.compression_min_size, 0);
    assert_eq!(config.websocket.compression_level, 1);
    let text = format!(
        "[client.token]\nhmac_secret_key = \"{SECRET}\"\n[websocket]\ncompression = true\ncompression_min_size = 256\n"
    );
    let loaded = toml(&text, &[("HERALD_WEBSOCKET__COMPRESSION_LEVEL", "-1")]).unwrap();
    let websocket = &loaded.config.websocket;
    assert!(websocket.compression);
    assert_eq!(websocket.compression_min_size, 256);
    assert_eq!(websocket.zlib_level(), 6);
    assert_eq!(loaded.config.gateway().websocket, *websocket);
    for bad in ["10", "-2"] {
        let err = toml_err(&text, &[("HERALD_WEBSOCKET__COMPRESSION_LEVEL", bad)]);
        assert!(
            err.starts_with("websocket.compression_level"),
            "{bad}: {err}"
        );
    }
}
