//! The HTTP transport of proxies: a POST of the request's JSON, a 200 with
//! the answer's JSON. One keep-alive pool per proxy, rustls with the
//! aws-lc-rs provider and the system roots, no redirects, no environment
//! proxy, a whole-request timeout, at most [`MAX_ANSWER`] bytes read.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ProxyEndpoint, StatusTransform};
use crate::wire::{self, Answer, Failure};

/// Largest answer read; a larger one is a failure, not a memory spike.
pub(crate) const MAX_ANSWER: usize = 1 << 20;

/// The client of one proxy endpoint.
#[derive(Clone)]
pub struct HttpProxy {
    client: reqwest::Client,
    endpoint: String,
    timeout: Duration,
    static_headers: Vec<(String, String)>,
    transforms: Vec<StatusTransform>,
}

/// Why a proxy client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the client of proxy {endpoint}: {reason}")]
pub struct ProxyBuildError {
    endpoint: String,
    reason: String,
}

impl ProxyBuildError {
    pub(crate) fn new(endpoint: &str, reason: String) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            reason,
        }
    }
}

impl HttpProxy {
    pub fn new(config: &ProxyEndpoint) -> Result<Self, ProxyBuildError> {
        let fail = |reason: String| ProxyBuildError::new(&config.endpoint, reason);
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            client,
            endpoint: config.endpoint.clone(),
            timeout: config.timeout,
            static_headers: config
                .http
                .static_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            transforms: config.http.status_to_code_transforms.clone(),
        })
    }

    /// Sends `request` and reads the answer, within the proxy's timeout.
    /// `headers` are forwarded from the client's request (the proxy's
    /// `http_headers` allow-list, applied by the caller).
    pub async fn call<R: Serialize, T: DeserializeOwned>(
        &self,
        request: &R,
        headers: &[(String, String)],
    ) -> Result<Answer<T>, Failure> {
        let body = serde_json::to_vec(request).map_err(|e| Failure::Invalid(e.to_string()))?;
        let call = async {
            let mut builder = self
                .client
                .post(&self.endpoint)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            for (name, value) in headers.iter().chain(&self.static_headers) {
                builder = builder.header(name, value);
            }
            let mut response = builder.send().await.map_err(describe)?;
            let status = response.status().as_u16();
            if status != 200 {
                // `status_to_code_transforms`: a status the backend means
                // as an answer for the client.
                return match self.transforms.iter().find(|t| t.status_code == status) {
                    Some(t) => Ok(Answer::Error {
                        code: t.to_error.code,
                        message: t.to_error.message.clone(),
                        temporary: t.to_error.temporary,
                    }),
                    None => Err(Failure::Status(status)),
                };
            }
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                if answer.len() + chunk.len() > MAX_ANSWER {
                    return Err(Failure::Invalid(format!(
                        "answer larger than {MAX_ANSWER} bytes"
                    )));
                }
                answer.extend_from_slice(&chunk);
            }
            wire::answer(&answer)
        };
        // reqwest's own timeout covers the request; this one covers a
        // body that trickles.
        match tokio_timeout(self.timeout, call).await {
            Some(result) => result,
            None => Err(Failure::Transport("timed out".into())),
        }
    }
}

/// A transport error in a few words, without the URL.
fn describe(error: reqwest::Error) -> Failure {
    Failure::Transport(if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.without_url().to_string()
    })
}

/// `future` unless `limit` passes first.
async fn tokio_timeout<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    tokio::time::timeout(limit, future).await.ok()
}
