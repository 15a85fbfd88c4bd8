//! `grayshift ctl`: a thin client of the admin API. Prints the server's
//! answer (a readable summary for `status`) and fails with its message.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method};
use serde_json::Value;

use crate::client;
use crate::control::change::request;

/// What `grayshift ctl` asks: a read, or one of the admin API's changes,
/// sent as the request types the API parses
/// ([`crate::control::change::request`]). Declared once: this is also the
/// CLI's `ctl` subcommand (clap), so a new command is a variant here, its
/// request type, and its arm in [`run`].
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Percent, rollback level, rules, pools, config version.
    #[command(after_help = "Read next: docs/src/admin-api.md (grayshift ctl)")]
    Status {
        /// The raw JSON document, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Set the desired percent of users on `new` (0..100).
    #[command(after_help = "Read next: docs/src/concepts.md (Desired and effective percent)")]
    SetPercent {
        percent: i64,
        /// Fleet mode: return once every live member applied the change.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits before failing (naming the laggards).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Trigger a rollback level by hand.
    #[command(after_help = "Read next: docs/src/rules.md (Runbook at 3 a.m.)")]
    Rollback {
        level: String,
        #[arg(long)]
        reason: String,
        /// Send users to stable even though it does not support the
        /// database's schema (past the point of no return).
        #[arg(long)]
        force: bool,
    },
    /// Drive the progressive ramp ([ramp]): start, pause, resume, promote
    /// (to the next step now) or abort (everyone back on stable).
    #[command(after_help = "Read next: docs/src/migrations.md (Progressive ramp)")]
    Ramp {
        #[arg(value_parser = ["start", "pause", "resume", "promote", "abort"])]
        action: String,
    },
    /// Clear a rollback level (L3 needs --confirm).
    #[command(after_help = "Read next: docs/src/rules.md (Runbook at 3 a.m.)")]
    Resume {
        level: String,
        #[arg(long)]
        confirm: bool,
    },
    /// Reload the config file now.
    #[command(after_help = "Read next: docs/src/configuration.md (Hot reload)")]
    Reload,
    /// Shadow reads ([shadow]): comparisons, skips by reason, the fields
    /// that differ most, and the last mismatches with both values.
    #[command(after_help = "Read next: docs/src/shadow.md")]
    Shadow {
        /// `{"shadow": …, "samples": […]}` as the API answers them, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Run one command; `Err` carries the message to print before exiting 1.
pub async fn run(admin: &str, token: Option<&str>, command: Command) -> Result<String, String> {
    let headers: Vec<_> = token.map(|t| (header::AUTHORIZATION, format!("Bearer {t}"))).into_iter().collect();
    let (method, path, body) = match &command {
        Command::Status { .. } => (Method::GET, "/status", None),
        Command::Shadow { json } => return shadow(admin, &headers, *json).await,
        Command::SetPercent { percent, .. } => {
            (Method::PUT, "/percent", body(&request::SetPercent { percent: *percent }))
        }
        // The API takes exactly `L1`..`L3`; `ctl rollback l1` is what a user
        // may type, so ctl spells it for them.
        Command::Rollback { level, reason, force } => {
            let level = level.to_ascii_uppercase();
            (Method::POST, "/rollback", body(&request::Rollback { level, reason: Some(reason.clone()), force: *force }))
        }
        Command::Ramp { action } => (Method::POST, "/ramp", body(&request::Ramp { action: action.clone() })),
        Command::Resume { level, confirm } => {
            let level = level.to_ascii_uppercase();
            (Method::POST, "/resume", body(&request::Resume { level, confirm: *confirm }))
        }
        Command::Reload => (Method::POST, "/reload", None),
    };
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let value = send(admin, method, &url, &headers, body).await?;
    Ok(match command {
        Command::Status { json: false } => summary(&value),
        Command::SetPercent { wait: true, timeout, .. } => {
            let revision =
                value["revision"].as_i64().ok_or("--wait needs fleet mode: the answer carries no store revision")?;
            let waited = wait_applied(&url.replace("/percent", "/status"), &headers, revision, timeout).await?;
            format!("{value:#}\n{waited}")
        }
        _ => format!("{value:#}"),
    })
}

/// One request to the admin API: its JSON answer, or the server's message.
async fn send(
    admin: &str,
    method: Method,
    url: &str,
    headers: &[(header::HeaderName, String)],
    body: Option<Value>,
) -> Result<Value, String> {
    let body = body.map(|b| Bytes::from(b.to_string()));
    let (status, bytes) = client::request(method, url, None, headers, body, Duration::from_secs(30))
        .await
        .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    if !status.is_success() {
        let message = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_string);
        return Err(format!("{} {}: {message}", status.as_u16(), status.canonical_reason().unwrap_or("")));
    }
    Ok(value)
}

/// `ctl shadow`: `/status.shadow` and `GET /shadow/samples`, as tables.
async fn shadow(admin: &str, headers: &[(header::HeaderName, String)], json: bool) -> Result<String, String> {
    let base = admin.trim_end_matches('/');
    let status = send(admin, Method::GET, &format!("{base}/status"), headers, None).await?;
    let shadow = &status["shadow"];
    if shadow.is_null() {
        return Err("shadow reads are not configured: the config has no [shadow] section".into());
    }
    let samples = send(admin, Method::GET, &format!("{base}/shadow/samples"), headers, None).await?;
    if json {
        return Ok(format!("{:#}", serde_json::json!({ "shadow": shadow, "samples": samples["samples"] })));
    }
    Ok(shadow_tables(shadow, &samples["samples"]))
}

/// `/status.shadow` and the samples as readable lines: the counts, the
/// skips by reason, the top fields, then each mismatch with its fields'
/// values on both sides.
pub fn shadow_tables(shadow: &Value, samples: &Value) -> String {
    let mut out = format!(
        "shadow    sample {}  compared {}  matched {}  mismatched {}\n",
        text(&shadow["sample"]),
        shadow["compared"],
        shadow["matched"],
        shadow["mismatched"]
    );
    let skipped: Vec<String> = shadow["skipped"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    out += &format!("skipped   {}\n", if skipped.is_empty() { "none".to_string() } else { skipped.join("  ") });
    let fields = shadow["fields"].as_array().cloned().unwrap_or_default();
    if !fields.is_empty() {
        // RATE: how often the field differs across versions; WITHIN: within
        // one (noise cancellation on), what the rate is judged against.
        let rate = |v: &Value| v.as_f64().map_or("-".into(), |r| format!("{r:.4}"));
        out += &format!("\n{:<40} {:>10} {:>8} {:>8} {:>8}\n", "FIELD", "MISMATCHES", "NOISE", "RATE", "WITHIN");
        for f in &fields {
            out += &format!(
                "{:<40} {:>10} {:>8} {:>8} {:>8}\n",
                text(&f["path"]),
                text(&f["mismatches"]),
                text(&f["noise"]),
                rate(&f["rate"]),
                rate(&f["within_rate"])
            );
        }
    }
    let samples = samples.as_array().cloned().unwrap_or_default();
    out += &format!("\nlast mismatches, newest first: {}\n", samples.len());
    if !samples.is_empty() {
        out += &format!(
            "{:<22} {:<7} {:<30} {:<20} {:<7} {}\n",
            "AT", "METHOD", "PATH", "KEY", "SERVED", "STATUS stable/new"
        );
    }
    for s in &samples {
        out += &format!(
            "{:<22} {:<7} {:<30} {:<20} {:<7} {}/{}\n",
            text(&s["at"]),
            text(&s["method"]),
            text(&s["path"]),
            text(&s["key"]),
            text(&s["primary"]),
            text(&s["status"]["stable"]),
            text(&s["status"]["new"])
        );
        for f in s["fields"].as_array().into_iter().flatten() {
            out += &format!("    {:<36} stable {}  new {}\n", text(&f["path"]), text(&f["stable"]), text(&f["new"]));
        }
    }
    out.trim_end().to_string()
}

/// A change's request body as JSON.
fn body<T: serde::Serialize>(request: &T) -> Option<Value> {
    Some(serde_json::to_value(request).expect("request bodies serialize"))
}

/// Poll `/status` until every live member reports `revision` or later.
async fn wait_applied(
    status_url: &str,
    headers: &[(header::HeaderName, String)],
    revision: i64,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, bytes) = client::request(Method::GET, status_url, None, headers, None, Duration::from_secs(5))
            .await
            .map_err(|e| format!("cannot read {status_url}: {e}"))?;
        let status: Value = serde_json::from_slice(&bytes).map_err(|e| format!("bad /status answer: {e}"))?;
        let members = status["fleet"]["members"].as_array().cloned().unwrap_or_default();
        let behind = laggards(&members, revision);
        if behind.is_empty() && !members.is_empty() {
            return Ok(format!("applied by all {} members at revision {revision}", members.len()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "written at revision {revision}, but not applied after {timeout:?} by: {}",
                behind.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Members (by name) that have not applied `revision` yet.
pub fn laggards(members: &[Value], revision: i64) -> Vec<String> {
    members
        .iter()
        .filter(|m| m["revision"].as_i64().unwrap_or(0) < revision)
        .map(|m| format!("{} (at {})", text(&m["replica"]), m["revision"]))
        .collect()
}

/// The fleet part of `ctl status`: one line per member, who is behind the
/// newest revision, who is gone.
fn fleet_summary(f: &Value) -> String {
    let mut out = format!(
        "fleet     {} replica {} store {} revision {}\n",
        text(&f["name"]),
        text(&f["replica"]),
        text(&f["store"]),
        f["revision"]
    );
    let members = f["members"].as_array().cloned().unwrap_or_default();
    let newest = members.iter().filter_map(|m| m["revision"].as_i64()).max().unwrap_or(0);
    out += &format!(
        "{:<10}{:<24} {:>10} {:>9} {:>6}  {}\n",
        "member", "REPLICA", "REVISION", "EFFECTIVE", "LEVEL", "SEEN"
    );
    for m in &members {
        let rev = m["revision"].as_i64().unwrap_or(0);
        out += &format!(
            "{:<10}{:<24} {:>10} {:>8}% {:>6}  {}{}\n",
            "member",
            text(&m["replica"]),
            rev,
            m["effective_percent"],
            m["rollback_level"],
            text(&m["seen"]),
            if rev < newest { "  BEHIND" } else { "" }
        );
    }
    for gone in f["gone"].as_array().into_iter().flatten() {
        out += &format!("{:<10}{:<24} GONE (lease expired)\n", "member", text(gone));
    }
    if let Some(outbox) = f["outbox"].as_array().filter(|o| !o.is_empty()) {
        out +=
            &format!("fleet     unpublished rollbacks: {}\n", outbox.iter().map(text).collect::<Vec<_>>().join(", "));
    }
    if let Some(e) = f["error"].as_str() {
        out += &format!("fleet     ERROR {e}\n");
    }
    out
}

/// The `/status` document as a few aligned lines.
pub fn summary(s: &Value) -> String {
    let mut out = String::new();
    let p = &s["percent"];
    out += &format!("percent   desired {}%  effective {}%\n", p["desired"], p["effective"]);
    let level = s["rollback"]["level"].as_u64().unwrap_or(0);
    if level == 0 {
        out += "rollback  none\n";
    }
    if let Some(active) = s["rollback"]["active"].as_object() {
        for (name, a) in active {
            out += &format!(
                "rollback  {name} ACTIVE since {} by {}: {}",
                text(&a["since"]),
                text(&a["actor"]),
                text(&a["reason"])
            );
            if a["blocked"] == true {
                out += &format!(" [BLOCKED: {}]", text(&a["blocked_reason"]));
            }
            if let Some(hook) = a.get("hook").and_then(Value::as_str) {
                out += &format!(
                    " [hook {hook}{}]",
                    a.get("hook_detail").and_then(Value::as_str).map_or(String::new(), |d| format!(": {d}"))
                );
            }
            out += "\n";
        }
    }
    if let Some(g) = s["schema"].as_object() {
        out += &format!(
            "schema    {} version {}  gate {}  stable {}{}\n",
            text(&g["tool"]),
            text(&g["version"]),
            if g["new_ready"] == true { "open" } else { "CLOSED" },
            if g["stable_supported"] == true { "supported" } else { "NOT SUPPORTED (point of no return)" },
            g.get("why").and_then(Value::as_str).map_or(String::new(), |w| format!(": {w}")),
        );
    }
    if let Some(r) = s["ramp"].as_object() {
        out += &format!(
            "ramp      {} step {}/{} at {}%  hold left {}s  requests {}/{}\n",
            text(&r["state"]),
            r["step"],
            r["steps"].as_array().map_or(0, Vec::len),
            text(&r["percent"]),
            text(&r["hold_left"]),
            r["requests"],
            r["min_requests"],
        );
    }
    for rule in s["rules"].as_array().into_iter().flatten() {
        out += &format!(
            "rule      {:<24} {} {:<8} value {:<12} {}\n",
            text(&rule["name"]),
            text(&rule["level"]),
            text(&rule["state"]),
            rule["value"].as_f64().map_or("unknown".into(), |v| format!("{v:.4}")),
            text(&rule["why"]),
        );
    }
    for pool in ["stable", "new"] {
        let p = &s["pools"][pool];
        let endpoints: Vec<String> = p["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!("{}{}", text(&e["address"]), if e["healthy"].as_bool() == Some(true) { "" } else { " (DOWN)" })
            })
            .collect();
        out += &format!("pool      {pool:<7} {}\n", endpoints.join(", "));
    }
    let c = &s["config"];
    out += &format!("config    {} v{} loaded {}\n", text(&c["file"]), c["version"], text(&c["loaded_at"]));
    if let Some(err) = c["last_reload_error"].as_str() {
        out += &format!("config    LAST RELOAD FAILED at {}: {err}\n", text(&c["last_reload_error_at"]));
    }
    if let Some(list) = c["restart_needed"].as_array().filter(|l| !l.is_empty()) {
        out += &format!("config    restart needed for: {}\n", list.iter().map(text).collect::<Vec<_>>().join(", "));
    }
    if s["fleet"].is_object() {
        out += &fleet_summary(&s["fleet"]);
    }
    out.trim_end().to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shadow_tables_show_counts_skips_fields_and_both_values_of_each_sample() {
        let shadow = json!({
            "sample": "2%", "compared": 40, "matched": 37, "mismatched": 3,
            "skipped": { "busy": 2, "timeout": 0, "gate": 5 },
            "fields": [{ "path": "/total", "mismatches": 3, "noise": 0, "rate": 0.075 }],
        });
        let samples = json!([{
            "at": "2026-12-07T18:00:00Z", "method": "GET", "path": "/orders/17", "key": "user-17",
            "primary": "stable", "status": { "stable": 200, "new": 200 },
            "fields": [{ "path": "/total", "stable": "12.50", "new": null }],
        }]);
        let out = shadow_tables(&shadow, &samples);
        assert!(out.starts_with("shadow    sample 2%  compared 40  matched 37  mismatched 3\n"), "{out}");
        assert!(out.contains("skipped   busy 2  gate 5\n"), "zero reasons are left out: {out}");
        assert!(out.lines().any(|l| l.starts_with("/total ") && l.ends_with("3        0   0.0750        -")), "{out}");
        assert!(out.contains("/orders/17") && out.contains("user-17") && out.contains("200/200"), "{out}");
        assert!(
            out.lines().any(|l| l.trim_start().starts_with("/total") && l.ends_with("stable 12.50  new -")),
            "{out}"
        );
        let quiet = shadow_tables(&json!({ "sample": "1%", "compared": 0, "skipped": {}, "fields": [] }), &json!([]));
        assert!(quiet.contains("skipped   none") && quiet.ends_with("last mismatches, newest first: 0"), "{quiet}");
    }

    #[test]
    fn laggards_are_the_members_behind_the_revision_and_the_table_marks_them() {
        let members = vec![
            json!({ "replica": "a", "revision": 12, "effective_percent": 40, "rollback_level": 0, "seen": "t" }),
            json!({ "replica": "b", "revision": 9, "effective_percent": 10, "rollback_level": 0, "seen": "t" }),
        ];
        assert_eq!(laggards(&members, 12), ["b (at 9)"]);
        assert!(laggards(&members, 9).is_empty());
        let fleet = json!({
            "name": "n", "replica": "a", "store": "connected", "revision": 12,
            "members": members, "gone": ["c"], "outbox": ["L1"], "error": null,
        });
        let table = fleet_summary(&fleet);
        assert!(table.lines().any(|l| l.contains(" b ") && l.ends_with("BEHIND")), "{table}");
        assert!(!table.lines().any(|l| l.contains(" a ") && l.ends_with("BEHIND")), "{table}");
        assert!(table.contains("c") && table.contains("GONE"), "{table}");
        assert!(table.contains("unpublished rollbacks: L1"), "{table}");
    }
}
