//! L2 and L3 against a real PostgreSQL (`GRAYSHIFT_TEST_PG_URL`, else the
//! machine's own on 127.0.0.1:5432; the tests fail when none answers).
//! Each test works on its own uniquely named tables.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::time::{Duration, Instant};

use common::*;
use rules_support::*;
use serde_json::json;

fn l2_config(stable: &Upstream, new: &Upstream, table: &str) -> String {
    let rules = format!(
        r#"
[rollback]
interval = "100ms"
recover_for = "1s"

[features]
paths = ["/api/v2/checkout"]
status = 503
retry_after = "7s"

[[rules]]
name = "primary-db-load"
level = "L2"
signal = {{ source = "postgres", url = "{url}", query = "select load from {table}", timeout = "2s" }}
above = 0.8
for = "300ms"
"#,
        url = pg_url(),
    );
    config(&[stable], &[new], 20, &rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_sheds_feature_paths_freezes_the_percent_and_clears_by_itself() {
    let db = pg_connect().await;
    let table = unique("gs_l2_load");
    let _cleanup = Tables { names: vec![table.clone()] };
    db.batch_execute(&format!("create table {table} (load float8); insert into {table} values (0.1)")).await.unwrap();
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&l2_config(&stable, &new, &table)).await;

    let r = wait_rule(&proxy, "primary-db-load", "a first reading", |r| r["state"] == "ok").await;
    assert_eq!(r["value"], 0.1);
    assert_eq!(r["source"], "postgres");
    assert_eq!(proxy.get_as("/api/v2/checkout", Some("u1")).await.status, 200);

    db.execute(&format!("update {table} set load = 0.95"), &[]).await.unwrap();
    let status = wait_status(&proxy, "L2 to fire", |s| s["rollback"]["level"] == 2).await;
    assert!(status["rollback"]["shedding"].as_bool().unwrap());
    assert_eq!(status["rollback"]["active"]["L2"]["actor"], "rule:primary-db-load");
    assert_eq!(status["percent"]["effective"], 20, "L2 does not change the percent");
    let r = rule(&proxy, "primary-db-load").await;
    assert_eq!(r["state"], "firing", "{r:#}");
    assert_eq!(r["value"], 0.95);

    // The new-feature entry points are shed; everything else is served.
    let shed = proxy.get_as("/api/v2/checkout/confirm", Some("u1")).await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.headers["retry-after"], "7");
    assert_eq!(proxy.get_as("/api/v1/orders", Some("u1")).await.status, 200);
    // The percent is frozen: no raise, lowering is fine.
    let raise = proxy.admin("PUT", "/percent", Some(json!({ "percent": 30 })), None).await;
    assert_eq!(raise.status, 409, "{}", raise.text());
    let lower = proxy.admin("PUT", "/percent", Some(json!({ "percent": 15 })), None).await;
    assert_eq!(lower.status, 200, "{}", lower.text());

    // Load back down: L2 clears by itself, not before recover_for.
    db.execute(&format!("update {table} set load = 0.3"), &[]).await.unwrap();
    let fine_from = Instant::now();
    wait_status(&proxy, "L2 to clear by itself", |s| s["rollback"]["level"] == 0).await;
    assert!(
        fine_from.elapsed() >= Duration::from_secs(1),
        "cleared after {:?}, before recover_for",
        fine_from.elapsed()
    );
    assert_eq!(proxy.get_as("/api/v2/checkout", Some("u1")).await.status, 200);
    let raise = proxy.admin("PUT", "/percent", Some(json!({ "percent": 30 })), None).await;
    assert_eq!(raise.status, 200, "{}", raise.text());
    let audit = proxy.admin("GET", "/audit?limit=50", None, None).await.json();
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "resume" && e["level"] == "L2" && e["actor"] == "rule:primary-db-load"),
        "{audit:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_l2_is_not_cleared_by_the_rules() {
    let db = pg_connect().await;
    let table = unique("gs_l2_manual");
    let _cleanup = Tables { names: vec![table.clone()] };
    db.batch_execute(&format!("create table {table} (load float8); insert into {table} values (0.1)")).await.unwrap();
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&l2_config(&stable, &new, &table)).await;
    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L2", "reason": "maintenance" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Well past recover_for (1s) with the signal fine all along.
    for _ in 0..3 {
        wait_more_evaluations(&proxy, "primary-db-load").await;
    }
    let status = proxy.status().await;
    assert_eq!(status["rollback"]["level"], 2, "{status:#}");
    assert_eq!(rule(&proxy, "primary-db-load").await["state"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unknown_and_recovers() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dead = dead_addr();
    let rules = format!(
        r#"
[rollback]
interval = "100ms"

[[rules]]
name = "down"
level = "L2"
signal = {{ source = "postgres", url = "postgresql://postgres@{dead}/postgres", query = "select 1", timeout = "1s" }}
above = 0.8

[[rules]]
name = "bad-sql"
level = "L2"
signal = {{ source = "postgres", url = "{url}", query = "select nope from no_such_table_here", timeout = "2s" }}
above = 0.8

[[rules]]
name = "numeric"
level = "L2"
signal = {{ source = "postgres", url = "{url}", query = "select 0.25::numeric", timeout = "2s" }}
above = 0.8
"#,
        url = pg_url(),
    );
    let proxy = Proxy::start(&config(&[&stable], &[&new], 20, &rules)).await;
    let down =
        wait_rule(&proxy, "down", "the connect to fail", |r| r["state"] == "unknown" && r["evaluated_at"].is_string())
            .await;
    assert!(down["why"].as_str().unwrap().starts_with("signal unreadable: cannot connect to PostgreSQL"), "{down:#}");
    let bad = wait_rule(&proxy, "bad-sql", "the query to fail", |r| r["evaluated_at"].is_string()).await;
    assert_eq!(bad["state"], "unknown");
    assert!(bad["why"].as_str().unwrap().contains("no_such_table_here"), "{bad:#}");
    let numeric = wait_rule(&proxy, "numeric", "a numeric reading", |r| r["state"] == "ok").await;
    assert_eq!(numeric["value"], 0.25);
    assert_eq!(proxy.status().await["rollback"]["level"], 0, "unknown signals do not fire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_rolls_back_runs_the_hook_once_and_survives_a_restart() {
    let db = pg_connect().await;
    let (old, new_table) = (unique("gs_orders_v1"), unique("gs_orders_v2"));
    let _cleanup = Tables { names: vec![old.clone(), new_table.clone()] };
    db.batch_execute(&format!(
        "create table {old} (id int primary key, total int, status text);
         create table {new_table} (id int primary key, total int, status text);
         insert into {old} values (1, 100, 'paid'), (2, 250, 'new');
         insert into {new_table} values (1, 100, 'paid'), (2, 250, 'new');"
    ))
    .await
    .unwrap();
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let (script, log) = hook_script(dir.path(), 0);
    let query = format!(
        "select count(*) from {old} o full join {new_table} n using (id) \
         where o.id is null or n.id is null or (o.total, o.status) is distinct from (n.total, n.status)"
    );
    let rules = format!(
        r#"
[rollback]
interval = "100ms"
hook = {{ exec = ["{script}", "{log}"], timeout = "10s" }}

[[rules]]
name = "orders-consistency"
level = "L3"
signal = {{ source = "postgres", url = "{url}", query = "{query}", timeout = "2s" }}
above = 0
for = "0s"
"#,
        script = script.display(),
        log = log.display(),
        url = pg_url(),
    );
    let text = config(&[&stable], &[&new], 40, &rules);
    let mut proxy = Proxy::start_in(dir.clone(), &text).await;
    let r = wait_rule(&proxy, "orders-consistency", "a first reading", |r| r["state"] == "ok").await;
    assert_eq!(r["value"], 0.0);

    // One row differs between the schemas: L3 at once.
    db.execute(&format!("update {new_table} set total = 999 where id = 2"), &[]).await.unwrap();
    let status = wait_status(&proxy, "L3 to fire", |s| s["rollback"]["level"] == 3).await;
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(proxy.shared().control.route().percent, 0);
    let status =
        wait_status(&proxy, "the hook to finish", |s| s["rollback"]["active"]["L3"]["hook"] == "succeeded").await;
    let l3 = &status["rollback"]["active"]["L3"];
    assert!(l3["hook_detail"].as_str().unwrap().contains("exited 0"), "{l3:#}");
    assert!(l3["hook_detail"].as_str().unwrap().contains("reason: rule orders-consistency: value 1 > 0"), "{l3:#}");
    assert_eq!(hook_lines(&log), ["L3 orders-consistency"]);

    // More evaluations with the rule still firing: the hook does not run again.
    wait_more_evaluations(&proxy, "orders-consistency").await;
    assert_eq!(rule(&proxy, "orders-consistency").await["state"], "firing");
    assert_eq!(hook_lines(&log), ["L3 orders-consistency"], "the hook ran once per activation");

    // Locked: no percent change, no resume without confirmation.
    let put = proxy.admin("PUT", "/percent", Some(json!({ "percent": 10 })), None).await;
    assert_eq!(put.status, 409, "{}", put.text());
    let resume = proxy.admin("POST", "/resume", Some(json!({ "level": "L3" })), None).await;
    assert_eq!(resume.status, 400, "{}", resume.text());
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("grayshift_hook_runs_total{result=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("grayshift_rollback_level 3"), "{metrics}");

    // A restart on the same state file comes back in L3; the hook, which
    // succeeded, does not run again.
    proxy.stop().await;
    let proxy = Proxy::start_in(dir.clone(), &text).await;
    let status = proxy.status().await;
    assert_eq!(status["rollback"]["level"], 3, "{status:#}");
    assert_eq!(status["rollback"]["active"]["L3"]["hook"], "succeeded");
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(status["percent"]["desired"], 40);
    wait_rule(&proxy, "orders-consistency", "an evaluation after the restart", |r| r["state"] == "firing").await;
    wait_more_evaluations(&proxy, "orders-consistency").await;
    assert_eq!(hook_lines(&log), ["L3 orders-consistency"]);

    // Data repaired, confirmed resume: back to the desired percent.
    db.execute(&format!("update {new_table} set total = 250 where id = 2"), &[]).await.unwrap();
    wait_rule(&proxy, "orders-consistency", "the data to be consistent", |r| r["state"] == "ok").await;
    let resume = proxy.admin("POST", "/resume", Some(json!({ "level": "L3", "confirm": true })), None).await;
    assert_eq!(resume.status, 200, "{}", resume.text());
    assert_eq!(proxy.status().await["percent"]["effective"], 40);
}
