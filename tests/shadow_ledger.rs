//! Shadow reads and the exposure ledger end to end: two versions of an
//! orders app reading real PostgreSQL (stable through the old table, new
//! through the migrated one, where a known set of users' totals changed),
//! a real grayshift mirroring every read, the ledger in PostgreSQL, the L3
//! hook's CSV, `grayshift exposure --mismatch` and `grayshift ctl shadow`.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rules_support::*;
use serde_json::{json, Value};

const GROUP: &str = "orders-v2";
const PERCENT: u8 = 50;

fn on_new(user: &str) -> bool {
    grayshift::proxy::split::bucket(format!("{GROUP}:").as_bytes(), user.as_bytes()) < PERCENT
}

/// One version of the orders app: `GET /orders/USER` answers the user's
/// total from `table` as JSON; `/healthz` is 200.
struct OrdersApp {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl OrdersApp {
    async fn start(table: &str) -> OrdersApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let db = Arc::new(pg_connect().await);
        let sql = Arc::new(format!("select total::text from {table} where user_id = $1"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (db, sql) = (db.clone(), sql.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(db.clone(), sql.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OrdersApp { addr, task }
    }
}

impl Drop for OrdersApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    db: Arc<tokio_postgres::Client>,
    sql: Arc<String>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let Some(user) = req.uri().path().strip_prefix("/orders/") else {
        return Ok(Response::new(full("ok")));
    };
    let (status, body) = match db.query_opt(sql.as_str(), &[&user]).await {
        Ok(Some(row)) => (StatusCode::OK, json!({ "user": user, "total": row.get::<_, String>(0) })),
        Ok(None) => (StatusCode::NOT_FOUND, json!({ "error": "no such user" })),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e.to_string() })),
    };
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}

/// `grayshift ARGS…`: (success, stdout, stderr).
fn grayshift(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn keys(csv: &str) -> BTreeSet<String> {
    csv.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatching_users_reach_the_ledger_the_hook_and_ctl_shadow() {
    // The data: stable reads `_v1`; the migration copied it to `_v2` but
    // changed the totals of every seventh user.
    let tables = unique("shadow_orders");
    let (old, migrated, ledger) = (format!("{tables}_v1"), format!("{tables}_v2"), format!("{tables}_ledger"));
    let _tables = Tables { names: vec![old.clone(), migrated.clone(), ledger.clone()] };
    let users: Vec<String> = (0..70).map(|i| format!("user-{i}")).collect();
    let differs: BTreeSet<String> = (0..70).filter(|i| i % 7 == 3).map(|i| format!("user-{i}")).collect();
    let db = pg_connect().await;
    db.batch_execute(&format!(
        "create table {old} (user_id text primary key, total numeric(10,2) not null); \
         insert into {old} select 'user-' || i, i + 0.5 from generate_series(0, 69) i; \
         create table {migrated} as select * from {old}; \
         update {migrated} set total = 0 where (substr(user_id, 6))::int % 7 = 3"
    ))
    .await
    .unwrap();
    let on_new_users: BTreeSet<String> = users.iter().filter(|u| on_new(u)).cloned().collect();
    assert!(
        differs.iter().any(|u| on_new(u)) && differs.iter().any(|u| !on_new(u)),
        "the differing users are on both sides: {differs:?}"
    );

    let (stable, new) = (OrdersApp::start(&old).await, OrdersApp::start(&migrated).await);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("exposed-copy.csv");
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncp \"$GRAYSHIFT_EXPOSED\" {}\n", copy.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let extra = format!(
        "[shadow]\nsample = \"100%\"\n\n\
         [ledger]\npostgres = \"{}\"\ntable = \"{ledger}\"\nflush = \"100ms\"\n\n\
         [rollback]\nhook = {{ exec = [\"{}\"], timeout = \"10s\" }}\n",
        pg_url(),
        script.display()
    );
    let proxy = Proxy::start(&config_addrs(&[stable.addr], &[new.addr], PERCENT, &extra)).await;

    for user in &users {
        let reply = proxy.get_as(&format!("/orders/{user}"), Some(user)).await;
        assert_eq!(reply.status, 200, "{user}");
        let total = reply.json()["total"].as_str().unwrap().to_string();
        let i: u32 = user["user-".len()..].parse().unwrap();
        // The client always gets the side the split chose, whatever the shadow says.
        let expected = if on_new(user) && differs.contains(user) { "0.00".to_string() } else { format!("{i}.50") };
        assert_eq!(total, expected, "{user}");
    }
    let status = wait_status(&proxy, "every read compared", |s| s["shadow"]["compared"] == users.len()).await;
    assert_eq!(status["shadow"]["mismatched"], differs.len(), "{status}");
    assert_eq!(status["shadow"]["fields"][0]["path"], "/total", "{status}");

    // The ledger: exposure is still exactly who new served; --mismatch is
    // exactly whose reads differed, on either side.
    let config = proxy.config_path.to_str().unwrap().to_string();
    let mismatched = eventually(DEADLINE, "every mismatch in the ledger", || async {
        let (ok, out, err) = grayshift(&["exposure", "--config", &config, "--mismatch"]);
        assert!(ok, "{err}");
        (keys(&out).len() >= differs.len()).then_some(out)
    })
    .await;
    assert_eq!(keys(&mismatched), differs);
    let (ok, exposed, err) = grayshift(&["exposure", "--config", &config]);
    assert!(ok, "{err}");
    assert_eq!(keys(&exposed), on_new_users, "exposure keeps its meaning: who new served");

    // ctl shadow shows the counts, the field and each sample's two values.
    let admin = format!("http://{}", proxy.admin_addr);
    let (ok, table, err) = grayshift(&["ctl", "--admin", &admin, "shadow"]);
    assert!(ok, "{err}");
    assert!(
        table.contains(&format!("compared {}  matched {}  mismatched {}", 70, 70 - differs.len(), differs.len())),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("/total ")), "the top fields table: {table}");
    let newest = users.iter().rev().find(|u| differs.contains(*u)).unwrap();
    let sample_line =
        table.lines().find(|l| l.contains(&format!("/orders/{newest} "))).unwrap_or_else(|| panic!("{table}"));
    assert!(sample_line.contains(newest) && sample_line.contains("200/200"), "{sample_line}");
    let (ok, text, err) = grayshift(&["ctl", "--admin", &admin, "shadow", "--json"]);
    assert!(ok, "{err}");
    let both: Value = serde_json::from_str(&text).unwrap();
    let samples = both["samples"].as_array().unwrap();
    let sampled: BTreeSet<String> = samples.iter().map(|s| s["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(sampled, differs);
    assert_eq!(samples[0]["key"], newest.as_str(), "newest first");
    let field = &samples[0]["fields"][0];
    assert_eq!(field["path"], "/total");
    assert!(
        field["stable"].as_str().unwrap().contains(".50") && field["new"].as_str().unwrap().contains("0.00"),
        "{field}"
    );
    assert_eq!(both["shadow"]["mismatched"], differs.len());

    // L3: the hook's CSV has both columns, right for every key.
    let reply = proxy.admin("POST", "/rollback", Some(json!({"level": "L3", "reason": "totals differ"})), None).await;
    assert_eq!(reply.status, 200);
    wait_status(&proxy, "the hook succeeded", |s| s["rollback"]["active"]["L3"]["hook"] == "succeeded").await;
    let csv = std::fs::read_to_string(&copy).expect("the hook copied GRAYSHIFT_EXPOSED");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("key,source,first_seen,last_seen,wrote,served_new,mismatch"));
    let got: BTreeMap<String, (String, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), (f[5].to_string(), f[6].to_string()))
        })
        .collect();
    let expected: BTreeMap<String, (String, String)> = users
        .iter()
        .filter(|u| on_new(u) || differs.contains(*u))
        .map(|u| (u.clone(), (on_new(u).to_string(), differs.contains(u).to_string())))
        .collect();
    assert_eq!(got, expected, "served_new: who new served; mismatch: whose reads differed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_shadow_says_not_configured_without_the_section() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 10, "")).await;
    let (ok, _, err) = grayshift(&["ctl", "--admin", &format!("http://{}", proxy.admin_addr), "shadow"]);
    assert!(!ok);
    assert!(err.contains("not configured"), "{err}");
}
