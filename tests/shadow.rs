//! Shadow reads (docs/src/shadow.md) with real apps on a real PostgreSQL:
//! `stable` serves `GET /orders/{id}` from `orders_v1`, `new` from
//! `orders_v2`, a copy made by a "migration". Both answers carry noise (a
//! `served_at` timestamp, a random `request_id`, `tags` in random order),
//! and the config has no `ignore` list: noise cancellation must learn it.
//! Each pool has two endpoints, so noise copies go to another one.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/fleet.rs"]
mod fleet_support;
#[path = "common/rules.rs"]
mod rules_support;

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rules_support::{hook_lines, hook_script, pg_connect, rule, unique, wait_more_evaluations, DEADLINE};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Orders in each table.
const ORDERS: usize = 1000;

/// What an app does with `GET /orders/{id}`.
#[derive(Clone)]
enum Behaviour {
    /// Read the row from this (schema-qualified) table: 404 without one.
    Table(String),
    /// Answer the same JSON for every id: `{"id", "v"}`.
    Fixed(i64),
    /// Sleep this long, then answer.
    Sleep(Duration),
    /// Accept, then close the connection at once.
    Reset,
}

/// One app endpoint, counting what reached it.
struct App {
    addr: SocketAddr,
    /// Requests with `X-Grayshift-Shadow: 1`, and without.
    shadow_hits: Arc<AtomicUsize>,
    plain_hits: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
    /// The bytes of every POST body received.
    post_bytes: Arc<AtomicUsize>,
    /// (X-User-ID, marked as a shadow) of every request.
    seen: Arc<std::sync::Mutex<Vec<(String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn json_reply(status: StatusCode, body: Value) -> Response<TestBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp
}

impl App {
    async fn start(behaviour: Behaviour) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let [shadow_hits, plain_hits, posts, post_bytes]: [Arc<AtomicUsize>; 4] = Default::default();
        let seen: Arc<std::sync::Mutex<Vec<(String, bool)>>> = Default::default();
        let counters = (shadow_hits.clone(), plain_hits.clone(), posts.clone(), post_bytes.clone(), seen.clone());
        let db = match &behaviour {
            Behaviour::Table(_) => Some(Arc::new(pg_connect().await)),
            _ => None,
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                if matches!(behaviour, Behaviour::Reset) {
                    drop(stream);
                    continue;
                }
                let (behaviour, db, counters) = (behaviour.clone(), db.clone(), counters.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (behaviour, db, counters) = (behaviour.clone(), db.clone(), counters.clone());
                        async move {
                            let shadow = req.headers().get("x-grayshift-shadow").is_some_and(|v| v == "1");
                            match shadow {
                                true => counters.0.fetch_add(1, Ordering::SeqCst),
                                false => counters.1.fetch_add(1, Ordering::SeqCst),
                            };
                            let user = req.headers().get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                            counters.4.lock().unwrap().push((user.to_string(), shadow));
                            let path = req.uri().path().to_string();
                            if req.method() == http::Method::POST {
                                counters.2.fetch_add(1, Ordering::SeqCst);
                                let body = http_body_util::BodyExt::collect(req.into_body()).await;
                                let len = body.map(|b| b.to_bytes().len()).unwrap_or_default();
                                counters.3.fetch_add(len, Ordering::SeqCst);
                                return Ok(json_reply(StatusCode::OK, json!({ "received": len })));
                            }
                            Ok::<_, Infallible>(answer(&behaviour, db.as_deref(), &path).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        App { addr, shadow_hits, plain_hits, posts, post_bytes, seen, task }
    }
}

/// The order as JSON, with the noise every real app has.
async fn answer(behaviour: &Behaviour, db: Option<&tokio_postgres::Client>, path: &str) -> Response<TestBody> {
    if let Some(n) = path.strip_prefix("/big/").and_then(|n| n.parse::<usize>().ok()) {
        return Response::new(full("z".repeat(n)));
    }
    let Some(id) = path.strip_prefix("/orders/").and_then(|id| id.parse::<i32>().ok()) else {
        return json_reply(StatusCode::OK, json!({ "path": path }));
    };
    let mut tags = vec!["express", "gift", "fragile", "priority"];
    for i in (1..tags.len()).rev() {
        tags.swap(i, (random() % (i as u64 + 1)) as usize);
    }
    let served_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos().to_string();
    let noise = |mut order: Value| {
        order["served_at"] = json!(served_at);
        order["request_id"] = json!(format!("{:016x}", random()));
        order["tags"] = json!(tags);
        order
    };
    match behaviour {
        Behaviour::Table(table) => {
            let sql = format!("select id, customer, total::text, status from {table} where id = $1");
            match db.expect("a table app has a client").query_opt(&sql, &[&id]).await {
                Ok(Some(row)) => json_reply(
                    StatusCode::OK,
                    noise(json!({
                        "id": row.get::<_, i32>(0), "customer": row.get::<_, String>(1),
                        "total": row.get::<_, String>(2), "status": row.get::<_, String>(3),
                    })),
                ),
                Ok(None) => json_reply(StatusCode::NOT_FOUND, json!({ "error": "no such order" })),
                Err(e) => json_reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e.to_string() })),
            }
        }
        Behaviour::Fixed(v) => json_reply(StatusCode::OK, json!({ "id": id, "v": v })),
        Behaviour::Sleep(d) => {
            tokio::time::sleep(*d).await;
            json_reply(StatusCode::OK, json!({ "id": id }))
        }
        Behaviour::Reset => unreachable!("reset apps never answer"),
    }
}

/// `orders_v1` and the migration's `orders_v2` in a schema of their own;
/// `corrupt`: the migration changed `total` in 1.5 % of the rows and lost
/// another 1.5 % (3 % in all). Dropped with the value.
struct Orders {
    schema: String,
}

impl Orders {
    async fn create(corrupt: bool) -> Orders {
        let schema = unique("shadow");
        let db = pg_connect().await;
        let mut sql = format!(
            "create schema {schema};
             create table {schema}.orders_v1 (id int primary key, customer text not null, total numeric(10,2) not null, status text not null);
             insert into {schema}.orders_v1
               select i, 'customer-' || i, (i * 7 % 500) + 0.5, case when i % 3 = 0 then 'shipped' else 'open' end
               from generate_series(1, {ORDERS}) i;
             create table {schema}.orders_v2 as select * from {schema}.orders_v1;"
        );
        if corrupt {
            sql.push_str(&format!(
                "update {schema}.orders_v2 set total = total + 1 where id % 200 in (7, 57, 107);
                 delete from {schema}.orders_v2 where id % 200 in (3, 53, 153);"
            ));
        }
        db.batch_execute(&sql).await.unwrap();
        Orders { schema }
    }

    fn table(&self, name: &str) -> Behaviour {
        Behaviour::Table(format!("{}.{name}", self.schema))
    }
}

impl Drop for Orders {
    fn drop(&mut self) {
        rules_support::cleanup_sql(format!("drop schema if exists {} cascade", self.schema));
    }
}

/// Two endpoints per pool.
async fn pair(b: Behaviour) -> [App; 2] {
    [App::start(b.clone()).await, App::start(b).await]
}

fn addrs(apps: &[App]) -> Vec<SocketAddr> {
    apps.iter().map(|a| a.addr).collect()
}

const L3_RULE: &str = r#"
[[rules]]
name = "shadow-mismatch"
level = "L3"
signal = { source = "local", metric = "shadow_mismatch_rate", window = "1m" }
above = 0.01
min_requests = 50
"#;

fn shadow_section(extra: &str) -> String {
    format!("\n[shadow]\nsample = \"100%\"\nnoise = true\nmax_in_flight = 256\ntimeout = \"10s\"\n{extra}\n")
}

/// Send GET /orders/{id} with ids 1, 2, … (cycling), `workers` at a time,
/// until `done` says so or `limit` requests went out; returns how many did.
async fn drive(proxy: &Proxy, workers: usize, limit: usize, done: impl Fn() -> bool + Send + Sync + 'static) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(done);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, base, next, done) = (proxy.client.clone(), proxy.url(""), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= limit || done() {
                    return;
                }
                let id = n % ORDERS + 1;
                let req = Request::get(format!("{base}/orders/{id}"))
                    .header("x-user-id", format!("user-{id}"))
                    .body(empty())
                    .unwrap();
                let resp = client.request(req).await.expect("the proxy answers");
                let _ = Reply::read(resp).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    next.load(Ordering::SeqCst).min(limit)
}

/// The rollback level in `/status`, polled by a driver's stop condition.
fn level_watch(proxy: &Proxy) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let fired = Arc::new(AtomicBool::new(false));
    let (flag, admin, client) = (fired.clone(), proxy.admin_url("/status"), proxy.client.clone());
    let task = tokio::spawn(async move {
        loop {
            let req = Request::get(&admin).body(empty()).unwrap();
            if let Ok(resp) = client.request(req).await {
                if Reply::read(resp).await.json()["rollback"]["level"] == 3 {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (fired, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupting_migration_fires_l3_and_the_samples_name_the_fields() {
    let orders = Orders::create(true).await;
    let (stable, new) = (pair(orders.table("orders_v1")).await, pair(orders.table("orders_v2")).await);
    let dir = tempfile::tempdir().unwrap();
    let (script, log) = hook_script(dir.path(), 0);
    let extra = format!(
        "[rollback]\ninterval = \"200ms\"\nhook = {{ exec = [\"{}\", \"{}\"], timeout = \"10s\" }}\n{L3_RULE}{}",
        script.display(),
        log.display(),
        shadow_section("")
    );
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 10, &extra)).await;
    let (fired, watch) = level_watch(&proxy);
    let flag = fired.clone();
    let sent = drive(&proxy, 6, 20 * ORDERS, move || flag.load(Ordering::SeqCst)).await;
    watch.abort();
    let status = proxy.status().await;
    assert_eq!(status["rollback"]["level"], 3, "L3 fired within {sent} requests: {:#}", status["shadow"]);
    assert_eq!(rule(&proxy, "shadow-mismatch").await["state"], "firing");
    eventually(DEADLINE, "the hook ran", || async { (hook_lines(&log).len() == 1).then_some(()) }).await;
    // More traffic and evaluations: L3 is latched, the hook ran once.
    drive(&proxy, 2, 200, || false).await;
    wait_more_evaluations(&proxy, "shadow-mismatch").await;
    assert_eq!(hook_lines(&log), vec!["L3 shadow-mismatch".to_string()], "the hook ran exactly once");

    let samples = proxy.admin("GET", "/shadow/samples", None, None).await.json();
    let samples = samples["samples"].as_array().unwrap();
    assert!(samples.len() <= 50 && !samples.is_empty());
    let changed = samples.iter().find(|s| s["fields"].as_array().unwrap().iter().any(|f| f["path"] == "/total"));
    let changed = changed.unwrap_or_else(|| panic!("a sample names /total: {samples:#?}"));
    let id: usize = changed["path"].as_str().unwrap().trim_start_matches("/orders/").parse().unwrap();
    assert!([7, 57, 107].contains(&(id % 200)), "only corrupted rows: {changed:#}");
    let total = changed["fields"].as_array().unwrap().iter().find(|f| f["path"] == "/total").unwrap();
    let (old, migrated): (f64, f64) = (
        serde_json::from_str::<String>(total["stable"].as_str().unwrap()).unwrap().parse().unwrap(),
        serde_json::from_str::<String>(total["new"].as_str().unwrap()).unwrap().parse().unwrap(),
    );
    assert_eq!(migrated - old, 1.0, "{total:#}");
    assert_eq!(changed["method"], "GET");
    assert_eq!(changed["key"], format!("user-{id}"));
    let lost =
        samples.iter().find(|s| s["status"]["new"] == 404).unwrap_or_else(|| panic!("a 404 sample: {samples:#?}"));
    assert_eq!(lost["status"]["stable"], 200);
    assert_eq!(lost["fields"][0]["path"], "status");
    let id: usize = lost["path"].as_str().unwrap().trim_start_matches("/orders/").parse().unwrap();
    assert!([3, 53, 153].contains(&(id % 200)), "only lost rows: {lost:#}");
    for s in samples {
        for f in s["fields"].as_array().unwrap() {
            assert!(f["path"] == "/total" || f["path"] == "status", "noise never in a sample: {s:#}");
        }
    }
    let fields = status["shadow"]["fields"].as_array().unwrap();
    let by_path = |p: &str| fields.iter().find(|f| f["path"] == p).cloned().unwrap_or_default();
    assert!(by_path("/total")["mismatches"].as_u64().unwrap() > 0, "{fields:#?}");
    assert_eq!(by_path("/served_at")["mismatches"], 0, "{fields:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_copy_with_noisy_answers_never_fires() {
    let orders = Orders::create(false).await;
    let (stable, new) = (pair(orders.table("orders_v1")).await, pair(orders.table("orders_v2")).await);
    let extra = format!("[rollback]\ninterval = \"200ms\"\n{L3_RULE}{}", shadow_section(""));
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 10, &extra)).await;
    drive(&proxy, 6, 3 * ORDERS, || false).await;
    let status = eventually(DEADLINE, "every shadow read decided", || async {
        let s = proxy.status().await;
        let shadow = &s["shadow"];
        let decided = shadow["compared"].as_u64().unwrap() + shadow["skipped"]["learning"].as_u64().unwrap();
        (decided >= 2_900).then_some(s)
    })
    .await;
    wait_more_evaluations(&proxy, "shadow-mismatch").await;
    let shadow = &status["shadow"];
    assert_eq!(shadow["mismatched"], 0, "{shadow:#}");
    assert!(shadow["compared"].as_u64().unwrap() >= 2_500, "thousands of comparisons: {shadow:#}");
    let rule = rule(&proxy, "shadow-mismatch").await;
    assert_eq!(rule["state"], "ok", "{rule:#}");
    assert_eq!(proxy.status().await["rollback"]["level"], 0);
    let fields = shadow["fields"].as_array().unwrap();
    for noisy in ["/served_at", "/request_id", "/tags/*"] {
        let f = fields.iter().find(|f| f["path"] == noisy).unwrap_or_else(|| panic!("{noisy} listed: {fields:#?}"));
        assert_eq!(f["mismatches"], 0, "{f:#}");
        assert!(f["noise"].as_u64().unwrap() > 1_000, "{noisy} learned as noise: {f:#}");
    }
    assert!(!fields.iter().any(|f| f["path"] == "/total" || f["path"] == "status"), "{fields:#?}");
    let samples = proxy.admin("GET", "/shadow/samples", None, None).await.json();
    assert_eq!(samples["samples"], json!([]));
}

/// A `new` that sleeps past the timeout, or resets every connection: the
/// clients' answers are stable's, unchanged, and none waited for the shadow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_broken_shadow_side_never_touches_the_client() {
    let timeout = Duration::from_secs(3);
    for (behaviour, reason) in [(Behaviour::Sleep(Duration::from_secs(30)), "timeout"), (Behaviour::Reset, "error")] {
        let stable = pair(Behaviour::Fixed(1)).await;
        let new = pair(behaviour).await;
        let extra = "\n[shadow]\nsample = \"100%\"\ntimeout = \"3s\"\n";
        let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 0, extra)).await;
        for id in 1..=20 {
            let started = Instant::now();
            let reply = proxy.get_as(&format!("/orders/{id}"), Some(&format!("user-{id}"))).await;
            assert!(started.elapsed() < timeout, "the client got its answer before the shadow's timeout");
            assert_eq!(reply.status, 200);
            assert_eq!(reply.json(), json!({ "id": id, "v": 1 }));
            assert_eq!(reply.headers["x-gray-pool"], "stable");
        }
        let shadow = eventually(DEADLINE, "the shadows are skipped", || async {
            let shadow = proxy.status().await["shadow"].clone();
            (shadow["skipped"][reason].as_u64() == Some(20)).then_some(shadow)
        })
        .await;
        assert_eq!(shadow["compared"], 0, "{shadow:#}");
        let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
        assert!(metrics.contains(&format!("grayshift_shadow_skipped_total{{reason=\"{reason}\"}} 20")), "{metrics}");
        assert!(metrics.contains("grayshift_shadow_total{result=\"skipped\"} 20"), "{metrics}");
        // Shadows are not client requests, nor new's upstream errors.
        assert!(metrics.contains("grayshift_requests_total{code=\"2xx\",pool=\"stable\"} 20"), "{metrics}");
        assert!(metrics.contains("grayshift_requests_total{code=\"2xx\",pool=\"new\"} 0"), "{metrics}");
        assert!(metrics.contains("grayshift_upstream_errors_total{kind=\"reset\",pool=\"new\"} 0"), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_safe_reads_are_mirrored_and_the_mark_reaches_the_shadow_side_only() {
    let stable = pair(Behaviour::Fixed(1)).await;
    let new = pair(Behaviour::Fixed(1)).await;
    let extra = "\n[shadow]\nsample = \"100%\"\ntimeout = \"10s\"\n";
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 0, extra)).await;
    let sum =
        |apps: &[App], f: fn(&App) -> &AtomicUsize| apps.iter().map(|a| f(a).load(Ordering::SeqCst)).sum::<usize>();
    for id in 1..=10 {
        // A client's own mark never gets through.
        let req = Request::get(proxy.url(&format!("/orders/{id}")))
            .header("x-grayshift-shadow", "1")
            .header("x_grayshift_shadow", "1")
            .body(empty())
            .unwrap();
        assert_eq!(proxy.send(req).await.status, 200);
        let post = Request::post(proxy.url("/orders")).body(full("{}")).unwrap();
        assert_eq!(proxy.send(post).await.status, 200);
    }
    let shadow = eventually(DEADLINE, "ten comparisons", || async {
        let shadow = proxy.status().await["shadow"].clone();
        (shadow["matched"] == 10).then_some(shadow)
    })
    .await;
    assert_eq!(shadow["mismatched"], 0);
    assert_eq!(sum(&stable, |a| &a.shadow_hits), 0, "the primary never sees the mark");
    assert_eq!(sum(&stable, |a| &a.plain_hits), 20, "ten GETs and ten POSTs");
    assert_eq!(sum(&new, |a| &a.shadow_hits), 10, "every GET mirrored, marked");
    assert_eq!(sum(&new, |a| &a.plain_hits), 0);
    assert_eq!(sum(&new, |a| &a.posts), 0, "a POST is never mirrored by default");
    assert_eq!(sum(&stable, |a| &a.posts), 10);
}

/// The noise copy goes to the primary's pool but not to the endpoint that
/// answered the client, when the pool has another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noise_copy_asks_another_endpoint_of_the_primarys_pool() {
    let stable = pair(Behaviour::Fixed(1)).await;
    let new = pair(Behaviour::Fixed(1)).await;
    let extra = "\n[shadow]\nsample = \"100%\"\nnoise = true\ntimeout = \"10s\"\n";
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 0, extra)).await;
    for u in 0..20 {
        assert_eq!(proxy.get_as("/orders/1", Some(&format!("user-{u}"))).await.status, 200);
    }
    eventually(DEADLINE, "twenty comparisons", || async {
        (proxy.status().await["shadow"]["matched"] == 20).then_some(())
    })
    .await;
    let mut noise_users = std::collections::BTreeSet::new();
    for app in &stable {
        let seen = app.seen.lock().unwrap();
        for (user, shadow) in seen.iter().filter(|(_, shadow)| *shadow) {
            assert!(!seen.contains(&(user.clone(), !shadow)), "{user}'s noise copy went to the endpoint that answered");
            noise_users.insert(user.clone());
        }
    }
    assert_eq!(noise_users.len(), 20, "every request had its noise copy");
}

/// Nothing goes to `new` while an L1/L3 is active or `new` has no healthy
/// endpoint: the shadows are skipped with their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shadow_goes_to_new_while_rolled_back_or_unhealthy() {
    let stable = pair(Behaviour::Fixed(1)).await;
    let new = pair(Behaviour::Fixed(1)).await;
    let extra = "\n[shadow]\nsample = \"100%\"\ntimeout = \"10s\"\n";
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 0, extra)).await;
    let l1 = json!({ "level": "L1", "reason": "shadow test" });
    assert_eq!(proxy.admin("POST", "/rollback", Some(l1), None).await.status, 200);
    for id in 1..=5 {
        assert_eq!(proxy.get_as(&format!("/orders/{id}"), Some("u")).await.status, 200);
    }
    let shadow = proxy.status().await["shadow"].clone();
    assert_eq!(shadow["skipped"]["rollback"], 5, "{shadow:#}");
    assert_eq!(new.iter().map(|a| a.shadow_hits.load(Ordering::SeqCst)).sum::<usize>(), 0);

    // `new` on dead endpoints: connect failures eject them (max_fails = 3
    // each), then nothing is even tried.
    let dead = [dead_addr(), dead_addr()];
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &dead, 0, extra)).await;
    for id in 1..=20 {
        assert_eq!(proxy.get_as(&format!("/orders/{id}"), Some("u")).await.status, 200);
    }
    let shadow = eventually(DEADLINE, "every shadow skipped", || async {
        let shadow = proxy.status().await["shadow"].clone();
        let skipped = &shadow["skipped"];
        let n = skipped["error"].as_u64().unwrap() + skipped["unhealthy"].as_u64().unwrap();
        (n == 20).then_some(shadow)
    })
    .await;
    assert!(shadow["skipped"]["unhealthy"].as_u64().unwrap() > 0, "{shadow:#}");
    assert_eq!(proxy.status().await["pools"]["new"]["healthy"], false);
}

/// With `unsafe_methods = true` a POST is mirrored with its body, copied
/// as it goes up; a body over `max_body` is not, declared or not, and the
/// primary gets it whole either way; nor is an answer over `max_body`
/// compared, and the client gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_are_mirrored_with_their_bodies_up_to_max_body() {
    let stable = pair(Behaviour::Fixed(1)).await;
    let new = pair(Behaviour::Fixed(1)).await;
    let extra =
        "\n[shadow]\nsample = \"100%\"\ntimeout = \"10s\"\nmethods = [\"GET\", \"POST\"]\nunsafe_methods = true\nmax_body = \"1KiB\"\n";
    let proxy = Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 0, extra)).await;
    let sum =
        |apps: &[App], f: fn(&App) -> &AtomicUsize| apps.iter().map(|a| f(a).load(Ordering::SeqCst)).sum::<usize>();
    for n in 0..5 {
        let body = format!("{{\"order\": {n}, \"note\": \"{}\"}}", "x".repeat(100));
        let reply = proxy.send(Request::post(proxy.url("/orders")).body(full(body.clone())).unwrap()).await;
        assert_eq!(reply.json(), json!({ "received": body.len() }));
    }
    eventually(DEADLINE, "five comparisons", || async {
        (proxy.status().await["shadow"]["matched"] == 5).then_some(())
    })
    .await;
    assert_eq!(sum(&new, |a| &a.posts), 5, "mirrored with the mark");
    assert_eq!(sum(&new, |a| &a.shadow_hits), 5);
    assert_eq!(sum(&new, |a| &a.post_bytes), sum(&stable, |a| &a.post_bytes), "the same bodies");

    // Over max_body: declared (Content-Length), then chunked.
    let big = "y".repeat(4096);
    let reply = proxy.send(Request::post(proxy.url("/orders")).body(full(big.clone())).unwrap()).await;
    assert_eq!(reply.json(), json!({ "received": 4096 }));
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
    let head = "POST /orders HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let chunked = format!("{head}400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n", &big[..1024], &big[..1024]);
    tokio::io::AsyncWriteExt::write_all(&mut stream, chunked.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"received\":2048"), "{answer}");
    let shadow = eventually(DEADLINE, "two skipped as too large", || async {
        let shadow = proxy.status().await["shadow"].clone();
        (shadow["skipped"]["too_large"] == 2).then_some(shadow)
    })
    .await;
    assert_eq!(shadow["compared"], 5, "{shadow:#}");
    assert_eq!(sum(&new, |a| &a.posts), 5, "neither large body was mirrored");

    // An answer over max_body: the client gets all of it, the comparison is skipped.
    let reply = proxy.get_as("/big/5000", Some("u")).await;
    assert_eq!((reply.status.as_u16(), reply.body.len()), (200, 5000));
    eventually(DEADLINE, "a large answer skipped", || async {
        (proxy.status().await["shadow"]["skipped"]["too_large"] == 3).then_some(())
    })
    .await;
}

/// Without `[shadow]` nothing is mirrored and its evidence is absent; the
/// section comes and goes with a hot reload like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_is_off_without_its_section_and_follows_a_reload() {
    let stable = pair(Behaviour::Fixed(1)).await;
    let new = pair(Behaviour::Fixed(1)).await;
    let without = config_addrs(&addrs(&stable), &addrs(&new), 0, "");
    let proxy = Proxy::start(&without).await;
    let shadow_hits = || new.iter().map(|a| a.shadow_hits.load(Ordering::SeqCst)).sum::<usize>();
    assert_eq!(proxy.get_as("/orders/1", Some("u")).await.status, 200);
    assert_eq!(proxy.status().await["shadow"], Value::Null);
    let samples = proxy.admin("GET", "/shadow/samples", None, None).await;
    assert_eq!(samples.status, 404);
    assert!(samples.json()["error"].as_str().unwrap().contains("[shadow]"));
    assert_eq!(shadow_hits(), 0);

    let with = config_addrs(&addrs(&stable), &addrs(&new), 0, "\n[shadow]\nsample = \"100%\"\ntimeout = \"10s\"\n");
    proxy.rewrite_config(&with);
    eventually(DEADLINE, "[shadow] reloaded", || async { proxy.status().await["shadow"].is_object().then_some(()) })
        .await;
    assert_eq!(proxy.get_as("/orders/2", Some("u")).await.status, 200);
    eventually(DEADLINE, "one comparison", || async { (proxy.status().await["shadow"]["matched"] == 1).then_some(()) })
        .await;
    assert_eq!(shadow_hits(), 1);
    assert_eq!(proxy.admin("GET", "/shadow/samples", None, None).await.json(), json!({ "samples": [] }));

    // A bad [shadow] changes nothing; removing it turns shadow reads off.
    proxy.rewrite_config(&with.replace("100%", "250%"));
    eventually(DEADLINE, "the bad reload is reported", || async {
        let error = proxy.status().await["config"]["last_reload_error"].clone();
        error.as_str().is_some_and(|e| e.contains("between 0% and 100%")).then_some(())
    })
    .await;
    assert_eq!(proxy.status().await["shadow"]["sample"], "100%");
    proxy.rewrite_config(&without);
    eventually(DEADLINE, "[shadow] gone", || async { proxy.status().await["shadow"].is_null().then_some(()) }).await;
    assert_eq!(proxy.get_as("/orders/3", Some("u")).await.status, 200);
    assert_eq!(shadow_hits(), 1);
}

/// Three replicas each see 20 mismatching comparisons: under
/// `min_requests = 50` alone, over it together. L3 fires on all of them
/// from the fleet-wide window, only once the third replica's are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_fires_l3_from_the_sum_of_its_replicas_comparisons() {
    let etcd = etcd::Etcd::start().await;
    let stable = pair(Behaviour::Fixed(1)).await;
    let new = pair(Behaviour::Fixed(2)).await;
    let name = unique("shadowfleet");
    let extra = |replica: &str| {
        format!(
            "\n[rollback]\ninterval = \"100ms\"\n{L3_RULE}\n[shadow]\nsample = \"100%\"\ntimeout = \"10s\"\n{}",
            fleet_support::fleet_section(&etcd, &name, replica)
        )
    };
    let mut replicas = Vec::new();
    for replica in ["a", "b", "c"] {
        replicas.push(Proxy::start(&config_addrs(&addrs(&stable), &addrs(&new), 0, &extra(replica))).await);
    }
    for r in &replicas {
        eventually(fleet_support::DEADLINE, "3 live members", || async {
            (r.status().await["fleet"]["members"].as_array().map_or(0, Vec::len) == 3).then_some(())
        })
        .await;
    }
    for (i, r) in replicas.iter().enumerate() {
        for id in 1..=20 {
            assert_eq!(r.get_as(&format!("/orders/{id}"), Some(&format!("user-{id}"))).await.status, 200);
        }
        eventually(DEADLINE, "20 mismatches here", || async {
            (r.status().await["shadow"]["mismatched"] == 20).then_some(())
        })
        .await;
        if i < 2 {
            // 20 or 40 comparisons fleet-wide: not enough to judge.
            for r in &replicas {
                wait_more_evaluations(r, "shadow-mismatch").await;
                assert_eq!(r.status().await["rollback"]["level"], 0, "{} comparisons are too few", 20 * (i + 1));
            }
        }
    }
    for r in &replicas {
        eventually(DEADLINE, "L3 on every replica", || async {
            (r.status().await["rollback"]["level"] == 3).then_some(())
        })
        .await;
    }
}

/// `grayshift check` refuses an unsafe method without `unsafe_methods`,
/// with FILE:LINE:COL, and warns when the config says so.
#[test]
fn check_refuses_unsafe_methods_unless_told_and_then_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow.toml");
    let base = config_addrs(&[dead_addr()], &[dead_addr()], 0, "\n[shadow]\nmethods = [\"GET\", \"PUT\"]\n");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = check(&base);
    let line = base.lines().position(|l| l.starts_with("methods")).unwrap() + 1;
    assert_eq!(code, Some(1));
    assert!(err.starts_with(&format!("{}:{line}:19: shadow.methods lists PUT", path.display())), "{err}");
    let (code, out, err) = check(&base.replace("[shadow]\n", "[shadow]\nunsafe_methods = true\n"));
    assert_eq!((code, out.trim()), (Some(0), "ok"), "{err}");
    assert!(err.contains("warning: [shadow] mirrors PUT"), "{err}");
}
