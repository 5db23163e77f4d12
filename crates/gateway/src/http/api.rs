//! The server HTTP API: `POST /api/<method>` on the internal listener
//! (docs/protocol.md, "Server HTTP API"). HTTP in and out here; what each method does lives
//! in [`call`], which batch reuses.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, Method as HttpMethod, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use herald_bus::{
    BusError, ControlCommand, HistoryQuery, PublishOptions, SurveyReply, SurveyRequest,
};
use herald_protocol::api::{
    ApiBroadcastRequest, ApiBroadcastResult, ApiChannelInfo, ApiChannelRequest, ApiChannelsRequest,
    ApiChannelsResult, ApiDisconnectRequest, ApiEmpty, ApiError, ApiHistoryRequest,
    ApiHistoryResult, ApiInfoResult, ApiInvalidateUserTokensRequest, ApiNodeResult,
    ApiPresenceResult, ApiPresenceStatsResult, ApiPublishRequest, ApiRefreshRequest, ApiReply,
    ApiRevokeTokenRequest, ApiSubscribeRequest, ApiUnsubscribeRequest,
};
use herald_protocol::{Disconnect, ErrorCode, Publication, RawJson, StreamPosition};
use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::API_METHODS;
use crate::node::Node;
use crate::ws::handshake::glob_match;

/// Largest request body; more is answered 413.
pub(crate) const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How long a request waits for a place when `http_api.max_concurrent_requests`
/// are running, before it gets 503.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Commands of a parallel batch (and channels of a broadcast) run at once.
pub(crate) const PARALLELISM: usize = 32;

/// What the API handler shares: the key and the limits (`http_api`).
pub(crate) struct ApiSettings {
    key: String,
    places: Arc<Semaphore>,
    max_batch_size: usize,
}

impl ApiSettings {
    pub(crate) fn new(config: &crate::config::HttpApiConfig) -> Self {
        Self {
            key: config.key.clone(),
            places: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            max_batch_size: config.max_batch_size.max(1),
        }
    }

    /// One of the `http_api.max_concurrent_requests` places, waited for up
    /// to [`QUEUE_WAIT`]; None when none came free. The gRPC API shares them.
    pub(crate) async fn place(&self) -> Option<OwnedSemaphorePermit> {
        match tokio::time::timeout(QUEUE_WAIT, self.places.clone().acquire_owned()).await {
            Ok(Ok(place)) => Some(place),
            // Timed out, or (never: it is not closed) a closed semaphore.
            _ => None,
        }
    }

    /// Most commands in one batch, channels in one broadcast.
    pub(crate) fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }
}

/// `POST /api/<method>`. Method, key and path are checked from the request
/// head; the body is read only after that and once the request has one of
/// the `http_api.max_concurrent_requests` places, within
/// `http_server.request_body_timeout` (body.rs) and [`MAX_BODY_BYTES`].
/// A request refused before its body is read closes its connection
/// (body.rs), so an unauthenticated peer cannot make the node buffer bodies.
pub(crate) async fn handle(
    req: HttpRequest,
    method: web::Path<String>,
    payload: web::Payload,
    node: web::Data<Arc<Node>>,
    api: web::Data<ApiSettings>,
) -> HttpResponse {
    if req.method() != HttpMethod::POST {
        crate::metrics::api_refused("method");
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST"))
            .finish();
    }
    if !authorized(&req, &api.key) {
        crate::metrics::api_refused("unauthorized");
        return HttpResponse::Unauthorized().finish();
    }
    let method = method.into_inner();
    if !API_METHODS.contains(&method.as_str()) {
        crate::metrics::api_refused("not_found");
        return HttpResponse::NotFound().body(format!("unknown API method {method:?}\n"));
    }
    let place = match api.place().await {
        Some(place) => place,
        None => {
            crate::metrics::api_refused("concurrency");
            return HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "1"))
                .body("too many concurrent API requests (http_api.max_concurrent_requests)\n");
        }
    };
    let body = match read_body(&req, payload).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    if let Err(e) = serde_json::from_slice::<&RawValue>(&body) {
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body(format!("request body is not JSON: {e}\n"));
    }
    let node: Arc<Node> = Arc::clone(&node);
    if method == "batch" {
        return batch(node, api.into_inner(), body, place);
    }
    let outcome = call_counted(&node, &api, &method, &body).await;
    let json = match outcome {
        // The result goes under "result".
        Ok(result) => to_raw(&ApiReply::<&RawValue>::Result(&result)),
        Err(error) => to_raw(&ApiReply::<ApiEmpty>::Error(error)),
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.get().to_owned())
}

/// Reads a request body: 413 past [`MAX_BODY_BYTES`] (`body::read_limited`).
async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<Bytes, HttpResponse> {
    crate::http::body::read_limited(req, payload, MAX_BODY_BYTES).await
}

/// `POST /api` (the legacy newline-separated endpoint) is not served.
pub(crate) async fn legacy() -> HttpResponse {
    HttpResponse::build(StatusCode::NOT_FOUND)
        .content_type("text/plain; charset=utf-8")
        .body("herald serves the per-method API only: POST /api/<method>, e.g. /api/publish\n")
}

/// How long a revocation without `expire_at` is kept: longer than any token
/// herald should be issued with.
const DEFAULT_REVOCATION_SECS: u64 = 30 * 24 * 3600;

/// `X-API-Key: <key>` or `Authorization: apikey <key>`, compared in constant
/// time. An empty configured key authorizes nobody.
fn authorized(req: &HttpRequest, key: &str) -> bool {
    let headers = req.headers();
    let offered = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("apikey")
                .then(|| rest.trim().to_owned())
        });
    key_matches(offered.as_deref(), key)
}

/// Whether an offered API key is the configured one, compared in constant
/// time. An empty configured key authorizes nobody.
pub(crate) fn key_matches(offered: Option<&str>, key: &str) -> bool {
    !key.is_empty()
        && offered.is_some_and(|offered| constant_time_eq(offered.as_bytes(), key.as_bytes()))
}

/// Equal bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

pub(crate) fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("API results always serialize")
}

fn params<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::with_message(ErrorCode::BadRequest, format!("bad request: {e}")))
}

fn engine_error(e: &BusError) -> ApiError {
    crate::node::subscribe::engine_error(e).into()
}

fn required(value: &str, what: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            format!("{what} required"),
        ));
    }
    Ok(())
}

/// [`call`], counted in `herald_api_command_duration_seconds` and
/// `herald_api_errors_total`: how the HTTP and gRPC APIs run a method.
pub(crate) async fn call_counted(
    node: &Node,
    api: &ApiSettings,
    method: &str,
    body: &[u8],
) -> Result<Box<RawValue>, ApiError> {
    let started = std::time::Instant::now();
    let outcome = call(node, api, method, body).await;
    crate::metrics::api_command(method, started.elapsed(), outcome.as_ref().err());
    outcome
}

/// Runs one API method; the result is its JSON (what goes under `result`).
/// Each method is its own function over its typed request.
async fn call(
    node: &Node,
    api: &ApiSettings,
    method: &str,
    body: &[u8],
) -> Result<Box<RawValue>, ApiError> {
    match method {
        "publish" => publish_method(node, params(body)?).await,
        "broadcast" => broadcast(node, api, params(body)?).await,
        "subscribe" => subscribe(node, params(body)?).await,
        "unsubscribe" => unsubscribe(node, params(body)?).await,
        "disconnect" => disconnect(node, params(body)?).await,
        "refresh" => refresh(node, params(body)?).await,
        "presence" | "presence_stats" => {
            presence(node, method == "presence_stats", params(body)?).await
        }
        "history" => history(node, params(body)?).await,
        "history_remove" => history_remove(node, params(body)?).await,
        "channels" => channels(node, params(body)?).await,
        "info" => info(node),
        "revoke_token" => revoke_token(node, params(body)?).await,
        "invalidate_user_tokens" => invalidate_user_tokens(node, params(body)?).await,
        _ => Err(ErrorCode::MethodNotFound.into()),
    }
}

/// `publish`: one publication.
async fn publish_method(node: &Node, req: ApiPublishRequest) -> Result<Box<RawValue>, ApiError> {
    let data = payload(req.data, &req.b64data)?;
    let position = publish(
        node,
        &req.channel,
        &data,
        req.skip_history,
        &req.tags,
        &req.idempotency_key,
        req.delta,
    )
    .await?;
    Ok(to_raw(&position))
}

/// `broadcast`: one publication to many channels, at most `http_api.max_batch_size`, 32 at a time.
async fn broadcast(
    node: &Node,
    api: &ApiSettings,
    req: ApiBroadcastRequest,
) -> Result<Box<RawValue>, ApiError> {
    if req.channels.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "channels required",
        ));
    }
    if req.channels.len() > api.max_batch_size {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            format!(
                "broadcast to {} channels; at most {} (http_api.max_batch_size)",
                req.channels.len(),
                api.max_batch_size
            ),
        ));
    }
    let data = payload(req.data, &req.b64data)?;
    // Collected first: a stream holding the closure is not provably `Send`
    // (a limit of the compiler's closure lifetimes), and the gRPC API runs
    // this on tonic's `Send` tasks.
    let publishes: Vec<_> = req
        .channels
        .iter()
        .map(|channel| {
            publish(
                node,
                channel,
                &data,
                req.skip_history,
                &req.tags,
                &req.idempotency_key,
                req.delta,
            )
        })
        .collect();
    let responses = futures_util::stream::iter(publishes)
        .buffered(PARALLELISM)
        .map(|outcome| match outcome {
            Ok(position) => ApiReply::Result(position),
            Err(error) => ApiReply::Error(error),
        })
        .collect()
        .await;
    Ok(to_raw(&ApiBroadcastResult { responses }))
}

/// `subscribe`: a server-side subscription for a user's connections, cluster-wide.
async fn subscribe(node: &Node, req: ApiSubscribeRequest) -> Result<Box<RawValue>, ApiError> {
    required(&req.user, "user")?;
    resolve(node, &req.channel)?;
    control(
        node,
        ControlCommand::Subscribe {
            user: req.user,
            channel: req.channel,
            client: req.client,
            info: req.info.filter(|v| !v.is_null()),
            data: req.data.filter(|v| !v.is_null()),
        },
    )
    .await
}

/// `unsubscribe`: ends a user's subscription, cluster-wide.
async fn unsubscribe(node: &Node, req: ApiUnsubscribeRequest) -> Result<Box<RawValue>, ApiError> {
    required(&req.user, "user")?;
    resolve(node, &req.channel)?;
    control(
        node,
        ControlCommand::Unsubscribe {
            user: req.user,
            channel: req.channel,
            client: req.client,
        },
    )
    .await
}

/// `disconnect`: closes a user's connections (a code within 3000..4999).
async fn disconnect(node: &Node, req: ApiDisconnectRequest) -> Result<Box<RawValue>, ApiError> {
    required(&req.user, "user")?;
    let (code, reason) = match req.disconnect {
        Some(d) if d.code != 0 => (d.code, d.reason),
        _ => (
            Disconnect::FORCE_DISCONNECT.code,
            Disconnect::FORCE_DISCONNECT.reason.into_owned(),
        ),
    };
    if !(3000..=4999).contains(&code) {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "disconnect code must be within 3000..4999",
        ));
    }
    control(
        node,
        ControlCommand::Disconnect {
            user: req.user,
            client: req.client,
            whitelist: req.whitelist,
            code,
            reason,
        },
    )
    .await
}

/// `refresh`: moves the expiry of a user's connections.
async fn refresh(node: &Node, req: ApiRefreshRequest) -> Result<Box<RawValue>, ApiError> {
    required(&req.user, "user")?;
    control(
        node,
        ControlCommand::Refresh {
            user: req.user,
            client: req.client,
            expired: req.expired,
            expire_at: (req.expire_at > 0).then_some(req.expire_at),
        },
    )
    .await
}

/// `presence` and `presence_stats`.
async fn presence(
    node: &Node,
    stats: bool,
    req: ApiChannelRequest,
) -> Result<Box<RawValue>, ApiError> {
    let resolved = resolve(node, &req.channel)?;
    if !resolved.options.presence {
        return Err(ErrorCode::NotAvailable.into());
    }
    let store = &node.engine.presence;
    if !stats {
        let presence = store
            .presence(&req.channel)
            .await
            .map_err(|e| engine_error(&e))?;
        Ok(to_raw(&ApiPresenceResult { presence }))
    } else {
        let stats = store
            .presence_stats(&req.channel)
            .await
            .map_err(|e| engine_error(&e))?;
        Ok(to_raw(&ApiPresenceStatsResult {
            num_clients: stats.num_clients,
            num_users: stats.num_users,
        }))
    }
}

/// `history`: a page of a channel's stream.
async fn history(node: &Node, req: ApiHistoryRequest) -> Result<Box<RawValue>, ApiError> {
    let resolved = resolve(node, &req.channel)?;
    if !resolved.options.history_enabled() {
        return Err(ErrorCode::NotAvailable.into());
    }
    let limit = node.history_limit(req.limit);
    let query = HistoryQuery {
        since: req.since,
        limit: Some(limit),
        reverse: req.reverse,
        meta_ttl: node.policy.history_meta_ttl(&resolved),
    };
    let page = node
        .engine
        .broker
        .history(&req.channel, &query)
        .await
        .map_err(|e| engine_error(&e))?;
    Ok(to_raw(&ApiHistoryResult {
        publications: page.publications,
        epoch: page.position.epoch,
        offset: page.position.offset,
    }))
}

/// `history_remove`: drops a channel's publications (epoch and top stay).
async fn history_remove(node: &Node, req: ApiChannelRequest) -> Result<Box<RawValue>, ApiError> {
    let resolved = resolve(node, &req.channel)?;
    if !resolved.options.history_enabled() {
        return Err(ErrorCode::NotAvailable.into());
    }
    node.engine
        .broker
        .remove_history(&req.channel)
        .await
        .map_err(|e| engine_error(&e))?;
    Ok(to_raw(&ApiEmpty {}))
}

/// `channels`: channels with subscribers, cluster-wide, by glob.
async fn channels(node: &Node, req: ApiChannelsRequest) -> Result<Box<RawValue>, ApiError> {
    let replies = node
        .engine
        .broker
        .survey(&SurveyRequest::Channels)
        .await
        .map_err(|e| engine_error(&e))?;
    let mut result = ApiChannelsResult::default();
    for reply in replies {
        let SurveyReply::Channels { channels } = reply else {
            continue;
        };
        for (channel, n) in channels {
            if !req.pattern.is_empty() && !glob_match(req.pattern.as_bytes(), channel.as_bytes()) {
                continue;
            }
            result.channels.entry(channel).or_default().num_clients += n;
        }
    }
    result
        .channels
        .retain(|_, info: &mut ApiChannelInfo| info.num_clients > 0);
    Ok(to_raw(&result))
}

/// `info`: the nodes of the cluster.
fn info(node: &Node) -> Result<Box<RawValue>, ApiError> {
    let nodes = node
        .engine
        .broker
        .nodes()
        .into_iter()
        .map(|n| ApiNodeResult {
            uid: n.uid,
            name: n.name,
            version: n.version,
            num_clients: n.num_clients,
            num_users: n.num_users,
            num_channels: n.num_channels,
            num_subs: n.num_subs,
            uptime: n.uptime,
        })
        .collect();
    Ok(to_raw(&ApiInfoResult { nodes }))
}

/// `revoke_token`: refuses a token (by `jti`) until it expires.
async fn revoke_token(node: &Node, req: ApiRevokeTokenRequest) -> Result<Box<RawValue>, ApiError> {
    required(&req.uid, "uid")?;
    let now = crate::node::unix_now();
    let until = revocation_end(req.expire_at, now)?;
    node.engine
        .broker
        .revoke_token(&req.uid, until)
        .await
        .map_err(|e| engine_error(&e))?;
    control(node, ControlCommand::RevokeToken { token_id: req.uid }).await
}

/// `invalidate_user_tokens`: refuses a user's tokens issued before a time.
async fn invalidate_user_tokens(
    node: &Node,
    req: ApiInvalidateUserTokensRequest,
) -> Result<Box<RawValue>, ApiError> {
    required(&req.user, "user")?;
    let now = crate::node::unix_now();
    let issued_before = if req.issued_before == 0 {
        now
    } else {
        req.issued_before
    };
    let until = revocation_end(req.expire_at, now)?;
    node.engine
        .broker
        .invalidate_user_tokens(&req.user, issued_before, until)
        .await
        .map_err(|e| engine_error(&e))?;
    control(
        node,
        ControlCommand::InvalidateUserTokens {
            user: req.user,
            issued_before,
        },
    )
    .await
}

/// Until when a revocation is kept: the token's expiry, or a long default.
fn revocation_end(expire_at: u64, now: u64) -> Result<u64, ApiError> {
    match expire_at {
        0 => Ok(now + DEFAULT_REVOCATION_SECS),
        at if at <= now => Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "expire_at is in the past: the token has expired already",
        )),
        at => Ok(at),
    }
}

fn resolve<'a>(
    node: &'a Node,
    channel: &'a str,
) -> Result<herald_auth::ResolvedChannel<'a>, ApiError> {
    required(channel, "channel")?;
    node.policy
        .resolve(channel)
        .map_err(|e| ApiError::from(e.code()))
}

async fn control(node: &Node, command: ControlCommand) -> Result<Box<RawValue>, ApiError> {
    node.engine
        .broker
        .publish_control(&command)
        .await
        .map_err(|e| engine_error(&e))?;
    Ok(to_raw(&ApiEmpty {}))
}

/// The payload of `publish` and `broadcast` as the caller gave it: `data`
/// (JSON), or else `b64data` (standard base64 of bytes).
enum ApiPayload {
    Json(RawJson),
    Bytes(Vec<u8>),
}

fn payload(data: Option<RawJson>, b64data: &str) -> Result<ApiPayload, ApiError> {
    if let Some(data) = data.filter(|d| !d.is_null()) {
        return Ok(ApiPayload::Json(data));
    }
    if b64data.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "data required",
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64data)
        .map(ApiPayload::Bytes)
        .map_err(|_| ApiError::with_message(ErrorCode::BadRequest, "b64data is not base64"))
}

impl ApiPayload {
    /// The publication data for a channel: the bytes of a binary channel
    /// (`data` as its JSON text), or JSON for any other, where `b64data` must
    /// decode to JSON since its JSON clients receive it as is.
    fn for_channel(&self, binary: bool) -> Result<RawJson, ApiError> {
        match (self, binary) {
            (ApiPayload::Json(data), false) => Ok(data.clone()),
            (ApiPayload::Json(data), true) => Ok(RawJson::binary(data.get().as_bytes())),
            (ApiPayload::Bytes(bytes), true) => Ok(RawJson::binary(bytes)),
            (ApiPayload::Bytes(bytes), false) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| RawJson::from_str(text).ok())
                .filter(|d| !d.is_null())
                .ok_or_else(|| {
                    ApiError::with_message(
                        ErrorCode::BadRequest,
                        "b64data must decode to JSON on a channel whose publication_data_format is json",
                    )
                }),
        }
    }
}

async fn publish(
    node: &Node,
    channel: &str,
    payload: &ApiPayload,
    skip_history: bool,
    tags: &std::collections::BTreeMap<String, String>,
    idempotency_key: &str,
    delta: bool,
) -> Result<StreamPosition, ApiError> {
    let resolved = resolve(node, channel)?;
    let data = payload.for_channel(resolved.options.binary_data())?;
    let history = node.history_options(&resolved).filter(|_| !skip_history);
    let publication = Publication {
        data,
        info: None,
        offset: 0,
        tags: tags.clone(),
        delta: delta || resolved.options.delta_publish,
    };
    let options = PublishOptions {
        history,
        idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_owned()),
    };
    node.publish(channel, publication, &options)
        .await
        .map_err(|e| engine_error(&e))
}

#[derive(Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow, default)]
    commands: Option<&'a RawValue>,
    #[serde(default)]
    parallel: bool,
}

/// `{"commands":[{"publish":{...}}, ...], "parallel": bool}` →
/// `{"replies":[{"publish":{...}}, {"error":{...}}, ...]}` at the top level.
///
/// At most `http_api.max_batch_size` commands (more: error 107, nothing
/// run). The reply is streamed: each command's reply is written out as it
/// is ready and then dropped, so a batch holds at most one reply (32 with
/// `parallel`) at a time, and a caller that stops reading stops the batch.
/// The request's API place is held until the last reply is out.
fn batch(
    node: Arc<Node>,
    api: Arc<ApiSettings>,
    body: Bytes,
    place: OwnedSemaphorePermit,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let (commands, parallel) = match batch_commands(&body, api.max_batch_size) {
        Ok(parsed) => parsed,
        Err(error) => {
            crate::metrics::api_command("batch", started.elapsed(), Some(&error));
            return HttpResponse::Ok()
                .content_type("application/json")
                .body(to_raw(&ApiReply::<ApiEmpty>::Error(error)).get().to_owned());
        }
    };
    let width = if parallel { PARALLELISM } else { 1 };
    let replies = futures_util::stream::iter(commands.into_iter().enumerate())
        .map(move |(i, span)| {
            let (node, api, body) = (node.clone(), api.clone(), body.clone());
            async move { (i, batch_command(&node, &api, &body[span]).await) }
        })
        .buffered(width)
        .map(|(i, reply)| {
            let mut chunk = Vec::with_capacity(reply.get().len() + 1);
            if i > 0 {
                chunk.push(b',');
            }
            chunk.extend_from_slice(reply.get().as_bytes());
            Ok::<_, std::convert::Infallible>(Bytes::from(chunk))
        });
    let open = futures_util::stream::once(async { Ok(Bytes::from_static(b"{\"replies\":[")) });
    let close = futures_util::stream::once(async move {
        crate::metrics::api_command("batch", started.elapsed(), None);
        drop(place);
        Ok(Bytes::from_static(b"]}"))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(open.chain(replies).chain(close))
}

/// The byte spans of a batch's commands within `body`, and `parallel`.
/// Stops at `limit` + 1 commands: error 107.
fn batch_commands(body: &[u8], limit: usize) -> Result<(Vec<Range<usize>>, bool), ApiError> {
    let req: BatchRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::with_message(ErrorCode::BadRequest, format!("bad request: {e}")))?;
    let Some(raw) = req.commands else {
        return Ok((Vec::new(), req.parallel));
    };
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    let commands = BoundedSeq { limit }
        .deserialize(&mut deserializer)
        .map_err(|e| ApiError::with_message(ErrorCode::BadRequest, format!("bad request: {e}")))?;
    let spans = commands
        .into_iter()
        .map(|command| span_within(body, command.get()))
        .collect();
    Ok((spans, req.parallel))
}

/// Where `inner`, a slice borrowed from `outer`, sits in it.
fn span_within(outer: &[u8], inner: &str) -> Range<usize> {
    // Both point into the same buffer: `inner` was borrowed from `outer`
    // by the deserializer (RawValue keeps the input's bytes).
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

/// A JSON array of at most `limit` raw values.
struct BoundedSeq {
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for BoundedSeq {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedSeq {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of at most {} commands", self.limit)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit));
        while let Some(value) = seq.next_element::<&'de RawValue>()? {
            if values.len() == self.limit {
                return Err(serde::de::Error::custom(format!(
                    "a batch holds at most {} commands (http_api.max_batch_size)",
                    self.limit
                )));
            }
            values.push(value);
        }
        Ok(values)
    }
}

/// One command of a batch: `{"<method>": {params}}` → `{"<method>": result}`
/// or `{"error": {...}}`.
async fn batch_command(node: &Node, api: &ApiSettings, command: &[u8]) -> Box<RawValue> {
    let parsed: Result<std::collections::BTreeMap<String, &RawValue>, _> =
        serde_json::from_slice(command);
    let Ok(command) = parsed else {
        return to_raw(&ApiReply::<ApiEmpty>::Error(ApiError::with_message(
            ErrorCode::BadRequest,
            "each command is an object holding exactly one method",
        )));
    };
    let mut entries = command.into_iter();
    let (Some((method, params)), None) = (entries.next(), entries.next()) else {
        return to_raw(&ApiReply::<ApiEmpty>::Error(ApiError::with_message(
            ErrorCode::BadRequest,
            "each command holds exactly one method",
        )));
    };
    if method == "batch" || !API_METHODS.contains(&method.as_str()) {
        return to_raw(&ApiReply::<ApiEmpty>::Error(
            ErrorCode::MethodNotFound.into(),
        ));
    }
    let outcome = call_counted(node, api, &method, params.get().as_bytes()).await;
    match outcome {
        // Raw values pass through untouched: payloads stay byte-exact.
        Ok(result) => to_raw(&std::collections::BTreeMap::from([(method, result)])),
        Err(error) => to_raw(&ApiReply::<ApiEmpty>::Error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
