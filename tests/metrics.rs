//! `/metrics`: every core metric (docs/src/metrics.md) is exported, and the output passes
//! `promtool check metrics` with no warnings.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

const CORE_METRICS: [&str; 11] = [
    "grayshift_requests_total",
    "grayshift_request_duration_seconds",
    "grayshift_upstream_errors_total",
    "grayshift_fallback_total",
    "grayshift_shed_total",
    "grayshift_gray_percent",
    "grayshift_rollback_level",
    "grayshift_rule_value",
    "grayshift_rule_firing",
    "grayshift_config_reloads_total",
    "grayshift_endpoint_healthy",
];

#[tokio::test]
async fn every_spec_metric_is_exported_and_promtool_is_happy() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let rule = r#"
[rollback]
interval = "100ms"

[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "1m" }
above = 0.05
for = "5m"
"#;
    let proxy = Proxy::start(&config(&[&stable], &[&new], 50, rule)).await;
    for i in 0..50 {
        proxy.get_as("/", Some(&format!("u{i}"))).await;
    }
    proxy.get_as("/status/503", Some("bob")).await;
    assert_eq!(proxy.admin("POST", "/reload", None, None).await.status, 200);
    eventually(std::time::Duration::from_secs(10), "rule gauges exported", || async {
        proxy
            .admin("GET", "/metrics", None, None)
            .await
            .text()
            .contains("grayshift_rule_value{rule=\"new-error-rate\"}")
            .then_some(())
    })
    .await;
    let reply = proxy.admin("GET", "/metrics", None, None).await;
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = reply.text();
    for name in CORE_METRICS {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from /metrics");
    }
    assert!(text.contains("grayshift_requests_total{code=\"5xx\",pool=\"new\"} 1"), "{text}");
    assert!(text.contains("grayshift_gray_percent{kind=\"desired\"} 50"));
    assert!(text.contains("grayshift_config_reloads_total{result=\"ok\"} 1"));

    let promtool = std::env::var("GRAYSHIFT_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool} (scripts/test.sh installs Debian's prometheus): {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
}
