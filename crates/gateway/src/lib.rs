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
    servers: Vec<actix_web::dev::Server>,
}

impl RunningServer {
    /// Resolves when every listener has stopped.
    pub async fn wait(self) -> std::io::Result<()> {
        for result in futures_util::future::join_all(self.servers).await {
            result?;
        }
        Ok(())
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
    let policy =
        ChannelPolicy::new(&config.channel).map_err(|e| GatewayError::Config(e.to_string()))?;
    let verifier = TokenVerifier::new(&config.client.token, &config.client.subscription_token)
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hub = Arc::new(Hub::new(cores * 8));
    let events = Arc::new(NodeEvents::new(hub.clone()));
    let engine = make_engine(events.clone()).await?;
    let node = Arc::new(Node::new(
        config.client.clone(),
        policy,
        verifier,
        engine,
        hub,
    ));
    events.link(&node);

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

    let data = web::Data::new(node.clone());
    // One server per listener, so the internal routes (API, metrics, health)
    // are never reachable on the public port unless the ports are shared.
    let public_data = data.clone();
    let public_server = HttpServer::new(move || {
        let app = App::new()
            .app_data(public_data.clone())
            .configure(public_routes);
        if shared_port {
            app.configure(internal_routes)
        } else {
            app
        }
    })
    .workers(cores)
    .disable_signals()
    .listen(public)
    .map_err(|source| GatewayError::Bind {
        addr: public_addr.to_string(),
        source,
    })?
    .run();
    let internal_server = match internal {
        None => None,
        Some(listener) => Some(
            HttpServer::new(move || App::new().app_data(data.clone()).configure(internal_routes))
                .workers(1)
                .disable_signals()
                .listen(listener)
                .map_err(|source| GatewayError::Bind {
                    addr: internal_addr.to_string(),
                    source,
                })?
                .run(),
        ),
    };
    tracing::info!(%public_addr, %internal_addr, "listening");
    Ok(RunningServer {
        public_addr,
        internal_addr,
        servers: std::iter::once(public_server)
            .chain(internal_server)
            .collect(),
    })
}

/// Routes of the public listener: the client protocol.
fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/connection/websocket").route(web::get().to(ws::websocket)));
}

/// Routes of the internal listener (health; API and metrics come with their issue).
fn internal_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(|| async {
        HttpResponse::Ok()
            .content_type("application/json")
            .body("{}")
    })));
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
