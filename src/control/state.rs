//! Run-time control: the desired percent and the active rollback levels.
//!
//! The request path reads one packed atomic ([`Control::route`]). Every
//! change (admin API, rule engine, config reload, ramp, schema gate, fleet
//! store) is a [`Change`] handed to [`Control::submit`]: decided by
//! [`change::apply`], kept by the [`Store`] (the state file is written
//! atomically before the gate is published) and then its effects are
//! written ([`Effects`]). A restart reads the state file back, so a
//! rollback is never forgotten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::{Level, StateConfig};
use crate::control::change::{self, Change, Effect};
use crate::control::effects::Effects;
use crate::control::release::ramp::{Phase, Ramp};
use crate::control::store::Store;
use crate::metrics::Metrics;
use crate::migration::Stance;
use crate::Shared;

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
    /// The schema gate's last verdict: a restart rebuilds from it the route
    /// served before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_verdict: Option<Verdict>,
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
    /// The route served before this process started, as the state file
    /// recorded it (`None`: no record); held if the first read finds a
    /// version no side supports.
    restarted: Option<Route>,
    /// The state file: the state, or in fleet mode this replica's cache.
    file: PathBuf,
    store: Store,
    effects: Effects,
}

/// A change that went in: the state it was decided on, what it made known
/// (already written), and the fleet store's revision when it went there.
#[derive(Debug)]
pub struct Applied {
    pub before: State,
    pub effects: Vec<Effect>,
    pub revision: Option<i64>,
}

impl Applied {
    /// Whether the change changed anything (an already active level, an
    /// unchanged config percent do not).
    pub fn changed(&self) -> bool {
        !self.effects.is_empty()
    }
}

impl Control {
    /// Loads the state file (or starts fresh when there is none) and
    /// reconciles it with the config's `split.percent`.
    pub fn open(
        paths: &StateConfig,
        config_percent: u8,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Result<Control, StateFileError> {
        Control::open_with(paths, config_percent, events, Store::File)
    }

    /// [`Control::open`] on `store`.
    pub fn open_with(
        paths: &StateConfig,
        config_percent: u8,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
        store: Store,
    ) -> Result<Control, StateFileError> {
        let state = match read_state(&paths.file)? {
            Some(state) => state,
            // Fleet mode with no cache: percent 0 until the store says
            // otherwise (docs/src/fleet.md, When something fails); the config's percent seeds a new store.
            None if store.fleet().is_some() => State { config_percent, ..State::default() },
            None => State { desired_percent: config_percent, config_percent, ..State::default() },
        };
        // The gate's last verdict stands until the first read: a split
        // held before the restart stays held (never the fail-safe 0 % of a
        // start), and stable's support is as last read.
        let stance = match (&state.schema_hold, &state.schema_verdict) {
            (Some(_), _) => Stance::Neither,
            (None, Some(verdict)) => verdict.stance(),
            (None, None) => Stance::Both,
        };
        let past_stable = match (stance, &state.schema_verdict) {
            (Stance::NewOnly | Stance::Neither, Some(verdict)) => {
                Some(format!("stable does not support schema {} (as last read before the restart)", verdict.version))
            }
            _ => None,
        };
        let control = Control {
            gate: AtomicU32::new(state.route_for(stance).pack()),
            stance: Mutex::new(stance),
            past_stable: Mutex::new(past_stable),
            restarted: state.route_served_before_restart(),
            state: Mutex::new(state),
            file: paths.file.clone(),
            store,
            effects: Effects::new(paths.audit.clone(), events),
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

    /// The highest active level, read under the lock without copying the
    /// whole state (the flags API asks on every evaluation).
    pub fn highest_level(&self) -> Option<Level> {
        self.lock().highest_level()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The audit log and the event consumer, for what is not a change of
    /// the state (a reload, the schema gate's verdict, a store reset).
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    pub fn audit_path(&self) -> &Path {
        self.effects.audit_path()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one way in for a run-time change: decided by
    /// [`change::apply`], taken by the store (in fleet mode a change towards
    /// risk goes to etcd first, see `crate::control::store`), then its
    /// effects are written once.
    pub async fn submit(&self, shared: &Shared, change: Change, actor: &Actor) -> Result<Applied, ControlError> {
        match self.store.remote_first(&change) {
            Some(fleet) => {
                let applied = fleet.submit(shared, &change, actor).await?;
                self.write_effects(&applied.effects, actor, applied.revision);
                Ok(applied)
            }
            None => self.submit_here(&change, actor),
        }
    }

    /// [`Control::submit`] for a change that applies here first (anything
    /// in single mode; in fleet mode what is not towards risk), from code
    /// that cannot wait.
    pub fn submit_here(&self, change: &Change, actor: &Actor) -> Result<Applied, ControlError> {
        let (applied, written) = self.keep(change, actor)?;
        self.write_effects(&applied.effects, actor, None);
        written.map(|()| applied)
    }

    /// Fleet mode: a change the store took, applied to what only this
    /// replica has (a resumed level leaves the outbox); its effects are
    /// written by the caller.
    pub(crate) fn settle(&self, change: &Change, actor: &Actor) {
        match self.keep(change, actor) {
            Ok(_) | Err(ControlError::NotActive(_)) => {}
            Err(e) => tracing::error!(error = %e, "fleet: the change is in the store but not in the local cache"),
        }
    }

    /// Decide, keep and publish `change`. A refusal changes nothing. A
    /// write failure of the state file refuses what
    /// [`Change::needs_persisting`]; everything else applies all the same
    /// and reports the failure in the second result.
    fn keep(&self, change: &Change, actor: &Actor) -> Result<(Applied, Result<(), ControlError>), ControlError> {
        let mut guard = self.lock();
        let before = guard.clone();
        let (next, mut effects) = change::apply(&before, change, actor, &now_rfc3339())?;
        let (next, own_effects) = self.store.keep_here(change, &before, next);
        if !own_effects {
            effects.clear();
        }
        let changed = next != before;
        let written = match changed {
            true => self.commit(&mut guard, next, !change.needs_persisting()),
            false => Ok(()),
        };
        let written = match written {
            // Refused when it cannot be persisted: nothing was applied.
            Err(e) if change.needs_persisting() => return Err(e),
            written => written,
        };
        drop(guard);
        if changed {
            self.store.kept(change);
        }
        Ok((Applied { before, effects, revision: None }, written))
    }

    fn write_effects(&self, effects: &[Effect], actor: &Actor, revision: Option<i64>) {
        self.effects.write(effects, actor, revision, |level| self.blocked_reason(level));
    }

    /// Write `next`, then publish it. On a write failure the in-memory
    /// state is left unchanged, except that `force` (rollbacks) applies
    /// anyway: protecting traffic wins over persisting.
    fn commit(&self, guard: &mut State, next: State, force: bool) -> Result<(), ControlError> {
        let written = write_state(&self.file, &next);
        if let Err(e) = &written {
            tracing::error!(file = %self.file.display(), error = %e, "cannot write state file");
            if !force {
                return Err(ControlError::Persist {
                    path: self.file.display().to_string(),
                    source: written.unwrap_err(),
                });
            }
        }
        *guard = next;
        self.publish(guard);
        written.map_err(|source| ControlError::Persist { path: self.file.display().to_string(), source })
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

    /// The gate's reading of `version` (`None`: it could not be read), in
    /// one step: whether `new` runs on it, and `Some(why)` when stable does
    /// not. The route follows [`State::route_for`]; entering "no side
    /// supports it" holds the route in force (persisted, as every verdict
    /// is). Active L1/L3 levels stop (or start) moving traffic at once; each
    /// change that affects an active level is audited and notified. Returns
    /// the new stance.
    pub fn set_schema(&self, new_ready: bool, unsupported: Option<String>, version: Option<&str>) -> Stance {
        let mut guard = self.lock();
        let before = self.stance();
        let now = Stance::of(new_ready, unsupported.is_none());
        let was_unsupported = self.past_stable().is_some();
        *self.past_stable.lock().unwrap_or_else(|e| e.into_inner()) = unsupported.clone();
        *self.stance.lock().unwrap_or_else(|e| e.into_inner()) = now;
        let change = Change::Schema {
            before,
            now,
            restarted: self.restarted,
            version: version.map(str::to_string),
            unsupported,
            was_unsupported,
        };
        let effects = match change::apply(&guard, &change, &Actor::Config, "") {
            Ok((next, effects)) if next != *guard => {
                // Holding protects traffic: it applies even if the file cannot be written.
                let _ = self.commit(&mut guard, next, true);
                effects
            }
            Ok((_, effects)) => {
                self.publish(&guard);
                effects
            }
            Err(_) => unreachable!("the schema's verdict is never refused"),
        };
        drop(guard);
        self.write_effects(&effects, &Actor::Config, None);
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

    /// The config file's `split.percent` as loaded now; a changed value is a
    /// new desired percent (last writer wins against the admin API).
    pub fn config_percent_seen(&self, percent: u8) {
        let _ = self.submit_here(&Change::ConfigPercent { percent }, &Actor::Config);
    }

    /// Record the L3 hook's outcome (audited, persisted).
    pub fn hook_outcome(&self, status: HookStatus, detail: String) {
        let _ = self.submit_here(&Change::HookOutcome { status, detail }, &Actor::Rule("hook".into()));
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
mod route;
mod schema;
#[cfg(test)]
mod tests;

pub use events::{Event, LevelEvent, Notice};
pub(crate) use file::append_line;
pub use file::{now_rfc3339, read_audit};
use file::{read_state, write_state};
pub use route::Route;
pub use schema::{Hold, Verdict};
