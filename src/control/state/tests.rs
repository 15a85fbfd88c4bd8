use std::time::Duration;

use super::*;

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
    assert!(c.set_schema_gate(false));
    assert!(!c.set_schema_gate(false));
    assert_eq!(c.route(), Route { percent: 0, rolled_back: false, shedding: false, gate_closed: true });
    assert!(c.route().new_refused());
    c.set_percent(35, &Actor::Admin).unwrap();
    assert_eq!(c.route().percent, 0, "a percent change keeps the gate closed");
    assert!(c.set_schema_gate(true));
    assert_eq!(c.route(), Route { percent: 35, rolled_back: false, shedding: false, gate_closed: false });
}

#[test]
fn past_stable_blocks_l1_and_l3_until_forced_or_supported_again() {
    let dir = tempfile::tempdir().unwrap();
    let (c, mut events) = open(dir.path(), 30);
    c.set_stable_support(Some("stable does not support schema f9".into()));
    c.activate(Level::L1, "errors", &Actor::Rule("r".into()), false).unwrap();
    assert_eq!(c.route().percent, 30, "blocked: traffic stays");
    assert!(!c.route().new_refused());
    assert_eq!(c.blocked(), (vec![Level::L1], Some("stable does not support schema f9".into())));
    let Event::Level(e) = events.try_recv().unwrap() else { panic!("a level event first") };
    assert!(e.blocked.unwrap().contains("schema f9"));
    c.activate(Level::L2, "db", &Actor::Admin, false).unwrap();
    assert!(c.route().shedding, "L2 is never blocked");
    assert_eq!(c.blocked().0, [Level::L1]);

    // Back within stable_supports: the rollback takes effect by itself.
    c.set_stable_support(None);
    assert_eq!(c.route().percent, 0);
    assert!(c.route().rolled_back);
    assert!(c.blocked().0.is_empty());
    let notices: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(notices.iter().any(|n| matches!(n, Event::Notice(n) if n.event == "rollback_unblocked")));

    // Past it again, then forced: stable anyway, and it survives a restart.
    c.set_stable_support(Some("f9".into()));
    assert_eq!(c.route().percent, 30);
    assert!(c.activate_with(Level::L1, "by hand", &Actor::Admin, false, true).unwrap());
    assert_eq!(c.route().percent, 0);
    assert!(c.state().rollbacks[&Level::L1].force);
    drop(c);
    let (c, _) = open(dir.path(), 30);
    c.set_stable_support(Some("f9".into()));
    assert_eq!(c.route().percent, 0, "the force is persisted");
}

#[test]
fn a_percent_set_by_hand_pauses_a_running_ramp_but_the_ramp_own_does_not() {
    use crate::control::release::ramp::{self, Command, Conditions, Plan};
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), 0);
    let plan = Plan::new(vec![5, 20, 100], vec![Duration::from_secs(1)], 0).unwrap();
    let quiet = Conditions { quiet: true, gate_open: true, rolled_back: false, shedding: false };
    c.change_ramp(&Actor::Admin, |s| Ok(ramp::command(&s.ramp, &plan, Command::Start, quiet)?)).unwrap();
    assert_eq!((c.state().desired_percent, c.state().ramp.phase), (5, Phase::Running));
    c.change_ramp(&Actor::Ramp, |s| Ok(ramp::tick(&s.ramp, &plan, Duration::from_secs(2), 9, quiet))).unwrap();
    assert_eq!((c.state().desired_percent, c.state().ramp.step), (20, 1));
    drop(c);
    let (c, _) = open(dir.path(), 0);
    assert_eq!(c.state().ramp.step, 1, "the ramp is in the state file");
    c.set_percent(7, &Actor::Admin).unwrap();
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
    c.set_percent(35, &Actor::Admin).unwrap();
    assert!(c.activate(Level::L1, "errors", &Actor::Rule("r".into()), false).unwrap());
    assert!(!c.activate(Level::L1, "again", &Actor::Admin, false).unwrap());
    assert_eq!(c.route(), Route { percent: 0, rolled_back: true, shedding: false, gate_closed: false });
    assert!(matches!(events.try_recv().unwrap(), Event::Level(e) if e.level == Level::L1));
    drop(c);
    let (c, _) = open(dir.path(), 20);
    assert_eq!(c.state().desired_percent, 35);
    assert_eq!(c.state().rollbacks[&Level::L1].reason, "errors");
    assert_eq!(c.route().percent, 0);
    c.resume(Level::L1, false, &Actor::Admin).unwrap();
    assert_eq!(c.route().percent, 35);
}

#[test]
fn l2_freezes_raises_and_l3_locks_and_needs_confirm() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), 20);
    c.activate(Level::L2, "db", &Actor::Admin, false).unwrap();
    assert!(c.route().shedding);
    assert!(matches!(c.set_percent(30, &Actor::Admin), Err(ControlError::FrozenByL2(20))));
    c.set_percent(10, &Actor::Admin).unwrap();
    c.activate(Level::L3, "diff", &Actor::Admin, true).unwrap();
    assert!(matches!(c.set_percent(5, &Actor::Admin), Err(ControlError::LockedByL3)));
    assert_eq!(c.state().rollbacks[&Level::L3].hook, Some(HookStatus::Pending));
    assert!(matches!(c.resume(Level::L3, false, &Actor::Admin), Err(ControlError::ConfirmRequired)));
    c.resume(Level::L3, true, &Actor::Admin).unwrap();
    assert!(matches!(c.resume(Level::L3, true, &Actor::Admin), Err(ControlError::NotActive(Level::L3))));
    assert!(matches!(c.set_percent(101, &Actor::Admin), Err(ControlError::PercentOutOfRange(101))));
}

#[test]
fn config_change_wins_but_unchanged_config_keeps_admin_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), 20);
    c.set_percent(50, &Actor::Admin).unwrap();
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
