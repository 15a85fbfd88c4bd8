//! Fleet mode (docs/src/fleet.md): every replica shares the desired percent and the
//! rollback levels through etcd v3.
//!
//! Decisions stay where they are: [`crate::control::change::apply`]
//! decides, [`Control`](crate::control::state::Control) holds the gate the
//! request path reads. This module is the other store behind the same seam
//! (`crate::control::store`, which states fleet mode's safety rules): a
//! change towards risk is a compare-and-set transaction on the revisions
//! the decision was made on (with its audit entry in the same
//! transaction), and rollbacks reach the store through the outbox
//! ([`Fleet::publish_outbox`], create-if-absent).
//!
//! - [`store`]: key layout, decoding, the replica's view of the prefix.
//! - `changes`: the compare-and-set changes and the outbox publisher.
//! - [`watch`]: the resume loop (watch, periodic linearizable read, resync).
//! - [`members`]: the lease-held member entry and counters.
//! - [`tally`]: the one aggregator of the members' counters.

mod changes;
pub mod hook;
pub mod members;
mod ramp;
pub mod store;
pub mod tally;
pub mod watch;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::config::{FleetConfig, PasswordSource, PoolName};
use crate::control::change::Change;
use crate::control::rules::local::PoolCounts;
use crate::control::state::Actor;
use crate::Shared;
use store::{Entry, Member, Tally, View};

/// How long one store operation may take before the store counts as
/// unreachable for it.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The name of the fleet's total among the series `local` rules window;
/// no replica name is empty.
pub const FLEET_SERIES: &str = "";
/// How long `/status` waits for the members' list.
const LIST_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts of a compare-and-set change before giving up on a busy store.
const CAS_ATTEMPTS: usize = 5;

pub struct Fleet {
    pub config: FleetConfig,
    prefix: String,
    client: Mutex<Option<Client>>,
    view: Mutex<View>,
    /// The epoch this replica synced to; `None` before the first sync.
    epoch: Mutex<Option<Vec<u8>>>,
    connected: AtomicBool,
    /// Values under the prefix that did not decode, and the last store error.
    errors: Mutex<Vec<String>>,
    last_error: Mutex<Option<String>>,
    /// The members at the last time they were listed (`/status`), and
    /// those listed before that are gone since.
    members: Mutex<Vec<Member>>,
    gone: Mutex<BTreeSet<String>>,
    /// One shared change at a time from this replica.
    write: tokio::sync::Mutex<()>,
    /// Woken when the outbox or the config's percent has something.
    pub wake: Arc<Notify>,
    /// Woken after each apply: the member entry is refreshed.
    applied: Notify,
    /// Woken after each apply: the hook task looks for a pending L3.
    applied_hook: Notify,
    /// Woken when `locks/counters` went away: another replica takes over.
    tally_wake: Notify,
    /// The member lease, which also holds the hook lock.
    lease: Mutex<Option<i64>>,
    /// The percent a new store is seeded with when this replica had no
    /// state file (the config's); afterwards the local desired percent.
    seed: Mutex<Option<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Not an outage: the store's history moved under us (compaction,
    /// reset, a silent watch) and needs a full re-read.
    #[error("resync: {0}")]
    Resync(String),
    #[error("{0}")]
    Fatal(String),
}

/// One store call within [`OP_TIMEOUT`]. `UNAVAILABLE` is retried within
/// that time: the client's balanced channel keeps picking a member that
/// died (connection refused) and a member answers "leader changed" during
/// an election. Every change is a compare-and-set, so running one twice
/// cannot apply it twice.
macro_rules! timed {
    ($call:expr) => {{
        let deadline = tokio::time::Instant::now() + $crate::control::fleet::OP_TIMEOUT;
        let mut attempt = 0u32;
        loop {
            match tokio::time::timeout_at(deadline, $call).await {
                Err(_) => break Err($crate::control::fleet::FleetError::Timeout($crate::control::fleet::OP_TIMEOUT)),
                Ok(Ok(v)) => break Ok(v),
                Ok(Err(e)) if $crate::control::fleet::retryable(&e) && attempt < 8 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(25 * u64::from(attempt))).await;
                }
                Ok(Err(e)) => break Err($crate::control::fleet::FleetError::from(e)),
            }
        }
    }};
}
pub(crate) use timed;

pub(crate) fn retryable(e: &etcd_client::Error) -> bool {
    // 14 = UNAVAILABLE.
    matches!(e, etcd_client::Error::GRpcStatus(s) if i32::from(s.code()) == 14)
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A wrong user or password: start-up stops with a clear message instead of
/// retrying forever.
fn is_auth_error(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            // 16 = UNAUTHENTICATED; etcd answers a wrong password with
            // INVALID_ARGUMENT and this message.
            i32::from(s.code()) == 16
                || s.message().contains("authentication failed")
                || s.message().contains("permission denied")
        }
        _ => false,
    }
}

impl Fleet {
    pub fn new(config: FleetConfig, wake: Arc<Notify>, seed: Option<u8>) -> Fleet {
        Fleet {
            prefix: config.prefix(),
            config,
            client: Mutex::new(None),
            view: Mutex::new(View::default()),
            epoch: Mutex::new(None),
            connected: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            members: Mutex::new(Vec::new()),
            gone: Mutex::new(BTreeSet::new()),
            write: tokio::sync::Mutex::new(()),
            wake,
            applied: Notify::new(),
            applied_hook: Notify::new(),
            tally_wake: Notify::new(),
            lease: Mutex::new(None),
            seed: Mutex::new(seed),
        }
    }

    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The client, connecting (and authenticating) on first use.
    async fn client(&self) -> Result<Client, FleetError> {
        if let Some(c) = self.client.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member without a leader answers at once instead of waiting.
            .with_require_leader(true);
        if let Some(user) = &self.config.user {
            let password = match &self.config.password {
                Some(PasswordSource::Env(var)) => std::env::var(var).map_err(|_| {
                    FleetError::Fatal(format!("fleet.password_env: environment variable {var} is not set"))
                })?,
                Some(PasswordSource::File(path)) => std::fs::read_to_string(path)
                    .map_err(|e| FleetError::Fatal(format!("fleet.password_file {}: {e}", path.display())))?
                    .trim()
                    .to_string(),
                None => String::new(),
            };
            options = options.with_user(user.clone(), password);
        }
        if let Some(ca) = &self.config.tls_ca {
            let pem =
                std::fs::read(ca).map_err(|e| FleetError::Fatal(format!("fleet.tls.ca {}: {e}", ca.display())))?;
            options = options
                .with_tls(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(pem)));
        }
        let client = tokio::time::timeout(OP_TIMEOUT, Client::connect(&self.config.etcd, Some(options)))
            .await
            .map_err(|_| FleetError::Timeout(OP_TIMEOUT))?
            .map_err(|e| {
                if is_auth_error(&e) {
                    let user = self.config.user.as_deref().unwrap_or("");
                    FleetError::Fatal(format!("etcd rejected the credentials of fleet.user {user:?}: {e}"))
                } else {
                    FleetError::Etcd(e)
                }
            })?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }

    /// At start: wait up to `sync_timeout` for the store, then serve the
    /// local state whatever happened. Only a configuration problem (wrong
    /// credentials, unreadable password or CA) stops the start.
    pub async fn first_sync(&self, shared: &Shared) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.config.sync_timeout;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.full_read(shared)).await;
            match attempt {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(FleetError::Fatal(m))) => return Err(format!("fleet: {m}")),
                Ok(Err(e)) => self.lost(shared, &e),
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    etcd = ?self.config.etcd,
                    after = ?self.config.sync_timeout,
                    "fleet store unreachable at start: serving the local state file until it is back"
                );
                return Ok(());
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_millis(100))).await;
        }
    }

    /// Mark the store unreachable (logged once per outage).
    pub fn lost(&self, shared: &Shared, e: &FleetError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        // A fresh channel next time: the balanced one can keep sending to a
        // member that died.
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %e, "fleet store lost: serving the last applied state; rollbacks wait in the outbox");
        }
        shared.metrics.fleet_connected.set(0);
    }

    pub(crate) fn found(&self, shared: &Shared) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if !self.connected.swap(true, Ordering::AcqRel) {
            tracing::info!(revision = self.view().state_revision, "fleet store connected");
        }
        shared.metrics.fleet_connected.set(1);
    }

    pub fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn epoch(&self) -> Option<Vec<u8>> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the whole prefix at one revision and apply it. Detects a store
    /// that lost its data (epoch gone or changed, revision backwards) and
    /// re-publishes the local rollbacks then.
    pub async fn full_read(&self, shared: &Shared) -> Result<(), FleetError> {
        let mut client = self.client().await?;
        // One transaction, one revision: the watched ranges but the audit
        // entries (which only grow), and the newest audit entry's revision.
        let audit = self.key("audit/");
        let newest = GetOptions::new().with_prefix().with_keys_only().with_limit(1);
        let mut ranges: Vec<(String, String)> = Vec::new();
        for (start, end) in store::watched_ranges(&self.prefix) {
            // Split around the audit entries.
            if audit >= start && audit < end {
                ranges.push((start, audit.clone()));
                ranges.push((self.key(&store::range_end("audit/")), end));
            } else {
                ranges.push((start, end));
            }
        }
        let mut ops: Vec<TxnOp> =
            ranges.into_iter().map(|(start, end)| TxnOp::get(start, Some(GetOptions::new().with_range(end)))).collect();
        ops.push(TxnOp::get(audit, Some(newest.with_sort(SortTarget::Mod, SortOrder::Descend))));
        let txn = Txn::new().and_then(ops);
        let resp = timed!(client.txn(txn.clone()))?;
        let mut view = View { header_revision: resp.header().map_or(0, |h| h.revision()), ..View::default() };
        let mut kvs = Vec::new();
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                kvs.extend(get.kvs().to_vec());
            }
        }
        for kv in &kvs {
            let Some(rel) = kv.key_str().ok().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
            let entry = Entry {
                value: kv.value().to_vec(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            };
            view.apply(rel, Some(entry), kv.mod_revision());
        }
        let known = self.epoch();
        let old_revision = self.view.lock().unwrap_or_else(|e| e.into_inner()).header_revision;
        let synced_before = known.is_some() || shared.control.state().revision > 0;
        let reset = match (&known, view.epoch()) {
            (Some(k), Some(e)) => k.as_slice() != e,
            (_, None) => synced_before,
            (None, Some(_)) => false,
        } || view.header_revision < old_revision;
        if reset {
            // Before anything from the (empty) store is applied: the
            // rollbacks must survive it.
            let requeued = shared.control.submit_here(&Change::Requeue, &Actor::Rule("fleet".into()));
            let levels: Vec<_> = requeued.map(|a| a.before.rollbacks.into_keys().collect()).unwrap_or_default();
            tracing::warn!(
                ?levels,
                "fleet store reset detected (data lost or replaced): re-publishing local rollbacks"
            );
            shared.control.effects().audit(&Actor::Rule("fleet".into()), "store reset", json!({ "republish": levels }));
        }
        if view.epoch().is_none() {
            self.init_store(&mut client, shared, reset).await?;
            // The reset is handled: the next read takes the new epoch and
            // revisions as they are.
            *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.view.lock().unwrap_or_else(|e| e.into_inner()).header_revision = 0;
            return Box::pin(self.full_read(shared)).await;
        }
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = view.epoch().map(<[u8]>::to_vec);
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        self.found(shared);
        self.apply_view(shared);
        self.tally_changed(shared);
        if reset {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A new (or wiped) store: create the epoch and seed the percent, in
    /// one create-if-absent transaction so replicas starting together
    /// agree on one epoch.
    async fn init_store(&self, client: &mut Client, shared: &Shared, reset: bool) -> Result<(), FleetError> {
        let seed =
            self.seed.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(shared.control.state().desired_percent);
        let epoch = format!("{:x}-{}", now_ns(), self.config.replica);
        let action = if reset { "store reset" } else { "store initialised" };
        let percent = json!({ "percent": seed, "actor": "config", "replica": self.config.replica, "time": crate::control::state::now_rfc3339() });
        let txn = Txn::new().when([Compare::create_revision(self.key(store::EPOCH), CompareOp::Equal, 0)]).and_then([
            TxnOp::put(self.key(store::EPOCH), epoch, None),
            TxnOp::put(self.key(store::PERCENT), percent.to_string(), None),
            self.audit_op("fleet", action, json!({ "percent": seed })),
        ]);
        let resp = timed!(client.txn(txn.clone()))?;
        if resp.succeeded() {
            tracing::info!(percent = seed, action, "fleet store initialised with a new epoch");
        }
        Ok(())
    }

    /// Decode the view and apply it to `Control`.
    pub fn apply_view(&self, shared: &Shared) {
        let view = self.view();
        let (remote, errors) = view.remote();
        {
            let mut old = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            if *old != errors {
                for e in errors.iter().filter(|e| !old.contains(e)) {
                    tracing::error!(error = %e, "fleet: a value under the prefix does not decode; ignored");
                }
                *old = errors;
            }
        }
        // Remote changes send no level event: the replica that made a change
        // notifies (and runs the hook), not all of them.
        let change = Change::Remote { remote, revision: view.state_revision };
        let changed = shared.control.submit_here(&change, &Actor::Rule("fleet".into())).is_ok_and(|a| a.changed());
        shared.metrics.fleet_revision.set(view.state_revision);
        shared.control.export(&shared.metrics);
        if changed {
            *self.seed.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.applied.notify_one();
            self.applied_hook.notify_one();
        }
    }

    /// The fleet's summed counters (`counters`, see [`tally`]), from the view.
    pub fn tally(&self) -> Option<Tally> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::from_slice(&view.keys.get(store::COUNTERS)?.value).ok()
    }

    /// The `counters` key changed: `grayshift_fleet_members` follows the
    /// aggregator's count.
    pub(crate) fn tally_changed(&self, shared: &Shared) {
        if let Some(tally) = self.tally() {
            shared.metrics.fleet_members.set(tally.members as i64);
        }
    }

    /// Read the members' entries now, with one range read (for `/status`
    /// and so for `ctl set-percent --wait`; no replica watches them). A
    /// member listed before and missing now is gone. While the store is
    /// unreachable, or slow to answer, the last list stays: `/status`
    /// never waits long on etcd.
    pub async fn list_members(&self, shared: &Shared) {
        if !self.is_connected() {
            return;
        }
        let Ok(mut client) = self.client().await else { return };
        let options = GetOptions::new().with_range(self.key(&store::range_end(store::MEMBERS)));
        let read = client.get(self.key(store::MEMBERS), Some(options));
        let Ok(Ok(resp)) = tokio::time::timeout(LIST_TIMEOUT, read).await else { return };
        let members: Vec<Member> = resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect();
        let live: HashSet<&str> = members.iter().map(|m| m.replica.as_str()).collect();
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        let mut listed = self.members.lock().unwrap_or_else(|e| e.into_inner());
        for before in listed.iter().filter(|b| !live.contains(b.replica.as_str())) {
            if before.replica != self.config.replica && gone.insert(before.replica.clone()) {
                tracing::info!(replica = %before.replica, "fleet member gone (its lease expired or it stopped)");
            }
        }
        gone.retain(|name| !live.contains(name.as_str()));
        shared.metrics.fleet_members.set(members.len() as i64);
        *listed = members;
    }

    /// The member lease while it is kept alive.
    pub fn lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_lease(&self, lease: Option<i64>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    pub(crate) fn audit_op(&self, actor: &str, action: &str, detail: Value) -> TxnOp {
        let mut entry = json!({
            "time": crate::control::state::now_rfc3339(),
            "actor": actor,
            "action": action,
            "replica": self.config.replica,
        });
        if let (Some(obj), Value::Object(extra)) = (entry.as_object_mut(), detail) {
            obj.extend(extra);
        }
        TxnOp::put(self.key(&store::audit_key(now_ns(), &self.config.replica)), entry.to_string(), None)
    }

    /// The counters fleet-wide `local` rules window: the fleet's total
    /// (one series, [`FLEET_SERIES`]) while the store answers and an
    /// aggregator has published it, else this replica's own (safety first:
    /// cut off from the store, its own traffic still fires its rules).
    /// Switching between the two starts a new series, which counts from
    /// its next snapshot: one interval without data, never a jump.
    pub fn member_counters(&self, shared: &Shared) -> Vec<(String, [PoolCounts; 2])> {
        match self.tally().filter(|_| self.is_connected()) {
            Some(tally) => vec![(FLEET_SERIES.to_string(), store::pools_of(&tally.pools))],
            None => vec![(self.config.replica.clone(), PoolName::ALL.map(|p| PoolCounts::read(&shared.metrics, p)))],
        }
    }

    /// The fleet's last `limit` audit entries, oldest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<Value>, FleetError> {
        let mut client = self.client().await?;
        let options =
            GetOptions::new().with_prefix().with_limit(limit as i64).with_sort(SortTarget::Key, SortOrder::Descend);
        let resp = timed!(client.get(self.key("audit/"), Some(options.clone())))?;
        Ok(resp.kvs().iter().rev().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    /// `/status.fleet`.
    pub fn status(&self, shared: &Shared) -> Value {
        let members: Vec<Value> = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|m| {
                json!({
                    "replica": m.replica,
                    "revision": m.revision,
                    "effective_percent": m.effective_percent,
                    "rollback_level": m.rollback_level,
                    "seen": m.seen,
                })
            })
            .collect();
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(e) = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            errors.insert(0, format!("store: {e}"));
        }
        let state = shared.control.state();
        json!({
            "store": if self.is_connected() { "connected" } else { "unreachable" },
            "name": self.config.name,
            "replica": self.config.replica,
            "revision": state.revision,
            "members": members,
            "gone": self.gone.lock().unwrap_or_else(|e| e.into_inner()).iter().collect::<Vec<_>>(),
            "outbox": state.outbox,
            "error": if errors.is_empty() { Value::Null } else { Value::String(errors.join("; ")) },
        })
    }

    /// Members and watch loop, until shutdown.
    pub fn spawn(self: &Arc<Self>, shared: Arc<Shared>, shutdown: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(watch::run(self.clone(), shared.clone(), shutdown.clone()));
        tokio::spawn(members::run(self.clone(), shared.clone(), shutdown.clone()));
        tokio::spawn(tally::run(self.clone(), shared.clone(), shutdown.clone()));
        tokio::spawn(hook::run(self.clone(), shared, shutdown));
    }

    pub(super) fn put_options(lease: i64) -> PutOptions {
        PutOptions::new().with_lease(lease)
    }
}
