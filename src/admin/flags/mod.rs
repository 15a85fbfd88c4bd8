//! The flags API (docs/src/flags-ofrep.md, docs/src/flags-unleash.md): the
//! release as a feature flag for workers and apps that do not go through
//! the proxy. Both protocols answer with [`Splitter::decision`], the
//! function the request path calls, on the route it reads (in fleet mode,
//! the fleet's state this replica applied), so a worker and a request for
//! the same user agree.
//!
//! [`Splitter::decision`]: crate::proxy::split::Splitter::decision

mod ofrep;
mod unleash;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::api::json_response;
use super::console;
use crate::config::{FlagsConfig, Level};
use crate::control::state::Route;
use crate::proxy::body::{ClientBody, ResponseBody};
use crate::proxy::snapshot::Snapshot;
use crate::Shared;

/// The admin API's body limit applies here too.
const MAX_BODY: usize = 64 * 1024;

/// Whether `path` belongs to the flags API (404 without `[flags]`).
pub fn is_flags_path(path: &str) -> bool {
    path.starts_with("/ofrep/") || path.starts_with("/api/client/")
}

/// Serve one flags API request: authenticate, then hand it to its protocol.
pub async fn route(shared: &Shared, req: Request<ClientBody>) -> Response<ResponseBody> {
    let snapshot = shared.snapshot.load_full();
    let Some(flags) = &snapshot.config.flags else {
        return error(StatusCode::NOT_FOUND, "no such admin endpoint ([flags] is not configured)");
    };
    if !may_evaluate(flags, shared.admin_token.as_deref(), req.headers()) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a flags or admin token is required: Authorization: Bearer <token> (or the bare token)",
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = req.uri().path().to_string();
    let view = View {
        snapshot: &snapshot,
        route: shared.control.route(),
        level: highest_level(shared),
        schema_ready: shared.control.stance().new_ready(),
    };
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/ofrep/v1/evaluate/flags") => match read_body(req).await {
            Ok((headers, body)) => ofrep::bulk(shared, &view, &headers, &body),
            Err(response) => response,
        },
        (Method::POST, p) if p.starts_with(ofrep::SINGLE_PREFIX) => match read_body(req).await {
            Ok((_, body)) => ofrep::single(shared, &view, &p[ofrep::SINGLE_PREFIX.len()..], &body),
            Err(response) => response,
        },
        (Method::GET, "/ofrep/v1/configuration") => ofrep::configuration(),
        (Method::GET, "/api/client/features") => unleash::features(&view, req.headers()),
        (Method::POST, "/api/client/register") => match read_body(req).await {
            Ok((_, body)) => unleash::register(&body),
            Err(response) => response,
        },
        (Method::POST, "/api/client/metrics") => match read_body(req).await {
            Ok((_, body)) => unleash::metrics(shared, &view, &body),
            Err(response) => response,
        },
        (_, p) if super::api::ROUTES.iter().any(|&(_, route)| route == p) || p.starts_with(ofrep::SINGLE_PREFIX) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path")
        }
        _ => error(StatusCode::NOT_FOUND, "no such flags endpoint"),
    }
}

/// What one flags answer reads, loaded once: the config snapshot, the
/// route (one atomic load) and the highest active level (for metadata).
struct View<'a> {
    snapshot: &'a Snapshot,
    route: Route,
    level: Option<Level>,
    /// `new` runs on the schema (the gate is open); false while no side
    /// supports it, even when the held route still sends users to `new`.
    schema_ready: bool,
}

impl View<'_> {
    /// Changes exactly when an answer can: the route (percent, L1/L3, L2,
    /// gate), the highest level, the group, key sources and force lists.
    /// `key` adds the evaluated key (OFREP bulk answers are per context).
    fn etag(&self, key: Option<&[u8]>) -> HeaderValue {
        use std::hash::Hasher;
        let mut hasher = mur3::Hasher128::with_seed(0);
        hasher.write(&self.snapshot.splitter.fingerprint.to_le_bytes());
        let r = self.route;
        hasher.write(&[r.percent, r.rolled_back as u8, r.shedding as u8, r.gate_closed as u8, self.schema_ready as u8]);
        hasher.write(&[self.level.map_or(0, |l| l.number())]);
        if let Some(key) = key {
            hasher.write(&(key.len() as u64).to_le_bytes());
            hasher.write(key);
        }
        let (a, b) = hasher.finish128();
        HeaderValue::try_from(format!("\"{a:016x}{b:016x}\"")).expect("hex is a valid header value")
    }
}

/// `If-None-Match` names `etag`. `*` is not honoured: the bulk evaluation is a
/// POST, and a client that has no tag yet must get the answer, not a 304.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else { return false };
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag.strip_prefix("W/").unwrap_or(tag) == etag
        },
    )
}

fn with_etag(mut response: Response<ResponseBody>, etag: HeaderValue) -> Response<ResponseBody> {
    response.headers_mut().insert(header::ETAG, etag);
    response
}

fn not_modified_response(etag: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(String::new()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    with_etag(response, etag)
}

/// The highest active level, for answers' metadata and the ETag. It takes
/// the control state's lock, which the request path never does; the
/// decision itself reads only the lock-free route.
fn highest_level(shared: &Shared) -> Option<Level> {
    shared.control.highest_level()
}

/// The token a request presents: `Authorization: Bearer <token>`
/// (OpenFeature providers) or the bare `Authorization: <token>` (Unleash SDKs).
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes().trim_ascii();
    let token = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// Every token is compared, in constant time, whether or not one matched.
fn matches_any<'a>(presented: &[u8], tokens: impl Iterator<Item = &'a str>) -> bool {
    tokens.fold(false, |found, token| found | bool::from(presented.ct_eq(token.as_bytes())))
}

/// A flags token or the admin token.
fn may_evaluate(flags: &FlagsConfig, admin_token: Option<&str>, headers: &HeaderMap) -> bool {
    presented(headers).is_some_and(|p| matches_any(p, flags.tokens.0.iter().map(String::as_str).chain(admin_token)))
}

/// Whether a request presents a flags token (that is not also the admin
/// token): the admin API refuses changes made with one (403).
pub fn presents_flags_token(shared: &Shared, headers: &HeaderMap) -> bool {
    let config = shared.config();
    let (Some(flags), Some(p)) = (&config.flags, presented(headers)) else {
        return false;
    };
    matches_any(p, flags.tokens.0.iter().map(String::as_str))
        && !matches_any(p, shared.admin_token.as_deref().into_iter())
}

/// The body of a POST, under the admin API's rules: no cross-origin
/// request, JSON only, at most [`MAX_BODY`] bytes. An empty body is `{}`.
async fn read_body(req: Request<ClientBody>) -> Result<(HeaderMap, Bytes), Response<ResponseBody>> {
    let (parts, body) = req.into_parts();
    if parts.headers.contains_key(header::ORIGIN) && !console::same_origin_console(&parts.headers) {
        return Err(error(StatusCode::FORBIDDEN, "cross-origin requests are refused on the admin API"));
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable"))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok((parts.headers, Bytes::from_static(b"{}")));
    }
    if !is_json {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the body as Content-Type: application/json"));
    }
    Ok((parts.headers, bytes))
}

fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    json_response(status, json!({ "error": message }))
}

fn ok(value: Value) -> Response<ResponseBody> {
    json_response(StatusCode::OK, value)
}
