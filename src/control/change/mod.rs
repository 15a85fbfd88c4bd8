//! The state transitions as pure functions: `State` in, `State` (or a
//! refusal) out. `Control` (the state file) and the fleet (etcd) both
//! decide with these, so a percent change, a rollback or a resume follows
//! the same rules whichever persistence is behind it.

use std::collections::BTreeMap;

use crate::config::Level;
use crate::control::release::ramp::{self, Ramp};
use crate::control::state::{Activation, Actor, ControlError, HookStatus, State};

/// The shared part of the state as the fleet's store holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remote {
    /// `None`: the store has no percent yet (a new or wiped store).
    pub desired_percent: Option<u8>,
    pub rollbacks: BTreeMap<Level, Activation>,
    /// `None`: the store has no ramp (never started, or wiped).
    pub ramp: Option<Ramp>,
}

impl State {
    /// `PUT /percent`: refused while L3 is active, or on a raise while L2 is.
    pub fn set_percent(&self, percent: i64) -> Result<State, ControlError> {
        let percent =
            u8::try_from(percent).ok().filter(|p| *p <= 100).ok_or(ControlError::PercentOutOfRange(percent))?;
        if self.rollbacks.contains_key(&Level::L3) {
            return Err(ControlError::LockedByL3);
        }
        if self.rollbacks.contains_key(&Level::L2) && percent > self.desired_percent {
            return Err(ControlError::FrozenByL2(self.desired_percent));
        }
        Ok(State { desired_percent: percent, ..self.clone() })
    }

    /// [`State::set_percent`] by `actor`: anyone but the ramp itself pauses a
    /// running ramp (the operator took over).
    pub fn set_percent_by(&self, percent: i64, actor: &Actor) -> Result<State, ControlError> {
        let mut next = self.set_percent(percent)?;
        if *actor != Actor::Ramp {
            next.ramp = ramp::operator_took_over(&self.ramp).ramp;
        }
        Ok(next)
    }

    /// A ramp outcome applied: its state, and its percent when it sets one.
    /// A percent the rules forbid is refused, except the abort's 0 while L3
    /// already keeps everyone off `new`.
    pub fn apply_ramp(&self, outcome: &ramp::Outcome) -> Result<State, ControlError> {
        let mut next = State { ramp: outcome.ramp.clone(), ..self.clone() };
        if let Some(percent) = outcome.set_percent {
            match next.set_percent(percent.into()) {
                Ok(s) => next = s,
                Err(ControlError::LockedByL3) if percent == 0 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(next)
    }

    /// Activate `level`; `None` when it is already active (the first
    /// activation stands, so the L3 hook does not run twice).
    pub fn activate(&self, level: Level, activation: Activation) -> Option<State> {
        if self.rollbacks.contains_key(&level) {
            return None;
        }
        let mut next = self.clone();
        next.rollbacks.insert(level, activation);
        Some(next)
    }

    /// Clear `level`; L3 needs `confirm`. An unpublished activation of it
    /// leaves the outbox too.
    pub fn resume(&self, level: Level, confirm: bool) -> Result<State, ControlError> {
        if level == Level::L3 && !confirm {
            return Err(ControlError::ConfirmRequired);
        }
        if !self.rollbacks.contains_key(&level) {
            return Err(ControlError::NotActive(level));
        }
        let mut next = self.clone();
        next.rollbacks.remove(&level);
        next.outbox.retain(|l| *l != level);
        Ok(next)
    }

    /// The store's state replaces the local shared state, except that a
    /// level still in the outbox stays active (safety first: it is
    /// published later, never dropped). An outbox level the store already
    /// has is done: the store's activation is the one.
    pub fn merge_remote(&self, remote: &Remote, revision: i64) -> State {
        let mut next = self.clone();
        if let Some(p) = remote.desired_percent {
            next.desired_percent = p;
        }
        next.rollbacks = remote.rollbacks.clone();
        if let Some(ramp) = &remote.ramp {
            next.ramp = ramp.clone();
        }
        // Published when the store has it, and has it forced if ours is.
        next.outbox.retain(|l| match (remote.rollbacks.get(l), self.rollbacks.get(l)) {
            (None, _) => true,
            (Some(theirs), Some(ours)) => ours.force && !theirs.force,
            (Some(_), None) => false,
        });
        for level in &next.outbox {
            if let Some(local) = self.rollbacks.get(level) {
                next.rollbacks.insert(*level, local.clone());
            }
        }
        // The hook's outcome is recorded locally first; the same activation
        // from the store without it does not erase it.
        for (level, theirs) in next.rollbacks.iter_mut() {
            let Some(ours) = self.rollbacks.get(level) else { continue };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(reason: &str, id: Option<i64>) -> Activation {
        Activation {
            reason: reason.into(),
            actor: "admin".into(),
            since: "2026-01-01T00:00:00Z".into(),
            hook: None,
            hook_detail: None,
            id,
            replica: Some("a".into()),
            force: false,
        }
    }

    fn state(percent: u8) -> State {
        State { desired_percent: percent, config_percent: percent, ..State::default() }
    }

    #[test]
    fn set_percent_obeys_l2_and_l3() {
        let s = state(20);
        assert_eq!(s.set_percent(50).unwrap().desired_percent, 50);
        assert!(matches!(s.set_percent(101), Err(ControlError::PercentOutOfRange(101))));
        assert!(matches!(s.set_percent(-1), Err(ControlError::PercentOutOfRange(-1))));
        let l2 = s.activate(Level::L2, act("db", None)).unwrap();
        assert!(matches!(l2.set_percent(30), Err(ControlError::FrozenByL2(20))));
        assert_eq!(l2.set_percent(10).unwrap().desired_percent, 10);
        let l3 = s.activate(Level::L3, act("diff", None)).unwrap();
        assert!(matches!(l3.set_percent(0), Err(ControlError::LockedByL3)));
    }

    #[test]
    fn activate_is_first_wins_and_resume_clears_the_outbox() {
        let mut s = state(20).activate(Level::L1, act("first", None)).unwrap();
        assert!(s.activate(Level::L1, act("second", None)).is_none());
        s.outbox.push(Level::L1);
        let r = s.resume(Level::L1, false).unwrap();
        assert!(r.rollbacks.is_empty() && r.outbox.is_empty());
        assert!(matches!(r.resume(Level::L1, false), Err(ControlError::NotActive(Level::L1))));
        let l3 = state(0).activate(Level::L3, act("x", None)).unwrap();
        assert!(matches!(l3.resume(Level::L3, false), Err(ControlError::ConfirmRequired)));
        assert!(l3.resume(Level::L3, true).unwrap().rollbacks.is_empty());
    }

    #[test]
    fn merge_keeps_unpublished_rollbacks_and_takes_the_rest_from_the_store() {
        let mut local = state(20).activate(Level::L1, act("mine", None)).unwrap();
        local.outbox.push(Level::L1);
        local = local.activate(Level::L2, act("resumed elsewhere", Some(4))).unwrap();
        let remote = Remote { desired_percent: Some(40), rollbacks: BTreeMap::new(), ramp: None };
        let merged = local.merge_remote(&remote, 9);
        assert_eq!(merged.desired_percent, 40);
        assert_eq!(merged.revision, 9);
        assert_eq!(merged.rollbacks.keys().copied().collect::<Vec<_>>(), [Level::L1], "L2 went, L1 waits");
        assert_eq!(merged.outbox, [Level::L1]);
        assert_eq!(merged.route().percent, 0, "the unpublished L1 still protects traffic");

        // Published (by us or anyone): the store's activation is the one.
        let remote = Remote {
            desired_percent: None,
            rollbacks: BTreeMap::from([(Level::L1, act("theirs", Some(12)))]),
            ramp: None,
        };
        let merged = merged.merge_remote(&remote, 12);
        assert!(merged.outbox.is_empty());
        assert_eq!(merged.rollbacks[&Level::L1].reason, "theirs");
        assert_eq!(merged.desired_percent, 40, "no percent in the store: ours stays");
    }

    #[test]
    fn merge_keeps_a_forced_rollback_until_the_store_has_it_forced_and_takes_the_store_ramp() {
        let mut forced = act("by hand", Some(5));
        forced.force = true;
        let mut local = state(20).activate(Level::L1, forced).unwrap();
        local.outbox.push(Level::L1);
        let unforced = Remote {
            rollbacks: BTreeMap::from([(Level::L1, act("rule", Some(5)))]),
            ramp: Some(Ramp { step: 2, ..Ramp::default() }),
            ..Remote::default()
        };
        let merged = local.merge_remote(&unforced, 6);
        assert_eq!(merged.outbox, [Level::L1], "not forced in the store yet: still to publish");
        assert!(merged.rollbacks[&Level::L1].force);
        assert_eq!(merged.ramp.step, 2);
        let mut stored = act("rule", Some(5));
        stored.force = true;
        let forced_remote = Remote { rollbacks: BTreeMap::from([(Level::L1, stored)]), ..Remote::default() };
        let merged = merged.merge_remote(&forced_remote, 7);
        assert!(merged.outbox.is_empty());
        assert_eq!(merged.ramp.step, 2, "no ramp in the store: ours stays");
    }

    #[test]
    fn merge_keeps_a_finished_hook_of_the_same_activation() {
        let mut ours = act("diff", Some(7));
        ours.hook = Some(HookStatus::Succeeded);
        let local = state(0).activate(Level::L3, ours).unwrap();
        let mut theirs = act("diff", Some(7));
        theirs.hook = Some(HookStatus::Pending);
        let remote =
            Remote { desired_percent: Some(0), rollbacks: BTreeMap::from([(Level::L3, theirs.clone())]), ramp: None };
        assert_eq!(local.merge_remote(&remote, 8).rollbacks[&Level::L3].hook, Some(HookStatus::Succeeded));
        let mut unpublished = local.clone();
        if let Some(a) = unpublished.rollbacks.get_mut(&Level::L3) {
            a.id = None;
        }
        assert_eq!(
            unpublished.merge_remote(&remote, 8).rollbacks[&Level::L3].hook,
            Some(HookStatus::Succeeded),
            "our own activation, published meanwhile"
        );
        theirs.id = Some(9);
        let remote = Remote { desired_percent: Some(0), rollbacks: BTreeMap::from([(Level::L3, theirs)]), ramp: None };
        assert_eq!(local.merge_remote(&remote, 10).rollbacks[&Level::L3].hook, Some(HookStatus::Pending));
    }
}
