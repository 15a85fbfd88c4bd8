//! Fleet mode (SPEC §8) against a real etcd: three real grayshift
//! replicas share one state. Each test starts its own etcd (a single node
//! in well under a second) and uses its own key prefix.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/rules.rs"]
mod rules_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use etcd::Etcd;
use serde_json::json;

/// Generous: the guarantee is 1 s; a loaded CI machine gets slack.
const DEADLINE: Duration = Duration::from_secs(10);

fn fleet_section(etcd: &Etcd, name: &str, replica: &str) -> String {
    format!(
        r#"
[fleet]
etcd = [{urls}]
name = "{name}"
replica = "{replica}"
lease_ttl = "2s"
sync_timeout = "1s"
"#,
        urls = etcd.toml_urls()
    )
}

const FAST: &str = "\n[rollback]\ninterval = \"100ms\"\n";

/// `[rollback]` with a short interval, unless `extra` has its own.
fn fast(extra: &str) -> &'static str {
    if extra.contains("[rollback]") {
        ""
    } else {
        FAST
    }
}

struct Fleet {
    stable: Upstream,
    new: Upstream,
    replicas: Vec<Proxy>,
    name: String,
}

impl Fleet {
    async fn start(etcd: &Etcd, percent: u8, extra: &str) -> Fleet {
        let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
        let name = format!("t{}", std::process::id());
        let mut replicas = Vec::new();
        for replica in ["a", "b", "c"] {
            let text = config(
                &[&stable],
                &[&new],
                percent,
                &format!("{extra}{}{}", fast(extra), fleet_section(etcd, &name, replica)),
            );
            replicas.push(Proxy::start(&text).await);
        }
        let fleet = Fleet { stable, new, replicas, name };
        fleet.wait_members(3).await;
        fleet
    }

    fn config_for(&self, etcd: &Etcd, replica: &str, extra: &str) -> String {
        config(
            &[&self.stable],
            &[&self.new],
            0,
            &format!("{extra}{}{}", fast(extra), fleet_section(etcd, &self.name, replica)),
        )
    }

    async fn wait_members(&self, n: usize) {
        for r in &self.replicas {
            eventually(DEADLINE, &format!("{n} live members"), || async move {
                (r.status().await["fleet"]["members"].as_array().map_or(0, Vec::len) == n).then_some(())
            })
            .await;
        }
    }
}

/// Where 20 users land through `proxy`: ("stable" count, "new" count).
async fn spread(proxy: &Proxy) -> (usize, usize) {
    let mut counts = (0, 0);
    for u in 0..20 {
        let r = proxy.get_as("/", Some(&format!("user-{u}"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        match r.upstream() {
            "new" => counts.1 += 1,
            _ => counts.0 += 1,
        }
    }
    counts
}

async fn wait_all_on(proxy: &Proxy, pool: &str, what: &str) {
    eventually(DEADLINE, what, || async move {
        let (stable, new) = spread(proxy).await;
        let all = if pool == "new" { new == 20 } else { stable == 20 };
        all.then_some(())
    })
    .await;
}

async fn admin_put(proxy: &Proxy, percent: i64) -> Reply {
    proxy.admin("PUT", "/percent", Some(json!({ "percent": percent })), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_percent_on_one_replica_reaches_all_and_wait_reports_applied() {
    let etcd = Etcd::start().await;
    let fleet = Fleet::start(&etcd, 0, "").await;
    let [a, b, c] = &fleet.replicas[..] else { unreachable!() };
    for r in [a, b, c] {
        assert_eq!(spread(r).await, (20, 0));
    }

    let reply = admin_put(a, 100).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["revision"].as_i64().unwrap() > 0, "{}", reply.text());
    wait_all_on(b, "new", "B routes by A's percent").await;
    wait_all_on(c, "new", "C routes by A's percent").await;
    let status = b.status().await;
    assert_eq!(status["percent"]["desired"], 100, "{status:#}");
    assert_eq!(status["fleet"]["store"], "connected");
    assert_eq!(status["fleet"]["replica"], "b");

    // The CLI: --wait returns once every live member applied the change.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .args(["ctl", "--admin", &c.admin_url(""), "set-percent", "40", "--wait", "--timeout", "10s"])
        .env_remove("GRAYSHIFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("applied by all 3 members"), "{stdout}");
    for r in [a, b, c] {
        assert_eq!(r.status().await["percent"]["desired"], 40);
    }
    // ctl status shows the members table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .args(["ctl", "--admin", &a.admin_url(""), "status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    for name in ["a", "b", "c"] {
        assert!(table.lines().any(|l| l.starts_with("member") && l.contains(&format!(" {name} "))), "{table}");
    }
    // Its audit entry went into the store with the change.
    let audit = etcd.dump(&format!("/grayshift/v1/{}/audit/", fleet.name)).await;
    assert!(audit.iter().any(|(_, v)| v.contains("\"percent\"") && v.contains("\"new\":40")), "{audit:?}");
    let metrics = a.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("grayshift_fleet_connected 1"), "{metrics}");
    assert!(metrics.contains("grayshift_fleet_members 3"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_on_one_replica_rolls_back_all_and_resume_on_another_brings_them_back() {
    let etcd = Etcd::start().await;
    let fleet = Fleet::start(&etcd, 100, "").await;
    let [a, b, c] = &fleet.replicas[..] else { unreachable!() };
    for r in [a, b, c] {
        wait_all_on(r, "new", "everyone on new at 100%").await;
    }
    let reply = a.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "by hand" })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(a.shared().control.route().percent, 0, "applied on A at once");
    wait_all_on(b, "stable", "B rolled back").await;
    wait_all_on(c, "stable", "C rolled back").await;
    let l1 = &b.status().await["rollback"]["active"]["L1"];
    assert_eq!(l1["replica"], "a", "{l1:#}");
    assert!(l1["id"].as_i64().unwrap() > 0, "the activation id is the key's create revision: {l1:#}");

    let reply = c.admin("POST", "/resume", Some(json!({ "level": "L1" })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for r in [a, b, c] {
        wait_all_on(r, "new", "back on new after the resume on C").await;
    }
}

const L1_RULE: &str = r#"
[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "10s" }
above = 0.05
min_requests = 10
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_fired_by_errors_seen_through_one_replica_rolls_back_the_fleet() {
    let etcd = Etcd::start().await;
    let fleet = Fleet::start(&etcd, 100, L1_RULE).await;
    let [a, b, c] = &fleet.replicas[..] else { unreachable!() };
    fleet.new.fail_every.store(2, Ordering::SeqCst);
    // Traffic through A alone.
    let mut user = 0;
    eventually(DEADLINE, "L1 to fire on A", || {
        user += 20;
        let first = user;
        async move {
            for u in first..first + 20 {
                a.get_as("/", Some(&format!("user-{u}"))).await;
            }
            (a.shared().control.route().percent == 0).then_some(())
        }
    })
    .await;
    fleet.new.fail_every.store(0, Ordering::SeqCst);
    wait_all_on(b, "stable", "B rolled back by A's rule").await;
    wait_all_on(c, "stable", "C rolled back by A's rule").await;
    assert_eq!(c.status().await["rollback"]["active"]["L1"]["actor"], "rule:new-error-rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_keeps_serving_rollbacks_wait_in_the_outbox_and_reach_everyone_after() {
    let mut etcd = Etcd::start().await;
    let mut fleet = Fleet::start(&etcd, 100, "").await;
    for r in &fleet.replicas {
        wait_all_on(r, "new", "everyone on new").await;
    }
    etcd.stop_all();
    let a = &fleet.replicas[0];
    eventually(DEADLINE, "A notices the outage", || async move {
        (a.status().await["fleet"]["store"] == "unreachable").then_some(())
    })
    .await;
    // Everyone keeps serving the last state.
    for r in &fleet.replicas {
        assert_eq!(spread(r).await, (0, 20));
    }
    // Towards risk: refused.
    let reply = admin_put(a, 10).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("fleet store unreachable"), "{}", reply.text());
    // Towards safety: applied at once, kept in the outbox.
    let reply = a.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "outage drill" })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(spread(a).await, (20, 0));
    assert_eq!(a.status().await["fleet"]["outbox"], json!(["L1"]));
    assert_eq!(spread(&fleet.replicas[1]).await, (0, 20), "B cannot know yet");

    // Restart C while the store is down: it comes back from its state file.
    let c_dir = fleet.replicas[2].dir.clone();
    fleet.replicas[2].stop().await;
    let text = fleet.config_for(&etcd, "c", "");
    fleet.replicas[2] = Proxy::start_in(c_dir, &text).await;
    assert_eq!(spread(&fleet.replicas[2]).await, (0, 20), "C's cache says 100% and no rollback");

    // Restart A too: its unpublished rollback survives in the state file.
    let a_dir = fleet.replicas[0].dir.clone();
    fleet.replicas[0].stop().await;
    let text = fleet.config_for(&etcd, "a", "");
    fleet.replicas[0] = Proxy::start_in(a_dir, &text).await;
    assert_eq!(spread(&fleet.replicas[0]).await, (20, 0), "the rollback survived A's restart");

    etcd.start_all().await;
    for r in &fleet.replicas {
        wait_all_on(r, "stable", "the outbox rollback reached every replica").await;
    }
    let a = &fleet.replicas[0];
    eventually(DEADLINE, "A's outbox empty", || async move {
        (a.status().await["fleet"]["outbox"] == json!([])).then_some(())
    })
    .await;
    assert_eq!(admin_put(a, 30).await.status, 200, "the store is back: changes towards risk work again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_is_detected_and_active_rollbacks_are_republished() {
    let mut etcd = Etcd::start().await;
    let fleet = Fleet::start(&etcd, 100, "").await;
    let [a, b, c] = &fleet.replicas[..] else { unreachable!() };
    let reply = b.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "before the wipe" })), None).await;
    assert_eq!(reply.status, 200);
    for r in [a, b, c] {
        wait_all_on(r, "stable", "rolled back").await;
    }
    etcd.wipe();
    etcd.start_all().await;
    let prefix = format!("/grayshift/v1/{}/", fleet.name);
    eventually(DEADLINE, "the rollback re-published into the new store", || {
        let (etcd, prefix) = (&etcd, &prefix);
        async move {
            let keys = etcd.dump(prefix).await;
            let republished = keys.iter().any(|(k, v)| k.ends_with("levels/L1") && v.contains("before the wipe"));
            let audited = keys.iter().any(|(k, v)| k.contains("/audit/") && v.contains("store reset"));
            (republished && audited).then_some(())
        }
    })
    .await;
    for r in [a, b, c] {
        assert_eq!(spread(r).await, (20, 0), "still rolled back");
    }
    let status = a.status().await;
    assert_eq!(status["fleet"]["store"], "connected", "{status:#}");
    let audit = a.admin("GET", "/audit", None, None).await.json();
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "store reset"), "{audit:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_value_under_the_prefix_is_ignored_and_shown() {
    let etcd = Etcd::start().await;
    let fleet = Fleet::start(&etcd, 100, "").await;
    let prefix = format!("/grayshift/v1/{}/", fleet.name);
    etcd.put(&format!("{prefix}levels/L1"), "{not json").await;
    etcd.put(&format!("{prefix}percent"), "\u{0}\u{1}garbage").await;
    for r in &fleet.replicas {
        eventually(DEADLINE, "the error in /status.fleet", || async move {
            let s = r.status().await;
            s["fleet"]["error"].as_str().is_some_and(|e| e.contains("levels/L1") && e.contains("percent")).then_some(())
        })
        .await;
        assert_eq!(spread(r).await, (0, 20), "nothing applied from garbage; still serving");
    }
    // A good value afterwards is applied again.
    etcd.put(&format!("{prefix}percent"), r#"{"percent":0,"actor":"admin"}"#).await;
    wait_all_on(&fleet.replicas[2], "stable", "a good value is applied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_at_start_serves_the_local_state_after_sync_timeout() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dead = dead_addr();
    let text = config(
        &[&stable],
        &[&new],
        100,
        &format!(
            "{FAST}\n[fleet]\netcd = [\"http://{dead}\"]\nname = \"nowhere\"\nreplica = \"a\"\nsync_timeout = \"1s\"\n"
        ),
    );
    let started = std::time::Instant::now();
    let proxy = Proxy::start(&text).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for the store first");
    let status = proxy.status().await;
    assert_eq!(status["fleet"]["store"], "unreachable", "{status:#}");
    assert!(status["fleet"]["error"].is_string(), "{status:#}");
    assert_eq!(spread(&proxy).await, (20, 0), "no state file: percent 0");
    assert_eq!(admin_put(&proxy, 50).await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_start_error() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client.user_add("root", "rootpw", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.user_add("gs", "right", None).await.unwrap();
    client.user_grant_role("gs", "root").await.unwrap();
    client.auth_enable().await.unwrap();

    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let section = |pw: &str| {
        std::fs::write(dir.path().join("pw"), pw).unwrap();
        format!("{}user = \"gs\"\npassword_file = \"{}/pw\"\n", fleet_section(&etcd, "auth", "a"), dir.path().display())
    };
    let text = config(&[&stable], &[&new], 10, &section("wrong"));
    let path = dir.path().join("g.toml");
    std::fs::write(&path, text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let err = grayshift::start(grayshift::Options::new(&path)).await.err().expect("a wrong password stops the start");
    let msg = err.to_string();
    assert!(msg.contains("fleet") && msg.contains("credentials") && msg.contains("\"gs\""), "{msg}");

    let text = config(&[&stable], &[&new], 10, &section("right"));
    let proxy = Proxy::start(&text).await;
    assert_eq!(proxy.status().await["fleet"]["store"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_under_load_fails_no_request_and_changes_still_apply() {
    let mut etcd = Etcd::cluster(3).await;
    let fleet = Fleet::start(&etcd, 0, "").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for r in &fleet.replicas {
        let (url, stop) = (r.url("/"), stop.clone());
        load.push(tokio::spawn(async move {
            let client = plain_client();
            let (mut ok, mut failed) = (0usize, 0usize);
            let mut u = 0;
            while !stop.load(Ordering::SeqCst) {
                u += 1;
                let req = http::Request::get(&url).header("x-user-id", format!("u{u}")).body(empty()).unwrap();
                match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                    Ok(Ok(resp)) if resp.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let leader = etcd.leader().await;
    etcd.nodes[leader].kill();
    // A change made after the kill still reaches everyone (retried while
    // the cluster elects a new leader and the clients move over).
    let a = &fleet.replicas[0];
    eventually(DEADLINE, "set-percent accepted after the leader died", || async move {
        (admin_put(a, 100).await.status == 200).then_some(())
    })
    .await;
    for r in &fleet.replicas {
        eventually(DEADLINE, "every replica applied the change", || async move {
            (r.shared().control.route().percent == 100).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(ok > 0, "the load ran");
        assert_eq!(failed, 0, "no request failed while the leader died ({ok} ok)");
    }
}

fn plain_client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// An L3 rule on an `http` signal all three replicas read, and a hook that
/// logs `start ACTIVATION FENCE`, sleeps `sleep` seconds, logs `end`.
fn l3_setup(dir: &std::path::Path, signal_url: &str, sleep: u32) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("hook.sh");
    let log = dir.join("hook.log");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"start $GRAYSHIFT_ACTIVATION $GRAYSHIFT_FENCE\" >> \"$1\"\nsleep \"$2\"\necho end >> \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!(
        r#"
[rollback]
interval = "100ms"
hook = {{ exec = ["{script}", "{log}", "{sleep}"], timeout = "30s" }}

[[rules]]
name = "data-diff"
level = "L3"
signal = {{ source = "http", url = "{signal_url}", pointer = "/diff", timeout = "1s" }}
above = 0
"#,
        script = script.display(),
        log = log.display(),
    );
    (extra, log)
}

fn lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

async fn hook_status(proxy: &Proxy) -> serde_json::Value {
    proxy.status().await["rollback"]["active"]["L3"]["hook"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_seen_by_every_replica_runs_the_hook_exactly_once_with_a_fence() {
    let etcd = Etcd::start().await;
    let signal = rules_support::JsonServer::start(r#"{"diff": 0}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let (extra, log) = l3_setup(dir.path(), &signal.url("/"), 0);
    let fleet = Fleet::start(&etcd, 50, &extra).await;
    signal.set_body(r#"{"diff": 3}"#);
    for r in &fleet.replicas {
        eventually(DEADLINE, "the hook recorded as succeeded everywhere", || async move {
            (hook_status(r).await == "succeeded").then_some(())
        })
        .await;
        assert_eq!(r.shared().control.route().percent, 0);
    }
    let run = lines(&log);
    assert_eq!(run.len(), 2, "one run, start and end: {run:?}");
    let start: Vec<&str> = run[0].split(' ').collect();
    let activation = fleet.replicas[0].status().await["rollback"]["active"]["L3"]["id"].clone();
    assert_eq!(start[1], activation.to_string(), "GRAYSHIFT_ACTIVATION is the activation id: {run:?}");
    assert!(start[2].parse::<i64>().unwrap() > 0, "GRAYSHIFT_FENCE is the lock's revision: {run:?}");
    let recorded = etcd.dump(&format!("/grayshift/v1/{}/hook/", fleet.name)).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(lines(&log).len(), 2, "still one run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_mid_hook_leaves_the_hook_to_another_at_once() {
    let etcd = Etcd::start().await;
    let signal = rules_support::JsonServer::start(r#"{"diff": 0}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let (extra, log) = l3_setup(dir.path(), &signal.url("/"), 3);
    let mut fleet = Fleet::start(&etcd, 50, &extra).await;
    signal.set_body(r#"{"diff": 1}"#);
    let lock = format!("/grayshift/v1/{}/locks/hook", fleet.name);
    let holder: String = eventually(DEADLINE, "a replica holds the hook lock, mid-hook", || {
        let (etcd, lock, log) = (&etcd, &lock, &log);
        async move {
            let value = etcd.dump(lock).await.into_iter().next()?.1;
            let holder: serde_json::Value = serde_json::from_str(&value).ok()?;
            (lines(log).len() == 1).then(|| holder["replica"].as_str().unwrap().to_string())
        }
    })
    .await;
    let index = ["a", "b", "c"].iter().position(|r| *r == holder).unwrap();
    // It goes away mid-hook: its lease (and so the lock) ends with it.
    fleet.replicas[index].stop().await;
    let other = &fleet.replicas[(index + 1) % 3];
    eventually(Duration::from_secs(20), "another replica ran the hook and recorded it", || async move {
        (hook_status(other).await == "succeeded").then_some(())
    })
    .await;
    let starts: Vec<String> = lines(&log).into_iter().filter(|l| l.starts_with("start")).collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    let fence = |l: &str| l.split(' ').nth(2).unwrap().parse::<i64>().unwrap();
    assert_eq!(starts[0].split(' ').nth(1), starts[1].split(' ').nth(1), "the same activation");
    assert!(fence(&starts[1]) > fence(&starts[0]), "a newer fence: {starts:?}");
    let recorded = etcd.dump(&format!("/grayshift/v1/{}/hook/", fleet.name)).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(!recorded[0].1.contains(&format!("\"replica\":\"{holder}\"")), "recorded by the survivor: {recorded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rules_read_the_fleet_wide_sum_of_every_members_traffic() {
    let etcd = Etcd::start().await;
    // 30 requests needed: no replica sees that many, the fleet does.
    let rule = L1_RULE.replace("min_requests = 10", "min_requests = 30");
    let fleet = Fleet::start(&etcd, 100, &rule).await;
    // Every replica has evaluated with all three members known (a member
    // counts from its first snapshot in the evaluating replica's history).
    for r in &fleet.replicas {
        rules_support::wait_rule(r, "new-error-rate", "an evaluation", |r| {
            r["why"].as_str().is_some_and(|w| w.contains("only 0 of min 30"))
        })
        .await;
    }
    fleet.new.fail_every.store(2, Ordering::SeqCst);
    for (i, r) in fleet.replicas.iter().enumerate() {
        for u in 0..12 {
            r.get_as("/", Some(&format!("user-{i}-{u}"))).await;
        }
    }
    for r in &fleet.replicas {
        eventually(DEADLINE, "L1 from the fleet-wide error rate", || async move {
            (r.shared().control.route().percent == 0).then_some(())
        })
        .await;
    }
    let rule = &fleet.replicas[0].status().await["rules"][0];
    assert_eq!(rule["name"], "new-error-rate");
}

/// A grayshift binary (so it can be killed with SIGKILL), killed on drop.
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    let client = plain_client();
    let req = http::Request::get(url).body(empty()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await.ok()?.ok()?;
    let reply = Reply::read(resp).await;
    serde_json::from_slice(&reply.body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_hook_leaves_it_to_another_after_its_lease_expires() {
    let etcd = Etcd::start().await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let signal = rules_support::JsonServer::start(r#"{"diff": 0}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let (extra, log) = l3_setup(dir.path(), &signal.url("/"), 3);
    let name = format!("k{}", std::process::id());
    let mut binaries = Vec::new();
    let mut admins = Vec::new();
    for replica in ["a", "b", "c"] {
        let rdir = dir.path().join(replica);
        std::fs::create_dir_all(&rdir).unwrap();
        let admin = free_port();
        let text = config(&[&stable], &[&new], 50, &format!("{extra}{}", fleet_section(&etcd, &name, replica)))
            .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{}\"", free_port()), 1)
            .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{admin}\""), 1)
            .replace("{dir}", rdir.to_str().unwrap());
        let path = rdir.join("grayshift.toml");
        std::fs::write(&path, text).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
            .args(["run", "--config", path.to_str().unwrap()])
            .env("GRAYSHIFT_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        binaries.push(Binary(child));
        admins.push(format!("http://127.0.0.1:{admin}/status"));
    }
    for url in &admins {
        eventually(DEADLINE, "three live members", || async move {
            let s = get_json(url).await?;
            (s["fleet"]["members"].as_array()?.len() == 3).then_some(())
        })
        .await;
    }
    signal.set_body(r#"{"diff": 1}"#);
    let lock = format!("/grayshift/v1/{name}/locks/hook");
    let holder: String = eventually(DEADLINE, "a replica holds the hook lock, mid-hook", || {
        let (etcd, lock, log) = (&etcd, &lock, &log);
        async move {
            let value = etcd.dump(lock).await.into_iter().next()?.1;
            let holder: serde_json::Value = serde_json::from_str(&value).ok()?;
            (!lines(log).is_empty()).then(|| holder["replica"].as_str().unwrap().to_string())
        }
    })
    .await;
    let index = ["a", "b", "c"].iter().position(|r| *r == holder).unwrap();
    // SIGKILL: no lease revoke; the lock goes when the lease expires.
    let mut killed = binaries.remove(index);
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    let hook_prefix = format!("/grayshift/v1/{name}/hook/");
    let recorded = eventually(Duration::from_secs(20), "another replica ran the hook and recorded it", || {
        let (etcd, hook_prefix) = (&etcd, &hook_prefix);
        async move { etcd.dump(hook_prefix).await.into_iter().next() }
    })
    .await;
    assert!(recorded.1.contains("succeeded"), "{recorded:?}");
    assert!(!recorded.1.contains(&format!("\"replica\":\"{holder}\"")), "recorded by a survivor: {recorded:?}");
    let starts: Vec<String> = lines(&log).into_iter().filter(|l| l.starts_with("start")).collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    let fence = |l: &str| l.split(' ').nth(2).unwrap().parse::<i64>().unwrap();
    assert_eq!(starts[0].split(' ').nth(1), starts[1].split(' ').nth(1), "the same activation");
    assert!(fence(&starts[1]) > fence(&starts[0]), "a newer fence: {starts:?}");
}
