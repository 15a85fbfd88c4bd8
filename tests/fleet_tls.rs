//! Fleet mode over TLS: a real etcd serving its client port with a
//! certificate for `localhost` from a CA the test made; grayshift reaches it
//! with `tls = { ca = … }`, and does not with a CA that did not sign it.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::process::{Command, Stdio};

use common::*;
use rules_support::*;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_reaches_an_https_etcd_with_its_ca_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca("grayshift etcd test CA");
    let (cert, key) = localhost_cert(&ca);
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("server.crt"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(path("ca.pem"), ca.0.pem()).unwrap();
    std::fs::write(path("other-ca.pem"), test_ca("another CA").0.pem()).unwrap();

    let (client, peer) = (free_port(), free_port());
    let etcd = Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()))
        .args(["--name", "n1", "--data-dir", path("data").to_str().unwrap()])
        .args(["--listen-client-urls", &format!("https://127.0.0.1:{client}")])
        .args(["--advertise-client-urls", &format!("https://localhost:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("n1=http://127.0.0.1:{peer}")])
        .args(["--cert-file", path("server.crt").to_str().unwrap(), "--key-file", path("server.key").to_str().unwrap()])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(path("etcd.log")).unwrap())
        .spawn()
        .expect("etcd runs (install Debian's etcd-server)");
    let _etcd = Killed(etcd);

    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let fleet = |ca: &str, replica: &str| {
        format!(
            "[rollback]\ninterval = \"100ms\"\n\n[fleet]\netcd = [\"https://localhost:{client}\"]\nname = \"tls\"\nreplica = \"{replica}\"\nlease_ttl = \"2s\"\nsync_timeout = \"1s\"\ntls = {{ ca = \"{}\" }}\n",
            path(ca).display()
        )
    };
    let good = Proxy::start(&config(&[&stable], &[&new], 10, &fleet("ca.pem", "good"))).await;
    wait_status(&good, "the store connected over TLS", |s| s["fleet"]["store"] == "connected").await;
    let reply = good.admin("PUT", "/percent", Some(json!({"percent": 35})), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_status(&good, "the change applied from the store", |s| s["percent"]["desired"] == 35).await;

    let wrong = Proxy::start(&config(&[&stable], &[&new], 10, &fleet("other-ca.pem", "wrong"))).await;
    let status = wait_status(&wrong, "sync_timeout passed", |s| s["fleet"]["store"].is_string()).await;
    assert_eq!(status["fleet"]["store"], "unreachable", "{status}");
    let reply = wrong.admin("PUT", "/percent", Some(json!({"percent": 50})), None).await;
    assert_eq!(reply.status, 503, "a replica that cannot verify the store takes no risk: {}", reply.text());
}
