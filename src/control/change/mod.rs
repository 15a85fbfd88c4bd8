//! Every run-time change, and the one pure function that decides it.
//!
//! A change is a [`Change`]: the operator's (`PUT /percent`, `POST
//! /rollback`, `/resume`, `/ramp`), the config file's percent, a rule
//! firing, the ramp's tick, the schema gate's verdict, the fleet store's
//! state. [`apply`] decides it on a [`State`] — the point of no return and
//! `--force`, L2's freeze, L3's lock, the ramp pausing on a manual percent,
//! the schema hold — and answers the next state and the [`Effect`]s to
//! write once a store has it (`crate::control::store`), or a refusal. No
//! I/O and no clock of its own: the caller passes the time.

pub mod request;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Level;
use crate::control::release::ramp::{self, Conditions, Phase, Plan, Ramp};
use crate::control::state::{Activation, Actor, ControlError, HookStatus, Route, State};
use crate::migration::Stance;

/// The shared part of the state as the fleet's store holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remote {
    /// `None`: the store has no percent yet (a new or wiped store).
    pub desired_percent: Option<u8>,
    pub rollbacks: BTreeMap<Level, Activation>,
    /// `None`: the store has no ramp (never started, or wiped).
    pub ramp: Option<Ramp>,
}

/// Every run-time change there is.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `PUT /percent` (and, in fleet mode, the config file's percent on its
    /// way to the store).
    SetPercent { percent: i64 },
    /// `split.percent` changed in the config file: last writer wins.
    ConfigPercent { percent: u8 },
    /// `POST /rollback` or a rule firing. `hook`: `rollback.hook` is
    /// configured (an L3 activation then waits for it).
    Activate { level: Level, reason: String, force: bool, hook: bool },
    /// `POST /resume`, or L2 clearing by itself.
    Resume { level: Level, confirm: bool },
    /// `POST /ramp` or the ramp's own tick, decided on the state it applies to.
    Ramp(RampMove),
    /// The schema gate's verdict: the stance went from `before` to `now` at
    /// `version` (`None`: unreadable); `restarted` is the route served
    /// before this process started (see `State::with_schema`);
    /// `unsupported` says why stable cannot run on it, `was_unsupported`
    /// whether it could not before.
    Schema {
        before: Stance,
        now: Stance,
        restarted: Option<Route>,
        version: Option<String>,
        unsupported: Option<String>,
        was_unsupported: bool,
    },
    /// Fleet mode: the store's state, read at `revision`.
    Remote { remote: Remote, revision: i64 },
    /// The L3 hook finished.
    HookOutcome { status: HookStatus, detail: String },
    /// Fleet mode, the store was reset: every active level goes back to the outbox.
    Requeue,
}

/// A ramp decision: an operator's command or a tick, on the given plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RampMove {
    pub plan: Plan,
    pub step: RampStep,
    /// No rule is pending or firing.
    pub quiet: bool,
    pub gate_open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampStep {
    Command(ramp::Command),
    /// `elapsed` since the last tick, `served` requests by `new` meanwhile.
    Tick {
        elapsed: Duration,
        served: u64,
    },
}

impl Change {
    /// A change towards risk (more users on `new`, a level cleared): in
    /// fleet mode it goes to the store first (docs/src/fleet.md, When
    /// something fails).
    pub fn towards_risk(&self) -> bool {
        matches!(self, Change::SetPercent { .. } | Change::Resume { .. } | Change::Ramp(_))
    }

    /// Refused when the state file cannot be written. Everything else —
    /// rollbacks above all — applies anyway: protecting traffic wins over
    /// persisting.
    pub fn needs_persisting(&self) -> bool {
        self.towards_risk()
    }
}

/// What a committed change makes known: each is audited, logged and (where
/// an on-call human wants it) notified once, by `crate::control::effects`.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The desired percent was set (by hand, the config file).
    Percent {
        old: u8,
        new: u8,
    },
    /// The ramp's step set the desired percent (its event tells the rest).
    RampPercent {
        old: u8,
        new: u8,
    },
    /// A percent set by hand paused the running ramp.
    RampPausedByHand {
        step: usize,
        phase: Phase,
    },
    /// Something the ramp did (started, promoted, aborted, finished…).
    Ramp {
        event: String,
        step: usize,
        phase: Phase,
        percent: Option<u8>,
    },
    Activated {
        level: Level,
        reason: String,
        force: bool,
    },
    /// `--force` on an active level.
    Forced {
        level: Level,
        reason: String,
    },
    Resumed {
        level: Level,
    },
    /// Active L1/L3 levels stopped moving traffic (stable no longer runs on
    /// the schema), or started again.
    Blocked {
        levels: Vec<Level>,
        why: Option<String>,
    },
    Hook {
        status: HookStatus,
        detail: String,
    },
    /// Fleet mode: the store's state changed what this replica serves.
    FleetApplied {
        revision: i64,
        desired: u8,
        effective: u8,
        levels: Vec<Level>,
    },
}

/// Decide `change` by `actor` on `state` at `now` (RFC 3339): the next state
/// and its effects, or the refusal. A change that changes nothing has no
/// effects.
pub fn apply(state: &State, change: &Change, actor: &Actor, now: &str) -> Result<(State, Vec<Effect>), ControlError> {
    let mut effects = Vec::new();
    let next = match change {
        Change::SetPercent { percent } => {
            let mut next = set_percent(state, *percent)?;
            effects.push(Effect::Percent { old: state.desired_percent, new: next.desired_percent });
            // Anyone but the ramp itself pauses a running ramp: the operator took over.
            if *actor != Actor::Ramp {
                next.ramp = ramp::operator_took_over(&state.ramp).ramp;
                effects.extend(paused_by_hand(state, &next));
            }
            next
        }
        Change::ConfigPercent { percent } => {
            if state.config_percent == *percent {
                return Ok((state.clone(), effects));
            }
            let ramp = ramp::operator_took_over(&state.ramp).ramp;
            let next = State { desired_percent: *percent, config_percent: *percent, ramp, ..state.clone() };
            effects.push(Effect::Percent { old: state.desired_percent, new: *percent });
            effects.extend(paused_by_hand(state, &next));
            next
        }
        Change::Activate { level, reason, force, hook } => {
            let level = *level;
            if *force && state.rollbacks.get(&level).is_some_and(|a| !a.force) {
                let mut next = state.clone();
                if let Some(a) = next.rollbacks.get_mut(&level) {
                    a.force = true;
                }
                effects.push(Effect::Forced { level, reason: reason.clone() });
                next
            } else if state.rollbacks.contains_key(&level) {
                // The first activation stands, so the L3 hook does not run twice.
                return Ok((state.clone(), effects));
            } else {
                let hook_status = if *hook { HookStatus::Pending } else { HookStatus::None };
                let activation = Activation {
                    reason: reason.clone(),
                    actor: actor.to_string(),
                    since: now.to_string(),
                    hook: (level == Level::L3).then_some(hook_status),
                    hook_detail: None,
                    id: None,
                    replica: None,
                    force: *force,
                };
                let mut next = state.clone();
                next.rollbacks.insert(level, activation);
                effects.push(Effect::Activated { level, reason: reason.clone(), force: *force });
                next
            }
        }
        Change::Resume { level, confirm } => {
            let next = resume(state, *level, *confirm)?;
            effects.push(Effect::Resumed { level: *level });
            next
        }
        Change::Ramp(step) => {
            let outcome = decide_ramp(state, step)?;
            let next = apply_ramp(state, &outcome)?;
            if next == *state {
                return Ok((next, effects));
            }
            if outcome.set_percent.is_some() && next.desired_percent != state.desired_percent {
                effects.push(Effect::RampPercent { old: state.desired_percent, new: next.desired_percent });
            }
            if let Some(event) = outcome.event {
                let (step, phase) = (outcome.ramp.step + 1, outcome.ramp.phase);
                effects.push(Effect::Ramp { event, step, phase, percent: outcome.set_percent });
            }
            next
        }
        Change::Schema { before, now: stance, restarted, version, unsupported, was_unsupported } => {
            let next = state.with_schema(*before, *stance, *restarted, version.as_deref());
            if *was_unsupported != unsupported.is_some() {
                let levels = next.blocked(true);
                if !levels.is_empty() {
                    effects.push(Effect::Blocked { levels, why: unsupported.clone() });
                }
            }
            next
        }
        Change::Remote { remote, revision } => {
            let next = merge_remote(state, remote, *revision);
            if next.desired_percent != state.desired_percent || next.rollbacks != state.rollbacks {
                effects.push(Effect::FleetApplied {
                    revision: *revision,
                    desired: next.desired_percent,
                    effective: next.route().percent,
                    levels: next.rollbacks.keys().copied().collect(),
                });
            }
            next
        }
        Change::HookOutcome { status, detail } => {
            let mut next = state.clone();
            let Some(activation) = next.rollbacks.get_mut(&Level::L3) else { return Ok((next, effects)) };
            activation.hook = Some(status.clone());
            activation.hook_detail = Some(detail.clone());
            effects.push(Effect::Hook { status: status.clone(), detail: detail.clone() });
            next
        }
        Change::Requeue => State { outbox: state.rollbacks.keys().copied().collect(), ..state.clone() },
    };
    Ok((next, effects))
}

/// The ramp paused because the percent was set by hand.
fn paused_by_hand(before: &State, after: &State) -> Option<Effect> {
    (before.ramp.phase == Phase::Running && after.ramp.phase == Phase::Paused)
        .then_some(Effect::RampPausedByHand { step: after.ramp.step + 1, phase: after.ramp.phase })
}

/// What the ramp says on `state`: L1/L3 and L2 as the state has them.
fn decide_ramp(state: &State, step: &RampMove) -> Result<ramp::Outcome, ControlError> {
    let now = Conditions {
        quiet: step.quiet,
        gate_open: step.gate_open,
        rolled_back: state.rollbacks.contains_key(&Level::L1) || state.rollbacks.contains_key(&Level::L3),
        shedding: state.rollbacks.contains_key(&Level::L2),
    };
    Ok(match step.step {
        RampStep::Command(cmd) => ramp::command(&state.ramp, &step.plan, cmd, now)?,
        RampStep::Tick { elapsed, served } => ramp::tick(&state.ramp, &step.plan, elapsed, served, now),
    })
}

/// `PUT /percent`: refused while L3 is active, or on a raise while L2 is.
fn set_percent(state: &State, percent: i64) -> Result<State, ControlError> {
    let percent = u8::try_from(percent).ok().filter(|p| *p <= 100).ok_or(ControlError::PercentOutOfRange(percent))?;
    if state.rollbacks.contains_key(&Level::L3) {
        return Err(ControlError::LockedByL3);
    }
    if state.rollbacks.contains_key(&Level::L2) && percent > state.desired_percent {
        return Err(ControlError::FrozenByL2(state.desired_percent));
    }
    Ok(State { desired_percent: percent, ..state.clone() })
}

/// A ramp outcome applied: its state, and its percent when it sets one.
/// A percent the rules forbid is refused, except the abort's 0 while L3
/// already keeps everyone off `new`.
fn apply_ramp(state: &State, outcome: &ramp::Outcome) -> Result<State, ControlError> {
    let mut next = State { ramp: outcome.ramp.clone(), ..state.clone() };
    if let Some(percent) = outcome.set_percent {
        match set_percent(&next, percent.into()) {
            Ok(s) => next = s,
            Err(ControlError::LockedByL3) if percent == 0 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(next)
}

/// Clear `level`; L3 needs `confirm`. An unpublished activation of it
/// leaves the outbox too.
fn resume(state: &State, level: Level, confirm: bool) -> Result<State, ControlError> {
    if level == Level::L3 && !confirm {
        return Err(ControlError::ConfirmRequired);
    }
    if !state.rollbacks.contains_key(&level) {
        return Err(ControlError::NotActive(level));
    }
    let mut next = state.clone();
    next.rollbacks.remove(&level);
    next.outbox.retain(|l| *l != level);
    Ok(next)
}

/// The store's state replaces the local shared state, except that a
/// level still in the outbox stays active (safety first: it is
/// published later, never dropped). An outbox level the store already
/// has is done: the store's activation is the one.
fn merge_remote(state: &State, remote: &Remote, revision: i64) -> State {
    let mut next = state.clone();
    if let Some(p) = remote.desired_percent {
        next.desired_percent = p;
    }
    next.rollbacks = remote.rollbacks.clone();
    if let Some(ramp) = &remote.ramp {
        next.ramp = ramp.clone();
    }
    // Published when the store has it, and has it forced if ours is.
    next.outbox.retain(|l| match (remote.rollbacks.get(l), state.rollbacks.get(l)) {
        (None, _) => true,
        (Some(theirs), Some(ours)) => ours.force && !theirs.force,
        (Some(_), None) => false,
    });
    for level in &next.outbox {
        if let Some(local) = state.rollbacks.get(level) {
            next.rollbacks.insert(*level, local.clone());
        }
    }
    // The hook's outcome is recorded locally first; the same activation
    // from the store without it does not erase it.
    for (level, theirs) in next.rollbacks.iter_mut() {
        let Some(ours) = state.rollbacks.get(level) else { continue };
        let terminal = matches!(ours.hook, Some(HookStatus::Succeeded | HookStatus::Failed));
        // Ours before it was published has no id yet: the same
        // decision is recognised by who decided it and when.
        let same = match ours.id {
            Some(id) => theirs.id == Some(id),
            None => ours.since == theirs.since && ours.actor == theirs.actor && ours.replica == theirs.replica,
        };
        if same && terminal && theirs.hook == Some(HookStatus::Pending) {
            theirs.hook = ours.hook.clone();
            theirs.hook_detail = ours.hook_detail.clone();
        }
    }
    next.revision = revision;
    next
}

#[cfg(test)]
mod tests;
