//! Listeners: accept connections, serve HTTP/1.1 and h2c on them with the
//! configured limits, and drain gracefully on shutdown.
//!
//! Plain connections are told apart by peeking at the first bytes: the
//! HTTP/2 preface means h2c, anything else is HTTP/1. (hyper-util's `auto`
//! builder reads the preface into its own buffer instead, which makes hyper
//! grow every HTTP/1 connection's read buffer from 8 to 16 KiB; peeking also
//! means a connection that has sent nothing yet holds no HTTP buffers at
//! all.) TLS connections go by ALPN.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::ResponseBody;
use crate::config::ServerConfig;
use crate::proxy::ConnInfo;
use crate::tls::TlsSlot;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP server settings for client connections, one builder per protocol.
#[derive(Clone)]
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    pub fn new(config: &ServerConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            // 431 past the limit; the buffer bound alone is not exact (a
            // single read can overshoot it).
            .max_header_size(config.max_header_bytes)
            .max_buf_size(config.max_header_bytes.max(8192))
            .max_headers(config.max_headers);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .keep_alive_interval(Some(Duration::from_secs(20)));
        Protocols { http1, http2 }
    }
}

/// Accept and serve until `shutdown` flips, then stop accepting and give
/// open connections `drain` to finish (idle HTTP/1.1 connections close at
/// once, busy ones after their response; HTTP/2 gets a GOAWAY). With `tls`,
/// every connection is a TLS handshake first (bounded by the header read
/// timeout), using whatever config the slot holds at accept time.
pub async fn serve<H, F>(
    listener: TcpListener,
    protocols: Protocols,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<TlsSlot>,
) where
    H: Fn(ConnInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
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
        let info = ConnInfo { peer, tls: tls.is_some() };
        let handler = handler.clone();
        let service = service_fn(move |req| handler(info, req));
        let protocols = protocols.clone();
        let drain = drain_signal.clone();
        let tls_config = tls.as_ref().map(|slot| slot.load_full());
        let first_byte_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let result = match tls_config {
                None => match tokio::time::timeout(first_byte_timeout, sniff_h2c(&stream)).await {
                    Ok(Ok(h2)) => serve_connection(&protocols, h2, TokioIo::new(stream), service, drain).await,
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("no request within server.header_read_timeout".into()),
                },
                Some(config) => {
                    let handshake = TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(first_byte_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_connection(&protocols, h2, TokioIo::new(stream), service, drain).await
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
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

/// Serve one connection with the protocol already chosen, until it ends or
/// the drain signal has shut it down gracefully.
async fn serve_connection<I, S>(
    protocols: &Protocols,
    h2: bool,
    io: I,
    service: S,
    drain: Arc<DrainSignal>,
) -> Result<(), BoxError>
where
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    if h2 {
        let conn = protocols.http2.serve_connection(io, service);
        Drainable::new(conn, drain).await.map_err(Into::into)
    } else {
        let conn = protocols.http1.serve_connection(io, service).with_upgrades();
        Drainable::new(conn, drain).await.map_err(Into::into)
    }
}

/// Is this plain connection h2c (prior knowledge)? Peeks, so the bytes stay
/// in the socket for whichever protocol reads them.
async fn sniff_h2c(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false); // HTTP/1 (or EOF, which HTTP/1 handles)
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: peek would return at once again, so wait a
        // little for the rest (only h2c clients that split the preface).
        tokio::time::sleep(Duration::from_millis(2)).await;
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

/// A connection future that starts a graceful shutdown once the drain
/// signal fires. The notification is polled once, to register the task's
/// waker (wakers of one task are interchangeable, so one registration
/// lasts); after that a drain shows up as the flag, so a busy connection
/// pays one atomic load per wake-up rather than the notifier's lock.
struct Drainable<C> {
    conn: Pin<Box<C>>,
    drain: Arc<DrainSignal>,
    notified: Pin<Box<OwnedNotified>>,
    registered: bool,
    draining: bool,
}

impl<C> Drainable<C> {
    fn new(conn: C, drain: Arc<DrainSignal>) -> Self {
        let notified = Box::pin(drain.notify.clone().notified_owned());
        Drainable { conn: Box::pin(conn), drain, notified, registered: false, draining: false }
    }
}

impl<C: Graceful> Future for Drainable<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if !this.registered {
            let _ = this.notified.as_mut().poll(cx);
            this.registered = true;
        }
        if !this.draining && this.drain.started.load(Ordering::Relaxed) {
            this.draining = true;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.as_mut().poll(cx)
    }
}

/// hyper's connections, which each have a `graceful_shutdown` of their own.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S> Graceful for http2::Connection<I, S, TokioExecutor>
where
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self)
    }
}

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a TLS handshake, or the first byte of a plain connection,
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
