//! The admin API (docs/src/admin-api.md) on its own listener: JSON in and out, bearer
//! token for every change, compared in constant time.
//!
//! Changes are accepted only as PUT/POST with an `application/json` body
//! (or no body) and no `Origin` header, so a browser page cannot drive the
//! API cross-site even on loopback — except the operator console's own
//! same-origin requests ([`console::same_origin_console`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::console;
use crate::config::PoolName;
use crate::control::change::{request, Change};
use crate::control::release::driver;
use crate::control::reload;
use crate::control::state::{Actor, ControlError};
use crate::proxy::body::{ClientBody, ResponseBody};
use crate::proxy::handle::ConnInfo;
use crate::Shared;

const MAX_BODY: usize = 64 * 1024;

pub async fn handle(
    shared: Arc<Shared>,
    _conn: ConnInfo,
    req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    Ok(route(&shared, req).await.unwrap_or_else(ApiError::into_response))
}

type Reply = Result<Response<ResponseBody>, ApiError>;

/// An admin API refusal: a status and a message, sent as `{"error": ...}`.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn into_response(self) -> Response<ResponseBody> {
        let mut response = json_response(self.status, json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Every method and path the admin API serves, the console's included. The
/// router answers 405 for another method on one of these paths, and
/// tests/docs.rs checks that docs/src/admin-api.md documents each of them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/status"),
    ("GET", "/audit"),
    ("GET", "/shadow/samples"),
    ("PUT", "/percent"),
    ("POST", "/rollback"),
    ("POST", "/ramp"),
    ("POST", "/resume"),
    ("POST", "/reload"),
    ("GET", "/ui"),
    ("GET", "/ui/app.js"),
    ("GET", "/ui/app.css"),
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("GET", "/ofrep/v1/configuration"),
    ("GET", "/api/client/features"),
    ("POST", "/api/client/register"),
    ("POST", "/api/client/metrics"),
];

async fn route(shared: &Shared, req: Request<ClientBody>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if super::flags::is_flags_path(&path) {
        return Ok(super::flags::route(shared, req).await);
    }
    if method == Method::GET {
        if let Some(page) = console::asset(&path) {
            return Ok(page);
        }
    }
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => Ok(json_response(StatusCode::OK, json!({ "ok": true }))),
        (Method::GET, "/readyz") => Ok(readyz(shared)),
        (Method::GET, "/metrics") => Ok(metrics(shared)),
        (Method::GET, "/status") => Ok(json_response(StatusCode::OK, status(shared))),
        (Method::GET, "/audit") => audit(shared, req.uri().query()).await,
        (Method::GET, "/shadow/samples") => match shared.config().shadow {
            Some(_) => Ok(json_response(StatusCode::OK, shared.shadow.samples())),
            None => Err(error(StatusCode::NOT_FOUND, "shadow reads are off: the config has no [shadow] section")),
        },
        (_, p) if console::is_console_path(p) => {
            Err(error(StatusCode::METHOD_NOT_ALLOWED, "the console is read with GET"))
        }
        (Method::PUT, "/percent") => {
            let body: request::SetPercent = change_body(shared, req).await?;
            let applied = shared.control.submit(shared, body.change(), &Actor::Admin).await.map_err(control_error)?;
            let mut answer = json!({
                "old": applied.before.desired_percent, "desired": body.percent,
                "effective": shared.control.route().percent,
            });
            if let Some(revision) = applied.revision {
                answer["revision"] = json!(revision);
            }
            Ok(json_response(StatusCode::OK, answer))
        }
        (Method::POST, "/rollback") => {
            let body: request::Rollback = change_body(shared, req).await?;
            let change = body.change(shared.config().rollback.hook.is_some()).map_err(bad_request)?;
            let Change::Activate { level, .. } = change else { unreachable!("a rollback request activates a level") };
            let applied = shared.control.submit(shared, change, &Actor::Admin).await.map_err(control_error)?;
            let blocked = shared.control.blocked_reason(level);
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "level": level, "activated": applied.changed(), "blocked": blocked.is_some(),
                    "blocked_reason": blocked, "state": shared.control.state(),
                }),
            ))
        }
        (Method::POST, "/ramp") => {
            let body: request::Ramp = change_body(shared, req).await?;
            let cmd = body.command().map_err(bad_request)?;
            driver::command(shared, cmd).await.map_err(control_error)?;
            Ok(json_response(
                StatusCode::OK,
                json!({ "ramp": driver::status(shared), "percent": percent_view(shared) }),
            ))
        }
        (Method::POST, "/resume") => {
            let body: request::Resume = change_body(shared, req).await?;
            let change = body.change().map_err(bad_request)?;
            let Change::Resume { level, .. } = change else { unreachable!("a resume request resumes a level") };
            let applied = shared.control.submit(shared, change, &Actor::Admin).await.map_err(control_error)?;
            let mut answer = json!({ "level": level, "resumed": true, "state": shared.control.state() });
            if let Some(revision) = applied.revision {
                answer["revision"] = json!(revision);
            }
            Ok(json_response(StatusCode::OK, answer))
        }
        (Method::POST, "/reload") => {
            let _: Option<Value> = change_body(shared, req).await?;
            match reload::reload(shared, "admin") {
                Ok(version) => Ok(json_response(StatusCode::OK, json!({ "reloaded": true, "version": version }))),
                Err(e) => Err(error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())),
            }
        }
        (_, p) if ROUTES.iter().any(|&(_, path)| path == p) => {
            Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path"))
        }
        _ => Err(error(StatusCode::NOT_FOUND, "no such admin endpoint")),
    }
}

fn bad_request(e: request::RequestError) -> ApiError {
    error(StatusCode::BAD_REQUEST, &e.0)
}

/// Authorise a change and parse its JSON body (an empty body is `null`).
async fn change_body<T: serde::de::DeserializeOwned>(shared: &Shared, req: Request<ClientBody>) -> Result<T, ApiError> {
    authorize(shared, req.headers())?;
    if req.headers().contains_key(header::ORIGIN) && !console::same_origin_console(req.headers()) {
        return Err(error(StatusCode::FORBIDDEN, "cross-origin requests are refused on the admin API"));
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable"))?
        .to_bytes();
    if !bytes.is_empty() && !is_json {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the body as Content-Type: application/json"));
    }
    let bytes = if bytes.is_empty() { Bytes::from_static(b"null") } else { bytes };
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

/// Without a configured token (loopback only), changes are open.
/// A flags token may evaluate flags and nothing else (403).
fn authorize(shared: &Shared, headers: &http::HeaderMap) -> Result<(), ApiError> {
    if super::flags::presents_flags_token(shared, headers) {
        return Err(error(StatusCode::FORBIDDEN, "a flags token can evaluate flags and nothing else"));
    }
    let Some(token) = &shared.admin_token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(error(StatusCode::UNAUTHORIZED, "a valid admin token is required: Authorization: Bearer <token>"))
    }
}

fn control_error(e: ControlError) -> ApiError {
    let status = match e {
        ControlError::LockedByL3
        | ControlError::FrozenByL2(_)
        | ControlError::NotActive(_)
        | ControlError::Ramp(_)
        | ControlError::NoRamp => StatusCode::CONFLICT,
        ControlError::PercentOutOfRange(_) | ControlError::ConfirmRequired => StatusCode::BAD_REQUEST,
        ControlError::Persist { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        ControlError::StoreUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn readyz(shared: &Shared) -> Response<ResponseBody> {
    let ready = shared.snapshot.load().pool(PoolName::Stable).has_healthy();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, json!({ "ready": ready, "reason": if ready { "ok" } else { "no healthy stable endpoint" } }))
}

fn metrics(shared: &Shared) -> Response<ResponseBody> {
    shared.control.export(&shared.metrics);
    let mut response = Response::new(ResponseBody::text(shared.metrics.render()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// Everything an operator wants to see at 3 a.m., in one document.
pub fn status(shared: &Shared) -> Value {
    // Read before the route: the gate task publishes the gate, then its
    // view, so a view read first never shows a gate the route has not got.
    let schema = shared.schema.view();
    let snapshot = shared.snapshot.load();
    let state = shared.control.state();
    let route = shared.control.route();
    let reload = shared.reload_status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = crate::proxy::upstream::now_ms();
    let pools: serde_json::Map<String, Value> = PoolName::ALL
        .iter()
        .map(|&name| {
            let pool = snapshot.pool(name);
            let endpoints: Vec<Value> = pool
                .endpoints
                .iter()
                .map(|e| json!({ "address": e.authority, "healthy": e.is_healthy(now) }))
                .collect();
            (name.as_str().to_string(), json!({ "healthy": pool.has_healthy(), "endpoints": endpoints }))
        })
        .collect();
    let (blocked, blocked_reason) = shared.control.blocked();
    let mut active = serde_json::to_value(&state.rollbacks).unwrap_or_default();
    for (level, entry) in active.as_object_mut().into_iter().flatten() {
        let is_blocked = blocked.iter().any(|l| l.to_string() == *level);
        entry["blocked"] = json!(is_blocked);
        if is_blocked {
            entry["blocked_reason"] = json!(blocked_reason);
        }
    }
    json!({
        "percent": { "desired": state.desired_percent, "effective": route.percent },
        "rollback": {
            "level": state.highest_level().map_or(0, |l| l.number()),
            "active": active,
            "shedding": route.shedding,
            "blocked": blocked,
        },
        "ramp": driver::status(shared),
        "rules": shared.rules.view(),
        "pools": pools,
        "config": {
            "file": shared.config_path.display().to_string(),
            "version": reload.version,
            "loaded_at": reload.loaded_at,
            "last_reload_error": reload.last_error,
            "last_reload_error_at": reload.last_error_at,
            "restart_needed": reload.restart_needed,
            "group": snapshot.config.split.group,
        },
        "version": env!("CARGO_PKG_VERSION"),
        "ledger": shared.ledger.as_ref().map(|l| l.status()),
        "schema": schema,
        "fleet": shared.fleet.as_ref().map(|f| f.status(shared)),
        "shadow": snapshot.config.shadow.as_ref().map(|c| shared.shadow.status(c, &shared.metrics.shadow)),
    })
}

fn percent_view(shared: &Shared) -> Value {
    json!({ "desired": shared.control.state().desired_percent, "effective": shared.control.route().percent })
}

/// In fleet mode the fleet's audit (the store's entries) while the store
/// is reachable, else this replica's own log; `source` says which.
async fn audit(shared: &Shared, query: Option<&str>) -> Reply {
    let limit = match query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("limit=")) {
        None => 100,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, "limit must be a number from 1 to 10000"))?,
    };
    match shared.control.store().audit(shared.control.audit_path(), limit).await {
        Ok((entries, source)) => Ok(json_response(StatusCode::OK, json!({ "entries": entries, "source": source }))),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot read audit log: {e}"))),
    }
}

pub fn json_response(status: StatusCode, value: Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(format!("{value:#}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> ApiError {
    ApiError { status, message: message.to_string() }
}
