//! The ramp in fleet mode: its state is the store's `ramp` key, changed by
//! compare-and-set like the percent (`Fleet::submit`; with it, in one
//! transaction, when a step sets one); `locks/ramp`, under the member lease of the replica
//! that holds it, says which one replica's ramp task advances it. When that
//! replica dies its lease ends, the lock goes with it, and the next replica
//! to try takes over from the hold the store has.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::json;

use super::{store, timed, Fleet};

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
            .and_then([TxnOp::put(lock, mine, Some(Fleet::put_options(lease)))]);
        match timed!(client.txn(txn.clone())) {
            Ok(resp) if resp.succeeded() => {
                tracing::info!(replica = %self.config.replica, "fleet: this replica advances the ramp (holds locks/ramp)");
                true
            }
            _ => false,
        }
    }
}
