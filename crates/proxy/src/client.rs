//! One configured proxy: its settings and the transport that reaches the
//! backend. Callers hand it a call and the client's headers; it picks
//! what the backend may see, asks, and reads the answer.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::breaker::ProxyBreaker;
use crate::config::ProxyEndpoint;
use crate::grpc::GrpcProxy;
use crate::http::{HttpProxy, ProxyBuildError};
use crate::signing::ProxySigner;
use crate::wire::{Answer, Failure, ProxyKind};

/// A proxy ready to call.
pub struct Proxy {
    settings: ProxyEndpoint,
    transport: Transport,
    /// Holds calls back while the backend keeps failing.
    breaker: ProxyBreaker,
}

/// How the backend is reached: by its endpoint's scheme.
enum Transport {
    Http(HttpProxy),
    Grpc(Box<GrpcProxy>),
}

impl Proxy {
    /// Builds the proxy's client; bad TLS files or metadata of a gRPC
    /// proxy are reported here, at start. Calls are signed by `signer`
    /// (`proxy_signing`; a default signer signs nothing).
    pub fn new(settings: ProxyEndpoint, signer: &ProxySigner) -> Result<Self, ProxyBuildError> {
        let transport = if settings.is_grpc() {
            Transport::Grpc(Box::new(
                GrpcProxy::new(&settings)?.with_signer(signer.clone()),
            ))
        } else {
            Transport::Http(HttpProxy::new(&settings)?.with_signer(signer.clone()))
        };
        Ok(Self {
            settings,
            transport,
            breaker: ProxyBreaker::new(),
        })
    }

    pub fn settings(&self) -> &ProxyEndpoint {
        &self.settings
    }

    /// The `encoding` of this proxy's calls.
    pub fn encoding(&self) -> &'static str {
        if self.settings.binary_encoding {
            "binary"
        } else {
            "json"
        }
    }

    /// The headers sent with a call: those of the client's request in
    /// `http_headers`, then those of its connect command's `headers` in
    /// `emulated_headers` (a real header wins over an emulated one of the
    /// same name).
    pub fn headers(
        &self,
        request: &[(String, String)],
        emulated: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut out = self
            .settings
            .forwarded(request.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        for (name, value) in emulated {
            let listed = self
                .settings
                .emulated_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name));
            let taken = out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
            if listed && !taken {
                out.push((name.clone(), value.clone()));
            }
        }
        out
    }

    /// Asks the backend: `headers` go as HTTP headers, or as gRPC
    /// metadata.
    pub async fn call<R: Serialize, T: DeserializeOwned>(
        &self,
        kind: ProxyKind,
        request: &R,
        headers: &[(String, String)],
    ) -> Result<Answer<T>, Failure> {
        if !self.breaker.admit(Instant::now()) {
            return Err(Failure::Paused);
        }
        let answer = match &self.transport {
            Transport::Http(http) => http.call(request, headers).await,
            Transport::Grpc(grpc) => grpc.call(kind, request, headers).await,
        };
        if let Some(pause) = self.breaker.record_result(&answer, Instant::now()) {
            tracing::warn!(
                proxy = kind.label(),
                pause_ms = pause.as_millis() as u64,
                "proxy calls paused after repeated failures"
            );
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_the_allowed_ones_real_before_emulated() {
        let proxy = Proxy::new(
            ProxyEndpoint {
                endpoint: "http://127.0.0.1:1/p".into(),
                http_headers: vec!["cookie".into(), "x-real".into()],
                emulated_headers: vec!["X-Real".into(), "X-Tenant".into()],
                ..Default::default()
            },
            &ProxySigner::default(),
        )
        .unwrap();
        let request = vec![
            ("Cookie".to_owned(), "session=1".to_owned()),
            ("Authorization".to_owned(), "Bearer t".to_owned()),
            ("X-Real".to_owned(), "from-request".to_owned()),
        ];
        let emulated = BTreeMap::from([
            ("x-real".to_owned(), "from-client".to_owned()),
            ("x-tenant".to_owned(), "7".to_owned()),
            ("x-other".to_owned(), "no".to_owned()),
        ]);
        assert_eq!(
            proxy.headers(&request, &emulated),
            vec![
                ("Cookie".to_owned(), "session=1".to_owned()),
                ("X-Real".to_owned(), "from-request".to_owned()),
                ("x-tenant".to_owned(), "7".to_owned()),
            ]
        );
    }
}
