//! `grayshift ctl`: a thin client of the admin API. Prints the server's
//! answer (a readable summary for `status`) and fails with its message.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method};
use serde_json::{json, Value};

use crate::client;

pub enum Command {
    Status { json: bool },
    SetPercent(i64),
    Rollback { level: String, reason: String },
    Resume { level: String, confirm: bool },
    Reload,
}

/// Run one command; `Err` carries the message to print before exiting 1.
pub async fn run(admin: &str, token: Option<&str>, command: Command) -> Result<String, String> {
    let (method, path, body) = match &command {
        Command::Status { .. } => (Method::GET, "/status", None),
        Command::SetPercent(n) => (Method::PUT, "/percent", Some(json!({ "percent": n }))),
        Command::Rollback { level, reason } => {
            (Method::POST, "/rollback", Some(json!({ "level": level, "reason": reason })))
        }
        Command::Resume { level, confirm } => {
            (Method::POST, "/resume", Some(json!({ "level": level, "confirm": confirm })))
        }
        Command::Reload => (Method::POST, "/reload", None),
    };
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let headers: Vec<_> = token.map(|t| (header::AUTHORIZATION, format!("Bearer {t}"))).into_iter().collect();
    let body = body.map(|b| Bytes::from(b.to_string()));
    let (status, bytes) = client::request(method, &url, &headers, body, Duration::from_secs(30))
        .await
        .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    if !status.is_success() {
        let message = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_string);
        return Err(format!("{} {}: {message}", status.as_u16(), status.canonical_reason().unwrap_or("")));
    }
    Ok(match command {
        Command::Status { json: false } => summary(&value),
        _ => format!("{value:#}"),
    })
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
            if let Some(hook) = a.get("hook").and_then(Value::as_str) {
                out += &format!(
                    " [hook {hook}{}]",
                    a.get("hook_detail").and_then(Value::as_str).map_or(String::new(), |d| format!(": {d}"))
                );
            }
            out += "\n";
        }
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
    out.trim_end().to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
