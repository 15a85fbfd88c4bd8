//! Where the run-time state is kept: the state file alone (single mode), or
//! the fleet's etcd store with the state file as this replica's cache
//! (`[fleet]`, docs/src/fleet.md). Callers never ask which: they hand a
//! [`Change`] to `Control::submit` and the store decides how it travels.
//!
//! The safety rules of fleet mode, in one place:
//!
//! - **Towards safety, here first.** A rollback (and everything else that
//!   is not [`Change::towards_risk`]) applies on this replica at once,
//!   persisted in the state file; a new or forced level also waits in the
//!   outbox until the fleet's outbox publisher gets it into the store
//!   (create-if-absent). A store outage never delays a rollback.
//! - **Towards risk, the store first.** Set-percent, resume and the ramp
//!   are a compare-and-set on the store (`Fleet::submit`) and answer 503
//!   without it. The config file's percent is such a change: it is
//!   recorded here and sent to the store as a set-percent by `config`
//!   whenever the store is reachable.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::config::PoolName;
use crate::control::change::Change;
use crate::control::fleet::Fleet;
use crate::control::rules::local::PoolCounts;
use crate::control::state::{read_audit, State};
use crate::Shared;

pub enum Store {
    /// The state file is the state.
    File,
    /// The fleet's store is the state; the state file caches it.
    Etcd {
        fleet: Arc<Fleet>,
        /// A `split.percent` change in the config file, for the store.
        config_percent: Mutex<Option<u8>>,
    },
}

/// A count of requests `new` served, and which counters it was read from:
/// in fleet mode a replica reads its own counters while it has no fleet
/// total, then the total (counted since the fleet's first aggregator), so
/// a difference only means something within one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub series: String,
    pub count: u64,
}

impl Served {
    /// What was served from `before` to `self`: nothing across a change of
    /// series (the ramp's request hold waits one more interval rather than
    /// taking the fleet's whole past as this interval's).
    pub fn since(&self, before: &Served) -> u64 {
        if self.series == before.series {
            self.count.saturating_sub(before.count)
        } else {
            0
        }
    }
}

impl Store {
    pub fn etcd(fleet: Arc<Fleet>) -> Store {
        Store::Etcd { fleet, config_percent: Mutex::new(None) }
    }

    /// The fleet behind the store: for the wiring at start and `/status`.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        match self {
            Store::File => None,
            Store::Etcd { fleet, .. } => Some(fleet),
        }
    }

    /// The change goes to the fleet's store before it applies here.
    pub(crate) fn remote_first(&self, change: &Change) -> Option<&Fleet> {
        self.fleet().filter(|_| change.towards_risk()).map(|f| &**f)
    }

    /// Fleet mode's local rules for a change applied here (see the module
    /// comment): returns the state to keep instead of `next`, and whether
    /// the effects are this change's (a config percent's wait for the store).
    pub(crate) fn keep_here(&self, change: &Change, before: &State, next: State) -> (State, bool) {
        let Store::Etcd { fleet, config_percent } = self else { return (next, true) };
        match change {
            Change::ConfigPercent { percent } if before.config_percent != *percent => {
                *config_percent.lock().unwrap_or_else(|e| e.into_inner()) = Some(*percent);
                (State { config_percent: *percent, ..before.clone() }, false)
            }
            Change::Activate { level, .. } if next != *before => {
                let mut next = next;
                if let Some(a) = next.rollbacks.get_mut(level).filter(|_| !before.rollbacks.contains_key(level)) {
                    a.replica = Some(fleet.config.replica.clone());
                }
                if !next.outbox.contains(level) {
                    next.outbox.push(*level);
                }
                (next, true)
            }
            _ => (next, true),
        }
    }

    /// After a change was kept here: wake the fleet task when the outbox or
    /// the config's percent has something for the store.
    pub(crate) fn kept(&self, change: &Change) {
        if let (Store::Etcd { fleet, .. }, Change::ConfigPercent { .. } | Change::Activate { .. }) = (self, change) {
            fleet.wake.notify_one();
        }
    }

    /// Fleet mode: the config file's percent waiting to go to the store.
    pub fn take_config_percent(&self) -> Option<u8> {
        match self {
            Store::File => None,
            Store::Etcd { config_percent, .. } => config_percent.lock().unwrap_or_else(|e| e.into_inner()).take(),
        }
    }

    /// Fleet mode: the config's percent did not reach the store; keep it
    /// pending (unless a newer one is) for the next time it is reachable.
    pub fn retry_config_percent(&self, percent: u8) {
        if let Store::Etcd { config_percent, .. } = self {
            config_percent.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(percent);
        }
    }

    /// The last `limit` audit entries and where they come from: the fleet's
    /// (the store's entries) while the store is reachable, else this
    /// replica's own log.
    pub async fn audit(&self, local: &Path, limit: usize) -> std::io::Result<(Vec<Value>, &'static str)> {
        if let Some(fleet) = self.fleet().filter(|f| f.is_connected()) {
            if let Ok(entries) = fleet.audit(limit).await {
                return Ok((entries, "store"));
            }
        }
        read_audit(local, limit).map(|entries| (entries, "local"))
    }

    /// Requests `new` served so far: this replica's, or in fleet mode the
    /// fleet's (the aggregator's total; this replica's while it has none).
    pub fn served_by_new(&self, shared: &Shared) -> Served {
        match self.member_counters(shared) {
            Some(series) => Served {
                series: series.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(","),
                count: series.iter().map(|(_, pools)| pools[PoolName::New.index()].requests()).sum(),
            },
            None => Served { series: String::new(), count: shared.metrics.pool(PoolName::New).total_requests() },
        }
    }

    /// Fleet mode: the fleet's counters, for fleet-wide `local` rules.
    pub fn member_counters(&self, shared: &Shared) -> Option<Vec<(String, [PoolCounts; 2])>> {
        self.fleet().map(|f| f.member_counters(shared))
    }

    /// Whether this replica's ramp task advances the ramp: always alone, in
    /// fleet mode only the holder of `locks/ramp`.
    pub async fn advances_ramp(&self) -> bool {
        match self.fleet() {
            Some(fleet) => fleet.holds_ramp_lock().await,
            None => true,
        }
    }

    /// Whether the L3 hook runs from this replica's level events; in fleet
    /// mode it runs exactly once across the fleet, under the store's lock
    /// (`control::fleet::hook`).
    pub fn runs_hook_here(&self) -> bool {
        self.fleet().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::Served;

    #[test]
    fn served_counts_only_within_one_series() {
        let own = |count| Served { series: "replica-a".into(), count };
        let fleet = |count| Served { series: String::new(), count };
        assert_eq!(own(130).since(&own(100)), 30);
        assert_eq!(own(90).since(&own(100)), 0, "a counter that went back is no negative");
        assert_eq!(fleet(50_000).since(&own(100)), 0, "the fleet's whole past is not this interval's");
        assert_eq!(fleet(50_040).since(&fleet(50_000)), 40);
        assert_eq!(own(120).since(&fleet(50_040)), 0);
    }
}
