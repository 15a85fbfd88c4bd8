//! The `grayshift` command line: parses arguments, sets up logging and
//! signals, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use grayshift::admin::{ctl, exposure};
use grayshift::config::{self, PoolName};

#[derive(Parser)]
#[command(
    name = "grayshift",
    version,
    about = "Gray-release (canary) reverse proxy with automatic L1/L2/L3 rollback",
    after_help = "Read next: docs/src/getting-started.md\nThe book: `mdbook build docs` renders docs/src/ into docs/book/."
)]
struct Cli {
    /// Log format: human-readable lines, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: proxy, admin API, hot reload and the rule engine.
    #[command(after_help = "Read next: docs/src/configuration.md")]
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Log one line per request.
        #[arg(long)]
        access_log: bool,
    },
    /// Validate a config file: prints `ok`, or `FILE:LINE:COL: message` and exits 1.
    #[command(after_help = "Read next: docs/src/configuration.md")]
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a key's bucket and the pool it gets at the current percent; or,
    /// with --percent and --sample, how many of a file's keys would move.
    #[command(after_help = "Read next: docs/src/concepts.md (How users are split)")]
    Bucket {
        #[arg(long, short)]
        config: PathBuf,
        /// The routing key: a user ID, cookie value or client IP.
        #[arg(required_unless_present = "sample", conflicts_with = "sample")]
        key: Option<String>,
        /// What-if: the percent to compare the current state with.
        #[arg(long, requires = "sample", value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,
        /// What-if: a file of keys, one a line (e.g. exported from the ledger or an access log).
        #[arg(long, requires = "percent")]
        sample: Option<PathBuf>,
    },
    /// Print the exposure ledger's CSV: every key `new` served in this release.
    #[command(after_help = "Read next: docs/src/ledger.md")]
    Exposure {
        #[arg(long, short)]
        config: PathBuf,
        /// Only keys that sent a write (POST, PUT, PATCH, DELETE).
        #[arg(long)]
        wrote: bool,
        /// The keys whose shadow comparison differed ([shadow]), whichever
        /// side served them, instead of the keys `new` served.
        #[arg(long, conflicts_with = "purge")]
        mismatch: bool,
        /// Delete a release's rows from the ledger instead (needs --release).
        #[arg(long, requires = "release")]
        purge: bool,
        /// The release (`split.group`) to purge.
        #[arg(long, requires = "purge")]
        release: Option<String>,
    },
    /// Talk to a running grayshift's admin API.
    #[command(after_help = "Read next: docs/src/admin-api.md (grayshift ctl)")]
    Ctl {
        /// Admin API base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Bearer token for changes.
        #[arg(long, env = "GRAYSHIFT_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ctl::Command,
    },
    /// Two built-in upstreams (stable, new) and the proxy in front of them.
    #[command(after_help = "Read next: docs/src/getting-started.md (A five-minute tour of the demo)")]
    Demo {
        #[arg(long, short, default_value = "config/demo.toml")]
        config: PathBuf,
    },
    /// A built-in demo upstream answering "hello from NAME" on every path.
    #[command(after_help = "Read next: docs/src/getting-started.md")]
    Upstream {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                if let Some(s) = c.schema.as_ref().filter(|s| !s.bounds.overlap()) {
                    eprintln!(
                        "warning: [schema] no version satisfies both new_requires and stable_supports: {:?} vs {:?} — the migration is not expand/contract, so once new can run no rollback to stable is safe",
                        s.bounds.new_requires, s.bounds.stable_supports
                    );
                }
                if let Some(s) = c.schema.as_ref().filter(|s| !s.bounds.lists_a_step_past_stable()) {
                    eprintln!(
                        "warning: [schema] new_requires {:?} lists no version past stable_supports {:?}: the contract migration that follows is in neither list, and while it is applied no side supports the schema (grayshift holds the split, nobody moves) — list it in new_requires",
                        s.bounds.new_requires, s.bounds.stable_supports
                    );
                }
                if let Some(s) = c.shadow.as_ref().filter(|s| s.methods.iter().any(|m| !m.is_safe())) {
                    let unsafe_methods: Vec<&str> =
                        s.methods.iter().filter(|m| !m.is_safe()).map(|m| m.as_str()).collect();
                    eprintln!(
                        "warning: [shadow] mirrors {}: each such request runs on both sides, so the apps must skip side effects when X-Grayshift-Shadow is set",
                        unsafe_methods.join(", ")
                    );
                }
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Bucket { config, key: Some(key), .. } => bucket(&config, &key),
        Command::Bucket { config, percent: Some(percent), sample: Some(sample), .. } => {
            what_if(&config, percent, &sample)
        }
        Command::Bucket { .. } => unreachable!("clap requires a key or --percent with --sample"),
        Command::Exposure { config, wrote, mismatch, purge, release } => {
            let select = exposure::Select { wrote, mismatch };
            runtime(Some(1)).block_on(exposure(&config, select, purge.then_some(release).flatten()))
        }
        Command::Run { config, access_log } => {
            let workers = config::load(&config).ok().and_then(|c| c.server.workers);
            runtime(workers)
                .block_on(serve(grayshift::Options { access_log, ..grayshift::Options::new(config) }, false))
        }
        Command::Demo { config } => runtime(None).block_on(serve(grayshift::Options::new(config), true)),
        Command::Upstream { name, listen } => runtime(Some(1)).block_on(async {
            match tokio::net::TcpListener::bind(&listen).await {
                Ok(listener) => {
                    println!("demo upstream {name} listening on {listen}");
                    grayshift::demo::serve_upstream(name, listener).await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot listen on {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::Ctl { admin, token, command } => {
            match runtime(Some(1)).block_on(ctl::run(&admin, token.as_deref(), command)) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("grayshift ctl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `workers = 1` gets tokio's current-thread scheduler: one thread has no
/// one to steal work from, and skipping the multi-thread machinery saves a
/// few per cent of CPU per request (benches/runs/2026-12-01-where-the-time-goes.md).
fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let filter = grayshift::logging::filter(&std::env::var("GRAYSHIFT_LOG").unwrap_or_default());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(grayshift::logging::rustls_warnings()).init();
}

/// `grayshift bucket`: which version does this user see right now? Uses the
/// persisted state (admin-set percent, active rollback) when there is one.
fn bucket(path: &std::path::Path, key: &str) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let route = match grayshift::control::state::Control::open_read_only(&config.state, config.split.percent, tx) {
        Ok(route) => route,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let splitter = grayshift::proxy::split::Splitter::new(&config.split);
    let bucket = splitter.bucket(key.as_bytes());
    let (pool, reason) = splitter.decide(key.as_bytes(), bucket, route.percent, route.new_refused());
    let why = match reason {
        grayshift::proxy::split::Reason::Percent if pool == PoolName::New => {
            format!("bucket {bucket} < percent {}", route.percent)
        }
        grayshift::proxy::split::Reason::Percent => {
            format!("bucket {bucket} >= percent {}", route.percent)
        }
        grayshift::proxy::split::Reason::ForcedNew => "listed in split.force_new".into(),
        grayshift::proxy::split::Reason::ForcedStable => "listed in split.force_stable".into(),
        grayshift::proxy::split::Reason::RolledBack => "an L1/L3 rollback is active".into(),
    };
    println!(
        "key={key:?} group={} bucket={bucket} percent={} pool={} ({why})",
        config.split.group,
        route.percent,
        pool.as_str()
    );
    ExitCode::SUCCESS
}

/// `grayshift bucket --percent N --sample FILE`.
fn what_if(path: &std::path::Path, percent: u8, sample: &std::path::Path) -> ExitCode {
    let result = config::load(path).map_err(|e| e.to_string()).and_then(|config| {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let now = grayshift::control::state::Control::open_read_only(&config.state, config.split.percent, tx)
            .map_err(|e| e.to_string())?;
        let keys = exposure::read_sample(sample)?;
        let splitter = grayshift::proxy::split::Splitter::new(&config.split);
        Ok((now, exposure::what_if(&splitter, now, percent, keys.into_iter())))
    });
    match result {
        Ok((now, w)) => {
            let from = if now.rolled_back { "0 (rolled back)".to_string() } else { now.percent.to_string() };
            println!("{} keys, effective percent {from} -> {percent}:", w.keys);
            println!("  {:>8} move stable -> new", w.to_new);
            println!("  {:>8} move new -> stable", w.to_stable);
            println!("  {:>8} stay on new", w.stay_new);
            println!("  {:>8} stay on stable", w.stay_stable);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `grayshift exposure`: the CSV, or `--purge --release R`.
async fn exposure(path: &std::path::Path, select: exposure::Select, purge: Option<String>) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match purge {
        Some(release) => {
            exposure::purge(&config, &release).await.map(|n| format!("purged {n} row(s) of release {release:?}\n"))
        }
        None => exposure::csv(&config, select).await,
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: grayshift::Options, demo: bool) -> ExitCode {
    if demo {
        let config = match config::load(&options.config_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = grayshift::demo::start_upstreams(&config).await {
            eprintln!("cannot start the demo upstreams: {e}");
            return ExitCode::FAILURE;
        }
    }
    let running = match grayshift::start(options.clone()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grayshift: {e}");
            return ExitCode::FAILURE;
        }
    };
    if demo {
        println!(
            "{}",
            grayshift::demo::instructions(
                running.proxy_addr,
                running.admin_addr,
                &options.config_path.display().to_string()
            )
        );
    }
    let shared = running.shared.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = grayshift::control::reload::reload(&shared, "sighup");
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
