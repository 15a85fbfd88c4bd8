//! The rule state machine (docs/src/rules.md): given rule definitions, one sample per
//! rule per evaluation and the time, it decides each rule's state
//! (unknown / ok / pending / firing) and which levels to activate or clear.
//!
//! Pure: no I/O, no sleeping, no clock of its own (`now` is passed in), so
//! every transition is unit-tested with made-up instants.
//!
//! Semantics, in one place:
//! - A rule is *bad* when its value is `above`/`below` the threshold. It
//!   fires once it has been bad at every reading for `for` (measured from the
//!   first bad reading of the run); `for = "0s"` fires at the first bad
//!   reading. A good reading ends the run: `for` starts again from zero.
//! - `min_requests` (local signals): fewer requests of the rule's pool in the
//!   window is no verdict: the rule is `ok` with a reason, cannot fire, and a
//!   pending run ends. A window with no requests at all is the same.
//! - An unreadable signal with `on_error = "ignore"` (the default) is
//!   `unknown`: it cannot fire, it does not end a pending run (the `for`
//!   clock keeps the first bad reading's time, as Prometheus keeps a pending
//!   alert through failed evaluations), and it is not a good reading, so it
//!   holds off L2's recovery. With `on_error = "fire"` it counts as bad.
//! - Every level with a firing rule is asked for at every evaluation
//!   (activating an active level is a no-op in `Control`). L1 and L3 are
//!   latched: the engine never clears them. L2 is cleared once every L2 rule
//!   has been `ok` for `recover_for` without a break.
//! - After a level is resumed by hand, its rules are re-armed: they need a
//!   whole new `for` of bad readings to fire again.

use std::time::{Duration, Instant};

use crate::config::{Condition, Level, LocalMetric, RuleConfig, SignalConfig};

/// One reading of a rule's signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A number from a remote signal (postgres, prometheus, http).
    Value(f64),
    /// A local signal over its window: the value (`None` when the window
    /// holds no request to compute it from) and how many requests of the
    /// rule's pool the window holds (checked against `min_requests`).
    Window { value: Option<f64>, requests: u64 },
    /// The signal could not be read.
    Unknown(String),
}

/// A rule's state as shown in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not read yet, or the signal is unreadable (`on_error = "ignore"`).
    Unknown,
    /// Not bad, or not enough data for a verdict.
    Ok,
    /// Bad, but not yet for `for`.
    Pending,
    /// Bad for at least `for`.
    Firing,
}

/// One rule's definition and where it stands.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub def: RuleConfig,
    pub status: Status,
    /// The last value read (`None` when unknown or not computable).
    pub value: Option<f64>,
    /// A sentence explaining `status`.
    pub why: String,
    /// When the rule entered `status`.
    pub since: Instant,
    /// When the rule was last evaluated.
    pub evaluated_at: Option<Instant>,
    /// First bad reading of the current run.
    bad_since: Option<Instant>,
}

impl RuleState {
    fn new(def: RuleConfig, now: Instant) -> Self {
        RuleState {
            def,
            status: Status::Unknown,
            value: None,
            why: "not evaluated yet".into(),
            since: now,
            evaluated_at: None,
            bad_since: None,
        }
    }

    fn set(&mut self, status: Status, value: Option<f64>, why: String, now: Instant) {
        if status != self.status {
            self.since = now;
        }
        self.status = status;
        self.value = value;
        self.why = why;
        self.evaluated_at = Some(now);
    }
}

/// What one evaluation of a reading amounts to.
enum Verdict {
    Good { value: Option<f64>, why: String },
    Bad { value: Option<f64>, what: String },
    Unreadable(String),
}

/// A level the engine wants active, and the rule that asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelAction {
    pub level: Level,
    pub rule: String,
    pub reason: String,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Levels with a firing rule, highest first (one entry per level: the
    /// first firing rule in config order).
    pub activate: Vec<LevelAction>,
    /// Every L2 rule has been ok for `recover_for`: L2 may clear. Set
    /// whether or not L2 is active; the caller decides.
    pub clear_l2: Option<String>,
}

/// All rules' state, plus L2's recovery clock.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Vec<RuleState>,
    /// Since when every L2 rule has been ok without a break.
    l2_ok_since: Option<Instant>,
}

impl Engine {
    pub fn new(rules: &[RuleConfig], now: Instant) -> Self {
        Engine { rules: rules.iter().map(|r| RuleState::new(r.clone(), now)).collect(), l2_ok_since: None }
    }

    pub fn rules(&self) -> &[RuleState] {
        &self.rules
    }

    /// Replace the rule set (hot reload). A rule whose name and definition
    /// are unchanged keeps its state; a new or changed rule starts unknown.
    pub fn set_rules(&mut self, rules: &[RuleConfig], now: Instant) {
        let mut old = std::mem::take(&mut self.rules);
        self.rules = rules
            .iter()
            .map(|def| match old.iter().position(|s| s.def == *def) {
                Some(i) => old.swap_remove(i),
                None => RuleState::new(def.clone(), now),
            })
            .collect();
    }

    /// A level was resumed: its rules need a whole new `for` of bad
    /// readings before they ask for it again.
    pub fn rearm(&mut self, level: Level, now: Instant) {
        for rule in self.rules.iter_mut().filter(|r| r.def.level == level) {
            if rule.bad_since.take().is_some() || matches!(rule.status, Status::Pending | Status::Firing) {
                let why = format!("{level} was resumed: waiting for the next reading");
                rule.set(Status::Unknown, rule.value, why, now);
            }
        }
    }

    /// Feed one evaluation's samples. Samples are matched to rules by
    /// definition, so a sample read under a config that a reload has since
    /// replaced is dropped; a rule without a sample keeps its state.
    pub fn evaluate(&mut self, now: Instant, recover_for: Duration, samples: &[(RuleConfig, Sample)]) -> Decision {
        for (def, sample) in samples {
            if let Some(rule) = self.rules.iter_mut().find(|r| r.def == *def) {
                apply(rule, sample, now);
            }
        }
        Decision { activate: self.levels_to_activate(), clear_l2: self.l2_recovery(now, recover_for) }
    }

    fn levels_to_activate(&self) -> Vec<LevelAction> {
        let mut actions = Vec::new();
        for level in Level::ALL.into_iter().rev() {
            if let Some(rule) = self.rules.iter().find(|r| r.def.level == level && r.status == Status::Firing) {
                actions.push(LevelAction {
                    level,
                    rule: rule.def.name.clone(),
                    reason: format!("rule {}: {}", rule.def.name, rule.why),
                });
            }
        }
        actions
    }

    fn l2_recovery(&mut self, now: Instant, recover_for: Duration) -> Option<String> {
        let mut l2 = self.rules.iter().filter(|r| r.def.level == Level::L2);
        if !l2.all(|r| r.status == Status::Ok) {
            self.l2_ok_since = None;
            return None;
        }
        let since = *self.l2_ok_since.get_or_insert(now);
        let held = now.saturating_duration_since(since);
        (held >= recover_for).then(|| {
            let rules: Vec<String> = self
                .rules
                .iter()
                .filter(|r| r.def.level == Level::L2)
                .map(|r| format!("{}: {}", r.def.name, r.why))
                .collect();
            let detail = if rules.is_empty() { "no L2 rule is configured".to_string() } else { rules.join("; ") };
            format!("L2 signals fine for {} (recover_for {}): {detail}", fmt_duration(held), fmt_duration(recover_for))
        })
    }

    /// The highest level with a firing rule.
    pub fn highest_firing(&self) -> Option<Level> {
        self.rules.iter().filter(|r| r.status == Status::Firing).map(|r| r.def.level).max()
    }
}

fn apply(rule: &mut RuleState, sample: &Sample, now: Instant) {
    match verdict(&rule.def, sample) {
        Verdict::Good { value, why } => {
            rule.bad_since = None;
            rule.set(Status::Ok, value, why, now);
        }
        Verdict::Bad { value, what } => {
            let since = *rule.bad_since.get_or_insert(now);
            let held = now.saturating_duration_since(since);
            let for_ = rule.def.for_;
            if held >= for_ {
                let why = if for_.is_zero() {
                    format!("{what} (for 0s: fires at once)")
                } else {
                    format!("{what} for {} (for {})", fmt_duration(held), fmt_duration(for_))
                };
                rule.set(Status::Firing, value, why, now);
            } else {
                let why = format!("{what} for {} of {}", fmt_duration(held), fmt_duration(for_));
                rule.set(Status::Pending, value, why, now);
            }
        }
        Verdict::Unreadable(error) => {
            let why = match rule.bad_since {
                Some(since) => format!(
                    "signal unreadable: {error} (bad for {} before; on_error = ignore keeps that run)",
                    fmt_duration(now.saturating_duration_since(since))
                ),
                None => format!("signal unreadable: {error}"),
            };
            rule.set(Status::Unknown, None, why, now);
        }
    }
}

fn verdict(def: &RuleConfig, sample: &Sample) -> Verdict {
    let value = match sample {
        Sample::Value(v) => *v,
        Sample::Window { value, requests } => {
            let window = match &def.signal {
                SignalConfig::Local { window, .. } => fmt_duration(*window),
                _ => "window".into(),
            };
            if *requests < def.min_requests {
                let why =
                    format!("only {requests} of min {} requests in the last {window}: no verdict", def.min_requests);
                return Verdict::Good { value: *value, why };
            }
            match value {
                Some(v) => *v,
                None => {
                    return Verdict::Good { value: None, why: format!("no requests in the last {window}: no verdict") }
                }
            }
        }
        Sample::Unknown(error) if def.fire_on_error => {
            return Verdict::Bad {
                value: None,
                what: format!("signal unreadable: {error} (on_error = fire counts it as bad)"),
            }
        }
        Sample::Unknown(error) => return Verdict::Unreadable(error.clone()),
    };
    if value.is_nan() {
        return verdict(def, &Sample::Unknown("the signal returned NaN".into()));
    }
    let label = label(&def.signal);
    let threshold = fmt_value(def.condition.threshold());
    if def.condition.is_bad(value) {
        let op = if matches!(def.condition, Condition::Above(_)) { ">" } else { "<" };
        Verdict::Bad { value: Some(value), what: format!("{label} {} {op} {threshold}", fmt_value(value)) }
    } else {
        let op = if matches!(def.condition, Condition::Above(_)) { "not above" } else { "not below" };
        Verdict::Good { value: Some(value), why: format!("{label} {} {op} {threshold}", fmt_value(value)) }
    }
}

/// What the value is called in a `why` sentence.
fn label(signal: &SignalConfig) -> &'static str {
    match signal {
        SignalConfig::Local { metric: LocalMetric::ErrorRate, .. } => "error_rate",
        SignalConfig::Local { metric: LocalMetric::LatencyP99, .. } => "latency_p99",
        SignalConfig::Local { metric: LocalMetric::ErrorRateDelta, .. } => "error_rate_delta",
        SignalConfig::Local { metric: LocalMetric::ShadowMismatchRate, .. } => "shadow_mismatch_rate",
        SignalConfig::Postgres { .. } | SignalConfig::Prometheus { .. } | SignalConfig::Http { .. } => "value",
    }
}

/// A value as a person reads it: up to four decimals, no trailing zeros.
pub fn fmt_value(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    if !v.is_finite() || v.abs() >= 1e6 || v.abs() < 1e-4 {
        return format!("{v}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A duration as written in the config: `250ms`, `4.5s`, `2m10s`, `1h5m`.
pub fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(10) && d.subsec_millis() >= 100 {
        return format!("{}.{}s", d.as_secs(), d.subsec_millis() / 100);
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests;
