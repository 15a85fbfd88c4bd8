//! Unit tests of the ramp: every transition with made-up durations, no
//! sockets, no sleeps.

use std::time::Duration;

use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn plan() -> Plan {
    Plan::new(vec![5, 20, 50, 100], vec![secs(10), secs(60), secs(30)], 100).unwrap()
}

const FINE: Conditions = Conditions { quiet: true, gate_open: true, rolled_back: false, shedding: false };

fn started(plan: &Plan) -> Ramp {
    command(&Ramp::default(), plan, Command::Start, FINE).unwrap().ramp
}

#[test]
fn start_sets_the_first_step() {
    let p = plan();
    let out = command(&Ramp::default(), &p, Command::Start, FINE).unwrap();
    assert_eq!(out.ramp.phase, Phase::Running);
    assert_eq!(out.ramp.step, 0);
    assert_eq!(out.set_percent, Some(5));
    assert!(out.event.unwrap().contains("step 1 (5%)"));
    assert_eq!(
        command(&out.ramp, &p, Command::Start, FINE).unwrap_err(),
        RampError::WrongPhase(Phase::Running, "it is already started")
    );
}

#[test]
fn promotes_only_after_hold_and_min_requests() {
    let p = plan();
    let r = started(&p);
    let out = tick(&r, &p, secs(9), 500, FINE);
    assert_eq!(out.set_percent, None, "hold not over");
    let out = tick(&out.ramp, &p, secs(2), 0, FINE);
    assert_eq!(out.set_percent, Some(20), "11 s held, 500 requests");
    assert_eq!(out.ramp.step, 1);
    assert_eq!(out.ramp.held, Duration::ZERO);
    assert_eq!(out.ramp.requests, 0);

    let r = started(&p);
    let out = tick(&r, &p, secs(20), 99, FINE);
    assert_eq!(out.set_percent, None, "hold over but only 99 requests");
    let out = tick(&out.ramp, &p, secs(1), 1, FINE);
    assert_eq!(out.set_percent, Some(20));
}

#[test]
fn a_pending_or_firing_rule_or_a_closed_gate_holds_promotion() {
    let p = plan();
    let r = started(&p);
    let noisy = Conditions { quiet: false, ..FINE };
    let out = tick(&r, &p, secs(30), 1000, noisy);
    assert_eq!(out.set_percent, None);
    assert_eq!(out.ramp.held, secs(30), "the hold keeps baking");
    let closed = Conditions { gate_open: false, ..FINE };
    let out = tick(&out.ramp, &p, secs(1), 0, closed);
    assert_eq!(out.set_percent, None);
    let out = tick(&out.ramp, &p, secs(1), 0, FINE);
    assert_eq!(out.set_percent, Some(20), "promotes as soon as all is quiet");
}

#[test]
fn l2_stops_the_clock_and_then_it_goes_on() {
    let p = plan();
    let r = started(&p);
    let out = tick(&r, &p, secs(5), 50, FINE);
    let l2 = Conditions { shedding: true, ..FINE };
    let out = tick(&out.ramp, &p, secs(100), 500, l2);
    assert_eq!(out.ramp.held, secs(5), "clock stopped under L2");
    assert_eq!(out.ramp.requests, 50);
    assert_eq!(out.ramp.phase, Phase::Running);
    assert_eq!(out.set_percent, None);
    let out = tick(&out.ramp, &p, secs(5), 50, FINE);
    assert_eq!(out.set_percent, Some(20));
}

#[test]
fn l1_or_l3_aborts_running_or_paused_and_stays_aborted() {
    let p = plan();
    let r = started(&p);
    let rb = Conditions { rolled_back: true, ..FINE };
    let out = tick(&r, &p, secs(1), 0, rb);
    assert_eq!(out.ramp.phase, Phase::Aborted);
    assert_eq!(out.set_percent, None, "the rollback itself zeroes the effective percent");
    assert!(out.event.unwrap().contains("aborted"));
    let after = tick(&out.ramp, &p, secs(100), 1000, FINE);
    assert_eq!(after.ramp.phase, Phase::Aborted, "resuming L1 does not restart the ramp");
    assert_eq!(after.set_percent, None);

    let paused = command(&r, &p, Command::Pause, FINE).unwrap().ramp;
    assert_eq!(tick(&paused, &p, secs(1), 0, rb).ramp.phase, Phase::Aborted);
}

#[test]
fn pause_stops_everything_resume_restarts() {
    let p = plan();
    let r = started(&p);
    let paused = command(&r, &p, Command::Pause, FINE).unwrap().ramp;
    let out = tick(&paused, &p, secs(1000), 1000, FINE);
    assert_eq!(out.ramp, paused);
    let running = command(&paused, &p, Command::Resume, FINE).unwrap().ramp;
    assert_eq!(running.phase, Phase::Running);
    assert!(matches!(command(&running, &p, Command::Resume, FINE), Err(RampError::WrongPhase(Phase::Running, _))));
}

#[test]
fn promote_skips_the_hold_and_ends_at_the_last_step() {
    let p = plan();
    let mut r = started(&p);
    for expected in [20, 50] {
        let out = command(&r, &p, Command::Promote, FINE).unwrap();
        assert_eq!(out.set_percent, Some(expected));
        assert_eq!(out.ramp.phase, Phase::Running);
        r = out.ramp;
    }
    let out = command(&r, &p, Command::Promote, FINE).unwrap();
    assert_eq!(out.set_percent, Some(100));
    assert_eq!(out.ramp.phase, Phase::Done);
    assert!(command(&out.ramp, &p, Command::Promote, FINE).is_err());
}

#[test]
fn reaching_the_last_step_by_itself_is_done() {
    let p = Plan::new(vec![10, 100], vec![secs(1)], 0).unwrap();
    let r = started(&p);
    let out = tick(&r, &p, secs(1), 0, FINE);
    assert_eq!(out.set_percent, Some(100));
    assert_eq!(out.ramp.phase, Phase::Done);
    let again = tick(&out.ramp, &p, secs(1), 0, FINE);
    assert_eq!(again.set_percent, None);
}

#[test]
fn abort_sends_everyone_to_stable() {
    let p = plan();
    let out = command(&started(&p), &p, Command::Abort, FINE).unwrap();
    assert_eq!(out.ramp.phase, Phase::Aborted);
    assert_eq!(out.set_percent, Some(0));
    assert!(command(&out.ramp, &p, Command::Abort, FINE).is_err());
    let restarted = command(&out.ramp, &p, Command::Start, FINE).unwrap();
    assert_eq!(restarted.set_percent, Some(5), "an aborted ramp can start over");
}

#[test]
fn moves_towards_risk_are_refused_under_rollback_or_l2() {
    let p = plan();
    let rb = Conditions { rolled_back: true, ..FINE };
    let l2 = Conditions { shedding: true, ..FINE };
    assert_eq!(command(&Ramp::default(), &p, Command::Start, rb), Err(RampError::RolledBack));
    assert_eq!(command(&Ramp::default(), &p, Command::Start, l2), Err(RampError::Frozen));
    let r = started(&p);
    assert_eq!(command(&r, &p, Command::Promote, l2), Err(RampError::Frozen));
    assert!(command(&r, &p, Command::Pause, rb).is_ok(), "pausing is always allowed");
    assert!(command(&r, &p, Command::Abort, rb).is_ok(), "aborting is always allowed");
}

#[test]
fn a_manual_percent_pauses_a_running_ramp() {
    let p = plan();
    let r = started(&p);
    let out = operator_took_over(&r);
    assert_eq!(out.ramp.phase, Phase::Paused);
    assert!(out.event.is_some());
    assert_eq!(operator_took_over(&Ramp::default()).event, None);
}

#[test]
fn hold_left_counts_down() {
    let p = plan();
    let out = tick(&started(&p), &p, secs(4), 0, FINE);
    assert_eq!(hold_left(&out.ramp, &p), Some(secs(6)));
}

#[test]
fn state_round_trips_through_json_with_the_elapsed_hold() {
    let p = plan();
    let out = tick(&started(&p), &p, Duration::from_millis(4_250), 7, FINE);
    let text = serde_json::to_string(&out.ramp).unwrap();
    assert!(text.contains("\"held\":4250"), "{text}");
    let back: Ramp = serde_json::from_str(&text).unwrap();
    assert_eq!(back, out.ramp);
}

#[test]
fn plans_are_validated() {
    let e = |steps: Vec<i64>, hold: Vec<Duration>| Plan::new(steps, hold, 0).unwrap_err();
    assert_eq!(e(vec![], vec![secs(1)]).key, "steps");
    assert!(e(vec![5, 5, 10], vec![secs(1)]).message.contains("must increase"));
    assert!(e(vec![50, 20], vec![secs(1)]).message.contains("must increase"));
    assert!(e(vec![5, 101], vec![secs(1)]).message.contains("101"));
    assert!(e(vec![-1, 5], vec![secs(1)]).message.contains("-1"));
    assert_eq!(e(vec![5, 20, 100], vec![secs(1), secs(2), secs(3)]).key, "hold");
    let one = Plan::new(vec![5, 20, 100], vec![secs(7)], 0).unwrap();
    assert_eq!(one.holds, vec![secs(7), secs(7)]);
}
