//! The real binary under load: SIGTERM drains without failing an accepted
//! request and exits 0 in time; a restart keeps the state; killing the
//! `new` upstream process sends its users to stable.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A port that was free a moment ago (the binary binds it by number).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Process(Child);

impl Process {
    fn spawn(args: &[&str]) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_grayshift"))
            .args(args)
            .env("GRAYSHIFT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Process(child)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.0.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Wait for exit; panics after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(
    dir: &std::path::Path,
    stable: SocketAddr,
    new: SocketAddr,
    proxy: SocketAddr,
    admin: SocketAddr,
    drain: &str,
) -> String {
    let text = config_addrs(&[stable], &[new], 50, "")
        .replace(
            "listen = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"",
            &format!("listen = \"{proxy}\"\ndrain_timeout = \"{drain}\""),
        )
        .replace("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"{admin}\""))
        .replace("{dir}", dir.to_str().unwrap());
    let path = dir.join("grayshift.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

async fn wait_ready(admin: SocketAddr) {
    eventually(Duration::from_secs(20), "grayshift /readyz", || async {
        let r = grayshift::client::request(
            http::Method::GET,
            &format!("http://{admin}/readyz"),
            None,
            &[],
            None,
            Duration::from_secs(1),
        )
        .await;
        matches!(r, Ok((status, _)) if status == 200).then_some(())
    })
    .await;
}

async fn admin_call(admin: SocketAddr, method: http::Method, path: &str, body: &str) -> serde_json::Value {
    let body = (!body.is_empty()).then(|| bytes::Bytes::from(body.to_string()));
    let (_, bytes) =
        grayshift::client::request(method, &format!("http://{admin}{path}"), None, &[], body, Duration::from_secs(5))
            .await
            .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Counts of a load run: answered 2xx, answered otherwise, and requests
/// whose connection failed before any answer (not accepted).
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    bad_status: AtomicUsize,
    not_answered: AtomicUsize,
}

fn start_load(
    proxy: SocketAddr,
    path: &'static str,
    clients: usize,
    stop: Arc<AtomicBool>,
    load: Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (stop, load) = (stop.clone(), load.clone());
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<TestBody>();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let req = http::Request::get(format!("http://{proxy}{path}"))
                        .header("x-user-id", format!("c{c}-{i}"))
                        .body(empty())
                        .unwrap();
                    match client.request(req).await {
                        Ok(resp) if resp.status().is_success() => {
                            // Read the body: a truncated one is a failure too.
                            match http_body_util::BodyExt::collect(resp.into_body()).await {
                                Ok(_) => load.ok.fetch_add(1, Ordering::SeqCst),
                                Err(_) => load.bad_status.fetch_add(1, Ordering::SeqCst),
                            };
                        }
                        Ok(_) => {
                            load.bad_status.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            load.not_answered.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_a_restart_keeps_the_state() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let (proxy_addr, admin) = (free_port(), free_port());
    let config = write_config(dir.path(), stable.addr, new.addr, proxy_addr, admin, "5s");
    let mut process = Process::spawn(&["run", "--config", &config]);
    wait_ready(admin).await;
    admin_call(admin, http::Method::PUT, "/percent", "{\"percent\": 35}").await;
    admin_call(admin, http::Method::POST, "/rollback", "{\"level\": \"L1\", \"reason\": \"before restart\"}").await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients = start_load(proxy_addr, "/slow/100", 8, stop.clone(), load.clone());
    eventually(Duration::from_secs(10), "load running", || async {
        (load.ok.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    let ok_before = load.ok.load(Ordering::SeqCst);
    process.signal("TERM");
    let signalled = Instant::now();
    let code = tokio::task::spawn_blocking(move || {
        let code = process.wait_exit(Duration::from_secs(6));
        (code, process)
    })
    .await
    .unwrap();
    let (code, _process) = code;
    let took = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(took < Duration::from_secs(6), "exited within drain_timeout + 1 s: {took:?}");
    assert_eq!(load.bad_status.load(Ordering::SeqCst), 0, "an accepted request failed during the drain");
    assert!(load.ok.load(Ordering::SeqCst) >= ok_before, "in-flight requests finished");

    // Restart on the same state file: the admin percent and L1 are back.
    let _process = Process::spawn(&["run", "--config", &config]);
    wait_ready(admin).await;
    let status = admin_call(admin, http::Method::GET, "/status", "").await;
    assert_eq!(status["percent"]["desired"], 35, "{status}");
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(status["rollback"]["active"]["L1"]["reason"], "before restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_connections_at_once() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let (proxy_addr, admin) = (free_port(), free_port());
    // Far longer than the test waits: only closing idle connections at
    // once lets the process exit in time.
    let config = write_config(dir.path(), stable.addr, new.addr, proxy_addr, admin, "20s");
    let mut process = Process::spawn(&["run", "--config", &config]);
    wait_ready(admin).await;
    // One connection that has sent nothing, one kept alive after a request.
    let silent = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        kept.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    process.signal("TERM");
    let signalled = Instant::now();
    let (code, _process) =
        tokio::task::spawn_blocking(move || (process.wait_exit(Duration::from_secs(8)), process)).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "idle connections held the shutdown for {:?} (header_read_timeout is 10 s, drain_timeout 20 s)",
        signalled.elapsed()
    );
    drop((silent, kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_new_upstream_under_load_sends_its_users_to_stable() {
    let stable = Upstream::start("stable").await;
    let new_addr = free_port();
    let mut new = Process::spawn(&["upstream", "--name", "new", "--listen", &new_addr.to_string()]);
    eventually(Duration::from_secs(10), "new upstream up", || async {
        tokio::net::TcpStream::connect(new_addr).await.ok().map(|_| ())
    })
    .await;
    let text = config_addrs(&[stable.addr], &[new_addr], 50, "");
    let proxy = Proxy::start(&text).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients = start_load(proxy.proxy_addr, "/", 8, stop.clone(), load.clone());
    eventually(Duration::from_secs(10), "load running", || async {
        (load.ok.load(Ordering::SeqCst) >= 200).then_some(())
    })
    .await;
    new.0.kill().unwrap();
    new.0.wait().unwrap();
    let bad_at_kill = load.bad_status.load(Ordering::SeqCst);
    let ok_at_kill = load.ok.load(Ordering::SeqCst);
    eventually(Duration::from_secs(20), "500 more requests after the kill", || async {
        (load.ok.load(Ordering::SeqCst) >= ok_at_kill + 500).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let bad = load.bad_status.load(Ordering::SeqCst) - bad_at_kill;
    assert!(bad <= 8, "{bad} failed responses after the kill: more than the 8 that could be in flight");
    assert_eq!(load.not_answered.load(Ordering::SeqCst), 0);
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    let fallbacks: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("grayshift_fallback_total ")).unwrap().parse().unwrap();
    assert!(fallbacks > 100.0, "new's users were sent to stable: {fallbacks}");
}
