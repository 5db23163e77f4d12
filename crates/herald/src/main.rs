//! The `herald` binary: command line, config loading and wiring. The node
//! itself lives in `herald-gateway`; this file only starts it.
//!
//! Exit codes: 0 success, 2 usage or config error, 1 runtime failure.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use herald::keyring::Engine;
use herald::{config, profile, token};
use herald_auth::TokenVerifier;
use herald_bus::memory::{MemoryEngine, MemoryOptions};
use herald_bus::redis::RedisEngine;
use herald_gateway::GatewayError;
use herald_identity::Authenticator;
use tracing::{info, warn};

use crate::config::{ConfigError, EngineKind, FileLayer, LogConfig, LogFormat, CONFIG_PATH_ENV};
use crate::token::{MintError, TokenRequest};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "A realtime messaging server speaking the Centrifugo client protocol v2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. Without a config file and without HERALD_* variables:
    /// a development node on 127.0.0.1:8000 with random secrets.
    Serve {
        #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
        config: Option<PathBuf>,
    },
    /// Write a commented config with fresh secrets, to FILE or to stdout.
    ///
    /// The config is a commented TOML file with secrets generated for it: an
    /// HMAC key for connection tokens, a server API key, a bus signing key and
    /// a history sealing key. Every other key and its default is listed in
    /// config/herald.toml; config/examples/ has complete files for other set-ups.
    ///
    /// With FILE: writes it with mode 0600 (owner read/write only, as it holds
    /// secrets) and prints "wrote FILE". It refuses to overwrite an existing
    /// file (exit 2), and warns on stderr when FILE is in a git work tree that
    /// does not ignore it.
    ///
    /// Without FILE: prints the config to stdout, e.g. to pipe it into a
    /// secret store; nothing is written to disk.
    ///
    /// Exit codes: 0 written or printed, 2 FILE exists or a bad argument,
    /// 1 FILE cannot be written.
    Genconfig {
        /// `dev`: what `serve` runs without a config (one node on
        /// 127.0.0.1:8000, every route on that port, channels without a
        /// namespace open to authenticated clients). `production`: every
        /// interface, the server API, metrics and probes on the internal port
        /// 9000, per-address and command rate limits on, no channel open to
        /// clients until you open one.
        #[arg(long, value_enum, default_value = "dev")]
        profile: ProfileArg,
        /// Where to write the config (created with mode 0600; an existing
        /// file is never overwritten). Omitted: the config goes to stdout.
        file: Option<PathBuf>,
    },
    /// Validate a config; names the bad key.
    Checkconfig {
        #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
        config: PathBuf,
    },
    /// Mint an HS256 connection token, or a subscription token with --channel.
    Gentoken {
        #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
        config: PathBuf,
        /// The `sub` claim; "" = anonymous.
        #[arg(long, value_name = "ID")]
        user: String,
        /// Lifetime, e.g. 1h, 30m, 7d; 0 = no `exp` claim.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Mint a subscription token for this channel.
        #[arg(long, value_name = "CH")]
        channel: Option<String>,
    },
    /// Verify a token against a config and print its claims as JSON.
    ///
    /// Loads the config as `serve` does, fetches each configured JWKS once (a
    /// failed fetch is reported on stderr as "JWKS <url>: <error>"), then
    /// checks TOKEN as `serve` would: as a subscription token when its payload
    /// has a `channel` claim, otherwise as a connection token (asked of
    /// client.introspection.endpoint when the config sends it there).
    ///
    /// Valid: prints the claims as JSON on stdout and exits 0, e.g.
    /// {"user": "alice", "exp": 1767225600, ...} (a subscription token's also
    /// has "channel").
    ///
    /// Invalid: prints the reason on stdout and exits 1. The reasons: "token
    /// expired"; "invalid token: <why>" (a bad signature, a key or algorithm
    /// the config does not accept, a wrong aud or iss, not a JWT, ...);
    /// "unknown key id" (a kid no JWKS holds); "credentials cannot be checked
    /// now" (the JWKS or introspection endpoint did not answer).
    ///
    /// Exit codes: 0 valid, 1 invalid, 2 the config is missing or invalid
    /// (the reason on stderr, as `checkconfig` prints it).
    Checktoken {
        #[arg(long, value_name = "FILE", env = CONFIG_PATH_ENV)]
        config: PathBuf,
        /// The token: a JWT (three base64url parts joined by ".", as `herald
        /// gentoken` prints, "eyJ...") or, with client.introspection, an opaque
        /// access token.
        token: String,
    },
    /// Hash a web console password for `admin.password`.
    ///
    /// Reads the password from the first line of stdin (without the line
    /// end) and prints its Argon2id hash, a PHC string "$argon2id$v=19$...",
    /// on stdout, e.g. `printf '%s' "$PASSWORD" | herald hashpassword`.
    /// The password itself is never printed or stored.
    ///
    /// Exit codes: 0 printed, 2 the password is empty or over 1024 bytes.
    Hashpassword,
    /// Print a new random key (base64 of 32 bytes) for a keyring.
    Genkey {
        #[arg(long, value_enum)]
        kind: KeyKind,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    Dev,
    Production,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyKind {
    /// `bus_integrity.keys`
    Bus,
    /// `history_encryption.keys`
    History,
    /// `proxy_signing.keys`
    Proxy,
}

/// Something the user must fix: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// The token given to `checktoken` is not valid: exit code 1, already reported.
#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
struct InvalidToken;

/// `println!` that never panics: a closed stdout (`herald genconfig | head`)
/// is the reader's choice, and what it did not read is of no use to anyone.
macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout, ignoring a reader that went away (EPIPE) or any other
/// failure to write there: stdout is the user's, not herald's, to keep open.
fn write_stdout(text: std::fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(text);
}

fn main() -> ExitCode {
    herald_auth::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<InvalidToken>() => ExitCode::from(1),
        Err(error) => {
            eprintln!("herald: {}", report(&error));
            if error.is::<ConfigError>() || error.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Genconfig { profile, file } => {
            let profile = match profile {
                ProfileArg::Dev => profile::Profile::Dev,
                ProfileArg::Production => profile::Profile::Production,
            };
            genconfig(profile, file.as_deref())
        }
        Command::Checkconfig { config } => checkconfig(&config),
        Command::Gentoken {
            config,
            user,
            ttl,
            channel,
        } => gentoken(&config, &user, ttl, channel.as_deref()),
        Command::Checktoken { config, token } => checktoken(&config, &token),
        // Every keyring takes 32 random bytes (HMAC-SHA256 and XChaCha20-Poly1305 keys).
        Command::Hashpassword => hashpassword(),
        Command::Genkey {
            kind: KeyKind::Bus | KeyKind::History | KeyKind::Proxy,
        } => {
            out!("{}", profile::random_key_base64());
            Ok(())
        }
    }
}

fn serve(path: Option<&Path>) -> anyhow::Result<()> {
    let env = config::process_env()?;
    let dev = if path.is_none() && env.is_empty() {
        Some(profile::Secrets::generate())
    } else {
        None
    };
    let loaded = match (&dev, path) {
        (Some(secrets), _) => {
            let text = profile::config_text(secrets);
            config::load(FileLayer::Text(&text, ::config::FileFormat::Toml), [])?
        }
        (None, Some(path)) => config::load(FileLayer::Path(path), env)?,
        (None, None) => config::load(FileLayer::None, env)?,
    };
    init_logging(&loaded.config.log)?;
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    if dev.is_some() {
        info!("no config file and no HERALD_* variables: development profile");
    }

    let config = loaded.config;
    let dev_token = match &dev {
        Some(_) => Some(mint(
            &config,
            profile::DEV_USER,
            None,
            Some(Duration::from_secs(3600)),
        )?),
        None => None,
    };
    let mut gateway = config.gateway();
    if config.demo.enabled {
        let minting = config.clone();
        gateway.demo_tokens = Some(herald_gateway::config::DemoTokens(std::sync::Arc::new(
            move |user: &str| {
                mint(&minting, user, None, Some(Duration::from_secs(3600)))
                    .map_err(|e| e.to_string())
            },
        )));
    }
    let proxy_keys = config.proxy_signing_keyring()?;
    if let Some(active) = proxy_keys.active_id() {
        info!(active, keys = ?proxy_keys.ids(), "proxy requests are signed");
    }
    let proxy_signer = herald_proxy::ProxySigner::new(proxy_keys);
    gateway.proxy_signer = proxy_signer.clone();
    let tls = gateway.http_server.tls.enabled;
    let admin_path = gateway.admin.path.clone();
    let history_keys = config.history_keyring()?;
    let redis = match config.engine.kind {
        EngineKind::Memory => None,
        EngineKind::Redis => Some((config.redis_engine()?, config.bus_keyring()?)),
    };
    // Keyrings reload from the config file (SIGHUP, or a changed file).
    let reload_from = path.filter(|_| dev.is_none()).map(Path::to_path_buf);

    actix_web::rt::System::new().block_on(async move {
        let running = herald_gateway::serve(gateway, |events| async move {
            match redis {
                None => {
                    let options = MemoryOptions {
                        stream_limit: config.engine.memory.stream_limit,
                    };
                    let engine = MemoryEngine::with_options(events, history_keys, options);
                    if let Some(path) = reload_from {
                        herald::keyring::watch(
                            path,
                            &config,
                            Engine::Memory(engine.clone()),
                            proxy_signer,
                        );
                    }
                    Ok(engine.engine())
                }
                Some((redis, bus_keys)) => {
                    let engine =
                        RedisEngine::connect_with_keys(redis, events, bus_keys, history_keys)
                            .await?;
                    if let Some(path) = reload_from {
                        herald::keyring::watch(
                            path,
                            &config,
                            Engine::Redis(engine.clone()),
                            proxy_signer,
                        );
                    }
                    Ok(engine.engine())
                }
            }
        })
        .await
        .map_err(|error| match error {
            GatewayError::Config(message) => anyhow::Error::new(UsageError(message)),
            other => anyhow::Error::new(other).context("cannot start the node"),
        })?;

        // The internal listener is plain HTTP unless it shares the public port.
        let shared = running.internal_addr == running.public_addr;
        let (ws, http) = match (tls, shared) {
            (false, _) => ("ws", "http"),
            (true, true) => ("wss", "https"),
            (true, false) => ("wss", "http"),
        };
        let ws_url = format!("{ws}://{}/connection/websocket", running.public_addr);
        let api_url = format!("{http}://{}", running.internal_addr);
        let mut stdout = std::io::stdout().lock();
        // Test harnesses wait for this exact line; the gRPC servers are
        // appended to it when enabled.
        let mut ready = format!("herald listening ws={ws_url} api={api_url}");
        if let Some(grpc) = running.uni_grpc_addr {
            ready.push_str(&format!(" uni_grpc={grpc}"));
        }
        if let Some(grpc) = running.grpc_api_addr {
            ready.push_str(&format!(" grpc_api={grpc}"));
        }
        writeln!(stdout, "{ready}")?;
        if let (Some(secrets), Some(token)) = (&dev, &dev_token) {
            let console_url = format!("{api_url}{}/", admin_path);
            let demo_url = format!("{http}://{}/", running.public_addr);
            let banner = profile::Banner {
                ws_url: &ws_url,
                api_url: &api_url,
                api_key: &secrets.api_key,
                hmac_secret: &secrets.hmac_secret,
                token,
                console_url: &console_url,
                console_password: &secrets.admin_password,
                demo_url: &demo_url,
            };
            write!(stdout, "{}", banner.render())?;
        }
        stdout.flush()?;
        drop(stdout);

        let stopper = running.stopper();
        actix_web::rt::spawn(async move {
            let signal = shutdown_signal().await;
            info!(signal, "shutting down");
            stopper.shutdown().await;
        });
        running.wait().await.context("server failed")?;
        info!("stopped");
        Ok(())
    })
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

fn genconfig(profile: profile::Profile, file: Option<&Path>) -> anyhow::Result<()> {
    let secrets = profile::Secrets::generate();
    let text = profile::profile_text(profile, &secrets);
    // Only the hash is in the config: this is the one time the password shows.
    let tell_password = || {
        eprintln!(
            "web console password (only its hash is in the config; keep it now): {}",
            secrets.admin_password
        );
    };
    let Some(path) = file else {
        write_stdout(format_args!("{text}"));
        std::io::stdout().flush()?;
        tell_password();
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // The file holds secrets.
        options.mode(0o600);
    }
    let mut out = match options.open(path) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(UsageError(format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    out!("wrote {}", path.display());
    tell_password();
    if let Some(warning) = herald::gitcheck::unignored_secrets_warning(path) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn hashpassword() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let hash = herald_gateway::admin_password::hash(password).map_err(UsageError)?;
    out!("{hash}");
    Ok(())
}

fn checkconfig(path: &Path) -> anyhow::Result<()> {
    let loaded = config::load(FileLayer::Path(path), config::process_env()?)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    out!("config ok");
    Ok(())
}

fn gentoken(path: &Path, user: &str, ttl: Duration, channel: Option<&str>) -> anyhow::Result<()> {
    let loaded = config::load(FileLayer::Path(path), config::process_env()?)?;
    let ttl = (!ttl.is_zero()).then_some(ttl);
    out!("{}", mint(&loaded.config, user, channel, ttl)?);
    Ok(())
}

fn checktoken(path: &Path, token: &str) -> anyhow::Result<()> {
    let loaded = config::load(FileLayer::Path(path), config::process_env()?)?;
    let client = &loaded.config.client;
    let verifier =
        TokenVerifier::new(&client.token, &client.subscription_token).map_err(ConfigError::from)?;
    let auth = Authenticator::new(verifier, &client.introspection).map_err(ConfigError::from)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verified = runtime.block_on(async {
        // One fetch of each JWKS source, so tokens with a `kid` can be checked.
        for (url, outcome) in auth.load_keys().await {
            if let Err(error) = outcome {
                eprintln!("JWKS {url}: {error}");
            }
        }
        if carries_channel_claim(token) {
            auth.verifier()
                .verify_subscription(token, unix_now())
                .map(|claims| serde_json::to_string_pretty(&claims))
        } else {
            // A JWT, or an opaque token asked of the introspection endpoint.
            auth.connection(token, unix_now())
                .await
                .map(|principal| serde_json::to_string_pretty(&principal.claims))
        }
    });
    match verified {
        Ok(json) => {
            out!("{}", json?);
            Ok(())
        }
        Err(reason) => {
            // "token expired" or "invalid token: <reason>".
            out!("{reason}");
            Err(InvalidToken.into())
        }
    }
}

/// Whether the (unverified) payload has a `channel` claim, which makes it a
/// subscription token. Only picks the verifier; the verifier decides validity.
fn carries_channel_claim(token: &str) -> bool {
    use base64::Engine as _;
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|claims| claims.get("channel").is_some())
}

fn mint(
    config: &config::Config,
    user: &str,
    channel: Option<&str>,
    ttl: Option<Duration>,
) -> Result<String, anyhow::Error> {
    let request = TokenRequest {
        user,
        channel,
        ttl,
        now: unix_now(),
    };
    token::mint(config, &request).map_err(|error| match error {
        MintError::Config(error) => anyhow::Error::new(error),
        other => anyhow::Error::new(other),
    })
}

/// The error and its causes, each once: many errors already repeat their
/// source in their own message.
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs go to stderr. `log.level` is the filter unless `RUST_LOG` is set.
fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let mut bad_rust_log = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(&directives) {
                Ok(filter) => filter,
                Err(e) => {
                    bad_rust_log = Some(e.to_string());
                    tracing_subscriber::EnvFilter::try_new(&log.level)?
                }
            }
        }
        // The redis crate logs every reconnect attempt; its errors reach us
        // through the engine anyway.
        _ => tracing_subscriber::EnvFilter::try_new(format!("{},redis=error", log.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    if let Some(error) = bad_rust_log {
        warn!(%error, "RUST_LOG ignored; using log.level");
    }
    Ok(())
}
