use std::time::Duration;

use super::*;
use crate::control::change::{RampMove, RampStep};

// The old entry points, as changes through the one way in.
fn set_percent(c: &Control, percent: i64, actor: &Actor) -> Result<u8, ControlError> {
    c.submit_here(&Change::SetPercent { percent }, actor).map(|a| a.before.desired_percent)
}

fn activate(c: &Control, level: Level, reason: &str, actor: &Actor, hook: bool) -> Result<bool, ControlError> {
    activate_with(c, level, reason, actor, hook, false)
}

fn activate_with(
    c: &Control,
    level: Level,
    reason: &str,
    actor: &Actor,
    hook: bool,
    force: bool,
) -> Result<bool, ControlError> {
    let change = Change::Activate { level, reason: reason.into(), force, hook };
    c.submit_here(&change, actor).map(|a| a.changed())
}

fn resume(c: &Control, level: Level, confirm: bool, actor: &Actor) -> Result<(), ControlError> {
    c.submit_here(&Change::Resume { level, confirm }, actor).map(drop)
}

fn ramp(c: &Control, actor: &Actor, plan: &crate::control::release::ramp::Plan, step: RampStep) {
    let change = Change::Ramp(RampMove { plan: plan.clone(), step, quiet: true, gate_open: true });
    c.submit_here(&change, actor).unwrap();
}

// The gate's verdicts, one side at a time (single-threaded: the stance
// read outside the lock cannot race here).
fn set_schema_gate(c: &Control, open: bool) -> bool {
    let before = c.stance();
    let now = c.set_schema(open, c.past_stable(), Some("v"));
    before.new_ready() != now.new_ready()
}

fn set_stable_support(c: &Control, unsupported: Option<String>) {
    c.set_schema(c.stance().new_ready(), unsupported, Some("v"));
}

fn open(dir: &Path, percent: u8) -> (Control, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let paths = StateConfig { file: dir.join("state.json"), audit: dir.join("audit.jsonl") };
    (Control::open(&paths, percent, tx).unwrap(), rx)
}

#[test]
fn route_packs_losslessly() {
    for percent in [0, 1, 50, 100] {
        for rolled_back in [false, true] {
            for shedding in [false, true] {
                for gate_closed in [false, true] {
                    let r = Route { percent, rolled_back, shedding, gate_closed };
                    assert_eq!(Route::unpack(r.pack()), r);
                }
            }
        }
    }
}

#[test]
fn schema_gate_zeroes_percent_and_refuses_new_until_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _events) = open(dir.path(), 20);
    assert!(set_schema_gate(&c, false));
    assert!(!set_schema_gate(&c, false));
    assert_eq!(c.route(), Route { percent: 0, rolled_back: false, shedding: false, gate_closed: true });
    assert!(c.route().new_refused());
    set_percent(&c, 35, &Actor::Admin).unwrap();
    assert_eq!(c.route().percent, 0, "a percent change keeps the gate closed");
    assert!(set_schema_gate(&c, true));
    assert_eq!(c.route(), Route { percent: 35, rolled_back: false, shedding: false, gate_closed: false });
}

#[test]
fn past_stable_blocks_l1_and_l3_until_forced_or_supported_again() {
    let dir = tempfile::tempdir().unwrap();
    let (c, mut events) = open(dir.path(), 30);
    set_stable_support(&c, Some("stable does not support schema f9".into()));
    activate(&c, Level::L1, "errors", &Actor::Rule("r".into()), false).unwrap();
    assert_eq!(c.route().percent, 30, "blocked: traffic stays");
    assert!(!c.route().new_refused());
    assert_eq!(c.blocked(), (vec![Level::L1], Some("stable does not support schema f9".into())));
    let Event::Level(e) = events.try_recv().unwrap() else { panic!("a level event first") };
    assert!(e.blocked.unwrap().contains("schema f9"));
    activate(&c, Level::L2, "db", &Actor::Admin, false).unwrap();
    assert!(c.route().shedding, "L2 is never blocked");
    assert_eq!(c.blocked().0, [Level::L1]);

    // Back within stable_supports: the rollback takes effect by itself.
    set_stable_support(&c, None);
    assert_eq!(c.route().percent, 0);
    assert!(c.route().rolled_back);
    assert!(c.blocked().0.is_empty());
    let notices: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(notices.iter().any(|n| matches!(n, Event::Notice(n) if n.event == "rollback_unblocked")));

    // Past it again, then forced: stable anyway, and it survives a restart.
    set_stable_support(&c, Some("f9".into()));
    assert_eq!(c.route().percent, 30);
    assert!(activate_with(&c, Level::L1, "by hand", &Actor::Admin, false, true).unwrap());
    assert_eq!(c.route().percent, 0);
    assert!(c.state().rollbacks[&Level::L1].force);
    drop(c);
    let (c, _) = open(dir.path(), 30);
    set_stable_support(&c, Some("f9".into()));
    assert_eq!(c.route().percent, 0, "the force is persisted");
}

#[test]
fn a_percent_set_by_hand_pauses_a_running_ramp_but_the_ramp_own_does_not() {
    use crate::control::release::ramp::{Command, Plan};
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), 0);
    let plan = Plan::new(vec![5, 20, 100], vec![Duration::from_secs(1)], 0).unwrap();
    ramp(&c, &Actor::Admin, &plan, RampStep::Command(Command::Start));
    assert_eq!((c.state().desired_percent, c.state().ramp.phase), (5, Phase::Running));
    ramp(&c, &Actor::Ramp, &plan, RampStep::Tick { elapsed: Duration::from_secs(2), served: 9 });
    assert_eq!((c.state().desired_percent, c.state().ramp.step), (20, 1));
    drop(c);
    let (c, _) = open(dir.path(), 0);
    assert_eq!(c.state().ramp.step, 1, "the ramp is in the state file");
    set_percent(&c, 7, &Actor::Admin).unwrap();
    assert_eq!(c.state().ramp.phase, Phase::Paused);
    let audit = read_audit(c.audit_path(), 20).unwrap();
    assert!(audit.iter().any(|e| e["action"] == "ramp" && e["event"].as_str().unwrap().contains("by hand")));
    assert!(audit.iter().any(|e| e["action"] == "percent" && e["actor"] == "ramp" && e["new"] == 20));
}

#[test]
fn rollback_zeroes_effective_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (c, mut events) = open(dir.path(), 20);
    assert_eq!(c.route().percent, 20);
    set_percent(&c, 35, &Actor::Admin).unwrap();
    assert!(activate(&c, Level::L1, "errors", &Actor::Rule("r".into()), false).unwrap());
    assert!(!activate(&c, Level::L1, "again", &Actor::Admin, false).unwrap());
    assert_eq!(c.route(), Route { percent: 0, rolled_back: true, shedding: false, gate_closed: false });
    assert!(matches!(events.try_recv().unwrap(), Event::Level(e) if e.level == Level::L1));
    drop(c);
    let (c, _) = open(dir.path(), 20);
    assert_eq!(c.state().desired_percent, 35);
    assert_eq!(c.state().rollbacks[&Level::L1].reason, "errors");
    assert_eq!(c.route().percent, 0);
    resume(&c, Level::L1, false, &Actor::Admin).unwrap();
    assert_eq!(c.route().percent, 35);
}

#[test]
fn l2_freezes_raises_and_l3_locks_and_needs_confirm() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), 20);
    activate(&c, Level::L2, "db", &Actor::Admin, false).unwrap();
    assert!(c.route().shedding);
    assert!(matches!(set_percent(&c, 30, &Actor::Admin), Err(ControlError::FrozenByL2(20))));
    set_percent(&c, 10, &Actor::Admin).unwrap();
    activate(&c, Level::L3, "diff", &Actor::Admin, true).unwrap();
    assert!(matches!(set_percent(&c, 5, &Actor::Admin), Err(ControlError::LockedByL3)));
    assert_eq!(c.state().rollbacks[&Level::L3].hook, Some(HookStatus::Pending));
    assert!(matches!(resume(&c, Level::L3, false, &Actor::Admin), Err(ControlError::ConfirmRequired)));
    resume(&c, Level::L3, true, &Actor::Admin).unwrap();
    assert!(matches!(resume(&c, Level::L3, true, &Actor::Admin), Err(ControlError::NotActive(Level::L3))));
    assert!(matches!(set_percent(&c, 101, &Actor::Admin), Err(ControlError::PercentOutOfRange(101))));
}

#[test]
fn config_change_wins_but_unchanged_config_keeps_admin_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), 20);
    set_percent(&c, 50, &Actor::Admin).unwrap();
    drop(c);
    let (c, _) = open(dir.path(), 20);
    assert_eq!(c.state().desired_percent, 50, "same config percent: the admin's value stands");
    drop(c);
    let (c, _) = open(dir.path(), 30);
    assert_eq!(c.state().desired_percent, 30, "the config file changed: last writer wins");
    let audit = read_audit(c.audit_path(), 10).unwrap();
    assert_eq!(audit.last().unwrap()["actor"], "config");
    assert_eq!(audit.last().unwrap()["new"], 30);
}

#[test]
fn corrupt_state_file_is_an_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), "{ not json").unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let paths = StateConfig { file: dir.path().join("state.json"), audit: dir.path().join("a.jsonl") };
    let err = Control::open(&paths, 10, tx).err().expect("corrupt file must be refused");
    assert!(err.to_string().contains("state.json"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("state.json")).unwrap(), "{ not json");
}
