//! HTTP on both listeners: the server API (`api.rs`), request bodies
//! (`body.rs`), the routes (`routes.rs`), and the HTTP transports of the
//! client protocol (`transports.rs`, streaming their connections with
//! `stream.rs`, CORS in `cors.rs`).

pub(crate) mod api;
pub(crate) mod body;
pub(crate) mod cors;
pub(crate) mod routes;
pub(crate) mod stream;
pub(crate) mod transports;
