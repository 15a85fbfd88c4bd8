//! The migration-aware release end to end, against a real PostgreSQL and
//! real upstreams: the point of no return (a rollback blocked while stable
//! cannot run on the schema, taking effect by itself once it can, forced by
//! hand) and the progressive ramp (promotion with real traffic, held by a
//! pending rule, aborted by a firing one, paused by a percent set by hand,
//! continued after a restart, driven by `grayshift ctl ramp`).

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use grayshift::admin::ctl;
use rules_support::*;
use serde_json::{json, Value};

/// Alembic at `version`: `new` requires e3a1 (or the later f9), stable runs on
/// a1b2 and e3a1 only, so f9 is past the point of no return.
async fn alembic_at(version: &str) -> Scratch {
    Scratch::new(&format!(
        "create table alembic_version (version_num varchar(32) primary key); insert into alembic_version values ('{version}')"
    ))
    .await
}

fn schema_section(db: &Scratch) -> String {
    format!(
        "[schema]\nurl = \"{}\"\ntool = \"alembic\"\nnew_requires = [\"e3a1\", \"f9\"]\nstable_supports = [\"a1b2\", \"e3a1\"]\ninterval = \"100ms\"\n",
        db.url()
    )
}

/// Requests from users `first..first + n`; returns how many `new` served.
async fn traffic(proxy: &Proxy, first: usize, n: usize) -> usize {
    let mut on_new = 0;
    for u in first..first + n {
        on_new += usize::from(proxy.get_as("/", Some(&format!("user-{u}"))).await.upstream() == "new");
    }
    on_new
}

fn notify(url: &str, format: &str) -> String {
    format!("\n[[notify]]\nwebhook = \"{url}\"\nformat = \"{format}\"\ntimeout = \"2s\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_stable_supports_an_l1_is_blocked_then_takes_effect_by_itself_and_force_overrides() {
    let db = alembic_at("f9").await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let (hook_json, hook_slack) = (JsonServer::start("{}").await, JsonServer::start("{}").await);
    let extra = format!(
        "{L1_RULE}\n{}{}{}",
        schema_section(&db),
        notify(&hook_json.url("/json"), "json"),
        notify(&hook_slack.url("/slack"), "slack")
    );
    let proxy = Proxy::start(&config(&[&stable], &[&new], 50, &extra)).await;
    let status = wait_status(&proxy, "the schema read", |s| s["schema"]["new_ready"] == true).await;
    assert_eq!(status["schema"]["stable_supported"], false, "{status:#}");

    // Real errors from new fire L1, but stable cannot run on f9: blocked.
    new.fail_every.store(2, Ordering::SeqCst);
    let mut user = 0;
    eventually(DEADLINE, "L1 to fire", || {
        user += 20;
        let (proxy, first) = (&proxy, user);
        async move {
            traffic(proxy, first, 20).await;
            proxy.status().await["rollback"]["active"]["L1"].is_object().then_some(())
        }
    })
    .await;
    let status = proxy.status().await;
    let l1 = &status["rollback"]["active"]["L1"];
    assert_eq!(l1["blocked"], true, "{status:#}");
    assert!(l1["blocked_reason"].as_str().unwrap().contains("stable does not support schema f9"), "{l1}");
    assert_eq!(status["rollback"]["blocked"], json!(["L1"]));
    assert_eq!(status["percent"]["effective"], 50, "blocked: traffic stays");
    assert!(traffic(&proxy, 10_000, 60).await > 0, "users in new's half still reach new");
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.lines().any(|l| l == "grayshift_rollback_blocked 1"), "{metrics}");
    let blocked_json = eventually(DEADLINE, "the JSON notify", || {
        let got = hook_json.received();
        async move { got.into_iter().find(|n| n["event"] == "rollback" && n["level"] == "L1") }
    })
    .await;
    assert_eq!(blocked_json["blocked"], true, "{blocked_json}");
    assert!(blocked_json["text"].as_str().unwrap().contains("BLOCKED"), "{blocked_json}");
    let slack = eventually(DEADLINE, "the Slack notify", || {
        let got = hook_slack.received();
        async move { got.into_iter().find(|n| n["text"].as_str().is_some_and(|t| t.contains("L1 rollback BLOCKED"))) }
    })
    .await;
    assert_eq!(slack.as_object().unwrap().len(), 1, "Slack gets {{\"text\"}} only: {slack}");
    assert!(slack["text"].as_str().unwrap().contains("orders-v2"), "{slack}");

    // The schema goes back to one stable runs on: the L1 applies, no new rule firing needed.
    new.fail_every.store(0, Ordering::SeqCst);
    db.exec("update alembic_version set version_num = 'e3a1'").await;
    wait_status(&proxy, "the rollback to take effect", |s| s["percent"]["effective"] == 0).await;
    assert_eq!(traffic(&proxy, 20_000, 40).await, 0, "everyone on stable");
    eventually(DEADLINE, "the unblocked notify", || {
        let got = hook_slack.received();
        async move { got.iter().any(|n| n["text"].as_str().unwrap_or("").contains("takes effect now")).then_some(()) }
    })
    .await;

    // Past it again: blocked again; `ctl rollback L1 --force` sends users to stable anyway.
    db.exec("update alembic_version set version_num = 'f9'").await;
    wait_status(&proxy, "blocked again", |s| s["percent"]["effective"] == 50).await;
    let admin = format!("http://{}", proxy.admin_addr);
    let out = ctl::run(
        &admin,
        None,
        ctl::Command::Rollback { level: "L1".into(), reason: "roll back anyway".into(), force: true },
    )
    .await
    .unwrap();
    assert!(out.contains("\"blocked\": false"), "{out}");
    let status = proxy.status().await;
    assert_eq!(status["percent"]["effective"], 0, "{status:#}");
    assert_eq!(status["rollback"]["active"]["L1"]["force"], true);
    assert_eq!(traffic(&proxy, 30_000, 40).await, 0);
    let audit = proxy.admin("GET", "/audit?limit=100", None, None).await.json();
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"rollback_unblocked") && actions.contains(&"rollback forced"), "{actions:?}");
}

const RAMP: &str = r#"
[rollback]
interval = "100ms"

[ramp]
steps = [5, 20, 100]
hold = "1s"
min_requests = 20

[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "10s" }
above = 0.05
for = "3s"
min_requests = 5
"#;

/// `split.force_new = ["qa"]`: traffic that surely reaches new, whatever the step.
fn ramp_config(stable: &Upstream, new: &Upstream, extra: &str) -> String {
    config(&[stable], &[new], 0, &format!("{RAMP}{extra}")).replace(
        "key = [\"header:X-User-ID\", \"client_ip\"]",
        "key = [\"header:X-User-ID\", \"client_ip\"]\nforce_new = [\"qa\"]",
    )
}

async fn qa_requests(proxy: &Proxy, n: usize) {
    for _ in 0..n {
        proxy.get_as("/", Some("qa")).await;
    }
}

async fn ramp(proxy: &Proxy, action: &str) -> Result<String, String> {
    ctl::run(&format!("http://{}", proxy.admin_addr), None, ctl::Command::Ramp { action: action.into() }).await
}

async fn wait_ramp(proxy: &Proxy, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_status(proxy, what, |s| check(&s["ramp"])).await["ramp"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramp_promotes_with_real_traffic_is_held_by_a_pending_rule_and_aborted_by_a_firing_one() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let webhook = JsonServer::start("{}").await;
    let proxy = Proxy::start(&ramp_config(&stable, &new, &notify(&webhook.url("/n"), "slack"))).await;
    let idle = proxy.status().await["ramp"].clone();
    assert_eq!((idle["state"].as_str(), idle["steps"].clone()), (Some("idle"), json!([5, 20, 100])));

    ramp(&proxy, "start").await.unwrap();
    let status = proxy.status().await;
    assert_eq!((status["ramp"]["state"].as_str(), status["ramp"]["step"].as_u64()), (Some("running"), Some(1)));
    assert_eq!(status["percent"]["desired"], 5);

    // The hold passes but new has served too few requests: no promotion.
    let r = wait_ramp(&proxy, "the hold to pass", |r| r["hold_left"] == 0).await;
    assert_eq!((r["step"].as_u64(), r["requests"].as_u64()), (Some(1), Some(0)), "{r}");
    qa_requests(&proxy, 25).await;
    let r = wait_ramp(&proxy, "step 2", |r| r["step"] == 2).await;
    assert_eq!(r["percent"], 20);
    assert_eq!(proxy.status().await["percent"]["desired"], 20);

    // Errors on new: the rule is pending (its `for` is 3 s), the ramp holds.
    new.fail_every.store(1, Ordering::SeqCst);
    qa_requests(&proxy, 25).await;
    wait_rule(&proxy, "new-error-rate", "pending", |r| r["state"] == "pending").await;
    let r = wait_ramp(&proxy, "hold and requests done at step 2", |r| {
        r["hold_left"] == 0 && r["requests"].as_u64().unwrap_or(0) >= 20
    })
    .await;
    assert_eq!(r["step"], 2, "a pending rule holds the ramp: {r}");
    let status = proxy.status().await;
    assert_eq!(status["percent"]["desired"], 20, "{status:#}");

    // It fires: L1 aborts the ramp, everyone on stable.
    let r = wait_ramp(&proxy, "the ramp aborted", |r| r["state"] == "aborted").await;
    assert_eq!(r["step"], 2);
    let status = proxy.status().await;
    assert_eq!(status["percent"]["effective"], 0);
    assert!(status["rollback"]["active"]["L1"].is_object());
    assert!(ramp(&proxy, "resume").await.unwrap_err().contains("409"), "an aborted ramp does not resume");
    let texts: Vec<String> = webhook.received().iter().filter_map(|n| n["text"].as_str().map(str::to_string)).collect();
    for want in ["ramp started at step 1", "ramp promoted to step 2 (20%)", "ramp aborted at step 2"] {
        assert!(texts.iter().any(|t| t.contains(want)), "{want:?} not in {texts:#?}");
    }
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.lines().any(|l| l == "grayshift_ramp_step 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_the_ramp_a_manual_percent_pauses_it_and_a_restart_keeps_the_hold() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = ramp_config(&stable, &new, "").replace("hold = \"1s\"", "hold = [\"1s\", \"4s\"]");
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut proxy = Proxy::start_in(dir.clone(), &text).await;
    assert!(ramp(&proxy, "pause").await.unwrap_err().contains("409"), "nothing to pause yet");
    ramp(&proxy, "start").await.unwrap();
    let out = ramp(&proxy, "promote").await.unwrap();
    assert!(out.contains("\"step\": 2"), "{out}");
    assert_eq!(proxy.status().await["percent"]["desired"], 20);

    // A percent set by hand: the operator took over.
    proxy.admin("PUT", "/percent", Some(json!({ "percent": 10 })), None).await;
    let r = proxy.status().await["ramp"].clone();
    assert_eq!(r["state"], "paused", "{r}");
    ramp(&proxy, "resume").await.unwrap();

    // Bake part of the 4 s hold, restart: it goes on from where it was.
    qa_requests(&proxy, 25).await;
    let before = wait_ramp(&proxy, "some of the hold baked", |r| r["hold_left"].as_u64().is_some_and(|h| h <= 3)).await;
    proxy.stop().await;
    let proxy2 = Proxy::start_in(dir, &text).await;
    let after = proxy2.status().await["ramp"].clone();
    assert_eq!((after["state"].as_str(), after["step"].as_u64()), (Some("running"), Some(2)), "{after}");
    assert!(after["hold_left"].as_u64() <= before["hold_left"].as_u64(), "{before} then {after}");
    assert!(after["requests"].as_u64() >= Some(20), "{after}");
    let done = wait_ramp(&proxy2, "the last step", |r| r["state"] == "done").await;
    assert_eq!(done["step"], 3);
    assert_eq!(proxy2.status().await["percent"]["effective"], 100);
    assert!(ramp(&proxy2, "promote").await.unwrap_err().contains("nothing to promote"));
    ramp(&proxy2, "start").await.unwrap();
    assert!(ramp(&proxy2, "abort").await.is_ok());
    assert_eq!(proxy2.status().await["percent"]["desired"], 0, "abort sends everyone to stable");
    let r = proxy2.admin("POST", "/ramp", Some(json!({ "action": "jump" })), None).await;
    assert_eq!(r.status, 400);
    drop(proxy);
}
