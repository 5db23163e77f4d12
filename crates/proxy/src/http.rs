//! The HTTP transport of proxies: a POST of the request's JSON, a 200 with
//! the answer's JSON. One keep-alive pool per proxy, rustls with the
//! aws-lc-rs provider and the system roots, no redirects, no environment
//! proxy, a whole-request timeout, at most [`MAX_ANSWER`] bytes read. With
//! a [`ProxySigner`] every request carries its signature header.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ProxyEndpoint, StatusTransform};
use crate::signing::{ProxySigner, SIGNATURE_HEADER};
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
    /// The endpoint's path and query as sent on the request line: what a
    /// signature covers.
    path: String,
    signer: ProxySigner,
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
        let url = reqwest::Url::parse(&config.endpoint).map_err(|e| fail(e.to_string()))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
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
            path,
            signer: ProxySigner::default(),
        })
    }

    /// Signs every request with `signer`'s active key (none: unsigned).
    pub fn with_signer(mut self, signer: ProxySigner) -> Self {
        self.signer = signer;
        self
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
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = self.signer.sign("POST", &self.path, &body, now_unix);
        let call = async {
            let mut builder = self
                .client
                .post(&self.endpoint)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            // A forwarded or static header never passes for herald's signature.
            for (name, value) in headers.iter().chain(&self.static_headers) {
                if !name.eq_ignore_ascii_case(SIGNATURE_HEADER) {
                    builder = builder.header(name, value);
                }
            }
            if let Some((name, value)) = signature {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{ProxySigningKey, ProxySigningKeyring};
    use crate::wire::RpcReply;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one request on a loopback port, answers `{"result":{}}`, and
    /// hands back the request's bytes.
    async fn one_request() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    break;
                }
            }
            let answer = br#"{"result":{}}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(answer).await.unwrap();
            request
        });
        (format!("http://{addr}/centrifugo/rpc?tenant=a%20b"), task)
    }

    fn endpoint(url: String) -> ProxyEndpoint {
        let mut endpoint = ProxyEndpoint {
            endpoint: url,
            ..Default::default()
        };
        endpoint
            .http
            .static_headers
            .insert("x-herald-signature".into(), "v1,kid=forged".into());
        endpoint
    }

    #[tokio::test]
    async fn the_signature_covers_the_bytes_and_path_sent() {
        let (url, server) = one_request().await;
        let keyring = ProxySigningKeyring::new(
            "k1",
            vec![ProxySigningKey {
                id: "k1".into(),
                secret: zeroize::Zeroizing::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            }],
        )
        .unwrap();
        let signer = ProxySigner::new(keyring);
        let proxy = HttpProxy::new(&endpoint(url))
            .unwrap()
            .with_signer(signer.clone());
        let forwarded = [("X-Herald-Signature".to_owned(), "v1,kid=client".to_owned())];
        let answer = proxy
            .call::<_, RpcReply>(
                &serde_json::json!({"method": "echo", "data": "é"}),
                &forwarded,
            )
            .await;
        assert_eq!(answer, Ok(Answer::Result(RpcReply::default())));

        let request = String::from_utf8(server.await.unwrap()).unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        let request_line = head.lines().next().unwrap();
        assert_eq!(request_line, "POST /centrifugo/rpc?tenant=a%20b HTTP/1.1");
        let signatures: Vec<&str> = head
            .lines()
            .filter_map(|l| l.strip_prefix("x-herald-signature: "))
            .collect();
        assert_eq!(signatures.len(), 1, "only herald's: {head}");
        let ts: u64 = signatures[0]
            .split(',')
            .find_map(|p| p.strip_prefix("ts="))
            .unwrap()
            .parse()
            .unwrap();
        let want = signer
            .sign("POST", "/centrifugo/rpc?tenant=a%20b", body.as_bytes(), ts)
            .unwrap()
            .1;
        assert_eq!(signatures[0], want);
    }

    #[tokio::test]
    async fn without_a_signer_no_signature_goes_out() {
        let (url, server) = one_request().await;
        let proxy = HttpProxy::new(&endpoint(url)).unwrap();
        let answer = proxy.call::<_, RpcReply>(&serde_json::json!({}), &[]).await;
        assert!(answer.is_ok(), "{answer:?}");
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            !request.to_ascii_lowercase().contains("x-herald-signature"),
            "{request}"
        );
    }
}
