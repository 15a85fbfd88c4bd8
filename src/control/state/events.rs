//! What `Control` tells the notifier and the L3 hook runner.

use crate::config::Level;

/// A level change, for the notifier and the L3 hook runner.
#[derive(Debug, Clone)]
pub struct LevelEvent {
    pub level: Level,
    pub active: bool,
    pub reason: String,
    pub actor: String,
    /// Active but not moving traffic (the point of no return): why.
    pub blocked: Option<String>,
}

/// Something else an on-call human is told about (`[[notify]]`): a schema
/// gate change, a rollback blocked or unblocked, a ramp step.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `schema`, `rollback_blocked`, `rollback_unblocked`, `ramp`.
    pub event: &'static str,
    /// One sentence a human reads (Slack's `text`).
    pub text: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// What `Control` tells the notifier and the hook runner.
#[derive(Debug, Clone)]
pub enum Event {
    Level(LevelEvent),
    Notice(Notice),
}
