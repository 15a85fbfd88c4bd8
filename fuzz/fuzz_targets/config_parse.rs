//! `config::parse` on arbitrary text: never panics; every error renders as
//! `NAME:LINE:COL: message` with LINE/COL inside the text; every accepted
//! config holds the ranges the validator promises, including that every
//! duration fits on a clock (the proxy adds them to `Instant::now()`).
#![no_main]

use std::time::{Duration, Instant};

use grayshift::config::{Config, SignalConfig};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "fuzz.toml";

fn durations(c: &Config) -> Vec<Duration> {
    let s = &c.server;
    let mut d = vec![s.drain_timeout, s.header_read_timeout, s.body_read_timeout];
    d.extend([c.rollback.interval, c.rollback.recover_for, c.features.retry_after]);
    for p in [&c.stable, &c.new] {
        d.extend([p.connect_timeout, p.request_timeout, p.idle_timeout, p.fail_timeout]);
        d.extend(p.health.iter().flat_map(|h| [h.interval, h.timeout]));
    }
    d.extend(c.rollback.hook.iter().map(|h| h.timeout));
    for r in &c.rules {
        d.push(r.for_);
        d.push(match &r.signal {
            SignalConfig::Local { window, .. } => *window,
            SignalConfig::Postgres { timeout, .. }
            | SignalConfig::Prometheus { timeout, .. }
            | SignalConfig::Http { timeout, .. } => *timeout,
        });
    }
    d.extend(c.notify.iter().map(|n| n.timeout));
    d
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match grayshift::config::parse(text, NAME) {
        Err(e) => {
            assert_eq!(e.file, NAME);
            assert_eq!(e.to_string(), format!("{NAME}:{}:{}: {}", e.line, e.col, e.message));
            assert!(!e.message.trim().is_empty(), "empty message");
            assert!(!e.message.contains('\n'), "multi-line message {:?}", e.message);
            let lines: Vec<&str> = text.split('\n').collect();
            assert!((1..=lines.len()).contains(&e.line), "line {} of {}: {e}", e.line, lines.len());
            let width = lines[e.line - 1].chars().count();
            assert!((1..=width + 1).contains(&e.col), "col {} of {}: {e}", e.col, width + 1);
        }
        Ok(c) => {
            assert!(c.split.percent <= 100);
            assert!(!c.split.group.is_empty() && !c.split.key.is_empty());
            assert!(!c.stable.endpoints.is_empty() && !c.new.endpoints.is_empty());
            assert!(!c.rollback.interval.is_zero() && !c.server.header_read_timeout.is_zero());
            assert!(c.split.force_new.is_disjoint(&c.split.force_stable));
            assert!(c.features.status.is_client_error() || c.features.status.is_server_error());
            let now = Instant::now();
            for d in durations(&c) {
                assert!(now.checked_add(d).is_some(), "accepted duration {d:?} overflows a deadline");
            }
            for rule in &c.rules {
                assert!(rule.condition.threshold().is_finite());
            }
        }
    }
});
