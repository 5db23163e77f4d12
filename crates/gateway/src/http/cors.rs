//! CORS for the HTTP transports (HTTP-streaming, SSE, `/emulation`, the
//! unidirectional ones): the same `client.allowed_origins` list as the
//! WebSocket Origin check. A request without `Origin` (not from a browser)
//! passes; an allowed origin is echoed with credentials allowed; any other
//! origin is refused with 403, which is stricter than Centrifugo (it leaves
//! the refusal to the browser) — docs/security.md says why.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

use crate::ws::handshake::origin_allowed;

/// What a request's `Origin` allows.
#[derive(Debug, Clone)]
pub(crate) enum Cors {
    /// No `Origin` header: not a browser's cross-origin request.
    NoOrigin,
    /// An allowed origin, echoed in the response.
    Allowed(HeaderValue),
}

/// An origin `client.allowed_origins` does not allow.
#[derive(Debug)]
pub(crate) struct Forbidden;

impl Forbidden {
    /// The 403 it is answered with.
    pub(crate) fn response(&self) -> HttpResponse {
        HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .body("origin not allowed\n")
    }
}

/// Checks the request's origin.
pub(crate) fn check(req: &HttpRequest, allowed_origins: &[String]) -> Result<Cors, Forbidden> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(Cors::NoOrigin);
    };
    match origin.to_str() {
        Ok(text) if origin_allowed(allowed_origins, text) => Ok(Cors::Allowed(origin.clone())),
        _ => Err(Forbidden),
    }
}

impl Cors {
    /// Adds the CORS headers of an allowed origin to a response.
    pub(crate) fn apply(&self, response: &mut HttpResponseBuilder) {
        if let Cors::Allowed(origin) = self {
            response
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
                .insert_header((header::VARY, "Origin"));
        }
    }

    /// The answer to a preflight `OPTIONS`: 204 with the methods the
    /// endpoint takes and the headers the browser asked to send.
    pub(crate) fn preflight(&self, req: &HttpRequest, methods: &'static str) -> HttpResponse {
        let mut response = HttpResponse::NoContent();
        self.apply(&mut response);
        response
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, methods))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "300"));
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            response.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()));
        }
        response.finish()
    }
}
