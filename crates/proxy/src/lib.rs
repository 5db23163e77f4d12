//! Calls to the application backend: Centrifugo's proxies (docs/proxy.md).
//! herald asks, the backend answers with a result, an error for the client
//! or a disconnect; anything else is an unexpected failure, which the
//! caller turns into a temporary error (never a panic, never a hang past the
//! timeout).
//!
//! Today: the connect proxy (`client.proxy.connect`) and the RPC proxy
//! (`rpc.proxy`, `rpc.without_namespace`, `rpc.namespaces`). Two transports
//! carry the same calls: [`HttpProxy`] (`http://`, `https://`) and
//! [`GrpcProxy`] (`grpc://`), which transcodes the HTTP proxy's JSON to
//! Centrifugo's protobuf messages and back (crates/proxy/proto/proxy.proto).

mod config;
mod grpc;
mod http;
mod message;
mod wire;

pub use config::{
    ClientProxies, ConnectProxyConfig, GrpcOptions, GrpcTls, HttpOptions, ProxyEndpoint, RpcConfig,
    RpcNamespace, RpcNamespaceOptions,
};
pub use grpc::GrpcProxy;
pub use http::{HttpProxy, ProxyBuildError};
pub use wire::{Answer, ConnectCall, ConnectGrant, Failure, ProxyKind, RpcCall, RpcReply};
