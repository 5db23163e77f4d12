//! The routes of both listeners' Apps: what a non-upgrade request on the
//! public port reaches, and the internal routes (server API, metrics,
//! health, readiness).

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use super::api;
use crate::metrics;
use crate::node::Node;
use crate::ws::handshake::WEBSOCKET_PATH;

/// Routes of the public listener's App. WebSocket handshakes never reach
/// it (they go to `ws::upgrade`); a GET without `Connection: upgrade` does.
pub(crate) fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(WEBSOCKET_PATH).to(|| async {
        HttpResponse::BadRequest().body("expected a WebSocket handshake (Connection: upgrade)")
    }));
}

#[derive(Clone)]
pub(crate) struct InternalRoutes {
    pub(crate) api: web::Data<api::ApiSettings>,
    pub(crate) metrics: bool,
    pub(crate) health: bool,
}

/// Routes of the internal listener: server API, metrics, health, readiness.
pub(crate) fn internal_routes(cfg: &mut web::ServiceConfig, settings: &InternalRoutes) {
    cfg.app_data(settings.api.clone())
        .service(web::resource("/api").to(api::legacy))
        .service(web::resource("/api/{method}").to(api::handle));
    if settings.health {
        cfg.service(web::resource("/health").route(web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("application/json")
                .body("{}")
        })))
        .service(web::resource("/ready").route(web::get().to(ready)));
    }
    if settings.metrics {
        cfg.service(web::resource("/metrics").route(web::get().to(
            |node: web::Data<Arc<Node>>| async move {
                HttpResponse::Ok()
                    .content_type("text/plain; version=0.0.4; charset=utf-8")
                    .body(metrics::METRICS.render(&node.figures()))
            },
        )));
    }
}

/// 200 `{}` when the engine is reachable and the node is not draining, else
/// 503 with the reason.
async fn ready(node: web::Data<Arc<Node>>) -> HttpResponse {
    let reason = if node.is_draining() {
        Some("draining")
    } else if !node.engine.broker.healthy() {
        Some("engine unreachable")
    } else {
        None
    };
    match reason {
        None => HttpResponse::Ok()
            .content_type("application/json")
            .body("{}"),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(serde_json::json!({ "reason": reason }).to_string()),
    }
}
