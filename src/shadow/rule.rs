//! The mismatch rule (docs/src/shadow.md, "Noise and the mismatch rule"):
//! given how often a field differed between the two versions and how often
//! it differed between two answers of one version, is its difference a
//! sign of lost or changed data, or noise? Pure: counts in, verdict out.
//!
//! A field is a **mismatch** when it differs across versions
//! - at least [`MIN_CROSS_DIFFS`] times,
//! - at least [`RATIO`] times as often as within one version, and
//! - significantly more often: a one-sided two-proportion z-test at
//!   [`Z`] (about 1 in 740 by chance for one test),
//!
//! once [`MIN_WITHIN`] same-version pairs were compared. Before that the
//! field is still **learning**. Anything else is **noise**. The ratio is
//! what keeps a field that differs about as often both ways (a timestamp,
//! an id, an unstable order) noise however many pairs are seen; the z-test
//! is what keeps a rare difference (3 in 100 vs 0 in 100) from deciding
//! before there is evidence.

/// Same-version pairs needed before any field can be judged.
pub const MIN_WITHIN: u64 = 30;
/// Cross-version differences needed before a field can be a mismatch.
pub const MIN_CROSS_DIFFS: u64 = 3;
/// The cross-version rate must be at least this multiple of the within rate.
pub const RATIO: f64 = 2.0;
/// The z-score the cross-version rate must be above the within rate by.
pub const Z: f64 = 3.0;

/// What is known of one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Cross-version comparisons made (all of them: a field absent from
    /// both answers did not differ).
    pub cross: u64,
    /// Of those, how many had this field differ.
    pub cross_differed: u64,
    /// Same-version (noise) comparisons made.
    pub within: u64,
    pub within_differed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough same-version pairs yet.
    Learning,
    /// Differs about as often within one version: not evidence.
    Noise,
    /// Differs between the versions significantly more often than within one.
    Mismatch,
}

/// The rule, as a pure function of the counts.
pub fn verdict(c: Counts) -> Verdict {
    if c.within < MIN_WITHIN {
        return Verdict::Learning;
    }
    if c.cross == 0 || c.cross_differed < MIN_CROSS_DIFFS {
        return Verdict::Noise;
    }
    let p_cross = c.cross_differed as f64 / c.cross as f64;
    let p_within = c.within_differed as f64 / c.within as f64;
    if p_cross < RATIO * p_within {
        return Verdict::Noise;
    }
    // Pooled two-proportion z-test, one-sided (cross > within).
    let pooled = (c.cross_differed + c.within_differed) as f64 / (c.cross + c.within) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / c.cross as f64 + 1.0 / c.within as f64)).sqrt();
    if se == 0.0 || (p_cross - p_within) / se < Z {
        return Verdict::Noise;
    }
    Verdict::Mismatch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cross: u64, cross_differed: u64, within: u64, within_differed: u64) -> Counts {
        Counts { cross, cross_differed, within, within_differed }
    }

    #[test]
    fn nothing_is_judged_before_enough_same_version_pairs() {
        assert_eq!(verdict(counts(1000, 1000, 29, 0)), Verdict::Learning);
        assert_eq!(verdict(counts(1000, 1000, 30, 0)), Verdict::Mismatch);
    }

    #[test]
    fn a_field_that_differs_as_often_within_one_version_is_noise() {
        // A timestamp, a random id: every pair differs, both ways.
        assert_eq!(verdict(counts(5000, 5000, 5000, 5000)), Verdict::Noise);
        // Three tags in random order: 5 in 6 pairs differ, both ways, with
        // the within side's sampling luck below the cross side's.
        assert_eq!(verdict(counts(5000, 4200, 5000, 4100)), Verdict::Noise);
        assert_eq!(verdict(counts(100, 90, 100, 70)), Verdict::Noise);
    }

    #[test]
    fn a_rare_difference_that_never_happens_within_one_version_is_a_mismatch() {
        // The book's worked example: 3 % of rows corrupted by the migration.
        assert_eq!(verdict(counts(100, 3, 100, 0)), Verdict::Noise, "3 of 100 is not yet evidence (z = 1.74)");
        assert_eq!(verdict(counts(300, 9, 300, 0)), Verdict::Mismatch, "9 of 300 is (z = 3.02)");
        assert_eq!(verdict(counts(1000, 30, 1000, 0)), Verdict::Mismatch);
        // The same rate within one version too: the app is just like that.
        assert_eq!(verdict(counts(1000, 30, 1000, 28)), Verdict::Noise);
    }

    #[test]
    fn a_field_that_differs_more_but_not_twice_as_often_is_noise() {
        // 60 % vs 40 %, overwhelming evidence, but the ratio says the field
        // is noisy by nature: no rollback on it.
        assert_eq!(verdict(counts(10_000, 6000, 10_000, 4000)), Verdict::Noise);
        // 20 % vs 5 %: four times as often, and significant.
        assert_eq!(verdict(counts(1000, 200, 1000, 50)), Verdict::Mismatch);
    }

    #[test]
    fn too_few_differences_never_decide() {
        assert_eq!(verdict(counts(40, 2, 40, 0)), Verdict::Noise);
        assert_eq!(verdict(counts(0, 0, 40, 0)), Verdict::Noise);
    }
}
