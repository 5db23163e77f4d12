//! The server HTTP API: `POST /api/<method>` on the internal listener
//! (centrifugo-compat §4). HTTP in and out here; what each method does lives
//! in [`call`], which batch reuses.

use std::sync::Arc;

use actix_web::http::{header, Method as HttpMethod, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::join_all;
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
use herald_protocol::{Disconnect, ErrorCode, Publication, StreamPosition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::metrics::API_METHODS;
use crate::node::Node;
use crate::ws::glob_match;

/// Largest request body; more is answered 413.
pub(crate) const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The configured API key, shared with the handler.
pub(crate) struct ApiKey(pub(crate) String);

/// `POST /api/<method>`.
pub(crate) async fn handle(
    req: HttpRequest,
    method: web::Path<String>,
    body: web::Bytes,
    node: web::Data<Arc<Node>>,
    key: web::Data<ApiKey>,
) -> HttpResponse {
    if req.method() != HttpMethod::POST {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST"))
            .finish();
    }
    if !authorized(&req, &key.0) {
        return HttpResponse::Unauthorized().finish();
    }
    let method = method.into_inner();
    if !API_METHODS.contains(&method.as_str()) {
        return HttpResponse::NotFound().body(format!("unknown API method {method:?}\n"));
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    if let Err(e) = serde_json::from_slice::<&RawValue>(body) {
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body(format!("request body is not JSON: {e}\n"));
    }
    let started = std::time::Instant::now();
    let outcome = if method == "batch" {
        batch(&node, body).await.map(Some)
    } else {
        call(&node, &method, body).await.map(|r| {
            // The result goes under "result".
            let wrapped = ApiReply::<&RawValue>::Result(&r);
            Some(to_raw(&wrapped))
        })
    };
    crate::metrics::api_command(&method, started.elapsed(), outcome.as_ref().err());
    let json = match outcome {
        Ok(Some(json)) => json,
        Ok(None) => to_raw(&ApiReply::Result(ApiEmpty {})),
        Err(error) => to_raw(&ApiReply::<ApiEmpty>::Error(error)),
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.get().to_owned())
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
    if key.is_empty() {
        return false;
    }
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
    offered.is_some_and(|offered| constant_time_eq(offered.as_bytes(), key.as_bytes()))
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

fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("API results always serialize")
}

fn params<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::with_message(ErrorCode::BadRequest, format!("bad request: {e}")))
}

fn engine_error(e: &BusError) -> ApiError {
    crate::subscribe::engine_error(e).into()
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

/// Runs one API method; the result is its JSON (what goes under `result`).
pub(crate) async fn call(
    node: &Node,
    method: &str,
    body: &[u8],
) -> Result<Box<RawValue>, ApiError> {
    match method {
        "publish" => {
            let req: ApiPublishRequest = params(body)?;
            let position = publish(
                node,
                &req.channel,
                &req.data,
                &req.b64data,
                req.skip_history,
                &req.tags,
                &req.idempotency_key,
            )
            .await?;
            Ok(to_raw(&position))
        }
        "broadcast" => {
            let req: ApiBroadcastRequest = params(body)?;
            if req.channels.is_empty() {
                return Err(ApiError::with_message(
                    ErrorCode::BadRequest,
                    "channels required",
                ));
            }
            let publishes = req.channels.iter().map(|channel| {
                publish(
                    node,
                    channel,
                    &req.data,
                    &req.b64data,
                    req.skip_history,
                    &req.tags,
                    &req.idempotency_key,
                )
            });
            let responses = join_all(publishes)
                .await
                .into_iter()
                .map(|outcome| match outcome {
                    Ok(position) => ApiReply::Result(position),
                    Err(error) => ApiReply::Error(error),
                })
                .collect();
            Ok(to_raw(&ApiBroadcastResult { responses }))
        }
        "subscribe" => {
            let req: ApiSubscribeRequest = params(body)?;
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
        "unsubscribe" => {
            let req: ApiUnsubscribeRequest = params(body)?;
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
        "disconnect" => {
            let req: ApiDisconnectRequest = params(body)?;
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
        "refresh" => {
            let req: ApiRefreshRequest = params(body)?;
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
        "presence" | "presence_stats" => {
            let req: ApiChannelRequest = params(body)?;
            let resolved = resolve(node, &req.channel)?;
            if !resolved.options.presence {
                return Err(ErrorCode::NotAvailable.into());
            }
            let store = &node.engine.presence;
            if method == "presence" {
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
        "history" => {
            let req: ApiHistoryRequest = params(body)?;
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
        "history_remove" => {
            let req: ApiChannelRequest = params(body)?;
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
        "channels" => {
            let req: ApiChannelsRequest = params(body)?;
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
                    if !req.pattern.is_empty()
                        && !glob_match(req.pattern.as_bytes(), channel.as_bytes())
                    {
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
        "info" => {
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
        "revoke_token" => {
            let req: ApiRevokeTokenRequest = params(body)?;
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
        "invalidate_user_tokens" => {
            let req: ApiInvalidateUserTokensRequest = params(body)?;
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
        _ => Err(ErrorCode::MethodNotFound.into()),
    }
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

async fn publish(
    node: &Node,
    channel: &str,
    data: &Option<herald_protocol::RawJson>,
    b64data: &str,
    skip_history: bool,
    tags: &std::collections::BTreeMap<String, String>,
    idempotency_key: &str,
) -> Result<StreamPosition, ApiError> {
    let resolved = resolve(node, channel)?;
    if !b64data.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "b64data is not supported: herald carries JSON payloads (use data)",
        ));
    }
    let Some(data) = data.clone().filter(|d| !d.is_null()) else {
        return Err(ApiError::with_message(
            ErrorCode::BadRequest,
            "data required",
        ));
    };
    let history = node.history_options(&resolved).filter(|_| !skip_history);
    let publication = Publication {
        data,
        info: None,
        offset: 0,
        tags: tags.clone(),
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
struct BatchRequest {
    #[serde(default)]
    commands: Vec<std::collections::BTreeMap<String, Box<RawValue>>>,
    #[serde(default)]
    parallel: bool,
}

#[derive(Serialize)]
struct BatchResult {
    replies: Vec<Box<RawValue>>,
}

/// `{"commands":[{"publish":{...}}, ...], "parallel": bool}` →
/// `{"replies":[{"publish":{...}}, {"error":{...}}, ...]}` at the top level.
async fn batch(node: &Node, body: &[u8]) -> Result<Box<RawValue>, ApiError> {
    let req: BatchRequest = params(body)?;
    let one = |command: std::collections::BTreeMap<String, Box<RawValue>>| async move {
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
        let started = std::time::Instant::now();
        let outcome = call(node, &method, params.get().as_bytes()).await;
        crate::metrics::api_command(&method, started.elapsed(), outcome.as_ref().err());
        match outcome {
            // Raw values pass through untouched: payloads stay byte-exact.
            Ok(result) => to_raw(&std::collections::BTreeMap::from([(method, result)])),
            Err(error) => to_raw(&ApiReply::<ApiEmpty>::Error(error)),
        }
    };
    let replies = if req.parallel {
        join_all(req.commands.into_iter().map(one)).await
    } else {
        let mut replies = Vec::with_capacity(req.commands.len());
        for command in req.commands {
            replies.push(one(command).await);
        }
        replies
    };
    Ok(to_raw(&BatchResult { replies }))
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
