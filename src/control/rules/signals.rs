//! Reading rule signals: one [`Sample`] per rule per evaluation.
//!
//! Local signals are computed from [`LocalHistory`] without I/O. Every other
//! read runs in its own task, all at once, each bounded by its signal's
//! `timeout`; an evaluation waits for them at most `rollback.interval`, so
//! a hung database or Prometheus never stalls the other rules (nor the
//! proxy, which never waits on any of this). A failed read is
//! `Sample::Unknown` with the reason.
//!
//! - `postgres`: one client per distinct URL, kept across evaluations and
//!   dropped after a connection failure or a timeout (the next read
//!   reconnects). The query runs over the simple protocol, so any numeric
//!   type (float8, int, numeric, even text) reads as a number; the first
//!   column of the first row counts, and NULL or no row is unknown.
//! - `prometheus`: `GET {url}/api/v1/query?query=…`; the first sample of a
//!   vector, or a scalar; an empty vector is unknown.
//! - `http`: `GET url`, JSON, an RFC 6901 pointer to a number or a numeric
//!   string.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use http::{header, Method, StatusCode};
use serde_json::Value;
use tokio::task::{Id, JoinSet};
use tokio_postgres::SimpleQueryMessage;

use crate::client;
use crate::config::{RuleConfig, SignalConfig};
use crate::control::pg::{self, PgSlot};
use crate::control::rules::engine::Sample;
use crate::control::rules::local::{FleetHistory, LocalHistory};

/// The readers' state that lives across evaluations.
#[derive(Default)]
pub struct Signals {
    pub local: LocalHistory,
    /// Fleet mode: every live member's counters (docs/src/fleet.md, Fleet-wide local signals).
    pub fleet: FleetHistory,
    postgres: HashMap<String, PgSlot>,
    /// Remote reads, which may outlive one evaluation (up to their timeout).
    reads: JoinSet<(RuleConfig, Sample)>,
    in_flight: HashMap<Id, RuleConfig>,
}

impl Signals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a read for every rule that has none running, and collect the
    /// reads that finish within `budget` (normally `rollback.interval`).
    /// A read still running then reports at a later evaluation; until it
    /// does, its rule gets no sample and keeps its state, and no second
    /// read of it starts. So a slow or hung signal delays only itself (and
    /// the evaluation it started in, by at most `budget`).
    pub async fn read_all(&mut self, rules: &[RuleConfig], budget: Duration) -> Vec<(RuleConfig, Sample)> {
        // Forget clients of URLs no rule uses any more.
        self.postgres.retain(|url, _| {
            rules.iter().any(|r| matches!(&r.signal, SignalConfig::Postgres { url: u, .. } if u == url))
        });
        let mut samples = Vec::with_capacity(rules.len());
        let mut started = HashSet::new();
        for rule in rules {
            if let SignalConfig::Local { metric, pool, window, fleet_wide } = &rule.signal {
                let sample = if *fleet_wide {
                    self.fleet.sample(*metric, *pool, *window)
                } else {
                    self.local.sample(*metric, *pool, *window)
                };
                samples.push((rule.clone(), sample));
            } else if !self.in_flight.values().any(|r| r.name == rule.name) {
                let read = self.read(rule);
                let def = rule.clone();
                let id = self.reads.spawn(async move { (def, read.await) }).id();
                self.in_flight.insert(id, rule.clone());
                started.insert(id);
            }
        }
        // Wait for the reads started now; older ones still running report
        // when they finish, without holding this evaluation up.
        let deadline = tokio::time::Instant::now() + budget;
        while !started.is_empty() {
            match tokio::time::timeout_at(deadline, self.reads.join_next_with_id()).await {
                Ok(Some(done)) => {
                    let id = done.as_ref().map_or_else(|e| e.id(), |(id, _)| *id);
                    started.remove(&id);
                    samples.extend(self.finished(id, done));
                }
                Ok(None) | Err(_) => break,
            }
        }
        while let Some(done) = self.reads.try_join_next_with_id() {
            let id = done.as_ref().map_or_else(|e| e.id(), |(id, _)| *id);
            samples.extend(self.finished(id, done));
        }
        samples
    }

    fn finished(
        &mut self,
        id: Id,
        done: Result<(Id, (RuleConfig, Sample)), tokio::task::JoinError>,
    ) -> Option<(RuleConfig, Sample)> {
        let rule = self.in_flight.remove(&id);
        match done {
            Ok((_, sample)) => Some(sample),
            Err(e) => {
                tracing::error!(error = %e, "a signal reader failed");
                rule.map(|rule| (rule, Sample::Unknown("the signal reader failed".into())))
            }
        }
    }

    /// The read of one remote signal, bounded by its timeout.
    fn read(&mut self, rule: &RuleConfig) -> std::pin::Pin<Box<dyn std::future::Future<Output = Sample> + Send>> {
        match &rule.signal {
            SignalConfig::Postgres { url, query, timeout } => {
                let slot = self.postgres.entry(url.clone()).or_default().clone();
                let (url, query, timeout) = (url.clone(), query.clone(), *timeout);
                Box::pin(async move { read_postgres(slot, &url, &query, timeout).await })
            }
            SignalConfig::Prometheus { url, query, timeout, ca } => {
                let (url, query, timeout, ca) = (url.clone(), query.clone(), *timeout, ca.clone());
                Box::pin(async move { read_prometheus(&url, ca.as_deref(), &query, timeout).await })
            }
            SignalConfig::Http { url, pointer, timeout, ca } => {
                let (url, pointer, timeout, ca) = (url.clone(), pointer.clone(), *timeout, ca.clone());
                Box::pin(async move { read_http(&url, ca.as_deref(), &pointer, timeout).await })
            }
            SignalConfig::Local { .. } => unreachable!("local signals are computed, not read"),
        }
    }
}

fn to_sample(result: Result<f64, String>) -> Sample {
    result.map_or_else(Sample::Unknown, Sample::Value)
}

async fn read_postgres(slot: PgSlot, url: &str, query: &str, timeout: Duration) -> Sample {
    to_sample(pg::simple_query(&slot, url, query, timeout).await.and_then(|rows| first_number(&rows)))
}

/// The first column of the first row, as a number.
fn first_number(messages: &[SimpleQueryMessage]) -> Result<f64, String> {
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or("the query returned no row")?;
    let text =
        row.try_get(0).map_err(|e| format!("the query returned no column: {e}"))?.ok_or("the query returned NULL")?;
    parse_number(text)
}

fn parse_number(text: &str) -> Result<f64, String> {
    text.trim().parse::<f64>().map_err(|_| format!("not a number: {:?}", truncate(text, 80)))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

async fn read_prometheus(url: &str, ca: Option<&std::path::Path>, query: &str, timeout: Duration) -> Sample {
    let url = format!("{}/api/v1/query?query={}", url.trim_end_matches('/'), percent_encode(query));
    let accept = [(header::ACCEPT, "application/json".to_string())];
    match client::request(Method::GET, &url, ca, &accept, None, timeout).await {
        Ok((status, body)) => to_sample(prometheus_value(status, &body)),
        Err(e) => Sample::Unknown(format!("prometheus: {e}")),
    }
}

/// The value of an instant query's answer: the first sample of a vector, or
/// a scalar.
pub fn prometheus_value(status: StatusCode, body: &[u8]) -> Result<f64, String> {
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        format!("prometheus answered HTTP {status} with {:?}", truncate(&String::from_utf8_lossy(body), 120))
    })?;
    if json["status"] != "success" {
        return Err(format!(
            "prometheus answered HTTP {status}: {} {}",
            json["errorType"].as_str().unwrap_or("error"),
            json["error"].as_str().unwrap_or("(no message)")
        ));
    }
    let data = &json["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => match data["result"].get(0) {
            Some(first) => &first["value"],
            None => return Err("empty result: the query matched no series".into()),
        },
        Some("scalar") => &data["result"],
        Some(other) => {
            return Err(format!("result type {other:?}: the query must return an instant vector or a scalar"))
        }
        None => return Err("malformed answer: no data.resultType".into()),
    };
    sample.get(1).and_then(Value::as_str).ok_or_else(|| format!("malformed sample {sample}")).and_then(parse_number)
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

async fn read_http(url: &str, ca: Option<&std::path::Path>, pointer: &str, timeout: Duration) -> Sample {
    let accept = [(header::ACCEPT, "application/json".to_string())];
    match client::request(Method::GET, url, ca, &accept, None, timeout).await {
        Ok((status, body)) => to_sample(pointed_number(status, &body, pointer)),
        Err(e) => Sample::Unknown(format!("http: {e}")),
    }
}

/// The number at `pointer` in a JSON answer.
pub fn pointed_number(status: StatusCode, body: &[u8], pointer: &str) -> Result<f64, String> {
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match json.pointer(pointer) {
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| format!("{n} is not representable")),
        Some(Value::String(s)) => parse_number(s),
        Some(Value::Null) => Err(format!("{pointer:?} is null")),
        Some(other) => Err(format!("{pointer:?} is not a number: {}", truncate(&other.to_string(), 80))),
        None => Err(format!("pointer {pointer:?} matches nothing in the answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(
            percent_encode("sum(rate(x{code=\"5xx\"}[1m])) / 2 + é"),
            "sum%28rate%28x%7Bcode%3D%225xx%22%7D%5B1m%5D%29%29%20%2F%202%20%2B%20%C3%A9"
        );
    }

    #[test]
    fn prometheus_answers() {
        let ok = StatusCode::OK;
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]},{"metric":{},"value":[1,"9"]}]}}"#;
        assert_eq!(prometheus_value(ok, vector), Ok(0.25));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#;
        assert_eq!(prometheus_value(ok, scalar), Ok(42.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(prometheus_value(ok, empty).unwrap_err(), "empty result: the query matched no series");
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(prometheus_value(ok, nan).unwrap().is_nan(), "the engine turns NaN into unknown");
        let inf = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(prometheus_value(ok, inf), Ok(f64::INFINITY));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert_eq!(
            prometheus_value(StatusCode::BAD_REQUEST, bad).unwrap_err(),
            "prometheus answered HTTP 400 Bad Request: bad_data parse error at char 4"
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(prometheus_value(ok, matrix).unwrap_err().contains("instant vector"));
        assert!(prometheus_value(StatusCode::BAD_GATEWAY, b"upstream down").unwrap_err().contains("HTTP 502"));
    }

    #[test]
    fn http_pointer_answers() {
        let ok = StatusCode::OK;
        let body = br#"{"db":{"load":0.5,"text":" 0.75 ","null":null,"list":[1,2]}}"#;
        assert_eq!(pointed_number(ok, body, "/db/load"), Ok(0.5));
        assert_eq!(pointed_number(ok, body, "/db/text"), Ok(0.75));
        assert_eq!(pointed_number(ok, body, "/db/list/1"), Ok(2.0));
        assert!(pointed_number(ok, body, "/db/null").unwrap_err().contains("null"));
        assert!(pointed_number(ok, body, "/db").unwrap_err().contains("not a number"));
        assert!(pointed_number(ok, body, "/nope").unwrap_err().contains("matches nothing"));
        assert_eq!(
            pointed_number(StatusCode::SERVICE_UNAVAILABLE, body, "/db/load").unwrap_err(),
            "HTTP 503 Service Unavailable"
        );
        assert!(pointed_number(ok, b"<html>", "/x").unwrap_err().contains("not JSON"));
        assert_eq!(pointed_number(ok, b"3", ""), Ok(3.0), "the empty pointer is the whole document");
    }

    #[test]
    fn numbers_from_text() {
        assert_eq!(parse_number("12"), Ok(12.0));
        assert_eq!(parse_number("0.8000"), Ok(0.8));
        assert!(parse_number("abc").is_err());
    }
}
