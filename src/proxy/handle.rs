//! The request path, top to bottom: who is the user → which pool → shed or
//! fall back → connect → rewrite → forward → respond. Each step lives in its
//! own module; this function only puts them in order.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response};
use http_body::Body;

use crate::config::{PoolName, ShedMode, UnderscoreHeaders};
use crate::metrics::UpstreamErrorKind;
use crate::proxy::body::{ClientBody, RequestBody, ResponseBody, UpstreamBody};
pub use crate::proxy::conn::ConnInfo;
use crate::proxy::conn::IpText;
use crate::proxy::error::{text_response, ProxyError};
use crate::proxy::forward::{self, Answer};
use crate::proxy::h1::Outgoing;
use crate::proxy::h1_server::OnUpgrade;
use crate::proxy::path;
use crate::proxy::rewrite::{self, Forwarded};
use crate::proxy::split;
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
        Err((error, pool)) => {
            tracing::debug!(%error, "request failed");
            let pool = pool.filter(|_| !error.is_client_error());
            let response = error.into_response();
            if let Some(pool) = pool {
                shared.metrics.pool(pool).count_response(response.status().as_u16(), started.elapsed().as_secs_f64());
            }
            (response, pool, None)
        }
    };
    if let Some((method, path)) = method {
        tracing::info!(
            target: "grayshift::access",
            peer = %conn.peer, %method, path, status = response.status().as_u16(),
            pool = pool.map_or("-", PoolName::as_str), bucket, ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
    Ok(response)
}

type Routed = (Response<ResponseBody>, Option<PoolName>, Option<u8>);

async fn route_and_forward(
    shared: &Shared,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    started: Instant,
) -> Result<Routed, (ProxyError, Option<PoolName>)> {
    let snapshot = shared.snapshot.load_full();
    let config = &snapshot.config;
    let route = shared.control.route();
    let metrics = &shared.metrics;

    // 1. Refuse what cannot be forwarded safely (smuggling, bad Host), and
    //    settle the path the upstream will route: from here on, L2 and the
    //    upstream read the same one (`path.rs`).
    crate::proxy::framing::check(&req, config.server.max_uri_bytes).map_err(|e| (e.into(), None))?;
    if config.server.underscore_headers == UnderscoreHeaders::Reject {
        crate::proxy::framing::no_underscores(req.headers()).map_err(|e| (e.into(), None))?;
    }
    if let Some(uri) = path::upstream_uri(req.method(), req.uri(), &config.features).map_err(|e| (e.into(), None))? {
        *req.uri_mut() = uri;
    }

    // 2. Who is the user, and which pool do they belong to?
    let splitter = &snapshot.splitter;
    let client = split::client_ip(conn.peer.ip(), req.headers(), &splitter.trusted_proxies);
    // Usually the client is the peer, whose text is at hand.
    let other_ip = (client != conn.peer.ip()).then(|| IpText::new(client));
    let ip_text = other_ip.as_ref().map_or(conn.peer_text.as_bytes(), IpText::as_bytes);
    // The key stays at hand for the exposure ledger (step 7).
    let (key, origin) = splitter.routing_key_origin(req.headers(), ip_text);
    let bucket = splitter.bucket(key);
    let mut pool = splitter.decide(key, bucket, route.percent, route.new_refused()).0;

    // 3. Under L2, the new-feature entry points are shed (or sent to stable).
    if route.shedding && config.features.matches(req.method(), req.uri().path()) {
        metrics.shed.inc();
        match config.features.mode {
            ShedMode::Reject => return Ok((shed_response(&config.features), None, Some(bucket))),
            ShedMode::Stable => pool = PoolName::Stable,
        }
    }

    // 4. Requests over the body limit are refused before anything is sent
    //    (a chunked body is cut off by `RequestBody` once it passes it).
    if let Some(limit) = config.server.max_body_bytes {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            metrics.client_errors.count(crate::metrics::ClientErrorKind::BodyTooLarge);
            return Err((ProxyError::BodyTooLarge, None));
        }
    }

    // 5. `new` without a healthy endpoint hands its users to stable.
    let fallback = config.split.fallback_to_stable;
    if pool == PoolName::New && fallback && !snapshot.pool(PoolName::New).has_healthy() {
        metrics.fallback.inc();
        pool = PoolName::Stable;
    }

    // 6. Connect (one retry on another endpoint for idempotent requests;
    //    a `new` that cannot be reached also falls back: nothing was sent).
    let retry = forward::is_idempotent(req.method());
    let (upstream_conn, endpoint) = match forward::connect(snapshot.pool(pool), metrics.pool(pool), retry).await {
        Ok(c) => c,
        Err(_) if pool == PoolName::New && fallback => {
            metrics.fallback.inc();
            pool = PoolName::Stable;
            forward::connect(snapshot.pool(pool), metrics.pool(pool), retry).await.map_err(|e| (e, Some(pool)))?
        }
        Err(e) => return Err((e, Some(pool))),
    };

    // 7. `new` will serve this user: the exposure ledger remembers them
    //    (after every fallback, so only users `new` really served count).
    if let (PoolName::New, Some(ledger)) = (pool, &shared.ledger) {
        ledger.recorder.offer(key, origin, !req.method().is_safe());
    }

    // 8. Write the upstream's request head and send.
    // The HTTP/1 server attached the upgrade when the head asked for one
    // grayshift tunnels (`hop_by_hop::is_upgrade`); HTTP/2 has none.
    let client_upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let upgrade = client_upgrade.is_some();
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
            pool,
            bucket,
            upgrade,
            endpoint: &endpoint.authority,
            underscores: config.server.underscore_headers,
        },
        has_body,
    );
    let method = req.method().clone();
    let body = has_body.then(|| {
        let server = &config.server;
        RequestBody::new(
            req.into_body(),
            server.max_body_bytes,
            server.body_read_timeout,
            metrics.client_errors.clone(),
        )
    });
    let outgoing = Outgoing::new(head, method, body, chunked).with_upgrade(upgrade);
    let pool_metrics = metrics.pool(pool);
    let Answer { mut response, endpoint, client_wait } =
        forward::send(snapshot.pool(pool), pool_metrics, upstream_conn, endpoint, outgoing)
            .await
            .map_err(|e| (e, Some(pool)))?;

    // 9. Respond: count (a slow client's upload is not the pool's
    //    latency), rewrite headers, stream the body back.
    let pool_time = started.elapsed().saturating_sub(client_wait);
    pool_metrics.count_response(response.status().as_u16(), pool_time.as_secs_f64());
    rewrite::rewrite_response(&mut response, pool, config.split.expose_pool);
    if response.body().is_upgrade() {
        // The upstream connection now belongs to the tunnel, not the pool.
        let (parts, reader) = response.into_parts();
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(tunnel(client_upgrade, reader.into_upgraded()));
        }
        return Ok((Response::from_parts(parts, ResponseBody::empty()), Some(pool), Some(bucket)));
    }
    let resets = pool_metrics.upstream_errors[UpstreamErrorKind::Reset as usize].clone();
    let response = response.map(|reader| ResponseBody::Upstream(UpstreamBody::new(reader, endpoint, resets)));
    Ok((response, Some(pool), Some(bucket)))
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
