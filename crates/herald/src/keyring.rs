//! Reloads the bus, history and proxy signing keyrings without a restart: on
//! SIGHUP, and when the config file or a key file changes (polled every second; a change is acted on
//! once it held still for one poll, so a half-written file is not read).
//! A config that fails to load or validate is refused with an ERROR line and
//! the keyrings in use stay (all three are swapped together or none is).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_bus::memory::MemoryEngine;
use herald_bus::redis::RedisEngine;
use herald_proxy::ProxySigner;
use tracing::{debug, error, info};

use crate::config::{self, Config, FileLayer};

const POLL: Duration = Duration::from_secs(1);

/// The engine whose keyrings are reloaded.
#[derive(Clone)]
pub enum Engine {
    /// Bus and history keys.
    Redis(Arc<RedisEngine>),
    /// History keys (one node: no bus).
    Memory(Arc<MemoryEngine>),
}

/// Starts the watcher; runs inside a tokio runtime until the process ends.
/// `signer` is the handle the proxies sign with.
pub fn watch(path: PathBuf, loaded: &Config, engine: Engine, signer: ProxySigner) {
    let files = watched(&path, loaded);
    tokio::spawn(async move {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut files = files;
        let mut seen = stamps(&files);
        let mut pending: Option<Vec<Option<SystemTime>>> = None;
        // After a refused reload: try again every poll (quietly), since the
        // missing piece may be a key file not delivered yet (Kubernetes
        // Secrets arrive on their own schedule).
        let mut failing = false;
        loop {
            let signalled = tokio::select! {
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = stamps(&files);
            if failing && !signalled {
                if let Some(reloaded) = reload(&path, &engine, &signer, true) {
                    failing = false;
                    files = watched(&path, &reloaded);
                    seen = stamps(&files);
                }
                continue;
            }
            if !signalled {
                if now == seen {
                    pending = None;
                    continue;
                }
                // Changed: wait one more poll for it to settle.
                if pending.as_ref() != Some(&now) {
                    pending = Some(now);
                    continue;
                }
            }
            pending = None;
            seen = now;
            match reload(&path, &engine, &signer, false) {
                Some(reloaded) => {
                    files = watched(&path, &reloaded);
                    seen = stamps(&files);
                }
                None => failing = true,
            }
        }
    });
}

/// `quiet`: a retry after a refusal already logged.
fn reload(path: &Path, engine: &Engine, signer: &ProxySigner, quiet: bool) -> Option<Config> {
    let loaded = config::process_env()
        .and_then(|env| config::load(FileLayer::Path(path), env))
        .and_then(|loaded| {
            let bus = loaded.config.bus_keyring()?;
            let history = loaded.config.history_keyring()?;
            let proxy = loaded.config.proxy_signing_keyring()?;
            Ok((loaded.config, bus, history, proxy))
        });
    match loaded {
        Ok((config, bus, history, proxy)) => {
            let (history_active, history_ids) =
                (history.active_id().map(str::to_owned), history.ids());
            match engine {
                Engine::Redis(engine) => {
                    let (active, ids) = (bus.active_id().map(str::to_owned), bus.ids());
                    engine.integrity().reload(bus);
                    info!(active = ?active, keys = ?ids, "bus keyring reloaded");
                    engine.reload_history_keys(history);
                }
                Engine::Memory(engine) => engine.reload_history_keys(history),
            }
            info!(active = ?history_active, keys = ?history_ids, "history keyring reloaded");
            let (active, ids) = (proxy.active_id().map(str::to_owned), proxy.ids());
            signer.replace(proxy);
            info!(active = ?active, keys = ?ids, "proxy signing keyring reloaded");
            Some(config)
        }
        Err(e) => {
            if quiet {
                debug!(error = %e, "keyring reload still refused");
            } else {
                error!(error = %e, "keyring reload refused; the keys in use stay (retried every second)");
            }
            None
        }
    }
}

fn watched(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![path.to_owned()];
    files.extend(config.keyring_files());
    files
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}
