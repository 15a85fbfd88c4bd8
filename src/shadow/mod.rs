//! Shadow reads (docs/src/shadow.md): a sample of requests is also sent to
//! the pool that did not answer the client, and the two answers are
//! compared; the mismatch rate is a `local` rule signal.
//!
//! - `mirror.rs`: the request path's part (which request is mirrored, the
//!   copy of the primary's answer taken as it streams to the client) and
//!   the background task that sends the shadows and compares;
//! - `compare.rs`: two answers → the fields that differ (pure);
//! - `rule.rs`: per-field counts → mismatch, noise or still learning (pure);
//! - this file: what the comparisons taught, for `/status.shadow`,
//!   `/shadow/samples` and the metrics.

pub mod compare;
pub mod mirror;
pub mod rule;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::config::{PoolName, ShadowConfig};
use crate::metrics::{ShadowMetrics, ShadowSkip};
use crate::proxy::split::KeyOrigin;
use crate::Shared;
use compare::Difference;
use rule::{Counts, Verdict};

/// Mismatches kept for `/shadow/samples`.
const SAMPLES: usize = 50;
/// Fields listed in `/status.shadow.fields`.
const TOP_FIELDS: usize = 20;
/// Distinct fields with statistics; more (an object keyed by ids) share one
/// entry, so memory stays bounded whatever the answers look like.
const MAX_FIELDS: usize = 2000;
const OTHER_FIELDS: &str = "(other fields)";
/// A value in a sample is cut to this many bytes.
const VALUE_BYTES: usize = 200;

/// What shadow reads have seen since start: lives as long as the process
/// (a reload of `[shadow]` keeps it).
#[derive(Default)]
pub struct Shadow {
    /// Shadows running now, against `shadow.max_in_flight`.
    in_flight: AtomicUsize,
    /// The sampling sequence (see [`Shadow::sampled`]).
    draws: AtomicU64,
    learned: Mutex<Learned>,
}

#[derive(Default)]
struct Learned {
    /// Cross-version comparisons made, and same-version ones.
    cross: u64,
    within: u64,
    fields: HashMap<String, FieldStats>,
    samples: VecDeque<Value>,
}

#[derive(Debug, Default, Clone, Copy)]
struct FieldStats {
    cross_differed: u64,
    within_differed: u64,
    /// Comparisons this field made a mismatch, and ones where it differed as noise.
    mismatches: u64,
    noise: u64,
}

/// A decided comparison, for the sample and the ledger.
pub struct Compared<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub key: &'a [u8],
    pub origin: &'a Arc<KeyOrigin>,
    pub primary: PoolName,
    /// Statuses by pool index.
    pub status: [u16; 2],
    pub cross: Vec<Difference>,
    /// The same-version comparison's differences, when a noise copy came back.
    pub within: Option<Vec<Difference>>,
}

/// How one comparison ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Mismatch,
    Skipped(ShadowSkip),
}

impl Shadow {
    /// Whether this eligible request is mirrored: the golden-ratio sequence
    /// over a counter takes exactly `sample` of requests, evenly spread,
    /// with one atomic add and no random number generator.
    pub fn sampled(&self, config: &ShadowConfig) -> bool {
        if config.sample_ppm >= 1_000_000 {
            return true;
        }
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let draw = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44; // 20 bits
        (draw * 1_000_000) >> 20 < config.sample_ppm as u64
    }

    /// Take a place among `max` running shadows; `false` when all are taken.
    pub fn enter(&self, max: usize) -> bool {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Learn from a comparison and decide it: without noise cancellation
    /// every difference is a mismatch; with it, the rule (`rule.rs`) judges
    /// each differing field on everything seen so far, this pair included.
    pub fn decide(&self, noise: bool, c: &Compared) -> Outcome {
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        let learned = &mut *learned;
        learned.cross += 1;
        if let Some(within) = &c.within {
            learned.within += 1;
            for field in distinct_fields(within) {
                learned.field(field).within_differed += 1;
            }
        }
        let mut mismatched = Vec::new();
        let mut learning = false;
        for field in distinct_fields(&c.cross) {
            let (cross, within) = (learned.cross, learned.within);
            let stats = learned.field(field);
            stats.cross_differed += 1;
            let verdict = match noise {
                false => Verdict::Mismatch,
                true => rule::verdict(Counts {
                    cross,
                    cross_differed: stats.cross_differed,
                    within,
                    within_differed: stats.within_differed,
                }),
            };
            match verdict {
                Verdict::Mismatch => mismatched.push(field),
                Verdict::Noise => stats.noise += 1,
                Verdict::Learning => learning = true,
            }
        }
        if !mismatched.is_empty() {
            for field in &mismatched {
                learned.field(field).mismatches += 1;
            }
            let fields: Vec<&Difference> = c.cross.iter().filter(|d| mismatched.contains(&d.field.as_str())).collect();
            learned.samples.push_front(sample(c, &fields));
            learned.samples.truncate(SAMPLES);
            return Outcome::Mismatch;
        }
        if learning {
            return Outcome::Skipped(ShadowSkip::Learning);
        }
        Outcome::Match
    }

    /// `/status.shadow`: the counters and the top differing fields (most
    /// mismatches first, then most noise).
    pub fn status(&self, config: &ShadowConfig, metrics: &ShadowMetrics) -> Value {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        let mut fields: Vec<(&String, &FieldStats)> = learned.fields.iter().collect();
        fields.sort_by(|a, b| (b.1.mismatches, b.1.noise, a.0).cmp(&(a.1.mismatches, a.1.noise, b.0)));
        let cross = learned.cross.max(1) as f64;
        let fields: Vec<Value> = fields
            .into_iter()
            .filter(|(_, s)| s.cross_differed > 0)
            .take(TOP_FIELDS)
            .map(|(path, s)| {
                json!({
                    "path": path, "mismatches": s.mismatches, "noise": s.noise,
                    "rate": s.cross_differed as f64 / cross,
                    "within_rate": s.within_differed as f64 / learned.within.max(1) as f64,
                })
            })
            .collect();
        let skipped: serde_json::Map<String, Value> = ShadowSkip::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(metrics.skipped_by[*r as usize].get())))
            .collect();
        let (matched, mismatched) = (metrics.matched.get(), metrics.mismatched.get());
        json!({
            "sample": config.sample_text, "noise": config.noise,
            "compared": matched + mismatched, "matched": matched, "mismatched": mismatched,
            "skipped": skipped, "fields": fields,
        })
    }

    /// `/shadow/samples`: the last mismatches, newest first.
    pub fn samples(&self) -> Value {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        json!({ "samples": learned.samples.iter().collect::<Vec<_>>() })
    }
}

impl Learned {
    fn field(&mut self, field: &str) -> &mut FieldStats {
        let key = match self.fields.contains_key(field) || self.fields.len() < MAX_FIELDS {
            true => field,
            false => OTHER_FIELDS,
        };
        // A field seen before (the usual case) is found without allocating.
        if !self.fields.contains_key(key) {
            self.fields.insert(key.to_string(), FieldStats::default());
        }
        self.fields.get_mut(key).expect("inserted above")
    }
}

/// Each differing field once (an array's elements share one field).
fn distinct_fields(diffs: &[Difference]) -> Vec<&str> {
    let mut seen = HashSet::new();
    diffs.iter().map(|d| d.field.as_str()).filter(|f| seen.insert(*f)).collect()
}

/// One mismatch as `/shadow/samples` lists it: both sides by pool name.
fn sample(c: &Compared, fields: &[&Difference]) -> Value {
    // `left` is the primary's answer, `right` the shadow's.
    fn by_pool(primary: PoolName, d: &Difference) -> (Option<&str>, Option<&str>) {
        match primary {
            PoolName::Stable => (d.left.as_deref(), d.right.as_deref()),
            PoolName::New => (d.right.as_deref(), d.left.as_deref()),
        }
    }
    let fields: Vec<Value> = fields
        .iter()
        .map(|d| {
            let (stable, new) = by_pool(c.primary, d);
            json!({ "path": d.path, "stable": stable.map(truncate), "new": new.map(truncate) })
        })
        .collect();
    json!({
        "at": crate::control::state::now_rfc3339(),
        "method": c.method, "path": c.path, "key": String::from_utf8_lossy(c.key), "primary": c.primary.as_str(),
        "status": { "stable": c.status[PoolName::Stable.index()], "new": c.status[PoolName::New.index()] },
        "fields": fields,
    })
}

/// At most [`VALUE_BYTES`], cut at a char boundary, with `…` when cut.
fn truncate(text: &str) -> String {
    if text.len() <= VALUE_BYTES {
        return text.to_string();
    }
    let mut end = VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A comparison was decided a mismatch for this routing key: the exposure
/// ledger records it with `mismatch = true`, and `served_new` when `new`
/// answered the client (docs/src/ledger.md, "Shadow mismatches").
pub fn mismatch_seen(shared: &Shared, key: &[u8], origin: &Arc<KeyOrigin>, primary: PoolName) {
    if let Some(ledger) = &shared.ledger {
        ledger.recorder.mismatch(key, origin, primary == PoolName::New);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(150); // 300 bytes
        let cut = truncate(&long);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.len(), 200 + '…'.len_utf8());
    }

    #[test]
    fn sampling_takes_the_share_asked() {
        let shadow = Shadow::default();
        let config = crate::config::parse(
            "[split]\npercent = 1\ngroup = \"g\"\n[pools.stable]\nendpoints = [\"a:1\"]\n[pools.new]\nendpoints = [\"b:1\"]\n[shadow]\nsample = \"2%\"\n",
            "t.toml",
        )
        .unwrap()
        .shadow
        .unwrap();
        let taken = (0..100_000).filter(|_| shadow.sampled(&config)).count();
        assert!((1_900..=2_100).contains(&taken), "{taken}");
    }

    fn diff(field: &str) -> Difference {
        Difference { path: field.into(), field: field.into(), left: Some("1".into()), right: Some("2".into()) }
    }

    #[test]
    fn noise_is_learned_and_a_real_difference_stands_out() {
        let shadow = Shadow::default();
        let origin = Arc::new(KeyOrigin { release: "g".into(), source: "client_ip".into() });
        let compared = |cross: Vec<Difference>, within: Vec<Difference>| Compared {
            method: "GET",
            path: "/orders/1",
            key: b"u1",
            origin: &origin,
            primary: PoolName::Stable,
            status: [200, 200],
            cross,
            within: Some(within),
        };
        let mut outcomes = Vec::new();
        for i in 0..400 {
            let mut cross = vec![diff("/served_at")];
            if i % 20 == 0 {
                cross.push(diff("/total"));
            }
            outcomes.push(shadow.decide(true, &compared(cross, vec![diff("/served_at")])));
        }
        assert_eq!(outcomes[0], Outcome::Skipped(ShadowSkip::Learning), "nothing known yet");
        assert_eq!(outcomes[100], Outcome::Match, "served_at is noise");
        assert_eq!(outcomes[380], Outcome::Mismatch, "/total differs 5% across, never within");
        let samples = shadow.samples();
        assert_eq!(samples["samples"][0]["fields"][0]["path"], "/total");
        assert_eq!(samples["samples"][0]["fields"].as_array().unwrap().len(), 1, "noise fields left out");
        assert_eq!(samples["samples"][0]["fields"][0]["stable"], "1");
    }
}
