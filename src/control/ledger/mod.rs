//! The exposure ledger: which users `new` served, so the L3 data-rollback
//! hook can repair exactly their rows.
//!
//! The request path hands each key `new` served to the [`Recorder`]
//! (bounded, lock-free, never waits), and the shadow comparison each key
//! whose answers differed, whichever side served it. Every `flush` interval the flusher
//! task drains it, merges the sightings into rows and writes them to the
//! sink ([`sink`]). A sink that fails keeps the rows in memory (at most
//! `4 × capacity`; beyond that they are dropped and counted) and is retried
//! with a doubling backoff up to a minute; no request ever waits on it.

mod file;
pub mod recorder;
pub mod rows;
pub mod sink;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::LedgerConfig;
use crate::control::state::now_rfc3339;
use crate::metrics::LedgerMetrics;
pub use recorder::Recorder;
use rows::{Pending, Row, Rows, Seen};
use sink::Sink;

/// How long the backoff between failed writes may grow.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Ledger {
    pub recorder: Recorder,
    flush: Duration,
    max_pending: usize,
    /// The sink and what waits for it; taken by the flusher and by the hook.
    writer: tokio::sync::Mutex<Writer>,
    status: Mutex<Status>,
    dropped: prometheus::IntCounter,
    errors: prometheus::IntCounter,
    written: prometheus::IntCounter,
    queued: prometheus::IntGauge,
}

struct Writer {
    sink: Sink,
    /// What is merged and not yet written; cleared and kept after a write.
    pending: Pending,
    failures: u32,
    /// After a failure, no write before this.
    retry_at: Option<tokio::time::Instant>,
}

impl Writer {
    fn take_pending(&mut self) -> Pending {
        let empty = Pending::new(self.pending.hasher().clone());
        std::mem::replace(&mut self.pending, empty)
    }
}

#[derive(Debug, Clone, Default)]
struct Status {
    sink: String,
    last_flush: Option<String>,
    last_error: Option<String>,
    pending: usize,
}

impl Ledger {
    pub fn new(config: &LedgerConfig, metrics: &LedgerMetrics) -> Ledger {
        let sink = Sink::new(config.sink.clone());
        let recorder = Recorder::new(config.capacity, metrics.dropped.clone());
        let pending = Pending::new(recorder.hasher().clone());
        let status = Status { sink: sink.describe(), ..Status::default() };
        Ledger {
            recorder,
            flush: config.flush,
            max_pending: config.capacity * 4,
            writer: tokio::sync::Mutex::new(Writer { sink, pending, failures: 0, retry_at: None }),
            status: Mutex::new(status),
            dropped: metrics.dropped.clone(),
            errors: metrics.errors.clone(),
            written: metrics.written.clone(),
            queued: metrics.queued.clone(),
        }
    }

    /// Flush every `flush` until shutdown, then once more.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // The recorder's clock, read here once a second instead of once per
        // first sighting on the request path; its own loop, so a slow write
        // (a sink timing out) does not leave it behind.
        let clock = async {
            let mut second = tokio::time::interval(Duration::from_secs(1));
            second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                second.tick().await;
                self.recorder.tick();
            }
        };
        let flusher = async {
            let mut tick = tokio::time::interval(self.flush);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.flush(false).await,
                    _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
                }
            }
            self.flush(true).await;
        };
        tokio::select! {
            () = flusher => {}
            () = clock => {}
        }
    }

    /// Start a new interval, merge what was queued and write it. `force`
    /// ignores the backoff (shutdown, the hook).
    pub async fn flush(&self, force: bool) {
        let mut writer = self.writer.lock().await;
        // Merging an interval's sightings (tens of thousands at a busy
        // edge) and writing the file are CPU and disk work: on the blocking
        // pool, so the runtime thread that serves requests never stalls.
        let exposures = self.recorder.rotate_batch();
        let (max, dropped) = (self.max_pending, self.dropped.clone());
        let mut pending = writer.take_pending();
        writer.pending = tokio::task::spawn_blocking(move || {
            for exposure in exposures {
                if pending.len() >= max {
                    dropped.inc();
                    continue;
                }
                let seen = Seen { first_seen: exposure.at, last_seen: exposure.at, marks: exposure.marks };
                pending.add(&exposure.origin, exposure.key, exposure.key_hash, seen);
            }
            pending
        })
        .await
        .expect("the ledger's merge does not panic");
        let now = tokio::time::Instant::now();
        let waiting = writer.retry_at.is_some_and(|at| now < at);
        if !writer.pending.is_empty() && (force || !waiting) {
            let pending = writer.take_pending();
            let (mut pending, result) = writer.sink.write(pending).await;
            match result {
                Ok(()) => {
                    self.written.inc_by(pending.len() as u64);
                    if writer.failures > 0 {
                        tracing::info!(rows = pending.len(), "exposure ledger sink is back");
                    }
                    // Written: the next interval merges into the same maps.
                    pending.clear();
                    writer.pending = pending;
                    writer.failures = 0;
                    writer.retry_at = None;
                    let mut status = self.lock_status();
                    status.last_flush = Some(now_rfc3339());
                    status.last_error = None;
                }
                Err(e) => {
                    self.errors.inc();
                    writer.pending = pending;
                    writer.failures += 1;
                    let backoff = self.flush.saturating_mul(1 << writer.failures.min(8)).min(MAX_BACKOFF);
                    writer.retry_at = Some(now + backoff);
                    if writer.failures == 1 {
                        tracing::warn!(error = %e, "exposure ledger sink failed; keeping rows and retrying");
                    }
                    self.lock_status().last_error = Some(e);
                }
            }
        }
        self.queued.set(writer.pending.len() as i64);
        self.lock_status().pending = writer.pending.len();
    }

    /// Every key exposed or seen to mismatch in `release` (all replicas,
    /// when the sink is shared), after writing what this replica still holds.
    pub async fn exposed(&self, release: &str) -> Result<Vec<Row>, String> {
        self.flush(true).await;
        let writer = self.writer.lock().await;
        let rows = writer.sink.read(release).await?;
        if writer.pending.is_empty() {
            return Ok(rows);
        }
        // What could not be written yet is still ours to report.
        let mut all = Rows::new();
        for row in rows {
            let (id, seen) = row.split();
            rows::merge(&mut all, id, seen);
        }
        for (_, source, key, seen) in writer.pending.iter().filter(|(r, ..)| *r == release) {
            rows::merge(&mut all, (release.to_string(), source.to_string(), key.to_string()), *seen);
        }
        Ok(rows::sorted(all))
    }

    /// Write the hook's CSV next to `state_file` and return its path.
    pub async fn write_csv_for_hook(&self, release: &str, state_file: &Path) -> Result<PathBuf, String> {
        let rows = self.exposed(release).await?;
        let dir = state_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let path = dir.join(format!("grayshift-exposed-{}.csv", recorder::unix_now()));
        // Every row: keys `new` served and keys whose shadow comparison
        // differed on stable too; `served_new` and `mismatch` tell them
        // apart (docs/src/ledger.md).
        std::fs::write(&path, sink::csv(&rows)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// `/status.ledger`.
    pub fn status(&self) -> Value {
        let status = self.lock_status().clone();
        json!({
            "sink": status.sink,
            "queued": status.pending + self.recorder.queued(),
            "dropped": self.dropped.get(),
            "errors": self.errors.get(),
            "written": self.written.get(),
            "last_flush": status.last_flush,
            "last_error": status.last_error,
        })
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
