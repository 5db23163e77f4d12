//! Calls to the application backend: Centrifugo's proxies (docs/proxy.md).
//! herald asks, the backend answers with a result, an error for the client
//! or a disconnect; anything else is an unexpected failure, which the
//! caller turns into a temporary error (never a panic, never a hang past the
//! timeout).
//!
//! Today: the RPC proxy over HTTP (`rpc.proxy`, `rpc.without_namespace`,
//! `rpc.namespaces`). The others of issue 20 build on the same [`HttpProxy`].

mod config;
mod http;
mod wire;

pub use config::{ProxyEndpoint, RpcConfig, RpcNamespace, RpcNamespaceOptions};
pub use http::{HttpProxy, ProxyBuildError};
pub use wire::{Answer, Failure, RpcCall};
