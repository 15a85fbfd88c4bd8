//! Fleet mode's L3 hook against a real etcd: it runs exactly
//! once across three replicas, with `GRAYSHIFT_ACTIVATION` and a fencing
//! token `GRAYSHIFT_FENCE`; a replica gone mid-hook (stopped: its lease is
//! revoked; SIGKILLed: its lease expires) leaves it to another.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/fleet.rs"]
mod fleet_support;
#[path = "common/rules.rs"]
mod rules_support;

use std::time::Duration;

use common::*;
use etcd::Etcd;
use fleet_support::*;

/// An L3 rule on a signal all three replicas read (`signal`: its TOML
/// inline table), and a hook that logs `start ACTIVATION FENCE`, sleeps
/// `sleep` seconds, logs `end`.
fn l3_setup(dir: &std::path::Path, signal: &str, sleep: u32) -> (String, std::path::PathBuf) {
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
signal = {signal}
above = 0
"#,
        script = script.display(),
        log = log.display(),
    );
    (extra, log)
}

fn http_signal(server: &rules_support::JsonServer) -> String {
    format!("{{ source = \"http\", url = \"{}\", pointer = \"/diff\", timeout = \"1s\" }}", server.url("/"))
}

fn lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

async fn hook_status(proxy: &Proxy) -> serde_json::Value {
    proxy.status().await["rollback"]["active"]["L3"]["hook"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_seen_by_every_replica_runs_the_hook_exactly_once_with_a_fence() {
    // The runbook's L3: rows that differ between the old and the new schema,
    // counted by a real PostgreSQL that all three replicas query.
    let etcd = Etcd::start().await;
    let table = rules_support::unique("fleet_diff");
    let _tables = rules_support::Tables { names: vec![table.clone()] };
    let db = rules_support::pg_connect().await;
    db.batch_execute(&format!(
        "create table {table} (id int, old_total int, new_total int); insert into {table} values (1, 10, 10)"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signal = format!(
        "{{ source = \"postgres\", url = \"{}\", query = \"select count(*) from {table} where old_total is distinct from new_total\", timeout = \"2s\" }}",
        rules_support::pg_url()
    );
    let (extra, log) = l3_setup(dir.path(), &signal, 0);
    let fleet = Fleet::start(&etcd, 50, &extra).await;
    db.batch_execute(&format!("update {table} set new_total = 11 where id = 1")).await.unwrap();
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
    let (extra, log) = l3_setup(dir.path(), &http_signal(&signal), 3);
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
async fn a_replica_killed_mid_hook_leaves_it_to_another_after_its_lease_expires() {
    let etcd = Etcd::start().await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let signal = rules_support::JsonServer::start(r#"{"diff": 0}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let (extra, log) = l3_setup(dir.path(), &http_signal(&signal), 3);
    let name = format!("k{}", std::process::id());
    let mut binaries = Vec::new();
    for replica in ["a", "b", "c"] {
        let rdir = dir.path().join(replica);
        let text = config(&[&stable], &[&new], 50, &format!("{extra}{}", fleet_section(&etcd, &name, replica)));
        binaries.push(Binary::start(&rdir, &text));
    }
    for binary in &binaries {
        eventually(DEADLINE, "three live members", || async move {
            let s = binary.get_json("/status").await?;
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
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
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
