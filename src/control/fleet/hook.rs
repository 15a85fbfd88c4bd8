//! The L3 hook, exactly once across the fleet (docs/src/fleet.md, The L3 hook: once for the fleet).
//!
//! A replica that sees an L3 activation in the store whose `hook/<id>` is
//! absent takes the lock `locks/hook` (create-if-absent, under its member
//! lease). The lock key's create revision is the fencing token, handed to
//! the hook as `GRAYSHIFT_FENCE` with `GRAYSHIFT_ACTIVATION` = the
//! activation id. The outcome is recorded in one transaction that compares
//! the lock is still ours: if this replica's lease expired meanwhile (it
//! hung, or the store was away), the outcome is not recorded and the
//! replica that holds the lock now runs the hook again — hooks must be
//! idempotent, and the fence tells a stale run from the current one. A
//! replica that dies mid-hook leaves the lock to expire with its lease.
//!
//! The hook waits for the store: while L3 sits in the outbox its traffic
//! effect (all to stable) applies at once, the data rollback once the
//! activation is in the store and has an id.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::json;
use tokio::sync::watch;

use super::store::{self, HookDoc};
use super::{timed, Fleet, FleetError};
use crate::config::Level;
use crate::control::rules::actions::{run_hook, Fence};
use crate::control::state::{Activation, HookStatus};
use crate::Shared;

const LOCK: &str = "locks/hook";

pub async fn run(fleet: Arc<Fleet>, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = fleet.applied_hook.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = once(&fleet, &shared).await {
            tracing::debug!(error = %e, "fleet hook: not now");
        }
    }
}

/// The pending L3 activation in the store: its id and activation.
fn pending(fleet: &Fleet) -> Option<(i64, Activation)> {
    let view = fleet.view();
    let entry = view.keys.get(&store::level_key(Level::L3))?;
    let (remote, _) = view.remote();
    let activation = remote.rollbacks.get(&Level::L3)?.clone();
    (activation.hook == Some(HookStatus::Pending)).then_some((entry.create_revision, activation))
}

async fn once(fleet: &Fleet, shared: &Shared) -> Result<(), FleetError> {
    if !fleet.is_connected() {
        return Ok(());
    }
    let Some((id, activation)) = pending(fleet) else { return Ok(()) };
    let Some(lease) = fleet.lease() else { return Ok(()) };
    let Some(hook) = shared.config().rollback.hook.clone() else {
        return record(fleet, shared, id, None, HookStatus::Failed, "rollback.hook is no longer configured".into())
            .await;
    };
    let mut client = fleet.client().await?;
    let lock = fleet.key(LOCK);
    let value = json!({ "replica": fleet.config.replica, "activation": id }).to_string();
    let txn = Txn::new().when([Compare::create_revision(lock.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
        lock.clone(),
        value,
        Some(Fleet::put_options(lease)),
    )]);
    let resp = timed!(client.txn(txn.clone()))?;
    if !resp.succeeded() {
        return Ok(()); // Another replica holds it (or will, until its lease ends).
    }
    let token = resp.header().map_or(0, |h| h.revision());
    // Completed by someone just before we locked?
    let done = timed!(client.get(fleet.key(&store::hook_key(id)), None))?;
    if !done.kvs().is_empty() {
        let release = Txn::new()
            .when([Compare::create_revision(lock.clone(), CompareOp::Equal, token)])
            .and_then([TxnOp::delete(lock.clone(), None)]);
        timed!(client.txn(release.clone()))?;
        return Ok(());
    }
    tracing::warn!(activation = id, fence = token, "fleet: this replica holds the hook lock; running the L3 hook");
    let (status, detail) = run_hook(shared, &hook, &activation, Some(Fence { activation: id, token })).await;
    record(fleet, shared, id, Some(token), status, detail).await
}

/// Record the outcome, only while the lock (fence `token`) is still ours.
async fn record(
    fleet: &Fleet,
    shared: &Shared,
    id: i64,
    token: Option<i64>,
    status: HookStatus,
    detail: String,
) -> Result<(), FleetError> {
    let mut client = fleet.client().await?;
    let lock = fleet.key(LOCK);
    let doc = HookDoc { status: status.clone(), detail: detail.clone(), replica: fleet.config.replica.clone() };
    let mut when = vec![Compare::create_revision(fleet.key(&store::hook_key(id)), CompareOp::Equal, 0)];
    let mut ops = vec![
        TxnOp::put(fleet.key(&store::hook_key(id)), serde_json::to_string(&doc).expect("serializes"), None),
        fleet.audit_op(
            "rule:hook",
            "hook",
            json!({ "level": Level::L3, "activation": id, "new": status, "detail": detail, "fence": token }),
        ),
    ];
    if let Some(token) = token {
        when.push(Compare::create_revision(lock.clone(), CompareOp::Equal, token));
        ops.push(TxnOp::delete(lock, None));
    }
    let resp = timed!(client.txn(Txn::new().when(when.clone()).and_then(ops.clone())))?;
    if resp.succeeded() {
        tracing::info!(activation = id, ?status, "fleet: L3 hook outcome recorded");
        shared.control.hook_outcome(status, detail);
    } else {
        tracing::error!(
            activation = id,
            ?token,
            "fleet: the hook finished but the lock was no longer ours; outcome not recorded (the current holder runs it)"
        );
    }
    fleet.full_read(shared).await
}
