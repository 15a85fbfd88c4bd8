//! The replica's own keys, under a lease of `lease_ttl` kept alive here
//! (docs/src/fleet.md, Cost at scale):
//!
//! - `members/<replica>`: the revision it applied, its effective percent
//!   and level, written when one of them changes (right after each apply);
//! - `counters/<replica>`: its per-pool counters since the lease began,
//!   written every `rollback.interval` when they changed, for the
//!   aggregator (`tally`).
//!
//! An idle replica writes nothing: its lease's keep-alive (every
//! `lease_ttl/3`) is all. Both keys go when the replica stops or its lease
//! expires.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::store::{self, Member, MemberCounts};
use super::{timed, Fleet, FleetError};
use crate::config::PoolName;
use crate::control::rules::local::PoolCounts;
use crate::Shared;

pub async fn run(fleet: Arc<Fleet>, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut lease: Option<i64> = None;
    let mut counted = false;
    loop {
        let result = tokio::select! {
            r = keep(&fleet, &shared, &mut lease, &mut counted) => Some(r),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(result) = result else {
            // Leave at once rather than after the lease expires.
            if let (Some(id), Ok(mut client)) = (lease, fleet.client().await) {
                let _ = timed!(client.lease_revoke(id));
            }
            return;
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "fleet member entry not kept; retrying");
            lease = None;
            fleet.set_lease(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(every(&shared)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// How often the counters are compared with what was last written.
fn every(shared: &Shared) -> Duration {
    shared.config().rollback.interval.max(Duration::from_millis(50))
}

/// Grant a lease, then keep it and the keys fresh until something fails.
/// `counted`: whether this process has published counters before.
async fn keep(fleet: &Fleet, shared: &Shared, lease: &mut Option<i64>, counted: &mut bool) -> Result<(), FleetError> {
    let mut client = fleet.client().await?;
    let ttl = fleet.config.lease_ttl.as_secs().max(1) as i64;
    let id = timed!(client.lease_grant(ttl, None))?.id();
    *lease = Some(id);
    fleet.set_lease(Some(id));
    let (mut keeper, mut responses) = timed!(client.lease_keep_alive(id))?;
    // The counters published run from zero under each lease: from the
    // process's start under the first, so no request before it is
    // missed; from now under a later one (after a partition), so nothing
    // published under the old lease is counted twice and the traffic of
    // the partition does not reach the fleet's windows late, as a burst.
    let origin =
        if *counted { PoolName::ALL.map(|p| PoolCounts::read(&shared.metrics, p)) } else { Default::default() };
    let (mut written_member, mut written_counts) = (None, None);
    let keep_alive_every = (fleet.config.lease_ttl / 3).max(Duration::from_millis(50));
    let mut next_keep_alive = tokio::time::Instant::now() + keep_alive_every;
    let mut trimmed: Option<tokio::time::Instant> = None;
    loop {
        if trimmed.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            trim_audit(fleet, &mut client).await?;
            trimmed = Some(tokio::time::Instant::now());
        }
        let member = entry(fleet, shared);
        if written_member.as_ref() != Some(&member) {
            let value = Member { seen: crate::control::state::now_rfc3339(), ..member.clone() };
            let value = serde_json::to_string(&value).expect("member serializes");
            let key = fleet.key(&store::member_key(&fleet.config.replica));
            timed!(client.put(key.clone(), value.clone(), Some(Fleet::put_options(id))))?;
            written_member = Some(member);
        }
        let counts = PoolName::ALL.map(|p| PoolCounts::read(&shared.metrics, p).since(&origin[p.index()]));
        if written_counts.as_ref() != Some(&counts) {
            let value = MemberCounts { lease: id, pools: store::pools_map(&counts) };
            let value = serde_json::to_string(&value).expect("counters serialize");
            let key = fleet.key(&store::member_counters_key(&fleet.config.replica));
            timed!(client.put(key.clone(), value.clone(), Some(Fleet::put_options(id))))?;
            written_counts = Some(counts);
            *counted = true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_keep_alive.min(tokio::time::Instant::now() + every(shared))) => {}
            _ = fleet.applied.notified() => {}
        }
        if tokio::time::Instant::now() < next_keep_alive {
            continue;
        }
        next_keep_alive = tokio::time::Instant::now() + keep_alive_every;
        timed!(keeper.keep_alive())?;
        let answer = tokio::time::timeout(Duration::from_secs(2), responses.message())
            .await
            .map_err(|_| FleetError::Timeout(Duration::from_secs(2)))??;
        if answer.is_none_or(|a| a.ttl() <= 0) {
            return Err(FleetError::Resync("the member lease expired".into()));
        }
    }
}

/// The store keeps the fleet's audit entries for a week (etcd is no log
/// store: its database has a size quota); each replica's own audit file
/// keeps everything. Every replica trims, which is harmless: deleting a
/// range that is already gone changes nothing.
const AUDIT_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
const TRIM_EVERY: Duration = Duration::from_secs(3600);

async fn trim_audit(fleet: &Fleet, client: &mut etcd_client::Client) -> Result<(), FleetError> {
    let cutoff = super::now_ns().saturating_sub(AUDIT_KEPT.as_nanos());
    let end = fleet.key(&store::audit_key(cutoff, ""));
    let options = etcd_client::DeleteOptions::new().with_range(end);
    let deleted = timed!(client.delete(fleet.key("audit/"), Some(options.clone())))?.deleted();
    if deleted > 0 {
        tracing::info!(deleted, "fleet: audit entries older than a week trimmed from the store");
    }
    Ok(())
}

/// The member entry as it stands (`seen` is set when it is written).
fn entry(fleet: &Fleet, shared: &Shared) -> Member {
    let state = shared.control.state();
    Member {
        replica: fleet.config.replica.clone(),
        revision: state.revision,
        effective_percent: shared.control.route().percent,
        rollback_level: state.highest_level().map_or(0, |l| l.number()),
        seen: String::new(),
    }
}
