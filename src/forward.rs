//! Forwarding: header rewriting in place on both legs, and sending a
//! request to a pool with the one connect retry that is safe.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use crate::body::RequestBody;
use crate::config::PoolName;
use crate::error::ProxyError;
use crate::metrics::{PoolMetrics, UpstreamErrorKind};
use crate::upstream::{Conn, Endpoint, Pool};

pub static X_GRAY_POOL: HeaderName = HeaderName::from_static("x-gray-pool");
pub static X_GRAY_BUCKET: HeaderName = HeaderName::from_static("x-gray-bucket");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers of RFC 9110 §7.6.1 (plus the legacy ones), never
/// forwarded as received.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

pub fn pool_header(pool: PoolName) -> HeaderValue {
    match pool {
        PoolName::Stable => HeaderValue::from_static("stable"),
        PoolName::New => HeaderValue::from_static("new"),
    }
}

/// `"0"`…`"99"`, made once so the request path never formats a number.
fn bucket_header(bucket: u8) -> HeaderValue {
    static VALUES: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    VALUES.get_or_init(|| (0..100u16).map(HeaderValue::from).collect())[bucket as usize].clone()
}

/// True for a request asking to switch protocols (WebSocket and friends).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, &header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers, including every header named in
/// `Connection`. For an upgrade, `Connection: upgrade` and `Upgrade` stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// What the request path learned about a request, for the upstream's eyes.
pub struct Forwarded {
    pub peer: IpAddr,
    /// The peer is a trusted proxy: its X-Forwarded-Proto/Host stand.
    pub peer_trusted: bool,
    pub tls: bool,
    pub pool: PoolName,
    pub bucket: u8,
    pub upgrade: bool,
}

/// Rewrite a client request for the upstream, in place: origin-form URI,
/// `Host` kept (taken from the URI authority for HTTP/2 clients),
/// hop-by-hop headers removed, X-Forwarded-*, X-Gray-Pool and X-Gray-Bucket.
pub fn rewrite_request<B>(req: &mut Request<B>, fwd: &Forwarded) {
    let authority = req.uri().authority().cloned();
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = http::Version::HTTP_11;

    let headers = req.headers_mut();
    strip_hop_by_hop(headers, fwd.upgrade);
    if !headers.contains_key(header::HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(header::HOST, value);
        }
    }

    let peer = crate::split::IpText::new(fwd.peer);
    let peer = std::str::from_utf8(peer.as_bytes()).expect("IP text is ASCII");
    let xff = match headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>() {
        prior if prior.is_empty() => HeaderValue::from_str(peer),
        prior => HeaderValue::from_str(&format!("{}, {peer}", prior.join(", "))),
    };
    if let Ok(xff) = xff {
        headers.insert(&X_FORWARDED_FOR, xff);
    }
    if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if fwd.tls { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => headers.insert(&X_FORWARDED_HOST, host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    headers.insert(&X_GRAY_POOL, pool_header(fwd.pool));
    headers.insert(&X_GRAY_BUCKET, bucket_header(fwd.bucket));
}

/// Rewrite an upstream response for the client, in place.
pub fn rewrite_response<B>(resp: &mut Response<B>, pool: PoolName, expose_pool: bool) {
    let upgrade = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(resp.headers_mut(), upgrade);
    if expose_pool {
        resp.headers_mut().insert(&X_GRAY_POOL, pool_header(pool));
    }
}

/// An upstream's answer and the connection it came on.
pub struct Answer {
    pub response: Response<Incoming>,
    pub conn: Conn,
    pub endpoint: Arc<Endpoint>,
}

/// Idempotent methods (RFC 9110 §9.2.2): safe to retry.
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Get a connection to the pool: a second endpoint is tried once when the
/// first connect fails and `retry` allows it. Nothing has been sent yet.
pub async fn connect(pool: &Pool, metrics: &PoolMetrics, retry: bool) -> Result<(Conn, Arc<Endpoint>), ProxyError> {
    let first = pool.pick(None).expect("a validated pool has endpoints").clone();
    let error = match pool.checkout(&first).await {
        Ok(conn) => return Ok((conn, first)),
        Err(e) => e,
    };
    metrics.count_error(UpstreamErrorKind::Connect);
    tracing::debug!(pool = pool.name.as_str(), endpoint = %first.authority, error = %error, "connect failed");
    let second = match retry.then(|| pool.pick(Some(&first))).flatten() {
        Some(second) => second.clone(),
        None => return Err(ProxyError::Connect { pool: pool.name, source: error }),
    };
    match pool.checkout(&second).await {
        Ok(conn) => Ok((conn, second)),
        Err(error) => {
            metrics.count_error(UpstreamErrorKind::Connect);
            Err(ProxyError::Connect { pool: pool.name, source: error })
        }
    }
}

/// Send the request on `conn` and wait for the response head, within the
/// pool's `request_timeout`. A pooled connection that turns out closed
/// before the request was written gets one fresh connection.
pub async fn send(
    pool: &Pool,
    metrics: &PoolMetrics,
    mut conn: Conn,
    endpoint: Arc<Endpoint>,
    req: Request<RequestBody>,
) -> Result<Answer, ProxyError> {
    let timeout = pool.config.request_timeout;
    let upstream_failed = |source: hyper::Error| classify(pool.name, source);
    let attempt = async {
        let response = match conn.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => {
                let Some(unsent) = e.take_message() else {
                    return Err(upstream_failed(e.into_error()));
                };
                conn = pool.checkout(&endpoint).await.map_err(|source| {
                    metrics.count_error(UpstreamErrorKind::Connect);
                    ProxyError::Connect { pool: pool.name, source }
                })?;
                conn.send_request(unsent).await.map_err(upstream_failed)?
            }
        };
        Ok((response, conn))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((response, conn))) => Ok(Answer { response, conn, endpoint }),
        Ok(Err(e)) => {
            if matches!(e, ProxyError::Upstream { .. }) {
                metrics.count_error(UpstreamErrorKind::Reset);
            }
            Err(e)
        }
        Err(_) => {
            metrics.count_error(UpstreamErrorKind::Timeout);
            Err(ProxyError::Timeout { pool: pool.name, timeout })
        }
    }
}

/// A send failure caused by the client's body (it broke off, was malformed
/// or too large) is the client's error, not the upstream's.
fn classify(pool: PoolName, error: hyper::Error) -> ProxyError {
    if !error.is_user() {
        return ProxyError::Upstream { pool, source: error };
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(e) = cause {
        if e.is::<crate::body::BodyTooLarge>() {
            return ProxyError::BodyTooLarge;
        }
        if e.is::<crate::body::BodyTimeout>() {
            return ProxyError::BodyTimeout;
        }
        cause = e.source();
    }
    ProxyError::ClientBody(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn upgrade_keeps_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn rewrite_sets_forwarding_headers() {
        let mut req = Request::get("http://shop.example/cart?x=1")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-proto", "https")
            .header("x-gray-pool", "spoofed")
            .body(())
            .unwrap();
        let fwd = Forwarded {
            peer: "10.0.0.9".parse().unwrap(),
            peer_trusted: false,
            tls: false,
            pool: PoolName::New,
            bucket: 7,
            upgrade: false,
        };
        rewrite_request(&mut req, &fwd);
        assert_eq!(req.uri(), "/cart?x=1");
        let h = req.headers();
        assert_eq!(h["host"], "shop.example");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http", "an untrusted peer's proto is replaced");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-gray-pool"], "new");
        assert_eq!(h["x-gray-bucket"], "7");
    }
}
