//! The ramp's task: every `rollback.interval` it measures the time that went
//! by and the requests `new` served, asks [`ramp::tick`] what to do and
//! applies the answer — through the state file, or in fleet mode through
//! the store, where only the holder of `locks/ramp` (under its member lease,
//! as for the L3 hook) advances the ramp and every replica follows it.
//! Operators' commands (`POST /ramp`) go through [`command`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ramp::{self, Command, Conditions, Outcome, Phase, Plan};
use crate::config::{Level, PoolName};
use crate::control::state::{Actor, ControlError, State};
use crate::Shared;

/// What the rest of grayshift says, for the ramp's decisions.
fn conditions(shared: &Shared, state: &State) -> Conditions {
    Conditions {
        quiet: shared.rules.quiet(),
        gate_open: shared.control.stance().new_ready(),
        rolled_back: state.rollbacks.contains_key(&Level::L1) || state.rollbacks.contains_key(&Level::L3),
        shedding: state.rollbacks.contains_key(&Level::L2),
    }
}

/// Requests `new` served so far: this replica's, or in fleet mode every
/// live member's (a member that left takes its count with it, so the
/// difference is floored at 0).
fn served_so_far(shared: &Shared) -> u64 {
    match &shared.fleet {
        Some(fleet) => fleet.member_counters(shared).iter().map(|(_, pools)| pools[1].requests()).sum(),
        None => shared.metrics.pool(PoolName::New).total_requests(),
    }
}

/// Decide on the current state and apply, wherever the state lives.
async fn change(
    shared: &Shared,
    actor: &Actor,
    decide: impl Fn(&State) -> Result<Outcome, ControlError>,
) -> Result<Outcome, ControlError> {
    match &shared.fleet {
        Some(fleet) => fleet.change_ramp(shared, actor, decide).await,
        None => shared.control.change_ramp(actor, decide),
    }
}

/// `POST /ramp`, `grayshift ctl ramp ACTION`.
pub async fn command(shared: &Shared, cmd: Command) -> Result<Outcome, ControlError> {
    let config = shared.config();
    let plan = &config.ramp.as_ref().ok_or(ControlError::NoRamp)?.plan;
    change(shared, &Actor::Admin, |state| Ok(ramp::command(&state.ramp, plan, cmd, conditions(shared, state))?)).await
}

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let (mut last, mut served_before) = (Instant::now(), served_so_far(&shared));
    loop {
        let interval = shared.config().rollback.interval;
        tokio::select! {
            _ = tokio::time::sleep_until(last + interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(last);
        let served_now = served_so_far(&shared);
        let served = served_now.saturating_sub(served_before);
        (last, served_before) = (now, served_now);
        if let Err(e) = once(&shared, elapsed, served).await {
            tracing::warn!(error = %e, "ramp: not applied this time");
        }
    }
}

async fn once(shared: &Shared, elapsed: Duration, served: u64) -> Result<(), ControlError> {
    let config = shared.config();
    let Some(ramp_config) = &config.ramp else { return Ok(()) };
    if let Some(fleet) = &shared.fleet {
        if !fleet.holds_ramp_lock().await {
            return Ok(());
        }
    }
    let plan = &ramp_config.plan;
    if ramp_config.auto_start && shared.control.state().ramp.is_idle() {
        let start = change(shared, &Actor::Config, |state| {
            Ok(ramp::command(&state.ramp, plan, Command::Start, conditions(shared, state))?)
        });
        if let Err(e) = start.await {
            tracing::info!(error = %e, "ramp.auto_start: not started yet");
        }
        return Ok(());
    }
    change(shared, &Actor::Ramp, |state| Ok(ramp::tick(&state.ramp, plan, elapsed, served, conditions(shared, state))))
        .await
        .map(drop)
}

/// `/status.ramp` (`null` without `[ramp]` and no ramp ever started).
pub fn status(shared: &Shared) -> Value {
    let config = shared.config();
    let ramp = shared.control.state().ramp;
    let Some(plan) = config.ramp.as_ref().map(|r| &r.plan) else {
        return if ramp.is_idle() { Value::Null } else { json!({ "state": ramp.phase, "step": ramp.step + 1 }) };
    };
    view(&ramp, plan)
}

fn view(ramp: &ramp::Ramp, plan: &Plan) -> Value {
    let hold_left = match ramp.phase {
        Phase::Running | Phase::Paused => ramp::hold_left(ramp, plan).map(|d| d.as_secs_f64().ceil() as u64),
        _ => None,
    };
    json!({
        "state": ramp.phase,
        "step": ramp.step + 1,
        "steps": plan.steps,
        "percent": plan.steps.get(ramp.step),
        "hold_left": hold_left,
        "hold": plan.holds.get(ramp.step).map(|h| h.as_secs()),
        "requests": ramp.requests,
        "min_requests": plan.min_requests,
    })
}
