//! The metric set (docs/src/metrics.md), registered once. The request path only touches
//! pre-resolved handles (an atomic add each): no label lookup, no lock.

use prometheus::{
    core::Collector, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::PoolName;

/// Latency buckets for a proxy: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0];

/// Kinds of upstream failure (`grayshift_upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 3] = [Self::Connect, Self::Timeout, Self::Reset];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
        }
    }
}

/// Kinds of client fault in a request body (`grayshift_client_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// No piece of body within `server.body_read_timeout` (408).
    BodyTimeout,
    /// More than `server.max_body_bytes` (413).
    BodyTooLarge,
    /// The body broke off or was malformed (400).
    BodyAborted,
}

impl ClientErrorKind {
    pub const ALL: [ClientErrorKind; 3] = [Self::BodyTimeout, Self::BodyTooLarge, Self::BodyAborted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BodyTimeout => "body_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyAborted => "body_aborted",
        }
    }
}

/// `grayshift_client_errors_total{kind}`, resolved at start-up. Shared by
/// reference with every request body, which counts its own failure.
pub struct ClientErrors([IntCounter; 3]);

impl ClientErrors {
    pub fn count(&self, kind: ClientErrorKind) {
        self.0[kind as usize].inc();
    }
}

/// Who asked the flags API (`grayshift_flag_evaluations_total{protocol}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagProtocol {
    Ofrep,
    /// Counted from what Unleash SDKs report: they evaluate locally.
    Unleash,
}

impl FlagProtocol {
    pub const ALL: [FlagProtocol; 2] = [Self::Ofrep, Self::Unleash];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ofrep => "ofrep",
            Self::Unleash => "unleash",
        }
    }
}

/// `grayshift_flag_evaluations_total{protocol, variant}`, resolved at
/// start-up: an evaluation costs an atomic add.
pub struct FlagEvaluations([[IntCounter; 2]; 2]);

impl FlagEvaluations {
    pub fn count(&self, protocol: FlagProtocol, variant: PoolName, n: u64) {
        self.0[protocol as usize][variant.index()].inc_by(n);
    }
}

/// Why a sampled request got no comparison
/// (`grayshift_shadow_skipped_total{reason}`, docs/src/shadow.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowSkip {
    /// `shadow.max_in_flight` shadows were already running.
    Busy,
    /// The shadow side did not answer within `shadow.timeout`.
    Timeout,
    /// The shadow side refused or reset the connection, or answered garbage.
    Error,
    /// An answer or the request's body over `shadow.max_body`.
    TooLarge,
    /// The shadow side has no healthy endpoint.
    Unhealthy,
    /// The schema gate is closed: nothing goes to `new`.
    Gate,
    /// An L1/L3 is active: nothing goes to `new`.
    Rollback,
    /// A WebSocket upgrade: never mirrored.
    Websocket,
    /// The primary's answer never completed (the client went away, or the
    /// primary failed): nothing to compare with.
    Cancelled,
    /// Noise cancellation has not seen enough same-version pairs yet to
    /// judge a field that differed.
    Learning,
}

impl ShadowSkip {
    pub const ALL: [ShadowSkip; 10] = [
        Self::Busy,
        Self::Timeout,
        Self::Error,
        Self::TooLarge,
        Self::Unhealthy,
        Self::Gate,
        Self::Rollback,
        Self::Websocket,
        Self::Cancelled,
        Self::Learning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::TooLarge => "too_large",
            Self::Unhealthy => "unhealthy",
            Self::Gate => "gate",
            Self::Rollback => "rollback",
            Self::Websocket => "websocket",
            Self::Cancelled => "cancelled",
            Self::Learning => "learning",
        }
    }
}

/// Shadow reads' counters (registered whether or not `[shadow]` is on, so
/// dashboards see zeros rather than gaps).
pub struct ShadowMetrics {
    pub matched: IntCounter,
    pub mismatched: IntCounter,
    pub skipped: IntCounter,
    pub skipped_by: [IntCounter; 10],
    /// Comparisons and mismatches by the pool that answered the client (not
    /// exported): what a member publishes for the fleet-wide
    /// `shadow_mismatch_rate` (`control/rules/local.rs`).
    pub compared_by_primary: [IntCounter; 2],
    pub mismatched_by_primary: [IntCounter; 2],
    total: IntCounterVec,
    skipped_total: IntCounterVec,
}

impl ShadowMetrics {
    fn new() -> Self {
        let total = IntCounterVec::new(
            Opts::new("grayshift_shadow_total", "Shadow reads by result: match, mismatch, skipped."),
            &["result"],
        )
        .unwrap();
        let skipped_total = IntCounterVec::new(
            Opts::new("grayshift_shadow_skipped_total", "Shadow reads skipped, by reason."),
            &["reason"],
        )
        .unwrap();
        let hidden = || IntCounter::new("shadow_by_primary", "not exported").unwrap();
        ShadowMetrics {
            matched: total.with_label_values(&["match"]),
            mismatched: total.with_label_values(&["mismatch"]),
            skipped: total.with_label_values(&["skipped"]),
            skipped_by: ShadowSkip::ALL.map(|r| skipped_total.with_label_values(&[r.as_str()])),
            compared_by_primary: [hidden(), hidden()],
            mismatched_by_primary: [hidden(), hidden()],
            total,
            skipped_total,
        }
    }

    pub fn skip(&self, reason: ShadowSkip) {
        self.skipped.inc();
        self.skipped_by[reason as usize].inc();
    }

    fn collectors(&self) -> [Box<dyn Collector>; 2] {
        [Box::new(self.total.clone()), Box::new(self.skipped_total.clone())]
    }
}

/// Counters of one pool, resolved at start-up.
pub struct PoolMetrics {
    /// Indexed by status class: 0 = 1xx … 4 = 5xx.
    pub requests: [IntCounter; 5],
    pub duration: Histogram,
    pub upstream_errors: [IntCounter; 3],
    /// The resets that happened before the response head (not exported):
    /// those requests are 502s, already in `requests[4]`, so the error rate
    /// must not count them twice.
    pub resets_before_head: IntCounter,
}

impl PoolMetrics {
    pub fn count_response(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[class].inc();
        self.duration.observe(seconds);
    }

    pub fn count_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.iter().map(IntCounter::get).sum()
    }

    /// Requests that count against the pool's error rate: 5xx answers plus
    /// responses cut off mid-body (a reset before the head is a 502: once).
    pub fn total_errors(&self) -> u64 {
        let cut_off =
            self.upstream_errors[UpstreamErrorKind::Reset as usize].get().saturating_sub(self.resets_before_head.get());
        self.requests[4].get() + cut_off
    }
}

pub struct Metrics {
    registry: Registry,
    pools: [PoolMetrics; 2],
    pub fallback: IntCounter,
    pub shed: IntCounter,
    pub percent_desired: IntGauge,
    pub percent_effective: IntGauge,
    pub rollback_level: IntGauge,
    pub rule_value: GaugeVec,
    pub rule_firing: IntGaugeVec,
    pub reloads_ok: IntCounter,
    pub reloads_error: IntCounter,
    pub endpoint_healthy: IntGaugeVec,
    /// L3 hook runs by result.
    pub hook_runs: IntCounterVec,
    /// Signal reads that failed, per rule.
    pub signal_errors: IntCounterVec,
    pub ledger: LedgerMetrics,
    pub shadow: ShadowMetrics,
    /// 1 while the schema gate lets users reach `new` (1 without `[schema]`).
    pub schema_ready: IntGauge,
    /// 1 while an L1/L3 is active but blocked: stable does not support the
    /// schema (the point of no return), so users stay where they are.
    pub rollback_blocked: IntGauge,
    /// 1 while no side supports the schema (in neither list): the split is
    /// held, nobody moves.
    pub schema_unsupported: IntGauge,
    /// The ramp's step, 1-based; 0 while no ramp was started.
    pub ramp_step: IntGauge,
    /// Client TLS handshakes that failed or
    /// timed out (logged at `debug` only: any client can cause them).
    pub tls_handshake_errors: TlsHandshakeErrors,
    /// Request bodies that failed by the client's fault: never counted
    /// against a pool (docs/src/security.md, "Timeouts"). Leaked once when
    /// the metrics are made: every request body with it reaches it without
    /// touching a shared reference count.
    pub client_errors: &'static ClientErrors,
    pub flag_evaluations: FlagEvaluations,
    /// Fleet mode (docs/src/fleet.md), registered only with `[fleet]`.
    pub fleet_connected: IntGauge,
    pub fleet_revision: IntGauge,
    pub fleet_members: IntGauge,
}

/// The exposure ledger's counters (registered whether or not it is on, so
/// dashboards see zeros rather than gaps).
pub struct LedgerMetrics {
    /// Keys that could not be kept (queue or pending rows full).
    pub dropped: IntCounter,
    /// Sink writes that failed (retried).
    pub errors: IntCounter,
    /// Rows written to the sink.
    pub written: IntCounter,
    /// Rows waiting for the sink.
    pub queued: IntGauge,
}

impl LedgerMetrics {
    fn new() -> Self {
        LedgerMetrics {
            dropped: IntCounter::new(
                "grayshift_ledger_dropped_total",
                "Exposures dropped: queue or pending rows full.",
            )
            .unwrap(),
            errors: IntCounter::new("grayshift_ledger_errors_total", "Exposure ledger sink writes that failed.")
                .unwrap(),
            written: IntCounter::new("grayshift_ledger_written_total", "Exposure rows written to the ledger sink.")
                .unwrap(),
            queued: IntGauge::new("grayshift_ledger_queued", "Exposure rows waiting for the ledger sink.").unwrap(),
        }
    }

    fn collectors(&self) -> [Box<dyn Collector>; 4] {
        [
            Box::new(self.dropped.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.written.clone()),
            Box::new(self.queued.clone()),
        ]
    }
}

/// `grayshift_tls_handshake_errors_total{reason}`, resolved at start-up.
#[derive(Clone)]
pub struct TlsHandshakeErrors {
    pub failed: IntCounter,
    pub timeout: IntCounter,
}

/// `grayshift_tls_client_warnings_total`: rustls' complaints about a
/// client's handshake (an IP address as SNI, a fatal alert sent), which
/// the binary's log setup counts here instead of printing at `warn`
/// (`crate::logging`). One counter for the process, as logging is.
pub static TLS_CLIENT_WARNINGS: std::sync::LazyLock<IntCounter> = std::sync::LazyLock::new(|| {
    IntCounter::new(
        "grayshift_tls_client_warnings_total",
        "rustls warnings about client handshakes, counted instead of logged at warn.",
    )
    .unwrap()
});

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("grayshift_requests_total", "Requests answered, by pool and status class."),
            &["pool", "code"],
        )
        .unwrap();
        let duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "grayshift_request_duration_seconds",
                "Time from receiving a request to the upstream's response head, less any wait for the client's body, by pool.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["pool"],
        )
        .unwrap();
        let upstream_errors = IntCounterVec::new(
            Opts::new("grayshift_upstream_errors_total", "Upstream failures by pool and kind."),
            &["pool", "kind"],
        )
        .unwrap();
        let pool = |name: PoolName| PoolMetrics {
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| requests.with_label_values(&[name.as_str(), c])),
            duration: duration.with_label_values(&[name.as_str()]),
            upstream_errors: UpstreamErrorKind::ALL
                .map(|k| upstream_errors.with_label_values(&[name.as_str(), k.as_str()])),
            resets_before_head: IntCounter::new("resets_before_head", "not exported").unwrap(),
        };
        let pools = [pool(PoolName::Stable), pool(PoolName::New)];
        let percent = IntGaugeVec::new(
            Opts::new("grayshift_gray_percent", "Share of users sent to the new pool: desired and effective."),
            &["kind"],
        )
        .unwrap();
        let reloads =
            IntCounterVec::new(Opts::new("grayshift_config_reloads_total", "Config reloads by result."), &["result"])
                .unwrap();
        let handshake_errors = IntCounterVec::new(
            Opts::new("grayshift_tls_handshake_errors_total", "Client TLS handshakes that failed, by reason."),
            &["reason"],
        )
        .unwrap();
        let client_errors = IntCounterVec::new(
            Opts::new(
                "grayshift_client_errors_total",
                "Request bodies that failed by the client's fault (not counted against any pool), by kind.",
            ),
            &["kind"],
        )
        .unwrap();
        let flag_evaluations = IntCounterVec::new(
            Opts::new(
                "grayshift_flag_evaluations_total",
                "Flag evaluations by protocol and variant (Unleash: as its SDKs report them).",
            ),
            &["protocol", "variant"],
        )
        .unwrap();
        let m = Metrics {
            flag_evaluations: FlagEvaluations(
                FlagProtocol::ALL.map(|p| {
                    PoolName::ALL.map(|pool| flag_evaluations.with_label_values(&[p.as_str(), pool.as_str()]))
                }),
            ),
            client_errors: Box::leak(Box::new(ClientErrors(
                ClientErrorKind::ALL.map(|k| client_errors.with_label_values(&[k.as_str()])),
            ))),
            tls_handshake_errors: TlsHandshakeErrors {
                failed: handshake_errors.with_label_values(&["failed"]),
                timeout: handshake_errors.with_label_values(&["timeout"]),
            },
            fallback: IntCounter::new(
                "grayshift_fallback_total",
                "Requests for new sent to stable because new had no healthy endpoint.",
            )
            .unwrap(),
            shed: IntCounter::new("grayshift_shed_total", "New-feature requests shed while L2 is active.").unwrap(),
            percent_desired: percent.with_label_values(&["desired"]),
            percent_effective: percent.with_label_values(&["effective"]),
            rollback_level: IntGauge::new("grayshift_rollback_level", "Highest active rollback level (0 = none).")
                .unwrap(),
            rule_value: GaugeVec::new(
                Opts::new("grayshift_rule_value", "Last value read for each rule's signal."),
                &["rule"],
            )
            .unwrap(),
            rule_firing: IntGaugeVec::new(Opts::new("grayshift_rule_firing", "1 while a rule is firing."), &["rule"])
                .unwrap(),
            reloads_ok: reloads.with_label_values(&["ok"]),
            reloads_error: reloads.with_label_values(&["error"]),
            endpoint_healthy: IntGaugeVec::new(
                Opts::new("grayshift_endpoint_healthy", "1 when an upstream endpoint is taking traffic."),
                &["pool", "endpoint"],
            )
            .unwrap(),
            hook_runs: IntCounterVec::new(
                Opts::new("grayshift_hook_runs_total", "L3 data-rollback hook runs by result."),
                &["result"],
            )
            .unwrap(),
            signal_errors: IntCounterVec::new(
                Opts::new("grayshift_signal_errors_total", "Rule signal reads that failed (value unknown)."),
                &["rule"],
            )
            .unwrap(),
            ledger: LedgerMetrics::new(),
            shadow: ShadowMetrics::new(),
            schema_ready: IntGauge::new(
                "grayshift_schema_ready",
                "1 while the schema gate lets users reach new (the migration new requires has landed).",
            )
            .unwrap(),
            rollback_blocked: IntGauge::new(
                "grayshift_rollback_blocked",
                "1 while an L1/L3 rollback is active but blocked: stable does not support the database schema.",
            )
            .unwrap(),
            schema_unsupported: IntGauge::new(
                "grayshift_schema_unsupported",
                "1 while no side supports the database schema: the split is held, nobody moves.",
            )
            .unwrap(),
            ramp_step: IntGauge::new(
                "grayshift_ramp_step",
                "The progressive ramp's step (1-based); 0 before any ramp.",
            )
            .unwrap(),
            fleet_connected: IntGauge::new("grayshift_fleet_connected", "1 while the fleet store is reachable.")
                .unwrap(),
            fleet_revision: IntGauge::new(
                "grayshift_fleet_revision",
                "Store revision of the last shared change this replica applied.",
            )
            .unwrap(),
            fleet_members: IntGauge::new("grayshift_fleet_members", "Live fleet members (entries under a lease).")
                .unwrap(),
            pools,
            registry,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(requests),
            Box::new(duration),
            Box::new(upstream_errors),
            Box::new(m.fallback.clone()),
            Box::new(m.shed.clone()),
            Box::new(percent),
            Box::new(m.rollback_level.clone()),
            Box::new(m.rule_value.clone()),
            Box::new(m.rule_firing.clone()),
            Box::new(reloads),
            Box::new(m.endpoint_healthy.clone()),
            Box::new(m.hook_runs.clone()),
            Box::new(m.signal_errors.clone()),
            Box::new(m.schema_ready.clone()),
            Box::new(m.rollback_blocked.clone()),
            Box::new(m.schema_unsupported.clone()),
            Box::new(m.ramp_step.clone()),
            Box::new(handshake_errors),
            Box::new(client_errors),
            Box::new(flag_evaluations),
            Box::new(TLS_CLIENT_WARNINGS.clone()),
        ];
        for c in collectors.into_iter().chain(m.ledger.collectors()).chain(m.shadow.collectors()) {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Fleet mode: add the fleet gauges (once, at start).
    pub fn register_fleet(&self) {
        for g in [&self.fleet_connected, &self.fleet_revision, &self.fleet_members] {
            self.registry.register(Box::new(g.clone())).expect("fleet metrics are registered once");
        }
    }

    pub fn pool(&self, name: PoolName) -> &PoolMetrics {
        &self.pools[name.index()]
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    /// Per-rule gauges, resolved when the rule set is (re)built.
    pub fn rule_gauges(&self, rule: &str) -> (Gauge, IntGauge) {
        (self.rule_value.with_label_values(&[rule]), self.rule_firing.with_label_values(&[rule]))
    }
}
