//! A real etcd for the fleet tests: a single node (or a 3-node cluster) on
//! free loopback ports with short heartbeat/election settings, its own
//! data dir, killed on drop. `stop`/`start` keep the ports and the data;
//! `wipe` deletes the data (a store that lost everything).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str) {
        let log = std::fs::File::create(self.data_dir.with_extension("log")).unwrap();
        let child = Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()))
            .args(["--name", &self.name, "--data-dir", self.data_dir.to_str().unwrap()])
            .args(["--listen-client-urls", &self.url(), "--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &self.peer_url(), "--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd runs (install Debian's etcd-server)");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Etcd {
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// One node, ready.
    pub async fn start() -> Etcd {
        Self::cluster(1).await
    }

    /// `n` nodes on loopback, ready (a leader elected).
    pub async fn cluster(n: usize) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (1..=n)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("n{i}")),
                child: None,
            })
            .collect();
        let mut etcd = Etcd { nodes, dir };
        etcd.start_all().await;
        etcd
    }

    fn initial_cluster(&self) -> String {
        self.nodes.iter().map(|n| format!("{}={}", n.name, n.peer_url())).collect::<Vec<_>>().join(",")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The `etcd = [...]` value for a `[fleet]` section.
    pub fn toml_urls(&self) -> String {
        self.urls().iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")
    }

    /// Start every stopped node (same ports, same data) and wait for it.
    pub async fn start_all(&mut self) {
        let cluster = self.initial_cluster();
        for node in self.nodes.iter_mut().filter(|n| !n.is_running()) {
            node.spawn(&cluster);
        }
        self.wait_ready().await;
    }

    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Stopped nodes lose their data (start_all makes a new cluster).
    pub fn wipe(&mut self) {
        self.stop_all();
        for node in &self.nodes {
            let _ = std::fs::remove_dir_all(&node.data_dir);
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.urls(), None).await.unwrap()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let ok = async {
                    let mut c = etcd_client::Client::connect([node.url()], None).await.ok()?;
                    let status = tokio::time::timeout(Duration::from_millis(500), c.status()).await.ok()?.ok()?;
                    (status.leader() != 0).then_some(())
                }
                .await;
                if ok.is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "etcd {} did not become ready", node.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The index of the node that is the leader now.
    pub async fn leader(&self) -> usize {
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.is_running()) {
            let mut c = etcd_client::Client::connect([node.url()], None).await.unwrap();
            let status = c.status().await.unwrap();
            if status.leader() == status.header().unwrap().member_id() {
                return i;
            }
        }
        panic!("no leader");
    }

    /// Every key under `prefix` with its value, in key order.
    pub async fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let mut c = self.client().await;
        let resp = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        resp.kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap_or("").to_string()))
            .collect()
    }

    pub async fn put(&self, key: &str, value: &str) {
        self.client().await.put(key, value, None).await.unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}
