//! The one HTTP client for identity provider calls: rustls with the aws-lc-rs
//! provider, certificates verified against the system roots (`SSL_CERT_FILE`
//! / `SSL_CERT_DIR` replace them), short timeouts, no redirects, no proxy.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

/// Connect plus whole request; an identity provider slower than this is
/// treated as down.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest response body read (a JWK set or an introspection answer).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for identity provider calls: {0}")]
pub struct ClientError(String);

pub(crate) fn client() -> Result<reqwest::Client, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        warn!(error = %error, "reading a system root certificate failed");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        warn!("no system root certificate found: https calls to identity providers will fail (install ca-certificates or set SSL_CERT_FILE)");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError(e.to_string()))
}

/// Reads a body of at most [`MAX_BODY`] bytes.
pub(crate) async fn body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("response body larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error in a few words, without the URL's query (never a
/// token: tokens travel in request bodies only).
pub(crate) fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.without_url().to_string()
    }
}
