//! `GET /connection/websocket`: the handshake checks that belong to the
//! client protocol, then one Session actor and one writer task per connection.

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_web::{http::header, web, HttpRequest, HttpResponse};

use crate::node::Node;
use crate::outbox::Outbox;
use crate::session::{write_loop, Session};

const JSON_SUBPROTOCOL: &str = "centrifuge-json";
const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

pub(crate) async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    node: web::Data<Arc<Node>>,
) -> Result<HttpResponse, actix_web::Error> {
    if node.is_draining() {
        return Ok(HttpResponse::ServiceUnavailable().body("shutting down"));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(&node.client.allowed_origins, origin) {
            tracing::debug!("handshake refused: origin not allowed");
            return Ok(HttpResponse::Forbidden().body("origin not allowed"));
        }
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.is_empty() && offered.iter().all(|p| p == PROTOBUF_SUBPROTOCOL) {
        return Ok(HttpResponse::BadRequest().body(
            "herald speaks the JSON client protocol only; offer centrifuge-json or no subprotocol",
        ));
    }
    let (response, ws, stream) = actix_ws::handle_with_protocols(&req, body, &[JSON_SUBPROTOCOL])?;
    let limit = node.client.message_size_limit;
    let stream = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    let outbox = Arc::new(Outbox::new(node.client.queue_max_size));
    actix_web::rt::spawn(write_loop(outbox.clone(), ws.clone()));
    let node = node.get_ref().clone();
    Session::create(move |ctx| {
        ctx.add_stream(stream);
        Session::new(node, outbox, ws)
    });
    Ok(response)
}

/// Glob match of an Origin against the allow-list: `*` matches any run of
/// characters. An empty list allows no browser origin at all.
pub(crate) fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    patterns
        .iter()
        .any(|p| glob_match(p.as_bytes(), origin.as_bytes()))
}

pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] != b'*' && pattern[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_globs() {
        let list = vec![
            "https://*.example.com".to_string(),
            "http://localhost:3000".to_string(),
        ];
        assert!(origin_allowed(&list, "https://app.example.com"));
        assert!(origin_allowed(&list, "http://localhost:3000"));
        assert!(!origin_allowed(&list, "https://example.com.evil.org"));
        assert!(!origin_allowed(&list, "http://localhost:3001"));
        assert!(!origin_allowed(&[], "http://localhost:3000"));
        assert!(origin_allowed(&["*".to_string()], "https://anything"));
    }
}
