//! The resume loop. etcd-client's watch streams do not reconnect by
//! themselves, so this loop does: full read, watch the shared ranges
//! ([`store::WATCHED`]: not the per-member keys) from the read's
//! revision + 1, apply every response, each event in place; on an error back off (with jitter)
//! and start over. A compaction past our revision, a revision that went
//! backwards or a changed epoch is a resync (full re-read, no backoff). A
//! linearizable read every [`CHECK_EVERY`] catches a watch that went
//! silently dead and an outage the stream does not report.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::watch;

use super::store::{self, Entry};
use super::{timed, Fleet, FleetError};
use crate::Shared;

pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Exponential backoff with jitter, so replicas that lost the store
/// together do not come back in lockstep.
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { next: min, min, max }
    }

    /// The next wait: uniformly in [next/2, next], `jitter` in 0..1.
    pub fn step(&mut self, jitter: f64) -> Duration {
        let wait = self.next.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Jitter without a random-number crate: the clock's nanoseconds.
fn jitter() -> f64 {
    f64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())) / 1e9
}

pub async fn run(fleet: Arc<Fleet>, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let result = tokio::select! {
            r = session(&fleet, &shared, &mut backoff) => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let wait = match result {
            Err(FleetError::Resync(why)) => {
                tracing::info!(why, "fleet resync: full re-read of the store");
                Duration::ZERO
            }
            Err(e) => {
                tracing::debug!(error = %e, "fleet session ended");
                fleet.lost(&shared, &e);
                backoff.step(jitter())
            }
            Ok(()) => Duration::ZERO,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One connected stretch: returns why it ended.
async fn session(fleet: &Fleet, shared: &Shared, backoff: &mut Backoff) -> Result<(), FleetError> {
    fleet.full_read(shared).await?;
    backoff.reset();
    fleet.publish_outbox(shared).await?;
    fleet.push_config_percent(shared).await;
    let mut client = fleet.client().await?;
    let start = fleet.view().header_revision + 1;
    // One stream, one watch per range.
    let mut stream: Option<WatchStream> = None;
    for (from, end) in store::watched_ranges(&fleet.key("")) {
        let options = WatchOptions::new().with_range(end).with_start_revision(start).with_progress_notify();
        match stream.as_mut() {
            None => stream = Some(timed!(client.watch(from.as_str(), Some(options.clone())))?),
            Some(stream) => timed!(stream.watch(from.as_str(), Some(options.clone())))?,
        }
    }
    let Some(mut stream) = stream else { return Err(FleetError::Resync("no range to watch".into())) };
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    // A revision the store had reached at the last check; the watch must
    // have caught up with it by the next one.
    let mut expect: Option<i64> = None;
    loop {
        tokio::select! {
            message = stream.message() => {
                let Some(response) = message? else {
                    return Err(FleetError::Resync("the watch stream ended".into()));
                };
                apply(fleet, shared, response)?;
            }
            _ = check.tick() => {
                let seen = fleet.view().header_revision;
                if expect.is_some_and(|r| seen < r) {
                    return Err(FleetError::Resync(format!("the watch is silent (at {seen}, store at {})", expect.unwrap_or(0))));
                }
                let resp = timed!(client.get(fleet.key(store::EPOCH), None))?;
                let epoch = resp.kvs().first().map(|kv| kv.value().to_vec());
                if epoch.as_deref() != fleet.view().epoch() {
                    return Err(FleetError::Resync("the epoch changed".into()));
                }
                let revision = resp.header().map_or(0, |h| h.revision());
                if revision < seen {
                    return Err(FleetError::Resync(format!("the store's revision went backwards ({seen} → {revision})")));
                }
                expect = (revision > seen).then_some(revision);
                fleet.found(shared);
                // Keep the watch's progress flowing on an idle store.
                let _ = stream.request_progress().await;
            }
            _ = fleet.wake.notified() => {
                fleet.publish_outbox(shared).await?;
                fleet.push_config_percent(shared).await;
            }
        }
    }
}

/// One watch response into the view, in place (the cost of an event does
/// not grow with the view), then into `Control` when the shared state
/// changed.
fn apply(fleet: &Fleet, shared: &Shared, response: WatchResponse) -> Result<(), FleetError> {
    if response.compact_revision() > 0 {
        return Err(FleetError::Resync(format!("compacted past our revision (to {})", response.compact_revision())));
    }
    if response.canceled() {
        return Err(FleetError::Resync(format!("watch cancelled: {}", response.cancel_reason())));
    }
    let revision = response.header().map_or(0, |h| h.revision());
    let prefix = fleet.key("");
    let (mut state_changed, mut tally_changed) = (false, false);
    {
        let mut view = fleet.view.lock().unwrap_or_else(|e| e.into_inner());
        if revision < view.header_revision {
            return Err(FleetError::Resync(format!("revision went backwards ({} → {revision})", view.header_revision)));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(rel) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix.as_str())) else { continue };
            let entry = match event.event_type() {
                EventType::Put => Some(Entry {
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                }),
                EventType::Delete => None,
            };
            state_changed |= store::is_shared(rel);
            tally_changed |= rel == store::COUNTERS;
            if rel == store::COUNTERS_LOCK && entry.is_none() {
                fleet.tally_wake.notify_one();
            }
            view.apply(rel, entry, kv.mod_revision());
        }
        view.header_revision = view.header_revision.max(revision);
        if view.epoch() != fleet.epoch().as_deref() {
            // Someone deleted or replaced the epoch: never apply an emptied
            // store over our rollbacks; the full read handles the reset.
            return Err(FleetError::Resync("the epoch key changed".into()));
        }
    }
    if state_changed {
        fleet.apply_view(shared);
    }
    if tally_changed {
        fleet.tally_changed(shared);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        assert_eq!(b.step(1.0), Duration::from_millis(100));
        assert_eq!(b.step(0.0), Duration::from_millis(100), "half of 200ms");
        assert_eq!(b.step(1.0), Duration::from_millis(400));
        assert_eq!(b.step(1.0), Duration::from_millis(800));
        assert_eq!(b.step(1.0), Duration::from_millis(800), "capped");
        b.reset();
        assert_eq!(b.step(0.5), Duration::from_millis(75));
    }
}
