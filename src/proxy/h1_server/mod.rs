//! The HTTP/1.1 server side for client connections, on httparse.
//!
//! One connection is one task and one loop: read a head into the
//! connection's buffer (reused from request to request, and given back
//! while the connection is idle), parse it once with the framing rules of
//! README's smuggling table applied as it is parsed (`head.rs`), run the
//! request path in this task, write the response (`response.rs`), and go
//! on with the next head once the request's body is out of the way
//! (`body.rs`). One header-read deadline per connection, extended rather
//! than re-armed for every request. HTTP/2 stays with hyper.

mod body;
mod head;
mod response;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, Notify};
use tokio::time::{Instant, Sleep};

pub use body::{Body, ReadIo};
pub use head::{parse, BodyFraming, Head, HeadError, HeadLimits};

use crate::config::ServerConfig;
use crate::proxy::body::{ClientBody, ResponseBody};
use crate::proxy::conn::ConnInfo;
use crate::proxy::error::text_response;
use crate::proxy::h1::NameCache;
use crate::proxy::server::DrainWatch;
use body::{Reader, Returned, Unread};
use response::Exchange;

/// How long a request body that is still being read when its response
/// has ended may take to reach its end, before the connection closes.
const FINISH_BODY_LIMIT: Duration = Duration::from_secs(60);
/// How much of a request body the handler did not read the connection
/// reads and drops to keep the connection; beyond it, it closes.
const DISCARD_LIMIT: u64 = 1024 * 1024;
/// The room a head read asks for: small, so that a slow client costs
/// little; the buffer doubles while a head is longer.
const HEAD_READ: usize = 1024;
/// How long a connection closed after an error reads (and drops) what the
/// client still sends, so that the close does not reset the connection
/// before the client has read the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The `[server]` settings an HTTP/1 connection runs with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: HeadLimits,
    /// The longest wait for a whole head, counted from when the
    /// connection started waiting for it (so also the keep-alive timeout).
    pub header_read_timeout: Duration,
    /// The longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
}

impl Settings {
    pub fn new(config: &ServerConfig) -> Self {
        Settings {
            limits: HeadLimits { max_bytes: config.max_header_bytes, max_headers: config.max_headers },
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
        }
    }
}

/// A client stream an HTTP/1 connection is served on.
pub trait ClientStream: Send + 'static {
    type Write: AsyncWrite + Send + Unpin + 'static;
    fn into_halves(self) -> (Box<dyn ReadIo>, Self::Write);
}

impl ClientStream for tokio::net::TcpStream {
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Box<dyn ReadIo>, Self::Write) {
        let (read, write) = self.into_split();
        (Box::new(read), write)
    }
}

/// TLS: rustls keeps one state for both directions, so its halves share
/// it behind tokio's split lock.
impl ClientStream for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Box<dyn ReadIo>, Self::Write) {
        let (read, write) = tokio::io::split(self);
        (Box::new(read), write)
    }
}

/// In-memory streams, for the fuzz targets and tests.
impl ClientStream for tokio::io::DuplexStream {
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Box<dyn ReadIo>, Self::Write) {
        let (read, write) = tokio::io::split(self);
        (Box::new(read), write)
    }
}

/// Serve HTTP/1.1 on `stream` until the client closes, an error or a
/// refusal closes it, or the drain signal finds it between requests.
/// `first`: bytes already read off the stream; `started`: when the wait
/// for the first head began.
pub async fn serve<S, H, F>(
    stream: S,
    first: BytesMut,
    started: Instant,
    info: ConnInfo,
    handler: &H,
    settings: Settings,
    mut drain: DrainWatch,
) -> io::Result<()>
where
    S: ClientStream,
    H: Fn(ConnInfo, Request<ClientBody>) -> F,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    let (read, mut write) = stream.into_halves();
    let mut reader = Reader::new(read, first);
    let mut names = NameCache::default();
    let mut out = Vec::new();
    let mut timer = HeadTimer::new(started + settings.header_read_timeout);
    let mut waiting_since = started;
    loop {
        let deadline = waiting_since + settings.header_read_timeout;
        let head = match read_head(&mut reader, &mut names, settings.limits, &mut timer, deadline, &mut drain).await {
            Ok(HeadRead::Head(head)) => head,
            Ok(HeadRead::Closed) => return Ok(()),
            Ok(HeadRead::TimedOut) => {
                if !reader.buf.is_empty() {
                    write.write_all(REQUEST_TIMEOUT).await?;
                }
                return Ok(());
            }
            Ok(HeadRead::Refused(error)) => {
                tracing::debug!(peer = %info.peer, %error, "request head refused");
                return Box::pin(refuse(write, out, reader, error)).await;
            }
            Err(e) => return Err(e),
        };
        // Boxed, with the request path's future in it: a task is as large
        // as its largest state, and an idle connection should hold only
        // what it needs to wait for the next head.
        let exchange = exchange(head, reader, &mut write, &mut out, &info, handler, drain.started());
        reader = match Box::pin(exchange).await? {
            After::Next(reader) => reader,
            After::Discard(reader, unread) => {
                let rest = Body::discard(reader, unread, DISCARD_LIMIT, settings.body_read_timeout);
                match tokio::time::timeout(FINISH_BODY_LIMIT, rest).await {
                    Ok(Some(reader)) => reader,
                    _ => return Ok(()),
                }
            }
            After::Close => return Ok(()),
            After::Linger(reader) => return Box::pin(linger(write, reader)).await,
            After::Upgrade(reader, upgrade) => {
                let _ = upgrade.send(Upgraded { reader, write: Box::new(write) });
                return Ok(());
            }
        };
        if out.capacity() > 64 * 1024 {
            out = Vec::new();
        }
        waiting_since = Instant::now();
    }
}

/// What the connection does after a request.
enum After {
    /// Read the next head.
    Next(Reader),
    /// Read the rest of a request body nobody read, and drop it, then
    /// the next head.
    Discard(Reader, Unread),
    Close,
    /// Close, reading and dropping what the client still sends.
    Linger(Reader),
    /// Hand the connection to the tunnel.
    Upgrade(Reader, oneshot::Sender<Upgraded>),
}

/// One request: run the request path on it and write its response.
async fn exchange<W, H, F>(
    head: Head,
    reader: Reader,
    write: &mut W,
    out: &mut Vec<u8>,
    info: &ConnInfo,
    handler: &H,
    draining: bool,
) -> io::Result<After>
where
    W: AsyncWrite + Unpin,
    H: Fn(ConnInfo, Request<ClientBody>) -> F,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    let Head { request, body: framing, keep_alive, expect_continue, upgrade } = head;
    let (head_request, version) = (request.method() == Method::HEAD, request.version());
    let (parts, ()) = request.into_parts();
    // The read side goes with a body and comes back at its end.
    let (body, here, returned, continue_wanted) = if framing == BodyFraming::Empty {
        (ClientBody::Empty, Some(reader), None, None)
    } else {
        let wanted = expect_continue.then(|| Arc::new(Notify::new()));
        let (body, returned) = Body::new(reader, framing, wanted.clone());
        (ClientBody::Http1(body), None, Some(returned), wanted)
    };
    let mut request = Request::from_parts(parts, body);
    let upgrade = upgrade.then(|| {
        let (give, take) = oneshot::channel();
        request.extensions_mut().insert(OnUpgrade(Arc::new(std::sync::Mutex::new(Some(take)))));
        give
    });
    let answer = handler(info.clone(), request);
    let response = match continue_wanted {
        None => answer.await,
        Some(wanted) => {
            let mut answer = std::pin::pin!(answer);
            tokio::select! {
                biased;
                response = &mut answer => response,
                () = wanted.notified() => {
                    write.write_all(CONTINUE).await?;
                    write.flush().await?;
                    answer.await
                }
            }
        }
    };
    let Ok(response) = response;
    let switching = upgrade.is_some() && response.status() == StatusCode::SWITCHING_PROTOCOLS;
    // A drain that started while the request was in flight closes the
    // connection after its response.
    let exchange = Exchange { head_request, version, keep_alive: keep_alive && !draining };
    let keep_alive = response::write(write, out, response, exchange).await?;
    if !keep_alive && !switching {
        // A body left unread (an error answer): linger, if it is back.
        return Ok(match (here, returned.map(|mut r| r.try_recv())) {
            (None, Some(Ok(Returned { reader, finished: false, .. }))) => After::Linger(reader),
            _ => {
                let _ = write.shutdown().await;
                After::Close
            }
        });
    }
    let reader = match (here, returned) {
        (Some(reader), _) => reader,
        (None, Some(returned)) => match tokio::time::timeout(FINISH_BODY_LIMIT, returned).await {
            Ok(Ok(Returned { reader, finished: true, .. })) => reader,
            // The answer went out as keep-alive, so the client will send its
            // next request after this body: read the rest (as nginx does)
            // rather than close under a client that did nothing wrong.
            Ok(Ok(Returned { reader, finished: false, unread: Some(unread) })) => {
                return Ok(After::Discard(reader, unread))
            }
            Ok(Ok(Returned { reader, finished: false, unread: None })) => return Ok(After::Linger(reader)),
            _ => return Ok(After::Close),
        },
        (None, None) => unreachable!("a body always has a way back"),
    };
    Ok(match upgrade {
        Some(upgrade) if switching => After::Upgrade(reader, upgrade),
        _ => After::Next(reader),
    })
}

/// Answer a refused head and close.
async fn refuse<W: AsyncWrite + Unpin>(
    mut write: W,
    mut out: Vec<u8>,
    reader: Reader,
    error: HeadError,
) -> io::Result<()> {
    response::write_refusal(&mut write, &mut out, refusal(error)).await?;
    linger(write, reader).await
}

// Returned once per request and taken apart at once: boxing the head
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Head(Head),
    /// The client closed, or the drain found the connection idle.
    Closed,
    TimedOut,
    Refused(HeadError),
}

/// Read until the buffer holds a whole head, the deadline passes, or (with
/// nothing of a head yet) the client closes or the drain starts.
async fn read_head(
    reader: &mut Reader,
    names: &mut NameCache,
    limits: HeadLimits,
    timer: &mut HeadTimer,
    deadline: Instant,
    drain: &mut DrainWatch,
) -> io::Result<HeadRead> {
    loop {
        if !reader.buf.is_empty() {
            match head::parse(&mut reader.buf, limits, names) {
                Ok(Some(head)) => return Ok(HeadRead::Head(head)),
                Ok(None) => {}
                Err(error) => return Ok(HeadRead::Refused(error)),
            }
        }
        let idle = reader.buf.is_empty();
        let room = HEAD_READ.max(reader.buf.len());
        let read = std::future::poll_fn(|cx| reader.poll_fill(cx, room));
        let n = tokio::select! {
            biased;
            n = read => n?,
            () = timer.wait(deadline) => return Ok(HeadRead::TimedOut),
            () = std::future::poll_fn(|cx| drain.poll_started(cx)), if idle => return Ok(HeadRead::Closed),
        };
        if n == 0 {
            // Closed: cleanly between requests, or in the middle of a head
            // (nothing to answer either way).
            return Ok(HeadRead::Closed);
        }
    }
}

/// The answer to a refused head, with `Connection: close`.
fn refusal(error: HeadError) -> Response<ResponseBody> {
    let text = match error {
        HeadError::Framing(e) => return crate::proxy::error::ProxyError::Framing(e).into_response(),
        e => format!("grayshift: bad request: {e}\n"),
    };
    let mut response = text_response(error.status(), text);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Close after an error: stop writing, then read and drop what the client
/// still sends for a moment, so its unread bytes do not turn the close into
/// a reset that could destroy the answer before the client reads it.
async fn linger<W: AsyncWrite + Unpin>(mut write: W, mut reader: Reader) -> io::Result<()> {
    let _ = write.shutdown().await;
    let drained = async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            reader.buf.clear();
            match std::future::poll_fn(|cx| reader.poll_fill(cx, 4096)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drained).await;
    Ok(())
}

/// The connection's one header-read timer. It is armed once and, when it
/// fires before the current deadline (a later request moved it), set to
/// that deadline: a keep-alive connection does not touch the timer wheel
/// for every request.
struct HeadTimer {
    sleep: Pin<Box<Sleep>>,
}

impl HeadTimer {
    fn new(deadline: Instant) -> Self {
        HeadTimer { sleep: Box::pin(tokio::time::sleep_until(deadline)) }
    }

    async fn wait(&mut self, deadline: Instant) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

/// Put in a request's extensions when it asks for an upgrade grayshift
/// tunnels: resolves to the connection once a `101` has been written.
/// (Request extensions must be `Clone`; the first to take it has it.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub async fn upgraded(self) -> Result<Upgraded, &'static str> {
        let taken = self.0.lock().ok().and_then(|mut slot| slot.take());
        taken.ok_or("the upgrade was taken already")?.await.map_err(|_| "the connection was not upgraded")
    }
}

/// A client connection after a `101`: what was read past the request head
/// first, then the stream.
pub struct Upgraded {
    reader: Reader,
    write: Box<dyn AsyncWrite + Send + Unpin>,
}

impl AsyncRead for Upgraded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let reader = &mut self.reader;
        if replay(&mut reader.buf, out) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *reader.io).poll_read(cx, out)
    }
}

/// Hand over bytes read ahead of a stream before the stream's own:
/// whether there were any. The buffer is freed once empty (the connection
/// may live long).
pub(crate) fn replay(ahead: &mut BytesMut, out: &mut ReadBuf<'_>) -> bool {
    if ahead.is_empty() {
        return false;
    }
    let n = ahead.len().min(out.remaining());
    out.put_slice(&ahead[..n]);
    ahead.advance(n);
    if ahead.is_empty() {
        *ahead = BytesMut::new();
    }
    true
}

impl AsyncWrite for Upgraded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.write).poll_shutdown(cx)
    }
}
