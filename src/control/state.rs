//! Run-time control: the desired percent and the active rollback levels.
//!
//! The request path reads one packed atomic ([`Control::route`]); every
//! change (admin API, rule engine, config reload) goes through the methods
//! here, which take a mutex, write the state file atomically, append to the
//! audit log and only then publish the new gate. A restart reads the state
//! file back, so a rollback is never forgotten.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{Level, StateConfig};
use crate::control::release::ramp::{Phase, Ramp};
use crate::control::release::schema::Stance;
use crate::metrics::Metrics;

/// Who made a change, as written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Config,
    Rule(String),
    /// The progressive ramp promoting, aborting or finishing by itself.
    Ramp,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Config => f.write_str("config"),
            Actor::Rule(name) => write!(f, "rule:{name}"),
            Actor::Ramp => f.write_str("ramp"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookStatus {
    /// Not run yet (or interrupted by a restart: it runs again, so hooks
    /// must be idempotent).
    Pending,
    Succeeded,
    Failed,
    /// No hook is configured.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub reason: String,
    pub actor: String,
    /// RFC 3339, UTC.
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_detail: Option<String>,
    /// Fleet mode: the activation id (the store key's create revision);
    /// `None` while the activation waits in the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Fleet mode: the replica that decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// `ctl rollback L1 --force`: sends users to stable even past the point
    /// of no return (the schema is one stable does not support).
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub desired_percent: u8,
    /// `split.percent` as last seen in the config file; a different value at
    /// the next load or reload means the file changed and wins.
    pub config_percent: u8,
    #[serde(default)]
    pub rollbacks: BTreeMap<Level, Activation>,
    /// Fleet mode: the store revision this state was last applied from
    /// (absent in state files written without `[fleet]`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: i64,
    /// Fleet mode: levels activated here and not yet published to the
    /// store. Persisted, so a restart during an outage still publishes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Level>,
    /// The progressive ramp (`[ramp]`): step, hold baked so far, requests.
    #[serde(default, skip_serializing_if = "Ramp::is_idle")]
    pub ramp: Ramp,
    /// The split held while no side supports the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_hold: Option<Hold>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl State {
    pub fn highest_level(&self) -> Option<Level> {
        self.rollbacks.keys().max().copied()
    }

    /// The route while the schema is one stable runs on.
    pub(crate) fn route(&self) -> Route {
        self.route_under(false)
    }

    /// The L1/L3 levels that are active but cannot move traffic: the schema
    /// is past what stable runs on (the point of no return) and the operator
    /// did not force them.
    pub fn blocked(&self, past_stable: bool) -> Vec<Level> {
        self.to_stable(past_stable).filter(|(_, moves)| !moves).map(|(level, _)| level).collect()
    }

    /// The active L1/L3 levels, each with whether it sends users to stable:
    /// past the point of no return only when forced.
    fn to_stable(&self, past_stable: bool) -> impl Iterator<Item = (Level, bool)> + '_ {
        self.rollbacks
            .iter()
            .filter(|(level, _)| matches!(level, Level::L1 | Level::L3))
            .map(move |(level, a)| (*level, !past_stable || a.force))
    }

    /// `past_stable`: stable does not support the schema; an L1/L3 then
    /// sends users to stable only when forced.
    pub(crate) fn route_under(&self, past_stable: bool) -> Route {
        let rolled_back = self.to_stable(past_stable).any(|(_, moves)| moves);
        Route {
            percent: if rolled_back { 0 } else { self.desired_percent },
            rolled_back,
            shedding: self.rollbacks.contains_key(&Level::L2),
            gate_closed: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("L3 (data inconsistency) is active: the percent is locked until L3 is resumed with confirmation")]
    LockedByL3,
    #[error("L2 (database load) is active: the percent cannot be raised above {0} until L2 clears")]
    FrozenByL2(u8),
    #[error("percent must be between 0 and 100, got {0}")]
    PercentOutOfRange(i64),
    #[error("resuming L3 needs confirmation (\"confirm\": true / --confirm): it re-opens traffic to the new schema")]
    ConfirmRequired,
    #[error("{0} is not active")]
    NotActive(Level),
    #[error("cannot write state file {path}: {source}")]
    Persist { path: String, source: std::io::Error },
    #[error("{0}")]
    Ramp(#[from] crate::control::release::ramp::RampError),
    #[error("no [ramp] is configured")]
    NoRamp,
    /// Fleet mode: a change towards risk needs the store (docs/src/fleet.md, When something fails).
    #[error("fleet store unreachable: {0}; rollbacks still apply, changes towards risk wait for the store")]
    StoreUnreachable(String),
}

#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}; fix or move the file away (grayshift never overwrites it silently)")]
pub struct StateFileError {
    pub path: String,
    pub message: String,
}

pub struct Control {
    gate: AtomicU32,
    /// Which sides run on the schema; only changed under the state lock,
    /// and folded into `gate` whenever it is published.
    stance: Mutex<Stance>,
    /// Stable does not support the schema (the sentence says why); only
    /// changed under the state lock, with `stance`.
    past_stable: Mutex<Option<String>>,
    state: Mutex<State>,
    paths: StateConfig,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// Set in fleet mode: the state file becomes the replica's cache and
    /// rollbacks also go to the outbox.
    fleet: Option<FleetLocal>,
}

/// What `Control` needs to know of the fleet: who we are, and whom to wake
/// when the outbox or the config's percent has something to publish.
pub struct FleetLocal {
    pub replica: String,
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// A `split.percent` change in the config file, for the store.
    pub config_percent: Mutex<Option<u8>>,
}

impl Control {
    /// Loads the state file (or starts fresh when there is none) and
    /// reconciles it with the config's `split.percent`.
    pub fn open(
        paths: &StateConfig,
        config_percent: u8,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Result<Control, StateFileError> {
        Control::open_with(paths, config_percent, events, None)
    }

    /// [`Control::open`], in fleet mode when `fleet` is set.
    pub fn open_with(
        paths: &StateConfig,
        config_percent: u8,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
        fleet: Option<FleetLocal>,
    ) -> Result<Control, StateFileError> {
        let state = match read_state(&paths.file)? {
            Some(state) => state,
            // Fleet mode with no cache: percent 0 until the store says
            // otherwise (docs/src/fleet.md, When something fails); the config's percent seeds a new store.
            None if fleet.is_some() => State { config_percent, ..State::default() },
            None => State { desired_percent: config_percent, config_percent, ..State::default() },
        };
        // Held before the restart: still held until the first read says
        // otherwise (never the fail-safe 0 % of a start).
        let (stance, past_stable) = match &state.schema_hold {
            Some(hold) => {
                (Stance::Neither, Some(format!("no side supports schema {} (held before the restart)", hold.version)))
            }
            None => (Stance::Both, None),
        };
        let control = Control {
            gate: AtomicU32::new(state.route_for(stance).pack()),
            stance: Mutex::new(stance),
            past_stable: Mutex::new(past_stable),
            state: Mutex::new(state),
            paths: paths.clone(),
            events,
            fleet,
        };
        control.config_percent_seen(config_percent);
        Ok(control)
    }

    /// The route a restarted grayshift would start with, without writing
    /// anything (for `grayshift bucket`).
    pub fn open_read_only(
        paths: &StateConfig,
        config_percent: u8,
        _events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Result<Route, StateFileError> {
        let mut state = read_state(&paths.file)?.unwrap_or_default();
        // A fleet replica's cache carries the store's percent: keep it.
        if read_state(&paths.file)?.is_none() || (state.revision == 0 && state.config_percent != config_percent) {
            state.desired_percent = config_percent;
        }
        Ok(state.route())
    }

    /// One atomic load: the request path's view.
    #[inline]
    pub fn route(&self) -> Route {
        Route::unpack(self.gate.load(Ordering::Acquire))
    }

    pub fn state(&self) -> State {
        self.lock().clone()
    }

    pub fn audit_path(&self) -> &Path {
        &self.paths.audit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `next`, then publish it. On a write failure the in-memory
    /// state is left unchanged, except that `force` (rollbacks) applies
    /// anyway: protecting traffic wins over persisting.
    fn commit(&self, guard: &mut State, next: State, force: bool) -> Result<(), ControlError> {
        let written = write_state(&self.paths.file, &next);
        if let Err(e) = &written {
            tracing::error!(file = %self.paths.file.display(), error = %e, "cannot write state file");
            if !force {
                return Err(ControlError::Persist {
                    path: self.paths.file.display().to_string(),
                    source: written.unwrap_err(),
                });
            }
        }
        *guard = next;
        self.publish(guard);
        written.map_err(|source| ControlError::Persist { path: self.paths.file.display().to_string(), source })
    }

    /// Store `state`'s route under the schema's stance (called with the
    /// state lock held, so the two never race).
    fn publish(&self, state: &State) {
        self.gate.store(state.route_for(self.stance()).pack(), Ordering::Release);
    }

    /// Which sides run on the schema, as the gate last knew it.
    pub fn stance(&self) -> Stance {
        *self.stance.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `[schema]` is configured and nothing was read yet: the gate starts
    /// closed (fail safe), unless a split is held from before a restart.
    pub fn schema_unread(&self) {
        let guard = self.lock();
        let mut stance = self.stance.lock().unwrap_or_else(|e| e.into_inner());
        if *stance != Stance::Neither {
            *stance = Stance::Unread;
        }
        drop(stance);
        self.publish(&guard);
    }

    /// Open or close the schema gate, stable's support as last known;
    /// returns whether the gate changed.
    pub fn set_schema_gate(&self, open: bool) -> bool {
        let before = self.stance();
        let now = self.set_schema(open, self.past_stable(), "");
        before.new_ready() != now.new_ready()
    }

    /// Stable's support changes, the gate as last known.
    pub fn set_stable_support(&self, unsupported: Option<String>) {
        self.set_schema(self.stance().new_ready(), unsupported, "");
    }

    /// The gate's reading of `version`, in one step: whether `new` runs on
    /// it, and `Some(why)` when stable does not. The route follows
    /// [`State::route_for`]; entering "no side supports it" holds the split
    /// the proxy used (persisted). Active L1/L3 levels stop (or start)
    /// moving traffic at once; each change that affects an active level is
    /// audited and notified. Returns the new stance.
    pub fn set_schema(&self, new_ready: bool, unsupported: Option<String>, version: &str) -> Stance {
        let mut guard = self.lock();
        let before = self.stance();
        let now = Stance::of(new_ready, unsupported.is_none());
        let was = self.past_stable().is_some();
        *self.past_stable.lock().unwrap_or_else(|e| e.into_inner()) = unsupported.clone();
        *self.stance.lock().unwrap_or_else(|e| e.into_inner()) = now;
        let next = guard.with_schema(before, now, self.route(), version);
        if next != *guard {
            // Holding protects traffic: it applies even if the file cannot be written.
            let _ = self.commit(&mut guard, next, true);
        } else {
            self.publish(&guard);
        }
        if was == unsupported.is_some() {
            return now;
        }
        let affected = guard.blocked(true);
        drop(guard);
        if affected.is_empty() {
            return now;
        }
        let (event, text) = match &unsupported {
            Some(why) => (
                "rollback_blocked",
                format!("rollback {affected:?} BLOCKED, users stay where they are: {why}"),
            ),
            None => (
                "rollback_unblocked",
                format!("rollback {affected:?} takes effect now: the schema is back within stable_supports, everyone goes to stable"),
            ),
        };
        tracing::warn!(levels = ?affected, event, "{text}");
        self.audit(&Actor::Config, event, json!({ "levels": affected, "why": unsupported }));
        self.notice(event, text, &Actor::Config, json!({ "levels": affected }));
        now
    }

    /// Why stable cannot run on the schema, while it cannot.
    pub fn past_stable(&self) -> Option<String> {
        self.past_stable.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The active L1/L3 levels that do not move traffic, and why.
    pub fn blocked(&self) -> (Vec<Level>, Option<String>) {
        let why = self.past_stable();
        (self.lock().blocked(why.is_some()), why)
    }

    /// Why `level` is active but does not move traffic, if it is blocked.
    pub fn blocked_reason(&self, level: Level) -> Option<String> {
        let (levels, why) = self.blocked();
        levels.contains(&level).then_some(why).flatten()
    }

    /// Tell `[[notify]]` (through the event consumer).
    pub fn notice(&self, event: &'static str, text: String, actor: &Actor, detail: serde_json::Value) {
        let _ = self.events.send(Event::Notice(Notice { event, text, actor: actor.to_string(), detail }));
    }

    pub fn audit(&self, actor: &Actor, action: &str, detail: serde_json::Value) {
        let mut entry = json!({ "time": now_rfc3339(), "actor": actor.to_string(), "action": action });
        if let (Some(obj), serde_json::Value::Object(extra)) = (entry.as_object_mut(), detail) {
            obj.extend(extra);
        }
        if let Err(e) = append_line(&self.paths.audit, &entry.to_string()) {
            tracing::error!(file = %self.paths.audit.display(), error = %e, "cannot append to audit log");
        }
    }

    /// The config file's `split.percent` as loaded now; a changed value is a
    /// new desired percent (last writer wins against the admin API).
    pub fn config_percent_seen(&self, percent: u8) {
        let mut guard = self.lock();
        if guard.config_percent == percent {
            return;
        }
        if let Some(fleet) = &self.fleet {
            // A raise is a change towards risk: it goes to the store first
            // (the fleet task publishes it), never straight to the gate.
            let next = State { config_percent: percent, ..guard.clone() };
            let _ = self.commit(&mut guard, next, true);
            *fleet.config_percent.lock().unwrap_or_else(|e| e.into_inner()) = Some(percent);
            fleet.wake.notify_one();
            return;
        }
        let (old, old_ramp) = (guard.desired_percent, guard.ramp.clone());
        let took_over = crate::control::release::ramp::operator_took_over(&guard.ramp);
        let next = State { desired_percent: percent, config_percent: percent, ramp: took_over.ramp, ..guard.clone() };
        let _ = self.commit(&mut guard, next, true);
        drop(guard);
        self.audit(&Actor::Config, "percent", json!({ "old": old, "new": percent }));
        self.ramp_paused_by_hand(&old_ramp, &Actor::Config);
        tracing::info!(old, new = percent, actor = "config", "desired percent changed");
    }

    /// `PUT /percent`: 409-style refusals while L3 is active, or on a raise
    /// while L2 is active.
    pub fn set_percent(&self, percent: i64, actor: &Actor) -> Result<u8, ControlError> {
        let mut guard = self.lock();
        let (old, old_ramp) = (guard.desired_percent, guard.ramp.clone());
        let next = guard.set_percent_by(percent, actor)?;
        let percent = next.desired_percent;
        self.commit(&mut guard, next, false)?;
        drop(guard);
        self.audit(actor, "percent", json!({ "old": old, "new": percent }));
        tracing::info!(old, new = percent, %actor, "desired percent changed");
        self.ramp_paused_by_hand(&old_ramp, actor);
        Ok(old)
    }

    /// Activate `level`. Returns false when it was already active (the
    /// first reason is kept; the L3 hook does not run twice).
    pub fn activate(
        &self,
        level: Level,
        reason: &str,
        actor: &Actor,
        hook_configured: bool,
    ) -> Result<bool, ControlError> {
        self.activate_with(level, reason, actor, hook_configured, false)
    }

    /// [`Control::activate`]; `force` sends users to stable even past the
    /// point of no return, and forces an already active level too.
    pub fn activate_with(
        &self,
        level: Level,
        reason: &str,
        actor: &Actor,
        hook_configured: bool,
        force: bool,
    ) -> Result<bool, ControlError> {
        let mut guard = self.lock();
        if force && guard.rollbacks.get(&level).is_some_and(|a| !a.force) {
            let mut next = guard.clone();
            if let Some(a) = next.rollbacks.get_mut(&level) {
                a.force = true;
            }
            if self.fleet.is_some() && !next.outbox.contains(&level) {
                next.outbox.push(level);
            }
            let result = self.commit(&mut guard, next, true);
            drop(guard);
            if let Some(fleet) = &self.fleet {
                fleet.wake.notify_one();
            }
            self.audit(actor, "rollback forced", json!({ "level": level, "reason": reason }));
            tracing::warn!(%level, %actor, "rollback forced: users go to stable although it does not support the schema");
            return result.map(|_| true);
        }
        let hook_status = if hook_configured { HookStatus::Pending } else { HookStatus::None };
        let hook = (level == Level::L3).then_some(hook_status);
        let activation = Activation {
            reason: reason.to_string(),
            actor: actor.to_string(),
            since: now_rfc3339(),
            hook,
            hook_detail: None,
            id: None,
            replica: self.fleet.as_ref().map(|f| f.replica.clone()),
            force,
        };
        let Some(mut next) = guard.activate(level, activation) else { return Ok(false) };
        if self.fleet.is_some() {
            next.outbox.push(level);
        }
        let result = self.commit(&mut guard, next, true);
        drop(guard);
        let blocked = self.blocked_reason(level);
        if let Some(fleet) = &self.fleet {
            fleet.wake.notify_one();
        }
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
        self.send_level(level, true, reason, actor, blocked);
        result.map(|_| true)
    }

    /// Clear `level`; L3 needs `confirm`.
    pub fn resume(&self, level: Level, confirm: bool, actor: &Actor) -> Result<(), ControlError> {
        let mut guard = self.lock();
        let next = guard.resume(level, confirm)?;
        self.commit(&mut guard, next, false)?;
        drop(guard);
        self.audit(actor, "resume", json!({ "level": level, "old": "active", "new": "inactive" }));
        tracing::warn!(%level, %actor, "rollback level resumed");
        self.send_level(level, false, "resumed", actor, None);
        Ok(())
    }

    fn send_level(&self, level: Level, active: bool, reason: &str, actor: &Actor, blocked: Option<String>) {
        let event = LevelEvent { level, active, reason: reason.into(), actor: actor.to_string(), blocked };
        let _ = self.events.send(Event::Level(event));
    }

    /// Fleet mode: the store's state (read at `revision`) replaces the local
    /// shared state, merged with the unpublished outbox. Returns whether the
    /// shared part changed. Remote changes send no level event: the replica
    /// that made a change notifies (and runs the hook), not all of them.
    pub fn apply_remote(&self, remote: &crate::control::change::Remote, revision: i64) -> bool {
        let mut guard = self.lock();
        let next = guard.merge_remote(remote, revision);
        if next == *guard {
            return false;
        }
        let changed = next.desired_percent != guard.desired_percent || next.rollbacks != guard.rollbacks;
        if changed {
            tracing::info!(
                revision,
                desired = next.desired_percent,
                effective = next.route().percent,
                levels = ?next.rollbacks.keys().collect::<Vec<_>>(),
                "fleet state applied"
            );
        }
        // The store is the truth: applied even if the cache cannot be written.
        let _ = self.commit(&mut guard, next, true);
        changed
    }

    /// Fleet mode, store reset: every active rollback goes back to the
    /// outbox, to be re-published (create-if-absent) — never dropped.
    pub fn requeue_rollbacks(&self) -> Vec<Level> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        next.outbox = next.rollbacks.keys().copied().collect();
        let levels = next.outbox.clone();
        let _ = self.commit(&mut guard, next, true);
        levels
    }

    /// A level change this replica made through the store: audit it and
    /// tell the notifier, as the file path's `resume` does.
    pub fn announce(&self, level: Level, active: bool, reason: &str, actor: &Actor) {
        let (old, new) = if active { ("inactive", "active") } else { ("active", "inactive") };
        let action = if active { "rollback" } else { "resume" };
        self.audit(actor, action, json!({ "level": level, "old": old, "new": new }));
        tracing::warn!(%level, %actor, active, "rollback level changed through the fleet store");
        let blocked = if active { self.blocked_reason(level) } else { None };
        self.send_level(level, active, reason, actor, blocked);
    }

    /// Fleet mode: the config file's percent waiting to go to the store.
    pub fn take_config_percent(&self) -> Option<u8> {
        self.fleet.as_ref().and_then(|f| f.config_percent.lock().unwrap_or_else(|e| e.into_inner()).take())
    }

    /// Fleet mode: the config's percent did not reach the store; keep it
    /// pending (unless a newer one is) for the next time it is reachable.
    pub fn retry_config_percent(&self, percent: u8) {
        if let Some(fleet) = &self.fleet {
            fleet.config_percent.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(percent);
        }
    }

    /// Fleet mode: this replica's name.
    pub fn replica(&self) -> Option<&str> {
        self.fleet.as_ref().map(|f| f.replica.as_str())
    }

    /// Record the L3 hook's outcome.
    pub fn set_hook_status(&self, status: HookStatus, detail: &str) {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let Some(activation) = next.rollbacks.get_mut(&Level::L3) else {
            return;
        };
        activation.hook = Some(status.clone());
        activation.hook_detail = Some(detail.to_string());
        let _ = self.commit(&mut guard, next, true);
        drop(guard);
        self.audit(&Actor::Rule("hook".into()), "hook", json!({ "level": Level::L3, "new": status, "detail": detail }));
    }

    /// Keep the percent gauges and the level gauge in line with the state.
    pub fn export(&self, metrics: &Metrics) {
        let state = self.state();
        metrics.percent_desired.set(state.desired_percent as i64);
        metrics.percent_effective.set(self.route().percent as i64);
        metrics.rollback_level.set(state.highest_level().map_or(0, |l| l.number() as i64));
        metrics.rollback_blocked.set(i64::from(!state.blocked(self.past_stable().is_some()).is_empty()));
        metrics.ramp_step.set(if state.ramp.phase == Phase::Idle { 0 } else { state.ramp.step as i64 + 1 });
    }
}

mod events;
mod file;
mod ramp;
mod route;
mod schema;
#[cfg(test)]
mod tests;

pub use events::{Event, LevelEvent, Notice};
use file::{append_line, read_state, write_state};
pub use file::{now_rfc3339, read_audit};
pub use route::Route;
pub use schema::Hold;
