//! Test harness: real upstream servers and a real grayshift on 127.0.0.1:0.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A test upstream. Paths:
/// - `/status/NNN` answers NNN; `/slow/MS` waits MS ms first;
/// - `/echo` streams the request body back; `/bytes/N` streams N bytes;
/// - `/drain` reads the whole body, then answers `drained LEN`;
/// - `/ws` answers 101 and then echoes raw bytes (an upgrade);
/// - `/healthz` is 200 unless [`Upstream::set_healthy`]`(false)`;
/// - anything else: 200 with a JSON object of the request's headers,
///   plus `"upstream"`, `"method"`, `"path"`.
///
/// Set `fail_every` to make every Nth non-health request answer 500.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
    pub fail_every: Arc<AtomicUsize>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, "127.0.0.1:0").await
    }

    pub async fn start_on(name: &str, addr: &str) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let fail_every = Arc::new(AtomicUsize::new(0));
        let state = (name.to_string(), hits.clone(), healthy.clone(), fail_every.clone());
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| serve(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, name: name.to_string(), hits, healthy, fail_every, connections, task }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Stop accepting and close the listener (connections in flight stay).
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpState = (String, Arc<AtomicUsize>, Arc<AtomicBool>, Arc<AtomicUsize>);

async fn serve(
    (name, hits, healthy, fail_every): UpState,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        let status = if healthy.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        return Ok(respond(status, "health"));
    }
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let every = fail_every.load(Ordering::SeqCst);
    if every > 0 && n % every == 0 {
        return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, "injected failure"));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(respond(StatusCode::from_u16(code.parse().unwrap()).unwrap(), &name));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if path == "/drain" {
        // Read the whole body before answering (so a broken body is noticed
        // before any response head exists).
        let len = match req.into_body().collect().await {
            Ok(body) => body.to_bytes().len(),
            Err(_) => return Ok(respond(StatusCode::BAD_REQUEST, "body error")),
        };
        return Ok(respond(StatusCode::OK, &format!("drained {len}")));
    }
    if path == "/echo" {
        let body = req.into_body().map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed();
        return Ok(Response::new(body));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: usize = n.parse().unwrap();
        return Ok(Response::new(RepeatBody { remaining: total }.boxed()));
    }
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
        resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
        return Ok(resp);
    }
    let mut seen: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    seen.insert("upstream".into(), name.clone());
    seen.insert("method".into(), req.method().to_string());
    seen.insert("path".into(), req.uri().to_string());
    let mut resp = Response::new(full(serde_json::to_vec(&seen).unwrap()));
    // Hop-by-hop headers the proxy must strip from responses.
    resp.headers_mut().insert("keep-alive", "timeout=30".parse().unwrap());
    resp.headers_mut().insert("x-upstream", name.parse().unwrap());
    Ok(resp)
}

/// `remaining` bytes of `x`, in 64 KiB frames, generated as they are read.
pub struct RepeatBody {
    pub remaining: usize,
}

impl hyper::body::Body for RepeatBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = self.remaining.min(CHUNK.len());
        self.remaining -= len;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..len])))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining as u64)
    }
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

fn respond(status: StatusCode, text: &str) -> Response<TestBody> {
    let mut resp = Response::new(full(text.to_string()));
    *resp.status_mut() = status;
    resp
}

/// A running grayshift with its own temp dir (config, state, audit).
pub struct Proxy {
    pub running: Option<grayshift::Running>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    pub config_path: PathBuf,
    pub client: Client<HttpConnector, TestBody>,
}

/// A config for two upstreams; `extra` is appended (rules, features…).
/// `{dir}` in the text becomes the proxy's temp dir.
pub fn config(stable: &[&Upstream], new: &[&Upstream], percent: u8, extra: &str) -> String {
    let addrs = |ups: &[&Upstream]| ups.iter().map(|u| u.addr).collect::<Vec<_>>();
    config_addrs(&addrs(stable), &addrs(new), percent, extra)
}

/// [`config`] with plain addresses (e.g. a [`dead_addr`]).
pub fn config_addrs(stable: &[SocketAddr], new: &[SocketAddr], percent: u8, extra: &str) -> String {
    let list = |addrs: &[SocketAddr]| addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[split]
percent = {percent}
group = "orders-v2"
key = ["header:X-User-ID", "client_ip"]

[pools.stable]
endpoints = [{stable}]
connect_timeout = "500ms"
request_timeout = "2s"

[pools.new]
endpoints = [{new}]
connect_timeout = "500ms"
request_timeout = "2s"

[state]
file = "{{dir}}/state.json"

{extra}
"#,
        stable = list(stable),
        new = list(new),
    )
}

impl Proxy {
    pub async fn start(config_text: &str) -> Proxy {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(dir, config_text).await
    }

    /// Start (or restart) in an existing dir, keeping its state file.
    pub async fn start_in(dir: Arc<tempfile::TempDir>, config_text: &str) -> Proxy {
        let config_path = dir.path().join("grayshift.toml");
        std::fs::write(&config_path, config_text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
        let running =
            grayshift::start(grayshift::Options::new(&config_path)).await.unwrap_or_else(|e| panic!("start: {e}"));
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Proxy {
            proxy_addr: running.proxy_addr,
            admin_addr: running.admin_addr,
            running: Some(running),
            dir,
            config_path,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// GET through the proxy as user `user` (no X-User-ID when `None`).
    pub async fn get_as(&self, path: &str, user: Option<&str>) -> Reply {
        let mut req = Request::get(self.url(path));
        if let Some(user) = user {
            req = req.header("x-user-id", user);
        }
        self.send(req.body(empty()).unwrap()).await
    }

    pub async fn send(&self, req: Request<TestBody>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        Reply::read(resp).await
    }

    /// An admin API call; `token` becomes a bearer token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>, token: Option<&str>) -> Reply {
        let mut req = Request::builder().method(method).uri(self.admin_url(path));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                req = req.header("content-type", "application/json");
                full(json.to_string())
            }
            None => empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn status(&self) -> serde_json::Value {
        self.admin("GET", "/status", None, None).await.json()
    }

    /// Rewrite the config file by rename (as a ConfigMap update does).
    pub fn rewrite_config(&self, text: &str) {
        let tmp = self.dir.path().join(".grayshift.toml.new");
        std::fs::write(&tmp, text.replace("{dir}", self.dir.path().to_str().unwrap())).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Graceful stop; returns once both listeners are closed.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
            running.wait().await;
        }
    }

    pub fn shared(&self) -> &Arc<grayshift::Shared> {
        &self.running.as_ref().expect("running").shared
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown();
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The upstream that answered, from the `x-upstream` response header.
    pub fn upstream(&self) -> &str {
        self.headers.get("x-upstream").and_then(|v| v.to_str().ok()).unwrap_or("-")
    }
}

/// Poll `check` every 20 ms until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port nobody listens on (bound, then released).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A test CA named `name` (its certificate and key), for TLS tests.
pub fn test_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

/// A certificate for `localhost` signed by `ca`, and its key.
pub fn localhost_cert(ca: &(rcgen::Certificate, rcgen::KeyPair)) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca.0, &ca.1).unwrap();
    (cert, key)
}

/// Read until the peer closes; what it sent. Panics when the connection is
/// still open after `limit`.
pub async fn read_until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {limit:?}; got {:?}", String::from_utf8_lossy(&out)),
        }
    }
}

/// An HTTP/2 response (within 10 s) and its whole body.
pub async fn h2_read(response: h2::client::ResponseFuture) -> (u16, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.unwrap().unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, bytes)
}
