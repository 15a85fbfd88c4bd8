//! A `prometheus` rule against a real Prometheus server scraping
//! grayshift's own `/metrics` every second (`GRAYSHIFT_TEST_PROMETHEUS`, or
//! `prometheus` on PATH).

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use common::*;
use rules_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_rule_reads_fleet_numbers_and_fires() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    // Prometheus needs grayshift's admin address and the rule needs
    // Prometheus's: start without rules, then reload with them.
    let mut proxy = Proxy::start(&config(&[&stable], &[&new], 20, "")).await;
    let prometheus = Prometheus::start(&[proxy.admin_addr]).await;
    let rules = format!(
        r#"
[rollback]
interval = "200ms"

[[rules]]
name = "fleet-desired-percent"
level = "L1"
signal = {{ source = "prometheus", url = "{url}", query = 'max(grayshift_gray_percent{{kind="desired"}})', timeout = "2s" }}
above = 30
for = "0s"

[[rules]]
name = "no-such-series"
level = "L2"
signal = {{ source = "prometheus", url = "{url}", query = "grayshift_no_such_metric_total", timeout = "2s" }}
above = 0

[[rules]]
name = "bad-promql"
level = "L2"
signal = {{ source = "prometheus", url = "{url}/", query = "sum(rate(", timeout = "2s" }}
above = 0
"#,
        url = prometheus.url,
    );
    proxy.rewrite_config(&config(&[&stable], &[&new], 20, &rules));
    let r = proxy.admin("POST", "/reload", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The first scrapes land: the rule reads grayshift's own desired percent.
    let r = eventually(DEADLINE, "the rule to read 20 from Prometheus", || async {
        let r = rule(&proxy, "fleet-desired-percent").await;
        (r["value"] == 20.0).then_some(r)
    })
    .await;
    assert_eq!(r["state"], "ok", "{r:#}");
    assert_eq!(r["source"], "prometheus");
    assert_eq!(r["why"], "value 20 not above 30");

    let empty = rule(&proxy, "no-such-series").await;
    assert_eq!(empty["state"], "unknown", "{empty:#}");
    assert_eq!(empty["why"], "signal unreadable: empty result: the query matched no series");
    let bad = rule(&proxy, "bad-promql").await;
    assert_eq!(bad["state"], "unknown", "{bad:#}");
    assert!(bad["why"].as_str().unwrap().contains("bad_data"), "{bad:#}");

    // Raise the percent; once Prometheus has scraped it, the rule fires.
    let r = proxy.admin("PUT", "/percent", Some(json!({ "percent": 40 })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status = wait_status(&proxy, "L1 from the Prometheus rule", |s| s["rollback"]["level"] == 1).await;
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(status["rollback"]["active"]["L1"]["actor"], "rule:fleet-desired-percent");
    let r = rule(&proxy, "fleet-desired-percent").await;
    assert_eq!(r["state"], "firing", "{r:#}");
    assert_eq!(r["value"], 40.0);
    assert_eq!(r["why"], "value 40 > 30 (for 0s: fires at once)");

    // Prometheus, in turn, sees the rule's own gauges.
    let seen = eventually(DEADLINE, "Prometheus to scrape grayshift_rule_firing", || async {
        let answer = prometheus.query("grayshift_rule_firing{rule=\"fleet-desired-percent\"} == 1").await;
        answer.contains("\"fleet-desired-percent\"").then_some(answer)
    })
    .await;
    assert!(seen.contains("\"success\""), "{seen}");
    proxy.stop().await;
}
