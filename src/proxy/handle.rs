//! The request path as named phases, in the order a request walks them
//! (as Pingora's `ProxyHttp` names its own). Each phase is a plain function
//! whose name and arguments say what it may change; [`route_and_forward`]
//! only calls them in order:
//!
//! 1. [`request_filter`]: refuse what cannot be forwarded safely, settle the path;
//! 2. [`upstream_peer`]: who the user is, and which pool they belong to;
//! 3. [`shed_filter`]: under L2, shed a new-feature request or send it to stable;
//! 4. [`body_limit_filter`]: refuse a declared body over the limit;
//! 5. [`fallback_filter`] and [`connect_upstream`]: `new` without a
//!    healthy or reachable endpoint hands its users to stable;
//! 6. [`record_exposure`]: the exposure ledger remembers whom `new` served;
//!    with `[shadow]`, a sampled request is also mirrored to the other pool
//!    (`crate::shadow::mirror`);
//! 7. [`upstream_request`]: the upstream's request head (the header
//!    rewrites live in `rewrite.rs`) and body, then `forward::send`;
//! 8. [`response_filter`]: count the answer, rewrite its headers, hand
//!    the body (or the upgraded connection) back;
//! 9. [`log_access`]: one line per request with `--access-log`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;

use crate::config::{Config, PoolName, ShedMode, UnderscoreHeaders};
use crate::control::ledger::Ledger;
use crate::control::state::Route;
use crate::metrics::{Metrics, PoolMetrics, UpstreamErrorKind};
use crate::proxy::body::{ClientBody, RequestBody, ResponseBody, UpstreamBody};
pub use crate::proxy::conn::ConnInfo;
use crate::proxy::conn::IpText;
use crate::proxy::error::{text_response, ProxyError};
use crate::proxy::forward::{self, Answer};
use crate::proxy::h1::{Outgoing, ResponseReader};
use crate::proxy::h1_server::OnUpgrade;
use crate::proxy::rewrite::{self, Forwarded};
use crate::proxy::snapshot::Snapshot;
use crate::proxy::split::{self, KeyOrigin, Splitter};
use crate::proxy::upstream::{Conn, Endpoint};
use crate::proxy::{framing, path};
use crate::shadow::mirror;
use crate::Shared;

pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let method = shared.access_log.then(|| (req.method().clone(), req.uri().path().to_string()));
    let (response, pool, bucket) = match route_and_forward(&shared, &conn, req, started).await {
        Ok(done) => done,
        Err(Failed { error, pool, client_wait }) => {
            tracing::debug!(%error, "request failed");
            let pool = pool.filter(|_| !error.is_client_error());
            let response = error.into_response();
            if let Some(pool) = pool {
                // As for an answer: a slow upload is not the pool's latency.
                let pool_time = started.elapsed().saturating_sub(client_wait);
                shared.metrics.pool(pool).count_response(response.status().as_u16(), pool_time.as_secs_f64());
            }
            (response, pool, None)
        }
    };
    if let Some((method, path)) = method {
        log_access(&conn, &method, &path, &response, pool, bucket, started);
    }
    Ok(response)
}

type Routed = (Response<ResponseBody>, Option<PoolName>, Option<u8>);

/// A request that got no answer from an upstream: why, the pool it was
/// for (`None`: refused before one was involved), and how long it waited
/// for the client's body on the way.
struct Failed {
    error: ProxyError,
    pool: Option<PoolName>,
    client_wait: Duration,
}

impl Failed {
    fn refused(error: ProxyError) -> Failed {
        Failed { error, pool: None, client_wait: Duration::ZERO }
    }

    fn at(pool: PoolName) -> impl FnOnce(ProxyError) -> Failed {
        move |error| Failed { error, pool: Some(pool), client_wait: Duration::ZERO }
    }
}

async fn route_and_forward(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    started: Instant,
) -> Result<Routed, Failed> {
    let snapshot = shared.snapshot.load_full();
    let config = &snapshot.config;
    let route = shared.control.route();
    let metrics = &shared.metrics;

    request_filter(config, &mut req).map_err(Failed::refused)?;

    // The client's IP as text: usually the peer's, made once per connection.
    let splitter = &snapshot.splitter;
    let other_ip = other_client_ip(conn, req.headers(), splitter);
    let ip_text = other_ip.as_ref().map_or(conn.peer_text.as_bytes(), IpText::as_bytes);
    let Peer { key, origin, bucket, mut pool } = upstream_peer(splitter, req.headers(), ip_text, route);

    if route.shedding {
        if let Some(shed) = shed_filter(config, metrics, req.method(), req.uri(), &mut pool) {
            return Ok((shed, None, Some(bucket)));
        }
    }
    body_limit_filter(config, metrics, req.headers()).map_err(Failed::refused)?;
    let fallback = config.split.fallback_to_stable;
    fallback_filter(&snapshot, metrics, fallback, &mut pool);
    let (upstream_conn, endpoint) =
        connect_upstream(&snapshot, metrics, fallback, req.method(), &mut pool).await.map_err(Failed::at(pool))?;
    if let (PoolName::New, Some(ledger)) = (pool, &shared.ledger) {
        record_exposure(ledger, key, origin, req.method());
    }
    // Shadow reads (docs/src/shadow.md): without `[shadow]`, this branch is all they cost.
    let tap = match &config.shadow {
        None => None,
        Some(shadow) => {
            let primary = mirror::Primary { pool, bucket, key, origin, route, endpoint: &endpoint };
            let mirror = mirror::decide(shared, &snapshot, shadow, &req, primary);
            mirror.map(|m| m.start(shared, &snapshot, conn, &mut req))
        }
    };

    // The HTTP/1 server attached the upgrade when the head asked for one
    // grayshift tunnels (`hop_by_hop::is_upgrade`); HTTP/2 has none.
    let client_upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let target = Target { pool, bucket, upgrade: client_upgrade.is_some(), endpoint: &endpoint.authority };
    let outgoing = upstream_request(config, metrics, conn, splitter, req, target);
    let pool_metrics = metrics.pool(pool);
    let answer = forward::send(snapshot.pool(pool), pool_metrics, upstream_conn, endpoint, outgoing)
        .await
        .map_err(|f| Failed { error: f.error, pool: Some(pool), client_wait: f.client_wait })?;

    let mut response = response_filter(config, pool_metrics, answer, pool, started, client_upgrade);
    if let Some(tap) = tap {
        response = tap.attach(response);
    }
    Ok((response, Some(pool), Some(bucket)))
}

// The phases are `#[inline(always)]`: called once each, they must cost
// what the same code did written in place (a phase taking the request or
// the answer by value would otherwise copy it; callgrind showed ~190
// instructions per request of memcpy).

/// Phase 1. Refuse what cannot be forwarded safely (smuggling, a bad
/// Host, underscore names under `reject`), and settle the path the
/// upstream will route: from here on, L2 and the upstream read the same
/// one (`path.rs`). May change the request's URI.
#[inline(always)]
fn request_filter(config: &Config, req: &mut Request<ClientBody>) -> Result<(), ProxyError> {
    framing::check(req, config.server.max_uri_bytes)?;
    if config.server.underscore_headers == UnderscoreHeaders::Reject {
        framing::no_underscores(req.headers())?;
    }
    if let Some(uri) = path::upstream_uri(req.method(), req.uri(), &config.features)? {
        *req.uri_mut() = uri;
    }
    Ok(())
}

/// The client's IP as text when it is not the peer (a trusted proxy
/// forwarded the request); `None` when the peer's text is the one.
#[inline(always)]
fn other_client_ip(conn: &ConnInfo, headers: &HeaderMap, splitter: &Splitter) -> Option<IpText> {
    let client = split::client_ip(conn.peer.ip(), headers, &splitter.trusted_proxies);
    (client != conn.peer.ip()).then(|| IpText::new(client))
}

/// Who the user is and where the split sends them.
struct Peer<'r> {
    /// The routing key, kept for the exposure ledger.
    key: &'r [u8],
    origin: &'r Arc<KeyOrigin>,
    bucket: u8,
    pool: PoolName,
}

/// Phase 2. The routing key (the first of `split.key` present, else the
/// client IP), its bucket, and the pool from the bucket, the overrides and
/// the effective percent (`split.rs`, pure). Changes nothing.
#[inline(always)]
fn upstream_peer<'r>(splitter: &'r Splitter, headers: &'r HeaderMap, ip_text: &'r [u8], route: Route) -> Peer<'r> {
    let (key, origin) = splitter.routing_key_origin(headers, ip_text);
    let split::Decision { pool, bucket, .. } = splitter.decision(key, route);
    Peer { key, origin, bucket, pool }
}

/// Phase 3, under L2 only. A request to a new-feature entry point is
/// shed: answered here (the returned response), or sent to stable (may
/// change `pool`).
fn shed_filter(
    config: &Config,
    metrics: &Metrics,
    method: &Method,
    uri: &Uri,
    pool: &mut PoolName,
) -> Option<Response<ResponseBody>> {
    if !config.features.matches(method, uri.path()) {
        return None;
    }
    metrics.shed.inc();
    match config.features.mode {
        ShedMode::Reject => Some(shed_response(&config.features)),
        ShedMode::Stable => {
            *pool = PoolName::Stable;
            None
        }
    }
}

/// Phase 4. A request whose declared body is over `server.max_body_bytes`
/// is refused before anything is sent (a chunked body is cut off by
/// `RequestBody` once it passes the limit).
#[inline(always)]
fn body_limit_filter(config: &Config, metrics: &Metrics, headers: &HeaderMap) -> Result<(), ProxyError> {
    if let Some(limit) = config.server.max_body_bytes {
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            metrics.client_errors.count(crate::metrics::ClientErrorKind::BodyTooLarge);
            return Err(ProxyError::BodyTooLarge);
        }
    }
    Ok(())
}

/// Phase 5a. `new` without a healthy endpoint hands its users to stable
/// (with `split.fallback_to_stable`). May change `pool`.
#[inline(always)]
fn fallback_filter(snapshot: &Snapshot, metrics: &Metrics, fallback: bool, pool: &mut PoolName) {
    if *pool == PoolName::New && fallback && !snapshot.pool(PoolName::New).has_healthy() {
        metrics.fallback.inc();
        *pool = PoolName::Stable;
    }
}

/// Phase 5b. Connect to an endpoint of `pool` (one retry on another
/// endpoint for idempotent requests); a `new` that cannot be reached also
/// falls back to stable, as nothing was sent yet. May change `pool`.
async fn connect_upstream(
    snapshot: &Snapshot,
    metrics: &Metrics,
    fallback: bool,
    method: &Method,
    pool: &mut PoolName,
) -> Result<(Conn, Arc<Endpoint>), ProxyError> {
    let retry = forward::is_idempotent(method);
    match forward::connect(snapshot.pool(*pool), metrics.pool(*pool), retry).await {
        Ok(c) => Ok(c),
        Err(_) if *pool == PoolName::New && fallback => {
            metrics.fallback.inc();
            *pool = PoolName::Stable;
            forward::connect(snapshot.pool(*pool), metrics.pool(*pool), retry).await
        }
        Err(e) => Err(e),
    }
}

/// Phase 6. `new` will serve this user: the exposure ledger remembers them
/// (after every fallback, so only users `new` really served count).
#[inline(always)]
fn record_exposure(ledger: &Ledger, key: &[u8], origin: &Arc<KeyOrigin>, method: &Method) {
    ledger.recorder.offer(key, origin, !method.is_safe());
}

/// Where the request goes, for its head.
struct Target<'a> {
    pool: PoolName,
    bucket: u8,
    /// A WebSocket upgrade grayshift tunnels.
    upgrade: bool,
    /// The endpoint's `host:port`.
    endpoint: &'a str,
}

/// Phase 7. The request as the upstream gets it: the head written by
/// [`rewrite::upstream_head`] straight from the client's, and the body
/// (bounded by `server.max_body_bytes` and `body_read_timeout`).
#[inline(always)]
fn upstream_request(
    config: &Config,
    metrics: &Metrics,
    conn: &ConnInfo,
    splitter: &Splitter,
    req: Request<ClientBody>,
    target: Target,
) -> Outgoing<RequestBody> {
    let peer_trusted = split::is_trusted(conn.peer.ip(), &splitter.trusted_proxies);
    let has_body = !req.body().is_end_stream();
    let (head, chunked) = rewrite::upstream_head(
        req.method(),
        req.uri(),
        req.headers(),
        &Forwarded {
            peer: &conn.peer_text,
            peer_trusted,
            tls: conn.tls,
            pool: target.pool,
            bucket: target.bucket,
            upgrade: target.upgrade,
            endpoint: target.endpoint,
            underscores: config.server.underscore_headers,
        },
        has_body,
    );
    let method = req.method().clone();
    let body = has_body.then(|| {
        let server = &config.server;
        RequestBody::new(req.into_body(), server.max_body_bytes, server.body_read_timeout, metrics.client_errors)
    });
    Outgoing::new(head, method, body, chunked).with_upgrade(target.upgrade)
}

/// Phase 8. The answer as the client gets it: counted in the pool's
/// metrics (a slow client's upload is not the pool's latency), its headers
/// rewritten ([`rewrite::rewrite_response`]), and its body streamed back;
/// a `101` hands both connections to a tunnel instead.
#[inline(always)]
fn response_filter(
    config: &Config,
    pool_metrics: &PoolMetrics,
    answer: Answer,
    pool: PoolName,
    started: Instant,
    client_upgrade: Option<OnUpgrade>,
) -> Response<ResponseBody> {
    let Answer { mut response, endpoint, client_wait } = answer;
    let pool_time = started.elapsed().saturating_sub(client_wait);
    pool_metrics.count_response(response.status().as_u16(), pool_time.as_secs_f64());
    rewrite::rewrite_response(&mut response, pool, config.split.expose_pool);
    if response.body().is_upgrade() {
        // The upstream connection now belongs to the tunnel, not the pool.
        let (parts, reader) = response.into_parts();
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(tunnel(client_upgrade, reader.into_upgraded()));
        }
        return Response::from_parts(parts, ResponseBody::empty());
    }
    let resets = pool_metrics.upstream_errors[UpstreamErrorKind::Reset as usize].clone();
    response.map(|reader: ResponseReader| ResponseBody::Upstream(UpstreamBody::new(reader, endpoint, resets)))
}

/// Phase 9. One line per request, with `--access-log`.
fn log_access(
    conn: &ConnInfo,
    method: &Method,
    path: &str,
    response: &Response<ResponseBody>,
    pool: Option<PoolName>,
    bucket: Option<u8>,
    started: Instant,
) {
    tracing::info!(
        target: "grayshift::access",
        peer = %conn.peer, %method, path, status = response.status().as_u16(),
        pool = pool.map_or("-", PoolName::as_str), bucket, ms = started.elapsed().as_secs_f64() * 1000.0,
    );
}

fn shed_response(features: &crate::config::FeaturesConfig) -> Response<ResponseBody> {
    let mut response = text_response(
        features.status,
        "grayshift: this feature is paused while the database is under load (L2), retry later\n",
    );
    if let Ok(value) = HeaderValue::from_str(&features.retry_after.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Copy bytes both ways between an upgraded client and upstream connection
/// (`early`: what the upstream sent right after its 101).
async fn tunnel(client: OnUpgrade, (mut upstream, early): (tokio::net::TcpStream, bytes::Bytes)) {
    let mut client = match client.upgraded().await {
        Ok(client) => client,
        Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
    };
    let copied = async {
        tokio::io::AsyncWriteExt::write_all(&mut client, &early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    if let Err(e) = copied.await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}
