//! Calls to the application backend: Centrifugo's proxies (docs/proxy.md).
//! herald asks, the backend answers with a result, an error for the client
//! or a disconnect; anything else is an unexpected failure, which the
//! caller turns into a temporary error (never a panic, never a hang past the
//! timeout).
//!
//! Today: the connect proxy (`client.proxy.connect`) and the RPC proxy
//! (`rpc.proxy`, `rpc.without_namespace`, `rpc.namespaces`) over HTTP. The
//! others of issue 20 build on the same [`HttpProxy`]. Requests are signed
//! with a [`ProxySigner`] when `proxy_signing` has an active key; a
//! [`ProxyBreaker`] holds calls back from a backend that keeps failing.

mod breaker;
mod config;
mod http;
mod signing;
mod wire;

pub use breaker::{ProxyBreaker, BREAKER_MAX_PAUSE, BREAKER_PAUSE, BREAKER_THRESHOLD};
pub use config::{
    ClientProxies, ConnectProxyConfig, HttpOptions, ProxyEndpoint, RpcConfig, RpcNamespace,
    RpcNamespaceOptions,
};
pub use http::{HttpProxy, ProxyBuildError};
pub use signing::{
    valid_signing_key_id, ProxySigner, ProxySigningKey, ProxySigningKeyring, SigningKeyringError,
    MIN_SIGNING_KEY_LEN, SIGNATURE_HEADER, SIGNATURE_VERSION,
};
pub use wire::{Answer, ConnectCall, ConnectGrant, Failure, RpcCall, RpcReply};
