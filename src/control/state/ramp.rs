//! The ramp's changes to the state: applied and persisted here in single
//! mode (the fleet applies them through the store), audited and notified.

use serde_json::json;

use super::{Actor, Control, ControlError, State};
use crate::control::release::ramp::{Outcome, Phase, Ramp};

impl Control {
    /// A percent set by hand paused a running ramp: say so.
    pub fn ramp_paused_by_hand(&self, before: &Ramp, actor: &Actor) {
        let after = self.lock().ramp.clone();
        if before.phase == Phase::Running && after.phase == Phase::Paused {
            let text = "ramp paused: the percent was set by hand (grayshift ctl ramp resume to go on)".to_string();
            self.audit(actor, "ramp", json!({ "event": text, "step": after.step + 1, "phase": after.phase }));
            self.notice("ramp", text, actor, json!({ "step": after.step + 1, "phase": after.phase }));
        }
    }

    /// Single mode: decide a ramp change on the current state (a tick or an
    /// operator's command) and apply it, persisted before it is published.
    pub fn change_ramp(
        &self,
        actor: &Actor,
        decide: impl FnOnce(&State) -> Result<Outcome, ControlError>,
    ) -> Result<Outcome, ControlError> {
        let mut guard = self.lock();
        let outcome = decide(&guard)?;
        let old = guard.desired_percent;
        let next = guard.apply_ramp(&outcome)?;
        if next == *guard {
            return Ok(outcome);
        }
        self.commit(&mut guard, next, false)?;
        drop(guard);
        self.ramp_applied(&outcome, old, actor);
        Ok(outcome)
    }

    /// A ramp change is in the state (here or through the store): audit the
    /// percent it set and its event, and tell `[[notify]]`.
    pub fn ramp_applied(&self, outcome: &Outcome, old_percent: u8, actor: &Actor) {
        let state = self.state();
        if outcome.set_percent.is_some() && state.desired_percent != old_percent {
            self.audit(actor, "percent", json!({ "old": old_percent, "new": state.desired_percent }));
        }
        let Some(event) = &outcome.event else { return };
        let detail =
            json!({ "step": outcome.ramp.step + 1, "phase": outcome.ramp.phase, "percent": outcome.set_percent });
        tracing::warn!(%actor, step = outcome.ramp.step + 1, phase = ?outcome.ramp.phase, "{event}");
        let mut entry = detail.clone();
        entry["event"] = json!(event);
        self.audit(actor, "ramp", entry);
        self.notice("ramp", event.clone(), actor, detail);
    }
}
