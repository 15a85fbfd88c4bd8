//! The exposure ledger end to end: real users through a real grayshift to
//! real upstreams, recorded in a real PostgreSQL (or a file), handed to a
//! real L3 hook, printed by `grayshift exposure`.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use http::Request;
use rules_support::*;
use serde_json::json;

const GROUP: &str = "orders-v2";

fn bucket(key: &str) -> u8 {
    grayshift::proxy::split::bucket(format!("{GROUP}:").as_bytes(), key.as_bytes())
}

fn ledger_config(stable: &Upstream, new: &Upstream, percent: u8, ledger: &str, extra: &str) -> String {
    let text = config(&[stable], &[new], percent, &format!("[ledger]\n{ledger}\nflush = \"100ms\"\n\n{extra}"));
    text.replace(
        "key = [\"header:X-User-ID\", \"client_ip\"]",
        "key = [\"header:X-User-ID\", \"client_ip\"]\nforce_new = [\"qa-new\"]\nforce_stable = [\"qa-stable\"]",
    )
}

async fn post_as(proxy: &Proxy, user: &str) -> Reply {
    let req = Request::post(proxy.url("/orders")).header("x-user-id", user).body(full("{}")).unwrap();
    proxy.send(req).await
}

/// (key → wrote) of every row of `release` in `table`.
async fn table_rows(table: &str) -> BTreeMap<String, (String, bool)> {
    let client = pg_connect().await;
    match client.query(&format!("select key, source, wrote from {table} where release = $1"), &[&GROUP]).await {
        Ok(rows) => {
            rows.iter().map(|r| (r.get::<_, String>(0), (r.get::<_, String>(1), r.get::<_, bool>(2)))).collect()
        }
        Err(_) => BTreeMap::new(), // not created yet
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_exactly_the_users_new_served_and_who_wrote() {
    let table = unique("exposure");
    let _tables = Tables { names: vec![table.clone()] };
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let ledger = format!("postgres = \"{}\"\ntable = \"{table}\"", pg_url());
    let proxy = Proxy::start(&ledger_config(&stable, &new, 30, &ledger, "")).await;

    let users: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let mut expected = BTreeMap::new();
    for (i, user) in users.iter().enumerate() {
        let on_new = bucket(user) < 30;
        let reply = proxy.get_as("/", Some(user)).await;
        assert_eq!(reply.upstream(), if on_new { "new" } else { "stable" }, "{user}");
        let wrote = i % 3 == 0;
        if wrote {
            assert_eq!(post_as(&proxy, user).await.status, 200);
        }
        if on_new {
            expected.insert(user.clone(), ("header:x-user-id".to_string(), wrote));
        }
    }
    // Overrides: qa-new is on new whatever its bucket, qa-stable never.
    assert_eq!(proxy.get_as("/", Some("qa-new")).await.upstream(), "new");
    assert_eq!(proxy.get_as("/", Some("qa-stable")).await.upstream(), "stable");
    expected.insert("qa-new".into(), ("header:x-user-id".into(), false));

    let got = eventually(DEADLINE, "every exposure in the table", || async {
        let rows = table_rows(&table).await;
        (rows.len() >= expected.len()).then_some(rows)
    })
    .await;
    assert_eq!(got, expected, "exactly the users on new, wrote exactly for those that POSTed");
    assert!(expected.len() > 450 && expected.len() < 760, "about 30 % of 2000: {}", expected.len());

    // During an L1 nobody reaches new, so nobody new is recorded.
    let reply = proxy.admin("POST", "/rollback", Some(json!({"level": "L1", "reason": "test"})), None).await;
    assert_eq!(reply.status, 200);
    let newcomers: Vec<String> = (0..300).map(|i| format!("late-{i}")).filter(|u| bucket(u) < 30).collect();
    for user in &newcomers {
        assert_eq!(proxy.get_as("/", Some(user)).await.upstream(), "stable");
    }
    let status = eventually(DEADLINE, "a flush after the L1 traffic", || async {
        let s = proxy.status().await;
        let written = s["ledger"]["written"].as_u64().unwrap_or(0);
        (written >= expected.len() as u64 && s["ledger"]["last_flush"].is_string()).then_some(s)
    })
    .await;
    assert_eq!(status["ledger"]["errors"], 0);
    assert!(!status["ledger"]["sink"].as_str().unwrap().contains("password"));
    let rows = table_rows(&table).await;
    assert!(newcomers.iter().all(|u| !rows.contains_key(u)), "nobody was recorded during the L1");
    assert_eq!(rows.len(), expected.len());
}

/// Send every user's request (POSTs when `post`), 16 at a time.
async fn send_all(proxy: &Arc<Proxy>, users: &[String], post: bool) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in users.chunks(users.len().div_ceil(16)) {
        let (proxy, chunk) = (proxy.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for user in &chunk {
                let reply = if post { post_as(&proxy, user).await } else { proxy.get_as("/", Some(user)).await };
                assert_eq!(reply.status, 200, "{user}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_reuse_their_statement_and_merge_across_flushes() {
    // More than a batch (1 000 rows) per flush, twice on one connection:
    // the second flush's full batches go through the statement the first
    // one prepared, and must land on the same rows.
    let table = unique("exposure_batches");
    let _tables = Tables { names: vec![table.clone()] };
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let ledger = format!("postgres = \"{}\"\ntable = \"{table}\"", pg_url());
    let config = ledger_config(&stable, &new, 100, &ledger, "").replace("flush = \"100ms\"", "flush = \"2s\"");
    let proxy = Arc::new(Proxy::start(&config).await);
    let users: Vec<String> = (0..3000).map(|i| format!("batch-{i}")).collect();

    send_all(&proxy, &users, false).await;
    let rows = eventually(DEADLINE, "every user, read-only", || async {
        let rows = table_rows(&table).await;
        (rows.len() == users.len()).then_some(rows)
    })
    .await;
    assert!(rows.values().all(|(_, wrote)| !wrote));

    send_all(&proxy, &users, true).await;
    let rows = eventually(DEADLINE, "every user, now a writer", || async {
        let rows = table_rows(&table).await;
        rows.values().all(|(_, wrote)| *wrote).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), users.len(), "the second flushes updated the rows, added none");
    assert_eq!(proxy.status().await["ledger"]["errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l3_hook_gets_the_csv_of_everyone_exposed() {
    let table = unique("exposure_hook");
    let _tables = Tables { names: vec![table.clone()] };
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("exposed-copy.csv");
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncp \"$GRAYSHIFT_EXPOSED\" {}\n", copy.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ledger = format!("postgres = \"{}\"\ntable = \"{table}\"", pg_url());
    let hook = format!("[rollback]\nhook = {{ exec = [\"{}\"], timeout = \"10s\" }}\n", script.display());
    // A long flush: the hook must not depend on an interval having passed.
    let text = ledger_config(&stable, &new, 50, &ledger, &hook).replace("flush = \"100ms\"", "flush = \"1h\"");
    let proxy = Proxy::start(&text).await;

    let users: Vec<String> = (0..200).map(|i| format!("h-{i}")).collect();
    let mut on_new = BTreeSet::new();
    for user in &users {
        if proxy.get_as("/", Some(user)).await.upstream() == "new" {
            on_new.insert(user.clone());
        }
    }
    let reply = proxy.admin("POST", "/rollback", Some(json!({"level": "L3", "reason": "rows differ"})), None).await;
    assert_eq!(reply.status, 200);
    // The copy is complete once the hook has exited (cp may have created it
    // and not yet written it when polled earlier).
    wait_status(&proxy, "the hook succeeded", |s| s["rollback"]["active"]["L3"]["hook"] == "succeeded").await;
    let csv = std::fs::read_to_string(&copy).expect("the hook copied GRAYSHIFT_EXPOSED");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("key,source,first_seen,last_seen,wrote,served_new,mismatch"));
    let keys: BTreeSet<String> = lines
        .map(|l| {
            assert!(l.ends_with(",false,true,false"), "read on new, no shadow: {l}");
            l.split(',').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(keys, on_new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_round_trips_through_grayshift_exposure() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let text = ledger_config(&stable, &new, 40, "file = \"{dir}/exposure.jsonl\"", "");
    let mut proxy = Proxy::start_in(dir.clone(), &text).await;
    let mut on_new = BTreeSet::new();
    let mut writers = BTreeSet::new();
    for i in 0..300 {
        let user = format!("f-{i}");
        if proxy.get_as("/", Some(&user)).await.upstream() == "new" {
            on_new.insert(user.clone());
            if i % 2 == 0 {
                post_as(&proxy, &user).await;
                writers.insert(user);
            }
        }
    }
    proxy.stop().await; // the last interval is written on shutdown

    let exposure = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
            .arg("exposure")
            .arg("--config")
            .arg(&proxy.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let keys =
        |csv: &str| csv.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert_eq!(keys(&exposure(&[])), on_new);
    assert_eq!(keys(&exposure(&["--wrote"])), writers);
    let purged = exposure(&["--purge", "--release", GROUP]);
    assert!(purged.contains("purged"), "{purged}");
    assert!(keys(&exposure(&[])).is_empty());
}

/// `grayshift exposure` with `args` on the config at `path`: its stdout.
fn exposure_cli(path: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .arg("exposure")
        .arg("--config")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_table_of_an_older_grayshift_gets_the_new_columns_and_keeps_its_rows() {
    // The table exactly as grayshift created it before shadow reads, with a
    // row in it: a running fleet's ledger when the new version arrives.
    let table = unique("exposure_old");
    let _tables = Tables { names: vec![table.clone()] };
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (release text NOT NULL, source text NOT NULL, key text NOT NULL, \
             first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, wrote boolean NOT NULL, \
             PRIMARY KEY (release, source, key)); \
             INSERT INTO {table} VALUES ('{GROUP}', 'header:x-user-id', 'old-user', now(), now(), true)"
        ))
        .await
        .unwrap();
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let ledger = format!("postgres = \"{}\"\ntable = \"{table}\"", pg_url());
    // Read before any write: `grayshift exposure` brings the table up to date itself.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("grayshift.toml");
    let text = ledger_config(&stable, &new, 100, &ledger, "");
    std::fs::write(&config_path, text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let before = exposure_cli(&config_path, &[]);
    assert!(
        before.lines().nth(1).is_some_and(|l| l.starts_with("old-user,") && l.ends_with(",true,true,false")),
        "{before}"
    );
    let proxy = Proxy::start(&text).await;
    assert_eq!(proxy.get_as("/", Some("new-user")).await.upstream(), "new");

    let rows = eventually(DEADLINE, "the new row beside the old one", || async {
        let rows = table_rows(&table).await;
        rows.contains_key("new-user").then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2);
    let marks: Vec<(String, bool, bool)> = client
        .query(&format!("select key, served_new, mismatch from {table} order by key"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [("new-user".to_string(), true, false), ("old-user".to_string(), true, false)];
    assert_eq!(marks, expected, "the old row reads as a key new served");
    let csv = exposure_cli(&proxy.config_path, &[]);
    let keys: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(keys, ["new-user", "old-user"], "{csv}");
    assert_eq!(exposure_cli(&proxy.config_path, &["--mismatch"]).lines().count(), 1, "no mismatch recorded");
}

#[test]
fn exposure_lists_who_new_served_and_mismatch_who_differed() {
    // A file ledger as a release with shadow reads leaves it: a line of an
    // older grayshift (no marks), keys new served, a key new served that
    // also mismatched, and a stable user whose comparison differed.
    let dir = tempfile::tempdir().unwrap();
    let text = config_addrs(&[dead_addr()], &[dead_addr()], 10, "[ledger]\nfile = \"{dir}/exposure.jsonl\"\n")
        .replace("{dir}", dir.path().to_str().unwrap());
    let config_path = dir.path().join("grayshift.toml");
    std::fs::write(&config_path, text).unwrap();
    let line = |key: &str, wrote: bool, marks: &str| {
        format!(
            r#"{{"release":"{GROUP}","key":"{key}","source":"header:x-user-id","first_seen":1,"last_seen":2,"wrote":{wrote}{marks}}}"#
        )
    };
    let lines = [
        line("old", false, ""),
        line("reader", false, r#","served_new":true,"mismatch":false"#),
        line("writer", true, r#","served_new":true,"mismatch":false"#),
        line("differs-on-new", false, r#","served_new":true,"mismatch":true"#),
        line("differs-on-stable", false, r#","served_new":false,"mismatch":true"#),
    ];
    std::fs::write(dir.path().join("exposure.jsonl"), lines.join("\n") + "\n").unwrap();
    let keys = |csv: &str| csv.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect::<Vec<_>>();

    let all = exposure_cli(&config_path, &[]);
    assert_eq!(all.lines().next(), Some("key,source,first_seen,last_seen,wrote,served_new,mismatch"));
    assert_eq!(keys(&all), ["differs-on-new", "old", "reader", "writer"], "exactly who new served");
    let mismatch = exposure_cli(&config_path, &["--mismatch"]);
    assert_eq!(keys(&mismatch), ["differs-on-new", "differs-on-stable"]);
    assert!(mismatch
        .contains("differs-on-stable,header:x-user-id,1970-01-01T00:00:01Z,1970-01-01T00:00:02Z,false,false,true"));
    assert_eq!(keys(&exposure_cli(&config_path, &["--wrote"])), ["writer"]);
    assert!(keys(&exposure_cli(&config_path, &["--wrote", "--mismatch"])).is_empty());
}

/// A TCP forwarder in front of PostgreSQL that the test can cut and
/// restore: a real outage of the sink as grayshift sees it.
struct Cuttable {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cuttable {
    async fn start(target: SocketAddr) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused-ish (closed at once)
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Cuttable { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_costs_no_request_and_rows_arrive_after() {
    let table = unique("exposure_outage");
    let _tables = Tables { names: vec![table.clone()] };
    let pg: tokio_postgres::Config = pg_url().parse().unwrap();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let forwarder = Cuttable::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let user = pg.get_user().unwrap_or("postgres");
    let dbname = pg.get_dbname().unwrap_or("postgres");
    let url = format!("postgresql://{user}@{}/{dbname}?connect_timeout=2", forwarder.addr);
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy =
        Proxy::start(&ledger_config(&stable, &new, 100, &format!("postgres = \"{url}\"\ntable = \"{table}\""), ""))
            .await;

    assert_eq!(proxy.get_as("/", Some("before")).await.status, 200);
    eventually(DEADLINE, "the first row", || async { table_rows(&table).await.contains_key("before").then_some(()) })
        .await;

    forwarder.cut();
    for i in 0..50 {
        let reply = proxy.get_as("/", Some(&format!("during-{i}"))).await;
        assert_eq!((reply.status.as_u16(), reply.upstream()), (200, "new"), "requests never fail for the ledger");
    }
    wait_status(&proxy, "sink errors counted", |s| s["ledger"]["errors"].as_u64().unwrap_or(0) > 0).await;
    forwarder.restore();
    let rows = eventually(DEADLINE, "the outage's rows after the sink is back", || async {
        let rows = table_rows(&table).await;
        (rows.len() == 51).then_some(rows)
    })
    .await;
    assert!((0..50).all(|i| rows.contains_key(&format!("during-{i}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_dropped_and_counted_and_nothing_blocks() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    // A sink that never answers in time: everything piles up in memory.
    let silent = Silent::start().await;
    let url = format!("postgresql://postgres@{}/postgres?connect_timeout=1", silent.addr);
    let ledger = format!("postgres = \"{url}\"\ncapacity = 16");
    let proxy = Proxy::start(&ledger_config(&stable, &new, 100, &ledger, "")).await;
    for i in 0..200 {
        assert_eq!(proxy.get_as("/", Some(&format!("o-{i}"))).await.status, 200);
    }
    let status = wait_status(&proxy, "drops counted", |s| s["ledger"]["dropped"].as_u64().unwrap_or(0) > 0).await;
    assert!(status["ledger"]["queued"].as_u64().unwrap() <= 16 * 4 + 16, "{status}");
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(
        metrics.lines().any(|l| l.starts_with("grayshift_ledger_dropped_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn bucket_what_if_counts_who_would_move() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_addrs(&[dead_addr()], &[dead_addr()], 10, "").replace("{dir}", dir.path().to_str().unwrap());
    let config_path = dir.path().join("grayshift.toml");
    std::fs::write(&config_path, config).unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("w-{i}")).collect();
    let sample = dir.path().join("sample.txt");
    std::fs::write(&sample, keys.join("\n") + "\n\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .args(["bucket", "--config"])
        .arg(&config_path)
        .args(["--percent", "40", "--sample"])
        .arg(&sample)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let moving = keys.iter().filter(|k| (10..40).contains(&bucket(k))).count();
    let staying = keys.iter().filter(|k| bucket(k) < 10).count();
    assert!(text.starts_with("500 keys, effective percent 10 -> 40:"), "{text}");
    assert!(text.contains(&format!("{moving:>8} move stable -> new")), "{text}");
    assert!(text.contains(&format!("{:>8} move new -> stable", 0)), "{text}");
    assert!(text.contains(&format!("{staying:>8} stay on new")), "{text}");
}
