//! The Unleash client API: the release as one feature toggle named
//! `split.group` with a `flexibleRollout` strategy. grayshift's bucket is
//! Unleash's `normalizedHash - 1`, so an unmodified Unleash SDK decides
//! locally what the proxy decides (docs/src/flags-unleash.md).

use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

use super::{error, not_modified, not_modified_response, ok, with_etag, View};
use crate::config::PoolName;
use crate::metrics::FlagProtocol;
use crate::proxy::body::ResponseBody;
use crate::proxy::split::KeySource;
use crate::Shared;

/// The Unleash context field that carries the routing key of `source`.
pub fn stickiness(source: &KeySource) -> String {
    match source {
        KeySource::Header(name) if name == "x-user-id" => "userId".into(),
        KeySource::Header(name) => name.as_str().into(),
        KeySource::Cookie(name) => name.clone(),
        KeySource::ClientIp => "remoteAddress".into(),
    }
}

/// `GET /api/client/features`, with an `ETag` for `If-None-Match`.
pub(super) fn features(view: &View, headers: &HeaderMap) -> Response<ResponseBody> {
    let etag = view.etag(None);
    if not_modified(headers, &etag) {
        return not_modified_response(etag);
    }
    let split = &view.snapshot.config.split;
    // Only the first key source can be the stickiness: a worker passes the
    // key of that source (docs/src/flags-unleash.md).
    let field = split.key.first().map_or_else(|| "remoteAddress".into(), stickiness);
    let mut strategies = Vec::new();
    if !split.force_new.is_empty() {
        strategies.push(json!({
            "name": "default",
            "parameters": {},
            "constraints": [{ "contextName": field, "operator": "IN", "values": sorted(&split.force_new) }],
        }));
    }
    let mut rollout = json!({
        "name": "flexibleRollout",
        "parameters": { "rollout": view.route.percent.to_string(), "stickiness": field, "groupId": split.group },
        "constraints": [],
    });
    if !split.force_stable.is_empty() {
        rollout["constraints"] =
            json!([{ "contextName": field, "operator": "NOT_IN", "values": sorted(&split.force_stable) }]);
    }
    strategies.push(rollout);
    let body = json!({
        "version": 2,
        "features": [{
            "name": split.group,
            "description": "grayshift release: enabled = the new pool",
            "type": "release",
            "project": "default",
            "enabled": !view.route.new_refused(),
            "stale": false,
            "impressionData": false,
            "strategies": strategies,
            "variants": [],
        }],
        "segments": [],
    });
    with_etag(ok(body), etag)
}

fn sorted(set: &std::collections::HashSet<String>) -> Vec<&String> {
    let mut keys: Vec<&String> = set.iter().collect();
    keys.sort();
    keys
}

/// `POST /api/client/register`: accepted, nothing kept.
pub(super) fn register(body: &[u8]) -> Response<ResponseBody> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => super::json_response(StatusCode::ACCEPTED, json!({})),
        Err(e) => error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
    }
}

/// The most one SDK report may add per variant: an SDK reports every few
/// seconds, so this is far above any real count, and a flags token cannot
/// wrap or swamp the counter with one request.
const MAX_REPORTED: u64 = 10_000_000;

/// `POST /api/client/metrics`: the SDK's own counts of the release toggle
/// (`yes` = new, `no` = stable) go to `grayshift_flag_evaluations_total`.
pub(super) fn metrics(shared: &Shared, view: &View, body: &[u8]) -> Response<ResponseBody> {
    let report: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
    };
    let toggle = &report["bucket"]["toggles"][view.snapshot.config.split.group.as_str()];
    for (field, pool) in [("yes", PoolName::New), ("no", PoolName::Stable)] {
        if let Some(n) = toggle[field].as_u64() {
            shared.metrics.flag_evaluations.count(FlagProtocol::Unleash, pool, n.min(MAX_REPORTED));
        }
    }
    super::json_response(StatusCode::ACCEPTED, json!({}))
}
