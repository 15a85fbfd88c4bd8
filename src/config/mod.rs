//! Configuration: file → [`raw`] serde structs → validated [`Config`].
//!
//! Every check lives here, so `grayshift check`, start-up and every hot
//! reload apply exactly the same rules. Errors carry the byte span of the
//! offending value and render as `FILE:LINE:COL: message`.

mod flags;
mod fleet;
mod ledger;
mod notify;
mod ramp;
mod raw;
mod schema;
mod secret;
mod shadow;
mod types;

pub use shadow::{FieldPattern, Segment, ShadowConfig};

pub use secret::redact_url;

pub use types::*;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use ipnet::IpNet;
use raw::{RawConfig, RawPool, RawRule, RawSignal, S};

/// A config error pointing at the value that caused it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Error before line numbers are known: a message and the span it is about.
pub(crate) struct Invalid {
    span: Option<Range<usize>>,
    message: String,
}

pub(crate) fn invalid<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid { span: Some(span), message: message.into() })
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: 1,
        col: 1,
        message: format!("cannot read config: {e}"),
    })?;
    parse(&source, &name)
}

/// Parse and validate config text; `name` is used in error messages.
pub fn parse(source: &str, name: &str) -> Result<Config, ConfigError> {
    let result = toml::from_str::<RawConfig>(source)
        .map_err(|e| Invalid { span: e.span(), message: e.message().trim().to_string() })
        .and_then(validate);
    result.map_err(|e| {
        let (line, col) = line_col(source, e.span.map_or(0, |s| s.start));
        ConfigError { file: name.to_string(), line, col, message: e.message }
    })
}

fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn duration(value: &Option<S<String>>, default: &str) -> Result<Duration, Invalid> {
    match value {
        None => Ok(humantime::parse_duration(default).expect("valid default")),
        Some(v) => parse_duration(v),
    }
}

fn parse_duration(v: &S<String>) -> Result<Duration, Invalid> {
    let d = humantime::parse_duration(v.get_ref().trim()).or_else(|e| {
        invalid(v.span(), format!("invalid duration {:?}: {e} (write e.g. \"250ms\", \"5s\", \"3m\")", v.get_ref()))
    })?;
    if d > MAX_DURATION {
        return invalid(v.span(), format!("duration {:?} is too long: at most 10 years (\"3650d\")", v.get_ref()));
    }
    Ok(d)
}

pub(crate) fn positive_duration(value: &Option<S<String>>, default: &str) -> Result<Duration, Invalid> {
    let d = duration(value, default)?;
    if d.is_zero() {
        return invalid(value.as_ref().map_or(0..0, |v| v.span()), "duration must be greater than 0");
    }
    Ok(d)
}

fn socket_addr(value: &Option<S<String>>, default: &str) -> Result<SocketAddr, Invalid> {
    match value {
        None => Ok(default.parse().expect("valid default")),
        Some(v) => v.get_ref().parse().or_else(|_| {
            invalid(
                v.span(),
                format!("invalid listen address {:?}: expected IP:PORT, e.g. \"0.0.0.0:8080\"", v.get_ref()),
            )
        }),
    }
}

fn validate(raw: RawConfig) -> Result<Config, Invalid> {
    let server = validate_server(&raw.server)?;
    let admin = AdminConfig {
        listen: socket_addr(&raw.admin.listen, "127.0.0.1:9090")?,
        token_env: raw.admin.token_env.as_ref().map_or("GRAYSHIFT_ADMIN_TOKEN".into(), |v| v.get_ref().clone()),
        token_file: raw.admin.token_file.as_ref().map(|v| PathBuf::from(v.get_ref())),
    };
    if admin.listen == server.listen && server.listen.port() != 0 {
        return invalid(
            raw.admin.listen.as_ref().map_or(0..0, |v| v.span()),
            "admin.listen must differ from server.listen",
        );
    }
    let split = validate_split(&raw.split)?;
    let stable = validate_pool(&raw.pools.stable)?;
    let new = validate_pool(&raw.pools.new)?;

    let file = PathBuf::from(raw.state.file.as_ref().map_or("grayshift-state.json", |v| v.get_ref().as_str()));
    if file.as_os_str().is_empty() {
        return invalid(raw.state.file.as_ref().map_or(0..0, |v| v.span()), "state.file must not be empty");
    }
    let audit = match &raw.state.audit {
        Some(v) => PathBuf::from(v.get_ref()),
        None => file.with_file_name("grayshift-audit.jsonl"),
    };
    let state = StateConfig { file, audit };

    let rollback = RollbackConfig {
        interval: positive_duration(&raw.rollback.interval, "5s")?,
        recover_for: duration(&raw.rollback.recover_for, "3m")?,
        hook: raw.rollback.hook.as_ref().map(validate_hook).transpose()?,
    };
    let features = validate_features(&raw.features)?;

    let fleet = raw.fleet.as_ref().map(|f| fleet::validate(f, &split.group)).transpose()?;
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for rule in &raw.rules {
        if !names.insert(rule.name.get_ref().clone()) {
            return invalid(rule.name.span(), format!("duplicate rule name {:?}", rule.name.get_ref()));
        }
        rules.push(validate_rule(rule, fleet.is_some())?);
    }
    let notify = raw.notify.iter().map(notify::validate).collect::<Result<_, Invalid>>()?;

    let ledger = raw.ledger.as_ref().map(ledger::validate).transpose()?;
    let schema = raw.schema.as_ref().map(schema::validate).transpose()?;
    let ramp = raw.ramp.as_ref().map(ramp::validate).transpose()?;
    let flags = raw.flags.as_ref().map(flags::validate).transpose()?;
    let shadow = raw.shadow.as_ref().map(shadow::validate).transpose()?;

    Ok(Config {
        server,
        admin,
        split,
        stable,
        new,
        state,
        rollback,
        features,
        rules,
        notify,
        fleet,
        ledger,
        schema,
        ramp,
        flags,
        shadow,
    })
}

fn validate_server(raw: &raw::RawServer) -> Result<ServerConfig, Invalid> {
    let positive = |v: &Option<S<usize>>, default: usize, what: &str| match v {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => invalid(v.span(), format!("{what} must be at least 1")),
        Some(v) => Ok(*v.get_ref()),
    };
    Ok(ServerConfig {
        listen: socket_addr(&raw.listen, "0.0.0.0:8080")?,
        tls: raw.tls.as_ref().map(|t| TlsConfig { cert: t.cert.get_ref().into(), key: t.key.get_ref().into() }),
        workers: raw.workers.as_ref().map(|_| positive(&raw.workers, 1, "server.workers")).transpose()?,
        drain_timeout: duration(&raw.drain_timeout, "30s")?,
        header_read_timeout: positive_duration(&raw.header_read_timeout, "10s")?,
        body_read_timeout: positive_duration(&raw.body_read_timeout, "30s")?,
        max_header_bytes: positive(&raw.max_header_bytes, 60 * 1024, "server.max_header_bytes")?,
        max_headers: positive(&raw.max_headers, 100, "server.max_headers")?,
        max_uri_bytes: positive(&raw.max_uri_bytes, 8192, "server.max_uri_bytes")?,
        max_body_bytes: raw.max_body_bytes.as_ref().map(|v| *v.get_ref()),
        max_connections: positive(&raw.max_connections, 10_000, "server.max_connections")?,
        underscore_headers: match raw.underscore_headers.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("drop", _)) => UnderscoreHeaders::Drop,
            Some(("allow", _)) => UnderscoreHeaders::Allow,
            Some(("reject", _)) => UnderscoreHeaders::Reject,
            Some((other, span)) => {
                return invalid(
                    span,
                    format!("server.underscore_headers must be \"allow\", \"drop\" or \"reject\", got {other:?}"),
                )
            }
        },
    })
}

fn validate_split(raw: &raw::RawSplit) -> Result<SplitConfig, Invalid> {
    let percent = *raw.percent.get_ref();
    if !(0..=100).contains(&percent) {
        return invalid(raw.percent.span(), format!("split.percent must be between 0 and 100, got {percent}"));
    }
    if raw.group.get_ref().is_empty() {
        return invalid(raw.group.span(), "split.group must not be empty (it seeds the bucket hash)");
    }
    let key = match &raw.key {
        None => vec![KeySource::ClientIp],
        Some(list) => {
            if list.get_ref().is_empty() {
                return invalid(list.span(), "split.key needs at least one source");
            }
            list.get_ref().iter().map(key_source).collect::<Result<_, _>>()?
        }
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|v| {
            let s = v.get_ref().trim();
            s.parse::<IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from)).or_else(|_| {
                invalid(v.span(), format!("invalid CIDR {s:?} in split.trusted_proxies (e.g. \"10.0.0.0/8\")"))
            })
        })
        .collect::<Result<_, _>>()?;
    let force_new: HashSet<String> = raw.force_new.iter().cloned().collect();
    for key in &raw.force_stable {
        if force_new.contains(key.get_ref()) {
            return invalid(key.span(), format!("key {:?} is in both force_new and force_stable", key.get_ref()));
        }
    }
    Ok(SplitConfig {
        percent: percent as u8,
        group: raw.group.get_ref().clone(),
        key,
        force_new,
        force_stable: raw.force_stable.iter().map(|k| k.get_ref().clone()).collect(),
        trusted_proxies,
        fallback_to_stable: raw.fallback_to_stable.unwrap_or(true),
        expose_pool: raw.expose_pool.unwrap_or(true),
    })
}

fn key_source(v: &S<String>) -> Result<KeySource, Invalid> {
    let s = v.get_ref().as_str();
    if s == "client_ip" {
        return Ok(KeySource::ClientIp);
    }
    if let Some(name) = s.strip_prefix("header:") {
        return HeaderName::from_bytes(name.as_bytes())
            .map(KeySource::Header)
            .or_else(|_| invalid(v.span(), format!("invalid header name {name:?} in split.key")));
    }
    if let Some(name) = s.strip_prefix("cookie:") {
        if name.is_empty() || name.contains(|c: char| c == ';' || c == '=' || c.is_whitespace()) {
            return invalid(v.span(), format!("invalid cookie name {name:?} in split.key"));
        }
        return Ok(KeySource::Cookie(name.to_string()));
    }
    invalid(v.span(), format!("unknown key source {s:?}: use \"header:NAME\", \"cookie:NAME\" or \"client_ip\""))
}

fn validate_pool(raw: &RawPool) -> Result<PoolConfig, Invalid> {
    if raw.endpoints.get_ref().is_empty() {
        return invalid(raw.endpoints.span(), "a pool needs at least one endpoint");
    }
    let mut endpoints = Vec::new();
    for ep in raw.endpoints.get_ref() {
        let s = ep.get_ref().trim();
        if !valid_host_port(s) {
            return invalid(ep.span(), format!("invalid endpoint {s:?}: expected HOST:PORT, e.g. \"127.0.0.1:8001\""));
        }
        if endpoints.iter().any(|e| e == s) {
            return invalid(ep.span(), format!("duplicate endpoint {s:?}"));
        }
        endpoints.push(s.to_string());
    }
    let health = raw
        .health
        .as_ref()
        .map(|h| {
            if !h.path.get_ref().starts_with('/') {
                return invalid(h.path.span(), "health.path must start with '/'");
            }
            // It is written into the probe's request line as it is.
            if h.path.get_ref().parse::<http::uri::PathAndQuery>().is_err() {
                return invalid(
                    h.path.span(),
                    "health.path is not a valid request target (spaces and control characters must be percent-encoded)",
                );
            }
            Ok(HealthConfig {
                path: h.path.get_ref().clone(),
                interval: positive_duration(&h.interval, "5s")?,
                timeout: positive_duration(&h.timeout, "1s")?,
            })
        })
        .transpose()?;
    Ok(PoolConfig {
        endpoints,
        connect_timeout: positive_duration(&raw.connect_timeout, "2s")?,
        request_timeout: positive_duration(&raw.request_timeout, "60s")?,
        idle_timeout: positive_duration(&raw.idle_timeout, "30s")?,
        max_fails: raw.max_fails.as_ref().map_or(3, |v| *v.get_ref()),
        fail_timeout: positive_duration(&raw.fail_timeout, "10s")?,
        health,
    })
}

/// `host:port` with a non-empty host (name, IPv4 or `[IPv6]`) and a port.
fn valid_host_port(s: &str) -> bool {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return addr.port() != 0;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok_and(|p| p > 0)
                && !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        None => false,
    }
}

fn http_url(v: &S<String>) -> Result<String, Invalid> {
    let s = v.get_ref().trim();
    match s.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() => Ok(s.to_string()),
        _ => invalid(v.span(), format!("invalid URL {:?}: expected http(s)://HOST[:PORT]/PATH", redact_url(s))),
    }
}

/// `ca = "FILE"` beside an `https://` URL: a PEM file of the CAs to trust
/// for it, checked now so a typo is a config error, not a 3 a.m. surprise.
fn ca_file(v: &Option<S<String>>) -> Result<Option<PathBuf>, Invalid> {
    let Some(v) = v else { return Ok(None) };
    let path = PathBuf::from(v.get_ref());
    match crate::outbound_tls::roots_from_file(&path) {
        Ok(_) => Ok(Some(path)),
        Err(e) => invalid(v.span(), e),
    }
}

/// A PostgreSQL URL (maybe from a secret source), with `password` added,
/// checked by the same parser that will connect with it.
fn postgres_url(url: &secret::Sourced, password: Option<&str>) -> Result<String, Invalid> {
    url.check(|url| {
        let text = match password {
            Some(p) => secret::with_password(url.get_ref(), p),
            None => url.get_ref().clone(),
        };
        match crate::pg_target::Target::parse(&text) {
            Ok(_) => Ok(text),
            Err(e) => invalid(url.span(), format!("{e} (e.g. \"postgresql://user@host:5432/db?sslmode=verify-full\")")),
        }
    })
}

fn validate_hook(raw: &S<raw::RawHook>) -> Result<HookConfig, Invalid> {
    let h = raw.get_ref();
    let spanned = |v: &Option<String>| v.as_ref().map(|v| S::new(raw.span(), v.clone()));
    let webhook = secret::one_of(
        "webhook",
        spanned(&h.webhook).as_ref(),
        spanned(&h.webhook_env).as_ref(),
        spanned(&h.webhook_file).as_ref(),
        raw.span(),
    )?;
    let action = match (&h.exec, webhook) {
        (Some(argv), None) if !argv.is_empty() && !argv[0].is_empty() => HookAction::Exec(argv.clone()),
        (Some(_), None) => return invalid(raw.span(), "rollback.hook.exec needs a program: [\"path\", \"arg\", ...]"),
        (None, Some(url)) => {
            HookAction::Webhook(url.check(http_url)?, ca_file(&h.ca.as_ref().map(|c| S::new(raw.span(), c.clone())))?)
        }
        _ => return invalid(raw.span(), "rollback.hook needs exactly one of `exec` or `webhook`"),
    };
    let timeout = match &h.timeout {
        None => Duration::from_secs(600),
        Some(t) => parse_duration(&S::new(raw.span(), t.clone()))?,
    };
    Ok(HookConfig { action, timeout })
}

fn validate_features(raw: &raw::RawFeatures) -> Result<FeaturesConfig, Invalid> {
    let mut paths = Vec::new();
    for p in &raw.paths {
        if !p.get_ref().starts_with('/') {
            return invalid(p.span(), format!("features.paths entry {:?} must start with '/'", p.get_ref()));
        }
        // Requests are matched normalised; so is what they are matched to.
        paths.push(crate::path_normal::normalize(p.get_ref()).into_owned());
    }
    let methods = raw
        .methods
        .iter()
        .map(|m| {
            http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                .or_else(|_| invalid(m.span(), format!("invalid HTTP method {:?}", m.get_ref())))
        })
        .collect::<Result<_, _>>()?;
    let status = match &raw.status {
        None => http::StatusCode::SERVICE_UNAVAILABLE,
        Some(s) => match http::StatusCode::from_u16(*s.get_ref()) {
            Ok(code) if code.is_client_error() || code.is_server_error() => code,
            _ => return invalid(s.span(), "features.status must be a 4xx or 5xx status code"),
        },
    };
    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("reject", _)) => ShedMode::Reject,
        Some(("stable", _)) => ShedMode::Stable,
        Some((other, span)) => {
            return invalid(span, format!("features.mode must be \"reject\" or \"stable\", got {other:?}"))
        }
    };
    let retry_after = duration(&raw.retry_after, "30s")?;
    let case_insensitive = raw.case_insensitive.unwrap_or(false);
    let escaped_slashes = match raw.escaped_slashes.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("reject", _)) => EscapedSlashes::Reject,
        Some(("decode", _)) => EscapedSlashes::Decode,
        Some((other, span)) => {
            return invalid(span, format!("features.escaped_slashes must be \"reject\" or \"decode\", got {other:?}"))
        }
    };
    Ok(FeaturesConfig { paths, methods, status, retry_after, mode, case_insensitive, escaped_slashes })
}

fn validate_rule(raw: &RawRule, fleet: bool) -> Result<RuleConfig, Invalid> {
    let name = raw.name.get_ref();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return invalid(raw.name.span(), format!("rule name {name:?} must be non-empty [A-Za-z0-9._-]"));
    }
    let level = Level::parse(raw.level.get_ref()).map_or_else(
        || invalid(raw.level.span(), format!("level must be \"L1\", \"L2\" or \"L3\", got {:?}", raw.level.get_ref())),
        Ok,
    )?;
    let condition = match (&raw.above, &raw.below) {
        (Some(a), None) if a.get_ref().is_finite() => Condition::Above(*a.get_ref()),
        (None, Some(b)) if b.get_ref().is_finite() => Condition::Below(*b.get_ref()),
        (Some(a), Some(_)) => return invalid(a.span(), "a rule takes `above` or `below`, not both"),
        (None, None) => return invalid(raw.name.span(), format!("rule {name:?} needs `above` or `below`")),
        (Some(v), None) | (None, Some(v)) => return invalid(v.span(), "threshold must be a finite number"),
    };
    let signal = validate_signal(&raw.signal, fleet)?;
    let is_local = matches!(signal, SignalConfig::Local { .. });
    if let (Some(m), false) = (&raw.min_requests, is_local) {
        return invalid(m.span(), "min_requests applies only to `local` signals");
    }
    let fire_on_error = match raw.on_error.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("ignore", _)) => false,
        Some(("fire", _)) => true,
        Some((other, span)) => return invalid(span, format!("on_error must be \"ignore\" or \"fire\", got {other:?}")),
    };
    Ok(RuleConfig {
        name: name.clone(),
        level,
        signal,
        condition,
        for_: duration(&raw.for_, "0s")?,
        min_requests: raw.min_requests.as_ref().map_or(0, |v| *v.get_ref()),
        fire_on_error,
    })
}

fn validate_signal(raw: &S<RawSignal>, fleet: bool) -> Result<SignalConfig, Invalid> {
    let s = raw.get_ref();
    let source = s.source.get_ref().as_str();
    // Fields that each source accepts; anything else set is an error.
    let allowed: &[&str] = match source {
        "local" => &["metric", "pool", "window", "scope"],
        "postgres" => &["url", "url_env", "url_file", "password_env", "password_file", "query", "timeout"],
        "prometheus" => &["url", "url_env", "url_file", "query", "timeout", "ca"],
        "http" => &["url", "url_env", "url_file", "pointer", "timeout", "ca"],
        _ => {
            return invalid(
                s.source.span(),
                format!("unknown signal source {source:?}: use local, postgres, prometheus or http"),
            )
        }
    };
    let fields = [
        ("metric", &s.metric),
        ("pool", &s.pool),
        ("window", &s.window),
        ("scope", &s.scope),
        ("url", &s.url),
        ("url_env", &s.url_env),
        ("url_file", &s.url_file),
        ("password_env", &s.password_env),
        ("password_file", &s.password_file),
        ("query", &s.query),
        ("pointer", &s.pointer),
        ("timeout", &s.timeout),
        ("ca", &s.ca),
    ];
    for (field, value) in fields {
        if let (Some(v), false) = (value, allowed.contains(&field)) {
            return invalid(v.span(), format!("`{field}` does not apply to signal source {source:?}"));
        }
    }
    let required = |v: &Option<S<String>>, field: &str| -> Result<S<String>, Invalid> {
        v.clone().map_or_else(|| invalid(raw.span(), format!("signal source {source:?} needs `{field}`")), Ok)
    };
    let timeout = || positive_duration(&s.timeout, "5s");
    // `url`, `url_env` or `url_file`: the URL may be a secret.
    let url = || -> Result<secret::Sourced, Invalid> {
        secret::one_of("url", s.url.as_ref(), s.url_env.as_ref(), s.url_file.as_ref(), raw.span())?.map_or_else(
            || invalid(raw.span(), format!("signal source {source:?} needs `url` (or `url_env`, `url_file`)")),
            Ok,
        )
    };
    Ok(match source {
        "local" => {
            let metric = required(&s.metric, "metric")?;
            let metric = match metric.get_ref().as_str() {
                "error_rate" => LocalMetric::ErrorRate,
                "latency_p99" => LocalMetric::LatencyP99,
                "error_rate_delta" => LocalMetric::ErrorRateDelta,
                "shadow_mismatch_rate" => LocalMetric::ShadowMismatchRate,
                other => {
                    return invalid(
                        metric.span(),
                        format!("unknown local metric {other:?}: use error_rate, latency_p99, error_rate_delta or shadow_mismatch_rate"),
                    )
                }
            };
            let pool = match s.pool.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("new", _)) => PoolName::New,
                Some(("stable", _)) => PoolName::Stable,
                Some((other, span)) => {
                    return invalid(span, format!("unknown pool {other:?}: use \"stable\" or \"new\""))
                }
            };
            let window = positive_duration(&s.window, "1m")?;
            if window > MAX_LOCAL_WINDOW {
                return invalid(s.window.as_ref().map_or(0..0, |w| w.span()), "window must be at most 1h");
            }
            // Fleet-wide by default in fleet mode (docs/src/fleet.md, Fleet-wide local signals).
            let fleet_wide = match s.scope.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
                None => fleet,
                Some(("replica", _)) => false,
                Some(("fleet", _)) if fleet => true,
                Some(("fleet", span)) => return invalid(span, "scope = \"fleet\" needs a [fleet] section"),
                Some((other, span)) => {
                    return invalid(span, format!("scope must be \"fleet\" or \"replica\", got {other:?}"))
                }
            };
            SignalConfig::Local { metric, pool, window, fleet_wide }
        }
        "postgres" => {
            let password = secret::password(s.password_env.as_ref(), s.password_file.as_ref(), raw.span())?;
            let url = postgres_url(&url()?, password.as_deref())?;
            let query = required(&s.query, "query")?.into_inner();
            SignalConfig::Postgres { url, query, timeout: timeout()? }
        }
        "prometheus" => SignalConfig::Prometheus {
            url: url()?.check(http_url)?,
            query: required(&s.query, "query")?.into_inner(),
            timeout: timeout()?,
            ca: ca_file(&s.ca)?,
        },
        _ => {
            let pointer = required(&s.pointer, "pointer")?;
            if !pointer.get_ref().is_empty() && !pointer.get_ref().starts_with('/') {
                return invalid(pointer.span(), "pointer must be an RFC 6901 JSON pointer such as \"/data/load\"");
            }
            SignalConfig::Http {
                url: url()?.check(http_url)?,
                pointer: pointer.into_inner(),
                timeout: timeout()?,
                ca: ca_file(&s.ca)?,
            }
        }
    })
}

#[cfg(test)]
mod tests;
