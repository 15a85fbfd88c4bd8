//! The fleet's counters, summed once (docs/src/fleet.md, Fleet-wide local
//! signals). Every member publishes its own counters (`counters/<replica>`,
//! written when they change); one replica, the holder of `locks/counters`
//! (under its member lease, like the ramp's lock), adds up what each member
//! grew by since the last pass and publishes the total as one key,
//! `counters`, which every replica watches and windows like its own
//! counters. So a replica's work per evaluation is the same for 3 members
//! or 1 000; only the holder reads the members' counters, and only those
//! that changed (a read from the revision it summed up to).
//!
//! The total only grows, and a new holder continues it exactly: the
//! `counters` key records the store revision it summed up to, and the new
//! holder reads the members' counters at that revision as its starting
//! point. A member's counters run from zero under each lease, so one that
//! comes back under a new lease is counted from zero again, never twice;
//! one that stops takes nothing out of the total (its requests were
//! served) and adds nothing more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::json;
use tokio::sync::watch;

use super::store::{self, MemberCounts, Tally};
use super::{timed, Fleet, FleetError};
use crate::control::rules::local::PoolCounts;
use crate::Shared;

/// The running sum: the total and, per member, the lease its counters run
/// under and the counters last added.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summer {
    total: [PoolCounts; 2],
    bases: HashMap<String, (i64, [PoolCounts; 2])>,
}

/// The lease of a member whose counters do not decode: any real lease
/// differs, so its first readable counters count from zero.
const UNREADABLE: i64 = i64::MIN;

impl Summer {
    /// Continue from a published total, with the members' counters it was
    /// summed from.
    pub fn resume(total: [PoolCounts; 2], members: impl IntoIterator<Item = (String, MemberCounts)>) -> Summer {
        let bases = members.into_iter().map(|(name, c)| (name, (c.lease, store::pools_of(&c.pools)))).collect();
        Summer { total, bases }
    }

    /// A member's counters as stored now: add what they grew by.
    pub fn observe(&mut self, replica: &str, counts: &MemberCounts) {
        let now = store::pools_of(&counts.pools);
        let grown = match self.bases.get(replica) {
            Some((lease, base)) if *lease == counts.lease => [0, 1].map(|i| now[i].since(&base[i])),
            // New, or back under a new lease: its counters started at zero.
            _ => now.clone(),
        };
        for (total, grown) in self.total.iter_mut().zip(&grown) {
            total.add(grown);
        }
        self.bases.insert(replica.to_string(), (counts.lease, now));
    }

    /// A member whose counters do not decode: known, adds nothing.
    pub fn unreadable(&mut self, replica: &str) {
        self.bases.insert(replica.to_string(), (UNREADABLE, Default::default()));
    }

    /// Forget the members not in `live` (their keys expired with their lease).
    pub fn retain(&mut self, live: &HashSet<String>) {
        self.bases.retain(|name, _| live.contains(name));
    }

    pub fn members(&self) -> usize {
        self.bases.len()
    }

    pub fn total(&self) -> &[PoolCounts; 2] {
        &self.total
    }
}

/// This replica as the aggregator: the lock's fencing token (its create
/// revision), the lease it is held under, the sum and the revision it
/// reaches, and what was last published.
struct Holder {
    token: i64,
    lease: i64,
    summer: Summer,
    revision: i64,
    published: Option<(usize, [PoolCounts; 2])>,
    published_at: tokio::time::Instant,
}

/// An unchanged total is written again this often, so the revision it
/// records stays well inside etcd's compaction retention (an hour, as
/// docs/src/fleet.md recommends) and a new holder can always read the
/// members' counters at it.
const REFRESH_EVERY: Duration = Duration::from_secs(600);

pub async fn run(fleet: Arc<Fleet>, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut held: Option<Holder> = None;
    loop {
        // Read every time round, so a reload applies.
        let period = shared.config().rollback.interval.max(Duration::from_millis(50));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            // The lock went away: take over now, not a period later.
            _ = fleet.tally_wake.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = once(&fleet, &mut held).await {
            tracing::debug!(error = %e, "fleet counters: not summed this time");
            held = None;
        }
    }
}

async fn once(fleet: &Fleet, held: &mut Option<Holder>) -> Result<(), FleetError> {
    let Some(lease) = fleet.lease().filter(|_| fleet.is_connected()) else {
        *held = None;
        return Ok(());
    };
    if held.as_ref().is_some_and(|h| h.lease != lease) {
        *held = None; // The old lease took the lock with it.
    }
    if held.is_none() {
        *held = take(fleet, lease).await?;
    }
    match held {
        Some(holder) => sum(fleet, holder).await,
        None => Ok(()),
    }
}

/// Take `locks/counters` if nobody holds it (or find it is ours), and
/// continue the published total.
async fn take(fleet: &Fleet, lease: i64) -> Result<Option<Holder>, FleetError> {
    let mine = json!({ "replica": fleet.config.replica, "lease": lease }).to_string();
    if fleet.view().keys.get(store::COUNTERS_LOCK).is_some_and(|lock| lock.value != mine.as_bytes()) {
        return Ok(None); // Held by another replica: no write to find that out.
    }
    let mut client = fleet.client().await?;
    let lock = fleet.key(store::COUNTERS_LOCK);
    let txn = Txn::new()
        .when([Compare::create_revision(lock.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(lock.clone(), mine.clone(), Some(Fleet::put_options(lease)))])
        .or_else([TxnOp::get(lock, None)]);
    let resp = timed!(client.txn(txn.clone()))?;
    let token = if resp.succeeded() {
        resp.header().map_or(0, |h| h.revision())
    } else {
        let held_by = first_kv(&resp);
        match held_by {
            Some((value, create_revision)) if value == mine.as_bytes() => create_revision,
            _ => return Ok(None),
        }
    };
    let published = timed!(client.get(fleet.key(store::COUNTERS), None))?;
    let tally = published.kvs().first().and_then(|kv| match serde_json::from_slice::<Tally>(kv.value()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "fleet counters: the published total does not decode; starting from zero");
            None
        }
    });
    let (summer, revision, published) = match tally {
        None => (Summer::default(), 0, None),
        Some(t) => {
            let total = store::pools_of(&t.pools);
            let (members, revision) = match read_members(fleet, &mut client, Some(t.revision)).await {
                Ok((members, _)) => (members, t.revision),
                Err(e) => {
                    // Compacted away: count from now (the revision of that
                    // same read); what the members served since the last
                    // total is missed once (docs/src/fleet.md).
                    tracing::warn!(error = %e, revision = t.revision, "fleet counters: cannot read the members' counters the total was summed from; continuing from now");
                    read_members(fleet, &mut client, None).await?
                }
            };
            (Summer::resume(total.clone(), members), revision, Some((t.members, total)))
        }
    };
    tracing::info!(replica = %fleet.config.replica, token, from = revision, "fleet: this replica sums the fleet's counters (holds locks/counters)");
    Ok(Some(Holder { token, lease, summer, revision, published, published_at: tokio::time::Instant::now() }))
}

/// Every member's counters, at `revision` (or now), and the store revision
/// they were read at.
async fn read_members(
    fleet: &Fleet,
    client: &mut etcd_client::Client,
    revision: Option<i64>,
) -> Result<(Vec<(String, MemberCounts)>, i64), FleetError> {
    let mut options = GetOptions::new().with_range(fleet.key(&store::range_end(store::MEMBER_COUNTERS)));
    if let Some(r) = revision {
        options = options.with_revision(r);
    }
    let resp = timed!(client.get(fleet.key(store::MEMBER_COUNTERS), Some(options.clone())))?;
    let prefix = fleet.key(store::MEMBER_COUNTERS);
    let members = resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = kv.key_str().ok()?.strip_prefix(&prefix)?.to_string();
            serde_json::from_slice::<MemberCounts>(kv.value()).ok().map(|c| (name, c))
        })
        .collect();
    Ok((members, resp.header().map_or(0, |h| h.revision())))
}

/// One pass: add the members' counters that changed since the last one,
/// forget the members gone, publish the total if it moved.
async fn sum(fleet: &Fleet, holder: &mut Holder) -> Result<(), FleetError> {
    let mut client = fleet.client().await?;
    let (start, end) = (fleet.key(store::MEMBER_COUNTERS), fleet.key(&store::range_end(store::MEMBER_COUNTERS)));
    let changed = GetOptions::new().with_range(end.clone()).with_min_mod_revision(holder.revision + 1);
    let count = GetOptions::new().with_range(end.clone()).with_count_only();
    let txn = Txn::new().and_then([TxnOp::get(start.clone(), Some(changed)), TxnOp::get(start.clone(), Some(count))]);
    let resp = timed!(client.txn(txn.clone()))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut gets = resp.op_responses().into_iter().filter_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let (Some(changed), Some(count)) = (gets.next(), gets.next()) else {
        return Err(FleetError::Resync("the counters read answered without its ranges".into()));
    };
    for kv in changed.kvs() {
        let Some(name) = kv.key_str().ok().and_then(|k| k.strip_prefix(&start)) else { continue };
        match serde_json::from_slice::<MemberCounts>(kv.value()) {
            Ok(counts) => holder.summer.observe(name, &counts),
            Err(e) => {
                tracing::debug!(member = name, error = %e, "fleet counters: a member's counters do not decode; ignored");
                holder.summer.unreadable(name);
            }
        }
    }
    if count.count() != holder.summer.members() as i64 {
        // Someone left (rare): which, at the same revision.
        let options = GetOptions::new().with_range(end).with_keys_only().with_revision(revision);
        let keys = timed!(client.get(start.clone(), Some(options.clone())))?;
        let live: HashSet<String> =
            keys.kvs().iter().filter_map(|kv| kv.key_str().ok()?.strip_prefix(&start).map(str::to_string)).collect();
        holder.summer.retain(&live);
    }
    holder.revision = revision;
    let now = (holder.summer.members(), holder.summer.total().clone());
    if holder.published.as_ref() == Some(&now) && holder.published_at.elapsed() < REFRESH_EVERY {
        return Ok(()); // Nothing moved: no write, no event for anyone.
    }
    let tally =
        Tally { revision, members: now.0, replica: fleet.config.replica.clone(), pools: store::pools_map(&now.1) };
    let lock = fleet.key(store::COUNTERS_LOCK);
    let txn = Txn::new().when([Compare::create_revision(lock, CompareOp::Equal, holder.token)]).and_then([TxnOp::put(
        fleet.key(store::COUNTERS),
        serde_json::to_string(&tally).expect("serializes"),
        None,
    )]);
    if !timed!(client.txn(txn.clone()))?.succeeded() {
        return Err(FleetError::Resync("locks/counters is no longer ours".into()));
    }
    holder.published = Some(now);
    holder.published_at = tokio::time::Instant::now();
    Ok(())
}

/// The value and create revision of the first key a transaction's
/// `or_else` read.
fn first_kv(resp: &etcd_client::TxnResponse) -> Option<(Vec<u8>, i64)> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| (kv.value().to_vec(), kv.create_revision())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolName;

    fn counts(lease: i64, new_requests: u64, new_errors: u64) -> MemberCounts {
        let pools = [PoolCounts::default(), PoolCounts::for_test(new_requests, new_errors)];
        MemberCounts { lease, pools: store::pools_map(&pools) }
    }

    fn new_pool(summer: &Summer) -> (u64, u64) {
        let new = &summer.total()[PoolName::New.index()];
        (new.requests(), new.errors())
    }

    #[test]
    fn adds_what_each_member_grew_by() {
        let mut summer = Summer::default();
        summer.observe("a", &counts(1, 10, 1));
        summer.observe("b", &counts(2, 5, 0));
        assert_eq!(new_pool(&summer), (15, 1), "a new member counts from zero");
        summer.observe("a", &counts(1, 30, 4));
        assert_eq!(new_pool(&summer), (35, 4));
        assert_eq!(summer.members(), 2);
    }

    #[test]
    fn a_member_back_under_a_new_lease_counts_from_zero_and_one_gone_keeps_what_it_served() {
        let mut summer = Summer::default();
        summer.observe("a", &counts(1, 100, 10));
        summer.observe("a", &counts(7, 3, 0));
        assert_eq!(new_pool(&summer), (103, 10), "never negative, never twice");
        summer.retain(&HashSet::from(["b".to_string()]));
        assert_eq!((summer.members(), new_pool(&summer)), (0, (103, 10)));
        summer.unreadable("c");
        summer.observe("c", &counts(9, 4, 4));
        assert_eq!(new_pool(&summer), (107, 14), "readable at last: counted from zero");
    }

    #[test]
    fn a_resumed_sum_continues_exactly() {
        let mut first = Summer::default();
        first.observe("a", &counts(1, 10, 0));
        first.observe("b", &counts(2, 20, 2));
        let (total, members) =
            (first.total().clone(), vec![("a".into(), counts(1, 10, 0)), ("b".into(), counts(2, 20, 2))]);
        let mut second = Summer::resume(total, members);
        assert_eq!(second, first);
        for s in [&mut first, &mut second] {
            s.observe("a", &counts(1, 15, 5));
        }
        assert_eq!(new_pool(&second), (35, 7));
        assert_eq!(second, first, "the new holder adds exactly what the old one would have");
    }
}
