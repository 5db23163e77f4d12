//! HTTP on both listeners: the server API (`api.rs`), request bodies
//! (`body.rs`) and the routes (`routes.rs`).

pub(crate) mod api;
pub(crate) mod body;
pub(crate) mod routes;
