//! The replica's member entry `members/<replica>`, under a lease of
//! `lease_ttl` kept alive here: it carries the revision the replica
//! applied, its effective percent and level, when it wrote it, and its
//! per-pool counters (cumulative, so others can sum differences). Written
//! every `rollback.interval` (at most every lease_ttl/3, to keep the lease)
//! and right after each apply; gone when the replica stops or its lease
//! expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::store::{self, Member};
use super::{timed, Fleet, FleetError};
use crate::config::PoolName;
use crate::control::rules::local::PoolCounts;
use crate::Shared;

pub async fn run(fleet: Arc<Fleet>, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut lease: Option<i64> = None;
    loop {
        let result = tokio::select! {
            r = keep(&fleet, &shared, &mut lease) => Some(r),
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
            _ = tokio::time::sleep(every(&fleet, &shared)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn every(fleet: &Fleet, shared: &Shared) -> Duration {
    shared.config().rollback.interval.min(fleet.config.lease_ttl / 3).max(Duration::from_millis(50))
}

/// Grant a lease, then keep it and the entry fresh until something fails.
async fn keep(fleet: &Fleet, shared: &Shared, lease: &mut Option<i64>) -> Result<(), FleetError> {
    let mut client = fleet.client().await?;
    let ttl = fleet.config.lease_ttl.as_secs().max(1) as i64;
    let id = timed!(client.lease_grant(ttl, None))?.id();
    *lease = Some(id);
    fleet.set_lease(Some(id));
    let (mut keeper, mut responses) = timed!(client.lease_keep_alive(id))?;
    let mut trimmed: Option<tokio::time::Instant> = None;
    loop {
        if trimmed.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            trim_audit(fleet, &mut client).await?;
            trimmed = Some(tokio::time::Instant::now());
        }
        let member = entry(fleet, shared);
        let value = serde_json::to_string(&member).expect("member serializes");
        let key = fleet.key(&store::member_key(&fleet.config.replica));
        timed!(client.put(key.clone(), value.clone(), Some(Fleet::put_options(id))))?;
        tokio::select! {
            _ = tokio::time::sleep(every(fleet, shared)) => {}
            _ = fleet.applied.notified() => {}
        }
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

fn entry(fleet: &Fleet, shared: &Shared) -> Member {
    let state = shared.control.state();
    let counters: BTreeMap<String, PoolCounts> =
        PoolName::ALL.iter().map(|&p| (p.as_str().to_string(), PoolCounts::read(&shared.metrics, p))).collect();
    Member {
        replica: fleet.config.replica.clone(),
        revision: state.revision,
        effective_percent: shared.control.route().percent,
        rollback_level: state.highest_level().map_or(0, |l| l.number()),
        seen: crate::control::state::now_rfc3339(),
        counters,
    }
}
