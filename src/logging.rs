//! The binary's log filter. Complaints about one client's connection must
//! not log at `warn`: any client can repeat them per connection and fill
//! the disk. grayshift's own (a failed TLS handshake, a connection that
//! ended badly, a refused request) log at `debug`; rustls logs through the
//! `log` crate at `warn` once per handshake about what a client did (an IP
//! address as SNI, an alert sent to it), so rustls is held at `error` and
//! those warnings are counted instead.

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::EnvFilter;

use crate::metrics::TLS_CLIENT_WARNINGS;

/// `spec` (`GRAYSHIFT_LOG`; empty or invalid means `info`) with
/// `rustls=error` added unless it names rustls itself
/// (`GRAYSHIFT_LOG=info,rustls=warn` shows rustls' warnings again).
pub fn filter(spec: &str) -> EnvFilter {
    let with_rustls = |spec: &str| {
        if spec.contains("rustls") {
            spec.to_string()
        } else {
            format!("{spec},rustls=error")
        }
    };
    let spec = if spec.trim().is_empty() { "info" } else { spec };
    EnvFilter::try_new(with_rustls(spec)).unwrap_or_else(|_| EnvFilter::new(with_rustls("info")))
}

/// A layer that counts rustls' warnings and errors in
/// `grayshift_tls_client_warnings_total`, whatever the log filter shows.
pub fn rustls_warnings<S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>>() -> impl Layer<S> {
    RustlsWarnings.with_filter(Targets::new().with_target("rustls", LevelFilter::WARN))
}

struct RustlsWarnings;

impl<S: Subscriber> Layer<S> for RustlsWarnings {
    fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
        TLS_CLIENT_WARNINGS.inc();
    }
}
