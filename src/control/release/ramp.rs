//! The progressive ramp's decisions: bake at each step, then promote by
//! itself. Pure: the caller passes the time that went by, the requests `new`
//! served meanwhile and what the rules and the schema gate say; this module
//! answers with the next ramp state, the percent to set and what to audit.
//!
//! Semantics, in one place:
//! - A running ramp promotes to the next step when the step's hold has
//!   passed **and** `new` served `min_requests` in the step **and** no rule
//!   is firing or pending **and** the schema gate is open. Reaching the last
//!   step ends it (`done`).
//! - L2 holds it: the hold clock stops and nothing is promoted until L2
//!   clears; then it goes on by itself. An L1 or L3 aborts it (whether
//!   running or paused); resuming the rollback does not restart it.
//! - A manual percent change while it runs pauses it: the operator took over.
//! - `pause` stops the clock; `resume` restarts it. `promote` moves to the
//!   next step at once (skipping what is left of the hold and
//!   `min_requests`). `abort` ends it and sends everyone to stable (percent
//!   0), as an aborted canary does in Argo Rollouts.
//! - Changes towards risk (`start`, `resume`, `promote`) are refused while a
//!   rollback is active or L2 freezes the percent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::config::{Plan, PlanError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Idle,
    Running,
    Paused,
    Aborted,
    Done,
}

/// Where the ramp stands; kept in the state (file or fleet store), so a
/// restart continues with the hold already baked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ramp {
    pub phase: Phase,
    /// Index into `Plan::steps`.
    pub step: usize,
    /// How long the current step has baked (the clock stops while paused or
    /// held by L2).
    #[serde(with = "millis")]
    pub held: Duration,
    /// Requests `new` served in the current step.
    pub requests: u64,
}

impl Ramp {
    /// Never started: nothing to persist or show.
    pub fn is_idle(&self) -> bool {
        *self == Ramp::default()
    }
}

/// What the rest of grayshift says right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// No rule is firing or pending.
    pub quiet: bool,
    pub gate_open: bool,
    /// L1 or L3 is active.
    pub rolled_back: bool,
    /// L2 is active.
    pub shedding: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Pause,
    Resume,
    Promote,
    Abort,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "start" => Command::Start,
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "promote" => Command::Promote,
            "abort" => Command::Abort,
            _ => return None,
        })
    }
}

/// The next state, the desired percent to set (actor `ramp`) and the
/// sentence to audit and notify, when something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ramp: Ramp,
    pub set_percent: Option<u8>,
    pub event: Option<String>,
}

impl Outcome {
    fn quiet(ramp: Ramp) -> Outcome {
        Outcome { ramp, set_percent: None, event: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RampError {
    #[error("the ramp is {0:?}: {1}")]
    WrongPhase(Phase, &'static str),
    #[error("a rollback (L1/L3) is active: resume it before moving the ramp towards new")]
    RolledBack,
    #[error("L2 (database load) is active: the percent cannot be raised until it clears")]
    Frozen,
}

/// One evaluation: `elapsed` since the last one, `served` requests of `new`
/// meanwhile.
pub fn tick(ramp: &Ramp, plan: &Plan, elapsed: Duration, served: u64, now: Conditions) -> Outcome {
    let mut next = ramp.clone();
    match ramp.phase {
        Phase::Running | Phase::Paused if now.rolled_back => {
            next.phase = Phase::Aborted;
            return Outcome {
                ramp: next,
                set_percent: None,
                event: Some(format!(
                    "ramp aborted at step {} ({}%): a rollback is active",
                    ramp.step + 1,
                    plan.steps.get(ramp.step).copied().unwrap_or(100)
                )),
            };
        }
        Phase::Running => {}
        _ => return Outcome::quiet(next),
    }
    if ramp.step >= plan.last() {
        next.phase = Phase::Done;
        return Outcome { ramp: next, set_percent: None, event: Some("ramp done".into()) };
    }
    if now.shedding {
        return Outcome::quiet(next);
    }
    next.held = ramp.held.saturating_add(elapsed);
    next.requests = ramp.requests.saturating_add(served);
    let baked = next.held >= plan.holds[ramp.step] && next.requests >= plan.min_requests;
    if baked && now.quiet && now.gate_open {
        let reason = format!(
            "held {} with {} requests on new",
            humantime::format_duration(plan.holds[ramp.step]),
            next.requests
        );
        return advance(&next, plan, &reason);
    }
    Outcome::quiet(next)
}

/// An operator's command (`ctl ramp …`, `POST /ramp`).
pub fn command(ramp: &Ramp, plan: &Plan, cmd: Command, now: Conditions) -> Result<Outcome, RampError> {
    let towards_risk = matches!(cmd, Command::Start | Command::Resume | Command::Promote);
    if towards_risk && now.rolled_back {
        return Err(RampError::RolledBack);
    }
    if towards_risk && now.shedding {
        return Err(RampError::Frozen);
    }
    let mut next = ramp.clone();
    let outcome = match (cmd, ramp.phase) {
        (Command::Start, Phase::Idle | Phase::Aborted | Phase::Done) => {
            next = Ramp { phase: Phase::Running, step: 0, held: Duration::ZERO, requests: 0 };
            if plan.last() == 0 {
                next.phase = Phase::Done;
            }
            let percent = plan.steps[0];
            Outcome {
                ramp: next,
                set_percent: Some(percent),
                event: Some(format!("ramp started at step 1 ({percent}%)")),
            }
        }
        (Command::Start, phase) => return Err(RampError::WrongPhase(phase, "it is already started")),
        (Command::Pause, Phase::Running) => {
            next.phase = Phase::Paused;
            Outcome { ramp: next, set_percent: None, event: Some(format!("ramp paused at step {}", ramp.step + 1)) }
        }
        (Command::Pause, phase) => return Err(RampError::WrongPhase(phase, "only a running ramp pauses")),
        (Command::Resume, Phase::Paused) => {
            next.phase = Phase::Running;
            Outcome { ramp: next, set_percent: None, event: Some(format!("ramp resumed at step {}", ramp.step + 1)) }
        }
        (Command::Resume, phase) => return Err(RampError::WrongPhase(phase, "only a paused ramp resumes")),
        (Command::Promote, Phase::Running | Phase::Paused) if ramp.step < plan.last() => {
            advance(ramp, plan, "promoted by hand")
        }
        (Command::Promote, phase) => return Err(RampError::WrongPhase(phase, "nothing to promote")),
        (Command::Abort, Phase::Running | Phase::Paused) => {
            next.phase = Phase::Aborted;
            Outcome {
                ramp: next,
                set_percent: Some(0),
                event: Some("ramp aborted by hand: everyone back on stable".into()),
            }
        }
        (Command::Abort, phase) => return Err(RampError::WrongPhase(phase, "only a started ramp aborts")),
    };
    Ok(outcome)
}

/// A percent set by hand (admin API, config file) while the ramp runs.
pub fn operator_took_over(ramp: &Ramp) -> Outcome {
    if ramp.phase != Phase::Running {
        return Outcome::quiet(ramp.clone());
    }
    let mut next = ramp.clone();
    next.phase = Phase::Paused;
    Outcome { ramp: next, set_percent: None, event: Some("ramp paused: the percent was set by hand".into()) }
}

/// Seconds of hold left at the current step (`/status`).
pub fn hold_left(ramp: &Ramp, plan: &Plan) -> Option<Duration> {
    plan.holds.get(ramp.step).map(|h| h.saturating_sub(ramp.held))
}

fn advance(ramp: &Ramp, plan: &Plan, reason: &str) -> Outcome {
    let step = ramp.step + 1;
    let phase = if step == plan.last() { Phase::Done } else { ramp.phase };
    let percent = plan.steps[step];
    Outcome {
        ramp: Ramp { phase, step, held: Duration::ZERO, requests: 0 },
        set_percent: Some(percent),
        event: Some(format!("ramp promoted to step {} ({percent}%): {reason}", step + 1)),
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests;
