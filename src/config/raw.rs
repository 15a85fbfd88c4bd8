//! The config file as serde sees it: plain structs, `deny_unknown_fields`,
//! values that need checking kept with their byte span so an error can point
//! at `LINE:COL`. Nothing outside `config` uses these types.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    pub split: RawSplit,
    pub pools: RawPools,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub rollback: RawRollback,
    #[serde(default)]
    pub features: RawFeatures,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    pub ledger: Option<S<RawLedger>>,
    pub fleet: Option<S<RawFleet>>,
    pub schema: Option<S<RawSchema>>,
    pub ramp: Option<S<RawRamp>>,
    pub flags: Option<S<RawFlags>>,
    pub shadow: Option<S<RawShadow>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<S<String>>,
    pub tls: Option<RawTls>,
    pub workers: Option<S<usize>>,
    pub drain_timeout: Option<S<String>>,
    pub header_read_timeout: Option<S<String>>,
    pub body_read_timeout: Option<S<String>>,
    pub max_header_bytes: Option<S<usize>>,
    pub max_headers: Option<S<usize>>,
    pub max_uri_bytes: Option<S<usize>>,
    pub max_body_bytes: Option<S<u64>>,
    pub max_connections: Option<S<usize>>,
    pub underscore_headers: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<S<String>>,
    pub token_env: Option<S<String>>,
    pub token_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub percent: S<i64>,
    pub group: S<String>,
    pub key: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub force_new: Vec<String>,
    #[serde(default)]
    pub force_stable: Vec<S<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<S<String>>,
    pub fallback_to_stable: Option<bool>,
    pub expose_pool: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPools {
    pub stable: RawPool,
    pub new: RawPool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub endpoints: S<Vec<S<String>>>,
    pub connect_timeout: Option<S<String>>,
    pub request_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub max_fails: Option<S<u32>>,
    pub fail_timeout: Option<S<String>>,
    pub health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: S<String>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub file: Option<S<String>>,
    pub audit: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    pub interval: Option<S<String>>,
    pub recover_for: Option<S<String>>,
    pub hook: Option<S<RawHook>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub exec: Option<Vec<String>>,
    pub webhook: Option<String>,
    pub webhook_env: Option<String>,
    pub webhook_file: Option<String>,
    pub timeout: Option<String>,
    pub ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatures {
    #[serde(default)]
    pub paths: Vec<S<String>>,
    #[serde(default)]
    pub methods: Vec<S<String>>,
    pub status: Option<S<u16>>,
    pub retry_after: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub case_insensitive: Option<bool>,
    pub escaped_slashes: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: S<String>,
    pub level: S<String>,
    pub signal: S<RawSignal>,
    pub above: Option<S<f64>>,
    pub below: Option<S<f64>>,
    #[serde(rename = "for")]
    pub for_: Option<S<String>>,
    pub min_requests: Option<S<u64>>,
    pub on_error: Option<S<String>>,
}

/// All signal fields in one struct (not a tagged enum): serde's internally
/// tagged enums lose spans, and one struct lets us say "`query` does not
/// apply to source `local`" instead of a generic serde message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignal {
    pub source: S<String>,
    pub metric: Option<S<String>>,
    pub pool: Option<S<String>>,
    pub window: Option<S<String>>,
    pub scope: Option<S<String>>,
    pub url: Option<S<String>>,
    pub url_env: Option<S<String>>,
    pub url_file: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub query: Option<S<String>>,
    pub pointer: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub webhook: Option<S<String>>,
    pub webhook_env: Option<S<String>>,
    pub webhook_file: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub ca: Option<S<String>>,
    pub format: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    pub postgres: Option<S<String>>,
    pub postgres_env: Option<S<String>>,
    pub postgres_file: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub file: Option<S<String>>,
    pub table: Option<S<String>>,
    pub flush: Option<S<String>>,
    pub capacity: Option<S<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub etcd: Option<S<Vec<S<String>>>>,
    /// The same list from a variable or a file (URLs separated by commas or
    /// whitespace): the endpoints can be as private as a password.
    pub etcd_env: Option<S<String>>,
    pub etcd_file: Option<S<String>>,
    pub name: Option<S<String>>,
    pub replica: Option<S<String>>,
    pub lease_ttl: Option<S<String>>,
    pub sync_timeout: Option<S<String>>,
    pub user: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub tls: Option<RawFleetTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetTls {
    pub ca: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    pub url: Option<S<String>>,
    pub url_env: Option<S<String>>,
    pub url_file: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub tool: S<String>,
    pub new_requires: S<OneOrMany>,
    pub stable_supports: S<OneOrMany>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub query: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRamp {
    pub steps: S<Vec<i64>>,
    pub hold: S<OneOrMany>,
    pub min_requests: Option<S<u64>>,
    pub auto_start: Option<S<bool>>,
}

/// A version bound: `"2.4"` or `["a1b2", "c3d4"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlags {
    pub tokens_file: Option<S<String>>,
    pub tokens_env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub sample: Option<S<String>>,
    pub methods: Option<S<Vec<S<String>>>>,
    pub unsafe_methods: Option<bool>,
    #[serde(default)]
    pub paths: Vec<S<String>>,
    #[serde(default)]
    pub exclude: Vec<S<String>>,
    pub noise: Option<bool>,
    #[serde(default)]
    pub ignore: Vec<S<String>>,
    #[serde(default)]
    pub ignore_headers: Vec<S<String>>,
    #[serde(default)]
    pub unordered: Vec<S<String>>,
    pub max_body: Option<S<String>>,
    pub max_in_flight: Option<S<usize>>,
    pub timeout: Option<S<String>>,
}
