//! Forwarding: getting a connection to a pool with the one connect retry
//! that is safe, and sending a request on it within the pool's deadline.
//! What the request and the answer carry is rewritten in
//! [`crate::proxy::rewrite`].

use std::sync::Arc;

use http::{Method, Response};

use crate::metrics::{PoolMetrics, UpstreamErrorKind};
use crate::proxy::body::RequestBody;
use crate::proxy::error::ProxyError;
use crate::proxy::h1::{self, Outgoing, ResponseReader};
// The head writer lived here once; its old path stays for callers.
pub use crate::proxy::rewrite::{upstream_head, Forwarded};
use crate::proxy::upstream::{Conn, Endpoint, Pool};

/// An upstream's answer (its body still on the connection), the endpoint
/// it came from, and how long the request waited for the client's body on
/// the way (not the pool's time: left out of its latency).
pub struct Answer {
    pub response: Response<ResponseReader>,
    pub endpoint: Arc<Endpoint>,
    pub client_wait: std::time::Duration,
}

/// No answer from the upstream: why, and how long the request waited for
/// the client's body before it failed (left out of the pool's latency, as
/// for an [`Answer`]).
#[derive(Debug)]
pub struct SendFailed {
    pub error: ProxyError,
    pub client_wait: std::time::Duration,
}

/// Idempotent methods (RFC 9110 §9.2.2): safe to retry.
pub fn is_idempotent(method: &Method) -> bool {
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
/// pool's `request_timeout`: the longest the upstream may keep the request
/// waiting, never counting a wait for the client's body (see
/// [`Outgoing::set_timeout`]). A request
/// without a body whose pooled connection turns out closed by the upstream
/// (before any answer came) goes out once more on a fresh connection: the
/// keep-alive race.
pub async fn send(
    pool: &Pool,
    metrics: &PoolMetrics,
    conn: Conn,
    endpoint: Arc<Endpoint>,
    mut outgoing: Outgoing<RequestBody>,
) -> Result<Answer, SendFailed> {
    outgoing.set_timeout(pool.config.request_timeout);
    let reused = conn.is_reused();
    let response = match conn.send(&mut outgoing).await {
        Ok(response) => Ok(response),
        // Boxed: the retry is rare, and inline its future would make
        // every request's future larger.
        Err(e) if e.retryable && reused => Box::pin(resend(pool, metrics, &endpoint, &mut outgoing)).await,
        Err(e) => Err(classify(pool, e.error)),
    };
    let client_wait = outgoing.client_wait();
    match response {
        Ok(response) => Ok(Answer { response, endpoint, client_wait }),
        Err(error) => {
            match error {
                ProxyError::Timeout { .. } => metrics.count_error(UpstreamErrorKind::Timeout),
                ProxyError::Upstream { .. } => {
                    metrics.count_error(UpstreamErrorKind::Reset);
                    metrics.resets_before_head.inc();
                }
                _ => {}
            }
            Err(SendFailed { error, client_wait })
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
    conn.send(outgoing).await.map_err(|e| classify(pool, e.error))
}

/// A send failure caused by the client's body (it broke off, was malformed
/// or too large) is the client's error, not the upstream's.
fn classify(pool: &Pool, error: h1::Error) -> ProxyError {
    match error {
        h1::Error::ClientBody(e) if e.is::<crate::proxy::body::BodyTooLarge>() => ProxyError::BodyTooLarge,
        h1::Error::ClientBody(e) if e.is::<crate::proxy::body::BodyTimeout>() => ProxyError::BodyTimeout,
        h1::Error::ClientBody(e) => ProxyError::ClientBody(e),
        h1::Error::Timeout => ProxyError::Timeout { pool: pool.name, timeout: pool.config.request_timeout },
        source => ProxyError::Upstream { pool: pool.name, source },
    }
}
