//! The proxy sections, with Centrifugo v6's names.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One proxy: where and how the backend is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyEndpoint {
    /// `http://` or `https://` (gRPC proxies are not served yet).
    pub endpoint: String,
    /// Whole request, connect included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Headers of the client's request forwarded to the backend
    /// (case-insensitive names; `Cookie` and `Authorization` only when
    /// listed).
    pub http_headers: Vec<String>,
    /// `http.static_headers`: sent with every request.
    pub http: HttpOptions,
}

impl Default for ProxyEndpoint {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            http: HttpOptions::default(),
        }
    }
}

impl ProxyEndpoint {
    /// What is wrong with it, named under `key`.
    fn check(&self, key: &str) -> Result<(), (String, String)> {
        if self.endpoint.starts_with("grpc://") {
            return Err((
                format!("{key}.endpoint"),
                "gRPC proxies are not served yet: use http:// or https://".into(),
            ));
        }
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err((
                format!("{key}.endpoint"),
                "required when the proxy is on: an http:// or https:// URL".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err((format!("{key}.timeout"), "must be more than 0s".into()));
        }
        Ok(())
    }

    /// The headers of a client request this proxy forwards, by the
    /// `http_headers` allow-list.
    pub fn forwarded<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<(String, String)> {
        headers
            .into_iter()
            .filter(|(name, _)| {
                self.http_headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name))
            })
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

/// `client.proxy`: proxies of the connection's own life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientProxies {
    pub connect: ConnectProxyConfig,
}

/// `client.proxy.connect`: called for connects without a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectProxyConfig {
    pub enabled: bool,
    pub endpoint: String,
    #[serde(with = "humantime_serde", default = "one_second")]
    pub timeout: Duration,
    pub http_headers: Vec<String>,
    pub http: HttpOptions,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl ConnectProxyConfig {
    /// The proxy's endpoint settings.
    pub fn endpoint(&self) -> ProxyEndpoint {
        ProxyEndpoint {
            endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            http_headers: self.http_headers.clone(),
            http: self.http.clone(),
        }
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        self.endpoint().check("client.proxy.connect")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpOptions {
    pub static_headers: BTreeMap<String, String>,
}

/// `rpc`: which client RPC methods go to the backend. A method's namespace
/// is what comes before its first `:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcConfig {
    pub proxy: ProxyEndpoint,
    pub without_namespace: RpcNamespaceOptions,
    pub namespaces: Vec<RpcNamespace>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcNamespaceOptions {
    pub proxy_enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcNamespace {
    pub name: String,
    pub proxy_enabled: bool,
}

impl RpcConfig {
    /// Whether `method` goes to the backend: its namespace (or the
    /// methods without one) has the proxy on. A method of a namespace not
    /// configured is not proxied.
    pub fn proxied(&self, method: &str) -> bool {
        match method.split_once(':') {
            None => self.without_namespace.proxy_enabled,
            Some((namespace, _)) => self
                .namespaces
                .iter()
                .any(|n| n.name == namespace && n.proxy_enabled),
        }
    }

    /// Whether any method can reach the backend.
    pub fn any_proxied(&self) -> bool {
        self.without_namespace.proxy_enabled || self.namespaces.iter().any(|n| n.proxy_enabled)
    }

    /// What is wrong with the section, named by key.
    pub fn check(&self) -> Result<(), (String, String)> {
        for n in &self.namespaces {
            let valid = n.name.len() >= 2
                && n.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err((
                    "rpc.namespaces".into(),
                    format!("{:?}: a name is 2 or more of a-z A-Z 0-9 - _ .", n.name),
                ));
            }
        }
        if !self.any_proxied() {
            return Ok(());
        }
        self.proxy.check("rpc.proxy")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_proxied_by_namespace() {
        let config = RpcConfig {
            proxy: ProxyEndpoint {
                endpoint: "http://127.0.0.1:1/rpc".into(),
                ..Default::default()
            },
            without_namespace: RpcNamespaceOptions {
                proxy_enabled: true,
            },
            namespaces: vec![
                RpcNamespace {
                    name: "on".into(),
                    proxy_enabled: true,
                },
                RpcNamespace {
                    name: "off".into(),
                    proxy_enabled: false,
                },
            ],
        };
        assert!(config.proxied("echo"));
        assert!(config.proxied("on:echo"));
        assert!(!config.proxied("off:echo"));
        assert!(!config.proxied("unknown:echo"));
        assert_eq!(config.check(), Ok(()));
        let grpc = RpcConfig {
            proxy: ProxyEndpoint {
                endpoint: "grpc://127.0.0.1:1".into(),
                ..Default::default()
            },
            ..config.clone()
        };
        assert_eq!(grpc.check().unwrap_err().0, "rpc.proxy.endpoint");
        let bad_name = RpcConfig {
            namespaces: vec![RpcNamespace {
                name: "x".into(),
                proxy_enabled: true,
            }],
            ..config
        };
        assert_eq!(bad_name.check().unwrap_err().0, "rpc.namespaces");
    }
}
