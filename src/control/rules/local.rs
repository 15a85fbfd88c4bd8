//! Local signals (`source = "local"`): sliding-window error rate, p99 latency
//! and error-rate delta, from the proxy's own Prometheus counters.
//!
//! Nothing is added to the request path: at every evaluation the rule loop
//! copies each pool's counters (requests, errors, the duration histogram's
//! cumulative buckets) into a ring of timestamped snapshots. A window's value
//! is the difference between the newest snapshot and the newest one at or
//! before `now - window` (the oldest one while the history is shorter).
//! The ring keeps just enough history for the longest configured window,
//! so its size is about `window / rollback.interval` snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use prometheus::core::Metric as _;

use crate::config::{LocalMetric, PoolName};
use crate::control::rules::engine::Sample;
use crate::metrics::Metrics;

/// One pool's counters at one instant (also what a fleet member publishes
/// in its entry, so others can sum the fleet's windows).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolCounts {
    requests: u64,
    errors: u64,
    /// The duration histogram: (upper bound, cumulative count), +Inf excluded.
    buckets: Vec<(f64, u64)>,
    /// The histogram's sample count (its +Inf bucket).
    observed: u64,
    /// Shadow reads decided (match or mismatch) with this pool answering
    /// the client, and of those the mismatches (docs/src/shadow.md). A
    /// member that predates shadow reads publishes neither: 0.
    #[serde(default)]
    shadow_compared: u64,
    #[serde(default)]
    shadow_mismatched: u64,
}

impl PoolCounts {
    /// Requests the pool served since the replica started.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn read(metrics: &Metrics, pool_name: PoolName) -> Self {
        let pool = metrics.pool(pool_name);
        let proto = pool.duration.metric();
        let histogram = proto.get_histogram();
        PoolCounts {
            requests: pool.total_requests(),
            errors: pool.total_errors(),
            buckets: histogram.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect(),
            observed: histogram.get_sample_count(),
            shadow_compared: metrics.shadow.compared_by_primary[pool_name.index()].get(),
            shadow_mismatched: metrics.shadow.mismatched_by_primary[pool_name.index()].get(),
        }
    }

    /// `self - base`: what happened in between. Counters only grow within
    /// one process, but saturate rather than wrap just in case.
    fn since(&self, base: &PoolCounts) -> PoolCounts {
        PoolCounts {
            requests: self.requests.saturating_sub(base.requests),
            errors: self.errors.saturating_sub(base.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &(bound, n))| (bound, n.saturating_sub(base.buckets.get(i).map_or(0, |b| b.1))))
                .collect(),
            observed: self.observed.saturating_sub(base.observed),
            shadow_compared: self.shadow_compared.saturating_sub(base.shadow_compared),
            shadow_mismatched: self.shadow_mismatched.saturating_sub(base.shadow_mismatched),
        }
    }

    /// Add another member's window (same bucket bounds: every grayshift
    /// uses the same latency buckets).
    fn add(&mut self, other: &PoolCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.observed += other.observed;
        self.shadow_compared += other.shadow_compared;
        self.shadow_mismatched += other.shadow_mismatched;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
    }

    fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors.min(self.requests) as f64 / self.requests as f64)
    }
}

#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    pools: [PoolCounts; 2],
}

/// The ring of counter snapshots.
#[derive(Debug, Default)]
pub struct LocalHistory {
    snapshots: VecDeque<Snapshot>,
}

impl LocalHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take a snapshot at `at`, and forget what no window of length `keep`
    /// can reach any more (keeping one snapshot at or before `at - keep`).
    pub fn record(&mut self, at: Instant, metrics: &Metrics, keep: Duration) {
        self.record_counts(at, PoolName::ALL.map(|p| PoolCounts::read(metrics, p)), keep);
    }

    /// [`LocalHistory::record`] with counters read elsewhere.
    pub fn record_counts(&mut self, at: Instant, pools: [PoolCounts; 2], keep: Duration) {
        self.snapshots.push_back(Snapshot { at, pools });
        if let Some(horizon) = at.checked_sub(keep) {
            while self.snapshots.len() >= 2 && self.snapshots[1].at <= horizon {
                self.snapshots.pop_front();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// Both pools' counters over the last `window` (ending at the newest
    /// snapshot).
    fn window(&self, window: Duration) -> Option<[PoolCounts; 2]> {
        let newest = self.snapshots.back()?;
        let base = match newest.at.checked_sub(window) {
            Some(start) => self.snapshots.iter().rev().find(|s| s.at <= start).unwrap_or(&self.snapshots[0]),
            None => &self.snapshots[0],
        };
        Some([0, 1].map(|i| newest.pools[i].since(&base.pools[i])))
    }

    /// The sample of a local rule. `requests` is the rule pool's request
    /// count in the window, for `min_requests`.
    pub fn sample(&self, metric: LocalMetric, pool: PoolName, window: Duration) -> Sample {
        match self.window(window) {
            Some(pools) => sample_of(&pools, metric, pool),
            None => Sample::Window { value: None, requests: 0 },
        }
    }
}

/// Every live member's history, summed per window (docs/src/fleet.md, Fleet-wide local signals). Each member
/// is differenced against its own earlier snapshots, so a member that
/// joins contributes from its second snapshot on (not its whole past), and
/// one that restarted (counters back to 0) contributes nothing negative.
#[derive(Debug, Default)]
pub struct FleetHistory {
    members: BTreeMap<String, LocalHistory>,
}

impl FleetHistory {
    /// One snapshot per live member (this replica included); members not
    /// listed are gone and forgotten.
    pub fn record(&mut self, at: Instant, members: Vec<(String, [PoolCounts; 2])>, keep: Duration) {
        self.members.retain(|name, _| members.iter().any(|(n, _)| n == name));
        for (name, pools) in members {
            self.members.entry(name).or_default().record_counts(at, pools, keep);
        }
    }

    pub fn sample(&self, metric: LocalMetric, pool: PoolName, window: Duration) -> Sample {
        let mut sum: [PoolCounts; 2] = Default::default();
        let mut any = false;
        for history in self.members.values() {
            if let Some(pools) = history.window(window) {
                any = true;
                sum[0].add(&pools[0]);
                sum[1].add(&pools[1]);
            }
        }
        if !any {
            return Sample::Window { value: None, requests: 0 };
        }
        sample_of(&sum, metric, pool)
    }
}

/// A local rule's sample from both pools' window counters.
fn sample_of(pools: &[PoolCounts; 2], metric: LocalMetric, pool: PoolName) -> Sample {
    {
        let own = &pools[pool.index()];
        let value = match metric {
            LocalMetric::ErrorRate => own.error_rate(),
            LocalMetric::LatencyP99 => quantile(0.99, &own.buckets, own.observed),
            LocalMetric::ErrorRateDelta => {
                match (pools[PoolName::New.index()].error_rate(), pools[PoolName::Stable.index()].error_rate()) {
                    (Some(new), Some(stable)) => Some(new - stable),
                    _ => None,
                }
            }
            // Whichever side answered the client: a comparison is one pair.
            LocalMetric::ShadowMismatchRate => {
                let compared = pools.iter().map(|p| p.shadow_compared).sum::<u64>();
                let mismatched = pools.iter().map(|p| p.shadow_mismatched).sum::<u64>();
                let value = (compared > 0).then(|| mismatched.min(compared) as f64 / compared as f64);
                return Sample::Window { value, requests: compared };
            }
        };
        Sample::Window { value, requests: own.requests }
    }
}

/// The `q` quantile of a histogram window, as Prometheus's
/// `histogram_quantile` computes it: find the bucket holding rank `q * count`
/// and interpolate linearly inside it (the first bucket starts at 0). A rank
/// beyond the last finite bucket answers that bucket's upper bound.
pub fn quantile(q: f64, buckets: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if cumulative == below {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below as f64) / (cumulative - below) as f64);
        }
        (lower, below) = (upper, cumulative);
    }
    buckets.last().map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn answer(metrics: &Metrics, pool: PoolName, status: u16, seconds: f64, n: usize) {
        for _ in 0..n {
            metrics.pool(pool).count_response(status, seconds);
        }
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let buckets = [(0.1, 50), (0.2, 90), (0.5, 100)];
        // rank 99 of 100 lies in (0.2, 0.5], 9 of its 10 samples in.
        assert!((quantile(0.99, &buckets, 100).unwrap() - 0.47).abs() < 1e-9);
        // rank 25 lies in the first bucket, which starts at 0.
        assert!((quantile(0.25, &buckets, 100).unwrap() - 0.05).abs() < 1e-9);
        // Past the last finite bucket: its upper bound.
        assert_eq!(quantile(0.99, &[(0.1, 10), (0.2, 10)], 100), Some(0.2));
        assert_eq!(quantile(0.99, &buckets, 0), None);
    }

    #[test]
    fn error_rate_over_a_sliding_window() {
        let metrics = Metrics::new();
        let mut history = LocalHistory::new();
        let t0 = Instant::now();
        let keep = secs(60);
        history.record(t0, &metrics, keep);
        answer(&metrics, PoolName::New, 500, 0.01, 10);
        answer(&metrics, PoolName::New, 200, 0.01, 90);
        history.record(t0 + secs(30), &metrics, keep);
        let rate = |h: &LocalHistory, w| h.sample(LocalMetric::ErrorRate, PoolName::New, w);
        assert_eq!(
            rate(&history, secs(60)),
            Sample::Window { value: Some(0.1), requests: 100 },
            "history shorter than the window: from the oldest"
        );
        answer(&metrics, PoolName::New, 200, 0.01, 100);
        history.record(t0 + secs(60), &metrics, keep);
        assert_eq!(rate(&history, secs(60)), Sample::Window { value: Some(0.05), requests: 200 });
        assert_eq!(rate(&history, secs(30)), Sample::Window { value: Some(0.0), requests: 100 }, "only the last 30s");
        assert_eq!(
            rate(&history, secs(10)),
            Sample::Window { value: Some(0.0), requests: 100 },
            "the snapshot just before now - window"
        );
        history.record(t0 + secs(90), &metrics, keep);
        assert_eq!(rate(&history, secs(60)), Sample::Window { value: Some(0.0), requests: 100 }, "the 500s slid out");
        history.record(t0 + secs(120), &metrics, keep);
        assert_eq!(rate(&history, secs(60)), Sample::Window { value: None, requests: 0 });
        assert_eq!(history.len(), 3, "one snapshot at the window's start, and what follows");
    }

    #[test]
    fn upstream_resets_count_as_errors() {
        let metrics = Metrics::new();
        let mut history = LocalHistory::new();
        let t0 = Instant::now();
        history.record(t0, &metrics, secs(60));
        answer(&metrics, PoolName::New, 200, 0.01, 4);
        metrics.pool(PoolName::New).count_error(crate::metrics::UpstreamErrorKind::Reset);
        history.record(t0 + secs(1), &metrics, secs(60));
        assert_eq!(
            history.sample(LocalMetric::ErrorRate, PoolName::New, secs(60)),
            Sample::Window { value: Some(0.25), requests: 4 }
        );
        // A reset before the head is answered 502: one error, not two.
        answer(&metrics, PoolName::New, 502, 0.01, 1);
        metrics.pool(PoolName::New).count_error(crate::metrics::UpstreamErrorKind::Reset);
        metrics.pool(PoolName::New).resets_before_head.inc();
        history.record(t0 + secs(2), &metrics, secs(60));
        assert_eq!(
            history.sample(LocalMetric::ErrorRate, PoolName::New, secs(60)),
            Sample::Window { value: Some(0.4), requests: 5 }
        );
    }

    #[test]
    fn latency_p99_and_error_rate_delta() {
        let metrics = Metrics::new();
        let mut history = LocalHistory::new();
        let t0 = Instant::now();
        history.record(t0, &metrics, secs(60));
        // 0.5 ms .. 1 ms bucket for 90, the (0.25, 0.5] bucket for 10.
        answer(&metrics, PoolName::New, 200, 0.0008, 90);
        answer(&metrics, PoolName::New, 502, 0.3, 10);
        answer(&metrics, PoolName::Stable, 200, 0.0008, 98);
        answer(&metrics, PoolName::Stable, 503, 0.0008, 2);
        history.record(t0 + secs(5), &metrics, secs(60));
        let Sample::Window { value: Some(p99), requests: 100 } =
            history.sample(LocalMetric::LatencyP99, PoolName::New, secs(60))
        else {
            panic!("a p99 over 100 requests")
        };
        // rank 99: 9 of the 10 in (0.25, 0.5] → 0.25 + 0.25 * 0.9.
        assert!((p99 - 0.475).abs() < 1e-9, "{p99}");
        let Sample::Window { value: Some(delta), requests: 100 } =
            history.sample(LocalMetric::ErrorRateDelta, PoolName::New, secs(60))
        else {
            panic!("both pools had traffic")
        };
        assert!((delta - 0.08).abs() < 1e-9, "{delta}");
        history.record(t0 + secs(100), &metrics, secs(60));
        assert_eq!(
            history.sample(LocalMetric::ErrorRateDelta, PoolName::New, secs(60)),
            Sample::Window { value: None, requests: 0 }
        );
    }

    #[test]
    fn an_empty_history_has_no_value() {
        let history = LocalHistory::new();
        assert!(history.is_empty());
        assert_eq!(
            history.sample(LocalMetric::ErrorRate, PoolName::New, secs(60)),
            Sample::Window { value: None, requests: 0 }
        );
    }

    fn counts(requests: u64, errors: u64) -> [PoolCounts; 2] {
        [PoolCounts::default(), PoolCounts { requests, errors, ..PoolCounts::default() }]
    }

    #[test]
    fn fleet_windows_sum_each_members_own_differences() {
        let t0 = Instant::now();
        let mut fleet = FleetHistory::default();
        let at = |s| t0 + secs(s);
        fleet.record(at(0), vec![("a".into(), counts(100, 0)), ("b".into(), counts(500, 400))], secs(60));
        fleet.record(at(1), vec![("a".into(), counts(110, 5)), ("b".into(), counts(520, 405))], secs(60));
        // 30 requests, 10 errors in the window across both.
        let s = fleet.sample(LocalMetric::ErrorRate, PoolName::New, secs(60));
        let Sample::Window { value: Some(rate), requests: 30 } = s else { panic!("{s:?}") };
        assert!((rate - 10.0 / 30.0).abs() < 1e-9);
        // A joining member's past is not in the window; a restarted one
        // (counters back to 0) adds nothing negative.
        fleet.record(
            at(2),
            vec![("a".into(), counts(3, 0)), ("b".into(), counts(520, 405)), ("c".into(), counts(9000, 9000))],
            secs(60),
        );
        assert_eq!(
            fleet.sample(LocalMetric::ErrorRate, PoolName::New, secs(60)),
            Sample::Window { value: Some(5.0 / 20.0), requests: 20 }
        );
        // Members gone are forgotten.
        fleet.record(at(3), vec![("c".into(), counts(9010, 9000))], secs(60));
        assert_eq!(
            fleet.sample(LocalMetric::ErrorRate, PoolName::New, secs(60)),
            Sample::Window { value: Some(0.0), requests: 10 }
        );
    }
}
