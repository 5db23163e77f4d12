//! TLS on the public listener (security.md SEC-TLS-1/2): the rustls server
//! configuration, the certificate that reloads itself, and the identity of a
//! verified client certificate.
//!
//! Policy: TLS 1.3 only unless `min_version = "1.2"`; X25519MLKEM768 first,
//! then X25519 and the NIST curves; session resumption by tickets (keys
//! private to this process); no 0-RTT data; ALPN `http/1.1` (added by
//! actix-http). The certificate is served through [`ReloadingCert`], which
//! swaps in a new pair when its files change or on SIGHUP, and keeps the
//! old pair when the new one does not load or its key does not match.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, IdentitySource, MinVersion, TlsConfig};
use crate::error::GatewayError;

/// How long a client may take to finish the TLS handshake (SEC-WS-2).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the certificate and key files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(1);

/// The provider herald's TLS runs on, with the key exchange groups in
/// herald's order of preference.
pub(crate) fn provider() -> CryptoProvider {
    use aws_lc_rs::kx_group;
    CryptoProvider {
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Builds the server configuration for `config` and starts watching the
/// certificate files (a tokio task: call inside the runtime).
pub(crate) fn server_config(
    config: &TlsConfig,
) -> Result<(ServerConfig, Arc<ReloadingCert>), GatewayError> {
    // The process-wide default too, for any TLS client herald opens later.
    let _ = aws_lc_rs::default_provider().install_default();
    let provider = Arc::new(provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| config_error("http_server.tls.min_version", e))?;
    let builder = match client_verifier(config, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let cert = Arc::new(ReloadingCert::load(config, provider)?);
    let mut server = builder.with_cert_resolver(cert.clone());
    server.ticketer = aws_lc_rs::Ticketer::new().map_err(|e| config_error("http_server.tls", e))?;
    server.max_early_data_size = 0;
    server.send_half_rtt_data = false;
    server.ignore_client_order = true;
    Ok((server, cert))
}

fn client_verifier(
    config: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, GatewayError> {
    let key = "http_server.tls.client_ca_pem_file";
    match (config.client_auth, config.client_ca_pem_file.is_empty()) {
        (ClientAuth::None, true) => return Ok(None),
        (ClientAuth::None, false) => {
            return Err(config_error(
                "http_server.tls.client_auth",
                "is \"none\" while client_ca_pem_file is set: say \"optional\" or \"required\"",
            ))
        }
        (_, true) => {
            return Err(config_error(
                key,
                "required when client_auth is not \"none\"",
            ))
        }
        _ => {}
    }
    let mut roots = RootCertStore::empty();
    let certs = read_certs(&config.client_ca_pem_file).map_err(|e| config_error(key, e))?;
    for cert in certs {
        roots.add(cert).map_err(|e| config_error(key, e))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if config.client_auth == ClientAuth::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map(Some).map_err(|e| config_error(key, e))
}

fn config_error(key: &str, error: impl std::fmt::Display) -> GatewayError {
    GatewayError::Config(format!("{key}: {error}"))
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The file contents a pair was (or failed to be) loaded from.
#[derive(PartialEq, Eq, Clone, Default)]
struct PairFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The served certificate: swapped atomically when a new pair loads.
pub(crate) struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert_path: String,
    key_path: String,
    provider: Arc<CryptoProvider>,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// What is in service.
    loaded: PairFiles,
    /// What the files held at the last look: a change is loaded once it
    /// has held still for one poll, so a pair written file by file is not
    /// reported as mismatched halfway.
    seen: PairFiles,
    /// A pair that failed, so its ERROR is logged once.
    failed: Option<PairFiles>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Why a certificate/key pair did not load. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PairError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Certificate(String, String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("{0}: the private key cannot be used: {1}")]
    Key(String, rustls::Error),
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: String, key: String },
}

impl ReloadingCert {
    fn load(config: &TlsConfig, provider: Arc<CryptoProvider>) -> Result<Self, GatewayError> {
        let files = read_pair(&config.cert_pem_file, &config.key_pem_file)
            .map_err(|e| config_error("http_server.tls", e))?;
        let key = certified_key(
            &files,
            &config.cert_pem_file,
            &config.key_pem_file,
            &provider,
        )
        .map_err(|e| config_error("http_server.tls", e))?;
        Ok(Self {
            current: ArcSwap::from_pointee(key),
            cert_path: config.cert_pem_file.clone(),
            key_path: config.key_pem_file.clone(),
            provider,
            state: Mutex::new(WatchState {
                loaded: files.clone(),
                seen: files,
                failed: None,
            }),
        })
    }

    /// Checks the files every second for the life of the runtime.
    pub(crate) fn watch(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                this.poll_files(false);
            }
        });
    }

    /// SIGHUP: loads the files now, changed or not since the last look.
    pub(crate) fn reload_now(&self) {
        self.poll_files(true);
    }

    fn poll_files(&self, now: bool) {
        let files = match read_pair(&self.cert_path, &self.key_path) {
            Ok(files) => files,
            Err(error) => {
                // Mid-replacement, a file may be missing for a moment.
                if now {
                    tracing::error!(%error, "TLS certificate reload failed; the old pair stays in service");
                }
                return;
            }
        };
        let mut state = self.state.lock();
        let settled = files == state.seen;
        state.seen = files.clone();
        if files == state.loaded || !(settled || now) {
            return;
        }
        if !now && state.failed.as_ref() == Some(&files) {
            return;
        }
        match certified_key(&files, &self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                state.loaded = files;
                state.failed = None;
                reloaded("loaded");
                tracing::info!(cert = %self.cert_path, "TLS certificate reloaded");
            }
            Err(error) => {
                state.failed = Some(files);
                reloaded("refused");
                tracing::error!(%error, "TLS certificate reload refused; the old pair stays in service");
            }
        }
    }
}

fn reloaded(result: &str) {
    crate::metrics::METRICS
        .tls_reloads
        .with_label_values(&[result])
        .inc();
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &str, key: &str) -> Result<PairFiles, PairError> {
    Ok(PairFiles {
        cert: std::fs::read(cert).map_err(|e| PairError::Read(cert.to_owned(), e))?,
        key: std::fs::read(key).map_err(|e| PairError::Read(key.to_owned(), e))?,
    })
}

fn certified_key(
    files: &PairFiles,
    cert_path: &str,
    key_path: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, PairError> {
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PairError::Certificate(cert_path.to_owned(), e.to_string()))?;
    if chain.is_empty() {
        return Err(PairError::Certificate(
            cert_path.to_owned(),
            "no PEM certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .map_err(|_| PairError::NoKey(key_path.to_owned()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PairError::Key(key_path.to_owned(), e))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(_) => Err(PairError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
    }
}

/// The identity a verified client certificate carries: the first of
/// `order` the certificate has. None when it has none of them (or does not
/// parse, which rustls would already have refused).
pub(crate) fn certificate_identity(der: &[u8], order: &[IdentitySource]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    for source in order {
        let found = match source {
            IdentitySource::SanUri => names.iter().find_map(|n| match n {
                GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            }),
            IdentitySource::SanDns => names.iter().find_map(|n| match n {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            }),
            IdentitySource::CommonName => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
        };
        if let Some(identity) = found.filter(|s| !s.is_empty()) {
            return Some(identity);
        }
    }
    None
}
