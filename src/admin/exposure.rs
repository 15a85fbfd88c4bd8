//! `grayshift exposure` (the ledger's CSV, and purging a release) and
//! `grayshift bucket --percent N --sample FILE` (what a change would move).

use std::io::BufRead;

use crate::config::{Config, PoolName};
use crate::control::ledger::rows::Row;
use crate::control::ledger::sink::{self, Sink};
use crate::control::state::Route;
use crate::proxy::split::Splitter;

/// Which of the ledger's rows `grayshift exposure` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Select {
    /// Only keys `new` served a write for (`--wrote`).
    pub wrote: bool,
    /// The keys whose shadow comparison differed, whichever side served
    /// them (`--mismatch`), instead of the keys `new` served.
    pub mismatch: bool,
}

impl Select {
    pub fn keeps(self, row: &Row) -> bool {
        let listed = if self.mismatch { row.mismatch } else { row.served_new };
        listed && (row.wrote || !self.wrote)
    }
}

/// The CSV of every key `new` served in the config's release (or, with
/// `select.mismatch`, every key whose comparison differed).
pub async fn csv(config: &Config, select: Select) -> Result<String, String> {
    let ledger = config.ledger.as_ref().ok_or("the config has no [ledger] section")?;
    let rows = Sink::new(ledger.sink.clone()).read(&config.split.group).await?;
    Ok(sink::csv(rows.iter().filter(|r| select.keeps(r))))
}

/// Delete `release`'s rows from the ledger; how many went.
pub async fn purge(config: &Config, release: &str) -> Result<u64, String> {
    let ledger = config.ledger.as_ref().ok_or("the config has no [ledger] section")?;
    Sink::new(ledger.sink.clone()).purge(release).await
}

/// How many keys of a sample would change pool if the percent went from
/// what `now` routes by to `percent`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WhatIf {
    pub keys: usize,
    pub to_new: usize,
    pub to_stable: usize,
    pub stay_new: usize,
    pub stay_stable: usize,
}

pub fn what_if(splitter: &Splitter, now: Route, percent: u8, keys: impl Iterator<Item = String>) -> WhatIf {
    let mut w = WhatIf::default();
    for key in keys {
        let bucket = splitter.bucket(key.as_bytes());
        let before = splitter.decide(key.as_bytes(), bucket, now.percent, now.new_refused()).0;
        // The what-if asks about the percent: a rollback that is active now
        // is assumed resumed for the "after" side only if the percent says so.
        let after = splitter.decide(key.as_bytes(), bucket, percent, false).0;
        w.keys += 1;
        match (before, after) {
            (PoolName::Stable, PoolName::New) => w.to_new += 1,
            (PoolName::New, PoolName::Stable) => w.to_stable += 1,
            (PoolName::New, PoolName::New) => w.stay_new += 1,
            (PoolName::Stable, PoolName::Stable) => w.stay_stable += 1,
        }
    }
    w
}

/// One key a line; blank lines and surrounding whitespace are ignored.
pub fn read_sample(path: &std::path::Path) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = line.trim();
        if !key.is_empty() {
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter() -> Splitter {
        let text = "[split]\npercent = 0\ngroup = \"orders-v2\"\nforce_stable = [\"qa\"]\n[pools.stable]\nendpoints = [\"127.0.0.1:1\"]\n[pools.new]\nendpoints = [\"127.0.0.1:2\"]\n";
        Splitter::new(&crate::config::parse(text, "t").unwrap().split)
    }

    #[test]
    fn raising_moves_only_towards_new_and_counts_add_up() {
        let s = splitter();
        let keys: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
        let now = Route { percent: 10, rolled_back: false, shedding: false, gate_closed: false };
        let up = what_if(&s, now, 50, keys.iter().cloned());
        assert_eq!(up.to_stable, 0);
        assert_eq!(up.keys, up.to_new + up.stay_new + up.stay_stable);
        let expected = keys.iter().filter(|k| (10..50).contains(&s.bucket(k.as_bytes()))).count();
        assert_eq!(up.to_new, expected);
        let down = what_if(&s, Route { percent: 50, ..now }, 10, keys.iter().cloned());
        assert_eq!((down.to_new, down.to_stable), (0, expected));
    }

    #[test]
    fn exposure_lists_who_new_served_and_mismatch_who_differed() {
        let row = |served_new, mismatch, wrote| Row {
            release: "r".into(),
            key: "k".into(),
            source: "client_ip".into(),
            first_seen: 0,
            last_seen: 0,
            wrote,
            served_new,
            mismatch,
        };
        let plain = Select::default();
        let wrote = Select { wrote: true, mismatch: false };
        let mismatch = Select { wrote: false, mismatch: true };
        assert!(plain.keeps(&row(true, false, false)));
        assert!(!plain.keeps(&row(false, true, false)), "a mismatch on stable is no exposure");
        assert!(plain.keeps(&row(true, true, false)));
        assert!(!wrote.keeps(&row(true, false, false)) && wrote.keeps(&row(true, false, true)));
        assert!(mismatch.keeps(&row(false, true, false)) && mismatch.keeps(&row(true, true, false)));
        assert!(!mismatch.keeps(&row(true, false, true)));
    }

    #[test]
    fn a_rollback_now_means_everyone_is_on_stable_before() {
        let s = splitter();
        // alice is in bucket 18 of orders-v2.
        let now = Route { percent: 0, rolled_back: true, shedding: false, gate_closed: false };
        let w = what_if(&s, now, 20, ["alice".to_string(), "qa".to_string()].into_iter());
        assert_eq!((w.to_new, w.stay_stable), (1, 1), "force_stable keeps qa on stable");
    }
}
