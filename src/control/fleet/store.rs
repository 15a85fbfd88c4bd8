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
//! | `ramp` | the progressive ramp: phase, step, hold baked, requests |
//! | `locks/hook` | the L3 hook lock, under the holder's member lease |
//! | `locks/ramp` | who advances the ramp `{"replica", "lease"}`, under that lease |
//!
//! [`View`] is the replica's copy of the prefix (audit entries excepted),
//! kept by full reads and watch events; [`View::remote`] and
//! [`View::members`] decode it, and a value that does not decode is
//! ignored and reported (never a crash).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Level;
use crate::control::change::Remote;
use crate::control::release::ramp::Ramp;
use crate::control::rules::local::PoolCounts;
use crate::control::state::{Activation, HookStatus};

pub const EPOCH: &str = "epoch";
pub const PERCENT: &str = "percent";
pub const RAMP: &str = "ramp";
pub const RAMP_LOCK: &str = "locks/ramp";

pub fn level_key(level: Level) -> String {
    format!("levels/{level}")
}

pub fn member_key(replica: &str) -> String {
    format!("members/{replica}")
}

pub fn hook_key(activation: i64) -> String {
    format!("hook/{activation}")
}

/// Unique and in time order, so `audit/` read in key order is the log.
pub fn audit_key(time_ns: u128, replica: &str) -> String {
    format!("audit/{time_ns:020}-{replica}")
}

/// Keys whose changes are the shared state (members are not): the
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

/// A replica's member entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub replica: String,
    /// The revision of the last shared change it applied.
    pub revision: i64,
    pub effective_percent: u8,
    pub rollback_level: u8,
    /// RFC 3339, when it wrote this entry.
    pub seen: String,
    /// Per pool, cumulative since the replica started (requests, errors,
    /// latency buckets), so others can sum window differences.
    #[serde(default)]
    pub counters: BTreeMap<String, PoolCounts>,
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
        if key.starts_with("audit/") {
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
                || key.starts_with("members/")
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

    /// The live members (their keys expire with their lease).
    pub fn members(&self) -> (Vec<Member>, Vec<String>) {
        let mut errors = Vec::new();
        let members = self
            .keys
            .range("members/".to_string().."members0".to_string())
            .filter_map(|(key, entry)| {
                serde_json::from_slice::<Member>(&entry.value)
                    .map_err(|e| errors.push(format!("ignored {key}: {e}")))
                    .ok()
            })
            .collect();
        (members, errors)
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
        view.apply("members/c", entry("nope", 6), 6);
        view.apply("audit/00000000000000000001-a", entry("{}", 7), 7);
        assert_eq!(view.state_revision, 7, "audit entries are shared changes; members are not");
        assert!(!view.keys.contains_key("audit/00000000000000000001-a"));
        let (remote, errors) = view.remote();
        assert_eq!(remote.desired_percent, Some(30));
        assert_eq!(remote.rollbacks[&Level::L1].id, Some(3), "the create revision is the activation id");
        assert!(!remote.rollbacks.contains_key(&Level::L3));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("levels/L3"));
        let (members, errors) = view.members();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].replica, "b");
        assert!(errors[0].contains("members/c"));
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
    fn audit_keys_sort_in_time_order() {
        assert!(audit_key(9, "b") < audit_key(10, "a"));
    }
}
