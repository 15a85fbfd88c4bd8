//! Fleet mode (docs/src/fleet.md) against a real etcd: three real grayshift
//! replicas share one state. Each test starts its own etcd (a single node
//! in well under a second, or a 3-node cluster) and uses its own prefix.
//! The L3 hook's exactly-once is in `fleet_hook.rs`.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/fleet.rs"]
mod fleet_support;
#[path = "common/rules.rs"]
mod rules_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use etcd::Etcd;
use fleet_support::*;
use serde_json::json;

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
    // The fleet's audit, from any replica: B sees C's change.
    let audit = b.admin("GET", "/audit?limit=5", None, None).await.json();
    assert_eq!(audit["source"], "store");
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.len() <= 5);
    let last = entries.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["new"].as_i64(), last["replica"].as_str()),
        (Some("percent"), Some(40), Some("c")),
        "{audit:#}"
    );
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
    assert_eq!(audit["source"], "store", "{audit:#}");
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "store reset"), "{audit:#}");
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "rollback"), "re-published: {audit:#}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_split_percent_in_one_replicas_config_goes_to_the_whole_fleet() {
    let etcd = Etcd::start().await;
    let fleet = Fleet::start(&etcd, 0, "").await;
    let text =
        config(&[&fleet.stable], &[&fleet.new], 100, &format!("{FAST}{}", fleet_section(&etcd, &fleet.name, "a")));
    fleet.replicas[0].rewrite_config(&text);
    for r in &fleet.replicas {
        wait_all_on(r, "new", "the config's new percent applied fleet-wide").await;
    }
    let audit = etcd.dump(&format!("/grayshift/v1/{}/audit/", fleet.name)).await;
    assert!(audit.iter().any(|(_, v)| v.contains("\"actor\":\"config\"") && v.contains("\"new\":100")), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramp_lives_in_the_store_one_replica_advances_it_and_every_replica_follows() {
    let etcd = Etcd::start().await;
    let ramp = "\n[ramp]\nsteps = [10, 50, 100]\nhold = \"1s\"\n";
    let fleet = Fleet::start(&etcd, 0, ramp).await;
    let [a, b, c] = &fleet.replicas[..] else { unreachable!() };
    let reply = b.admin("POST", "/ramp", Some(json!({ "action": "start" })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for r in [a, b, c] {
        rules_support::wait_status(r, "step 1 everywhere", |s| s["ramp"]["step"].as_u64() >= Some(1)).await;
    }
    for r in [a, b, c] {
        let s = rules_support::wait_status(r, "the ramp done everywhere", |s| s["ramp"]["state"] == "done").await;
        assert_eq!((s["percent"]["desired"].as_u64(), s["ramp"]["step"].as_u64()), (Some(100), Some(3)), "{s:#}");
        wait_all_on(r, "new", "everyone on new at the last step").await;
    }
    // Each step was taken once, by the one replica holding locks/ramp.
    let audit = a.admin("GET", "/audit?limit=500", None, None).await.json();
    assert_eq!(audit["source"], "store");
    let promotions: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "ramp" && e["event"].as_str().is_some_and(|t| t.starts_with("ramp promoted")))
        .collect();
    assert_eq!(promotions.len(), 2, "steps 2 and 3, once each: {promotions:#?}");
    assert_eq!(promotions[0]["replica"], promotions[1]["replica"]);
    let locks = etcd.dump(&format!("/grayshift/v1/{}/locks/ramp", fleet.name)).await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert!(locks[0].1.contains(promotions[0]["replica"].as_str().unwrap()), "{locks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_older_than_a_week_are_trimmed_from_the_store() {
    let etcd = Etcd::start().await;
    let prefix = format!("/grayshift/v1/t{}/", std::process::id());
    etcd.put(&format!("{prefix}audit/00000000000000000001-old"), r#"{"action":"ancient"}"#).await;
    let fleet = Fleet::start(&etcd, 10, "").await;
    let audit_prefix = format!("{prefix}audit/");
    eventually(DEADLINE, "the week-old entry trimmed", || async {
        let entries = etcd.dump(&audit_prefix).await;
        (!entries.iter().any(|(k, _)| k.ends_with("-old"))).then_some(())
    })
    .await;
    let entries = etcd.dump(&audit_prefix).await;
    assert!(entries.iter().any(|(_, v)| v.contains("store initialised")), "today's entries stay: {entries:?}");
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_point_of_no_return_a_rollback_is_blocked_fleet_wide_until_one_replica_forces_it() {
    let etcd = Etcd::start().await;
    let db = rules_support::Scratch::new(
        "create table alembic_version (version_num varchar(32) primary key); insert into alembic_version values ('f9')",
    )
    .await;
    let schema = format!(
        "\n[schema]\nurl = \"{}\"\ntool = \"alembic\"\nnew_requires = [\"e3a1\", \"f9\"]\nstable_supports = [\"a1b2\", \"e3a1\"]\ninterval = \"100ms\"\n",
        db.url()
    );
    let fleet = Fleet::start(&etcd, 100, &schema).await;
    let [a, b, c] = &fleet.replicas[..] else { unreachable!() };
    for r in [a, b, c] {
        wait_all_on(r, "new", "the gate open at f9").await;
    }
    let reply = a.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "p99" })), None).await;
    assert_eq!(reply.json()["blocked"], true, "{}", reply.text());
    for r in [b, c] {
        rules_support::wait_status(r, "L1 in the store, blocked here too", |s| {
            s["rollback"]["active"]["L1"]["blocked"] == true
        })
        .await;
        wait_all_on(r, "new", "blocked: users stay on new").await;
    }
    // Forced on another replica: the store's activation becomes forced, everyone goes to stable.
    let reply =
        b.admin("POST", "/rollback", Some(json!({ "level": "L1", "reason": "anyway", "force": true })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for r in [a, b, c] {
        wait_all_on(r, "stable", "forced: everyone on stable").await;
    }
    let levels = etcd.dump(&format!("/grayshift/v1/{}/levels/L1", fleet.name)).await;
    assert!(levels[0].1.contains("\"force\":true") && levels[0].1.contains("p99"), "{levels:?}");
}
