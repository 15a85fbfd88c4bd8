//! The validated configuration: what the rest of grayshift reads. Every
//! value here has been checked by `config::validate`; nothing else builds
//! these types from untrusted input.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use ipnet::IpNet;

/// The two upstream pools. Every request goes to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolName {
    Stable,
    New,
}

impl PoolName {
    pub const ALL: [PoolName; 2] = [PoolName::Stable, PoolName::New];

    /// The pool that is not this one (where a shadow read goes).
    pub fn other(self) -> PoolName {
        match self {
            PoolName::Stable => PoolName::New,
            PoolName::New => PoolName::Stable,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Stable => "stable",
            PoolName::New => "new",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for PoolName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rollback levels of the runbook, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Level {
    L1,
    L2,
    L3,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::L1, Level::L2, Level::L3];

    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// Exactly `L1`, `L2` or `L3`, as the config and the admin API spell it
    /// (`grayshift ctl` upper-cases what a user types).
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "L1" => Some(Level::L1),
            "L2" => Some(Level::L2),
            "L3" => Some(Level::L3),
            _ => None,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "L{}", self.number())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub split: SplitConfig,
    pub stable: PoolConfig,
    pub new: PoolConfig,
    pub state: StateConfig,
    pub rollback: RollbackConfig,
    pub features: FeaturesConfig,
    pub rules: Vec<RuleConfig>,
    pub notify: Vec<NotifyConfig>,
    pub ledger: Option<LedgerConfig>,
    pub schema: Option<SchemaConfig>,
    pub ramp: Option<RampConfig>,
    /// `[fleet]`: share the run-time state through etcd (docs/src/fleet.md).
    pub fleet: Option<FleetConfig>,
    /// `[flags]`: the flags API (docs/src/flags-ofrep.md); `None` = its paths are 404.
    pub flags: Option<FlagsConfig>,
    /// `[shadow]`: shadow reads (docs/src/shadow.md); `None` = nothing is mirrored.
    pub shadow: Option<super::ShadowConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlagsConfig {
    pub tokens: FlagTokens,
}

/// The flags tokens. Their `Debug` shows only how many there are, so a
/// config printed in a log never carries one.
#[derive(Clone, PartialEq)]
pub struct FlagTokens(pub Vec<String>);

impl std::fmt::Debug for FlagTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlagTokens({} tokens)", self.0.len())
    }
}

impl Config {
    pub fn pool(&self, name: PoolName) -> &PoolConfig {
        match name {
            PoolName::Stable => &self.stable,
            PoolName::New => &self.new,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Tokio worker threads; `None` = one per core.
    pub workers: Option<usize>,
    pub drain_timeout: Duration,
    /// Also bounds how long an idle keep-alive connection waits for its next
    /// request: the HTTP/1 server counts it from when it starts waiting for
    /// a head.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body: 408 beyond.
    pub body_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Longest request target (path and query) accepted: 414 beyond.
    pub max_uri_bytes: usize,
    pub max_body_bytes: Option<u64>,
    pub max_connections: usize,
    pub underscore_headers: UnderscoreHeaders,
}

/// What happens to a request header whose name has an `_` (CGI, WSGI and
/// Rack read `X_A` and `X-A` as the same variable). A name that, with `_`
/// read as `-`, is one grayshift sets or strips is never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Forward the other underscore names.
    Allow,
    /// Leave every underscore name out (nginx's default).
    Drop,
    /// Refuse the request (400).
    Reject,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_env: String,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SplitConfig {
    pub percent: u8,
    pub group: String,
    pub key: Vec<KeySource>,
    pub force_new: HashSet<String>,
    pub force_stable: HashSet<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub fallback_to_stable: bool,
    pub expose_pool: bool,
}

/// Where a routing key may come from, in `split.key` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
}

impl KeySource {
    /// As the exposure ledger writes it: `header:x-user-id` (header names
    /// in lower case), `cookie:NAME`, `client_ip`.
    pub fn label(&self) -> String {
        match self {
            KeySource::Header(name) => format!("header:{name}"),
            KeySource::Cookie(name) => format!("cookie:{name}"),
            KeySource::ClientIp => "client_ip".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// Consecutive connect failures that eject an endpoint (0 = never).
    pub max_fails: u32,
    /// How long an ejected endpoint sits out before it is tried again.
    pub fail_timeout: Duration,
    pub health: Option<HealthConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub file: PathBuf,
    pub audit: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollbackConfig {
    pub interval: Duration,
    pub recover_for: Duration,
    pub hook: Option<HookConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HookAction {
    Exec(Vec<String>),
    /// The URL, and a CA file for an `https://` one.
    Webhook(String, Option<PathBuf>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    pub action: HookAction,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedMode {
    /// Answer with `status` and `Retry-After`.
    Reject,
    /// Send the request to the stable pool instead.
    Stable,
}

/// What an escaped slash (`%2F`, `%5C`, `\`) becomes when reading it as a
/// separator changes which path was asked (docs/src/security.md, "How
/// grayshift reads a path").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refuse the request with 400.
    Reject,
    /// Read it as `/`, for matching and upstream.
    Decode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeaturesConfig {
    pub paths: Vec<String>,
    /// Empty = every method.
    pub methods: Vec<http::Method>,
    pub status: http::StatusCode,
    pub retry_after: Duration,
    pub mode: ShedMode,
    /// Compare `paths` ignoring ASCII case.
    pub case_insensitive: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl FeaturesConfig {
    /// Whether a request is one of the new-feature entry points L2 sheds.
    /// `path` is matched as an upstream would read it, normalised (see
    /// [`crate::path_normal::normalize`]).
    pub fn matches(&self, method: &http::Method, path: &str) -> bool {
        if !(self.methods.is_empty() || self.methods.contains(method)) || self.paths.is_empty() {
            return false;
        }
        let path = crate::path_normal::normalize(path);
        self.paths.iter().any(|p| {
            let p = p.as_bytes();
            path.len() >= p.len()
                && if self.case_insensitive {
                    path.as_bytes()[..p.len()].eq_ignore_ascii_case(p)
                } else {
                    path.as_bytes()[..p.len()] == *p
                }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
}

impl Condition {
    pub fn is_bad(self, value: f64) -> bool {
        match self {
            Condition::Above(t) => value > t,
            Condition::Below(t) => value < t,
        }
    }

    pub fn threshold(self) -> f64 {
        match self {
            Condition::Above(t) | Condition::Below(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalMetric {
    ErrorRate,
    LatencyP99,
    ErrorRateDelta,
    /// Shadow reads' mismatches / comparisons (docs/src/shadow.md), both
    /// pools' answers together; `min_requests` counts comparisons.
    ShadowMismatchRate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SignalConfig {
    /// `fleet_wide`: the sum over the fleet's live members (docs/src/fleet.md, Fleet-wide local signals),
    /// the default with `[fleet]`; otherwise this replica's own traffic.
    Local {
        metric: LocalMetric,
        pool: PoolName,
        window: Duration,
        fleet_wide: bool,
    },
    Postgres {
        url: String,
        query: String,
        timeout: Duration,
    },
    Prometheus {
        url: String,
        query: String,
        timeout: Duration,
        /// CA file for an `https://` URL (else the system's roots).
        ca: Option<PathBuf>,
    },
    Http {
        url: String,
        pointer: String,
        timeout: Duration,
        ca: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub name: String,
    pub level: Level,
    pub signal: SignalConfig,
    pub condition: Condition,
    pub for_: Duration,
    pub min_requests: u64,
    /// Fire when the signal cannot be read (`on_error = "fire"`).
    pub fire_on_error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub webhook: String,
    pub timeout: Duration,
    /// CA file for an `https://` webhook (else the system's roots).
    pub ca: Option<PathBuf>,
    pub format: NotifyFormat,
}

/// `[[notify]] format`: grayshift's JSON document, or a Slack-compatible
/// `{"text": …}` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    Json,
    Slack,
}

/// `[ramp]`: the progressive ramp's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RampConfig {
    pub plan: Plan,
    /// Start at the first step when the config loads (a ramp never started).
    pub auto_start: bool,
}

/// `[ramp]`, validated: `holds[i]` is the bake time at `steps[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<u8>,
    pub holds: Vec<Duration>,
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PlanError {
    pub key: &'static str,
    pub message: String,
}

impl Plan {
    /// `hold` is one value for every step, or one per step but the last.
    pub fn new(steps: Vec<i64>, hold: Vec<Duration>, min_requests: u64) -> Result<Plan, PlanError> {
        let err = |key, message: String| Err(PlanError { key, message });
        if steps.is_empty() {
            return err("steps", "needs at least one percent".into());
        }
        if let Some(bad) = steps.iter().find(|p| !(0..=100).contains(*p)) {
            return err("steps", format!("{bad} is not a percent (0..100)"));
        }
        if let Some(w) = steps.windows(2).find(|w| w[0] >= w[1]) {
            return err("steps", format!("must increase: {} then {}", w[0], w[1]));
        }
        let gaps = steps.len() - 1;
        let holds = match hold.len() {
            1 => vec![hold[0]; gaps],
            n if n == gaps => hold,
            n => {
                return err(
                    "hold",
                    format!(
                        "{n} values for {} steps: give one value, or one per step but the last ({gaps})",
                        steps.len()
                    ),
                );
            }
        };
        Ok(Plan { steps: steps.into_iter().map(|p| p as u8).collect(), holds, min_requests })
    }

    pub(crate) fn last(&self) -> usize {
        self.steps.len() - 1
    }
}

/// The longest duration any key accepts. Durations end up added to clocks
/// (hyper's header-read deadline, the rule loop's next tick, signal
/// deadlines); near `u64::MAX` seconds that overflows `Instant` and panics,
/// which the release profile turns into an abort of the whole proxy.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The longest sliding window a local signal may ask for.
pub const MAX_LOCAL_WINDOW: Duration = Duration::from_secs(3600);

/// `[schema]`: the migration version `new` needs and `stable` supports, read
/// from PostgreSQL every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaConfig {
    pub url: String,
    pub bounds: crate::migration::Bounds,
    pub interval: Duration,
    pub timeout: Duration,
    /// `tool = "sql"` only: the query whose first column of the first row is the version.
    pub query: Option<String>,
}

/// `[ledger]`: who `new` served, for the data-rollback hook.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    pub sink: LedgerSink,
    pub flush: Duration,
    /// Distinct keys remembered per flush interval (and queued at most).
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LedgerSink {
    /// A PostgreSQL URL and the table's (validated) name.
    Postgres { url: String, table: String },
    /// JSON lines, one per key and flush.
    File(PathBuf),
}

/// `[fleet]` (docs/src/fleet.md).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// `http://` or `https://` URLs of the etcd members.
    pub etcd: Vec<String>,
    /// Key prefix `/grayshift/v1/<name>/`.
    pub name: String,
    /// This replica's member name.
    pub replica: String,
    pub lease_ttl: Duration,
    pub sync_timeout: Duration,
    pub user: Option<String>,
    pub password: Option<PasswordSource>,
    /// CA bundle (PEM) for `https://` endpoints.
    pub tls_ca: Option<PathBuf>,
}

impl FleetConfig {
    /// The prefix every fleet key lives under.
    pub fn prefix(&self) -> String {
        format!("/grayshift/v1/{}/", self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}
