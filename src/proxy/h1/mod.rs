//! The HTTP/1.1 client for upstream connections, driven inside the
//! request's own task.
//!
//! hyper's client runs every connection as a task of its own and hands each
//! request to it through a channel and the response back through another;
//! on a proxy that is most of the per-request cost above the kernel (see
//! benches/runs/2026-12-01-where-the-time-goes.md). Here the request task writes the request itself, and
//! the response body reads from the socket as the client's server side polls it,
//! so a request crosses no task boundary on the upstream leg.
//!
//! The response head is parsed in `head.rs`, the body read in `body.rs`.
//! Response framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and
//! 304; Transfer-Encoding ending in `chunked` wins over Content-Length (and
//! the connection is not reused after such a response); any other
//! Transfer-Encoding, or neither header, reads until the upstream closes;
//! differing or invalid Content-Length values are an error (502).

mod body;
mod head;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub use body::ResponseReader;
pub use head::{field, parse_head, Framing, NameCache};

use crate::proxy::body::BoxError;
use crate::proxy::hop_by_hop::upgrade_allowed;

/// Largest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// How much room a read asks for.
const READ_SIZE: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("upstream closed the connection in the middle of the response")]
    ClosedMidResponse,
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response from upstream: {0}")]
    Malformed(&'static str),
    #[error("client request body failed: {0}")]
    ClientBody(BoxError),
    #[error("no answer before the request's deadline")]
    Timeout,
}

impl From<httparse::Error> for Error {
    fn from(e: httparse::Error) -> Self {
        Error::Malformed(match e {
            httparse::Error::TooManyHeaders => "too many headers",
            httparse::Error::Status => "bad status line",
            httparse::Error::Version => "bad version",
            _ => "bad header",
        })
    }
}

/// A failed exchange, and whether the same request may go out again on a
/// fresh connection: true only when nothing of an answer came back and the
/// request had no body, i.e. the kept-alive connection had been closed by
/// the upstream just as we used it.
#[derive(Debug)]
pub struct SendError {
    pub error: Error,
    pub retryable: bool,
}

/// One upstream connection.
pub struct Connection {
    stream: TcpStream,
    read_buf: BytesMut,
    /// Taken from the idle pool (it may have gone stale), not fresh.
    reused: bool,
    /// The deadline timer, armed at the connection's first request that
    /// has a deadline, kept for its life (see [`Connection::poll_deadline`]).
    timer: Option<Pin<Box<Sleep>>>,
    names: NameCache,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        Connection { stream, read_buf: BytesMut::new(), reused: false, timer: None, names: NameCache::default() }
    }

    /// Hand `polled` on; while it waits, check the deadline (and arm its
    /// timer). A poll that is ready needs no look at the deadline.
    fn or_deadline<T>(
        &mut self,
        polled: Poll<Result<T, Error>>,
        deadline: Option<Instant>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, Error>> {
        if polled.is_pending() {
            self.poll_deadline(deadline, cx)?;
        }
        polled
    }

    fn poll_write_all(&mut self, buf: &[u8], written: &mut usize, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while *written < buf.len() {
            match ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[*written..]))? {
                0 => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                n => *written += n,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// `Err(Timeout)` once `deadline` has passed. A timer registered and
    /// removed per request cost ~600 instructions; this one is armed once
    /// per connection and a request only moves the deadline it is checked
    /// against. Deadlines only grow on a connection, so the timer fires at
    /// an earlier request's deadline at the latest (a shorter
    /// `request_timeout` after a reload moves it back), and is then moved
    /// on to the current one: a reset per `request_timeout` of busy
    /// connection life, not per request. (When it fires while the
    /// connection is idle, the last task that polled it gets one spurious
    /// wake-up.)
    fn poll_deadline(&mut self, deadline: Option<Instant>, cx: &mut Context<'_>) -> Result<(), Error> {
        let Some(deadline) = deadline else { return Ok(()) };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline); // request_timeout was shortened by a reload
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Err(Error::Timeout);
            }
            timer.as_mut().reset(deadline);
        }
        Ok(())
    }

    pub fn mark_reused(&mut self) {
        self.reused = true;
    }

    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Whether an idle connection can take a request: the upstream has not
    /// closed it or sent anything unasked. Asks tokio's cached readiness
    /// first, so a quiet connection costs no system call.
    pub fn is_reusable(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Write the request and read the answer's head. The response body
    /// reads from this connection as it is polled; once read to the end,
    /// [`ResponseReader::into_reusable`] gives the connection back.
    ///
    /// A request body goes up while the answer is awaited, and on while the
    /// response body streams if the answer comes first: an upstream may
    /// answer as it reads (an echo), or early (a 413) and stop reading.
    pub async fn send<B>(mut self, req: &mut Outgoing<B>) -> Result<Response<ResponseReader>, SendError>
    where
        B: Body<Data = Bytes> + DiscardableBody + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(body) = req.body.take() else {
            // Writing a head waits on the upstream alone: the clock runs from the start.
            let deadline = req.timeout.map(|t| Instant::now() + t);
            let mut written = 0;
            let write = std::future::poll_fn(|cx| {
                let polled = self.poll_write_all(&req.head, &mut written, cx);
                self.or_deadline(polled, deadline, cx)
            });
            if let Err(error) = write.await {
                let retryable = matches!(&error, Error::Io(e) if is_closed(e));
                return Err(SendError { retryable, error });
            }
            let head = std::future::poll_fn(|cx| {
                let polled = self.poll_head(&req.method, req.upgrade, cx);
                self.or_deadline(polled, deadline, cx)
            })
            .await;
            return match head {
                Ok(response) => Ok(response.map(|framing| ResponseReader::new(self, framing, None))),
                Err(error) => Err(SendError {
                    retryable: match &error {
                        Error::ClosedBeforeAnswer => true,
                        Error::Io(io) => is_closed(io),
                        _ => false,
                    },
                    error,
                }),
            };
        };
        let mut upload: Option<Box<dyn Upload>> =
            Some(Box::new(BodyUpload::new(std::mem::take(&mut req.head), body, req.chunked)));
        let mut upload_failed = false;
        let mut clock = UploadClock::new(req.timeout);
        let head = std::future::poll_fn(|cx| {
            if let Some(up) = upload.as_mut() {
                match up.poll_upload(&mut self.stream, cx) {
                    Poll::Ready(Ok(())) => {
                        upload = None;
                        clock.sent();
                    }
                    Poll::Ready(Err(e @ Error::ClientBody(_))) => return Poll::Ready(Err(e)),
                    // The upstream stopped reading; it may still answer.
                    Poll::Ready(Err(_)) => {
                        upload = None;
                        upload_failed = true;
                        clock.sent();
                    }
                    Poll::Pending if up.waits_on_client() => clock.waiting_on_client(),
                    Poll::Pending => clock.waiting_on_upstream(up.bytes_sent()),
                }
            }
            let polled = self.poll_head(&req.method, req.upgrade, cx);
            self.or_deadline(polled, clock.deadline, cx)
        })
        .await;
        req.client_wait = clock.client_waited();
        match head {
            Ok(response) => Ok(response.map(|mut framing| {
                framing.keep_alive &= !upload_failed;
                ResponseReader::new(self, framing, upload)
            })),
            Err(error) => Err(SendError { error, retryable: false }),
        }
    }

    /// Read until a final response head is parsed (1xx other than 101 are
    /// skipped: the answer follows them). A 101 is an answer only to a
    /// request that asked for that upgrade (`upgrade`: a WebSocket one);
    /// any other is a broken answer (RFC 9110 §15.2.2), and HTTP/2 has no
    /// 101 to pass on at all (RFC 9113 §8.6).
    fn poll_head(
        &mut self,
        method: &Method,
        upgrade: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Framing>, Error>> {
        loop {
            if let Some(response) = parse_head(&mut self.read_buf, method, &mut self.names)? {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let switched_to = response.headers().get(http::header::UPGRADE).map(|v| v.as_bytes());
                    if !(upgrade && switched_to.is_some_and(upgrade_allowed)) {
                        return Poll::Ready(Err(Error::Malformed(
                            "101 Switching Protocols to a request that did not ask for it",
                        )));
                    }
                } else if response.status().is_informational() {
                    continue;
                }
                return Poll::Ready(Ok(response));
            }
            if self.read_buf.len() >= MAX_HEAD {
                return Poll::Ready(Err(Error::Malformed("response head too large")));
            }
            let started = !self.read_buf.is_empty();
            if ready!(self.poll_read_more(cx))? == 0 {
                return Poll::Ready(Err(if started { Error::ClosedMidResponse } else { Error::ClosedBeforeAnswer }));
            }
        }
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read_buf.reserve(READ_SIZE);
        let spare = self.read_buf.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        // SAFETY: `poll_read` initialised the first `n` spare bytes.
        unsafe { self.read_buf.set_len(self.read_buf.len() + n) };
        Poll::Ready(Ok(n))
    }
}

/// The upstream's clock while a request body goes up (README,
/// "Timeouts"): `request_timeout` counts only while the upstream is what
/// the request waits for. While the client's body is awaited, no clock
/// runs (`server.body_read_timeout` is the client's); while the upstream
/// does not take more of the request, it runs from when it last took some;
/// once the request is all sent, it runs to the response head. So a slow
/// client is never an upstream timeout, and the time spent waiting for it
/// is kept out of the pool's latency.
struct UploadClock {
    timeout: Option<std::time::Duration>,
    /// When the upstream must next have made progress (`None`: no clock).
    deadline: Option<Instant>,
    /// The bytes sent when the upstream's current wait started.
    stalled_at: Option<u64>,
    client_since: Option<Instant>,
    client_waited: std::time::Duration,
}

impl UploadClock {
    fn new(timeout: Option<std::time::Duration>) -> Self {
        UploadClock {
            timeout,
            deadline: None,
            stalled_at: None,
            client_since: None,
            client_waited: std::time::Duration::ZERO,
        }
    }

    fn start(&mut self) -> Instant {
        let now = Instant::now();
        if let Some(since) = self.client_since.take() {
            self.client_waited += now - since;
        }
        self.deadline = self.timeout.map(|t| now + t);
        now
    }

    fn waiting_on_client(&mut self) {
        if self.client_since.is_none() {
            self.client_since = Some(Instant::now());
        }
        self.deadline = None;
        self.stalled_at = None;
    }

    /// The upstream does not take more; `sent`: the bytes it took so far.
    fn waiting_on_upstream(&mut self, sent: u64) {
        if self.stalled_at != Some(sent) {
            self.stalled_at = Some(sent);
            self.start();
        }
    }

    /// The request is all sent (or the upstream stopped reading it).
    fn sent(&mut self) {
        self.stalled_at = None;
        self.start();
    }

    /// The time spent waiting for the client's body, up to now.
    fn client_waited(&self) -> std::time::Duration {
        self.client_waited + self.client_since.map_or(std::time::Duration::ZERO, |since| since.elapsed())
    }
}

/// A request body that counts its own failures as the client's (a stall,
/// a break). Once the answer has ended, the rest of it is only read to be
/// dropped: a failure there no longer matters to anyone and must not count.
pub trait DiscardableBody {
    /// From now on, fail without counting.
    fn discarding(&mut self);
}

/// A health check's empty body counts nothing.
impl DiscardableBody for http_body_util::Empty<Bytes> {
    fn discarding(&mut self) {}
}

/// A shadow read's copy of a request body (`crate::shadow::mirror`)
/// counts nothing either.
impl DiscardableBody for http_body_util::Full<Bytes> {
    fn discarding(&mut self) {}
}

/// A request body going up, as far as the socket takes it each poll.
trait Upload: Send {
    fn poll_upload(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
    /// After a pending [`Upload::poll_upload`]: whether it waits for the
    /// client's body (else for the upstream to take more).
    fn waits_on_client(&self) -> bool;
    /// The request bytes the upstream has taken so far.
    fn bytes_sent(&self) -> u64;
    /// Read the rest of the client's body and throw it away.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

struct BodyUpload<B> {
    body: B,
    chunked: bool,
    /// Written before `data`: the request head, later chunk-size lines.
    prefix: Vec<u8>,
    prefix_at: usize,
    data: Bytes,
    /// Written after `data`: a chunk's CRLF, or the last chunk.
    suffix: &'static [u8],
    ended: bool,
    sent: u64,
    /// The last wait was for the client's body, not the upstream's socket.
    waits_on_client: bool,
}

impl<B> BodyUpload<B> {
    fn new(head: Vec<u8>, body: B, chunked: bool) -> Self {
        BodyUpload {
            body,
            chunked,
            prefix: head,
            prefix_at: 0,
            data: Bytes::new(),
            suffix: b"",
            ended: false,
            sent: 0,
            waits_on_client: false,
        }
    }

    fn consume(&mut self, mut n: usize) {
        self.sent += n as u64;
        let from_prefix = n.min(self.prefix.len() - self.prefix_at);
        self.prefix_at += from_prefix;
        n -= from_prefix;
        let from_data = n.min(self.data.len());
        self.data.advance(from_data);
        n -= from_data;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
    }
}

impl<B> Upload for BodyUpload<B>
where
    B: Body<Data = Bytes> + DiscardableBody + Unpin + Send,
    B::Error: Into<BoxError>,
{
    fn poll_upload(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while self.prefix_at < self.prefix.len() || !self.data.is_empty() || !self.suffix.is_empty() {
                let parts = [
                    io::IoSlice::new(&self.prefix[self.prefix_at..]),
                    io::IoSlice::new(&self.data),
                    io::IoSlice::new(self.suffix),
                ];
                self.waits_on_client = false;
                let n = ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &parts))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.consume(n);
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            self.waits_on_client = true;
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.suffix = b"0\r\n\r\n";
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::ClientBody(e.into()))),
                Some(Ok(frame)) => {
                    // Trailers are not forwarded.
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    self.prefix.clear();
                    self.prefix_at = 0;
                    if self.chunked {
                        use std::io::Write;
                        let _ = write!(self.prefix, "{:x}\r\n", data.len());
                        self.suffix = b"\r\n";
                    }
                    self.data = data;
                }
            }
        }
    }

    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.body.discarding();
        while let Some(Ok(_)) = ready!(Pin::new(&mut self.body).poll_frame(cx)) {}
        Poll::Ready(())
    }

    fn waits_on_client(&self) -> bool {
        self.waits_on_client
    }

    fn bytes_sent(&self) -> u64 {
        self.sent
    }
}

fn is_closed(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

/// A request ready to go out: its head already encoded, so that a request
/// without a body can be sent again on a fresh connection.
pub struct Outgoing<B> {
    head: Vec<u8>,
    /// `None` for a request without a body; taken when one with a body is
    /// sent (it can go out only once).
    body: Option<B>,
    chunked: bool,
    method: Method,
    /// It asks for a WebSocket upgrade: a 101 is a valid answer.
    upgrade: bool,
    /// The longest the upstream may keep the request waiting ([`UploadClock`]).
    timeout: Option<std::time::Duration>,
    /// After sending: how long the request waited for the client's body.
    client_wait: std::time::Duration,
}

impl<B> Outgoing<B> {
    /// `head`: the request line and headers, encoded by the caller
    /// ([`crate::proxy::rewrite::upstream_head`]); `chunked`: it announced a
    /// chunked body, so the body's frames go up as chunks.
    pub fn new(head: Vec<u8>, method: Method, body: Option<B>, chunked: bool) -> Self {
        Outgoing { head, body, chunked, method, upgrade: false, timeout: None, client_wait: std::time::Duration::ZERO }
    }

    /// The head asks for an upgrade grayshift tunnels.
    pub fn with_upgrade(mut self, upgrade: bool) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// Give up with [`Error::Timeout`] when the upstream keeps the request
    /// waiting this long: to take more of it, or to answer once it is all
    /// sent. Time spent waiting for the client's body does not count.
    pub fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.timeout = Some(timeout);
    }

    /// How long sending waited for the client's body (not the upstream's time).
    pub fn client_wait(&self) -> std::time::Duration {
        self.client_wait
    }
}
