//! The fleet's key layout under `/grayshift/v1/<name>/` and what it means:
//!
//! | key | value |
//! |---|---|
//! | `epoch` | random id, create-if-absent; gone or changed = the store was reset |
//! | `percent` | `{"percent", "actor", "replica", "time"}` |
//! | `levels/L1\|L2\|L3` | the activation (reason, actor, replica, since, hook); create-if-absent, its create revision is the activation id |
//! | `hook/<activation>` | the L3 hook's outcome `{"status", "detail", "replica"}` |
//! | `audit/<time-ns>-<replica>` | an audit entry, written in the change's transaction |
//! | `members/<replica>` | a [`Member`], under the replica's lease |
//! | `counters/<replica>` | a [`MemberCounts`], under the replica's lease |
//! | `counters` | the fleet's summed counters, a [`Tally`], written by the aggregator |
//! | `ramp` | the progressive ramp: phase, step, hold baked, requests |
//! | `locks/hook` | the L3 hook lock, under the holder's member lease |
//! | `locks/ramp` | who advances the ramp `{"replica", "lease"}`, under that lease |
//! | `locks/counters` | who sums the counters `{"replica", "lease"}`, under that lease |
//!
//! [`View`] is the replica's copy of the shared part of the prefix: not
//! the audit entries, and not the per-member keys (`members/`,
//! `counters/`), which no replica watches, so that an idle replica's work
//! does not grow with the fleet (docs/src/fleet.md, Cost at scale).
//! [`View::remote`] decodes it, and a value that does not decode is
//! ignored and reported (never a crash).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Level, PoolName};
use crate::control::change::Remote;
use crate::control::release::ramp::Ramp;
use crate::control::rules::local::PoolCounts;
use crate::control::state::{Activation, HookStatus};

pub const EPOCH: &str = "epoch";
pub const PERCENT: &str = "percent";
pub const RAMP: &str = "ramp";
pub const RAMP_LOCK: &str = "locks/ramp";
pub const COUNTERS: &str = "counters";
pub const COUNTERS_LOCK: &str = "locks/counters";
pub const MEMBERS: &str = "members/";
pub const MEMBER_COUNTERS: &str = "counters/";

/// The ranges of the prefix a replica reads and watches, relative to it:
/// everything but the per-member keys (`counters/`, `members/`) and, for
/// full reads, the audit entries. `None` is the end of the prefix. The
/// boundaries are prefixes with their `/` bumped to `0`, the next byte.
pub const WATCHED: [(&str, Option<&str>); 3] =
    [("", Some("counters/")), ("counters0", Some("members/")), ("members0", None)];

/// [`WATCHED`] as absolute `(start, end)` keys under the fleet's `prefix`.
pub fn watched_ranges(prefix: &str) -> impl Iterator<Item = (String, String)> + '_ {
    WATCHED.iter().map(move |(start, end)| {
        (format!("{prefix}{start}"), end.map_or_else(|| range_end(prefix), |end| format!("{prefix}{end}")))
    })
}

/// The key just after every key starting with `prefix` (which ends in `/`).
pub fn range_end(prefix: &str) -> String {
    format!("{}0", prefix.trim_end_matches('/'))
}

pub fn level_key(level: Level) -> String {
    format!("levels/{level}")
}

pub fn member_key(replica: &str) -> String {
    format!("{MEMBERS}{replica}")
}

pub fn member_counters_key(replica: &str) -> String {
    format!("{MEMBER_COUNTERS}{replica}")
}

pub fn hook_key(activation: i64) -> String {
    format!("hook/{activation}")
}

/// Unique and in time order, so `audit/` read in key order is the log.
pub fn audit_key(time_ns: u128, replica: &str) -> String {
    format!("audit/{time_ns:020}-{replica}")
}

/// Keys whose changes are the shared state (members, counters and locks
/// are not): the
/// revision of the last change to one of them is what a replica "applied".
pub fn is_shared(key: &str) -> bool {
    key == EPOCH
        || key == PERCENT
        || key == RAMP
        || key.starts_with("levels/")
        || key.starts_with("hook/")
        || key.starts_with("audit/")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PercentDoc {
    pub percent: u8,
    pub actor: String,
    #[serde(default)]
    pub replica: String,
    #[serde(default)]
    pub time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookDoc {
    pub status: HookStatus,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub replica: String,
}

/// A replica's member entry: what `/status` and `ctl set-percent --wait`
/// need, written when it changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub replica: String,
    /// The revision of the last shared change it applied.
    pub revision: i64,
    pub effective_percent: u8,
    pub rollback_level: u8,
    /// RFC 3339, when it wrote this entry (it writes on a change only).
    pub seen: String,
}

/// A replica's counters, `counters/<replica>`: per pool (requests, errors,
/// latency buckets), cumulative since `lease` was granted, so a replica
/// that comes back under a new lease starts again from zero and the
/// aggregator never counts the same requests twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberCounts {
    pub lease: i64,
    pub pools: BTreeMap<String, PoolCounts>,
}

/// The fleet's counters, `counters`: per pool, the sum of every member's
/// increments since the first aggregator started, so it only grows and
/// every replica windows it like its own counters. `revision` is the store
/// revision of the member counters it sums up to; a new aggregator reads
/// them at that revision to continue without a gap or a double count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub revision: i64,
    /// Members with counters at that revision.
    pub members: usize,
    pub replica: String,
    pub pools: BTreeMap<String, PoolCounts>,
}

/// Per pool by name ([`PoolName::ALL`] order) from a stored map; a pool
/// missing from it counts as zero.
pub fn pools_of(map: &BTreeMap<String, PoolCounts>) -> [PoolCounts; 2] {
    PoolName::ALL.map(|p| map.get(p.as_str()).cloned().unwrap_or_default())
}

/// The stored map of per-pool counters.
pub fn pools_map(pools: &[PoolCounts; 2]) -> BTreeMap<String, PoolCounts> {
    PoolName::ALL.iter().zip(pools).map(|(p, c)| (p.as_str().to_string(), c.clone())).collect()
}

/// One stored key: value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Default)]
pub struct View {
    /// Keys relative to the prefix; audit entries are not kept.
    pub keys: BTreeMap<String, Entry>,
    /// The store's revision at the last read or watch response.
    pub header_revision: i64,
    /// The revision of the last change to a shared key.
    pub state_revision: i64,
}

impl View {
    /// A key was written (or deleted, `None`) at `revision`.
    pub fn apply(&mut self, key: &str, entry: Option<Entry>, revision: i64) {
        if is_shared(key) {
            self.state_revision = self.state_revision.max(revision);
        }
        // Not the fleet's state; no replica keeps them (see the module doc).
        if key.starts_with("audit/") || key.starts_with(MEMBERS) || key.starts_with(MEMBER_COUNTERS) {
            return;
        }
        match entry {
            Some(e) => self.keys.insert(key.to_string(), e),
            None => self.keys.remove(key),
        };
    }

    pub fn mod_revision(&self, key: &str) -> i64 {
        self.keys.get(key).map_or(0, |e| e.mod_revision)
    }

    pub fn epoch(&self) -> Option<&[u8]> {
        self.keys.get(EPOCH).map(|e| e.value.as_slice())
    }

    /// The shared state, and one message per value that does not decode.
    pub fn remote(&self) -> (Remote, Vec<String>) {
        let mut errors = Vec::new();
        let mut remote = Remote::default();
        for (key, entry) in &self.keys {
            let bad = |e: String| format!("ignored {key}: {e}");
            if key == PERCENT {
                match serde_json::from_slice::<PercentDoc>(&entry.value) {
                    Ok(doc) if doc.percent <= 100 => remote.desired_percent = Some(doc.percent),
                    Ok(doc) => errors.push(bad(format!("percent {} above 100", doc.percent))),
                    Err(e) => errors.push(bad(e.to_string())),
                }
            } else if key == RAMP {
                match serde_json::from_slice::<Ramp>(&entry.value) {
                    Ok(ramp) => remote.ramp = Some(ramp),
                    Err(e) => errors.push(bad(e.to_string())),
                }
            } else if let Some(name) = key.strip_prefix("levels/") {
                let Some(level) = Level::parse(name).filter(|l| l.to_string() == name) else {
                    errors.push(bad("not a level (L1, L2, L3)".into()));
                    continue;
                };
                match serde_json::from_slice::<Activation>(&entry.value) {
                    Ok(mut a) => {
                        a.id = Some(entry.create_revision);
                        if let Some(doc) = self.hook(entry.create_revision, &mut errors) {
                            a.hook = Some(doc.status);
                            a.hook_detail = Some(doc.detail);
                        }
                        remote.rollbacks.insert(level, a);
                    }
                    Err(e) => errors.push(bad(e.to_string())),
                }
            } else if !(key == EPOCH
                || key == COUNTERS
                || key.starts_with(MEMBERS)
                || key.starts_with(MEMBER_COUNTERS)
                || key.starts_with("hook/")
                || key.starts_with("locks/"))
            {
                errors.push(bad("unknown key".into()));
            }
        }
        (remote, errors)
    }

    fn hook(&self, activation: i64, errors: &mut Vec<String>) -> Option<HookDoc> {
        let entry = self.keys.get(&hook_key(activation))?;
        serde_json::from_slice(&entry.value)
            .map_err(|e| errors.push(format!("ignored {}: {e}", hook_key(activation))))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str, rev: i64) -> Option<Entry> {
        Some(Entry { value: value.as_bytes().to_vec(), create_revision: rev, mod_revision: rev })
    }

    #[test]
    fn decodes_the_shared_state_and_reports_garbage() {
        let mut view = View::default();
        view.apply(EPOCH, entry("e1", 1), 1);
        view.apply(PERCENT, entry(r#"{"percent":30,"actor":"admin"}"#, 2), 2);
        view.apply("levels/L1", entry(r#"{"reason":"errors","actor":"rule:r","since":"t"}"#, 3), 3);
        view.apply("levels/L3", entry("{garbage", 4), 4);
        view.apply(
            "members/b",
            entry(r#"{"replica":"b","revision":3,"effective_percent":0,"rollback_level":1,"seen":"t"}"#, 5),
            5,
        );
        view.apply("counters/c", entry("nope", 6), 6);
        view.apply("audit/00000000000000000001-a", entry("{}", 7), 7);
        assert_eq!(view.state_revision, 7, "audit entries are shared changes; members are not");
        assert!(!view.keys.contains_key("audit/00000000000000000001-a"));
        assert!(
            !view.keys.contains_key("members/b") && !view.keys.contains_key("counters/c"),
            "per-member keys are not kept"
        );
        let (remote, errors) = view.remote();
        assert_eq!(remote.desired_percent, Some(30));
        assert_eq!(remote.rollbacks[&Level::L1].id, Some(3), "the create revision is the activation id");
        assert!(!remote.rollbacks.contains_key(&Level::L3));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("levels/L3"));
        view.apply("levels/L1", None, 8);
        assert!(view.remote().0.rollbacks.is_empty());
        assert_eq!(view.state_revision, 8);
    }

    #[test]
    fn hook_outcome_joins_its_activation() {
        let mut view = View::default();
        view.apply("levels/L3", entry(r#"{"reason":"diff","actor":"a","since":"t","hook":"pending"}"#, 9), 9);
        view.apply(&hook_key(9), entry(r#"{"status":"succeeded","detail":"ok"}"#, 10), 10);
        assert_eq!(view.remote().0.rollbacks[&Level::L3].hook, Some(HookStatus::Succeeded));
        view.apply("levels/Lx", entry("{}", 11), 11);
        view.apply("strange", entry("{}", 12), 12);
        assert_eq!(view.remote().1.len(), 2);
    }

    #[test]
    fn the_watched_ranges_hold_every_shared_key_and_no_per_member_key() {
        let inside = |key: &str| WATCHED.iter().any(|(start, end)| key >= *start && end.is_none_or(|e| key < e));
        for key in [EPOCH, PERCENT, RAMP, COUNTERS, RAMP_LOCK, COUNTERS_LOCK, "levels/L3", "hook/7", "locks/hook"] {
            assert!(inside(key), "{key} is watched");
        }
        assert!(inside(&audit_key(1, "a")), "audit entries mark the state's revision");
        for key in [member_key("a"), member_counters_key("a"), member_key("counters"), member_counters_key("z~")] {
            assert!(!inside(&key), "{key} is not watched");
        }
        assert_eq!(range_end(MEMBERS), "members0");
    }

    #[test]
    fn audit_keys_sort_in_time_order() {
        assert!(audit_key(9, "b") < audit_key(10, "a"));
    }
}
