//! The L3 data-rollback hook: exec and webhook, failure reporting, and the
//! re-run of a hook that a restart interrupted.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::sync::Arc;

use common::*;
use rules_support::*;
use serde_json::json;

fn with_hook(hook: &str) -> String {
    format!("[rollback]\ninterval = \"100ms\"\nhook = {hook}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hook_keeps_l3_and_says_so() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (script, log) = hook_script(dir.path(), 3);
    let hook = format!("{{ exec = [\"{}\", \"{}\"], timeout = \"10s\" }}", script.display(), log.display());
    let proxy = Proxy::start_in(dir.clone(), &config(&[&stable], &[&new], 20, &with_hook(&hook))).await;

    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L3", "reason": "rows differ" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status = wait_status(&proxy, "the hook to fail", |s| s["rollback"]["active"]["L3"]["hook"] == "failed").await;
    let l3 = &status["rollback"]["active"]["L3"];
    let detail = l3["hook_detail"].as_str().unwrap();
    assert!(detail.contains("exit status: 3") && detail.contains("reason: rows differ"), "{l3:#}");
    assert_eq!(status["rollback"]["level"], 3, "a failed hook keeps L3 active");
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(hook_lines(&log), ["L3 admin"]);
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("grayshift_hook_runs_total{result=\"failed\"} 1"), "{metrics}");
    let audit = proxy.admin("GET", "/audit?limit=20", None, None).await.json();
    assert!(
        audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "hook" && e["new"] == "failed"),
        "{audit:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_hook_gets_the_activation() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let receiver = JsonServer::start("{}").await;
    let hook = format!("{{ webhook = \"{}\", timeout = \"2s\" }}", receiver.url("/rollback"));
    let proxy = Proxy::start(&config(&[&stable], &[&new], 20, &with_hook(&hook))).await;

    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L3", "reason": "orders differ" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status =
        wait_status(&proxy, "the webhook hook", |s| s["rollback"]["active"]["L3"]["hook"] == "succeeded").await;
    assert!(status["rollback"]["active"]["L3"]["hook_detail"].as_str().unwrap().contains("200"), "{status:#}");
    let calls = receiver.received();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["level"], "L3");
    assert_eq!(calls[0]["rule"], "admin");
    assert_eq!(calls[0]["reason"], "orders differ");

    // A second rollback while L3 is active is no new activation, so no
    // new hook run (Control sends no event for it).
    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L3", "reason": "again" })), None).await;
    assert_eq!(r.json()["activated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_interrupted_by_a_restart_runs_at_the_next_start() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (script, log) = hook_script(dir.path(), 0);
    // The state a crash in the middle of the hook leaves behind.
    let state = json!({
        "desired_percent": 20,
        "config_percent": 20,
        "rollbacks": { "L3": {
            "reason": "rule orders: value 3 > 0", "actor": "rule:orders",
            "since": "2025-01-01T00:00:00Z", "hook": "pending"
        } }
    });
    std::fs::write(dir.path().join("state.json"), state.to_string()).unwrap();
    let hook = format!("{{ exec = [\"{}\", \"{}\"], timeout = \"10s\" }}", script.display(), log.display());
    let proxy = Proxy::start_in(dir.clone(), &config(&[&stable], &[&new], 20, &with_hook(&hook))).await;

    assert_eq!(proxy.status().await["percent"]["effective"], 0, "L3 comes back with the restart");
    wait_status(&proxy, "the pending hook to run", |s| s["rollback"]["active"]["L3"]["hook"] == "succeeded").await;
    assert_eq!(hook_lines(&log), ["L3 orders"]);
}
