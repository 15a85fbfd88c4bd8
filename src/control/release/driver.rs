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

use super::ramp::{self, Command, Phase, Plan};
use crate::control::change::{Change, RampMove, RampStep};
use crate::control::state::{Actor, ControlError};
use crate::Shared;

/// A ramp move on `plan`, decided on the state it applies to.
fn ramp_move(shared: &Shared, plan: &Plan, step: RampStep) -> Change {
    Change::Ramp(RampMove {
        plan: plan.clone(),
        step,
        quiet: shared.rules.quiet(),
        gate_open: shared.control.stance().new_ready(),
    })
}

/// `POST /ramp`, `grayshift ctl ramp ACTION`.
pub async fn command(shared: &Shared, cmd: Command) -> Result<(), ControlError> {
    let config = shared.config();
    let plan = &config.ramp.as_ref().ok_or(ControlError::NoRamp)?.plan;
    shared.control.submit(shared, ramp_move(shared, plan, RampStep::Command(cmd)), &Actor::Admin).await.map(drop)
}

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let (mut last, mut served_before) = (Instant::now(), shared.control.store().served_by_new(&shared));
    loop {
        let interval = shared.config().rollback.interval;
        tokio::select! {
            _ = tokio::time::sleep_until(last + interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(last);
        let served_now = shared.control.store().served_by_new(&shared);
        let served = served_now.since(&served_before);
        (last, served_before) = (now, served_now);
        if let Err(e) = once(&shared, elapsed, served).await {
            tracing::warn!(error = %e, "ramp: not applied this time");
        }
    }
}

async fn once(shared: &Shared, elapsed: Duration, served: u64) -> Result<(), ControlError> {
    let config = shared.config();
    let Some(ramp_config) = &config.ramp else { return Ok(()) };
    if !shared.control.store().advances_ramp().await {
        return Ok(());
    }
    let plan = &ramp_config.plan;
    if ramp_config.auto_start && shared.control.state().ramp.is_idle() {
        let start = ramp_move(shared, plan, RampStep::Command(Command::Start));
        if let Err(e) = shared.control.submit(shared, start, &Actor::Config).await {
            tracing::info!(error = %e, "ramp.auto_start: not started yet");
        }
        return Ok(());
    }
    let tick = ramp_move(shared, plan, RampStep::Tick { elapsed, served });
    shared.control.submit(shared, tick, &Actor::Ramp).await.map(drop)
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
