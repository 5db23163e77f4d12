//! What can stop a node from starting.

use herald_bus::BusError;

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
