//! Run-time control end to end: admin API, auth, hot reload, persisted
//! state, audit log, and the `grayshift` binary's `ctl`, `check`, `bucket`.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

const TOKEN: &str = "s3cret-token";

/// A config whose admin token comes from a file in the proxy's dir.
fn with_token(text: &str) -> String {
    text.replace("[admin]\nlisten = \"127.0.0.1:0\"", "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{dir}/token\"")
}

async fn start_with_token(text: &str) -> Proxy {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    Proxy::start_in(dir, &with_token(text)).await
}

#[tokio::test]
async fn changes_need_the_bearer_token() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = start_with_token(&config(&[&stable], &[&new], 10, "")).await;
    let body = || Some(json!({ "percent": 30 }));
    let r = proxy.admin("PUT", "/percent", body(), None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(proxy.admin("PUT", "/percent", body(), Some("wrong")).await.status, 401);
    assert_eq!(proxy.admin("PUT", "/percent", body(), Some(&format!("{TOKEN}x"))).await.status, 401);
    assert_eq!(proxy.admin("POST", "/rollback", Some(json!({ "level": "L1" })), None).await.status, 401);
    assert_eq!(proxy.admin("POST", "/reload", None, None).await.status, 401);
    assert_eq!(proxy.status().await["percent"]["desired"], 10, "refused changes changed nothing");
    let r = proxy.admin("PUT", "/percent", body(), Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.status().await["percent"]["desired"], 30);
    // Reads need no token.
    assert_eq!(proxy.admin("GET", "/status", None, None).await.status, 200);
    assert_eq!(proxy.admin("GET", "/metrics", None, None).await.status, 200);
    assert_eq!(proxy.admin("GET", "/healthz", None, None).await.status, 200);
}

#[tokio::test]
async fn bad_admin_input_gets_a_4xx_and_changes_nothing() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 10, "")).await;
    for (body, status) in [
        (json!({ "percent": 101 }), 400),
        (json!({ "percent": -1 }), 400),
        (json!({ "percent": "50" }), 400),
        (json!({ "pct": 50 }), 400),
    ] {
        let r = proxy.admin("PUT", "/percent", Some(body.clone()), None).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    let raw = |method: &str, path: &str, ctype: &str, body: &'static str| {
        http::Request::builder()
            .method(method)
            .uri(proxy.admin_url(path))
            .header("content-type", ctype)
            .body(full(body))
            .unwrap()
    };
    assert_eq!(proxy.send(raw("PUT", "/percent", "application/json", "{\"percent\":")).await.status, 400);
    assert_eq!(proxy.send(raw("PUT", "/percent", "text/plain", "{\"percent\":50}")).await.status, 415);
    let mut cross_site = raw("PUT", "/percent", "application/json", "{\"percent\":50}");
    cross_site.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert_eq!(proxy.send(cross_site).await.status, 403);
    assert_eq!(proxy.admin("POST", "/rollback", Some(json!({ "level": "L9" })), None).await.status, 400);
    assert_eq!(proxy.admin("GET", "/percent", None, None).await.status, 405);
    assert_eq!(proxy.admin("GET", "/nope", None, None).await.status, 404);
    assert_eq!(proxy.admin("GET", "/audit?limit=abc", None, None).await.status, 400);
    assert_eq!(proxy.status().await["percent"]["desired"], 10);
    // Admin paths are not served on the proxy port: they go upstream.
    assert_eq!(proxy.get_as("/status", Some("bob")).await.upstream(), "stable");
}

#[tokio::test]
async fn rollback_levels_gate_the_percent() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 100, "")).await;
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "new");
    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "chaos test" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for user in ["alice", "bob", "carol"] {
        assert_eq!(proxy.get_as("/", Some(user)).await.upstream(), "stable", "L1: all traffic to stable");
    }
    let s = proxy.status().await;
    assert_eq!((s["percent"]["desired"].as_u64(), s["percent"]["effective"].as_u64()), (Some(100), Some(0)));
    assert_eq!(s["rollback"]["level"], 1);
    assert_eq!(s["rollback"]["active"]["L1"]["reason"], "chaos test");
    assert_eq!(proxy.admin("POST", "/resume", Some(json!({ "level": "L1" })), None).await.status, 200);
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "new");

    // L2: no raise (409), lowering is fine.
    assert_eq!(proxy.admin("PUT", "/percent", Some(json!({ "percent": 40 })), None).await.status, 200);
    assert_eq!(proxy.admin("POST", "/rollback", Some(json!({ "level": "L2" })), None).await.status, 200);
    let r = proxy.admin("PUT", "/percent", Some(json!({ "percent": 60 })), None).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(proxy.admin("PUT", "/percent", Some(json!({ "percent": 30 })), None).await.status, 200);
    // L3: locked, and resume needs confirm.
    assert_eq!(
        proxy.admin("POST", "/rollback", Some(json!({ "level": "L3", "reason": "diff" })), None).await.status,
        200
    );
    assert_eq!(proxy.admin("PUT", "/percent", Some(json!({ "percent": 10 })), None).await.status, 409);
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "stable");
    let r = proxy.admin("POST", "/resume", Some(json!({ "level": "L3" })), None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("confirm"));
    assert_eq!(proxy.admin("POST", "/resume", Some(json!({ "level": "L3", "confirm": true })), None).await.status, 200);
    assert_eq!(proxy.admin("POST", "/resume", Some(json!({ "level": "L3", "confirm": true })), None).await.status, 409);
    assert_eq!(proxy.status().await["rollback"]["level"], 2);
}

#[tokio::test]
async fn config_file_replaced_by_rename_is_reloaded() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 0, "");
    let proxy = Proxy::start(&text).await;
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "stable");
    proxy.rewrite_config(&text.replace("percent = 0", "percent = 100"));
    eventually(Duration::from_secs(10), "reload by rename", || async {
        let s = proxy.status().await;
        (s["config"]["version"] == 2 && s["percent"]["desired"] == 100).then_some(())
    })
    .await;
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "new");
    let audit = proxy.admin("GET", "/audit?limit=10", None, None).await.json();
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "reload" && e["result"] == "ok" && e["actor"] == "config"),
        "{audit}"
    );
    assert!(entries.iter().any(|e| e["action"] == "percent" && e["new"] == 100 && e["old"] == 0), "{audit}");
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_says_why() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 100, "");
    let proxy = Proxy::start(&text).await;
    proxy.rewrite_config(&text.replace("percent = 100", "percent = 200"));
    let error = eventually(Duration::from_secs(10), "reload error in /status", || async {
        proxy.status().await["config"]["last_reload_error"].as_str().map(str::to_string)
    })
    .await;
    assert!(error.contains("grayshift.toml:") && error.contains("between 0 and 100"), "{error}");
    assert_eq!(proxy.status().await["config"]["version"], 1);
    assert_eq!(proxy.get_as("/", Some("bob")).await.upstream(), "new", "old config keeps serving");
    let r = proxy.admin("POST", "/reload", None, None).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains(":"), "{}", r.text());
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("grayshift_config_reloads_total{result=\"error\"} 2"), "{metrics}");
    // A good file again: reload succeeds, the error is cleared.
    proxy.rewrite_config(&text.replace("percent = 100", "percent = 0"));
    eventually(Duration::from_secs(10), "reload after fix", || async {
        let s = proxy.status().await;
        (s["config"]["last_reload_error"].is_null() && s["percent"]["desired"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 50, "");
    let proxy = Arc::new(Proxy::start(&text).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (proxy, stop, ok, failed) = (proxy.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let user = format!("c{c}-u{i}");
                let req = http::Request::get(proxy.url("/")).header("x-user-id", &user).body(empty()).unwrap();
                match proxy.client.request(req).await {
                    Ok(resp) if resp.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for i in 1..=20u64 {
        let percent = (i * 5) % 101;
        let r = proxy.admin("POST", "/reload", None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        proxy.rewrite_config(&text.replace("percent = 50", &format!("percent = {percent}")));
        let r = proxy.admin("POST", "/reload", None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(proxy.status().await["config"]["version"].as_u64().unwrap() >= 41);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed during reloads ({} ok)", ok.load(Ordering::SeqCst));
    assert!(ok.load(Ordering::SeqCst) > 100);
}

#[tokio::test]
async fn a_restart_keeps_the_admin_percent_and_active_rollbacks() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 10, "");
    let mut proxy = Proxy::start(&text).await;
    assert_eq!(proxy.admin("PUT", "/percent", Some(json!({ "percent": 70 })), None).await.status, 200);
    assert_eq!(
        proxy.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "errors" })), None).await.status,
        200
    );
    assert_eq!(
        proxy.admin("POST", "/rollback", Some(json!({ "level": "L3", "reason": "diff" })), None).await.status,
        200
    );
    let dir = proxy.dir.clone();
    proxy.stop().await;
    drop(proxy);
    let proxy = Proxy::start_in(dir, &text).await;
    let s = proxy.status().await;
    assert_eq!(s["percent"]["desired"], 70, "{s}");
    assert_eq!(s["percent"]["effective"], 0);
    assert_eq!(s["rollback"]["level"], 3);
    assert_eq!(s["rollback"]["active"]["L1"]["reason"], "errors");
    assert_eq!(s["rollback"]["active"]["L3"]["reason"], "diff");
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "stable");
}

#[tokio::test]
async fn a_corrupt_state_file_refuses_to_start_and_is_left_alone() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{\"desired_percent\": 7, \"rollbacks\": {\"L3\": ").unwrap();
    let path = dir.path().join("grayshift.toml");
    std::fs::write(&path, config(&[&stable], &[&new], 10, "").replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let err = grayshift::start(grayshift::Options::new(&path)).await.err().expect("must refuse to start");
    assert!(err.to_string().contains("state.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{\"desired_percent\": 7, \"rollbacks\": {\"L3\": ");
}

#[tokio::test]
async fn a_public_admin_listener_without_a_token_refuses_to_start() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grayshift.toml");
    let text = config(&[&stable], &[&new], 10, "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"0.0.0.0:0\"\ntoken_env = \"GRAYSHIFT_TEST_UNSET_TOKEN\"",
    );
    std::fs::write(&path, text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let err = grayshift::start(grayshift::Options::new(&path)).await.err().expect("must refuse to start");
    assert!(err.to_string().contains("not loopback"), "{err}");
}

fn grayshift(args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_grayshift")).args(args).env_remove("GRAYSHIFT_ADMIN_TOKEN").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_the_admin_api() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = start_with_token(&config(&[&stable], &[&new], 10, "")).await;
    let admin = format!("http://{}", proxy.admin_addr);
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", &admin];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || grayshift(&all.iter().map(String::as_str).collect::<Vec<_>>()))
                .await
                .unwrap()
        }
    };
    let (code, _, err) = ctl(&["set-percent", "40"]).await;
    assert_eq!(code, 1, "no token: refused");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = ctl(&["--token", TOKEN, "set-percent", "40"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ctl(&["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("desired 40%") && out.contains("effective 40%"), "{out}");
    let (code, out, _) = ctl(&["status", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["percent"]["desired"], 40);
    // The API takes a level exactly as its error says; ctl spells what was typed.
    let body = serde_json::json!({ "level": "l1", "reason": "lower case" });
    let r = proxy.admin("POST", "/rollback", Some(body), Some(TOKEN)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], r#"level must be "L1", "L2" or "L3", got "l1""#);
    assert_eq!(ctl(&["--token", TOKEN, "rollback", "l1", "--reason", "typed"]).await.0, 0);
    let (_, out, _) = ctl(&["status"]).await;
    assert!(out.contains("L1 ACTIVE") && out.contains("typed"), "{out}");
    assert_eq!(ctl(&["--token", TOKEN, "resume", "l1"]).await.0, 0);
    assert!(ctl(&["status"]).await.1.contains("rollback  none"));
    assert_eq!(ctl(&["--token", TOKEN, "rollback", "L3", "--reason", "rows differ"]).await.0, 0);
    let (code, _, err) = ctl(&["--token", TOKEN, "resume", "L3"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("confirm"), "{err}");
    let (_, out, _) = ctl(&["status"]).await;
    assert!(out.contains("L3 ACTIVE") && out.contains("rows differ"), "{out}");
    assert_eq!(ctl(&["--token", TOKEN, "resume", "L3", "--confirm"]).await.0, 0);
    assert_eq!(ctl(&["--token", TOKEN, "reload"]).await.0, 0);
    let (code, _, err) =
        tokio::task::spawn_blocking(|| grayshift(&["ctl", "--admin", "http://127.0.0.1:1", "status"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn check_reports_file_line_col_and_bucket_answers_which_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    std::fs::write(&path, good.replace("percent = 20", "percent = 120")).unwrap();
    let (code, out, err) = grayshift(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let line = good.lines().position(|l| l.starts_with("percent = 20")).unwrap() + 1;
    assert_eq!(err.trim(), format!("{}:{line}:11: split.percent must be between 0 and 100, got 120", path.display()));
    let (code, out, _) = grayshift(&["check", "--config", "config/grayshift.toml"]);
    assert_eq!((code, out.trim()), (0, "ok"));

    std::fs::write(
        &path,
        good.replace("target/demo/grayshift-state.json", &dir.path().join("s.json").display().to_string()),
    )
    .unwrap();
    let (code, out, _) = grayshift(&["bucket", "--config", path.to_str().unwrap(), "alice"]);
    assert_eq!(code, 0);
    assert!(out.contains("bucket=18") && out.contains("pool=new"), "{out}");
    let (_, out, _) = grayshift(&["bucket", "--config", path.to_str().unwrap(), "bob"]);
    assert!(out.contains("bucket=26") && out.contains("pool=stable"), "{out}");
    let (_, out, _) = grayshift(&["bucket", "--config", path.to_str().unwrap(), "qa-new"]);
    assert!(out.contains("pool=new") && out.contains("force_new"), "{out}");
}
