//! Listeners: accept connections, serve HTTP/1.1 (grayshift's own server
//! side, `h1_server`) and HTTP/2 (hyper) on them with the configured
//! limits, and drain gracefully on shutdown.
//!
//! A plain connection's first bytes tell HTTP/1 from the h2c preface; the
//! HTTP/1 server goes on from those bytes, hyper's HTTP/2 gets them
//! replayed. TLS connections go by ALPN.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::metrics::TlsHandshakeErrors;
use crate::proxy::body::{ClientBody, ResponseBody};
use crate::proxy::conn::ConnInfo;
use crate::proxy::h1_server;
use crate::proxy::tls::TlsSlot;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP server settings for client connections, one per protocol.
#[derive(Clone)]
pub struct Protocols {
    pub http1: h1_server::Settings,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    pub fn new(config: &ServerConfig) -> Self {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .keep_alive_interval(Some(Duration::from_secs(20)));
        Protocols { http1: h1_server::Settings::new(config), http2 }
    }
}

/// Accept and serve until `shutdown` flips, then stop accepting and give
/// open connections `drain` to finish (idle HTTP/1.1 connections close at
/// once, busy ones after their response; HTTP/2 gets a GOAWAY). With `tls`,
/// every connection is a TLS handshake first (bounded by the header read
/// timeout), using whatever config the slot holds at accept time; a failed
/// handshake is counted, and logged at `debug` only (any client can cause
/// one per connection).
pub async fn serve<H, F>(
    listener: TcpListener,
    protocols: Protocols,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<(TlsSlot, TlsHandshakeErrors)>,
) where
    H: Fn(ConnInfo, Request<ClientBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let protocols = Arc::new(protocols);
    let drain_signal = Arc::new(DrainSignal::default());
    // One permit per open connection: the limit, and the count to drain.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off, don't spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the connection limit: refuse (close) rather than fall over.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: server.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(peer, tls.is_some());
        let handler = handler.clone();
        let protocols = protocols.clone();
        let drain = DrainWatch::new(drain_signal.clone());
        let tls_config = tls.as_ref().map(|(slot, errors)| (slot.load_full(), errors.clone()));
        tokio::spawn(async move {
            let started = Instant::now();
            let first_head_by = started + limits.handshake_timeout;
            // The plain HTTP/1 path is the one kept inline: a task is as
            // large as its largest state, and TLS and HTTP/2 connections
            // (kilobytes of rustls and hyper state) are boxed on their own.
            let result: Result<(), BoxError> = match tls_config {
                None => serve_plain(stream, started, info, handler, &protocols, drain).await,
                Some(tls) => {
                    Box::pin(serve_tls(stream, tls, started, first_head_by, info, handler, &protocols, drain)).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    drain_signal.start();
    let open = limits.max_connections - slots.available_permits();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(open, drain = ?limits.drain, "drain timeout reached with connections still open");
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TLS connection: the handshake (bounded by the header read timeout),
/// then HTTP/2 or HTTP/1.1 as ALPN chose.
#[allow(clippy::too_many_arguments)]
async fn serve_tls<H, F>(
    stream: TcpStream,
    (config, errors): (Arc<rustls::ServerConfig>, TlsHandshakeErrors),
    started: Instant,
    first_head_by: Instant,
    info: ConnInfo,
    handler: H,
    protocols: &Protocols,
    drain: DrainWatch,
) -> Result<(), BoxError>
where
    H: Fn(ConnInfo, Request<ClientBody>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let handshake = TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout_at(first_head_by, handshake).await {
        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
            serve_h2(protocols, stream, info, handler, drain).await
        }
        Ok(Ok(stream)) => {
            let settings = protocols.http1;
            h1_server::serve(stream, BytesMut::new(), started, info, &handler, settings, drain)
                .await
                .map_err(Into::into)
        }
        Ok(Err(e)) => {
            errors.failed.inc();
            Err(format!("TLS handshake failed: {e}").into())
        }
        Err(_) => {
            errors.timeout.inc();
            Err("TLS handshake timed out".into())
        }
    }
}

/// A plain connection: its first bytes decide between HTTP/1.1 and h2c.
/// Nothing within the header read timeout, or nothing before the drain
/// starts, closes it without an answer (as nginx does).
async fn serve_plain<H, F>(
    stream: TcpStream,
    started: Instant,
    info: ConnInfo,
    handler: H,
    protocols: &Protocols,
    mut drain: DrainWatch,
) -> Result<(), BoxError>
where
    H: Fn(ConnInfo, Request<ClientBody>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let deadline = started + protocols.http1.header_read_timeout;
    let mut first = BytesMut::new();
    let h2c = loop {
        tokio::select! {
            biased;
            ready = stream.readable() => ready?,
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            () = std::future::poll_fn(|cx| drain.poll_started(cx)), if first.is_empty() => return Ok(()),
        }
        first.reserve(512);
        match stream.try_read_buf(&mut first) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        let n = first.len().min(H2_PREFACE.len());
        if first[..n] != H2_PREFACE[..n] {
            break false;
        }
        if n == H2_PREFACE.len() {
            break true;
        }
    };
    if h2c {
        let io = Rewind { ahead: first, stream };
        return Box::pin(serve_h2(protocols, io, info, handler, drain)).await;
    }
    h1_server::serve(stream, first, started, info, &handler, protocols.http1, drain).await.map_err(Into::into)
}

/// Serve HTTP/2 with hyper until the connection ends, or the drain has
/// shut it down gracefully.
async fn serve_h2<I, H, F>(
    protocols: &Protocols,
    io: I,
    info: ConnInfo,
    handler: H,
    drain: DrainWatch,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(ConnInfo, Request<ClientBody>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| handler(info.clone(), req.map(ClientBody::Http2)));
    let conn = protocols.http2.serve_connection(TokioIo::new(io), service);
    Drainable { conn: Box::pin(conn), drain, draining: false }.await.map_err(Into::into)
}

/// An h2c connection as hyper sees it: the bytes read to recognise the
/// preface put back in front.
struct Rewind {
    ahead: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if h1_server::replay(&mut self.ahead, out) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Tells every open connection to shut down gracefully.
#[derive(Default)]
struct DrainSignal {
    started: AtomicBool,
    notify: Arc<Notify>,
}

impl DrainSignal {
    fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// One connection's view of the drain signal. The notification is polled
/// once, to register the task's waker (wakers of one task are
/// interchangeable, so one registration lasts); after that a drain shows
/// up as the flag, so a busy connection pays one atomic load per look
/// rather than the notifier's lock.
pub struct DrainWatch {
    drain: Arc<DrainSignal>,
    notified: Pin<Box<OwnedNotified>>,
    registered: bool,
}

impl DrainWatch {
    fn new(drain: Arc<DrainSignal>) -> Self {
        let notified = Box::pin(drain.notify.clone().notified_owned());
        DrainWatch { drain, notified, registered: false }
    }

    /// A watch on a drain that never starts (fuzz targets, tests).
    pub fn detached() -> Self {
        Self::new(Arc::default())
    }

    pub fn started(&self) -> bool {
        self.drain.started.load(Ordering::Relaxed)
    }

    /// Ready once the drain has started; wakes the task when it does.
    pub fn poll_started(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.registered {
            let _ = self.notified.as_mut().poll(cx);
            self.registered = true;
        }
        if self.started() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A hyper HTTP/2 connection that starts a graceful shutdown (GOAWAY) once
/// the drain signal fires.
struct Drainable<C> {
    conn: Pin<Box<C>>,
    drain: DrainWatch,
    draining: bool,
}

impl<I, S> Future for Drainable<http2::Connection<I, S, TokioExecutor>>
where
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Output = Result<(), hyper::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.draining && this.drain.poll_started(cx).is_ready() {
            this.draining = true;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.as_mut().poll(cx)
    }
}

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a TLS handshake, or the first head of a plain connection,
    /// may take (the header read timeout).
    pub handshake_timeout: Duration,
    /// How long open connections get to finish after shutdown.
    pub drain: Duration,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Self {
        Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.header_read_timeout,
            drain: config.drain_timeout,
        }
    }
}
