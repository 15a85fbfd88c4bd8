//! Fleet test support: a fleet of three real grayshift replicas on one
//! etcd, where users land, and the `[fleet]` section.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::json;

use super::etcd::Etcd;
use super::*;

/// Generous: the guarantee is 1 s; a loaded CI machine gets slack.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn fleet_section(etcd: &Etcd, name: &str, replica: &str) -> String {
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

pub const FAST: &str = "\n[rollback]\ninterval = \"100ms\"\n";

/// `[rollback]` with a short interval, unless `extra` has its own.
pub fn fast(extra: &str) -> &'static str {
    if extra.contains("[rollback]") {
        ""
    } else {
        FAST
    }
}

pub struct Fleet {
    pub stable: Upstream,
    pub new: Upstream,
    pub replicas: Vec<Proxy>,
    pub name: String,
}

impl Fleet {
    pub async fn start(etcd: &Etcd, percent: u8, extra: &str) -> Fleet {
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

    pub fn config_for(&self, etcd: &Etcd, replica: &str, extra: &str) -> String {
        config(
            &[&self.stable],
            &[&self.new],
            0,
            &format!("{extra}{}{}", fast(extra), fleet_section(etcd, &self.name, replica)),
        )
    }

    pub async fn wait_members(&self, n: usize) {
        for r in &self.replicas {
            eventually(DEADLINE, &format!("{n} live members"), || async move {
                (r.status().await["fleet"]["members"].as_array().map_or(0, Vec::len) == n).then_some(())
            })
            .await;
        }
    }
}

/// Where 20 users land through `proxy`: ("stable" count, "new" count).
pub async fn spread(proxy: &Proxy) -> (usize, usize) {
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

pub async fn wait_all_on(proxy: &Proxy, pool: &str, what: &str) {
    eventually(DEADLINE, what, || async move {
        let (stable, new) = spread(proxy).await;
        let all = if pool == "new" { new == 20 } else { stable == 20 };
        all.then_some(())
    })
    .await;
}

pub async fn admin_put(proxy: &Proxy, percent: i64) -> Reply {
    proxy.admin("PUT", "/percent", Some(json!({ "percent": percent })), None).await
}

pub fn plain_client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

pub const L1_RULE: &str = r#"
[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "10s" }
above = 0.05
min_requests = 10
"#;

/// A grayshift binary (so it can be killed with SIGKILL: no lease revoke),
/// killed on drop, with its proxy and admin addresses.
pub struct Binary {
    pub child: std::process::Child,
    pub proxy: String,
    pub admin: String,
}

impl Binary {
    /// Run `text` (a config from [`config`]) in `dir` on free ports.
    pub fn start(dir: &std::path::Path, text: &str) -> Binary {
        std::fs::create_dir_all(dir).unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (proxy, admin) = (free(), free());
        let text = text
            .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{proxy}\""), 1)
            .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{admin}\""), 1)
            .replace("{dir}", dir.to_str().unwrap());
        let path = dir.join("grayshift.toml");
        std::fs::write(&path, text).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
            .args(["run", "--config", path.to_str().unwrap()])
            .env("GRAYSHIFT_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Binary { child, proxy: format!("http://127.0.0.1:{proxy}"), admin: format!("http://127.0.0.1:{admin}") }
    }

    pub async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let req = http::Request::get(format!("{}{path}", self.admin)).body(empty()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(2), plain_client().request(req)).await.ok()?.ok()?;
        serde_json::from_slice(&Reply::read(resp).await.body).ok()
    }

    /// A GET through the proxy as `user`: its status.
    pub async fn get_as(&self, user: &str) -> u16 {
        let req = http::Request::get(format!("{}/", self.proxy)).header("x-user-id", user).body(empty()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), plain_client().request(req)).await.unwrap().unwrap();
        Reply::read(resp).await.status.as_u16()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder in front of etcd that the test can cut (every
/// connection closed, new ones refused) and heal: one replica's
/// partition.
pub struct Gate {
    pub url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Gate {
    pub async fn start(target: &str) -> Gate {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_string();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (open2, links2) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        Gate { url, open, links }
    }

    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The fleet's summed counters as published (`counters`): (members,
/// requests over both pools, errors over both pools).
pub async fn tally(etcd: &Etcd, name: &str) -> Option<(u64, u64, u64)> {
    let key = format!("/grayshift/v1/{name}/counters");
    let (_, value) = etcd.dump(&key).await.into_iter().find(|(k, _)| *k == key)?;
    let tally: serde_json::Value = serde_json::from_str(&value).ok()?;
    let pools = tally["pools"].as_object()?;
    let sum = |field: &str| pools.values().map(|p| p[field].as_u64().unwrap_or(0)).sum();
    Some((tally["members"].as_u64()?, sum("requests"), sum("errors")))
}

/// Who holds `locks/counters`.
pub async fn counters_holder(etcd: &Etcd, name: &str) -> Option<String> {
    let (_, value) = etcd.dump(&format!("/grayshift/v1/{name}/locks/counters")).await.into_iter().next()?;
    let lock: serde_json::Value = serde_json::from_str(&value).ok()?;
    lock["replica"].as_str().map(str::to_string)
}
