//! The routes of both listeners' Apps: what a non-upgrade request on the
//! public port reaches, and the internal routes (server API, metrics,
//! health, readiness).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use herald_bus::ClockReading;

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

/// 200 `{}` when the engine is reachable, the node is not draining and its
/// clock is within the signed bus's envelope window, else 503 with the reason.
async fn ready(node: web::Data<Arc<Node>>) -> HttpResponse {
    let broker = &node.engine.broker;
    let reason = unready_reason(node.is_draining(), broker.healthy(), broker.clock());
    match reason {
        None => HttpResponse::Ok()
            .content_type("application/json")
            .body("{}"),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(serde_json::json!({ "reason": reason }).to_string()),
    }
}

/// Why the node is not ready, if it is not. A clock past the envelope window
/// (only while envelopes are checked) means this node and the nodes in step
/// refuse each other's envelopes: its clients would get publications only by
/// recovering them, so new ones are better sent elsewhere.
fn unready_reason(
    draining: bool,
    engine_healthy: bool,
    clock: Option<ClockReading>,
) -> Option<&'static str> {
    if draining {
        Some("draining")
    } else if !engine_healthy {
        Some("engine unreachable")
    } else if clock.is_some_and(|c| c.outside_window()) {
        Some("clock skew")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_outside_the_envelope_window_makes_the_node_unready() {
        let clock = |skew_ms, window_ms| Some(ClockReading { skew_ms, window_ms });
        assert_eq!(unready_reason(false, true, None), None);
        assert_eq!(
            unready_reason(false, true, clock(20_000, Some(30_000))),
            None
        );
        assert_eq!(
            unready_reason(false, true, clock(40_000, Some(30_000))),
            Some("clock skew")
        );
        assert_eq!(
            unready_reason(false, true, clock(-40_000, Some(30_000))),
            Some("clock skew")
        );
        // Without bus keys nothing is refused: ready.
        assert_eq!(unready_reason(false, true, clock(40_000, None)), None);
        // The other reasons come first.
        assert_eq!(
            unready_reason(true, false, clock(40_000, Some(30_000))),
            Some("draining")
        );
        assert_eq!(
            unready_reason(false, false, clock(40_000, Some(30_000))),
            Some("engine unreachable")
        );
    }
}
