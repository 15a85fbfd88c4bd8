//! Helpers for the rule-engine tests: a real PostgreSQL, a real Prometheus,
//! a small JSON server for `http` signals and webhooks, a server that never
//! answers, hook scripts, and `/status` rule lookups.
//!
//! Include with `#[path = "common/rules.rs"] mod rules_support;` after
//! `mod common;`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{eventually, full, Proxy, TestBody};

/// How long a condition may take to come true before a test fails. Long:
/// the machine is small and shared; the tests poll, so a fast machine is
/// not slowed down.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `GRAYSHIFT_TEST_PG_URL`, or the machine's own PostgreSQL. Tests that
/// need it fail (never skip) when it does not answer.
pub fn pg_url() -> String {
    std::env::var("GRAYSHIFT_TEST_PG_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// A client to the test PostgreSQL; panics with a clear message when none
/// answers.
pub async fn pg_connect() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach PostgreSQL at {url} ({e}): run the tests with scripts/test.sh, or set GRAYSHIFT_TEST_PG_URL"
        )
    });
    tokio::spawn(connection);
    client
}

/// A name no other test (or test run) uses: `prefix_PID_NANOS`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Drops the named tables when the test ends (pass or fail).
pub struct Tables {
    pub names: Vec<String>,
}

impl Drop for Tables {
    fn drop(&mut self) {
        cleanup_sql(format!("drop table if exists {}", self.names.join(", ")));
    }
}

/// Run `sql` on the test PostgreSQL from a `Drop` (which runs outside any
/// runtime guarantee: a throwaway one), ignoring errors.
pub fn cleanup_sql(sql: String) {
    let url = pg_url();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = client.batch_execute(&sql).await;
            }
        });
    })
    .join();
}

/// The rule named `name` in `/status`.
pub async fn rule(proxy: &Proxy, name: &str) -> Value {
    let status = proxy.status().await;
    status["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no rule {name:?} in /status: {status:#}"))
}

/// Poll `/status` until rule `name` satisfies `check`; returns it.
pub async fn wait_rule(proxy: &Proxy, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(DEADLINE, what, || async {
        let r = rule(proxy, name).await;
        check(&r).then_some(r)
    })
    .await
}

/// Poll until `check` holds on `/status`; returns it.
pub async fn wait_status(proxy: &Proxy, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(DEADLINE, what, || async {
        let s = proxy.status().await;
        check(&s).then_some(s)
    })
    .await
}

/// Wait until rule `name` has been evaluated in a later second than the one
/// it shows now (`evaluated_at` has a one-second resolution, so this is at
/// least one evaluation and usually several; N calls span at least N - 1
/// seconds).
pub async fn wait_more_evaluations(proxy: &Proxy, name: &str) {
    let first = wait_rule(proxy, name, "a first evaluation", |r| r["evaluated_at"].is_string()).await;
    let before = first["evaluated_at"].clone();
    wait_rule(proxy, name, "another evaluation", |r| r["evaluated_at"] != before && !r["evaluated_at"].is_null()).await;
}

/// A small HTTP server: `GET` answers the current body as JSON; any other
/// method records its request body and answers `answer_status`.
pub struct JsonServer {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    pub received: Arc<Mutex<Vec<Value>>>,
    pub answer_status: Arc<Mutex<u16>>,
    scheme: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl JsonServer {
    pub async fn start(body: &str) -> JsonServer {
        Self::start_with(body, None).await
    }

    /// The same server behind TLS (`https://` URLs).
    pub async fn start_tls(body: &str, tls: Arc<rustls::ServerConfig>) -> JsonServer {
        Self::start_with(body, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(body: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> JsonServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body.to_string()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer_status = Arc::new(Mutex::new(200));
        let state = (body.clone(), received.clone(), answer_status.clone());
        let tls_scheme = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (state, tls) = (state.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| json_serve(state.clone(), req));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        let scheme = if tls_scheme { "https" } else { "http" };
        JsonServer { addr, body, received, answer_status, scheme, task }
    }

    /// The URL of `path`; a TLS server is named `localhost` (its certificate's name).
    pub fn url(&self, path: &str) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}{path}", self.addr.port()),
            _ => format!("http://{}{path}", self.addr),
        }
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type JsonState = (Arc<Mutex<String>>, Arc<Mutex<Vec<Value>>>, Arc<Mutex<u16>>);

async fn json_serve(
    (body, received, status): JsonState,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    if req.method() == http::Method::GET {
        let text = body.lock().unwrap().clone();
        let mut resp = Response::new(full(text));
        resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
        return Ok(resp);
    }
    let bytes = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    received.lock().unwrap().push(json);
    let mut resp = Response::new(full("{}"));
    *resp.status_mut() = StatusCode::from_u16(*status.lock().unwrap()).unwrap();
    Ok(resp)
}

/// Accepts connections and never answers: a hung signal.
pub struct Silent {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Silent { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Write an L3 hook script into `dir` that appends
/// `"$GRAYSHIFT_LEVEL $GRAYSHIFT_RULE"` to the file given as its argument
/// and exits with `exit_code`. Returns (script, log file).
pub fn hook_script(dir: &Path, exit_code: i32) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join(format!("hook-{exit_code}.sh"));
    let log = dir.join(format!("hook-{exit_code}.log"));
    let text = format!("#!/bin/sh\necho \"$GRAYSHIFT_LEVEL $GRAYSHIFT_RULE\" >> \"$1\"\necho \"reason: $GRAYSHIFT_REASON\" >&2\nexit {exit_code}\n");
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

/// The lines the hook script wrote so far.
pub fn hook_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// A real Prometheus server scraping `targets` every second, on a free
/// loopback port, with its data in a temp dir. Killed on drop.
pub struct Prometheus {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// `GRAYSHIFT_TEST_PROMETHEUS` or `prometheus` on PATH (Debian package
    /// `prometheus`; scripts/test.sh installs it).
    pub async fn start(targets: &[SocketAddr]) -> Prometheus {
        let binary = std::env::var("GRAYSHIFT_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: grayshift\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = crate::common::dead_addr();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary:?} ({e}): install Debian's prometheus or set GRAYSHIFT_TEST_PROMETHEUS")
            });
        let prometheus = Prometheus { url: format!("http://{addr}"), child, dir };
        let ready = format!("{}/-/ready", prometheus.url);
        let log_path = prometheus.dir.path().join("prometheus.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer =
                grayshift::client::request(http::Method::GET, &ready, None, &[], None, Duration::from_secs(2)).await;
            if matches!(answer, Ok((status, _)) if status.is_success()) {
                return prometheus;
            }
            if std::time::Instant::now() > deadline {
                panic!("prometheus not ready after 60s: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query's raw answer (for diagnostics).
    pub async fn query(&self, promql: &str) -> String {
        let url =
            format!("{}/api/v1/query?query={}", self.url, grayshift::control::rules::signals::percent_encode(promql));
        match grayshift::client::request(http::Method::GET, &url, None, &[], None, Duration::from_secs(5)).await {
            Ok((_, body)) => String::from_utf8_lossy(&body).into_owned(),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh PostgreSQL schema, dropped at the end of the test.
pub struct Scratch {
    pub name: String,
}

impl Scratch {
    pub async fn new(setup: &str) -> Scratch {
        let name = unique("gate");
        let db = pg_connect().await;
        db.batch_execute(&format!("create schema {name}; set search_path = {name}; {setup}")).await.unwrap();
        Scratch { name }
    }

    pub fn url(&self) -> String {
        let sep = if pg_url().contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", pg_url(), self.name)
    }

    pub async fn exec(&self, sql: &str) {
        let db = pg_connect().await;
        db.batch_execute(&format!("set search_path = {}; {sql}", self.name)).await.unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        cleanup_sql(format!("drop schema if exists {} cascade", self.name));
    }
}

/// L1 on new's error rate, quick: evaluated every 100 ms, fires after
/// 300 ms above 5 % with at least 10 requests in the window.
pub const L1_RULE: &str = r#"
[rollback]
interval = "100ms"

[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "10s" }
above = 0.05
for = "300ms"
min_requests = 10
"#;
