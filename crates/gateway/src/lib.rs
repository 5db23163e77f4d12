//! The actix-web side of herald: per-connection Session actors, the Hub that
//! fans publications out to local sessions, and the HTTP endpoints.

pub mod config;
mod connection;
mod hub;
mod node;
mod outbox;
mod session;
mod subscribe;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use herald_auth::{ChannelPolicy, TokenVerifier};
use herald_bus::{BrokerEvents, BusError, Engine};

use crate::hub::Hub;
use crate::node::{Node, NodeEvents};

pub use config::{
    ClientConfig, GatewayConfig, HttpApiConfig, HttpServerConfig, IntrospectionConfig,
    ShutdownConfig, TlsConfig,
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A configuration value the gateway cannot run with; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error("engine: {0}")]
    Engine(#[from] BusError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running node.
pub struct RunningServer {
    /// Where the WebSocket endpoint listens.
    pub public_addr: SocketAddr,
    /// Where API, metrics and health listen (same as public when internal_port = 0).
    pub internal_addr: SocketAddr,
    server: actix_web::dev::Server,
}

impl RunningServer {
    /// Resolves when the server has stopped.
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await
    }
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
    let policy = ChannelPolicy::new(&config.channel).map_err(|e| GatewayError::Config(e.to_string()))?;
    let verifier = TokenVerifier::new(&config.client.token, &config.client.subscription_token)
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hub = Arc::new(Hub::new(cores * 8));
    let events = Arc::new(NodeEvents::new(hub.clone()));
    let engine = make_engine(events.clone()).await?;
    let node = Arc::new(Node::new(config.client.clone(), policy, verifier, engine, hub));
    events.link(&node);

    let http = &config.http_server;
    let shared_port = http.internal_port == 0;
    let public = bind(&http.address, http.port)?;
    let internal = if shared_port { None } else { Some(bind(&http.address, http.internal_port)?) };
    let public_addr = local_addr(&public)?;
    let internal_addr = match &internal {
        Some(l) => local_addr(l)?,
        None => public_addr,
    };

    let data = web::Data::new(node.clone());
    let public_port = public_addr.port();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(web::resource("/connection/websocket").route(web::get().to(ws::websocket)))
            .configure(|cfg| internal_routes(cfg, public_port, shared_port))
    })
    .workers(cores)
    .disable_signals()
    .listen(public)
    .map_err(|source| GatewayError::Bind { addr: public_addr.to_string(), source })?;
    if let Some(listener) = internal {
        server = server
            .listen(listener)
            .map_err(|source| GatewayError::Bind { addr: internal_addr.to_string(), source })?;
    }
    tracing::info!(%public_addr, %internal_addr, "listening");
    Ok(RunningServer {
        public_addr,
        internal_addr,
        server: server.run(),
    })
}

/// Routes of the internal listener (health; API and metrics come with their issue).
fn internal_routes(cfg: &mut web::ServiceConfig, public_port: u16, shared: bool) {
    let guard = move |ctx: &actix_web::guard::GuardContext<'_>| {
        shared || ctx.head().uri.port_u16() != Some(public_port)
    };
    cfg.service(
        web::resource("/health")
            .guard(actix_web::guard::fn_guard(guard))
            .route(web::get().to(|| async { HttpResponse::Ok().content_type("application/json").body("{}") })),
    );
}

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
