//! What happens when a level changes: `[[notify]]` webhooks on every change
//! ([`notify`]), and the L3 data-rollback hook (`rollback.hook`) once per L3
//! activation.
//!
//! Both consume [`Event`]s from `Control`, whoever made the change (a
//! rule or the admin API). Nothing here can block the rule loop or the
//! proxy: every call runs in its own task with a timeout.
//!
//! The hook's outcome is recorded with `Control::hook_outcome` (audited,
//! persisted) and counted in `grayshift_hook_runs_total{result}`. A failed
//! hook keeps L3 active; `/status` shows `hook: failed` and why. If
//! grayshift stops while a hook runs (or before it starts), the state file
//! still says `pending` and the next start runs it again: hooks must be
//! idempotent. A hook that finished (either way) is never re-run for the
//! same activation.

use std::collections::{HashSet, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};

use crate::client;
use crate::config::{HookAction, HookConfig, Level};
use crate::control::notify;
use crate::control::rules::engine::fmt_duration;
use crate::control::state::{Activation, Event, HookStatus};
use crate::Shared;

/// Lines of hook output kept for the status detail.
const OUTPUT_TAIL_LINES: usize = 5;

/// Handle level events until shutdown (or until `Control` is gone).
pub async fn run(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<Event>, mut shutdown: watch::Receiver<bool>) {
    let hooks = Arc::new(HookRunner { shared: shared.clone(), running: Mutex::new(HashSet::new()) });
    // An L3 whose hook never finished (grayshift stopped first) runs it now.
    hooks.run_if_pending();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Some(event) = event else { return };
        shared.control.export(&shared.metrics);
        notify::post(&shared, &event);
        if matches!(&event, Event::Level(e) if e.level == Level::L3 && e.active) {
            hooks.run_if_pending();
        }
    }
}

struct HookRunner {
    shared: Arc<Shared>,
    /// Activations whose hook is running now, so two triggers (start-up and
    /// the event) cannot run it twice.
    running: Mutex<HashSet<String>>,
}

/// What identifies one activation of L3.
fn activation_key(a: &Activation) -> String {
    format!("{}\u{0}{}\u{0}{}", a.since, a.actor, a.reason)
}

impl HookRunner {
    /// Start the hook if L3 is active and its hook has not run yet.
    fn run_if_pending(self: &Arc<Self>) {
        let state = self.shared.control.state();
        let Some(activation) = state.rollbacks.get(&Level::L3) else { return };
        if activation.hook != Some(HookStatus::Pending) {
            return;
        }
        // Fleet mode: the hook runs exactly once across the fleet, under
        // the store's lock (control::fleet::hook), not here.
        if !self.shared.control.store().runs_hook_here() {
            return;
        }
        let Some(hook) = self.shared.config().rollback.hook.clone() else {
            // Configured when L3 fired, removed by a reload since.
            let detail = "rollback.hook is no longer configured; run the data rollback by hand".to_string();
            self.shared.control.hook_outcome(HookStatus::Failed, detail);
            self.shared.metrics.hook_runs.with_label_values(&["failed"]).inc();
            return;
        };
        let key = activation_key(activation);
        if !self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
            return;
        }
        let (runner, activation) = (self.clone(), activation.clone());
        tokio::spawn(async move {
            runner.run(&hook, &activation).await;
            runner.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        });
    }

    async fn run(&self, hook: &HookConfig, activation: &Activation) {
        let (status, detail) = run_hook(&self.shared, hook, activation, None).await;
        let still_active = self
            .shared
            .control
            .state()
            .rollbacks
            .get(&Level::L3)
            .is_some_and(|a| activation_key(a) == activation_key(activation));
        if still_active {
            self.shared.control.hook_outcome(status.clone(), detail.clone());
        }
        if status == HookStatus::Succeeded {
            tracing::warn!(detail, "L3 data-rollback hook succeeded");
        } else {
            tracing::error!(detail, "L3 data-rollback hook FAILED: L3 stays active; roll the data back by hand");
        }
        if !still_active {
            tracing::warn!("L3 was resumed while its hook ran: the outcome is logged but not recorded on the state");
        }
    }
}

/// Fleet mode: which activation a hook run is for, and the fencing token
/// (the lock key's revision) that proves the lock was held.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    pub activation: i64,
    pub token: i64,
}

/// Run the configured hook once for `activation` and count the outcome.
pub async fn run_hook(
    shared: &Shared,
    hook: &HookConfig,
    activation: &Activation,
    fence: Option<Fence>,
) -> (HookStatus, String) {
    let rule = activation.actor.strip_prefix("rule:").unwrap_or(&activation.actor);
    tracing::warn!(rule, reason = %activation.reason, ?fence, "running the L3 data-rollback hook");
    let exposed = exposed_csv(shared).await;
    let exposed = exposed.as_deref();
    let outcome = match &hook.action {
        HookAction::Exec(argv) => exec(argv, hook.timeout, rule, &activation.reason, fence, exposed).await,
        HookAction::Webhook(url, ca) => {
            webhook(url, ca.as_deref(), hook.timeout, rule, activation, fence, exposed).await
        }
    };
    let (status, detail) = match outcome {
        Ok(detail) => (HookStatus::Succeeded, detail),
        Err(detail) => (HookStatus::Failed, detail),
    };
    let result = if status == HookStatus::Succeeded { "succeeded" } else { "failed" };
    shared.metrics.hook_runs.with_label_values(&[result]).inc();
    (status, detail)
}

/// With the exposure ledger on: the CSV of every key `new` served in this
/// release (in fleet mode, with a shared PostgreSQL sink: by any replica),
/// written for the hook (`GRAYSHIFT_EXPOSED`). A ledger that cannot be read
/// does not stop the hook: it runs without the file and the reason is logged.
async fn exposed_csv(shared: &Shared) -> Option<String> {
    let ledger = shared.ledger.as_ref()?;
    let config = shared.config();
    match ledger.write_csv_for_hook(&config.split.group, &config.state.file).await {
        Ok(path) => Some(path.display().to_string()),
        Err(e) => {
            tracing::error!(error = %e, "cannot write the exposure CSV for the L3 hook; it runs without GRAYSHIFT_EXPOSED");
            None
        }
    }
}

/// Run the hook program (argv, no shell) with a timeout; exit 0 succeeds.
async fn exec(
    argv: &[String],
    timeout: Duration,
    rule: &str,
    reason: &str,
    fence: Option<Fence>,
    exposed: Option<&str>,
) -> Result<String, String> {
    let mut command = tokio::process::Command::new(&argv[0]);
    if let Some(path) = exposed {
        command.env("GRAYSHIFT_EXPOSED", path);
    }
    if let Some(f) = fence {
        command.env("GRAYSHIFT_ACTIVATION", f.activation.to_string()).env("GRAYSHIFT_FENCE", f.token.to_string());
    }
    command
        .args(&argv[1..])
        .env("GRAYSHIFT_LEVEL", "L3")
        .env("GRAYSHIFT_RULE", rule)
        .env("GRAYSHIFT_REASON", reason)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
    let stdout = tokio::spawn(tail(child.stdout.take(), "stdout"));
    let stderr = tokio::spawn(tail(child.stderr.take(), "stderr"));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if waited.is_err() {
        // Only the hook process itself is killed; a hook that starts
        // children of its own should run them in the foreground.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    // A grandchild may hold the pipes open: wait a moment, not forever.
    let grace = Duration::from_secs(1);
    let out = tokio::time::timeout(grace, stdout).await.ok().and_then(Result::ok).unwrap_or_default();
    let err = tokio::time::timeout(grace, stderr).await.ok().and_then(Result::ok).unwrap_or_default();
    let output = if err.is_empty() { out } else { err };
    let with_output = |s: String| if output.is_empty() { s } else { format!("{s}; output: {output}") };
    match waited {
        Ok(Ok(status)) if status.success() => Ok(with_output(format!("{:?} exited 0", argv[0]))),
        Ok(Ok(status)) => Err(with_output(format!("{:?} failed: {status}", argv[0]))),
        Ok(Err(e)) => Err(format!("waiting for {:?}: {e}", argv[0])),
        Err(_) => Err(with_output(format!("{:?} timed out after {} and was killed", argv[0], fmt_duration(timeout)))),
    }
}

/// Log a hook's output line by line; return its last lines.
async fn tail(stream: Option<impl AsyncRead + Unpin>, name: &'static str) -> String {
    let Some(stream) = stream else { return String::new() };
    let mut lines = BufReader::new(stream).lines();
    let mut last = VecDeque::new();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "grayshift::hook", stream = name, "{line}");
        if last.len() == OUTPUT_TAIL_LINES {
            last.pop_front();
        }
        last.push_back(line.chars().take(200).collect::<String>());
    }
    Vec::from(last).join(" | ")
}

/// POST the activation to the hook webhook; a 2xx answer succeeds.
async fn webhook(
    url: &str,
    ca: Option<&std::path::Path>,
    timeout: Duration,
    rule: &str,
    activation: &Activation,
    fence: Option<Fence>,
    exposed: Option<&str>,
) -> Result<String, String> {
    let mut body = json!({
        "event": "rollback_hook",
        "level": "L3",
        "rule": rule,
        "reason": activation.reason,
        "since": activation.since,
        "exposed": exposed,
    });
    if let Some(f) = fence {
        body["activation"] = json!(f.activation);
        body["fence"] = json!(f.token);
    }
    match client::request(Method::POST, url, ca, &[], Some(Bytes::from(body.to_string())), timeout).await {
        Ok((status, _)) if status.is_success() => Ok(format!("webhook answered {status}")),
        Ok((status, body)) => {
            let body = String::from_utf8_lossy(&body);
            Err(format!("webhook answered {status}: {}", body.chars().take(200).collect::<String>()))
        }
        Err(e) => Err(format!("webhook failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_passes_the_environment_and_reports_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let argv = |script: &str| vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string(), "hook".to_string()];
        let script =
            format!("echo \"$GRAYSHIFT_LEVEL $GRAYSHIFT_RULE $GRAYSHIFT_REASON\" > {}; echo done", out.display());
        let ok = exec(&argv(&script), Duration::from_secs(10), "diff", "rows differ", None, None).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "L3 diff rows differ\n");
        assert!(ok.contains("exited 0") && ok.contains("output: done"), "{ok}");

        let failed =
            exec(&argv("echo oops >&2; exit 3"), Duration::from_secs(10), "r", "x", None, None).await.unwrap_err();
        assert!(failed.contains("exit status: 3") && failed.contains("oops"), "{failed}");

        let slow = exec(&argv("sleep 30"), Duration::from_millis(200), "r", "x", None, None).await.unwrap_err();
        assert!(slow.contains("timed out after 200ms"), "{slow}");

        let missing =
            exec(&["/nonexistent/hook".to_string()], Duration::from_secs(1), "r", "x", None, None).await.unwrap_err();
        assert!(missing.contains("cannot start"), "{missing}");
    }
}
