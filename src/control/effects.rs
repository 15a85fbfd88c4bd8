//! Effects written once: after whichever store committed a change, its
//! [`Effect`]s become the audit entry (`state.audit`), the log line and,
//! where an on-call human wants to know, the event for `[[notify]]` and the
//! L3 hook runner. The same sentences whether the state file or the fleet
//! store took the change.

use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Level;
use crate::control::change::Effect;
use crate::control::state::{now_rfc3339, Actor, Event, LevelEvent, Notice};

/// Where effects go: the audit log and the event consumer (notify, hook).
pub struct Effects {
    audit: PathBuf,
    events: UnboundedSender<Event>,
}

impl Effects {
    pub fn new(audit: PathBuf, events: UnboundedSender<Event>) -> Effects {
        Effects { audit, events }
    }

    pub fn audit_path(&self) -> &Path {
        &self.audit
    }

    /// Append one entry to the audit log (a failure is logged, never fatal).
    pub fn audit(&self, actor: &Actor, action: &str, detail: serde_json::Value) {
        let mut entry = json!({ "time": now_rfc3339(), "actor": actor.to_string(), "action": action });
        if let (Some(obj), serde_json::Value::Object(extra)) = (entry.as_object_mut(), detail) {
            obj.extend(extra);
        }
        if let Err(e) = super::state::append_line(&self.audit, &entry.to_string()) {
            tracing::error!(file = %self.audit.display(), error = %e, "cannot append to audit log");
        }
    }

    /// Tell `[[notify]]` (through the event consumer).
    pub fn notice(&self, event: &'static str, text: String, actor: &Actor, detail: serde_json::Value) {
        let _ = self.events.send(Event::Notice(Notice { event, text, actor: actor.to_string(), detail }));
    }

    fn level(&self, level: Level, active: bool, reason: &str, actor: &Actor, blocked: Option<String>) {
        let event = LevelEvent { level, active, reason: reason.into(), actor: actor.to_string(), blocked };
        let _ = self.events.send(Event::Level(event));
    }

    /// Write what `actor`'s change made known. `revision`: the fleet store's
    /// revision it was written at (`None`: the state file took it).
    /// `blocked` says why an active level moves no traffic, as of now.
    pub fn write(
        &self,
        effects: &[Effect],
        actor: &Actor,
        revision: Option<i64>,
        blocked: impl Fn(Level) -> Option<String>,
    ) {
        for effect in effects {
            self.write_one(effect, actor, revision, &blocked);
        }
    }

    fn write_one(
        &self,
        effect: &Effect,
        actor: &Actor,
        revision: Option<i64>,
        blocked: &dyn Fn(Level) -> Option<String>,
    ) {
        match effect {
            Effect::Percent { old, new } => match revision {
                Some(revision) => {
                    self.audit(actor, "percent", json!({ "old": old, "new": new, "revision": revision }));
                    tracing::info!(old, new, %actor, revision, "desired percent changed (fleet)");
                }
                None => {
                    self.audit(actor, "percent", json!({ "old": old, "new": new }));
                    tracing::info!(old, new, %actor, "desired percent changed");
                }
            },
            Effect::RampPercent { old, new } => self.audit(actor, "percent", json!({ "old": old, "new": new })),
            Effect::RampPausedByHand { step, phase } => {
                let text = "ramp paused: the percent was set by hand (grayshift ctl ramp resume to go on)".to_string();
                self.audit(actor, "ramp", json!({ "event": text, "step": step, "phase": phase }));
                self.notice("ramp", text, actor, json!({ "step": step, "phase": phase }));
            }
            Effect::Ramp { event, step, phase, percent } => {
                let detail = json!({ "step": step, "phase": phase, "percent": percent });
                tracing::warn!(%actor, step, ?phase, "{event}");
                let mut entry = detail.clone();
                entry["event"] = json!(event);
                self.audit(actor, "ramp", entry);
                self.notice("ramp", event.clone(), actor, detail);
            }
            Effect::Activated { level, reason, force } => {
                let blocked = blocked(*level);
                self.audit(
                    actor,
                    "rollback",
                    json!({ "level": level, "reason": reason, "old": "inactive", "new": "active", "force": force, "blocked": blocked }),
                );
                match &blocked {
                    Some(why) => {
                        tracing::error!(%level, reason, %actor, why, "rollback level activated but BLOCKED: traffic stays")
                    }
                    None => tracing::warn!(%level, reason, %actor, "rollback level activated"),
                }
                self.level(*level, true, reason, actor, blocked);
            }
            Effect::Forced { level, reason } => {
                self.audit(actor, "rollback forced", json!({ "level": level, "reason": reason }));
                tracing::warn!(%level, %actor, "rollback forced: users go to stable although it does not support the schema");
            }
            Effect::Resumed { level } => {
                self.audit(actor, "resume", json!({ "level": level, "old": "active", "new": "inactive" }));
                tracing::warn!(%level, %actor, "rollback level resumed");
                self.level(*level, false, "resumed", actor, None);
            }
            Effect::Blocked { levels, why } => {
                let (event, text) = match why {
                    Some(why) => (
                        "rollback_blocked",
                        format!("rollback {levels:?} BLOCKED, users stay where they are: {why}"),
                    ),
                    None => (
                        "rollback_unblocked",
                        format!("rollback {levels:?} takes effect now: the schema is back within stable_supports, everyone goes to stable"),
                    ),
                };
                tracing::warn!(?levels, event, "{text}");
                self.audit(actor, event, json!({ "levels": levels, "why": why }));
                self.notice(event, text, actor, json!({ "levels": levels }));
            }
            Effect::Hook { status, detail } => {
                self.audit(actor, "hook", json!({ "level": Level::L3, "new": status, "detail": detail }));
            }
            Effect::FleetApplied { revision, desired, effective, levels } => {
                tracing::info!(revision, desired, effective, ?levels, "fleet state applied");
            }
        }
    }
}
