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
