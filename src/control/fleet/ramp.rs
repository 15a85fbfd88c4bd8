//! The ramp in fleet mode: its state is the store's `ramp` key, changed by
//! compare-and-set like the percent (and with it, in one transaction, when
//! a step sets one); `locks/ramp`, under the member lease of the replica
//! that holds it, says which one replica's ramp task advances it. When that
//! replica dies its lease ends, the lock goes with it, and the next replica
//! to try takes over from the hold the store has.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde_json::json;

use super::{store, timed, Fleet, CAS_ATTEMPTS};
use crate::config::Level;
use crate::control::release::ramp::Outcome;
use crate::control::state::{Actor, ControlError, State};
use crate::Shared;

impl Fleet {
    /// Whether this replica advances the ramp: it holds `locks/ramp`, or
    /// takes it now that nobody does.
    pub async fn holds_ramp_lock(&self) -> bool {
        let Some(lease) = self.lease().filter(|_| self.is_connected()) else { return false };
        let mine = json!({ "replica": self.config.replica, "lease": lease }).to_string();
        if let Some(entry) = self.view().keys.get(store::RAMP_LOCK) {
            return entry.value == mine.as_bytes();
        }
        let Ok(mut client) = self.client().await else { return false };
        let lock = self.key(store::RAMP_LOCK);
        let txn = Txn::new()
            .when([Compare::create_revision(lock.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(lock, mine, Some(PutOptions::new().with_lease(lease)))]);
        match timed!(client.txn(txn.clone())) {
            Ok(resp) if resp.succeeded() => {
                tracing::info!(replica = %self.config.replica, "fleet: this replica advances the ramp (holds locks/ramp)");
                true
            }
            _ => false,
        }
    }

    /// Decide a ramp change on the applied state and write it to the store,
    /// compared on the revisions it was decided on (the ramp, and with a
    /// percent the percent and the levels); on a conflict, re-read and
    /// decide again. Audited in the transaction and locally, notified here.
    pub async fn change_ramp(
        &self,
        shared: &Shared,
        actor: &Actor,
        decide: impl Fn(&State) -> Result<Outcome, ControlError>,
    ) -> Result<Outcome, ControlError> {
        let _one = self.write.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let mut client = self.ready().await?;
            let state = shared.control.state();
            let outcome = decide(&state)?;
            let next = state.apply_ramp(&outcome)?;
            if next == state {
                return Ok(outcome);
            }
            let (view, epoch) = (self.view(), self.epoch().unwrap_or_default());
            let compare = |rel: &str| Compare::mod_revision(self.key(rel), CompareOp::Equal, view.mod_revision(rel));
            let mut when = vec![compare(store::RAMP), Compare::value(self.key(store::EPOCH), CompareOp::Equal, epoch)];
            let mut ops = vec![self.ramp_op(&next.ramp)];
            if next.desired_percent != state.desired_percent {
                when.push(compare(store::PERCENT));
                when.extend(Level::ALL.map(|l| compare(&store::level_key(l))));
                ops.extend(self.percent_ops(state.desired_percent, next.desired_percent, actor));
            }
            if let Some(event) = &outcome.event {
                ops.push(self.audit_op(
                    &actor.to_string(),
                    "ramp",
                    json!({ "event": event, "step": next.ramp.step + 1, "phase": next.ramp.phase }),
                ));
            }
            let resp = timed!(client.txn(Txn::new().when(when.clone()).and_then(ops.clone())))
                .map_err(|e| ControlError::StoreUnreachable(e.to_string()))?;
            let read = self.full_read(shared).await;
            if resp.succeeded() {
                shared.control.ramp_applied(&outcome, state.desired_percent, actor);
                return Ok(outcome);
            }
            read.map_err(|e| ControlError::StoreUnreachable(e.to_string()))?;
        }
        Err(ControlError::StoreUnreachable("the store kept changing under the decision; try again".into()))
    }
}
