//! The development profile's chat page (`demo.enabled`): `/` and
//! `/demo/<file>` on the public listener, and `POST /demo/token`, which
//! mints a connection token for any well-formed user name. That is the
//! point of a demo and the reason it is for the development profile only:
//! whoever reaches the page can connect as anyone. The page speaks the
//! client protocol to `/connection/websocket` of its own origin, which the
//! node allows while the demo is on (`demo_origins`).

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::assets;
use crate::config::DemoTokens;

/// Longest user name the demo mints a token for.
const MAX_USER: usize = 64;

pub(crate) fn routes(cfg: &mut web::ServiceConfig, tokens: &DemoTokens) {
    cfg.app_data(web::Data::new(tokens.clone()))
        .service(web::resource("/").route(web::get().to(index)))
        .service(web::resource("/demo/token").route(web::post().to(token)))
        .service(web::resource("/demo/{file}").route(web::get().to(asset)));
}

/// The origins of the demo page served on `addr`: the node lets its own
/// page connect (`client.allowed_origins` is otherwise empty in the
/// development profile, which refuses every browser).
pub(crate) fn demo_origins(addr: SocketAddr, tls: bool) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    let port = addr.port();
    let ip = addr.ip();
    let mut hosts = Vec::new();
    if ip.is_loopback() || ip.is_unspecified() {
        hosts.push("localhost".to_owned());
        hosts.push("127.0.0.1".to_owned());
        hosts.push("[::1]".to_owned());
    }
    if !ip.is_unspecified() {
        let host = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
        .into_iter()
        .map(|host| format!("{scheme}://{host}:{port}"))
        .collect()
}

async fn index() -> HttpResponse {
    assets::serve(assets::DEMO, "index.html")
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    assets::serve(assets::DEMO, &file)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
}

fn refusal(status: StatusCode, reason: &str, message: &str) -> HttpResponse {
    assets::secure(&mut HttpResponse::build(status))
        .content_type("application/json")
        .body(serde_json::json!({ "reason": reason, "message": message }).to_string())
}

/// `POST /demo/token` `{"user":"alice"}` → `{"token","user"}`.
async fn token(req: HttpRequest, body: web::Bytes, tokens: web::Data<DemoTokens>) -> HttpResponse {
    if !super::same_origin(&req) {
        return refusal(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "only the demo page itself gets tokens",
        );
    }
    if !super::is_json(&req) {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send Content-Type: application/json",
        );
    }
    let Ok(request) = serde_json::from_slice::<TokenRequest>(&body) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send {\"user\": \"name\"}",
        );
    };
    let user = request.user;
    let well_formed = !user.is_empty()
        && user.len() <= MAX_USER
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !well_formed {
        return refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a user name is 1 to 64 letters, digits, '_', '.' or '-'",
        );
    }
    match (tokens.0)(&user) {
        Ok(token) => assets::secure(&mut HttpResponse::Ok())
            .content_type("application/json")
            .body(serde_json::json!({ "token": token, "user": user }).to_string()),
        Err(why) => {
            tracing::error!(error = %why, "demo: cannot mint a token");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot mint a token",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_allows_its_own_origins_only() {
        let local = demo_origins("127.0.0.1:8000".parse().unwrap(), false);
        assert_eq!(
            local,
            [
                "http://localhost:8000",
                "http://127.0.0.1:8000",
                "http://[::1]:8000"
            ]
        );
        let lan = demo_origins("10.1.2.3:443".parse().unwrap(), true);
        assert_eq!(lan, ["https://10.1.2.3:443"]);
    }
}
