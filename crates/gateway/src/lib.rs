//! The actix-web side of herald: per-connection Session actors, the Hub that
//! fans publications out to local sessions, and the HTTP endpoints.

mod access_log;
mod admin;
#[doc(hidden)]
pub mod bench;
mod codes;
pub mod config;
mod conn;
mod error;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod grpc_api;
mod http;
mod metrics;
mod node;
mod outbox;
mod tls;
mod transport;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_http::HttpService;
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{web, App, HttpServer};
use herald_auth::{ChannelPolicy, TokenVerifier};
use herald_bus::{BrokerEvents, BusError, Engine};
use herald_identity::Authenticator;

use crate::access_log::access_log;
use crate::config::AdminListener;
use crate::conn::{accept as listener, upgrade};
use crate::http::routes::{internal_routes, public_routes, InternalRoutes};
use crate::http::{api, body, transports};
use crate::node::hub::Hub;
use crate::node::{Node, NodeEvents};
use crate::ws::deflate::Deflate;

/// The console password hash (`herald hashpassword`, config checks).
pub use admin::password as admin_password;
pub use config::{
    ClientAuth, ClientConfig, EndpointsConfig, GatewayConfig, GrpcApiConfig, HttpApiConfig,
    HttpServerConfig, IdentitySource, IntrospectionConfig, MinVersion, PersonalChannelConfig,
    ShutdownConfig, TlsConfig, WebSocketConfig,
};
pub use error::GatewayError;

/// A running node.
pub struct RunningServer {
    /// Where the WebSocket endpoint listens.
    pub public_addr: SocketAddr,
    /// Where API, metrics and health listen (same as public when internal_port = 0).
    pub internal_addr: SocketAddr,
    /// Where the `uni_grpc` server listens, when enabled.
    pub uni_grpc_addr: Option<SocketAddr>,
    /// Where the `grpc_api` server listens, when enabled.
    pub grpc_api_addr: Option<SocketAddr>,
    grpc_stops: Vec<tokio::sync::watch::Sender<bool>>,
    servers: Vec<actix_web::dev::Server>,
    node: Arc<Node>,
    shutdown_timeout: std::time::Duration,
}

/// Stops a running node; obtained from [`RunningServer::stopper`] before
/// waiting on the server.
#[derive(Clone)]
pub struct Stopper {
    handles: Vec<actix_web::dev::ServerHandle>,
    node: Arc<Node>,
    timeout: std::time::Duration,
    grpc_stops: Vec<tokio::sync::watch::Sender<bool>>,
}

impl RunningServer {
    pub fn stopper(&self) -> Stopper {
        Stopper {
            handles: self.servers.iter().map(|s| s.handle()).collect(),
            node: self.node.clone(),
            timeout: self.shutdown_timeout,
            grpc_stops: self.grpc_stops.clone(),
        }
    }

    /// Resolves when every listener has stopped.
    pub async fn wait(self) -> std::io::Result<()> {
        for result in futures_util::future::join_all(self.servers).await {
            result?;
        }
        Ok(())
    }
}

impl Stopper {
    /// Graceful shutdown: `/ready` turns 503 and new upgrades are refused at
    /// once; after a pause of a tenth of `shutdown.timeout` (at most 2 s) for
    /// probes to notice, connected clients are closed with 3001, spread
    /// evenly over the rest of the first half of `shutdown.timeout` so a
    /// cluster avoids a reconnect storm; the node leaves the engine's
    /// registry; the listeners stop.
    pub async fn shutdown(&self) {
        self.node.start_draining();
        tracing::info!(timeout = ?self.timeout, "draining");
        // Let readiness probes and load balancers see 503 before the first
        // client is closed, so its reconnect goes to another node.
        let pause = (self.timeout / 10).min(std::time::Duration::from_secs(2));
        tokio::time::sleep(pause).await;
        self.node.disconnect_all(self.timeout / 2 - pause).await;
        let leave = self.node.engine.broker.leave();
        match tokio::time::timeout(self.timeout / 8, leave).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "leaving the cluster failed"),
            Err(_) => tracing::warn!("leaving the cluster timed out"),
        }
        // What is left of the budget lets the last close frames go out.
        let grace = (self.timeout / 4).min(std::time::Duration::from_secs(2));
        for stop in &self.grpc_stops {
            let _ = stop.send(true);
        }
        let stops = self.handles.iter().map(|h| h.stop(true));
        let _ = tokio::time::timeout(grace, futures_util::future::join_all(stops)).await;
    }
}

/// The proxies the config asks for, each with its client. A channel
/// proxy is built when its endpoint is set (validation requires it where a
/// namespace uses it).
fn build_proxies(config: &GatewayConfig) -> Result<node::Proxies, GatewayError> {
    let build = |settings: herald_proxy::ProxyEndpoint| {
        herald_proxy::Proxy::new(settings, &config.proxy_signer)
            .map_err(|e| GatewayError::Config(e.to_string()))
    };
    let switched = |proxy: &herald_proxy::SwitchedProxy| match proxy.enabled {
        true => build(proxy.endpoint()).map(Some),
        false => Ok(None),
    };
    let set = |settings: &herald_proxy::ProxyEndpoint| match settings.endpoint.is_empty() {
        true => Ok(None),
        false => build(settings.clone()).map(Some),
    };
    let channel = &config.channel_proxy;
    let rpc_used = config.rpc.any_proxied();
    let mut named = std::collections::HashMap::new();
    for proxy in &config.proxies {
        named.insert(proxy.name.clone(), build(proxy.endpoint.clone())?);
    }
    Ok(node::Proxies {
        connect: switched(&config.client.proxy.connect)?,
        refresh: switched(&config.client.proxy.refresh)?,
        subscribe: set(&channel.subscribe)?,
        publish: set(&channel.publish)?,
        sub_refresh: set(&channel.sub_refresh)?,
        rpc_routing: rpc_used.then(|| Arc::new(config.rpc.clone())),
        rpc: match rpc_used {
            true => set(&config.rpc.proxy)?,
            false => None,
        },
        named,
    })
}

/// Builds the node and starts listening. Must run inside an actix system
/// (`#[actix_web::main]`). `make_engine` receives where the engine delivers
/// channel events and control commands.
pub async fn serve<F>(
    config: GatewayConfig,
    make_engine: impl FnOnce(Arc<dyn BrokerEvents>) -> F,
) -> Result<RunningServer, GatewayError>
where
    F: std::future::Future<Output = Result<Engine, BusError>>,
{
    let policy = Arc::new(
        ChannelPolicy::new(&config.channel).map_err(|e| GatewayError::Config(e.to_string()))?,
    );
    let verifier = TokenVerifier::new(&config.client.token, &config.client.subscription_token)
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    let auth = Authenticator::new(verifier, &config.client.introspection)
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    // JWKS sets load in the background; a token arriving before the first
    // set gets a temporary error and is retried by the client.
    auth.start();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hub = Arc::new(Hub::new(cores * 8));
    // One uid for the node everywhere: the engine's registry, `/api/info`,
    // the `node` of emulated connections' connect results.
    let uid = uuid::Uuid::new_v4().to_string();
    let events = Arc::new(NodeEvents::new(hub.clone(), &policy, uid.clone()));
    let engine = make_engine(events.clone()).await?;
    let proxies = build_proxies(&config)?;

    let http = &config.http_server;
    let shared_port = http.internal_port == 0;
    let public = bind(&http.address, http.port)?;
    let internal = if shared_port {
        None
    } else {
        Some(bind(&http.address, http.internal_port)?)
    };
    let public_addr = local_addr(&public)?;
    let internal_addr = match &internal {
        Some(l) => local_addr(l)?,
        None => public_addr,
    };

    let mut client = config.client.clone();
    let demo_tokens = match (&config.demo.enabled, &config.demo_tokens) {
        (false, _) => None,
        (true, Some(tokens)) => {
            let origins = admin::demo::demo_origins(public_addr, http.tls.enabled);
            tracing::info!(?origins, "demo page on /: its own origins may connect");
            client.allowed_origins.extend(origins);
            Some(tokens.clone())
        }
        (true, None) => {
            return Err(GatewayError::Config(
                "demo.enabled: the demo page needs client.token.hmac_secret_key to mint tokens"
                    .to_owned(),
            ))
        }
    };
    let node = Arc::new(Node::new(client, policy, auth, engine, hub, uid, proxies));
    events.link(&node);

    let data = web::Data::new(node.clone());
    // One set of API places and limits for the HTTP and gRPC APIs.
    let api_settings = Arc::new(api::ApiSettings::new(&config.http_api));
    // The console on the listener `admin.listener` names; with a shared
    // port that is one App either way, configured once.
    let console_tls =
        http.tls.enabled && (config.admin.listener == AdminListener::Public || shared_port);
    let console = if config.admin.enabled {
        let console = admin::Console::new(
            &config.admin,
            api_settings.clone(),
            config.proxy_signer.clone(),
            console_tls,
        )
        .map_err(GatewayError::Config)?;
        admin::publish_every(&node, config.admin.stats_interval);
        Some(web::Data::new(console))
    } else {
        None
    };
    let (internal_console, public_console) = match config.admin.listener {
        AdminListener::Internal => (console, None),
        AdminListener::Public => (None, console),
    };
    // The console of the internal listener, when that is the public port.
    let shared_console = internal_console.clone().filter(|_| shared_port);
    let internal_settings = InternalRoutes {
        api: web::Data::from(api_settings.clone()),
        metrics: config.endpoints.prometheus,
        health: config.endpoints.health,
    };
    let body_limits = |close_on_error| {
        web::Data::new(body::BodyLimits {
            timeout: http.request_body_timeout,
            close_on_error,
        })
    };
    let (public_bodies, internal_bodies) = (body_limits(true), body_limits(false));
    if config.endpoints.prometheus {
        // Registers every family now, so they are exported from startup.
        std::sync::LazyLock::force(&metrics::METRICS);
    }
    // One server per listener, so the internal routes (API, metrics, health)
    // are never reachable on the public port unless the ports are shared.
    //
    // The public listener is actix-http with an upgrade service: WebSocket
    // handshakes get the raw stream (ws::upgrade), anything else goes to
    // the actix-web App (404, or the internal routes when ports are shared).
    let public_data = data.clone();
    let public_internal = internal_settings.clone();
    let public_node = node.clone();
    let public_transports = config.transports.clone();
    let uni_ws = &config.transports.uni_websocket;
    let settings = upgrade::UpgradeSettings {
        deflate: config.websocket.compression.then(|| {
            Deflate::new(
                config.websocket.zlib_level(),
                config.websocket.compression_min_size,
            )
        }),
        echo: http.conformance_echo,
        unidirectional: uni_ws.enabled.then(|| {
            (
                Arc::from(uni_ws.handler_prefix.as_str()),
                uni_ws.message_size_limit,
            )
        }),
    };
    if settings.echo {
        tracing::warn!(
            path = crate::ws::handshake::ECHO_PATH,
            "the conformance echo route is on: not for production"
        );
    }
    let (tls, reloading) = if http.tls.enabled {
        let (server_config, cert) = tls::server_config(&http.tls)?;
        cert.watch();
        (Some(server_config), Some(cert))
    } else {
        (None, None)
    };
    watch_sighup(reloading);
    // The same HTTP service over TCP or TLS (listener.rs puts the
    // per-address admission in front); a macro because the two stream types
    // make two service types nobody wants to spell out.
    macro_rules! public_service {
        () => {{
            let mut app = App::new()
                .wrap(actix_web::middleware::from_fn(body::guard))
                .wrap(actix_web::middleware::from_fn(access_log))
                .app_data(public_bodies.clone())
                .app_data(public_data.clone())
                .configure(|cfg| transports::routes(cfg, &public_transports))
                .configure(public_routes);
            if let Some(console) = &public_console {
                app = app.configure(|cfg| admin::routes(cfg, console));
            }
            if let Some(tokens) = &demo_tokens {
                app = app.configure(|cfg| admin::demo::routes(cfg, tokens));
            }
            if shared_port {
                let settings = public_internal.clone();
                app = app.configure(move |cfg| internal_routes(cfg, &settings));
                if let Some(console) = &shared_console {
                    app = app.configure(|cfg| admin::routes(cfg, console));
                }
            }
            let node = public_node.clone();
            let settings = settings.clone();
            HttpService::build()
                // A client that closes its end has gone: its streamed
                // response (HTTP-streaming, SSE) ends at once, and with it
                // the connection's Session.
                .h1_allow_half_closed(false)
                .on_connect_ext(listener::remember_abort)
                .client_request_timeout(REQUEST_HEAD_TIMEOUT)
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .local_addr(public_addr)
                .upgrade(fn_service(move |(req, framed)| {
                    let node = node.clone();
                    let settings = settings.clone();
                    async move {
                        upgrade::upgrade(node, req, framed, settings).await;
                        Ok::<(), actix_http::Error>(())
                    }
                }))
                .finish(map_config(app, |_| AppConfig::default()))
        }};
    }
    let builder = actix_server::Server::build()
        .workers(cores)
        .disable_signals()
        .shutdown_timeout(1);
    let admit_node = node.clone();
    let builder = match tls {
        None => builder.listen("herald-public", public, move || {
            listener::plain(admit_node.clone(), public_service!())
        }),
        Some(server_config) => builder.listen("herald-public", public, move || {
            listener::tls(
                admit_node.clone(),
                server_config.clone(),
                tls::HANDSHAKE_TIMEOUT,
                public_service!(),
            )
        }),
    };
    let public_server = builder
        .map_err(|source| GatewayError::Bind {
            addr: public_addr.to_string(),
            source,
        })?
        .run();
    let internal_server = match internal {
        None => None,
        Some(listener) => Some(
            HttpServer::new(move || {
                let settings = internal_settings.clone();
                let console = internal_console.clone();
                App::new()
                    .wrap(actix_web::middleware::from_fn(body::guard))
                    .wrap(actix_web::middleware::from_fn(access_log))
                    .app_data(internal_bodies.clone())
                    .app_data(data.clone())
                    .configure(move |cfg| {
                        internal_routes(cfg, &settings);
                        if let Some(console) = &console {
                            admin::routes(cfg, console);
                        }
                    })
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)
            .map_err(|source| GatewayError::Bind {
                addr: internal_addr.to_string(),
                source,
            })?
            .run(),
        ),
    };
    let grpc = if config.transports.uni_grpc.enabled {
        Some(grpc::start(node.clone(), &config.transports.uni_grpc)?)
    } else {
        None
    };
    let grpc_api = if config.grpc_api.enabled {
        let key = config.grpc_api.effective_key(&config.http_api);
        Some(grpc_api::start(
            node.clone(),
            api_settings,
            key,
            &config.grpc_api,
        )?)
    } else {
        None
    };
    tracing::info!(%public_addr, %internal_addr, "listening");
    Ok(RunningServer {
        public_addr,
        internal_addr,
        uni_grpc_addr: grpc.as_ref().map(|g| g.addr),
        grpc_api_addr: grpc_api.as_ref().map(|g| g.addr),
        grpc_stops: grpc.into_iter().chain(grpc_api).map(|g| g.stop).collect(),
        servers: std::iter::once(public_server)
            .chain(internal_server)
            .collect(),
        node,
        shutdown_timeout: config.shutdown.timeout,
    })
}

/// SIGHUP reloads what can be reloaded (the TLS certificate, which is also
/// reloaded when its files change). Handled even with nothing to reload, so
/// a SIGHUP meant as "reload" never stops the process.
fn watch_sighup(cert: Option<std::sync::Arc<tls::ReloadingCert>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Registered now, before the node says it is listening, so a SIGHUP
        // right after start is handled too.
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; certificate reload on file change only");
            return;
        };
        actix_web::rt::spawn(async move {
            while hangup.recv().await.is_some() {
                match &cert {
                    Some(cert) => {
                        tracing::info!("SIGHUP: reloading the TLS certificate");
                        cert.reload_now();
                    }
                    None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(cert);
}

/// How long a client may take to send its request head (the WebSocket
/// handshake included).
const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn bind(address: &str, port: u16) -> Result<std::net::TcpListener, GatewayError> {
    std::net::TcpListener::bind((address, port)).map_err(|source| GatewayError::Bind {
        addr: format!("{address}:{port}"),
        source,
    })
}

fn local_addr(listener: &std::net::TcpListener) -> Result<SocketAddr, GatewayError> {
    listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: "listener".into(),
        source,
    })
}
