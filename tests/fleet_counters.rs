//! Fleet-wide counters at scale (docs/src/fleet.md, Cost at scale): one
//! replica, the holder of `locks/counters`, sums the members' counters into
//! the `counters` key every replica windows. Against a real etcd: the
//! holder killed (another takes over, every request counted once), a
//! member that stops, one replica cut off from the store.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/fleet.rs"]
mod fleet_support;
#[path = "common/rules.rs"]
mod rules_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use etcd::Etcd;
use fleet_support::*;

/// The test configs' `lease_ttl` (see `fleet_section`).
const LEASE_TTL: Duration = Duration::from_secs(2);

async fn wait_tally(etcd: &Etcd, name: &str, what: &str, want: impl Fn((u64, u64, u64)) -> bool) -> (u64, u64, u64) {
    eventually(DEADLINE, what, || async { tally(etcd, name).await.filter(|t| want(*t)) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_holder_killed_another_takes_over_within_the_lease_and_counts_every_request_once() {
    let etcd = Etcd::start().await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("k{}", std::process::id());
    let mut replicas: Vec<(String, Binary)> = ["a", "b", "c"]
        .into_iter()
        .map(|r| {
            let text = config(&[&stable], &[&new], 50, &format!("{FAST}{}", fleet_section(&etcd, &name, r)));
            (r.to_string(), Binary::start(&dir.path().join(r), &text))
        })
        .collect();
    for (_, r) in &replicas {
        eventually(DEADLINE, "three live members", || async move {
            (r.get_json("/status").await?["fleet"]["members"].as_array()?.len() == 3).then_some(())
        })
        .await;
    }
    wait_tally(&etcd, &name, "the three members summed", |t| t.0 == 3).await;
    for (i, (_, r)) in replicas.iter().enumerate() {
        for u in 0..10 {
            assert_eq!(r.get_as(&format!("user-{i}-{u}")).await, 200);
        }
    }
    wait_tally(&etcd, &name, "30 requests summed", |t| t.1 == 30).await;

    let holder = counters_holder(&etcd, &name).await.expect("a replica sums the counters");
    let index = replicas.iter().position(|(n, _)| *n == holder).unwrap();
    let (_, mut killed) = replicas.remove(index);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let killed_at = Instant::now();
    // Traffic while nobody sums: counted by the next holder, not lost.
    for (i, (_, r)) in replicas.iter().enumerate() {
        for u in 0..10 {
            assert_eq!(r.get_as(&format!("later-{i}-{u}")).await, 200);
        }
    }
    let next = eventually(DEADLINE, "another replica takes locks/counters", || async {
        counters_holder(&etcd, &name).await.filter(|h| *h != holder)
    })
    .await;
    // The lease expires at most lease_ttl after the kill, and the survivors
    // are woken by the lock's deletion; the slack is for a loaded machine.
    let took = killed_at.elapsed();
    assert!(took <= LEASE_TTL + Duration::from_secs(3), "took over after {took:?}");
    assert!(replicas.iter().any(|(n, _)| *n == next));
    let summed = wait_tally(&etcd, &name, "the killed member gone, 50 requests", |t| t.0 == 2 && t.1 >= 50).await;
    assert_eq!(summed.1, 50, "every request exactly once across the handover");
    // One more request: the new holder keeps summing, nothing counted twice.
    assert_eq!(replicas[0].1.get_as("one-more").await, 200);
    let summed = wait_tally(&etcd, &name, "51 requests", |t| t.1 >= 51).await;
    assert_eq!(summed, (2, 51, 0));
}

/// A rule bad on the fleet's error rate but with a long `for`: pending, and
/// it must stay pending, from the same start, while the counters change
/// hands. 30 requests are served before the handover and none during it;
/// `min_requests = 25` makes the rule see any count lost on the way (a new
/// holder that summed only the survivors would see 20 and clear it).
const PENDING_RULE: &str = r#"
[[rules]]
name = "fleet-errors"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "30s" }
above = 0.2
for = "10m"
min_requests = 25
"#;

/// How long a rule's `why` says it has been bad ("... for 2.3s of 10m").
fn held(rule: &serde_json::Value) -> Option<Duration> {
    let why = rule["why"].as_str()?;
    let held = why.rsplit_once(" for ")?.1.split(" of ").next()?;
    if let Some(ms) = held.strip_suffix("ms") {
        return Some(Duration::from_millis(ms.parse().ok()?));
    }
    Some(Duration::from_secs_f64(held.strip_suffix('s')?.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_pending_on_the_fleet_total_stays_pending_from_the_same_start_while_the_counters_change_hands() {
    let etcd = Etcd::start().await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    new.fail_every.store(2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("q{}", std::process::id());
    let mut replicas: Vec<(String, Binary)> = ["a", "b", "c"]
        .into_iter()
        .map(|r| {
            let extra = format!("{PENDING_RULE}{FAST}{}", fleet_section(&etcd, &name, r));
            (r.to_string(), Binary::start(&dir.path().join(r), &config(&[&stable], &[&new], 100, &extra)))
        })
        .collect();
    wait_tally(&etcd, &name, "the three members summed", |t| t.0 == 3).await;
    for (i, (_, r)) in replicas.iter().enumerate() {
        for u in 0..10 {
            r.get_as(&format!("user-{i}-{u}")).await;
        }
    }
    // Half of the fleet's requests to new fail: above 0.2, pending for 10 min.
    for (_, r) in &replicas {
        eventually(DEADLINE, "the rule pending on every replica", || async move {
            (r.get_json("/status").await?["rules"][0]["state"] == "pending").then_some(())
        })
        .await;
    }
    let pending_from = Instant::now();

    let holder = counters_holder(&etcd, &name).await.expect("a replica sums the counters");
    let index = replicas.iter().position(|(n, _)| *n == holder).unwrap();
    let (_, mut killed) = replicas.remove(index);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    // Through the handover and a while after it, the survivors' rule read
    // every 100 ms (the window, 30 s, still holds all 30 requests).
    let mut took_over_at = None;
    while took_over_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
        assert!(pending_from.elapsed() < DEADLINE + LEASE_TTL, "nobody took locks/counters over");
        if took_over_at.is_none() && counters_holder(&etcd, &name).await.is_some_and(|h| h != holder) {
            took_over_at = Some(Instant::now());
        }
        for (_, r) in &replicas {
            let status = r.get_json("/status").await.expect("status");
            let rule = &status["rules"][0];
            assert_eq!(rule["state"], "pending", "the rule left pending during the handover: {rule:#}");
            assert_eq!(status["rollback"]["level"], 0, "{status:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Pending since before the kill, without a restart in between.
    for (_, r) in &replicas {
        let rule = r.get_json("/status").await.expect("status")["rules"][0].clone();
        let held = held(&rule).unwrap_or_else(|| panic!("no held time in {rule:#}"));
        assert!(held + Duration::from_millis(500) >= pending_from.elapsed(), "restarted: {held:?} bad, {rule:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_adds_nothing_more_and_one_back_under_a_new_lease_counts_from_zero() {
    let etcd = Etcd::start().await;
    let mut fleet = Fleet::start(&etcd, 50, "").await;
    for (i, r) in fleet.replicas.iter().enumerate() {
        for u in 0..5 {
            r.get_as("/", Some(&format!("user-{i}-{u}"))).await;
        }
    }
    wait_tally(&etcd, &fleet.name, "15 requests from 3 members", |t| t == (3, 15, 0)).await;
    fleet.replicas[2].stop().await;
    // Its requests were served: they stay in the total; its key is gone.
    wait_tally(&etcd, &fleet.name, "the stopped member left", |t| t.0 == 2).await;
    assert_eq!(tally(&etcd, &fleet.name).await, Some((2, 15, 0)));
    let gone = etcd.dump(&format!("/grayshift/v1/{}/counters/c", fleet.name)).await;
    assert!(gone.is_empty(), "{gone:?}");
    let status = fleet.replicas[0].status().await;
    assert_eq!(status["fleet"]["members"].as_array().map(Vec::len), Some(2), "{status:#}");

    // A new process under a new lease: all it serves is added, from its
    // start (even before its lease), nothing from the old one twice.
    let text = fleet.config_for(&etcd, "c", "");
    fleet.replicas[2] = Proxy::start(&text).await;
    let c = &fleet.replicas[2];
    for u in 0..4 {
        assert_eq!(c.get_as("/", Some(&format!("back-{u}"))).await.status, 200);
    }
    let summed = wait_tally(&etcd, &fleet.name, "the member back, 19 requests", |t| t.0 == 3 && t.1 >= 19).await;
    assert_eq!(summed, (3, 19, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_rolls_itself_back_on_its_own_traffic_and_the_fleet_counts_nothing_twice() {
    let etcd = Etcd::start().await;
    let gate = Gate::start(&etcd.urls()[0]).await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let name = format!("p{}", std::process::id());
    let section = |r: &str| {
        let s = fleet_section(&etcd, &name, r);
        if r == "c" {
            s.replace(&etcd.toml_urls(), &format!("\"{}\"", gate.url))
        } else {
            s
        }
    };
    let mut replicas = Vec::new();
    for r in ["a", "b", "c"] {
        replicas.push(Proxy::start(&config(&[&stable], &[&new], 100, &format!("{L1_RULE}{FAST}{}", section(r)))).await);
    }
    let [a, b, c] = &replicas[..] else { unreachable!() };
    for r in [a, b, c] {
        wait_all_on(r, "new", "everyone on new at 100%").await;
    }
    let served: u64 = replicas
        .iter()
        .map(|r| {
            grayshift::config::PoolName::ALL.iter().map(|&p| r.shared().metrics.pool(p).total_requests()).sum::<u64>()
        })
        .sum();
    let before = wait_tally(&etcd, &name, "every request summed", |t| t == (3, served, 0)).await;

    gate.cut();
    rules_support::wait_status(c, "C sees the store unreachable", |s| s["fleet"]["store"] == "unreachable").await;
    wait_tally(&etcd, &name, "C's lease expired", |t| t.0 == 2).await;
    // Errors through C alone: C's own counters still fire its rule.
    new.fail_every.store(2, Ordering::SeqCst);
    let mut user = 0;
    eventually(DEADLINE, "L1 on C from its own traffic", || {
        user += 20;
        let first = user;
        async move {
            for u in first..first + 20 {
                c.get_as("/", Some(&format!("cut-{u}"))).await;
            }
            (c.shared().control.route().percent == 0).then_some(())
        }
    })
    .await;
    new.fail_every.store(0, Ordering::SeqCst);
    assert_eq!(
        tally(&etcd, &name).await,
        Some((2, before.1, before.2)),
        "the cut-off replica's traffic is not in the sum"
    );
    assert_eq!(a.shared().control.route().percent, 100, "A does not know yet");

    gate.heal();
    for r in [a, b] {
        eventually(DEADLINE, "C's rollback published once it is back", || async move {
            (r.shared().control.route().percent == 0).then_some(())
        })
        .await;
    }
    // Back under a new lease: what it served before the cut (summed then)
    // and during it is its new lease's starting point, not added again.
    let after = wait_tally(&etcd, &name, "C back among the members", |t| t.0 == 3).await;
    assert_eq!(after, before, "A and B served nothing since; C's past is not counted twice");
}
