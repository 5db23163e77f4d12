//! Calls to the application backend: Centrifugo's proxies (docs/proxy.md).
//! herald asks, the backend answers with a result, an error for the client
//! or a disconnect; anything else is an unexpected failure, which the
//! caller turns into a temporary error (never a panic, never a hang past the
//! timeout).
//!
//! The proxies: `client.proxy.connect` and `.refresh`, `channel.proxy.
//! subscribe`, `.publish` and `.sub_refresh`, `rpc.proxy`, and the named
//! `proxies` a namespace may pick instead. [`Proxy`] is one of them ready
//! to call; [`wire`]'s types are what goes and comes back. Two transports
//! carry the same calls: [`HttpProxy`] (`http://`, `https://`) and
//! [`GrpcProxy`] (`grpc://`), which transcodes the HTTP proxy's JSON to
//! Centrifugo's protobuf messages and back (crates/proxy/proto/proxy.proto).
//!
//! Requests are signed with a [`ProxySigner`] when `proxy_signing` has an
//! active key; a [`ProxyBreaker`] holds calls back from a backend that
//! keeps failing.

mod breaker;
mod client;
mod config;
mod grpc;
mod http;
mod message;
mod signing;
mod wire;

pub use breaker::{ProxyBreaker, BREAKER_MAX_PAUSE, BREAKER_PAUSE, BREAKER_THRESHOLD};
pub use client::Proxy;
pub use config::{
    check_named, is_default, ChannelProxies, ClientProxies, GrpcOptions, GrpcTls, HttpOptions,
    NamedProxy, ProxyEndpoint, RpcConfig, RpcNamespace, RpcNamespaceOptions, StatusTransform,
    SwitchedProxy, TransformedError, DEFAULT_PROXY,
};
pub use grpc::GrpcProxy;
pub use http::{HttpProxy, ProxyBuildError};
pub use signing::{
    valid_signing_key_id, ProxySigner, ProxySigningKey, ProxySigningKeyring, SigningKeyringError,
    MIN_SIGNING_KEY_LEN, SIGNATURE_HEADER, SIGNATURE_VERSION,
};
pub use wire::{
    Answer, Caller, ConnectCall, ConnectGrant, Failure, Outgoing, Payload, ProxyKind, PublishCall,
    PublishGrant, RefreshCall, RefreshGrant, RpcCall, RpcReply, SubRefreshCall, SubscribeCall,
    SubscriptionGrant,
};
