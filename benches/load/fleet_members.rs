//! Simulated fleet members for the scale benchmark (`fleet_scale.sh`,
//! docs/src/fleet.md, Cost at scale): each registers the way a grayshift
//! replica does, with the real key layout and cadence, and no proxy:
//!
//! - a lease of `--lease-ttl`, kept alive every third of it;
//! - `members/<name>` written at start and whenever it applies a shared
//!   change (it watches the shared ranges like a replica, three watches on
//!   one stream, and "applies" each change at once);
//! - `counters/<name>` written every `--interval` when its counters grew:
//!   with `--busy` they grow every interval (members serving traffic),
//!   without it they never do (idle members).
//!
//!   fleet_members --etcd http://127.0.0.1:2379 --name idle --from 0 --count 900 [--busy]
//!
//! Runs until killed.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use grayshift::control::fleet::store;
use serde_json::json;

struct Args {
    etcd: String,
    name: String,
    from: usize,
    count: usize,
    interval: Duration,
    lease_ttl: i64,
    busy: bool,
}

fn args() -> Args {
    let mut a = Args {
        etcd: "http://127.0.0.1:2379".into(),
        name: "idle".into(),
        from: 0,
        count: 10,
        interval: Duration::from_secs(5),
        lease_ttl: 10,
        busy: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--etcd" => a.etcd = value(),
            "--name" => a.name = value(),
            "--from" => a.from = value().parse().expect("--from N"),
            "--count" => a.count = value().parse().expect("--count N"),
            "--interval-ms" => a.interval = Duration::from_millis(value().parse().expect("--interval-ms N")),
            "--lease-ttl" => a.lease_ttl = value().parse().expect("--lease-ttl SECONDS"),
            "--busy" => a.busy = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn counters(lease: i64, requests: u64) -> String {
    let pool = |n: u64| json!({ "requests": n, "errors": 0, "buckets": [], "observed": n });
    json!({ "lease": lease, "pools": { "stable": pool(requests), "new": pool(requests / 10) } }).to_string()
}

async fn member(client: Client, prefix: String, name: String, args: std::sync::Arc<Args>) {
    loop {
        if let Err(e) = run_member(client.clone(), &prefix, &name, &args).await {
            eprintln!("{name}: {e}; again in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn run_member(mut client: Client, prefix: &str, name: &str, args: &Args) -> Result<(), etcd_client::Error> {
    let lease = client.lease_grant(args.lease_ttl, None).await?.id();
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    let put = etcd_client::PutOptions::new().with_lease(lease);
    let member_key = format!("{prefix}{}", store::member_key(name));
    let entry = |revision: i64| {
        json!({ "replica": name, "revision": revision, "effective_percent": 0, "rollback_level": 0, "seen": "now" })
            .to_string()
    };
    let now = client.get(format!("{prefix}epoch"), None).await?;
    let start = now.header().map_or(0, |h| h.revision());
    client.put(member_key.clone(), entry(start), Some(put.clone())).await?;
    let counters_key = format!("{prefix}{}", store::member_counters_key(name));
    let mut requests = 0u64;
    client.put(counters_key.clone(), counters(lease, requests), Some(put.clone())).await?;
    let mut stream = None;
    for (from, end) in store::watched_ranges(prefix) {
        let options = WatchOptions::new().with_range(end).with_start_revision(start + 1);
        match stream.as_mut() {
            None => stream = Some(client.watch(from, Some(options)).await?),
            Some(s) => etcd_client::WatchStream::watch(s, from, Some(options)).await?,
        }
    }
    let mut stream = stream.expect("three ranges");
    let mut keep_alive = tokio::time::interval(Duration::from_secs((args.lease_ttl / 3).max(1) as u64));
    let mut tick = tokio::time::interval(args.interval);
    loop {
        tokio::select! {
            message = stream.message() => {
                let Some(response) = message? else { return Ok(()) };
                let shared = response.events().iter().filter(|e| e.event_type() == EventType::Put || e.event_type() == EventType::Delete)
                    .filter_map(|e| e.kv())
                    .filter(|kv| kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)).is_some_and(store::is_shared))
                    .map(|kv| kv.mod_revision())
                    .max();
                if let Some(revision) = shared {
                    client.put(member_key.clone(), entry(revision), Some(put.clone())).await?;
                }
            }
            _ = keep_alive.tick() => {
                keeper.keep_alive().await?;
                answers.message().await?;
            }
            _ = tick.tick(), if args.busy => {
                requests += 100;
                client.put(counters_key.clone(), counters(lease, requests), Some(put.clone())).await?;
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args = std::sync::Arc::new(args());
    let prefix = format!("/grayshift/v1/{}/", args.name);
    // One connection per hundred members, as a hundred pods would each
    // have their own.
    let mut clients = Vec::new();
    for _ in 0..args.count.div_ceil(100) {
        clients.push(Client::connect([args.etcd.clone()], None).await.expect("etcd answers"));
    }
    for i in 0..args.count {
        let name = format!("sim-{:04}", args.from + i);
        tokio::spawn(member(clients[i / 100].clone(), prefix.clone(), name, args.clone()));
        // Spread the cadence, as pods started over time would be.
        tokio::time::sleep(args.interval / args.count.max(1) as u32).await;
    }
    eprintln!("{} simulated members registered", args.count);
    std::future::pending::<()>().await;
}
