//! Hot reload: validate the whole file, build the snapshot off the request
//! path, swap it in with one store. Triggers: the file changing on disk
//! (including replacement by rename, as Kubernetes ConfigMaps do), SIGHUP
//! (wired in `main.rs`) and `POST /reload`. An invalid file changes nothing.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{self, Config, ConfigError};
use crate::control::state::{now_rfc3339, Actor};
use crate::proxy::snapshot::Snapshot;
use crate::Shared;

/// Shown in `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    pub version: u64,
    pub loaded_at: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Settings that changed in the file but only take effect on restart.
    pub restart_needed: Vec<String>,
}

impl ReloadStatus {
    pub fn new(version: u64) -> Self {
        ReloadStatus {
            version,
            loaded_at: now_rfc3339(),
            last_error: None,
            last_error_at: None,
            restart_needed: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(#[from] crate::proxy::tls::TlsError),
}

/// Reload the config file now. Returns the new config version.
pub fn reload(shared: &Shared, trigger: &str) -> Result<u64, ReloadError> {
    // Held for the whole reload, so two triggers cannot interleave.
    let mut status = shared.reload_status.lock().unwrap_or_else(|e| e.into_inner());
    let (config, tls) = match prepare(shared) {
        Ok(prepared) => prepared,
        Err(error) => {
            shared.metrics.reloads_error.inc();
            status.last_error = Some(error.to_string());
            status.last_error_at = Some(now_rfc3339());
            tracing::error!(trigger, %error, "config reload rejected; the previous config keeps serving");
            shared.control.effects().audit(
                &Actor::Config,
                "reload",
                json!({ "result": "error", "trigger": trigger, "error": error.to_string() }),
            );
            return Err(error);
        }
    };
    let previous = shared.snapshot.load_full();
    let restart_needed = restart_needed(&previous.config, &config);
    let percent = config.split.percent;
    let version = previous.version + 1;
    let snapshot = Snapshot::build(config, version, Some(&previous), &shared.metrics);
    shared.rules.update(&snapshot.config.rules);
    shared.snapshot.store(Arc::new(snapshot));
    if let (Some(slot), Some(tls)) = (&shared.tls, tls) {
        slot.store(tls);
    }
    shared.control.config_percent_seen(percent);
    shared.metrics.reloads_ok.inc();
    *status = ReloadStatus { restart_needed, ..ReloadStatus::new(version) };
    if !status.restart_needed.is_empty() {
        tracing::warn!(settings = ?status.restart_needed, "changed settings take effect only after a restart");
    }
    tracing::info!(trigger, version, "config reloaded");
    shared.control.effects().audit(
        &Actor::Config,
        "reload",
        json!({ "result": "ok", "trigger": trigger, "new": version }),
    );
    Ok(version)
}

/// Everything a reload can fail on, checked before anything is swapped:
/// the file, and the certificates when TLS is on (re-read every time, so a
/// renewed certificate is picked up by a reload).
fn prepare(shared: &Shared) -> Result<(Config, Option<Arc<rustls::ServerConfig>>), ReloadError> {
    let config = config::load(&shared.config_path)?;
    let tls = match (&shared.tls, &config.server.tls) {
        (Some(_), Some(tls)) => Some(crate::proxy::tls::server_config(tls)?),
        _ => None,
    };
    Ok((config, tls))
}

/// Listener and admin settings are read at start.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.server != new.server {
        changed.push("server".to_string());
    }
    if old.admin != new.admin {
        changed.push("admin".to_string());
    }
    if old.state != new.state {
        changed.push("state".to_string());
    }
    if old.ledger != new.ledger {
        changed.push("ledger".to_string());
    }
    if old.fleet != new.fleet {
        changed.push("fleet".to_string());
    }
    changed
}

/// Watch the config file's directory (a rename into place replaces the
/// inode, so watching the file itself would miss it) and reload when the
/// file's content changes.
pub fn spawn_watcher(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let path = shared.config_path.clone();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => ".".into(),
    };
    // The baseline is read before the watch starts: any later change then
    // both raises an event and differs from it.
    let mut last = std::fs::read(&path).ok();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own read of the file is an access event: ignore those, or
        // every reload check would trigger the next one.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            return tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload")
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return tracing::error!(dir = %dir.display(), error = %e, "cannot watch the config directory");
    }
    tokio::spawn(async move {
        let _watcher = watcher; // dropping it stops the notifications
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            // Editors and ConfigMap updates write in several steps: settle first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            let current = tokio::fs::read(&path).await.ok();
            if current.is_some() && current != last {
                last = current;
                let _ = reload(&shared, "file");
            }
        }
    });
}
