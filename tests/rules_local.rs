//! The rule engine end to end with local and `http` signals: L1 from real
//! upstream errors, a hung signal that stalls nothing, notify webhooks.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use common::*;
use rules_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_fires_from_real_upstream_errors_and_sends_everyone_to_stable() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    new.fail_every.store(2, std::sync::atomic::Ordering::SeqCst); // half of new's answers are 500
    let proxy = Proxy::start(&config(&[&stable], &[&new], 50, L1_RULE)).await;

    // No traffic yet: too few requests is no verdict.
    let r = wait_rule(&proxy, "new-error-rate", "the rule's first evaluation", |r| r["state"] == "ok").await;
    assert!(r["why"].as_str().unwrap().contains("only 0 of min 10 requests"), "{r:#}");
    assert_eq!(r["level"], "L1");
    assert_eq!(r["min_requests"], 10);

    // Traffic from many users until the rule has fired.
    let mut user = 0;
    eventually(DEADLINE, "L1 to fire from new's 500s", || {
        user += 20;
        let proxy = &proxy;
        let first = user;
        async move {
            for u in first..first + 20 {
                proxy.get_as("/", Some(&format!("user-{u}"))).await;
            }
            (proxy.shared().control.route().percent == 0).then_some(())
        }
    })
    .await;

    let status = proxy.status().await;
    assert_eq!(status["percent"]["effective"], 0, "{status:#}");
    assert_eq!(status["percent"]["desired"], 50, "the desired percent is kept for the resume");
    assert_eq!(status["rollback"]["level"], 1);
    let l1 = &status["rollback"]["active"]["L1"];
    assert_eq!(l1["actor"], "rule:new-error-rate");
    assert!(l1["reason"].as_str().unwrap().starts_with("rule new-error-rate: error_rate "), "{l1:#}");
    let r = rule(&proxy, "new-error-rate").await;
    assert_eq!(r["state"], "firing", "{r:#}");
    assert!(r["value"].as_f64().unwrap() > 0.05, "{r:#}");
    assert!(r["why"].as_str().unwrap().contains("> 0.05 for"), "{r:#}");

    // Everyone is on stable now, whatever their bucket.
    let hits_on_new = new.hits();
    for u in 0..60 {
        let reply = proxy.get_as("/", Some(&format!("after-{u}"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.upstream(), "stable");
    }
    assert_eq!(new.hits(), hits_on_new);

    // The rule's gauges and the level are exported.
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("grayshift_rule_firing{rule=\"new-error-rate\"} 1"), "{metrics}");
    assert!(metrics.contains("grayshift_rollback_level 1"), "{metrics}");
    assert!(metrics.contains("grayshift_rule_value{rule=\"new-error-rate\"} 0."), "{metrics}");

    // The audit log names the rule.
    let audit = proxy.admin("GET", "/audit?limit=50", None, None).await.json();
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["actor"] == "rule:new-error-rate" && e["action"] == "rollback" && e["level"] == "L1"),
        "{audit:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_signal_is_unknown_and_stalls_no_other_rule() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let silent = Silent::start().await;
    let json_signal = JsonServer::start(r#"{"db": {"load": 0.2}}"#).await;
    let rules = format!(
        r#"
[rollback]
interval = "100ms"

[[rules]]
name = "hung"
level = "L2"
signal = {{ source = "http", url = "http://{silent}/load", pointer = "/load", timeout = "10s" }}
above = 0.8

[[rules]]
name = "http-load"
level = "L1"
signal = {{ source = "http", url = "{url}", pointer = "/db/load", timeout = "1s" }}
above = 0.8
for = "0s"
"#,
        silent = silent.addr,
        url = json_signal.url("/metrics.json"),
    );
    let proxy = Proxy::start(&config(&[&stable], &[&new], 30, &rules)).await;
    let r = wait_rule(&proxy, "http-load", "the http signal to be read", |r| r["state"] == "ok").await;
    assert_eq!(r["value"], 0.2);
    assert_eq!(r["why"], "value 0.2 not above 0.8");
    assert_eq!(r["source"], "http");

    // The hung rule has a 10 s timeout; the other one fires well before.
    let started = std::time::Instant::now();
    json_signal.set_body(r#"{"db": {"load": "0.93"}}"#);
    wait_status(&proxy, "L1 from the http signal", |s| s["rollback"]["level"] == 1).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "a hung signal stalled the others: {:?}",
        started.elapsed()
    );
    let hung = rule(&proxy, "hung").await;
    assert_eq!(hung["state"], "unknown", "{hung:#}");
    assert!(hung["value"].is_null());
    // A request through the proxy is not held up either.
    assert_eq!(proxy.get_as("/", Some("u")).await.status, 200);

    let hung = wait_rule(&proxy, "hung", "the hung read to time out", |r| {
        r["why"].as_str().is_some_and(|w| w.contains("timed out after 10s"))
    })
    .await;
    assert_eq!(hung["why"], "signal unreadable: http: timed out after 10s");
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("grayshift_signal_errors_total{rule=\"hung\"} "), "{metrics}");
    assert!(metrics.contains("grayshift_rule_value{rule=\"hung\"} NaN"), "unknown is NaN: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_change_is_posted_to_the_notify_webhooks() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let hooks = JsonServer::start("{}").await;
    let extra = format!("[[notify]]\nwebhook = \"{}\"\ntimeout = \"2s\"\n", hooks.url("/events"));
    let proxy = Proxy::start(&config(&[&stable], &[&new], 20, &extra)).await;

    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L2", "reason": "db is hot" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = proxy.admin("POST", "/resume", Some(json!({ "level": "L2" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let events = eventually(DEADLINE, "two notifications", || async {
        let got = hooks.received();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let rollback = events.iter().find(|e| e["event"] == "rollback").expect("a rollback event");
    assert_eq!(rollback["level"], "L2");
    assert_eq!(rollback["active"], true);
    assert_eq!(rollback["reason"], "db is hot");
    assert_eq!(rollback["actor"], "admin");
    assert_eq!(rollback["group"], "orders-v2");
    let resume = events.iter().find(|e| e["event"] == "resume").expect("a resume event");
    assert_eq!(resume["level"], "L2");
    assert_eq!(resume["active"], false);
    assert_eq!(resume["rollback_level"], 0);
}
