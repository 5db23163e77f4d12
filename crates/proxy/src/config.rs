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
    /// Headers the client itself sent in its connect command (`headers`,
    /// for clients that cannot set real ones) forwarded to the backend:
    /// client-controlled, so never trust them for authentication.
    pub emulated_headers: Vec<String>,
    /// Send the connection's `meta` (from the connect proxy) with each call.
    pub include_connection_meta: bool,
    /// Payloads travel as `b64data`/`b64info` (standard base64) both ways.
    pub binary_encoding: bool,
    /// `http.static_headers`, `http.status_to_code_transforms`.
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
            emulated_headers: Vec::new(),
            include_connection_meta: false,
            binary_encoding: false,
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
    pub fn check(&self, key: &str) -> Result<(), (String, String)> {
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
        for (index, t) in self.http.status_to_code_transforms.iter().enumerate() {
            let at = format!("{key}.http.status_to_code_transforms[{index}]");
            if !(100..=599).contains(&t.status_code) {
                return Err((
                    format!("{at}.status_code"),
                    "an HTTP status, 100-599".into(),
                ));
            }
            if !(400..=1999).contains(&t.to_error.code) {
                return Err((
                    format!("{at}.to_error.code"),
                    "an error code for the client, 400-1999".into(),
                ));
            }
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
    /// Called for connects without a token.
    pub connect: SwitchedProxy,
    /// Called when a connection's expiry comes (instead of the client
    /// refreshing its token).
    pub refresh: SwitchedProxy,
}

/// `client.proxy.connect`, `client.proxy.refresh`: a proxy with its own
/// `enabled` switch. The fields are the endpoint's, written out (not
/// flattened: the environment layer's strings only convert to numbers and
/// booleans in plain fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchedProxy {
    pub enabled: bool,
    pub endpoint: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub http_headers: Vec<String>,
    pub grpc_metadata: Vec<String>,
    pub emulated_headers: Vec<String>,
    pub include_connection_meta: bool,
    pub binary_encoding: bool,
    pub http: HttpOptions,
    pub grpc: GrpcOptions,
}

impl Default for SwitchedProxy {
    fn default() -> Self {
        let endpoint = ProxyEndpoint::default();
        Self {
            enabled: false,
            endpoint: endpoint.endpoint,
            timeout: endpoint.timeout,
            http_headers: endpoint.http_headers,
            grpc_metadata: endpoint.grpc_metadata,
            emulated_headers: endpoint.emulated_headers,
            include_connection_meta: endpoint.include_connection_meta,
            binary_encoding: endpoint.binary_encoding,
            http: endpoint.http,
            grpc: endpoint.grpc,
        }
    }
}

impl SwitchedProxy {
    /// The proxy's endpoint settings.
    pub fn endpoint(&self) -> ProxyEndpoint {
        ProxyEndpoint {
            endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            http_headers: self.http_headers.clone(),
            grpc_metadata: self.grpc_metadata.clone(),
            emulated_headers: self.emulated_headers.clone(),
            include_connection_meta: self.include_connection_meta,
            binary_encoding: self.binary_encoding,
            http: self.http.clone(),
            grpc: self.grpc.clone(),
        }
    }

    pub fn check(&self, key: &str) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        self.endpoint().check(key)
    }
}

/// `channel.proxy`: the default proxies of channel namespaces (a
/// namespace turns each on with `*_proxy_enabled`, and may pick a named
/// one of `proxies` with `*_proxy_name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelProxies {
    pub subscribe: ProxyEndpoint,
    pub publish: ProxyEndpoint,
    pub sub_refresh: ProxyEndpoint,
}

/// One entry of the top-level `proxies` list, selected by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedProxy {
    pub name: String,
    #[serde(flatten)]
    pub endpoint: ProxyEndpoint,
}

/// The name that selects a section's own proxy rather than a named one.
pub const DEFAULT_PROXY: &str = "default";

/// Checks `proxies`: names unique, of `[-a-zA-Z0-9_.]`, not `default`,
/// endpoints valid.
pub fn check_named(proxies: &[NamedProxy]) -> Result<(), (String, String)> {
    for (index, proxy) in proxies.iter().enumerate() {
        let key = format!("proxies[{index}]");
        if !valid_name(&proxy.name, 1) || proxy.name == DEFAULT_PROXY {
            return Err((
                format!("{key}.name"),
                format!(
                    "{:?}: a name is 1 or more of a-z A-Z 0-9 - _ . and not \"default\"",
                    proxy.name
                ),
            ));
        }
        if proxies[..index].iter().any(|p| p.name == proxy.name) {
            return Err((
                format!("{key}.name"),
                format!("{:?} given twice", proxy.name),
            ));
        }
        proxy.endpoint.check(&key)?;
    }
    Ok(())
}

fn valid_name(name: &str, min: usize) -> bool {
    name.len() >= min
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpOptions {
    pub static_headers: BTreeMap<String, String>,
    /// HTTP statuses answered to the client as an error (instead of the
    /// unexpected-failure 100).
    pub status_to_code_transforms: Vec<StatusTransform>,
}

/// `{status_code, to_error: {code, message, temporary}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusTransform {
    pub status_code: u16,
    pub to_error: TransformedError,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransformedError {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
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
    /// An entry of `proxies`; empty or `default`: `rpc.proxy`.
    pub proxy_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcNamespace {
    pub name: String,
    pub proxy_enabled: bool,
    /// An entry of `proxies`; empty or `default`: `rpc.proxy`.
    pub proxy_name: String,
}

impl RpcConfig {
    /// Whether `method` goes to the backend: its namespace (or the
    /// methods without one) has the proxy on. A method of a namespace not
    /// configured is not proxied.
    pub fn proxied(&self, method: &str) -> bool {
        self.proxy_for(method).is_some()
    }

    /// The proxy name `method` goes to (`""`/`default`: `rpc.proxy`), or
    /// None when it is not proxied.
    pub fn proxy_for(&self, method: &str) -> Option<&str> {
        match method.split_once(':') {
            None => self
                .without_namespace
                .proxy_enabled
                .then_some(self.without_namespace.proxy_name.as_str()),
            Some((namespace, _)) => self
                .namespaces
                .iter()
                .find(|n| n.name == namespace && n.proxy_enabled)
                .map(|n| n.proxy_name.as_str()),
        }
    }

    /// Whether some method goes to `rpc.proxy` itself (not a named one).
    pub fn uses_own_proxy(&self) -> bool {
        let own = |enabled: bool, name: &str| enabled && is_default(name);
        own(
            self.without_namespace.proxy_enabled,
            &self.without_namespace.proxy_name,
        ) || self
            .namespaces
            .iter()
            .any(|n| own(n.proxy_enabled, &n.proxy_name))
    }

    /// Whether any method can reach the backend.
    pub fn any_proxied(&self) -> bool {
        self.without_namespace.proxy_enabled || self.namespaces.iter().any(|n| n.proxy_enabled)
    }

    /// What is wrong with the section, named by key.
    pub fn check(&self) -> Result<(), (String, String)> {
        for n in &self.namespaces {
            if !valid_name(&n.name, 2) {
                return Err((
                    "rpc.namespaces".into(),
                    format!("{:?}: a name is 2 or more of a-z A-Z 0-9 - _ .", n.name),
                ));
            }
        }
        if !self.uses_own_proxy() {
            return Ok(());
        }
        self.proxy.check("rpc.proxy")
    }
}

/// Whether a `*_proxy_name` selects the section's own proxy.
pub fn is_default(name: &str) -> bool {
    name.is_empty() || name == DEFAULT_PROXY
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
                proxy_name: String::new(),
            },
            namespaces: vec![
                RpcNamespace {
                    name: "on".into(),
                    proxy_enabled: true,
                    proxy_name: "other".into(),
                },
                RpcNamespace {
                    name: "off".into(),
                    proxy_enabled: false,
                    ..Default::default()
                },
            ],
        };
        assert!(config.proxied("echo"));
        assert!(config.proxied("on:echo"));
        assert!(!config.proxied("off:echo"));
        assert!(!config.proxied("unknown:echo"));
        assert_eq!(config.proxy_for("on:echo"), Some("other"));
        assert_eq!(config.proxy_for("echo"), Some(""));
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
                ..Default::default()
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
