//! grayshift: a gray-release (canary) reverse proxy.
//!
//! [`start`] runs the whole proxy without the CLI: it loads the config,
//! restores the persisted run-time state, binds the proxy and admin
//! listeners and spawns the reload watcher and the rule engine. `main.rs`
//! only parses arguments, sets up logging and forwards signals.

pub mod admin;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod migration;
pub mod outbound_tls;
pub mod path_normal;
pub mod pg_target;
pub mod proxy;
pub mod shadow;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::control::state::{Control, StateFileError};
use crate::control::store::Store;
use crate::control::{reload, rules};
use crate::metrics::Metrics;
use crate::proxy::snapshot::Snapshot;
use crate::proxy::{server, tls};

/// Everything the listeners, the reloader and the rule engine share.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub control: Control,
    pub metrics: Metrics,
    pub config_path: PathBuf,
    pub reload_status: Mutex<reload::ReloadStatus>,
    pub rules: rules::RuleBoard,
    pub admin_token: Option<String>,
    /// The proxy listener's TLS config, when `server.tls` is set.
    pub tls: Option<tls::TlsSlot>,
    pub access_log: bool,
    /// The schema gate's last verdict, for `/status.schema`.
    pub schema: control::release::gate::GateBoard,
    /// The exposure ledger, when `[ledger]` is configured (read at start).
    pub ledger: Option<Arc<control::ledger::Ledger>>,
    /// `[fleet]`: the shared state through etcd; `None` in single mode.
    /// Only for the wiring here and `/status`: changes go through
    /// `control.submit`, whichever store keeps them.
    pub fleet: Option<Arc<control::fleet::Fleet>>,
    /// What shadow reads have compared and learned (docs/src/shadow.md);
    /// idle without `[shadow]`, kept across reloads.
    pub shadow: shadow::Shadow,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        self.snapshot.load().config.clone()
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    /// One log line per request (`--access-log`).
    pub access_log: bool,
    /// Watch the config file and reload when it changes.
    pub watch_config: bool,
}

impl Options {
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Options { config_path: config_path.into(), access_log: false, watch_config: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    State(#[from] StateFileError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Admin(String),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Fleet(String),
}

/// A running grayshift.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, drain in-flight requests (up to `server.drain_timeout`).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Wait until both listeners have drained.
    pub async fn wait(self) {
        for server in self.servers {
            let _ = server.await;
        }
    }
}

/// The admin token: `admin.token_file` if set, else the environment
/// variable named by `admin.token_env`. Empty counts as unset.
pub fn admin_token(config: &Config) -> Result<Option<String>, StartError> {
    let token = match &config.admin.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| StartError::Admin(format!("cannot read admin.token_file {}: {e}", path.display())))?,
        ),
        None => std::env::var(&config.admin.token_env).ok(),
    };
    Ok(token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

pub async fn start(options: Options) -> Result<Running, StartError> {
    let config = config::load(&options.config_path)?;
    let admin_token = admin_token(&config)?;
    if !config.admin.listen.ip().is_loopback() && admin_token.is_none() {
        return Err(StartError::Admin(format!(
            "admin.listen {} is not loopback and no admin token is set (env {} or admin.token_file): refusing to expose an unauthenticated admin API",
            config.admin.listen, config.admin.token_env
        )));
    }
    let tls = match &config.server.tls {
        Some(t) => Some(Arc::new(arc_swap::ArcSwap::new(tls::server_config(t)?))),
        None => None,
    };
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    // Fleet mode: the state file is the replica's cache; without one, a
    // new store is seeded with the config's percent.
    let fleet = config.fleet.as_ref().map(|f| {
        let wake = Arc::new(tokio::sync::Notify::new());
        let seed = (!config.state.file.exists()).then_some(config.split.percent);
        Arc::new(control::fleet::Fleet::new(f.clone(), wake, seed))
    });
    let store = fleet.clone().map_or(Store::File, Store::etcd);
    let control = Control::open_with(&config.state, config.split.percent, events_tx, store)?;
    let metrics = Metrics::new();
    if fleet.is_some() {
        metrics.register_fleet();
    }

    let bind = |what, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
    };
    let proxy_listener = bind("server.listen", config.server.listen).await?;
    let admin_listener = bind("admin.listen", config.admin.listen).await?;
    let proxy_addr = proxy_listener.local_addr().expect("bound socket has an address");
    let admin_addr = admin_listener.local_addr().expect("bound socket has an address");

    let server_config = config.server.clone();
    let ledger = config.ledger.as_ref().map(|l| Arc::new(control::ledger::Ledger::new(l, &metrics.ledger)));
    let snapshot = Snapshot::build(config, 1, None, &metrics);
    let shared = Arc::new(Shared {
        rules: rules::RuleBoard::new(&snapshot.config.rules),
        snapshot: ArcSwap::from_pointee(snapshot),
        control,
        metrics,
        config_path: options.config_path.clone(),
        reload_status: Mutex::new(reload::ReloadStatus::new(1)),
        admin_token,
        tls: tls.clone(),
        access_log: options.access_log,
        ledger: ledger.clone(),
        schema: Default::default(),
        fleet,
        shadow: Default::default(),
    });
    shared.control.export(&shared.metrics);
    if let Some(fleet) = &shared.fleet {
        // Up to sync_timeout for the store, then serve what we have.
        fleet.first_sync(&shared).await.map_err(StartError::Fleet)?;
    }

    // Fail safe: nobody reaches `new` before the first good read of the
    // migration version (a split held before a restart stays held). The
    // first read comes before serving (up to schema.timeout): if no side
    // supports the version, a restart holds the route it served before (as
    // its state file recorded it), and a replica with no record serves the
    // desired percent with its rollbacks applied (docs: migrations, "When
    // no side supports the schema").
    let schema_slot = control::pg::PgSlot::default();
    if shared.config().schema.is_some() {
        shared.control.schema_unread();
        control::release::gate::first_read(&shared, &schema_slot).await;
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let proxy_shared = shared.clone();
    let proxy = tokio::spawn(server::serve(
        proxy_listener,
        server::Protocols::new(&server_config),
        server::Limits::new(&server_config),
        move |conn, req| proxy::handle::handle(proxy_shared.clone(), conn, req),
        shutdown_rx.clone(),
        tls.map(|slot| (slot, shared.metrics.tls_handshake_errors.clone())),
    ));
    let admin_shared = shared.clone();
    let admin = tokio::spawn(server::serve(
        admin_listener,
        server::Protocols::new(&server_config),
        server::Limits { max_connections: 1024, ..server::Limits::new(&server_config) },
        move |conn, req| admin::api::handle(admin_shared.clone(), conn, req),
        shutdown_rx.clone(),
        None,
    ));
    if options.watch_config {
        reload::spawn_watcher(shared.clone(), shutdown_rx.clone());
    }
    let mut servers = vec![proxy, admin];
    if let Some(ledger) = ledger {
        // Joined on shutdown, so the last interval's keys are written.
        servers.push(tokio::spawn(ledger.run(shutdown_rx.clone())));
    }
    if let Some(fleet) = &shared.fleet {
        fleet.spawn(shared.clone(), shutdown_rx.clone());
    }
    tokio::spawn(control::release::gate::run(shared.clone(), schema_slot, shutdown_rx.clone()));
    tokio::spawn(control::release::driver::run(shared.clone(), shutdown_rx.clone()));
    rules::spawn(shared.clone(), events_rx, shutdown_rx);
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, config = %options.config_path.display(), "grayshift started");
    Ok(Running { proxy_addr, admin_addr, shared, shutdown, servers })
}
