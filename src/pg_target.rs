//! A PostgreSQL URL (or `key=value` string) as grayshift reads it: checked
//! by the config (`[schema] url`, signal and ledger URLs) and connected to
//! by the control side, with the same parser.
//!
//! TLS follows libpq's `sslmode` in the URL, with rustls: `disable`;
//! `prefer` (the default: TLS when the server offers it, else plain) and
//! `require` encrypt without checking the certificate — unless
//! `sslrootcert` names a CA file, which makes them `verify-ca`, as in
//! libpq; `verify-ca` checks the chain; `verify-full` the chain and the host
//! name. Without `sslrootcert` the system's roots are trusted.

use std::path::PathBuf;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::outbound_tls::{self, Verify};

/// A PostgreSQL URL (or `key=value` string) with libpq's TLS options.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    /// None: `sslmode=disable`.
    verify: Option<Verify>,
    root_cert: Option<PathBuf>,
}

impl Target {
    /// Parse `url`, taking out `sslmode` (all five of libpq's modes) and
    /// `sslrootcert`, which tokio-postgres does not know.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (rest, sslmode, root_cert) = take_tls_options(url);
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
        let root_cert = root_cert.map(PathBuf::from);
        let verify = match sslmode.as_deref().unwrap_or("prefer") {
            "disable" => None,
            "prefer" | "require" if root_cert.is_some() => Some(Verify::Chain),
            "prefer" | "require" => Some(Verify::Encrypt),
            "verify-ca" => Some(Verify::Chain),
            "verify-full" => Some(Verify::Full),
            other => {
                return Err(format!(
                    "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
                ))
            }
        };
        config.ssl_mode(match sslmode.as_deref() {
            Some("disable") => SslMode::Disable,
            None | Some("prefer") => SslMode::Prefer,
            _ => SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("grayshift");
        }
        Ok(Target { config, verify, root_cert })
    }

    pub(crate) fn tls(&self) -> Result<MakeRustlsConnect, String> {
        let config = outbound_tls::client_config(self.verify.unwrap_or(Verify::Encrypt), self.root_cert.as_deref())?;
        Ok(MakeRustlsConnect::new(config))
    }
}

/// Split `sslmode` and `sslrootcert` off a URL's query string or a
/// `key=value` connection string.
fn take_tls_options(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(percent_decode(value));
            true
        }
        _ => false,
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None, None) };
        let kept: Vec<&str> =
            query.split('&').filter(|pair| !pair.split_once('=').is_some_and(|(k, v)| take(k, v))).collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, mode, root)
    } else {
        let kept: Vec<&str> =
            url.split_whitespace().filter(|kv| !kv.split_once('=').is_some_and(|(k, v)| take(k, v))).collect();
        (kept.join(" "), mode, root)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, mode, root) = take_tls_options(
            "postgresql://u@db:5432/x?sslmode=verify-full&connect_timeout=2&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgresql://u@db:5432/x?connect_timeout=2");
        assert_eq!((mode.as_deref(), root.as_deref()), (Some("verify-full"), Some("/etc/ca.pem")));
        let (rest, mode, _) = take_tls_options("postgresql://u@db/x?sslmode=require");
        assert_eq!((rest.as_str(), mode.as_deref()), ("postgresql://u@db/x", Some("require")));
        let (rest, mode, root) = take_tls_options("host=db user=u sslmode=verify-ca sslrootcert=/ca.pem");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root.as_deref()),
            ("host=db user=u", Some("verify-ca"), Some("/ca.pem"))
        );
    }

    #[test]
    fn modes_map_to_libpq_behaviour() {
        let verify = |url: &str| Target::parse(url).map(|t| (t.verify, t.config.get_ssl_mode()));
        assert_eq!(verify("postgresql://u@db/x").unwrap(), (Some(Verify::Encrypt), SslMode::Prefer));
        assert_eq!(verify("postgresql://u@db/x?sslmode=disable").unwrap(), (None, SslMode::Disable));
        assert_eq!(verify("postgresql://u@db/x?sslmode=require").unwrap(), (Some(Verify::Encrypt), SslMode::Require));
        assert_eq!(
            verify("postgresql://u@db/x?sslmode=require&sslrootcert=/ca.pem").unwrap(),
            (Some(Verify::Chain), SslMode::Require),
            "a root file makes require verify the chain, as libpq does"
        );
        assert_eq!(verify("postgresql://u@db/x?sslmode=verify-ca").unwrap(), (Some(Verify::Chain), SslMode::Require));
        assert_eq!(verify("postgresql://u@db/x?sslmode=verify-full").unwrap(), (Some(Verify::Full), SslMode::Require));
        let err = verify("postgresql://u@db/x?sslmode=allow-maybe").unwrap_err();
        assert!(err.contains("unknown sslmode \"allow-maybe\""), "{err}");
    }
}
