//! Unit tests of the rule state machine: every transition with made-up
//! instants, no sockets, no sleeps.

use std::time::{Duration, Instant};

use super::*;
use crate::config::PoolName;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn remote(name: &str, level: Level, condition: Condition, for_: Duration) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        level,
        signal: SignalConfig::Postgres {
            url: "postgresql://x@127.0.0.1/db".into(),
            query: "select 1".into(),
            timeout: secs(2),
        },
        condition,
        for_,
        min_requests: 0,
        fire_on_error: false,
    }
}

fn local(name: &str, for_: Duration, min_requests: u64) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        level: Level::L1,
        signal: SignalConfig::Local {
            metric: LocalMetric::ErrorRate,
            pool: PoolName::New,
            window: secs(60),
            fleet_wide: false,
        },
        condition: Condition::Above(0.05),
        for_,
        min_requests,
        fire_on_error: false,
    }
}

/// Drives an engine with a fake clock.
struct Run {
    engine: Engine,
    t0: Instant,
    recover_for: Duration,
}

impl Run {
    fn new(rules: &[RuleConfig]) -> Self {
        let t0 = Instant::now();
        Run { engine: Engine::new(rules, t0), t0, recover_for: secs(180) }
    }

    /// Evaluate at `at` after start, one sample per rule in rule order.
    fn at(&mut self, at: Duration, samples: &[Sample]) -> Decision {
        let pairs: Vec<(RuleConfig, Sample)> =
            self.engine.rules().iter().map(|r| r.def.clone()).zip(samples.iter().cloned()).collect();
        self.engine.evaluate(self.t0 + at, self.recover_for, &pairs)
    }

    fn status(&self, i: usize) -> Status {
        self.engine.rules()[i].status
    }

    fn why(&self, i: usize) -> &str {
        &self.engine.rules()[i].why
    }
}

fn v(x: f64) -> Sample {
    Sample::Value(x)
}

fn levels(d: &Decision) -> Vec<Level> {
    d.activate.iter().map(|a| a.level).collect()
}

#[test]
fn rules_start_unknown() {
    let run = Run::new(&[remote("db", Level::L2, Condition::Above(0.8), secs(180))]);
    assert_eq!(run.status(0), Status::Unknown);
    assert_eq!(run.why(0), "not evaluated yet");
}

#[test]
fn fires_only_after_the_condition_held_for_the_whole_for() {
    let mut run = Run::new(&[remote("db", Level::L2, Condition::Above(0.8), secs(180))]);
    assert!(run.at(secs(0), &[v(0.5)]).activate.is_empty());
    assert_eq!(run.status(0), Status::Ok);
    assert_eq!(run.why(0), "value 0.5 not above 0.8");
    assert!(run.at(secs(10), &[v(0.9)]).activate.is_empty());
    assert_eq!(run.status(0), Status::Pending);
    assert_eq!(run.why(0), "value 0.9 > 0.8 for 0s of 3m");
    assert!(run.at(secs(140), &[v(0.95)]).activate.is_empty());
    assert_eq!(run.why(0), "value 0.95 > 0.8 for 2m10s of 3m");
    let d = run.at(secs(190), &[v(0.91)]);
    assert_eq!(run.status(0), Status::Firing);
    assert_eq!(levels(&d), [Level::L2]);
    assert_eq!(d.activate[0].rule, "db");
    assert_eq!(d.activate[0].reason, "rule db: value 0.91 > 0.8 for 3m (for 3m)");
    assert_eq!(run.engine.highest_firing(), Some(Level::L2));
}

#[test]
fn a_good_reading_resets_the_for_clock() {
    let mut run = Run::new(&[remote("db", Level::L2, Condition::Above(0.8), secs(180))]);
    run.at(secs(0), &[v(0.9)]);
    run.at(secs(170), &[v(0.9)]);
    run.at(secs(175), &[v(0.2)]);
    assert_eq!(run.status(0), Status::Ok);
    let d = run.at(secs(200), &[v(0.9)]);
    assert!(d.activate.is_empty(), "the run restarted at 200s");
    assert_eq!(run.status(0), Status::Pending);
    assert!(run.at(secs(379), &[v(0.9)]).activate.is_empty());
    assert_eq!(levels(&run.at(secs(380), &[v(0.9)])), [Level::L2]);
}

#[test]
fn below_conditions_and_thresholds_are_strict() {
    let mut run = Run::new(&[remote("rps", Level::L1, Condition::Below(10.0), Duration::ZERO)]);
    run.at(secs(0), &[v(10.0)]);
    assert_eq!(run.status(0), Status::Ok, "equal to the threshold is not below it");
    assert_eq!(run.why(0), "value 10 not below 10");
    let d = run.at(secs(1), &[v(9.5)]);
    assert_eq!(levels(&d), [Level::L1]);
    assert_eq!(run.why(0), "value 9.5 < 10 (for 0s: fires at once)");
}

#[test]
fn for_zero_fires_on_the_first_bad_reading() {
    let mut run = Run::new(&[remote("consistency", Level::L3, Condition::Above(0.0), Duration::ZERO)]);
    assert!(run.at(secs(0), &[v(0.0)]).activate.is_empty());
    let d = run.at(secs(5), &[v(1.0)]);
    assert_eq!(levels(&d), [Level::L3]);
    assert_eq!(d.activate[0].reason, "rule consistency: value 1 > 0 (for 0s: fires at once)");
}

#[test]
fn a_firing_rule_asks_again_at_every_evaluation_and_goes_ok_when_good() {
    let mut run = Run::new(&[remote("r", Level::L1, Condition::Above(1.0), Duration::ZERO)]);
    assert_eq!(levels(&run.at(secs(0), &[v(2.0)])), [Level::L1]);
    assert_eq!(levels(&run.at(secs(5), &[v(3.0)])), [Level::L1], "activating an active level is a no-op in Control");
    let since = run.engine.rules()[0].since;
    assert_eq!(since, run.t0, "since = when it started firing");
    assert!(run.at(secs(10), &[v(0.0)]).activate.is_empty(), "L1 stays latched in Control; the rule is just ok now");
    assert_eq!(run.status(0), Status::Ok);
}

#[test]
fn min_requests_is_no_verdict_and_ends_a_pending_run() {
    let mut run = Run::new(&[local("errors", secs(60), 50)]);
    run.at(secs(0), &[Sample::Window { value: Some(0.5), requests: 12 }]);
    assert_eq!(run.status(0), Status::Ok);
    assert_eq!(run.why(0), "only 12 of min 50 requests in the last 1m: no verdict");
    assert_eq!(run.engine.rules()[0].value, Some(0.5), "the value is still shown");
    run.at(secs(10), &[Sample::Window { value: Some(0.5), requests: 80 }]);
    assert_eq!(run.status(0), Status::Pending);
    assert_eq!(run.why(0), "error_rate 0.5 > 0.05 for 0s of 1m");
    run.at(secs(40), &[Sample::Window { value: Some(0.5), requests: 49 }]);
    assert_eq!(run.status(0), Status::Ok);
    run.at(secs(50), &[Sample::Window { value: Some(0.5), requests: 50 }]);
    assert!(run.at(secs(100), &[Sample::Window { value: Some(0.5), requests: 50 }]).activate.is_empty());
    assert_eq!(levels(&run.at(secs(110), &[Sample::Window { value: Some(0.5), requests: 60 }])), [Level::L1]);
}

#[test]
fn an_empty_window_is_no_verdict() {
    let mut run = Run::new(&[local("errors", Duration::ZERO, 0)]);
    run.at(secs(0), &[Sample::Window { value: None, requests: 0 }]);
    assert_eq!(run.status(0), Status::Ok);
    assert_eq!(run.why(0), "no requests in the last 1m: no verdict");
    assert_eq!(levels(&run.at(secs(1), &[Sample::Window { value: Some(0.06), requests: 1 }])), [Level::L1]);
}

#[test]
fn unknown_with_ignore_never_fires_and_keeps_a_pending_run() {
    let mut run = Run::new(&[remote("db", Level::L2, Condition::Above(0.8), secs(60))]);
    let down = || Sample::Unknown("connection refused".into());
    assert!(run.at(secs(0), &[down()]).activate.is_empty());
    assert_eq!(run.status(0), Status::Unknown);
    assert_eq!(run.why(0), "signal unreadable: connection refused");
    for t in 1..100 {
        assert!(run.at(secs(t), &[down()]).activate.is_empty(), "an unreadable signal never fires by itself");
    }
    // Bad, then unreadable for a while, then bad again: one run.
    run.at(secs(100), &[v(0.9)]);
    run.at(secs(130), &[down()]);
    assert_eq!(run.status(0), Status::Unknown);
    assert!(run.why(0).contains("bad for 30s before"), "{}", run.why(0));
    assert_eq!(run.engine.rules()[0].value, None);
    assert_eq!(levels(&run.at(secs(160), &[v(0.9)])), [Level::L2]);
    // A good reading still ends a run.
    run.at(secs(170), &[v(0.1)]);
    run.at(secs(180), &[v(0.9)]);
    run.at(secs(200), &[down()]);
    run.at(secs(210), &[v(0.1)]);
    assert!(run.at(secs(239), &[v(0.9)]).activate.is_empty());
}

#[test]
fn unknown_with_fire_counts_as_bad() {
    let mut rule = remote("db", Level::L2, Condition::Above(0.8), secs(30));
    rule.fire_on_error = true;
    let mut run = Run::new(&[rule]);
    let down = || Sample::Unknown("timed out after 2s".into());
    run.at(secs(0), &[down()]);
    assert_eq!(run.status(0), Status::Pending);
    assert_eq!(run.why(0), "signal unreadable: timed out after 2s (on_error = fire counts it as bad) for 0s of 30s");
    run.at(secs(10), &[v(0.9)]);
    let d = run.at(secs(30), &[down()]);
    assert_eq!(levels(&d), [Level::L2]);
    assert_eq!(run.status(0), Status::Firing);
    assert_eq!(run.engine.rules()[0].value, None);
}

#[test]
fn nan_is_an_unreadable_signal() {
    let mut run = Run::new(&[remote("r", Level::L1, Condition::Above(0.0), Duration::ZERO)]);
    assert!(run.at(secs(0), &[v(f64::NAN)]).activate.is_empty());
    assert_eq!(run.status(0), Status::Unknown);
    assert_eq!(run.why(0), "signal unreadable: the signal returned NaN");
}

#[test]
fn higher_levels_come_first_one_action_per_level() {
    let rules = [
        remote("errors-a", Level::L1, Condition::Above(1.0), Duration::ZERO),
        remote("errors-b", Level::L1, Condition::Above(1.0), Duration::ZERO),
        remote("db", Level::L2, Condition::Above(1.0), Duration::ZERO),
        remote("diff", Level::L3, Condition::Above(0.0), Duration::ZERO),
    ];
    let mut run = Run::new(&rules);
    let d = run.at(secs(0), &[v(2.0), v(2.0), v(0.0), v(0.0)]);
    assert_eq!(levels(&d), [Level::L1]);
    assert_eq!(d.activate[0].rule, "errors-a", "the first firing rule in config order names the level");
    let d = run.at(secs(5), &[v(0.0), v(2.0), v(2.0), v(3.0)]);
    assert_eq!(levels(&d), [Level::L3, Level::L2, Level::L1]);
    assert_eq!(d.activate[2].rule, "errors-b");
    assert_eq!(run.engine.highest_firing(), Some(Level::L3));
}

#[test]
fn l2_clears_only_after_all_l2_rules_are_ok_for_recover_for() {
    let rules = [
        remote("db-load", Level::L2, Condition::Above(0.8), Duration::ZERO),
        remote("db-lag", Level::L2, Condition::Above(10.0), Duration::ZERO),
    ];
    let mut run = Run::new(&rules);
    run.recover_for = secs(180);
    assert_eq!(levels(&run.at(secs(0), &[v(0.9), v(0.0)])), [Level::L2]);
    assert_eq!(run.at(secs(10), &[v(0.1), v(0.0)]).clear_l2, None);
    assert_eq!(run.at(secs(100), &[v(0.1), v(0.0)]).clear_l2, None);
    assert_eq!(run.at(secs(150), &[v(0.1), v(11.0)]).clear_l2, None, "the other L2 rule went bad: the clock restarts");
    assert_eq!(run.at(secs(160), &[v(0.1), v(1.0)]).clear_l2, None);
    assert_eq!(run.at(secs(339), &[v(0.1), v(1.0)]).clear_l2, None);
    let clear = run.at(secs(340), &[v(0.1), v(1.0)]).clear_l2.expect("fine for 3m");
    assert!(clear.starts_with("L2 signals fine for 3m (recover_for 3m): db-load: value 0.1 not above 0.8"), "{clear}");
}

#[test]
fn unknown_and_pending_hold_off_l2_recovery() {
    let mut run = Run::new(&[remote("db", Level::L2, Condition::Above(0.8), secs(60))]);
    run.recover_for = secs(30);
    run.at(secs(0), &[v(0.1)]);
    run.at(secs(20), &[Sample::Unknown("timeout".into())]);
    assert_eq!(run.at(secs(40), &[v(0.1)]).clear_l2, None, "the unknown reading broke the good run");
    run.at(secs(50), &[v(0.9)]);
    assert_eq!(run.status(0), Status::Pending);
    assert_eq!(run.at(secs(75), &[v(0.1)]).clear_l2, None);
    assert!(run.at(secs(105), &[v(0.1)]).clear_l2.is_some());
}

#[test]
fn l2_recovery_with_recover_for_zero_is_immediate() {
    let mut run = Run::new(&[remote("db", Level::L2, Condition::Above(0.8), Duration::ZERO)]);
    run.recover_for = Duration::ZERO;
    assert_eq!(levels(&run.at(secs(0), &[v(0.9)])), [Level::L2]);
    assert!(run.at(secs(1), &[v(0.1)]).clear_l2.is_some());
}

#[test]
fn l1_and_l3_are_never_cleared_by_the_engine() {
    let rules = [
        remote("errors", Level::L1, Condition::Above(0.05), Duration::ZERO),
        remote("diff", Level::L3, Condition::Above(0.0), Duration::ZERO),
    ];
    let mut run = Run::new(&rules);
    run.recover_for = Duration::ZERO;
    assert_eq!(levels(&run.at(secs(0), &[v(0.5), v(1.0)])), [Level::L3, Level::L1]);
    for t in 1..20 {
        let d = run.at(secs(t), &[v(0.0), v(0.0)]);
        assert!(d.activate.is_empty());
        // The only clear the engine ever speaks of is L2's (and with no L2
        // rule that is vacuous: the caller only clears a rule-made L2).
        assert!(d.clear_l2.as_deref().is_some_and(|r| r.contains("no L2 rule")));
    }
}

#[test]
fn rearm_after_resume_needs_a_whole_new_for() {
    let mut run = Run::new(&[remote("errors", Level::L1, Condition::Above(0.05), secs(60))]);
    run.at(secs(0), &[v(0.5)]);
    assert_eq!(levels(&run.at(secs(60), &[v(0.5)])), [Level::L1]);
    run.engine.rearm(Level::L1, run.t0 + secs(61));
    assert_eq!(run.status(0), Status::Unknown);
    assert_eq!(run.why(0), "L1 was resumed: waiting for the next reading");
    assert!(run.at(secs(65), &[v(0.5)]).activate.is_empty());
    assert_eq!(run.status(0), Status::Pending);
    assert!(run.at(secs(124), &[v(0.5)]).activate.is_empty());
    assert_eq!(levels(&run.at(secs(125), &[v(0.5)])), [Level::L1]);
    run.engine.rearm(Level::L2, run.t0 + secs(126));
    assert_eq!(run.status(0), Status::Firing, "re-arming another level leaves this rule alone");
}

#[test]
fn reload_keeps_unchanged_rules_and_resets_changed_ones() {
    let a = remote("a", Level::L2, Condition::Above(0.8), secs(60));
    let b = remote("b", Level::L1, Condition::Above(0.8), secs(60));
    let mut run = Run::new(&[a.clone(), b.clone()]);
    run.at(secs(0), &[v(0.9), v(0.9)]);
    run.at(secs(30), &[v(0.9), v(0.9)]);
    let mut b2 = b.clone();
    b2.condition = Condition::Above(0.5);
    let c = remote("c", Level::L3, Condition::Above(0.0), Duration::ZERO);
    run.engine.set_rules(&[c.clone(), b2.clone(), a.clone()], run.t0 + secs(31));
    let names: Vec<&str> = run.engine.rules().iter().map(|r| r.def.name.as_str()).collect();
    assert_eq!(names, ["c", "b", "a"], "config order");
    assert_eq!(run.status(0), Status::Unknown);
    assert_eq!(run.status(1), Status::Unknown, "b changed: fresh state");
    assert_eq!(run.status(2), Status::Pending, "a unchanged: keeps its run");
    // A sample read under the old definition of b is dropped.
    let d = run.engine.evaluate(run.t0 + secs(60), secs(180), &[(a.clone(), v(0.9)), (b, v(0.9)), (c, v(0.0))]);
    assert_eq!(levels(&d), [Level::L2], "a fired after 60s across the reload");
    assert_eq!(run.status(1), Status::Unknown);
}

#[test]
fn since_changes_only_with_the_status() {
    let mut run = Run::new(&[remote("r", Level::L2, Condition::Above(0.8), secs(60))]);
    run.at(secs(1), &[v(0.1)]);
    run.at(secs(2), &[v(0.2)]);
    assert_eq!(run.engine.rules()[0].since, run.t0 + secs(1));
    run.at(secs(3), &[v(0.9)]);
    assert_eq!(run.engine.rules()[0].since, run.t0 + secs(3));
    assert_eq!(run.engine.rules()[0].evaluated_at, Some(run.t0 + secs(3)));
}

#[test]
fn durations_and_values_read_like_the_config() {
    assert_eq!(fmt_duration(ms(0)), "0s");
    assert_eq!(fmt_duration(ms(1)), "1ms");
    assert_eq!(fmt_duration(ms(250)), "250ms");
    assert_eq!(fmt_duration(ms(4500)), "4.5s");
    assert_eq!(fmt_duration(ms(4050)), "4s");
    assert_eq!(fmt_duration(secs(130)), "2m10s");
    assert_eq!(fmt_duration(secs(300)), "5m");
    assert_eq!(fmt_duration(secs(3900)), "1h5m");
    assert_eq!(fmt_value(0.12), "0.12");
    assert_eq!(fmt_value(0.123456), "0.1235");
    assert_eq!(fmt_value(3.0), "3");
    assert_eq!(fmt_value(-2.0), "-2");
    assert_eq!(fmt_value(0.00001), "0.00001");
    assert_eq!(fmt_value(f64::INFINITY), "inf");
}
