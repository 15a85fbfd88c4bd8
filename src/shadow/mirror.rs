//! The mirror (docs/src/shadow.md, "What is mirrored"): on the request
//! path, [`decide`] says whether a request is mirrored and [`Mirror::start`]
//! starts the background task and returns the [`Tap`] that keeps a copy of
//! the primary's answer as it streams to the client (a [`BodyTap`] does the
//! same for a request body going up). The task sends the
//! shadow (and the noise copy), waits for the tap, compares and counts.
//!
//! The client never waits on any of it: the tap copies at most `max_body`
//! bytes of frames it passes on anyway, and the task's sends are bounded by
//! `shadow.timeout` and `max_in_flight`. Shadows go through the pools'
//! connections but not through the request metrics: they are not client
//! requests (not in `grayshift_requests_total`, nor in L1's error rate).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use prometheus::IntCounter;
use tokio::sync::oneshot;

use crate::config::{PoolName, ShadowConfig, UnderscoreHeaders};
use crate::control::state::Route;
use crate::metrics::ShadowSkip;
use crate::proxy::body::{ClientBody, ResponseBody, UpstreamBody};
use crate::proxy::conn::ConnInfo;
use crate::proxy::framing;
use crate::proxy::h1::{self, Outgoing};
use crate::proxy::h1_server::OnUpgrade;
use crate::proxy::rewrite::{self, Forwarded};
use crate::proxy::snapshot::Snapshot;
use crate::proxy::split::{self, KeyOrigin};
use crate::proxy::upstream::{Endpoint, Pool};
use crate::shadow::compare::{self, Answer, Rules};
use crate::shadow::{Compared, Outcome};
use crate::Shared;

/// The request-path facts a shadow needs, besides the request.
pub struct Primary<'a> {
    pub pool: PoolName,
    pub bucket: u8,
    pub key: &'a [u8],
    pub origin: &'a Arc<KeyOrigin>,
    pub route: crate::control::state::Route,
    pub endpoint: &'a Arc<Endpoint>,
}

/// Whether to mirror this request (eligible, sampled, nothing against it,
/// a place among `max_in_flight`); then [`Mirror::start`] starts it.
/// Called only with `[shadow]` set; costs the eligibility test, and for a
/// sampled request a copy of its routing key.
pub fn decide(
    shared: &Shared,
    snapshot: &Snapshot,
    config: &ShadowConfig,
    req: &Request<ClientBody>,
    primary: Primary,
) -> Option<Mirror> {
    if !config.eligible(req.method(), req.uri().path()) || !shared.shadow.sampled(config) {
        return None;
    }
    let metrics = &shared.metrics.shadow;
    if let Err(reason) = may_mirror(snapshot, config, req, primary.pool.other(), primary.route) {
        metrics.skip(reason);
        return None;
    }
    if !shared.shadow.enter(config.max_in_flight) {
        metrics.skip(ShadowSkip::Busy);
        return None;
    }
    Some(Mirror {
        pool: primary.pool,
        bucket: primary.bucket,
        key: primary.key.to_vec(),
        origin: primary.origin.clone(),
        endpoint: primary.endpoint.clone(),
        max_body: config.max_body,
    })
}

/// A request [`decide`] chose to mirror (it holds a place in flight).
pub struct Mirror {
    pool: PoolName,
    bucket: u8,
    key: Vec<u8>,
    origin: Arc<KeyOrigin>,
    endpoint: Arc<Endpoint>,
    max_body: usize,
}

impl Mirror {
    /// Start the task; a request body gets a tap of its own (the shadow
    /// goes once the body has gone up to the primary). The returned tap
    /// must go on the primary's answer ([`Tap::attach`]).
    pub fn start(
        self,
        shared: &Arc<Shared>,
        snapshot: &Arc<Snapshot>,
        conn: &ConnInfo,
        req: &mut Request<ClientBody>,
    ) -> Box<Tap> {
        let body = (!req.body().is_end_stream()).then(|| {
            let (tx, rx) = oneshot::channel();
            let inner = std::mem::replace(req.body_mut(), ClientBody::Empty);
            let tap = BodyTap { tx: Some(tx), body: Capped::new(self.max_body) };
            *req.body_mut() = ClientBody::Teed(Box::new((inner, tap)));
            rx
        });
        let (tx, rx) = oneshot::channel();
        let copy = Copy {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            peer: conn.peer_text.clone(),
            peer_trusted: split::is_trusted(conn.peer.ip(), &snapshot.splitter.trusted_proxies),
            tls: conn.tls,
            bucket: self.bucket,
            underscores: snapshot.config.server.underscore_headers,
        };
        let task = Task {
            shared: shared.clone(),
            snapshot: snapshot.clone(),
            copy,
            primary: self.pool,
            primary_endpoint: self.endpoint,
            key: self.key,
            origin: self.origin,
        };
        tokio::spawn(task.run(body, rx));
        // Boxed: the request's future holds it across the upstream's answer,
        // and would otherwise be this much larger for every request.
        Box::new(Tap { tx: Some(tx), status: 0, headers: HeaderMap::new(), body: Capped::new(self.max_body) })
    }
}

/// The reasons a sampled request is not mirrored, before anything is sent.
fn may_mirror(
    snapshot: &Snapshot,
    config: &ShadowConfig,
    req: &Request<ClientBody>,
    side: PoolName,
    route: Route,
) -> Result<(), ShadowSkip> {
    if req.extensions().get::<OnUpgrade>().is_some() {
        return Err(ShadowSkip::Websocket);
    }
    let declared = framing::content_length(req.headers()).ok().flatten();
    if declared.is_some_and(|n| n > config.max_body as u64) {
        return Err(ShadowSkip::TooLarge);
    }
    if side == PoolName::New && route.gate_closed {
        return Err(ShadowSkip::Gate);
    }
    if side == PoolName::New && route.rolled_back {
        return Err(ShadowSkip::Rollback);
    }
    if !snapshot.pool(side).has_healthy() {
        return Err(ShadowSkip::Unhealthy);
    }
    Ok(())
}

/// What the primary's answer is, for the task: complete, or too large.
enum Tapped {
    Complete(Answer),
    TooLarge,
}

/// A copy of the primary's answer, taken as it streams to the client: the
/// frames are passed on untouched; at most `limit` bytes are kept. Dropped
/// before the end (the client went away, the upstream failed), it tells the
/// task nothing, and the comparison is skipped as `cancelled`.
pub struct Tap {
    tx: Option<oneshot::Sender<Tapped>>,
    status: u16,
    headers: HeaderMap,
    body: Capped,
}

/// At most `limit` bytes of a body, copied as it passes.
struct Capped {
    buf: BytesMut,
    limit: usize,
}

impl Capped {
    fn new(limit: usize) -> Self {
        Capped { buf: BytesMut::new(), limit }
    }

    /// Keep `data`; false, keeping nothing, once the body is over the limit.
    fn push(&mut self, data: &[u8]) -> bool {
        if self.buf.len() + data.len() > self.limit {
            self.buf = BytesMut::new();
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    fn take(&mut self) -> Bytes {
        std::mem::take(&mut self.buf).freeze()
    }
}

impl Tap {
    /// Put the tap on the primary's answer (after its headers were
    /// rewritten for the client: `X-Gray-Pool` is never compared).
    pub fn attach(mut self: Box<Self>, response: Response<ResponseBody>) -> Response<ResponseBody> {
        self.status = response.status().as_u16();
        self.headers = response.headers().clone();
        let (parts, body) = response.into_parts();
        let body = match body {
            ResponseBody::Upstream(up) if up.is_done() => {
                self.finish();
                ResponseBody::Upstream(up)
            }
            ResponseBody::Upstream(up) => ResponseBody::Teed(Box::new((up, self))),
            other => other, // an answer of grayshift's own: nothing to compare
        };
        Response::from_parts(parts, body)
    }

    /// A frame went to the client.
    pub fn data(&mut self, data: &Bytes) {
        if self.tx.is_some() && !self.body.push(data) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Tapped::TooLarge);
            }
        }
    }

    /// The answer ended cleanly.
    pub fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let answer =
                Answer { status: self.status, headers: std::mem::take(&mut self.headers), body: self.body.take() };
            let _ = tx.send(Tapped::Complete(answer));
        }
    }

    /// The answer failed mid-body: nothing to compare.
    pub fn abort(&mut self) {
        self.tx = None;
    }
}

/// A copy of the request body, taken as it goes up to the primary: at most
/// `limit` bytes (`None` sent when it is larger). Dropped before the end
/// (the client broke off), it tells the task nothing: `cancelled`.
pub struct BodyTap {
    tx: Option<oneshot::Sender<Option<Bytes>>>,
    body: Capped,
}

impl BodyTap {
    pub fn data(&mut self, data: &Bytes) {
        if self.tx.is_some() && !self.body.push(data) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(None);
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(self.body.take()));
        }
    }

    pub fn abort(&mut self) {
        self.tx = None;
    }
}

/// What the shadow copies of the request are written from.
struct Copy {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: HeaderValue,
    peer_trusted: bool,
    tls: bool,
    bucket: u8,
    underscores: UnderscoreHeaders,
}

struct Task {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    copy: Copy,
    primary: PoolName,
    primary_endpoint: Arc<Endpoint>,
    key: Vec<u8>,
    origin: Arc<KeyOrigin>,
}

/// Leaves the in-flight count however the task ends.
struct InFlight<'a>(&'a crate::shadow::Shadow);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Task {
    async fn run(self, body: Option<oneshot::Receiver<Option<Bytes>>>, tapped: oneshot::Receiver<Tapped>) {
        let _in_flight = InFlight(&self.shared.shadow);
        let config = self.snapshot.config.shadow.as_ref().expect("a mirrored request's snapshot has [shadow]");
        // A request body: the shadow goes once the primary has it all.
        let body = match body {
            None => Ok(None),
            Some(rx) => match rx.await {
                Ok(Some(bytes)) => Ok(Some(bytes)),
                Ok(None) => Err(ShadowSkip::TooLarge),
                Err(_) => Err(ShadowSkip::Cancelled),
            },
        };
        let outcome = match body {
            Ok(body) => self.compare(config, body, tapped).await,
            Err(reason) => Outcome::Skipped(reason),
        };
        let metrics = &self.shared.metrics.shadow;
        match outcome {
            Outcome::Skipped(reason) => metrics.skip(reason),
            Outcome::Match => {
                metrics.matched.inc();
                metrics.compared_by_primary[self.primary.index()].inc();
            }
            Outcome::Mismatch => {
                metrics.mismatched.inc();
                metrics.compared_by_primary[self.primary.index()].inc();
                metrics.mismatched_by_primary[self.primary.index()].inc();
                crate::shadow::mismatch_seen(&self.shared, &self.key, &self.origin, self.primary);
            }
        }
    }

    async fn compare(&self, config: &ShadowConfig, body: Option<Bytes>, tapped: oneshot::Receiver<Tapped>) -> Outcome {
        let resets = &DETACHED_RESETS;
        let side = self.primary.other();
        let shadow = fetch(self.snapshot.pool(side), None, &self.copy, body.clone(), side, config, resets);
        let noise = async {
            match config.noise {
                // Another endpoint of the primary's pool where there is one.
                true => {
                    let pool = self.snapshot.pool(self.primary);
                    let endpoint = Some(&self.primary_endpoint);
                    Some(fetch(pool, endpoint, &self.copy, body.clone(), self.primary, config, resets).await)
                }
                false => None,
            }
        };
        let (shadow, noise) = tokio::join!(shadow, noise);
        let primary = match tapped.await {
            Ok(Tapped::Complete(answer)) => answer,
            Ok(Tapped::TooLarge) => return Outcome::Skipped(ShadowSkip::TooLarge),
            Err(_) => return Outcome::Skipped(ShadowSkip::Cancelled),
        };
        let shadow = match shadow {
            Ok(answer) => answer,
            Err(reason) => return Outcome::Skipped(reason),
        };
        let rules =
            Rules { ignore: &config.ignore, ignore_headers: &config.ignore_headers, unordered: &config.unordered };
        let within = noise.and_then(Result::ok).map(|copy| compare::compare(&primary, &copy, &rules));
        let cross = compare::compare(&primary, &shadow, &rules);
        let mut status = [0; 2];
        status[self.primary.index()] = primary.status;
        status[side.index()] = shadow.status;
        self.shared.shadow.decide(
            config.noise,
            &Compared {
                method: self.copy.method.as_str(),
                path: self.copy.uri.path(),
                key: &self.key,
                origin: &self.origin,
                primary: self.primary,
                status,
                cross,
                within,
            },
        )
    }
}

/// A shadow's answer that breaks off mid-body is the shadow's `error`,
/// not a reset in `grayshift_upstream_errors_total`: shadows are not client
/// requests.
static DETACHED_RESETS: std::sync::LazyLock<IntCounter> =
    std::sync::LazyLock::new(|| IntCounter::new("shadow_resets", "not exported").unwrap());

/// One copy of the request to `pool` (avoiding `avoid` when the pool has
/// another endpoint), its answer read up to `max_body`, all within
/// `shadow.timeout`.
async fn fetch(
    pool: &Pool,
    avoid: Option<&Arc<Endpoint>>,
    copy: &Copy,
    body: Option<Bytes>,
    side: PoolName,
    config: &ShadowConfig,
    resets: &IntCounter,
) -> Result<Answer, ShadowSkip> {
    let work = async {
        let endpoint = pool.pick(avoid).or_else(|| pool.pick(None)).ok_or(ShadowSkip::Unhealthy)?.clone();
        let conn = pool.checkout(&endpoint).await.map_err(|_| ShadowSkip::Error)?;
        let fwd = Forwarded {
            peer: &copy.peer,
            peer_trusted: copy.peer_trusted,
            tls: copy.tls,
            pool: side,
            bucket: copy.bucket,
            upgrade: false,
            endpoint: &endpoint.authority,
            underscores: copy.underscores,
        };
        let (mut head, chunked) = rewrite::upstream_head(&copy.method, &copy.uri, &copy.headers, &fwd, body.is_some());
        rewrite::mark_shadow(&mut head);
        let mut outgoing = Outgoing::new(head, copy.method.clone(), body.map(Full::new), chunked);
        outgoing.set_timeout(config.timeout);
        let reused = conn.is_reused();
        let response = match conn.send(&mut outgoing).await {
            Ok(response) => response,
            // The keep-alive race, as for a client's request: once more, fresh.
            Err(e) if e.retryable && reused => {
                let conn = pool.connect_fresh(&endpoint).await.map_err(|_| ShadowSkip::Error)?;
                conn.send(&mut outgoing).await.map_err(|e| skip_of(&e.error))?
            }
            Err(e) => return Err(skip_of(&e.error)),
        };
        let (parts, reader) = response.into_parts();
        let mut body = ResponseBody::Upstream(UpstreamBody::new(reader, endpoint, resets.clone()));
        let mut kept = Capped::new(config.max_body);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ShadowSkip::Error)?;
            if frame.data_ref().is_some_and(|data| !kept.push(data)) {
                return Err(ShadowSkip::TooLarge);
            }
        }
        Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body: kept.take() })
    };
    tokio::time::timeout(config.timeout, work).await.unwrap_or(Err(ShadowSkip::Timeout))
}

fn skip_of(error: &h1::Error) -> ShadowSkip {
    match error {
        h1::Error::Timeout => ShadowSkip::Timeout,
        _ => ShadowSkip::Error,
    }
}
