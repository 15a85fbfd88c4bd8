use super::*;

/// Insert an activation as it is (the pure part of `Change::Activate`);
/// `None` when the level is already active.
fn activate(s: &State, level: Level, activation: Activation) -> Option<State> {
    if s.rollbacks.contains_key(&level) {
        return None;
    }
    let mut next = s.clone();
    next.rollbacks.insert(level, activation);
    Some(next)
}

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
    assert_eq!(set_percent(&s, 50).unwrap().desired_percent, 50);
    assert!(matches!(set_percent(&s, 101), Err(ControlError::PercentOutOfRange(101))));
    assert!(matches!(set_percent(&s, -1), Err(ControlError::PercentOutOfRange(-1))));
    let l2 = activate(&s, Level::L2, act("db", None)).unwrap();
    assert!(matches!(set_percent(&l2, 30), Err(ControlError::FrozenByL2(20))));
    assert_eq!(set_percent(&l2, 10).unwrap().desired_percent, 10);
    let l3 = activate(&s, Level::L3, act("diff", None)).unwrap();
    assert!(matches!(set_percent(&l3, 0), Err(ControlError::LockedByL3)));
}

#[test]
fn activate_is_first_wins_and_resume_clears_the_outbox() {
    let mut s = activate(&state(20), Level::L1, act("first", None)).unwrap();
    assert!(activate(&s, Level::L1, act("second", None)).is_none());
    s.outbox.push(Level::L1);
    let r = resume(&s, Level::L1, false).unwrap();
    assert!(r.rollbacks.is_empty() && r.outbox.is_empty());
    assert!(matches!(resume(&r, Level::L1, false), Err(ControlError::NotActive(Level::L1))));
    let l3 = activate(&state(0), Level::L3, act("x", None)).unwrap();
    assert!(matches!(resume(&l3, Level::L3, false), Err(ControlError::ConfirmRequired)));
    assert!(resume(&l3, Level::L3, true).unwrap().rollbacks.is_empty());
}

#[test]
fn merge_keeps_unpublished_rollbacks_and_takes_the_rest_from_the_store() {
    let mut local = activate(&state(20), Level::L1, act("mine", None)).unwrap();
    local.outbox.push(Level::L1);
    local = activate(&local, Level::L2, act("resumed elsewhere", Some(4))).unwrap();
    let remote = Remote { desired_percent: Some(40), rollbacks: BTreeMap::new(), ramp: None };
    let merged = merge_remote(&local, &remote, 9);
    assert_eq!(merged.desired_percent, 40);
    assert_eq!(merged.revision, 9);
    assert_eq!(merged.rollbacks.keys().copied().collect::<Vec<_>>(), [Level::L1], "L2 went, L1 waits");
    assert_eq!(merged.outbox, [Level::L1]);
    assert_eq!(merged.route().percent, 0, "the unpublished L1 still protects traffic");

    // Published (by us or anyone): the store's activation is the one.
    let remote =
        Remote { desired_percent: None, rollbacks: BTreeMap::from([(Level::L1, act("theirs", Some(12)))]), ramp: None };
    let merged = merge_remote(&merged, &remote, 12);
    assert!(merged.outbox.is_empty());
    assert_eq!(merged.rollbacks[&Level::L1].reason, "theirs");
    assert_eq!(merged.desired_percent, 40, "no percent in the store: ours stays");
}

#[test]
fn merge_keeps_a_forced_rollback_until_the_store_has_it_forced_and_takes_the_store_ramp() {
    let mut forced = act("by hand", Some(5));
    forced.force = true;
    let mut local = activate(&state(20), Level::L1, forced).unwrap();
    local.outbox.push(Level::L1);
    let unforced = Remote {
        rollbacks: BTreeMap::from([(Level::L1, act("rule", Some(5)))]),
        ramp: Some(Ramp { step: 2, ..Ramp::default() }),
        ..Remote::default()
    };
    let merged = merge_remote(&local, &unforced, 6);
    assert_eq!(merged.outbox, [Level::L1], "not forced in the store yet: still to publish");
    assert!(merged.rollbacks[&Level::L1].force);
    assert_eq!(merged.ramp.step, 2);
    let mut stored = act("rule", Some(5));
    stored.force = true;
    let forced_remote = Remote { rollbacks: BTreeMap::from([(Level::L1, stored)]), ..Remote::default() };
    let merged = merge_remote(&merged, &forced_remote, 7);
    assert!(merged.outbox.is_empty());
    assert_eq!(merged.ramp.step, 2, "no ramp in the store: ours stays");
}

#[test]
fn merge_keeps_a_finished_hook_of_the_same_activation() {
    let mut ours = act("diff", Some(7));
    ours.hook = Some(HookStatus::Succeeded);
    let local = activate(&state(0), Level::L3, ours).unwrap();
    let mut theirs = act("diff", Some(7));
    theirs.hook = Some(HookStatus::Pending);
    let remote =
        Remote { desired_percent: Some(0), rollbacks: BTreeMap::from([(Level::L3, theirs.clone())]), ramp: None };
    assert_eq!(merge_remote(&local, &remote, 8).rollbacks[&Level::L3].hook, Some(HookStatus::Succeeded));
    let mut unpublished = local.clone();
    if let Some(a) = unpublished.rollbacks.get_mut(&Level::L3) {
        a.id = None;
    }
    assert_eq!(
        merge_remote(&unpublished, &remote, 8).rollbacks[&Level::L3].hook,
        Some(HookStatus::Succeeded),
        "our own activation, published meanwhile"
    );
    theirs.id = Some(9);
    let remote = Remote { desired_percent: Some(0), rollbacks: BTreeMap::from([(Level::L3, theirs)]), ramp: None };
    assert_eq!(merge_remote(&local, &remote, 10).rollbacks[&Level::L3].hook, Some(HookStatus::Pending));
}

const NOW: &str = "2026-02-02T00:00:00Z";

fn rollback(level: Level, force: bool) -> Change {
    Change::Activate { level, reason: "why".into(), force, hook: true }
}

fn running_ramp(percent: u8) -> State {
    State { ramp: Ramp { phase: Phase::Running, step: 1, ..Ramp::default() }, ..state(percent) }
}

fn ramp_move(step: RampStep) -> Change {
    let plan = Plan::new(vec![5, 20, 100], vec![Duration::from_secs(1)], 0).unwrap();
    Change::Ramp(RampMove { plan, step, quiet: true, gate_open: true })
}

/// One row per decision: the change, the state it is decided on, and what
/// must come out (the refusal, or the effects and a check of the state).
#[test]
fn apply_decides_every_change_in_one_place() {
    let admin = Actor::Admin;
    let l2 = apply(&state(20), &rollback(Level::L2, false), &admin, NOW).unwrap().0;
    let l3 = apply(&state(20), &rollback(Level::L3, false), &admin, NOW).unwrap().0;

    // Percent: range, L3's lock, L2's freeze (lowering is fine).
    assert!(matches!(
        apply(&state(20), &Change::SetPercent { percent: 101 }, &admin, NOW),
        Err(ControlError::PercentOutOfRange(101))
    ));
    assert!(matches!(apply(&l3, &Change::SetPercent { percent: 0 }, &admin, NOW), Err(ControlError::LockedByL3)));
    assert!(matches!(apply(&l2, &Change::SetPercent { percent: 30 }, &admin, NOW), Err(ControlError::FrozenByL2(20))));
    let (next, effects) = apply(&l2, &Change::SetPercent { percent: 10 }, &admin, NOW).unwrap();
    assert_eq!((next.desired_percent, effects), (10, vec![Effect::Percent { old: 20, new: 10 }]));

    // A manual percent pauses a running ramp, and says so.
    let (next, effects) = apply(&running_ramp(20), &Change::SetPercent { percent: 7 }, &admin, NOW).unwrap();
    assert_eq!(next.ramp.phase, Phase::Paused);
    assert_eq!(effects[1], Effect::RampPausedByHand { step: 2, phase: Phase::Paused });
    // So does the config file's; an unchanged config percent is no change.
    let (next, effects) =
        apply(&running_ramp(20), &Change::ConfigPercent { percent: 30 }, &Actor::Config, NOW).unwrap();
    assert_eq!((next.desired_percent, next.config_percent, next.ramp.phase), (30, 30, Phase::Paused));
    assert_eq!(effects.len(), 2);
    assert_eq!(
        apply(&state(20), &Change::ConfigPercent { percent: 20 }, &Actor::Config, NOW).unwrap(),
        (state(20), vec![])
    );

    // Rollbacks: first wins, the L3 hook waits, --force on an active level.
    let (next, effects) = apply(&state(20), &rollback(Level::L3, false), &Actor::Rule("r".into()), NOW).unwrap();
    let a = &next.rollbacks[&Level::L3];
    assert_eq!((a.actor.as_str(), a.since.as_str(), a.hook.clone()), ("rule:r", NOW, Some(HookStatus::Pending)));
    assert_eq!(effects, [Effect::Activated { level: Level::L3, reason: "why".into(), force: false }]);
    assert_eq!(apply(&l3, &rollback(Level::L3, false), &admin, NOW).unwrap(), (l3.clone(), vec![]), "first wins");
    let (forced, effects) = apply(&l3, &rollback(Level::L3, true), &admin, NOW).unwrap();
    assert!(forced.rollbacks[&Level::L3].force);
    assert_eq!(effects, [Effect::Forced { level: Level::L3, reason: "why".into() }]);
    assert_eq!(apply(&forced, &rollback(Level::L3, true), &admin, NOW).unwrap().1, [], "forced already");

    // Resume: L3 needs confirmation; an inactive level is refused.
    assert!(matches!(
        apply(&l3, &Change::Resume { level: Level::L3, confirm: false }, &admin, NOW),
        Err(ControlError::ConfirmRequired)
    ));
    assert!(matches!(
        apply(&l2, &Change::Resume { level: Level::L1, confirm: false }, &admin, NOW),
        Err(ControlError::NotActive(Level::L1))
    ));
    let (next, effects) = apply(&l3, &Change::Resume { level: Level::L3, confirm: true }, &admin, NOW).unwrap();
    assert!(next.rollbacks.is_empty());
    assert_eq!(effects, [Effect::Resumed { level: Level::L3 }]);

    // The ramp: a start sets its first step's percent; L2 refuses a raise.
    let (next, effects) = apply(&state(0), &ramp_move(RampStep::Command(ramp::Command::Start)), &admin, NOW).unwrap();
    assert_eq!((next.desired_percent, next.ramp.phase), (5, Phase::Running));
    assert!(matches!(effects[..], [Effect::RampPercent { old: 0, new: 5 }, Effect::Ramp { step: 1, .. }]));
    let tick = ramp_move(RampStep::Tick { elapsed: Duration::from_secs(2), served: 9 });
    let (ticked, _) = apply(&next, &tick, &Actor::Ramp, NOW).unwrap();
    assert_eq!(ticked.desired_percent, 20);
    let frozen = apply(&next, &rollback(Level::L2, false), &admin, NOW).unwrap().0;
    assert!(apply(&frozen, &tick, &Actor::Ramp, NOW).unwrap().0.desired_percent <= 5, "L2 holds the ramp");

    // The hook's outcome lands on the active L3 only.
    let hook = Change::HookOutcome { status: HookStatus::Succeeded, detail: "ok".into() };
    assert_eq!(
        apply(&l3, &hook, &Actor::Rule("hook".into()), NOW).unwrap().0.rollbacks[&Level::L3].hook,
        Some(HookStatus::Succeeded)
    );
    assert_eq!(apply(&l2, &hook, &Actor::Rule("hook".into()), NOW).unwrap(), (l2.clone(), vec![]));

    // Requeue: every active level back to the outbox.
    assert_eq!(apply(&l2, &Change::Requeue, &Actor::Config, NOW).unwrap().0.outbox, [Level::L2]);
}

#[test]
fn the_schema_verdict_holds_the_split_and_blocks_rollbacks_past_stable() {
    let l1 = apply(&state(30), &rollback(Level::L1, false), &Actor::Admin, NOW).unwrap().0;
    let why = Some("stable does not support f9".to_string());
    let past = Change::Schema {
        before: Stance::Both,
        now: Stance::Neither,
        restarted: None,
        version: Some("f9".into()),
        unsupported: why.clone(),
        was_unsupported: false,
    };
    let (held, effects) = apply(&l1, &past, &Actor::Config, NOW).unwrap();
    assert_eq!(held.schema_hold.as_ref().map(|h| h.version.as_str()), Some("f9"));
    assert_eq!(effects, [Effect::Blocked { levels: vec![Level::L1], why }]);
    let back = Change::Schema {
        before: Stance::Neither,
        now: Stance::Both,
        restarted: None,
        version: Some("f8".into()),
        unsupported: None,
        was_unsupported: true,
    };
    let (next, effects) = apply(&held, &back, &Actor::Config, NOW).unwrap();
    assert!(next.schema_hold.is_none());
    assert_eq!(effects, [Effect::Blocked { levels: vec![Level::L1], why: None }]);
}

#[test]
fn a_remote_state_that_changes_what_is_served_is_logged() {
    let remote = Remote { desired_percent: Some(40), ..Remote::default() };
    let (next, effects) =
        apply(&state(20), &Change::Remote { remote: remote.clone(), revision: 3 }, &Actor::Config, NOW).unwrap();
    assert_eq!((next.desired_percent, next.revision), (40, 3));
    assert_eq!(effects, [Effect::FleetApplied { revision: 3, desired: 40, effective: 40, levels: vec![] }]);
    assert_eq!(apply(&next, &Change::Remote { remote, revision: 4 }, &Actor::Config, NOW).unwrap().1, []);
}
