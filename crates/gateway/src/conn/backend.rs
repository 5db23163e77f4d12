//! Runs the machine's proxy effects: picks the proxy the effect names,
//! builds the call from the connection's context, asks the backend and
//! counts the call (`herald_proxy_requests_total`,
//! `herald_proxy_duration_seconds`). docs/proxy.md says what each proxy is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use herald_protocol::RawJson;
use herald_proxy::{
    Answer, Caller, ConnectCall, Failure, Outgoing, Proxy, ProxyKind, PublishCall, RefreshCall,
    RpcCall, SubRefreshCall, SubscribeCall,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::conn::machine::{Effect, Outcome};
use crate::metrics;
use crate::node::Node;

/// What every call says of its connection, owned so the call can outlive
/// the actor's turn.
pub(crate) struct Asking {
    pub(crate) client: String,
    pub(crate) transport: &'static str,
    pub(crate) protocol: &'static str,
    /// `""` before connect.
    pub(crate) user: String,
    pub(crate) meta: Option<RawJson>,
    /// The request that opened the connection (each proxy keeps its
    /// `http_headers`).
    pub(crate) headers: Vec<(String, String)>,
    /// The connect command's `headers` (each proxy keeps its
    /// `emulated_headers`).
    pub(crate) emulated: Arc<BTreeMap<String, String>>,
}

impl Effect {
    /// Whether this effect is a call to the backend ([`Asking::run`]).
    pub(crate) fn is_proxy_call(&self) -> bool {
        matches!(
            self,
            Effect::ProxyConnect { .. }
                | Effect::Rpc { .. }
                | Effect::ProxySubscribe { .. }
                | Effect::ProxyPublish { .. }
                | Effect::ProxyRefresh
                | Effect::ProxySubRefresh { .. }
        )
    }
}

impl Asking {
    /// Runs a proxy effect (one [`Effect::is_proxy_call`] says is).
    pub(crate) async fn run(self, node: &Node, effect: Effect) -> Outcome {
        let proxies = &node.proxies;
        match effect {
            Effect::ProxyConnect {
                name,
                version,
                data,
            } => {
                let answer = match &proxies.connect {
                    Some(proxy) => {
                        let call = ConnectCall {
                            caller: self.caller(proxy, false),
                            name: &name,
                            version: &version,
                            data: outgoing(proxy, data.as_ref()),
                        };
                        self.ask(proxy, ProxyKind::Connect, &call).await
                    }
                    None => Err(missing(ProxyKind::Connect)),
                };
                Outcome::ConnectProxied(answer)
            }
            Effect::ProxyRefresh => {
                let answer = match &proxies.refresh {
                    Some(proxy) => {
                        let call = RefreshCall {
                            caller: self.caller(proxy, true),
                        };
                        self.ask(proxy, ProxyKind::Refresh, &call).await
                    }
                    None => Err(missing(ProxyKind::Refresh)),
                };
                Outcome::RefreshProxied(answer)
            }
            Effect::ProxySubscribe {
                channel,
                data,
                proxy,
            } => {
                let answer = match proxies.channel(ProxyKind::Subscribe, &proxy) {
                    Some(proxy) => {
                        let call = SubscribeCall {
                            caller: self.caller(proxy, true),
                            channel: &channel,
                            data: outgoing(proxy, data.as_ref()),
                        };
                        self.ask(proxy, ProxyKind::Subscribe, &call).await
                    }
                    None => Err(missing(ProxyKind::Subscribe)),
                };
                Outcome::SubscribeProxied(answer)
            }
            Effect::ProxyPublish {
                channel,
                data,
                proxy,
            } => {
                let answer = match proxies.channel(ProxyKind::Publish, &proxy) {
                    Some(proxy) => {
                        let call = PublishCall {
                            caller: self.caller(proxy, true),
                            channel: &channel,
                            data: Outgoing {
                                payload: &data,
                                binary_encoding: proxy.settings().binary_encoding,
                            },
                        };
                        self.ask(proxy, ProxyKind::Publish, &call).await
                    }
                    None => Err(missing(ProxyKind::Publish)),
                };
                Outcome::PublishProxied(answer)
            }
            Effect::ProxySubRefresh { channel, proxy } => {
                let answer = match proxies.channel(ProxyKind::SubRefresh, &proxy) {
                    Some(proxy) => {
                        let call = SubRefreshCall {
                            caller: self.caller(proxy, true),
                            channel: &channel,
                        };
                        self.ask(proxy, ProxyKind::SubRefresh, &call).await
                    }
                    None => Err(missing(ProxyKind::SubRefresh)),
                };
                Outcome::SubRefreshProxied(answer)
            }
            Effect::Rpc {
                method,
                data,
                proxy,
            } => {
                let answer = match proxies.rpc(&proxy) {
                    Some(proxy) => {
                        let call = RpcCall {
                            caller: self.caller(proxy, true),
                            method: &method,
                            data: outgoing(proxy, data.as_ref()),
                        };
                        self.ask(proxy, ProxyKind::Rpc, &call).await
                    }
                    None => Err(missing(ProxyKind::Rpc)),
                };
                Outcome::Rpc(answer)
            }
            other => {
                // The session routes only proxy calls here.
                tracing::error!(effect = ?other, "not a proxy call");
                Outcome::Rpc(Err(Failure::Transport("not a proxy call".into())))
            }
        }
    }

    fn caller<'a>(&'a self, proxy: &Proxy, knows_user: bool) -> Caller<'a> {
        let settings = proxy.settings();
        Caller {
            client: &self.client,
            transport: self.transport,
            protocol: self.protocol,
            encoding: proxy.encoding(),
            user: knows_user.then_some(self.user.as_str()),
            meta: self
                .meta
                .as_ref()
                .filter(|_| settings.include_connection_meta),
        }
    }

    async fn ask<R: Serialize, T: DeserializeOwned>(
        &self,
        proxy: &Proxy,
        kind: ProxyKind,
        call: &R,
    ) -> Result<Answer<T>, Failure> {
        let headers = proxy.headers(&self.headers, &self.emulated);
        let started = Instant::now();
        let answer = proxy.call(kind, call, &headers).await;
        metrics::proxy_call(kind.label(), answer_label(&answer), started.elapsed());
        answer
    }
}

fn outgoing<'a>(proxy: &Proxy, data: Option<&'a RawJson>) -> Option<Outgoing<'a>> {
    data.map(|payload| Outgoing {
        payload,
        binary_encoding: proxy.settings().binary_encoding,
    })
}

/// A proxy the effect names is not configured: validation prevents it, so
/// it is a failure like any other (error 100), never a panic.
fn missing(kind: ProxyKind) -> Failure {
    Failure::Transport(format!("no {} proxy configured", kind.label()))
}

/// The `result` label of a proxy call.
fn answer_label<T>(answer: &Result<Answer<T>, Failure>) -> &'static str {
    match answer {
        Ok(Answer::Result(_)) => "ok",
        Ok(Answer::Error { .. }) => "error",
        Ok(Answer::Disconnect { .. }) => "disconnect",
        Err(failure) => failure.label(),
    }
}
