//! `[fleet]` validation (docs/src/fleet.md, Configuration): etcd URLs, a non-empty key prefix name,
//! the replica's member name, lease and sync durations, credentials.
//!
//! The replica default is resolved here (env `GRAYSHIFT_REPLICA`, else the
//! hostname) so `grayshift check` shows the same problem start-up would.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawFleet, S};
use super::{invalid, positive_duration, secret, FleetConfig, Invalid, PasswordSource};

pub(super) fn validate(raw: &S<RawFleet>, group: &str) -> Result<FleetConfig, Invalid> {
    let f = raw.get_ref();
    let (etcd, etcd_span) = match (&f.etcd, f.etcd_env.is_some() || f.etcd_file.is_some()) {
        (Some(list), false) => {
            if list.get_ref().is_empty() {
                return invalid(list.span(), "fleet.etcd needs at least one URL, e.g. [\"http://127.0.0.1:2379\"]");
            }
            (list.get_ref().iter().map(etcd_url).collect::<Result<Vec<_>, _>>()?, list.span())
        }
        (None, true) => {
            let sourced = secret::one_of("etcd", None, f.etcd_env.as_ref(), f.etcd_file.as_ref(), raw.span())?
                .expect("etcd_env or etcd_file is set");
            let span = sourced.value.span();
            let urls = sourced.check(|v| {
                v.get_ref()
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|u| !u.is_empty())
                    .map(|u| etcd_url(&S::new(span.clone(), u.to_string())))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            (urls, span)
        }
        _ => return invalid(raw.span(), "[fleet] needs exactly one of `etcd`, `etcd_env` or `etcd_file`"),
    };
    let name = match &f.name {
        None => group.to_string(),
        Some(n) => key_part(n, "fleet.name")?,
    };
    let replica = match &f.replica {
        Some(r) => key_part(r, "fleet.replica")?,
        None => default_replica().ok_or_else(|| Invalid {
            span: Some(raw.span()),
            message: "fleet.replica is not set and neither GRAYSHIFT_REPLICA nor the hostname gives one".into(),
        })?,
    };
    let lease_ttl = positive_duration(&f.lease_ttl, "10s")?;
    if lease_ttl < Duration::from_secs(1) {
        // etcd leases have a whole-second TTL.
        return invalid(f.lease_ttl.as_ref().map_or(0..0, |v| v.span()), "fleet.lease_ttl must be at least 1s");
    }
    let sync_timeout = positive_duration(&f.sync_timeout, "5s")?;
    let user = match &f.user {
        Some(u) if u.get_ref().is_empty() => return invalid(u.span(), "fleet.user must not be empty"),
        u => u.as_ref().map(|u| u.get_ref().clone()),
    };
    let password = match (&f.password_env, &f.password_file) {
        (Some(e), Some(_)) => return invalid(e.span(), "set fleet.password_env or fleet.password_file, not both"),
        (Some(e), None) if e.get_ref().is_empty() => {
            return invalid(e.span(), "fleet.password_env must name a variable")
        }
        (Some(e), None) => Some(PasswordSource::Env(e.get_ref().clone())),
        (None, Some(p)) if p.get_ref().is_empty() => return invalid(p.span(), "fleet.password_file must not be empty"),
        (None, Some(p)) => Some(PasswordSource::File(PathBuf::from(p.get_ref()))),
        (None, None) => None,
    };
    if let (Some(_), None) = (&password, &user) {
        let span = f.password_env.as_ref().or(f.password_file.as_ref()).map_or(0..0, |v| v.span());
        return invalid(span, "a fleet password needs fleet.user");
    }
    if let (Some(u), None) = (&f.user, &password) {
        return invalid(u.span(), "fleet.user needs fleet.password_env or fleet.password_file");
    }
    let tls_ca = match &f.tls {
        Some(t) if t.ca.get_ref().is_empty() => return invalid(t.ca.span(), "fleet.tls.ca must not be empty"),
        Some(t) => Some(PathBuf::from(t.ca.get_ref())),
        None => None,
    };
    if tls_ca.is_some() && etcd.iter().any(|u| u.starts_with("http://")) {
        return invalid(etcd_span, "fleet.tls is set: every fleet.etcd URL must be https://");
    }
    Ok(FleetConfig { etcd, name, replica, lease_ttl, sync_timeout, user, password, tls_ca })
}

fn etcd_url(v: &S<String>) -> Result<String, Invalid> {
    let s = v.get_ref().trim();
    match s.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some_and(|a| !a.host().is_empty())
                && matches!(uri.path(), "" | "/") =>
        {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => invalid(v.span(), format!("invalid etcd URL {s:?}: expected http://HOST:PORT or https://HOST:PORT")),
    }
}

/// A name that goes into an etcd key as one path segment.
fn key_part(v: &S<String>, what: &str) -> Result<String, Invalid> {
    let s = v.get_ref();
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_control) {
        return invalid(v.span(), format!("{what} {s:?} must be non-empty, without '/' or control characters"));
    }
    Ok(s.clone())
}

fn default_replica() -> Option<String> {
    let from_env = std::env::var("GRAYSHIFT_REPLICA").ok();
    let hostname = || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
    };
    from_env
        .or_else(hostname)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('/') && !s.chars().any(char::is_control))
}
