//! The rollback rule engine (docs/src/rules.md): every `rollback.interval` it reads
//! each rule's signal, feeds the [`engine`] state machine, and turns its
//! decisions into [`Change`]s for `Control::submit` — the same state, audit
//! log and persistence as the admin API.
//!
//! - [`engine`]: the pure state machine (no I/O, injected clock).
//! - [`local`]: sliding windows over the proxy's own counters.
//! - [`signals`]: reading every signal concurrently, each with a timeout.
//! - [`actions`]: notify webhooks and the L3 hook, driven by level events.
//!
//! Metrics: `grayshift_rule_value{rule}` is the last value read, NaN while
//! the signal is unknown (a stale number would look live);
//! `grayshift_rule_firing{rule}` is 1 while the rule fires;
//! `grayshift_signal_errors_total{rule}` counts unreadable signals.

pub mod actions;
pub mod engine;
pub mod local;
pub mod signals;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::config::{Condition, Config, Level, RuleConfig, SignalConfig};
use crate::control::change::Change;
use crate::control::state::{Actor, ControlError, Event};
use crate::Shared;
use engine::{fmt_duration, Decision, Engine, RuleState, Sample, Status};
use signals::Signals;

/// The rules' live state, shared by the rule loop and `/status`.
pub struct RuleBoard {
    engine: Mutex<Engine>,
}

impl RuleBoard {
    pub fn new(rules: &[RuleConfig]) -> Self {
        RuleBoard { engine: Mutex::new(Engine::new(rules, Instant::now())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload's new rule set: unchanged rules (same name and definition)
    /// keep their state, others start `unknown`.
    pub fn update(&self, rules: &[RuleConfig]) {
        self.lock().set_rules(rules, Instant::now());
    }

    /// Feed one evaluation; returns the decision and the rules' new state.
    pub fn evaluate(
        &self,
        now: Instant,
        recover_for: Duration,
        samples: &[(RuleConfig, Sample)],
    ) -> (Decision, Vec<RuleState>) {
        let mut engine = self.lock();
        let decision = engine.evaluate(now, recover_for, samples);
        (decision, engine.rules().to_vec())
    }

    /// No rule is pending or firing (the ramp promotes only then).
    pub fn quiet(&self) -> bool {
        self.lock().rules().iter().all(|r| !matches!(r.status, Status::Pending | Status::Firing))
    }

    /// A level was resumed: its rules need a new `for` to fire again.
    pub fn rearm(&self, level: Level) {
        self.lock().rearm(level, Instant::now());
    }

    /// The rules as `/status` shows them, in config order.
    pub fn view(&self) -> Value {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let at = |i: Instant| rfc3339(wall.checked_sub(now.saturating_duration_since(i)).unwrap_or(wall));
        let rules = self.lock().rules().to_vec();
        Value::Array(
            rules
                .iter()
                .map(|r| {
                    let (condition, threshold) = match r.def.condition {
                        Condition::Above(t) => ("above", t),
                        Condition::Below(t) => ("below", t),
                    };
                    let mut entry = json!({
                        "name": r.def.name,
                        "level": r.def.level,
                        "state": r.status,
                        "value": r.value,
                        "condition": condition,
                        "threshold": threshold,
                        "for": fmt_duration(r.def.for_),
                        "since": at(r.since),
                        "why": r.why,
                        "evaluated_at": r.evaluated_at.map(at),
                        "source": source_name(&r.def.signal),
                        "on_error": if r.def.fire_on_error { "fire" } else { "ignore" },
                    });
                    if let SignalConfig::Local { window, .. } = &r.def.signal {
                        entry["window"] = json!(fmt_duration(*window));
                        entry["min_requests"] = json!(r.def.min_requests);
                    }
                    entry
                })
                .collect(),
        )
    }
}

fn source_name(signal: &SignalConfig) -> &'static str {
    match signal {
        SignalConfig::Local { .. } => "local",
        SignalConfig::Postgres { .. } => "postgres",
        SignalConfig::Prometheus { .. } => "prometheus",
        SignalConfig::Http { .. } => "http",
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Start the rule loop and the level-event consumer (notify, L3 hook).
/// Both stop when `shutdown` turns true.
pub fn spawn(shared: Arc<Shared>, events: mpsc::UnboundedReceiver<Event>, shutdown: watch::Receiver<bool>) {
    tokio::spawn(actions::run(shared.clone(), events, shutdown.clone()));
    tokio::spawn(evaluate_loop(shared, shutdown));
}

/// How much local history the longest `local` window needs.
fn history_needed(config: &Config) -> Duration {
    config
        .rules
        .iter()
        .filter_map(|r| match r.signal {
            SignalConfig::Local { window, .. } => Some(window),
            _ => None,
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

async fn evaluate_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut signals = Signals::new();
    let mut exported: HashSet<String> = HashSet::new();
    let mut active = active_levels(&shared);
    // The baseline: traffic from now on counts in the first window.
    signals.local.record(Instant::now(), &shared.metrics, history_needed(&shared.config()));
    if let Some(members) = shared.control.store().member_counters(&shared) {
        // The members seen now get their baseline too; one that appears
        // later counts from its first snapshot here (its past is unknown).
        signals.fleet.record(Instant::now(), members, history_needed(&shared.config()));
    }
    let mut next = tokio::time::Instant::now();
    loop {
        // Read the interval every time round, so a reload applies.
        next = (next + shared.config().rollback.interval).max(tokio::time::Instant::now());
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        tokio::select! {
            _ = tick(&shared, &mut signals, &mut exported, &mut active) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn active_levels(shared: &Shared) -> BTreeSet<Level> {
    shared.control.state().rollbacks.keys().copied().collect()
}

/// One evaluation: read, decide, act, export.
async fn tick(shared: &Shared, signals: &mut Signals, exported: &mut HashSet<String>, active: &mut BTreeSet<Level>) {
    let config = shared.config();
    let now = Instant::now();
    signals.local.record(now, &shared.metrics, history_needed(&config));
    if let Some(members) = shared.control.store().member_counters(shared) {
        signals.fleet.record(now, members, history_needed(&config));
    }

    // Levels resumed since the last evaluation re-arm their rules.
    let active_now = active_levels(shared);
    for &level in active.difference(&active_now) {
        shared.rules.rearm(level);
    }

    let samples = signals.read_all(&config.rules, config.rollback.interval).await;
    // `for` and `recover_for` are measured to when the readings came in.
    let (decision, states) = shared.rules.evaluate(Instant::now(), config.rollback.recover_for, &samples);
    act(shared, &config, &decision).await;
    export(shared, &samples, &states, exported);
    *active = active_levels(shared);
}

async fn act(shared: &Shared, config: &Config, decision: &Decision) {
    let hook = config.rollback.hook.is_some();
    for action in &decision.activate {
        let actor = Actor::Rule(action.rule.clone());
        let change = Change::Activate { level: action.level, reason: action.reason.clone(), force: false, hook };
        if let Err(e) = shared.control.submit(shared, change, &actor).await {
            // Applied in memory all the same: protecting traffic wins.
            tracing::error!(level = %action.level, error = %e, "rollback applied but not persisted");
        }
    }
    // Only an L2 that a rule raised clears by itself; one raised by hand
    // is cleared by hand.
    let Some(reason) = &decision.clear_l2 else { return };
    let state = shared.control.state();
    let Some(rule) = state.rollbacks.get(&Level::L2).and_then(|a| a.actor.strip_prefix("rule:")) else { return };
    let actor = Actor::Rule(rule.to_string());
    // Clearing L2 raises risk: in fleet mode it goes through the store.
    match shared.control.submit(shared, Change::Resume { level: Level::L2, confirm: false }, &actor).await {
        Ok(_) => tracing::warn!(reason, "L2 cleared by itself"),
        Err(ControlError::NotActive(_)) => {}
        Err(e) => tracing::error!(error = %e, "cannot clear L2"),
    }
}

fn export(shared: &Shared, samples: &[(RuleConfig, Sample)], states: &[RuleState], exported: &mut HashSet<String>) {
    let metrics = &shared.metrics;
    for (rule, sample) in samples {
        if matches!(sample, Sample::Unknown(_)) {
            metrics.signal_errors.with_label_values(&[rule.name.as_str()]).inc();
            tracing::debug!(rule = %rule.name, ?sample, "signal unreadable");
        }
    }
    let current: HashSet<String> = states.iter().map(|s| s.def.name.clone()).collect();
    for gone in exported.difference(&current) {
        let _ = metrics.rule_value.remove_label_values(&[gone]);
        let _ = metrics.rule_firing.remove_label_values(&[gone]);
        let _ = metrics.signal_errors.remove_label_values(&[gone]);
    }
    for state in states {
        let (value, firing) = metrics.rule_gauges(&state.def.name);
        value.set(state.value.unwrap_or(f64::NAN));
        firing.set(i64::from(state.status == Status::Firing));
    }
    *exported = current;
    shared.control.export(metrics);
}
