//! Upstream pools: endpoints, round-robin, kept-alive HTTP/1.1 connections,
//! passive ejection and active health checks.
//!
//! Connections are our own small pool (a lock-free queue of idle
//! [`h1::Connection`]s per endpoint) rather than hyper-util's legacy client:
//! checking a connection out *before* the request is handed over is what
//! lets a failed connect be retried on another endpoint without buffering
//! the body, and the checkout takes no lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http_body_util::Empty;
use prometheus::IntGauge;
use tokio::net::TcpStream;

use crate::config::{PoolConfig, PoolName};
use crate::metrics::Metrics;
use crate::proxy::h1;

pub type Conn = h1::Connection;

/// Idle connections kept per endpoint; more are closed when returned.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Milliseconds since the process started: a cheap monotonic clock that
/// fits in an atomic.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Endpoint {
    pub pool: PoolName,
    /// `host:port` as configured; also the upstream `Host` when a request has none.
    pub authority: String,
    idle: ArrayQueue<(Conn, Instant)>,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Result of the last active health check (true when none is configured).
    check_ok: AtomicBool,
    healthy_gauge: IntGauge,
}

impl Endpoint {
    fn new(pool: PoolName, authority: &str, metrics: &Metrics) -> Self {
        let gauge = metrics.endpoint_healthy.with_label_values(&[pool.as_str(), authority]);
        gauge.set(1);
        Endpoint {
            pool,
            authority: authority.to_string(),
            idle: ArrayQueue::new(MAX_IDLE_PER_ENDPOINT),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            check_ok: AtomicBool::new(true),
            healthy_gauge: gauge,
        }
    }

    pub fn is_healthy(&self, now_ms: u64) -> bool {
        self.check_ok.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// [`Self::is_healthy`] reading the clock only for an endpoint that was
    /// ever ejected (the request path's case: usually none was).
    fn is_healthy_now(&self) -> bool {
        self.check_ok.load(Ordering::Relaxed) && {
            let until = self.ejected_until_ms.load(Ordering::Relaxed);
            until == 0 || until <= now_ms()
        }
    }

    fn refresh_gauge(&self) {
        self.healthy_gauge.set(self.is_healthy(now_ms()) as i64);
    }

    /// Passive health: `max_fails` consecutive connect failures eject the
    /// endpoint for `fail_timeout` (nginx's `max_fails`/`fail_timeout`).
    fn record_failure(&self, config: &PoolConfig) {
        let fails = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if config.max_fails > 0 && fails >= config.max_fails {
            let until = now_ms() + config.fail_timeout.as_millis() as u64;
            if self.ejected_until_ms.swap(until, Ordering::Relaxed) <= now_ms() {
                tracing::warn!(pool = self.pool.as_str(), endpoint = %self.authority, fails, "endpoint ejected after consecutive connect failures");
            }
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.healthy_gauge.set(0);
        }
    }

    fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Hand a connection back after its response body was read to the end.
    pub fn release(&self, conn: Conn) {
        let _ = self.idle.push((conn, Instant::now()));
    }
}

pub struct Pool {
    pub name: PoolName,
    pub config: PoolConfig,
    pub endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

impl Pool {
    /// Builds a pool, reusing endpoints (their idle connections and health)
    /// of `previous` whose address is unchanged.
    pub fn build(name: PoolName, config: &PoolConfig, previous: Option<&Pool>, metrics: &Metrics) -> Arc<Pool> {
        let endpoints = config
            .endpoints
            .iter()
            .map(|addr| {
                previous
                    .and_then(|p| p.endpoints.iter().find(|e| &e.authority == addr))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(name, addr, metrics)))
            })
            .collect();
        if let Some(prev) = previous {
            for gone in prev.endpoints.iter().filter(|e| !config.endpoints.contains(&e.authority)) {
                let _ = metrics.endpoint_healthy.remove_label_values(&[name.as_str(), &gone.authority]);
            }
        }
        Arc::new(Pool { name, config: config.clone(), endpoints, next: AtomicUsize::new(0) })
    }

    pub fn has_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.is_healthy_now())
    }

    /// Round-robin over healthy endpoints, skipping `avoid`. With none
    /// healthy, round-robin over all (Envoy's "panic mode"): trying a
    /// maybe-dead endpoint beats refusing every request.
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        let start = if n == 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) };
        let usable = |e: &&Arc<Endpoint>| avoid.is_none_or(|a| !Arc::ptr_eq(a, e));
        let ring = || (0..n).map(|i| &self.endpoints[(start + i) % n]);
        ring().filter(usable).find(|e| e.is_healthy_now()).or_else(|| ring().find(usable))
    }

    /// A ready connection to `endpoint`: an idle one if any, else a new one.
    pub async fn checkout(&self, endpoint: &Endpoint) -> Result<Conn, ConnectError> {
        while let Some((mut conn, since)) = endpoint.idle.pop() {
            if since.elapsed() < self.config.idle_timeout && conn.is_reusable() {
                conn.mark_reused();
                return Ok(conn);
            }
        }
        // Boxed: a new connection is the rare case, and its (large)
        // handshake future would otherwise sit inline in every request's
        // future, which is moved and kept per client connection.
        Box::pin(self.connect_fresh(endpoint)).await
    }

    /// A new connection to `endpoint`, never one from the idle pool (also
    /// for a request whose pooled connection turned out stale); the result
    /// feeds passive health.
    pub async fn connect_fresh(&self, endpoint: &Endpoint) -> Result<Conn, ConnectError> {
        let result = self.connect(endpoint).await;
        match &result {
            Ok(_) => endpoint.record_success(),
            Err(_) => endpoint.record_failure(&self.config),
        }
        result
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Conn, ConnectError> {
        let stream = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(&endpoint.authority))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        stream.set_nodelay(true)?;
        Ok(h1::Connection::new(stream))
    }
}

/// Active health checks: `GET health.path` on every endpoint each
/// `interval`; a 2xx/3xx answer within `timeout` is healthy. Runs until the
/// pool is replaced by a reload (the task only holds a `Weak`).
pub fn spawn_health_checks(pool: &Arc<Pool>) {
    for endpoint in &pool.endpoints {
        endpoint.refresh_gauge();
    }
    let Some(health) = pool.config.health.clone() else {
        return;
    };
    let weak: Weak<Pool> = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for endpoint in &pool.endpoints {
                let ok = probe(&endpoint.authority, &health.path, health.timeout).await;
                if endpoint.check_ok.swap(ok, Ordering::Relaxed) != ok {
                    if ok {
                        tracing::info!(pool = pool.name.as_str(), endpoint = %endpoint.authority, "health check passed: endpoint back in rotation");
                    } else {
                        tracing::warn!(pool = pool.name.as_str(), endpoint = %endpoint.authority, path = %health.path, "health check failed: endpoint out of rotation");
                    }
                }
                endpoint.refresh_gauge();
            }
        }
    });
}

/// One health probe on a fresh connection (so a check never steals or
/// poisons a pooled connection).
pub async fn probe(authority: &str, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(authority).await.ok()?;
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: grayshift-health\r\nconnection: close\r\n\r\n"
        );
        let mut req = h1::Outgoing::<Empty<Bytes>>::new(head.into_bytes(), http::Method::GET, None, false);
        let status = h1::Connection::new(stream).send(&mut req).await.ok()?.status();
        Some(status.is_success() || status.is_redirection())
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
