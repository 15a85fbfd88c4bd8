//! OFREP, the OpenFeature Remote Evaluation Protocol: the release is one
//! boolean flag named `split.group`, `true` on `new`. Every OpenFeature
//! SDK's OFREP provider reads it unchanged (docs/src/flags-ofrep.md).

use std::borrow::Cow;

use http::{HeaderMap, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{not_modified, not_modified_response, ok, with_etag, View};
use crate::config::PoolName;
use crate::metrics::FlagProtocol;
use crate::proxy::body::ResponseBody;
use crate::proxy::split::Reason;
use crate::Shared;

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub const SINGLE_PREFIX: &str = "/ofrep/v1/evaluate/flags/";

#[derive(Deserialize)]
struct EvaluationRequest<'a> {
    #[serde(default, borrow)]
    context: Option<Context<'a>>,
}

/// Other context attributes are accepted and ignored: the routing key is
/// all the decision reads.
#[derive(Deserialize)]
struct Context<'a> {
    #[serde(default, borrow, rename = "targetingKey")]
    targeting_key: Option<Cow<'a, str>>,
}

/// The protocol's error codes.
enum Refusal {
    Parse(String),
    InvalidContext(String),
    TargetingKeyMissing,
    FlagNotFound,
}

impl Refusal {
    fn into_response(self, key: Option<&str>) -> Response<ResponseBody> {
        let (status, code, details) = match self {
            Refusal::Parse(e) => (StatusCode::BAD_REQUEST, "PARSE_ERROR", format!("the body is not JSON: {e}")),
            Refusal::InvalidContext(e) => (StatusCode::BAD_REQUEST, "INVALID_CONTEXT", e),
            Refusal::TargetingKeyMissing => (
                StatusCode::BAD_REQUEST,
                "TARGETING_KEY_MISSING",
                "context.targetingKey (the user's routing key) is required".into(),
            ),
            Refusal::FlagNotFound => (
                StatusCode::NOT_FOUND,
                "FLAG_NOT_FOUND",
                format!("no flag {:?}: the one flag is the release group", key.unwrap_or("")),
            ),
        };
        let mut body = json!({ "errorCode": code, "errorDetails": details });
        if let Some(key) = key {
            body["key"] = json!(key);
        }
        super::json_response(status, body)
    }
}

/// The routing key from an evaluation request body.
fn targeting_key(body: &[u8]) -> Result<Cow<'_, str>, Refusal> {
    let request: EvaluationRequest = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Refusal::InvalidContext(format!("the context is not valid: {e}")),
        _ => Refusal::Parse(e.to_string()),
    })?;
    match request.context.and_then(|c| c.targeting_key) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(Refusal::TargetingKeyMissing),
    }
}

/// One evaluation, counted: `{key, value, variant, reason, metadata}`.
fn evaluate(shared: &Shared, view: &View, routing_key: &str) -> Value {
    let decision = view.snapshot.splitter.decision(routing_key.as_bytes(), view.route);
    shared.metrics.flag_evaluations.count(FlagProtocol::Ofrep, decision.pool, 1);
    let reason = match decision.reason {
        Reason::Percent => "SPLIT",
        Reason::ForcedNew | Reason::ForcedStable => "TARGETING_MATCH",
        Reason::RolledBack => "DISABLED",
    };
    json!({
        "key": view.snapshot.config.split.group,
        "value": decision.pool == PoolName::New,
        "variant": decision.pool.as_str(),
        "reason": reason,
        "metadata": {
            "bucket": decision.bucket,
            "percent": view.route.percent,
            "rollback_level": view.level.map_or(0, |l| l.number()),
            "schema_ready": view.schema_ready,
            "shedding": view.route.shedding,
        },
    })
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(super) fn single(shared: &Shared, view: &View, flag: &str, body: &[u8]) -> Response<ResponseBody> {
    if flag != view.snapshot.config.split.group {
        return Refusal::FlagNotFound.into_response(Some(flag));
    }
    match targeting_key(body) {
        Ok(key) => ok(evaluate(shared, view, &key)),
        Err(refusal) => refusal.into_response(Some(flag)),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag (the one) for a context,
/// with an `ETag` for `If-None-Match`.
pub(super) fn bulk(shared: &Shared, view: &View, headers: &HeaderMap, body: &[u8]) -> Response<ResponseBody> {
    let key = match targeting_key(body) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(None),
    };
    let etag = view.etag(Some(key.as_bytes()));
    if not_modified(headers, &etag) {
        return not_modified_response(etag);
    }
    with_etag(ok(json!({ "flags": [evaluate(shared, view, &key)] })), etag)
}

/// `GET /ofrep/v1/configuration`: poll (no push), booleans only.
pub(super) fn configuration() -> Response<ResponseBody> {
    ok(json!({
        "name": "grayshift",
        "capabilities": {
            "cacheInvalidation": { "polling": { "enabled": true, "minPollingIntervalMs": 1000 } },
            "flagEvaluation": { "supportedTypes": ["boolean"] },
        },
    }))
}
