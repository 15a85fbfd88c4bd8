//! The fleet's shared changes: the changes towards risk (set-percent,
//! resume, the ramp: the store first, one compare-and-set loop on the
//! revisions the decision was made on, re-read and re-decide on a
//! conflict), and the outbox publisher (rollbacks, create-if-absent). Each
//! writes its audit entry in the same transaction.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde_json::json;

use super::store::{self, View};
use super::{timed, Fleet, FleetError, CAS_ATTEMPTS};
use crate::config::Level;
use crate::control::change::{self, Change, Effect};
use crate::control::release::ramp::Ramp;
use crate::control::state::{now_rfc3339, Activation, Actor, Applied, ControlError, State};
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

    /// A change towards risk (set-percent, resume, the ramp): decided on
    /// the state this replica applied, written to the store compared on
    /// the revisions it was decided on, with its audit entry in the same
    /// transaction. On a conflict: re-read, decide again, up to
    /// [`CAS_ATTEMPTS`] times. The caller writes the effects.
    pub(crate) async fn submit(
        &self,
        shared: &Shared,
        change: &Change,
        actor: &Actor,
    ) -> Result<Applied, ControlError> {
        let _one = self.write.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let mut client = self.ready().await?;
            let state = shared.control.state();
            let (next, effects) = change::apply(&state, change, actor, &now_rfc3339())?;
            let view = self.view();
            let revision = match self.txn(change, &state, &next, &effects, actor, &view) {
                Write::Nothing => return Ok(Applied { before: state, effects, revision: None }),
                Write::OnlyHere => {
                    let _ = self.full_read(shared).await;
                    view.header_revision
                }
                Write::Txn(txn) => {
                    let resp = timed!(client.txn(txn.clone())).map_err(unreachable)?;
                    let read = self.full_read(shared).await;
                    if !resp.succeeded() {
                        // Someone changed what we decided on: re-read, decide again.
                        read.map_err(unreachable)?;
                        continue;
                    }
                    resp.header().map_or(view.header_revision, |h| h.revision())
                }
            };
            // A resumed level also leaves this replica's outbox.
            if matches!(change, Change::Resume { .. }) {
                shared.control.settle(change, actor);
            }
            return Ok(Applied { before: state, effects, revision: Some(revision) });
        }
        Err(ControlError::StoreUnreachable("the store kept changing under the decision; try again".into()))
    }

    /// The transaction that writes `state` → `next` to the store.
    fn txn(
        &self,
        change: &Change,
        state: &State,
        next: &State,
        effects: &[Effect],
        actor: &Actor,
        view: &View,
    ) -> Write {
        let epoch = Compare::value(self.key(store::EPOCH), CompareOp::Equal, self.epoch().unwrap_or_default());
        let compare = |rel: &str| Compare::mod_revision(self.key(rel), CompareOp::Equal, view.mod_revision(rel));
        let (mut when, mut ops) = (vec![epoch], Vec::new());
        match change {
            Change::SetPercent { .. } => {
                when.extend([
                    compare(store::PERCENT),
                    compare(&store::level_key(Level::L2)),
                    compare(&store::level_key(Level::L3)),
                ]);
                ops.extend(self.percent_ops(state.desired_percent, next.desired_percent, actor));
                // A percent set by hand pauses a running ramp, in the same change.
                if next.ramp != state.ramp {
                    when.push(compare(store::RAMP));
                    ops.push(self.ramp_op(&next.ramp));
                }
            }
            Change::Resume { level, .. } => {
                let key = store::level_key(*level);
                // Only in this replica's outbox: nothing to delete in the store.
                let Some(entry) = view.keys.get(&key) else { return Write::OnlyHere };
                when.push(Compare::mod_revision(self.key(&key), CompareOp::Equal, entry.mod_revision));
                ops.extend([
                    TxnOp::delete(self.key(&key), None),
                    TxnOp::delete(self.key(&store::hook_key(entry.create_revision)), None),
                    self.audit_op(
                        &actor.to_string(),
                        "resume",
                        json!({ "level": level, "old": "active", "new": "inactive" }),
                    ),
                ]);
            }
            Change::Ramp(_) if next != state => {
                when.push(compare(store::RAMP));
                ops.push(self.ramp_op(&next.ramp));
                if next.desired_percent != state.desired_percent {
                    when.push(compare(store::PERCENT));
                    when.extend(Level::ALL.map(|l| compare(&store::level_key(l))));
                    ops.extend(self.percent_ops(state.desired_percent, next.desired_percent, actor));
                }
                for effect in effects {
                    if let Effect::Ramp { event, .. } = effect {
                        ops.push(self.audit_op(
                            &actor.to_string(),
                            "ramp",
                            json!({ "event": event, "step": next.ramp.step + 1, "phase": next.ramp.phase }),
                        ));
                    }
                }
            }
            _ => return Write::Nothing,
        }
        Write::Txn(Txn::new().when(when).and_then(ops))
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
        let Some(percent) = shared.control.store().take_config_percent() else { return };
        let change = Change::SetPercent { percent: percent.into() };
        if let Err(e) = shared.control.submit(shared, change, &Actor::Config).await {
            tracing::error!(percent, error = %e, "config split.percent not applied to the fleet");
            if matches!(e, ControlError::StoreUnreachable(_)) {
                // Try again when the store is back.
                shared.control.store().retry_config_percent(percent);
            }
        }
    }
}

/// What a change writes to the store.
enum Write {
    /// Nothing changes: no write, no effects.
    Nothing,
    /// Nothing in the store to change; only this replica's state does.
    OnlyHere,
    Txn(Txn),
}

/// A change failed on the store: 503 for this one. Whether the store is
/// lost is the watch loop's call (one slow call during an election is not
/// an outage).
fn unreachable(e: FleetError) -> ControlError {
    ControlError::StoreUnreachable(e.to_string())
}
