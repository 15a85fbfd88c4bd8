//! Forwarding: header rewriting in place on both legs, and sending a
//! request to a pool with the one connect retry that is safe.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};

use crate::body::RequestBody;
use crate::config::PoolName;
use crate::error::ProxyError;
use crate::h1::{self, Outgoing, ResponseReader};
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

/// `"0"`…`"99"` as static header values: the request path never formats a
/// number, and a static value is cloned without touching a reference count.
fn bucket_header(bucket: u8) -> HeaderValue {
    const DIGITS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839\
                          40414243444546474849505152535455565758596061626364656667686970717273747576777879\
                          8081828384858687888990919293949596979899";
    let i = 2 * (bucket.min(99) as usize);
    let text = if bucket < 10 { &DIGITS[i + 1..i + 2] } else { &DIGITS[i..i + 2] };
    HeaderValue::from_static(text)
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
///
/// One pass over the header names finds which hop-by-hop headers are
/// there (usually none, or only `Connection`), so only those are looked up
/// and removed; names listed in `Connection` are removed by `&str`, which
/// allocates nothing.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let mut present = 0u16;
    for name in headers.keys() {
        // Every hop-by-hop name starts with one of these letters; most
        // headers are ruled out by their first byte.
        if !matches!(name.as_str().as_bytes()[0], b'c' | b'k' | b'p' | b't' | b'u') {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let has = |name: &HeaderName| present & (1 << HOP_BY_HOP.iter().position(|h| *h == name).unwrap_or(15)) != 0;
    let upgrade_value = if upgrade && has(&header::UPGRADE) { headers.get(header::UPGRADE).cloned() } else { None };
    if has(&header::CONNECTION) {
        // Clones share the bytes; they let `headers` be changed while the
        // tokens are read. More than one Connection line is rare.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for value in first.iter().chain(&rest) {
            let Ok(text) = value.to_str() else { continue };
            for token in text.split(',').map(str::trim) {
                // Hop-by-hop names go below anyway. `Host` is never removed:
                // `Connection: host` would otherwise send the upstream an
                // HTTP/1.1 request without one (nginx ignores it as well).
                let keep = token.eq_ignore_ascii_case("host");
                if !token.is_empty() && !keep && !HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str())) {
                    headers.remove(token);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// What the request path learned about a request, for the upstream's eyes.
pub struct Forwarded<'a> {
    /// The peer's IP as text ([`crate::proxy::ConnInfo::peer_text`]).
    pub peer: &'a HeaderValue,
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
    // An HTTP/1.1 request is already in origin form: leave its URI alone.
    let uri = req.uri();
    let authority = if uri.scheme().is_some() || uri.authority().is_some() {
        let authority = uri.authority().cloned();
        let path = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        authority
    } else {
        None
    };
    *req.version_mut() = http::Version::HTTP_11;

    let headers = req.headers_mut();
    strip_hop_by_hop(headers, fwd.upgrade);
    // Room for the headers added below in one growth, not one per insert.
    headers.reserve(5);
    let host = match headers.get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => match authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            Some(value) => {
                headers.insert(header::HOST, value.clone());
                Some(value)
            }
            None => None,
        },
    };

    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).peekable();
    let xff = if prior.peek().is_none() {
        Ok(fwd.peer.clone()) // shares the connection's bytes: no allocation
    } else {
        // "a, b, peer" built in one allocation, handed over without a copy.
        let mut joined = String::with_capacity(64);
        for value in prior {
            joined.push_str(value);
            joined.push_str(", ");
        }
        joined.push_str(fwd.peer.to_str().expect("IP text is ASCII"));
        HeaderValue::try_from(joined)
    };
    if let Ok(xff) = xff {
        headers.insert(&X_FORWARDED_FOR, xff);
    }
    if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if fwd.tls { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
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

/// An upstream's answer (its body still on the connection) and the
/// endpoint it came from.
pub struct Answer {
    pub response: Response<ResponseReader>,
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
/// pool's `request_timeout`. A request without a body whose pooled
/// connection turns out closed by the upstream (before any answer came)
/// goes out once more on a fresh connection: the keep-alive race.
pub async fn send(
    pool: &Pool,
    metrics: &PoolMetrics,
    conn: Conn,
    endpoint: Arc<Endpoint>,
    req: Request<RequestBody>,
) -> Result<Answer, ProxyError> {
    let timeout = pool.config.request_timeout;
    let mut outgoing = Outgoing::new(req);
    let attempt = async {
        let reused = conn.is_reused();
        match conn.send(&mut outgoing).await {
            Ok(response) => Ok(response),
            // Boxed: the retry is rare, and inline its future would make
            // every request's future larger.
            Err(e) if e.retryable && reused => Box::pin(resend(pool, metrics, &endpoint, &mut outgoing)).await,
            Err(e) => Err(classify(pool.name, e.error)),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(response)) => Ok(Answer { response, endpoint }),
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

async fn resend(
    pool: &Pool,
    metrics: &PoolMetrics,
    endpoint: &Endpoint,
    outgoing: &mut Outgoing<RequestBody>,
) -> Result<Response<ResponseReader>, ProxyError> {
    tracing::debug!(pool = pool.name.as_str(), endpoint = %endpoint.authority, "kept-alive connection was closed; sending again on a new one");
    let conn = pool.connect_fresh(endpoint).await.map_err(|source| {
        metrics.count_error(UpstreamErrorKind::Connect);
        ProxyError::Connect { pool: pool.name, source }
    })?;
    conn.send(outgoing).await.map_err(|e| classify(pool.name, e.error))
}

/// A send failure caused by the client's body (it broke off, was malformed
/// or too large) is the client's error, not the upstream's.
fn classify(pool: PoolName, error: h1::Error) -> ProxyError {
    match error {
        h1::Error::ClientBody(e) if e.is::<crate::body::BodyTooLarge>() => ProxyError::BodyTooLarge,
        h1::Error::ClientBody(e) if e.is::<crate::body::BodyTimeout>() => ProxyError::BodyTimeout,
        h1::Error::ClientBody(e) => ProxyError::ClientBody(e),
        source => ProxyError::Upstream { pool, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_filter_covers_every_hop_by_hop_name() {
        for name in HOP_BY_HOP {
            assert!(b"ckptu".contains(&name.as_str().as_bytes()[0]), "{name}");
        }
    }

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
    fn strips_names_from_every_connection_line_in_any_case() {
        let mut h = HeaderMap::new();
        h.append("connection", "Keep-Alive, X-Secret".parse().unwrap());
        h.append("connection", " close ,x-other".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-other", "2".parse().unwrap());
        h.insert("close", "3".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn nothing_to_strip_leaves_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h, before);
    }

    #[test]
    fn bucket_values_are_the_numbers() {
        for b in 0..100u8 {
            assert_eq!(bucket_header(b), b.to_string().as_str());
        }
    }

    #[test]
    fn connection_cannot_strip_host() {
        let mut h = HeaderMap::new();
        h.insert("host", "shop.example".parse().unwrap());
        h.insert("connection", "Host, x-a".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["host"], "shop.example");
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
            peer: &HeaderValue::from_static("10.0.0.9"),
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

    #[test]
    fn rewrite_origin_form_keeps_uri_and_host() {
        let mut req = Request::get("/a/b?c=d")
            .header("host", "shop.example:8080")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .body(())
            .unwrap();
        let fwd = Forwarded {
            peer: &HeaderValue::from_static("2001:db8::7"),
            peer_trusted: false,
            tls: true,
            pool: PoolName::Stable,
            bucket: 42,
            upgrade: false,
        };
        rewrite_request(&mut req, &fwd);
        assert_eq!(req.uri(), "/a/b?c=d");
        let h = req.headers();
        assert_eq!(h.len(), 6, "{h:?}");
        assert_eq!(h["host"], "shop.example:8080");
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(h["x-gray-pool"], "stable");
        assert_eq!(h["x-gray-bucket"], "42");
    }
}
