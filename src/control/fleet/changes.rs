//! The fleet's shared changes: set-percent and resume (towards risk: the
//! store first, compare-and-set on the revisions the decision was made on,
//! re-read and re-decide on a conflict), and the outbox publisher
//! (rollbacks, create-if-absent). Each writes its audit entry in the same
//! transaction.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde_json::json;

use super::{store, timed, Fleet, FleetError, CAS_ATTEMPTS};
use crate::config::Level;
use crate::control::release::ramp::Ramp;
use crate::control::state::{Activation, Actor, ControlError};
use crate::Shared;

impl Fleet {
    /// A change towards risk needs the store: refuse at once when it is
    /// known to be down.
    pub(super) async fn ready(&self) -> Result<Client, ControlError> {
        if !self.is_connected() {
            let why = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(ControlError::StoreUnreachable(why.unwrap_or_else(|| "not connected yet".into())));
        }
        self.client().await.map_err(|e| ControlError::StoreUnreachable(e.to_string()))
    }

    /// `PUT /percent` in fleet mode. Returns the old percent and the
    /// revision the change was written at (for `ctl set-percent --wait`).
    pub async fn set_percent(&self, shared: &Shared, percent: i64, actor: &Actor) -> Result<(u8, i64), ControlError> {
        let _one = self.write.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let mut client = self.ready().await?;
            let state = shared.control.state();
            let next = state.set_percent_by(percent, actor)?;
            let (view, epoch) = (self.view(), self.epoch().unwrap_or_default());
            let new = next.desired_percent;
            let compare = |rel: &str| Compare::mod_revision(self.key(rel), CompareOp::Equal, view.mod_revision(rel));
            let mut when = vec![
                compare(store::PERCENT),
                compare(&store::level_key(Level::L2)),
                compare(&store::level_key(Level::L3)),
                Compare::value(self.key(store::EPOCH), CompareOp::Equal, epoch),
            ];
            let mut ops = self.percent_ops(state.desired_percent, new, actor).to_vec();
            // A percent set by hand pauses a running ramp, in the same change.
            if next.ramp != state.ramp {
                when.push(compare(store::RAMP));
                ops.push(self.ramp_op(&next.ramp));
            }
            let txn = Txn::new().when(when).and_then(ops);
            let resp = timed!(client.txn(txn.clone())).map_err(|e| self.unreachable(shared, e))?;
            let read = self.full_read(shared).await;
            if resp.succeeded() {
                let revision = resp.header().map_or(0, |h| h.revision());
                shared.control.audit(
                    actor,
                    "percent",
                    json!({ "old": state.desired_percent, "new": new, "revision": revision }),
                );
                tracing::info!(old = state.desired_percent, new, %actor, revision, "desired percent changed (fleet)");
                shared.control.ramp_paused_by_hand(&state.ramp, actor);
                return Ok((state.desired_percent, revision));
            }
            // Someone changed what we decided on: re-read, decide again.
            read.map_err(|e| self.unreachable(shared, e))?;
        }
        Err(ControlError::StoreUnreachable("the store kept changing under the decision; try again".into()))
    }

    /// `POST /resume` in fleet mode: delete the level's key (compared on
    /// its revision), then clear any unpublished local activation of it.
    pub async fn resume(
        &self,
        shared: &Shared,
        level: Level,
        confirm: bool,
        actor: &Actor,
    ) -> Result<i64, ControlError> {
        let _one = self.write.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let mut client = self.ready().await?;
            shared.control.state().resume(level, confirm)?;
            let (view, epoch) = (self.view(), self.epoch().unwrap_or_default());
            let key = store::level_key(level);
            let mut revision = view.header_revision;
            if let Some(entry) = view.keys.get(&key) {
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(self.key(&key), CompareOp::Equal, entry.mod_revision),
                        Compare::value(self.key(store::EPOCH), CompareOp::Equal, epoch),
                    ])
                    .and_then([
                        TxnOp::delete(self.key(&key), None),
                        TxnOp::delete(self.key(&store::hook_key(entry.create_revision)), None),
                        self.audit_op(
                            &actor.to_string(),
                            "resume",
                            json!({ "level": level, "old": "active", "new": "inactive" }),
                        ),
                    ]);
                let resp = timed!(client.txn(txn.clone())).map_err(|e| self.unreachable(shared, e))?;
                if !resp.succeeded() {
                    self.full_read(shared).await.map_err(|e| self.unreachable(shared, e))?;
                    continue;
                }
                revision = resp.header().map_or(revision, |h| h.revision());
            }
            let _ = self.full_read(shared).await;
            match shared.control.resume(level, confirm, actor) {
                Ok(()) => {}
                Err(ControlError::NotActive(_)) => shared.control.announce(level, false, "resumed", actor),
                Err(e) => return Err(e),
            }
            return Ok(revision);
        }
        Err(ControlError::StoreUnreachable("the store kept changing under the decision; try again".into()))
    }

    /// Writing the desired percent: its key, and its audit entry.
    pub(super) fn percent_ops(&self, old: u8, new: u8, actor: &Actor) -> [TxnOp; 2] {
        let doc = store::PercentDoc {
            percent: new,
            actor: actor.to_string(),
            replica: self.config.replica.clone(),
            time: crate::control::state::now_rfc3339(),
        };
        [
            TxnOp::put(self.key(store::PERCENT), serde_json::to_string(&doc).expect("serializes"), None),
            self.audit_op(&actor.to_string(), "percent", json!({ "old": old, "new": new })),
        ]
    }

    /// Writing the ramp's state.
    pub(super) fn ramp_op(&self, ramp: &Ramp) -> TxnOp {
        TxnOp::put(self.key(store::RAMP), serde_json::to_string(ramp).expect("serializes"), None)
    }

    /// A change failed on the store: 503 for this one. Whether the store is
    /// lost is the watch loop's call (one slow call during an election is
    /// not an outage).
    fn unreachable(&self, _shared: &Shared, e: FleetError) -> ControlError {
        ControlError::StoreUnreachable(e.to_string())
    }

    /// Publish the outbox: each level create-if-absent, with its audit
    /// entry. A level already in the store is done too (that activation is
    /// the fleet's). Then re-read, which drops published levels from it.
    pub async fn publish_outbox(&self, shared: &Shared) -> Result<(), FleetError> {
        let state = shared.control.state();
        if state.outbox.is_empty() {
            return Ok(());
        }
        let _one = self.write.lock().await;
        let mut client = self.client().await?;
        let epoch = self.epoch().unwrap_or_default();
        for level in &state.outbox {
            let Some(activation) = state.rollbacks.get(level) else { continue };
            let doc = Activation { id: None, hook_detail: None, ..activation.clone() };
            let key = self.key(&store::level_key(*level));
            let txn = Txn::new()
                .when([
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    Compare::value(self.key(store::EPOCH), CompareOp::Equal, epoch.clone()),
                ])
                .and_then([
                    TxnOp::put(key, serde_json::to_string(&doc).expect("serializes"), None),
                    self.audit_op(
                        &activation.actor,
                        "rollback",
                        json!({ "level": level, "reason": activation.reason, "actor": activation.actor, "old": "inactive", "new": "active" }),
                    ),
                ]);
            let resp = timed!(client.txn(txn.clone()))?;
            let revision = resp.header().map_or(0, |h| h.revision());
            if resp.succeeded() {
                tracing::info!(%level, revision, reason = %activation.reason, "outbox published: rollback is in the fleet store");
            } else if activation.force {
                self.force_stored(&mut client, *level, &epoch).await?;
            } else {
                tracing::info!(%level, "outbox: the level is already active in the fleet store (or the store was reset)");
            }
        }
        drop(_one);
        self.full_read(shared).await
    }

    /// `ctl rollback L1 --force` on a level the store already has: mark the
    /// store's activation forced (same key, so the same activation id),
    /// compared on the revision this replica last saw of it.
    async fn force_stored(&self, client: &mut Client, level: Level, epoch: &[u8]) -> Result<(), FleetError> {
        let rel = store::level_key(level);
        let Some(entry) = self.view().keys.get(&rel).cloned() else { return Ok(()) };
        let Ok(mut doc) = serde_json::from_slice::<Activation>(&entry.value) else { return Ok(()) };
        if doc.force {
            return Ok(());
        }
        doc.force = true;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(self.key(&rel), CompareOp::Equal, entry.mod_revision),
                Compare::value(self.key(store::EPOCH), CompareOp::Equal, epoch.to_vec()),
            ])
            .and_then([
                TxnOp::put(self.key(&rel), serde_json::to_string(&doc).expect("serializes"), None),
                self.audit_op("admin", "rollback forced", json!({ "level": level, "reason": doc.reason })),
            ]);
        let resp = timed!(client.txn(txn.clone()))?;
        tracing::warn!(%level, forced = resp.succeeded(), "outbox: forcing the fleet's rollback past the point of no return");
        Ok(())
    }

    /// A changed `split.percent` in the config file goes to the store like
    /// an admin change (actor `config`).
    pub async fn push_config_percent(&self, shared: &Shared) {
        let Some(percent) = shared.control.take_config_percent() else { return };
        if let Err(e) = self.set_percent(shared, percent as i64, &Actor::Config).await {
            tracing::error!(percent, error = %e, "config split.percent not applied to the fleet");
            if matches!(e, ControlError::StoreUnreachable(_)) {
                // Try again when the store is back.
                shared.control.retry_config_percent(percent);
            }
        }
    }
}
