//! The web console at `admin.path` (docs/operations.md, "The web console")
//! and the development profile's demo page (`demo.rs`). HTTP in and out
//! here; what an action does is the server API's `call` (`http/api.rs`):
//! the console has no second implementation of any method.
//!
//! Every request passes, in this order: the Origin check (a page of
//! another origin is refused), the session cookie (signed, expiring,
//! `HttpOnly`, `SameSite=Strict`), the CSRF token of the session for
//! anything that changes state, `Content-Type: application/json`, the
//! body limit, then the method. Each refusal has a reason, a status and a
//! metric (`herald_admin_requests_refused_total`); each login and action an
//! audit line (target `herald::audit`: who, what, on which channel or user,
//! from where, with what outcome; never a payload, password or token).

pub(crate) mod assets;
pub(crate) mod demo;
pub mod password;
mod session;
mod stats;
mod throttle;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use herald_protocol::api::{ApiEmpty, ApiReply};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use self::session::{Refusal, Session, Sessions, COOKIE};
use self::throttle::LoginThrottle;
use crate::config::AdminConfig;
use crate::http::api::{self, ApiSettings};
use crate::metrics::METRICS;
use crate::node::{unix_now, Node};

pub(crate) use self::stats::publish_every;

/// Largest console request body (an action's parameters, a login).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Server API methods the console may run.
pub(crate) use crate::metrics::ADMIN_METHODS as METHODS;

/// How long a session cookie outlives its session (see `login`).
const COOKIE_GRACE_SECS: u64 = 24 * 3600;

/// Console actions per second on one node, all sessions together: far
/// above what people click, far below what a runaway script would send.
const ACTIONS_PER_SECOND: u32 = 50;

/// Password checks (Argon2, ~20 ms and 19 MiB each) at once; a login that
/// waits longer than [`VERIFY_WAIT`] for one is answered 503.
const CONCURRENT_VERIFICATIONS: usize = 2;
const VERIFY_WAIT: Duration = Duration::from_secs(2);

/// What every console route shares.
pub(crate) struct Console {
    path: String,
    insecure: bool,
    token_auth: bool,
    password: Option<String>,
    sessions: Sessions,
    throttle: LoginThrottle,
    verifying: Arc<Semaphore>,
    api: Arc<ApiSettings>,
    proxy_signer: herald_proxy::ProxySigner,
    /// The listener serving the console speaks TLS: cookies are `Secure`.
    tls: bool,
    /// (unix second, actions in it).
    actions: Mutex<(u64, u32)>,
}

impl Console {
    pub(crate) fn new(
        config: &AdminConfig,
        api: Arc<ApiSettings>,
        proxy_signer: herald_proxy::ProxySigner,
        tls: bool,
    ) -> Result<Self, String> {
        if let Some(problem) = config.problem() {
            return Err(problem);
        }
        if !config.password.is_empty() {
            password::check_hash(&config.password)
                .map_err(|why| format!("admin.password: {why}"))?;
        }
        if config.insecure {
            tracing::warn!(
                path = %config.path,
                "admin.insecure: the web console needs no login. Development only: anyone who reaches {} runs the server API",
                config.path
            );
        }
        Ok(Self {
            path: config.path.clone(),
            insecure: config.insecure,
            token_auth: config.token_auth,
            password: (!config.password.is_empty()).then(|| config.password.clone()),
            sessions: Sessions::new(
                (!config.secret.is_empty()).then_some(config.secret.as_bytes()),
                config.session_ttl.as_secs(),
            ),
            throttle: LoginThrottle::default(),
            verifying: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
            api,
            proxy_signer,
            tls,
            actions: Mutex::new((0, 0)),
        })
    }
}

/// Registers the console's routes under its path.
pub(crate) fn routes(cfg: &mut web::ServiceConfig, console: &web::Data<Console>) {
    let p = console.path.clone();
    cfg.app_data(console.clone())
        .service(web::resource(p.clone()).route(web::get().to(to_index)))
        .service(web::resource(format!("{p}/")).route(web::get().to(index)))
        .service(web::resource(format!("{p}/session")).route(web::get().to(session)))
        .service(web::resource(format!("{p}/login")).route(web::post().to(login)))
        .service(web::resource(format!("{p}/logout")).route(web::post().to(logout)))
        .service(web::resource(format!("{p}/api/{{method}}")).route(web::post().to(action)))
        .service(web::resource(format!("{p}/keys")).route(web::get().to(keys)))
        .service(web::resource(format!("{p}/stream")).route(web::get().to(stream)))
        .service(web::resource(format!("{p}/{{file}}")).route(web::get().to(asset)));
}

/// A refusal: status, `{"reason","message"}`, counted.
fn refuse(status: StatusCode, reason: &'static str, message: &str) -> HttpResponse {
    METRICS.admin_refused.with_label_values(&[reason]).inc();
    json_response(
        status,
        &serde_json::json!({ "reason": reason, "message": message }),
    )
}

fn json_response(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    assets::secure(&mut HttpResponse::build(status))
        .content_type("application/json")
        .body(serde_json::to_string(body).expect("console answers always serialize"))
}

fn remote(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// Whether the request comes from a page of this origin (or from no page:
/// a request without `Origin` is not a browser's cross-site one). The
/// scheme is not compared: behind a TLS-terminating proxy the node sees
/// plain HTTP for an `https://` page.
pub(crate) fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

pub(crate) fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn cookie_value(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

impl Console {
    /// The session of the request's cookie, or the 401 to answer.
    fn authenticate(&self, req: &HttpRequest) -> Result<Session, Box<HttpResponse>> {
        let now = unix_now();
        if self.insecure {
            return Ok(Session {
                user: "insecure".to_owned(),
                id: "insecure".to_owned(),
                expires_at: now + self.sessions.ttl_secs(),
            });
        }
        let Some(cookie) = cookie_value(req) else {
            return Err(Box::new(self.unauthorized("unauthorized", "not logged in")));
        };
        self.sessions.open(&cookie, now).map_err(|refusal| {
            Box::new(match refusal {
                Refusal::Expired => {
                    self.unauthorized("session_expired", "the session expired; log in again")
                }
                Refusal::Invalid | Refusal::Ended => {
                    self.unauthorized("unauthorized", "not logged in")
                }
            })
        })
    }

    fn unauthorized(&self, reason: &'static str, message: &str) -> HttpResponse {
        METRICS.admin_refused.with_label_values(&[reason]).inc();
        json_response(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({
                "reason": reason,
                "message": message,
                "password_auth": self.password.is_some(),
                "token_auth": self.token_auth,
                "insecure": self.insecure,
            }),
        )
    }

    /// Origin, session and CSRF token: what a state-changing request needs.
    fn authorize_change(&self, req: &HttpRequest) -> Result<Session, Box<HttpResponse>> {
        if !same_origin(req) {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "a page of another origin cannot use the console",
            )));
        }
        let session = self.authenticate(req)?;
        let offered = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.sessions.csrf_matches(&session, offered) {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token header",
            )));
        }
        if !is_json(req) {
            return Err(Box::new(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                "send Content-Type: application/json",
            )));
        }
        Ok(session)
    }

    fn set_cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!(
            "{COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
            self.path
        )
    }

    fn session_view(&self, session: &Session, node: &Node) -> serde_json::Value {
        serde_json::json!({
            "user": session.user,
            "csrf": self.sessions.csrf(session),
            "expires_at": session.expires_at.saturating_mul(1000),
            "insecure": self.insecure,
            "token_auth": self.token_auth,
            "password_auth": self.password.is_some(),
            "node": { "uid": node.uid, "name": node.info().name, "version": node.version },
        })
    }

    /// Takes one of the node's [`ACTIONS_PER_SECOND`].
    fn take_action_place(&self) -> bool {
        let now = unix_now();
        let mut actions = self.actions.lock();
        if actions.0 != now {
            *actions = (now, 0);
        }
        actions.1 += 1;
        actions.1 <= ACTIONS_PER_SECOND
    }
}

/// One audit line: who did what, to which channel or user, from where,
/// with what outcome. Never a payload, a password or a token.
fn audit(who: &str, action: &str, remote: IpAddr, target: &Target, outcome: &str) {
    tracing::info!(
        target: "herald::audit",
        who,
        action,
        remote = %remote,
        channel = target.channel.as_deref(),
        user = target.user.as_deref(),
        client = target.client.as_deref(),
        pattern = target.pattern.as_deref(),
        token_id = target.uid.as_deref(),
        outcome,
        "console"
    );
}

/// What an action names, read from its parameters for the audit line.
#[derive(Default, Deserialize)]
struct Target {
    channel: Option<String>,
    user: Option<String>,
    client: Option<String>,
    pattern: Option<String>,
    /// `revoke_token`'s token id.
    uid: Option<String>,
}

async fn to_index(console: web::Data<Console>) -> HttpResponse {
    assets::secure(&mut HttpResponse::PermanentRedirect())
        .insert_header((header::LOCATION, format!("{}/", console.path)))
        .finish()
}

async fn index() -> HttpResponse {
    assets::serve(assets::ADMIN, "index.html")
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    assets::serve(assets::ADMIN, &file)
}

/// `GET <path>/session`: who is logged in, with the CSRF token; 401 with
/// the login options otherwise. In insecure mode everyone is, without a
/// cookie (the CSRF token is still asked for).
async fn session(
    req: HttpRequest,
    console: web::Data<Console>,
    node: web::Data<Arc<Node>>,
) -> HttpResponse {
    match console.authenticate(&req) {
        Ok(session) => json_response(StatusCode::OK, &console.session_view(&session, &node)),
        Err(refusal) => *refusal,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    password: Option<String>,
    token: Option<String>,
}

/// Why a login failed, as counted.
enum Failed {
    Password,
    Token,
}

/// `POST <path>/login`.
async fn login(
    req: HttpRequest,
    payload: web::Payload,
    console: web::Data<Console>,
    node: web::Data<Arc<Node>>,
) -> HttpResponse {
    if !same_origin(&req) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a page of another origin cannot log in",
        );
    }
    if !is_json(&req) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send Content-Type: application/json",
        );
    }
    let from = remote(&req);
    if let Err(wait) = console.throttle.check(from, Instant::now()) {
        return too_many_attempts(from, wait);
    }
    let body = match read_body(&req, payload).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let request: LoginRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is not JSON",
            )
        }
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send {\"password\": \"...\"} or {\"token\": \"...\"}",
            )
        }
    };
    let now = unix_now();
    let failed = if request.token.is_some() {
        Failed::Token
    } else {
        Failed::Password
    };
    let outcome = match (request.password, request.token) {
        (Some(password), None) => check_password(&console, password)
            .await
            .map(|ok| ok.then(|| ("admin".to_owned(), None))),
        (None, Some(token)) if console.token_auth => Ok(check_token(&node, &token, now).await),
        (None, Some(_)) => Ok(None),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send {\"password\": \"...\"} or {\"token\": \"...\"}",
            )
        }
    };
    let granted = match outcome {
        Ok(granted) => granted,
        Err(busy) => return busy,
    };
    let Some((user, until)) = granted else {
        let (result, message) = match failed {
            Failed::Password => ("wrong_password", "wrong password"),
            Failed::Token => ("wrong_token", "the token is not valid for the console"),
        };
        METRICS.admin_logins.with_label_values(&[result]).inc();
        let locked = console.throttle.failed(from, Instant::now());
        audit("-", "login", from, &Target::default(), result);
        if let Some(lock) = locked {
            tracing::warn!(remote = %from, lock_secs = lock.as_secs(), "console logins from this address locked after repeated failures");
        }
        return refuse(StatusCode::UNAUTHORIZED, "invalid_credentials", message);
    };
    console.throttle.succeeded(from);
    METRICS.admin_logins.with_label_values(&["ok"]).inc();
    let (session, cookie) = console.sessions.issue(&user, now, until);
    audit(&session.user, "login", from, &Target::default(), "ok");
    // The cookie outlives the session by a day, so that a page coming back
    // after the session ended hears "session_expired", not "unauthorized";
    // the expiry inside the signed value is what ends the session.
    let max_age = session.expires_at.saturating_sub(now) + COOKIE_GRACE_SECS;
    let mut response = json_response(StatusCode::OK, &console.session_view(&session, &node));
    if let Ok(value) = header::HeaderValue::from_str(&console.set_cookie(&cookie, max_age)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn too_many_attempts(from: IpAddr, wait: Duration) -> HttpResponse {
    METRICS.admin_logins.with_label_values(&["throttled"]).inc();
    METRICS
        .admin_refused
        .with_label_values(&["too_many_attempts"])
        .inc();
    audit("-", "login", from, &Target::default(), "throttled");
    let secs = wait.as_secs().max(1);
    let body = serde_json::json!({
        "reason": "too_many_attempts",
        "message": format!("too many failed logins from this address; try again in {secs} s"),
        "retry_after": secs,
    });
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    response
}

/// Argon2 off the worker thread, at most [`CONCURRENT_VERIFICATIONS`] at
/// once. `Err` is the 503 to answer when no place came free.
async fn check_password(console: &Console, password: String) -> Result<bool, HttpResponse> {
    let Some(hash) = console.password.clone() else {
        return Ok(false);
    };
    let place =
        match tokio::time::timeout(VERIFY_WAIT, console.verifying.clone().acquire_owned()).await {
            Ok(Ok(place)) => place,
            _ => {
                METRICS.admin_logins.with_label_values(&["busy"]).inc();
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many logins at once; try again",
                ));
            }
        };
    let verified = tokio::task::spawn_blocking(move || {
        let _place = place;
        password::verify(&hash, &password)
    })
    .await
    .unwrap_or(false);
    Ok(verified)
}

/// A connection token with `admin: true`, verified as a connection would
/// be (keys, JWKS, introspection, revocation): the user and when the
/// session must end (the token's expiry).
async fn check_token(node: &Node, token: &str, now: u64) -> Option<(String, Option<u64>)> {
    let verified = match node.auth.connection_now(token, now) {
        Some(verified) => verified,
        None => node.auth.connection(token, now).await,
    };
    let principal = verified.ok()?;
    let claims = principal.claims;
    if !claims.admin {
        return None;
    }
    let revoked = node
        .engine
        .broker
        .token_revoked(claims.jti.as_deref(), &claims.user, claims.iat, now)
        .await
        .unwrap_or(true);
    if revoked {
        return None;
    }
    let user = if claims.user.is_empty() {
        "token".to_owned()
    } else {
        claims.user.clone()
    };
    Some((user, claims.expires_at()))
}

/// The body, at most [`MAX_BODY_BYTES`]; `Err` is the refusal.
async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<Bytes, HttpResponse> {
    crate::http::body::read_limited(req, payload, MAX_BODY_BYTES)
        .await
        .map_err(|response| match response.status() {
            StatusCode::PAYLOAD_TOO_LARGE => refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("the body is over {MAX_BODY_BYTES} bytes"),
            ),
            _ => response,
        })
}

/// `POST <path>/logout`.
async fn logout(req: HttpRequest, console: web::Data<Console>) -> HttpResponse {
    let session = match console.authorize_change(&req) {
        Ok(session) => session,
        Err(refusal) => return *refusal,
    };
    console.sessions.end(&session, unix_now());
    audit(
        &session.user,
        "logout",
        remote(&req),
        &Target::default(),
        "ok",
    );
    let mut response = assets::secure(&mut HttpResponse::NoContent()).finish();
    if let Ok(value) = header::HeaderValue::from_str(&console.set_cookie("", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST <path>/api/<method>`: one server API method, answered as the
/// server API answers it.
async fn action(
    req: HttpRequest,
    method: web::Path<String>,
    payload: web::Payload,
    console: web::Data<Console>,
    node: web::Data<Arc<Node>>,
) -> HttpResponse {
    let session = match console.authorize_change(&req) {
        Ok(session) => session,
        Err(refusal) => return *refusal,
    };
    let method = method.into_inner();
    let Some(method) = METHODS.iter().find(|m| **m == method) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "unknown_method",
            "the console runs info, channels, presence, presence_stats, history, history_remove, publish, unsubscribe, disconnect, revoke_token and invalidate_user_tokens",
        );
    };
    if !console.take_action_place() {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many console actions on this node; slow down",
        );
    }
    let body = match read_body(&req, payload).await {
        Ok(body) if body.iter().all(u8::is_ascii_whitespace) => Bytes::from_static(b"{}"),
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    if serde_json::from_slice::<&RawValue>(&body).is_err() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not JSON",
        );
    }
    let target: Target = serde_json::from_slice(&body).unwrap_or_default();
    METRICS.admin_actions.with_label_values(&[method]).inc();
    let outcome = api::call_counted(&node, &console.api, method, &body).await;
    let (json, result) = match outcome {
        Ok(result) => (
            api::to_raw(&ApiReply::<&RawValue>::Result(&result)),
            "ok".to_owned(),
        ),
        Err(error) => {
            let code = error.code;
            (
                api::to_raw(&ApiReply::<ApiEmpty>::Error(error)),
                format!("error {code}"),
            )
        }
    };
    audit(&session.user, method, remote(&req), &target, &result);
    assets::secure(&mut HttpResponse::Ok())
        .content_type("application/json")
        .body(json.get().to_owned())
}

#[derive(Serialize)]
struct KeyringView {
    enabled: bool,
    active: Option<String>,
    keys: Vec<KeyView>,
}

#[derive(Serialize)]
struct KeyView {
    id: String,
    state: &'static str,
}

fn keyring_view(
    ids: Option<herald_bus::KeyIds>,
    active_state: &'static str,
    other_state: &'static str,
) -> KeyringView {
    let ids = ids.unwrap_or_default();
    KeyringView {
        enabled: !ids.ids.is_empty(),
        keys: ids
            .ids
            .iter()
            .map(|id| KeyView {
                id: id.clone(),
                state: if ids.active.as_deref() == Some(id.as_str()) {
                    active_state
                } else {
                    other_state
                },
            })
            .collect(),
        active: ids.active,
    }
}

/// `GET <path>/keys`: key ids and states of the bus, history and proxy
/// signing keyrings. Never key material.
async fn keys(
    req: HttpRequest,
    console: web::Data<Console>,
    node: web::Data<Arc<Node>>,
) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return *refusal;
    }
    let engine = node.engine.broker.key_ids();
    let proxy = herald_bus::KeyIds {
        active: console.proxy_signer.active_id(),
        ids: console.proxy_signer.ids(),
    };
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "bus": keyring_view(engine.bus, "active", "verify only"),
            "history": keyring_view(engine.history, "active", "open only"),
            "proxy_signing": keyring_view(Some(proxy), "active", "not used"),
        }),
    )
}

/// `GET <path>/stream`: the live figures of every node (`stats.rs`), until
/// the session ends.
async fn stream(
    req: HttpRequest,
    console: web::Data<Console>,
    node: web::Data<Arc<Node>>,
) -> HttpResponse {
    let session = match console.authenticate(&req) {
        Ok(session) => session,
        Err(refusal) => return *refusal,
    };
    let lasts = Duration::from_secs(session.expires_at.saturating_sub(unix_now()));
    stats::stream(Arc::clone(&node), lasts).await
}

#[cfg(test)]
mod tests;
