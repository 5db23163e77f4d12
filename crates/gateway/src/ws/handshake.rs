//! The WebSocket handshake's checks (RFC 6455 §4.2), without I/O: what an
//! upgrade request gets (a 101 or a refusal with its HTTP status), and the
//! Origin and `Authorization: Bearer` readings. The upgrade itself (writing
//! the answer, starting the connection) is `conn/upgrade.rs`.

use actix_http::header::{self, HeaderMap};
use actix_http::{Method, Version};
use base64::Engine as _;
use herald_protocol::Format;

use super::offer::{self, Agreed};

pub(crate) const WEBSOCKET_PATH: &str = "/connection/websocket";
const JSON_SUBPROTOCOL: &str = "centrifuge-json";
const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

/// Why a handshake was refused: an HTTP status and a short plain-text body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    MethodNotAllowed,
    NotWebSocket,
    UnsupportedVersion,
    BadKey,
    OriginNotAllowed,
    Draining,
    /// An HTTP/1.0 request (RFC 6455 §4.2.1 requires HTTP/1.1 or higher).
    HttpVersion,
    /// An upgrade request with a body (`Content-Length` above 0 or any
    /// `Transfer-Encoding`): its bytes would be read as WebSocket frames,
    /// and a proxy in front would see another byte stream than herald.
    Body,
}

impl Refusal {
    /// Every refusal (the metric's label set is checked against it).
    #[cfg(test)]
    pub(crate) const ALL: [Refusal; 9] = [
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::NotWebSocket,
        Refusal::UnsupportedVersion,
        Refusal::BadKey,
        Refusal::OriginNotAllowed,
        Refusal::Draining,
        Refusal::HttpVersion,
        Refusal::Body,
    ];

    /// The `reason` label of `herald_client_handshake_refusals_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method",
            Refusal::NotWebSocket => "not_websocket",
            Refusal::UnsupportedVersion => "version",
            Refusal::BadKey => "key",
            Refusal::OriginNotAllowed => "origin",
            Refusal::Draining => "draining",
            Refusal::HttpVersion => "http_version",
            Refusal::Body => "body",
        }
    }

    pub(crate) fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::NotFound => (404, "Not Found"),
            Refusal::MethodNotAllowed => (405, "Method Not Allowed"),
            Refusal::NotWebSocket | Refusal::BadKey | Refusal::HttpVersion | Refusal::Body => {
                (400, "Bad Request")
            }
            Refusal::UnsupportedVersion => (426, "Upgrade Required"),
            Refusal::OriginNotAllowed => (403, "Forbidden"),
            Refusal::Draining => (503, "Service Unavailable"),
        }
    }

    fn body(self) -> &'static str {
        match self {
            Refusal::NotFound => "not found",
            Refusal::MethodNotAllowed => "a WebSocket handshake is a GET",
            Refusal::NotWebSocket => "expected Upgrade: websocket",
            Refusal::UnsupportedVersion => "only WebSocket version 13 is supported",
            Refusal::BadKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            Refusal::OriginNotAllowed => "origin not allowed",
            Refusal::Draining => "shutting down",
            Refusal::HttpVersion => "a WebSocket handshake needs HTTP/1.1",
            Refusal::Body => "a WebSocket handshake has no body",
        }
    }

    pub(crate) fn response(self) -> Vec<u8> {
        let (code, phrase) = self.status();
        let body = self.body();
        let extra = match self {
            Refusal::UnsupportedVersion => "sec-websocket-version: 13\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {code} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// An accepted handshake: what the 101 response carries, and the format
/// of the client protocol the connection speaks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    accept: [u8; 28],
    protocol: Option<&'static str>,
    format: Format,
    /// The permessage-deflate offer taken, when compression is on.
    deflate: Option<Agreed>,
}

impl Accepted {
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Takes the client's first permessage-deflate offer herald can honour
    /// (`ws/offer.rs`); call it only when `websocket.compression` is on.
    /// Offers it cannot honour are declined, the upgrade goes on.
    pub(crate) fn negotiate_deflate(&mut self, headers: &HeaderMap) {
        self.deflate = offer::negotiate(headers);
    }

    /// The offer taken, if any.
    pub(crate) fn deflate(&self) -> Option<Agreed> {
        self.deflate
    }

    pub(crate) fn response(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
        );
        out.extend_from_slice(&self.accept);
        if let Some(protocol) = self.protocol {
            out.extend_from_slice(b"\r\nsec-websocket-protocol: ");
            out.extend_from_slice(protocol.as_bytes());
        }
        if let Some(deflate) = &self.deflate {
            out.extend_from_slice(b"\r\nsec-websocket-extensions: ");
            out.extend_from_slice(deflate.response().as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

/// Where an upgrade request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The client protocol.
    Client,
    /// The conformance echo (`http_server.conformance_echo`): every message
    /// comes back as it came, for the Autobahn cases.
    Echo,
    /// `uni_websocket`: the server only pushes.
    Unidirectional,
}

/// The route of `path`, None for a path nothing serves. `uni_path` is the
/// `uni_websocket` endpoint when it is enabled.
pub(crate) fn route(path: &str, echo_enabled: bool, uni_path: Option<&str>) -> Option<Route> {
    match path {
        WEBSOCKET_PATH => Some(Route::Client),
        ECHO_PATH if echo_enabled => Some(Route::Echo),
        _ if uni_path == Some(path) => Some(Route::Unidirectional),
        _ => None,
    }
}

pub(crate) const ECHO_PATH: &str = "/conformance/echo";

/// The checks of an upgrade request, in the order a client would want to
/// hear about them, and the format it asks for (`query` is the request's
/// query string, without `?`).
pub(crate) fn handshake(
    method: &Method,
    version: Version,
    route: Option<Route>,
    headers: &HeaderMap,
    query: &str,
    allowed_origins: &[String],
    draining: bool,
) -> Result<Accepted, Refusal> {
    if route.is_none() {
        return Err(Refusal::NotFound);
    }
    if method != Method::GET {
        return Err(Refusal::MethodNotAllowed);
    }
    if version < Version::HTTP_11 {
        return Err(Refusal::HttpVersion);
    }
    if has_body(headers) {
        return Err(Refusal::Body);
    }
    if draining {
        return Err(Refusal::Draining);
    }
    let upgrade_to_websocket = headers
        .get_all(header::UPGRADE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
    if !upgrade_to_websocket {
        return Err(Refusal::NotWebSocket);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::UnsupportedVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
        .ok_or(Refusal::BadKey)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| Refusal::BadKey)?;
    if decoded.len() != 16 {
        return Err(Refusal::BadKey);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(allowed_origins, origin) {
            return Err(Refusal::OriginNotAllowed);
        }
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|p| !p.is_empty())
        .collect();
    // The client's first offer herald speaks (the client's order, as
    // Centrifugo chooses), echoed back.
    let protocol = offered.iter().find_map(|p| match *p {
        JSON_SUBPROTOCOL => Some(JSON_SUBPROTOCOL),
        PROTOBUF_SUBPROTOCOL => Some(PROTOBUF_SUBPROTOCOL),
        _ => None,
    });
    let format = if protocol == Some(PROTOBUF_SUBPROTOCOL) || query_asks_protobuf(query) {
        Format::Protobuf
    } else {
        Format::Json
    };
    Ok(Accepted {
        accept: actix_http::ws::hash_key(key),
        protocol,
        format,
        deflate: None,
    })
}

/// `format=protobuf`, or the legacy `cf_protocol=protobuf` of SDKs older
/// than subprotocol negotiation.
fn query_asks_protobuf(query: &str) -> bool {
    query.split('&').any(|pair| {
        matches!(
            pair.split_once('='),
            Some(("format" | "cf_protocol", "protobuf"))
        )
    })
}

/// Whether the request announces a body: any `Transfer-Encoding`, or a
/// `Content-Length` other than 0 (an unreadable one counts as a body).
pub(crate) fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .any(|v| v.as_bytes().trim_ascii() != b"0")
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1;
/// the scheme is case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
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
    use actix_http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn bearer_token_from_the_upgrade() {
        type Headers = &'static [(&'static str, &'static str)];
        let table: &[(Headers, Option<&str>)] = &[
            (
                &[("authorization", "Bearer abc.def.ghi")],
                Some("abc.def.ghi"),
            ),
            (&[("authorization", "bearer  opaque ")], Some("opaque")),
            (&[("authorization", "Basic dXNlcjpwdw==")], None),
            (&[("authorization", "Bearer")], None),
            (&[("authorization", "Bearer ")], None),
            (&[], None),
        ];
        for (pairs, want) in table {
            assert_eq!(bearer_token(&headers(pairs)).as_deref(), *want, "{pairs:?}");
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn check(extra: &[(&'static str, &'static str)], skip: &str) -> Result<Accepted, Refusal> {
        let mut pairs: Vec<(&'static str, &'static str)> =
            GOOD.iter().copied().filter(|(n, _)| *n != skip).collect();
        pairs.extend_from_slice(extra);
        handshake(
            &Method::GET,
            Version::HTTP_11,
            Some(Route::Client),
            &headers(&pairs),
            "",
            &["https://app.example.com".to_string()],
            false,
        )
    }

    #[test]
    fn accepts_a_valid_handshake_with_the_rfc_sample_key() {
        let accepted = check(&[], "").unwrap();
        // RFC 6455 §1.3.
        assert_eq!(&accepted.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.protocol, None);
        assert_eq!(accepted.format, Format::Json);
        let response = String::from_utf8(accepted.response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        assert!(!response.contains("sec-websocket-protocol"));
        assert!(!response.contains("sec-websocket-extensions"));
    }

    #[test]
    fn deflate_is_answered_only_when_negotiated() {
        let offer = [(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        )];
        // Compression off: the offer is never looked at.
        let off = check(&offer, "").unwrap();
        assert!(!String::from_utf8(off.response())
            .unwrap()
            .contains("extensions"));
        let mut on = check(&offer, "").unwrap();
        on.negotiate_deflate(&headers(&offer));
        assert_eq!(on.deflate().map(|a| a.window_bits), Some(15));
        let response = String::from_utf8(on.response()).unwrap();
        assert!(response.contains(
            "\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ));
        assert!(response.ends_with("\r\n\r\n"));
        // An offer herald declines leaves the upgrade as it was.
        let bad = [("sec-websocket-extensions", "permessage-deflate; bogus")];
        let mut declined = check(&bad, "").unwrap();
        declined.negotiate_deflate(&headers(&bad));
        assert_eq!(declined.deflate(), None);
        assert!(!String::from_utf8(declined.response())
            .unwrap()
            .contains("extensions"));
    }

    #[test]
    fn subprotocols() {
        let json = check(&[("sec-websocket-protocol", "centrifuge-json")], "").unwrap();
        assert_eq!(
            (json.protocol, json.format),
            (Some(JSON_SUBPROTOCOL), Format::Json)
        );
        let protobuf = check(&[("sec-websocket-protocol", "centrifuge-protobuf")], "").unwrap();
        assert_eq!(
            (protobuf.protocol, protobuf.format),
            (Some(PROTOBUF_SUBPROTOCOL), Format::Protobuf)
        );
        let response = String::from_utf8(protobuf.response()).unwrap();
        assert!(response.contains("\r\nsec-websocket-protocol: centrifuge-protobuf\r\n"));
        // The client's first offer that herald speaks wins.
        let both = check(
            &[(
                "sec-websocket-protocol",
                "mqtt, centrifuge-protobuf, centrifuge-json",
            )],
            "",
        )
        .unwrap();
        assert_eq!(both.protocol, Some(PROTOBUF_SUBPROTOCOL));
        let both = check(
            &[
                ("sec-websocket-protocol", "centrifuge-json"),
                ("sec-websocket-protocol", "centrifuge-protobuf"),
            ],
            "",
        )
        .unwrap();
        assert_eq!(
            (both.protocol, both.format),
            (Some(JSON_SUBPROTOCOL), Format::Json)
        );
        // An empty header offers nothing: nothing is echoed.
        let empty = check(&[("sec-websocket-protocol", "")], "").unwrap();
        assert_eq!(empty.protocol, None);
        let other = check(&[("sec-websocket-protocol", "mqtt")], "").unwrap();
        assert_eq!(other.protocol, None);
    }

    #[test]
    fn the_query_can_ask_for_protobuf() {
        let with_query = |query: &str| {
            handshake(
                &Method::GET,
                Version::HTTP_11,
                Some(Route::Client),
                &headers(GOOD),
                query,
                &[],
                false,
            )
            .unwrap()
        };
        for query in [
            "format=protobuf",
            "cf_protocol=protobuf",
            "a=1&format=protobuf&b",
        ] {
            let accepted = with_query(query);
            assert_eq!(
                (accepted.format, accepted.protocol),
                (Format::Protobuf, None),
                "{query}"
            );
        }
        for query in [
            "",
            "format=json",
            "format=protobufx",
            "xformat=protobuf",
            "format",
        ] {
            assert_eq!(with_query(query).format, Format::Json, "{query}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            check(&[], "sec-websocket-version"),
            Err(Refusal::UnsupportedVersion)
        );
        assert_eq!(
            check(&[("sec-websocket-version", "8")], "sec-websocket-version"),
            Err(Refusal::UnsupportedVersion)
        );
        assert_eq!(check(&[], "sec-websocket-key"), Err(Refusal::BadKey));
        assert_eq!(
            check(&[("sec-websocket-key", "c2hvcnQ=")], "sec-websocket-key"),
            Err(Refusal::BadKey)
        );
        assert_eq!(
            check(
                &[("sec-websocket-key", "!!!not base64!!!")],
                "sec-websocket-key"
            ),
            Err(Refusal::BadKey)
        );
        assert_eq!(check(&[], "upgrade"), Err(Refusal::NotWebSocket));
        assert_eq!(
            check(&[("origin", "https://evil.example.org")], ""),
            Err(Refusal::OriginNotAllowed)
        );
        assert!(check(&[("origin", "https://app.example.com")], "").is_ok());
        let h = headers(GOOD);
        let no = |m: &Method, p: &str, d: bool| {
            handshake(m, Version::HTTP_11, route(p, false, None), &h, "", &[], d)
        };
        assert_eq!(no(&Method::GET, "/other", false), Err(Refusal::NotFound));
        assert_eq!(no(&Method::GET, ECHO_PATH, false), Err(Refusal::NotFound));
        assert_eq!(route(ECHO_PATH, true, None), Some(Route::Echo));
        assert_eq!(
            no(&Method::POST, WEBSOCKET_PATH, false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            no(&Method::GET, WEBSOCKET_PATH, true),
            Err(Refusal::Draining)
        );
        // RFC 6455 §4.2.1: HTTP/1.1 or higher.
        let old = |v: Version| handshake(&Method::GET, v, Some(Route::Client), &h, "", &[], false);
        assert_eq!(old(Version::HTTP_10), Err(Refusal::HttpVersion));
        assert_eq!(old(Version::HTTP_09), Err(Refusal::HttpVersion));
        assert!(old(Version::HTTP_11).is_ok());
        // A body would be read as frames.
        assert_eq!(check(&[("content-length", "5")], ""), Err(Refusal::Body));
        assert_eq!(check(&[("content-length", "x")], ""), Err(Refusal::Body));
        assert_eq!(
            check(&[("transfer-encoding", "chunked")], ""),
            Err(Refusal::Body)
        );
        assert!(check(&[("content-length", "0")], "").is_ok());
        let response = String::from_utf8(Refusal::UnsupportedVersion.response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("\r\nsec-websocket-version: 13\r\n"));
        assert!(response.contains("content-length: 38\r\n"));
    }

    #[test]
    fn every_refusal_label_is_pre_initialised() {
        for refusal in Refusal::ALL {
            assert!(
                crate::metrics::HANDSHAKE_REFUSAL_REASONS.contains(&refusal.label()),
                "{refusal:?}"
            );
        }
    }

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
