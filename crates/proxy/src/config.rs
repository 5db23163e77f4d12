//! The proxy sections, with Centrifugo v6's names.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One proxy: where and how the backend is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyEndpoint {
    /// `http://` or `https://` (HTTP), or `grpc://host:port` (gRPC).
    pub endpoint: String,
    /// Whole request, connect included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Headers of the client's request forwarded to the backend
    /// (case-insensitive names; `Cookie` and `Authorization` only when
    /// listed): as HTTP headers, or as gRPC metadata.
    pub http_headers: Vec<String>,
    /// More names of the client's request forwarded, as `http_headers`
    /// (Centrifugo's `grpc_metadata`: the metadata of a gRPC client).
    pub grpc_metadata: Vec<String>,
    /// `http.static_headers`: sent with every HTTP request.
    pub http: HttpOptions,
    /// How a `grpc://` endpoint is called.
    pub grpc: GrpcOptions,
}

impl Default for ProxyEndpoint {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            grpc_metadata: Vec::new(),
            http: HttpOptions::default(),
            grpc: GrpcOptions::default(),
        }
    }
}

impl ProxyEndpoint {
    /// Whether the backend is called over gRPC.
    pub fn is_grpc(&self) -> bool {
        self.endpoint.starts_with("grpc://")
    }

    /// What is wrong with it, named under `key`.
    fn check(&self, key: &str) -> Result<(), (String, String)> {
        if let Some(authority) = self.endpoint.strip_prefix("grpc://") {
            if !is_host_port(authority) {
                return Err((
                    format!("{key}.endpoint"),
                    "a gRPC endpoint is grpc://host:port, without a path".into(),
                ));
            }
            let tls = &self.grpc.tls;
            if tls.cert_pem.is_empty() != tls.key_pem.is_empty() {
                return Err((
                    format!("{key}.grpc.tls"),
                    "cert_pem and key_pem go together".into(),
                ));
            }
        } else if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err((
                format!("{key}.endpoint"),
                "required when the proxy is on: an http://, https:// or grpc:// URL".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err((format!("{key}.timeout"), "must be more than 0s".into()));
        }
        Ok(())
    }

    /// The headers of a client request this proxy forwards, by the
    /// `http_headers` and `grpc_metadata` allow-lists.
    pub fn forwarded<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<(String, String)> {
        headers
            .into_iter()
            .filter(|(name, _)| {
                self.http_headers
                    .iter()
                    .chain(&self.grpc_metadata)
                    .any(|h| h.eq_ignore_ascii_case(name))
            })
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

/// `host:port` with a port in 1..=65535 and nothing after it; the host a
/// name, an IPv4 address or a bracketed IPv6 one.
fn is_host_port(authority: &str) -> bool {
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
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
    pub grpc_metadata: Vec<String>,
    pub http: HttpOptions,
    pub grpc: GrpcOptions,
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
            grpc_metadata: self.grpc_metadata.clone(),
            http: self.http.clone(),
            grpc: self.grpc.clone(),
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

/// `grpc`: how a `grpc://` endpoint is called (Centrifugo's names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcOptions {
    pub tls: GrpcTls,
    /// With `credentials_value`: one metadata pair sent with every call
    /// (per-RPC credentials); none when empty.
    pub credentials_key: String,
    pub credentials_value: String,
    /// Sent with every call; a forwarded name replaces a static one.
    pub static_metadata: BTreeMap<String, String>,
    /// gzip the requests, and accept gzipped responses.
    pub compression: bool,
}

/// `grpc.tls`: TLS to the backend. Each `*_pem` is the PEM text itself or
/// the path of a file holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcTls {
    pub enabled: bool,
    /// The CA the backend's certificate is verified against; the system
    /// roots when empty.
    pub server_ca_pem: String,
    /// A client certificate and its key, for a backend that asks for one.
    pub cert_pem: String,
    pub key_pem: String,
    /// The name the backend's certificate must hold; the endpoint's host
    /// when empty.
    pub server_name: String,
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
        assert_eq!(grpc.check(), Ok(()));
        for bad in [
            "grpc://",
            "grpc://host",
            "grpc://:80",
            "grpc://host:0",
            "grpc://host:80/path",
            "grpc://[::1:80",
            "ftp://host:80",
        ] {
            let config = RpcConfig {
                proxy: ProxyEndpoint {
                    endpoint: bad.into(),
                    ..Default::default()
                },
                ..grpc.clone()
            };
            assert_eq!(config.check().unwrap_err().0, "rpc.proxy.endpoint", "{bad}");
        }
        for good in ["grpc://[::1]:50051", "grpc://backend.internal:443"] {
            let config = RpcConfig {
                proxy: ProxyEndpoint {
                    endpoint: good.into(),
                    ..Default::default()
                },
                ..grpc.clone()
            };
            assert_eq!(config.check(), Ok(()), "{good}");
        }
        let half_identity = RpcConfig {
            proxy: ProxyEndpoint {
                endpoint: "grpc://127.0.0.1:1".into(),
                grpc: GrpcOptions {
                    tls: GrpcTls {
                        enabled: true,
                        cert_pem: "client.pem".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
            ..grpc.clone()
        };
        assert_eq!(half_identity.check().unwrap_err().0, "rpc.proxy.grpc.tls");
        let bad_name = RpcConfig {
            namespaces: vec![RpcNamespace {
                name: "x".into(),
                proxy_enabled: true,
            }],
            ..config
        };
        assert_eq!(bad_name.check().unwrap_err().0, "rpc.namespaces");
    }

    #[test]
    fn forwarded_names_come_from_both_lists() {
        let endpoint = ProxyEndpoint {
            endpoint: "grpc://backend:50051".into(),
            http_headers: vec!["Cookie".into()],
            grpc_metadata: vec!["x-tenant".into()],
            ..Default::default()
        };
        let headers = [("cookie", "a=1"), ("X-Tenant", "t"), ("authorization", "b")];
        assert_eq!(
            endpoint.forwarded(headers),
            vec![
                ("cookie".to_owned(), "a=1".to_owned()),
                ("X-Tenant".to_owned(), "t".to_owned())
            ]
        );
        assert!(endpoint.is_grpc());
    }
}
