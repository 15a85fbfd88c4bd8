//! Listeners: accept connections, serve HTTP/1.1 and h2c on them with the
//! configured limits, and drain gracefully on shutdown.
//!
//! A plain connection's first request head (or the h2c preface) is read
//! into a small buffer of our own before any HTTP machinery exists for the
//! connection: hyper allocates two 8 KiB buffers per HTTP/1 connection, so
//! a client that connects and dribbles (slowloris) costs a few hundred bytes
//! until its head is complete, and the header read timeout covers the whole
//! first head (answered 408 if part of it came). The bytes are then replayed
//! to hyper. (hyper-util's `auto` builder, which we used before, read the
//! preface into hyper's buffer instead and made it grow to 16 KiB.) TLS
//! connections go by ALPN.
//!
//! Every byte hyper reads from an HTTP/1 client, plain or TLS, first goes
//! through a [`FramingGuard`], which makes hyper refuse (400, and close) a
//! request with both Content-Length and Transfer-Encoding: hyper would
//! accept it by dropping the Content-Length (see `framing_guard.rs`).

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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::metrics::TlsHandshakeErrors;
use crate::proxy::body::ResponseBody;
use crate::proxy::framing_guard::FramingGuard;
use crate::proxy::handle::ConnInfo;
use crate::proxy::tls::TlsSlot;

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
            .max_headers(config.max_headers)
            // One buffer per response, one write(2): cheaper than a writev
            // of head and body for the small bodies a proxy mostly carries
            // (-470 instructions per request under callgrind).
            .writev(false);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .keep_alive_interval(Some(Duration::from_secs(20)));
        Protocols { http1, http2 }
    }

    /// The HTTP/1 settings, for the request-bytes fuzz target.
    pub fn http1(&self) -> &http1::Builder {
        &self.http1
    }
}

/// A client byte stream wrapped as `serve` wraps an HTTP/1 connection,
/// framing guard included: for the request-bytes fuzz target.
pub fn guarded<S>(stream: S, max_head: usize) -> ClientIo<S> {
    ClientIo::new(Vec::new(), stream, FramingGuard::new(max_head))
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
        let info = ConnInfo::new(peer, tls.is_some());
        let handler = handler.clone();
        let service = service_fn(move |req| handler(info.clone(), req));
        let protocols = protocols.clone();
        let drain = drain_signal.clone();
        let tls_config = tls.as_ref().map(|(slot, errors)| (slot.load_full(), errors.clone()));
        let first_byte_timeout = limits.handshake_timeout;
        let max_head = limits.max_head_bytes;
        tokio::spawn(async move {
            let result = match tls_config {
                None => match first_head(stream, first_byte_timeout, max_head, &drain).await {
                    Ok((ahead, stream, h2)) => {
                        let io = ClientIo::new(ahead, stream, guard(h2, max_head));
                        serve_connection(&protocols, h2, TokioIo::new(io), service, drain).await
                    }
                    Err(e) => Err(e.into()),
                },
                Some((config, errors)) => {
                    let handshake = TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(first_byte_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let io = ClientIo::new(Vec::new(), stream, guard(h2, max_head));
                            serve_connection(&protocols, h2, TokioIo::new(io), service, drain).await
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

/// The framing guard for a connection: HTTP/2 framing has no
/// Content-Length/Transfer-Encoding ambiguity, so h2 goes unguarded.
fn guard(h2: bool, max_head: usize) -> FramingGuard {
    if h2 {
        FramingGuard::off()
    } else {
        FramingGuard::new(max_head)
    }
}

/// Wait for a plain connection's first request head (or the h2c preface),
/// reading it into a buffer that grows only as the bytes come, then hand
/// the connection on with those bytes, to be replayed. Returns whether it
/// is h2c. Gives up after `timeout`: with part of a head received that is a
/// 408, with nothing received the connection just closes (as nginx does).
/// A connection that has sent nothing when the drain starts is idle, and
/// closes at once rather than holding the shutdown up.
async fn first_head(
    mut stream: TcpStream,
    timeout: Duration,
    max: usize,
    drain: &DrainSignal,
) -> std::io::Result<(Vec<u8>, TcpStream, bool)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(512);
    let read = async {
        loop {
            if buf.is_empty() {
                tokio::select! {
                    ready = stream.readable() => ready?,
                    _ = drain.wait() => return Err(std::io::Error::other("shutting down: idle connection closed")),
                }
            } else {
                stream.readable().await?;
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len());
            }
            let before = buf.len();
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return Ok(false), // EOF: hyper sees what came and the end
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            // Only the new bytes (and the two before them) are searched for
            // the end of the head, so a dribbling client costs linear time.
            match head_state(&buf, before.saturating_sub(2), max) {
                HeadState::Incomplete => continue,
                HeadState::H2c => return Ok(true),
                HeadState::Http1 => return Ok(false),
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(h2)) => Ok((buf, stream, h2)),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            if !buf.is_empty() {
                let _ = stream.write_all(REQUEST_TIMEOUT).await;
            }
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request head within server.header_read_timeout"))
        }
    }
}

const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

#[derive(Debug, PartialEq)]
enum HeadState {
    Incomplete,
    H2c,
    /// A complete head, or something hyper should judge now (not a request
    /// line, or too big), so the client gets its 400/431 without waiting.
    Http1,
}

fn head_state(buf: &[u8], new_from: usize, max: usize) -> HeadState {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() { HeadState::H2c } else { HeadState::Incomplete };
    }
    // A method is a token: anything else is not HTTP/1 and hyper says so.
    let ends_head = |i: usize| buf[i] == b'\n' && matches!(&buf[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]);
    if !buf[0].is_ascii_alphabetic() || buf.len() >= max || (new_from..buf.len()).any(ends_head) {
        HeadState::Http1
    } else {
        HeadState::Incomplete
    }
}

/// A client connection as hyper sees it: the bytes read ahead (plain
/// connections' first head) put back in front, and every byte read shown
/// to the framing guard before hyper gets it.
pub struct ClientIo<S> {
    ahead: Option<Vec<u8>>,
    pos: usize,
    guard: FramingGuard,
    stream: S,
}

impl<S> ClientIo<S> {
    fn new(ahead: Vec<u8>, stream: S, guard: FramingGuard) -> Self {
        ClientIo { ahead: (!ahead.is_empty()).then_some(ahead), pos: 0, guard, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = out.filled().len();
        if let Some(ahead) = &this.ahead {
            let n = (ahead.len() - this.pos).min(out.remaining());
            out.put_slice(&ahead[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == ahead.len() {
                this.ahead = None; // free it: the connection may live long
            }
        } else {
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, out))?;
        }
        if !this.guard.is_off() && this.guard.inspect(&mut out.filled_mut()[before..]) {
            tracing::debug!("request with both Content-Length and Transfer-Encoding: refused");
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
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

    /// Resolves once the drain has started.
    async fn wait(&self) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.started.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
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
    /// How long a TLS handshake, or the first head of a plain connection,
    /// may take (the header read timeout).
    pub handshake_timeout: Duration,
    /// How long open connections get to finish after shutdown.
    pub drain: Duration,
    /// The first head is read ahead up to this size; hyper judges the rest.
    pub max_head_bytes: usize,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Self {
        Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.header_read_timeout,
            drain: config.drain_timeout,
            max_head_bytes: config.max_header_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{head_state, HeadState, H2_PREFACE};

    #[test]
    fn the_first_head_is_complete_at_its_empty_line() {
        let state = |bytes: &[u8]| head_state(bytes, 0, 1024);
        assert_eq!(state(b"GET / HTTP/1.1\r\nHost: a\r\n"), HeadState::Incomplete);
        assert_eq!(state(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), HeadState::Incomplete);
        assert_eq!(state(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), HeadState::Http1);
        assert_eq!(state(b"GET / HTTP/1.1\nHost: a\n\n"), HeadState::Http1);
        assert_eq!(state(b"\x16\x03\x01"), HeadState::Http1, "not HTTP: hyper answers at once");
        assert_eq!(state(&[b'G'; 1024]), HeadState::Http1, "at the limit: hyper answers 431");
        assert_eq!(state(b"PRI * HTTP/2.0\r\n"), HeadState::Incomplete);
        assert_eq!(state(H2_PREFACE), HeadState::H2c);
        assert_eq!(state(b"POST / HTTP/1.1\r\n"), HeadState::Incomplete);
        // Read in two parts: the empty line straddles them.
        assert_eq!(head_state(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 24, 1024), HeadState::Http1);
    }
}
