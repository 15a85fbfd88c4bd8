//! The HTTP/1.1 client for upstream connections, driven inside the
//! request's own task.
//!
//! hyper's client runs every connection as a task of its own and hands each
//! request to it through a channel and the response back through another;
//! on a proxy that is most of the per-request cost above the kernel (see
//! benches/README.md). Here the request task writes the request itself, and
//! the response body reads from the socket as hyper's server side polls it,
//! so a request crosses no task boundary on the upstream leg.
//!
//! Response framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and
//! 304; Transfer-Encoding ending in `chunked` wins over Content-Length (and
//! the connection is not reused after such a response); any other
//! Transfer-Encoding, or neither header, reads until the upstream closes;
//! differing or invalid Content-Length values are an error (502).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::hop_by_hop::{connection_listed, is_hop_by_hop};

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

    /// `Err(Timeout)` once `deadline` has passed. A timer registered and
    /// removed per request cost ~600 instructions; this one is armed once
    /// per connection and a request only moves the deadline it is checked
    /// against. Deadlines only grow on a connection, so the timer fires at
    /// an earlier request's deadline at the latest (a shorter
    /// `request_timeout` after a reload moves it back), and is then moved on to
    /// the current one: a reset per `request_timeout` of busy connection
    /// life, not per request. (When it fires while the connection is idle,
    /// the last task that polled it gets one spurious wake-up.)
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
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let deadline = req.deadline;
        let Some(body) = req.body.take() else {
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
                let polled = self.poll_head(&req.method, cx);
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
        let head = std::future::poll_fn(|cx| {
            if let Some(up) = upload.as_mut() {
                match up.poll_upload(&mut self.stream, cx) {
                    Poll::Ready(Ok(())) => upload = None,
                    Poll::Ready(Err(e @ Error::ClientBody(_))) => return Poll::Ready(Err(e)),
                    // The upstream stopped reading; it may still answer.
                    Poll::Ready(Err(_)) => {
                        upload = None;
                        upload_failed = true;
                    }
                    Poll::Pending => {}
                }
            }
            let polled = self.poll_head(&req.method, cx);
            self.or_deadline(polled, deadline, cx)
        })
        .await;
        match head {
            Ok(response) => Ok(response.map(|mut framing| {
                framing.keep_alive &= !upload_failed;
                ResponseReader::new(self, framing, upload)
            })),
            Err(error) => Err(SendError { error, retryable: false }),
        }
    }

    /// Read until a final response head is parsed (1xx other than 101 are
    /// skipped: the answer follows them).
    fn poll_head(&mut self, method: &Method, cx: &mut Context<'_>) -> Poll<Result<Response<Framing>, Error>> {
        loop {
            if let Some(response) = parse_head(&mut self.read_buf, method, &mut self.names)? {
                if response.status().is_informational() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
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

/// Parse a complete response head off the front of `buf`. The
/// connection's own fields (hop-by-hop, RFC 9110 §7.6.1) decide the framing
/// and are left out of the headers: they are not passed on. A 101 keeps
/// `Connection: upgrade` and its first `Upgrade`.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    names: &mut NameCache,
) -> Result<Option<Response<Framing>>, Error> {
    // Uninitialised slots: zeroing 128 of them cost more than parsing.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| Error::Malformed("bad status"))?;
    let version = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    // Where each name and value sits in the head, so the values can be
    // slices of it (no copy) once it is split off the buffer.
    let base = buf.as_ptr() as usize;
    let mut spans = [const { MaybeUninit::<[u32; 4]>::uninit() }; MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        span.write([name as u32, (name + h.name.len()) as u32, value as u32, (value + h.value.len()) as u32]);
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut fields = FramingFields::default();
    for (i, span) in spans[..count].iter().enumerate() {
        // SAFETY: the loop above wrote the first `count` spans.
        let [ns, ne, vs, ve] = unsafe { span.assume_init() };
        let name = names.name(i, &head[ns as usize..ne as usize])?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| Error::Malformed("bad header value"))?;
        fields.see(&name, &value);
        if is_hop_by_hop(&name) {
            if name == header::UPGRADE && fields.upgrade.is_none() {
                fields.upgrade = Some(value);
            }
            continue;
        }
        headers.append(name, value);
    }
    for value in &fields.connection_lists {
        for name in connection_listed(value) {
            headers.remove(name);
        }
    }
    let framing = framing(method, status, version, &fields, &mut headers)?;
    if let Some(upgrade) = fields.upgrade.filter(|_| status == StatusCode::SWITCHING_PROTOCOLS) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    let mut response = Response::new(framing);
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(response))
}

/// An upstream's header names, in the places its last response had them,
/// with the bytes they came as. An upstream sends the same names in the
/// same order response after response, and comparing the bytes with those
/// that came at the same place costs less than parsing a name (~120
/// instructions each); a byte compare, since a case-insensitive one cost
/// more than it saved.
#[derive(Default)]
pub struct NameCache(Vec<(Box<[u8]>, HeaderName)>);

impl NameCache {
    /// Names past this place are parsed every time.
    const PLACES: usize = 32;

    fn name(&mut self, place: usize, bytes: &[u8]) -> Result<HeaderName, Error> {
        if let Some((_, known)) = self.0.get(place).filter(|(raw, _)| **raw == *bytes) {
            return Ok(known.clone());
        }
        let name = HeaderName::from_bytes(bytes).map_err(|_| Error::Malformed("bad header name"))?;
        let entry = (Box::from(bytes), name.clone());
        if place < self.0.len() {
            self.0[place] = entry;
        } else if place == self.0.len() && place < Self::PLACES {
            self.0.push(entry);
        }
        Ok(name)
    }
}

/// A request body going up, as far as the socket takes it each poll.
trait Upload: Send {
    fn poll_upload(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
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
}

impl<B> BodyUpload<B> {
    fn new(head: Vec<u8>, body: B, chunked: bool) -> Self {
        BodyUpload { body, chunked, prefix: head, prefix_at: 0, data: Bytes::new(), suffix: b"", ended: false }
    }

    fn consume(&mut self, mut n: usize) {
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
    B: Body<Data = Bytes> + Unpin + Send,
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
                let n = ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &parts))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.consume(n);
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
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
        while let Some(Ok(_)) = ready!(Pin::new(&mut self.body).poll_frame(cx)) {}
        Poll::Ready(())
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
    /// The answer's head must have come by then.
    deadline: Option<Instant>,
}

impl<B> Outgoing<B> {
    /// `head`: the request line and headers, encoded by the caller
    /// ([`crate::forward::upstream_head`]); `chunked`: it announced a
    /// chunked body, so the body's frames go up as chunks.
    pub fn new(head: Vec<u8>, method: Method, body: Option<B>, chunked: bool) -> Self {
        Outgoing { head, body, chunked, method, deadline: None }
    }

    /// Give up with [`Error::Timeout`] if no answer has come by `deadline`.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

/// How a response's body is delimited, and whether the connection may be
/// reused after it.
pub struct Framing {
    body: BodyFraming,
    keep_alive: bool,
}

enum BodyFraming {
    Empty,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// 101: the connection now carries another protocol.
    Upgraded,
}

/// What the framing rules read from a response's fields, gathered as the
/// head is parsed rather than looked up in the map afterwards.
#[derive(Default)]
struct FramingFields {
    /// A `Connection: close` token.
    close: bool,
    /// `Connection` values that name other fields to leave out (rare).
    connection_lists: Vec<HeaderValue>,
    /// The first Upgrade value, kept for a 101.
    upgrade: Option<HeaderValue>,
    /// The last Transfer-Encoding line.
    transfer_encoding: Option<HeaderValue>,
    content_length: Option<u64>,
    /// Invalid or differing Content-Length values: an error unless a
    /// Transfer-Encoding overrides them.
    bad_length: Option<&'static str>,
}

impl FramingFields {
    /// Every Content-Length line and list element must be the same number.
    fn see(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == header::CONNECTION {
            self.close |= value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            if connection_listed(value).next().is_some() {
                self.connection_lists.push(value.clone());
            }
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = Some(value.clone());
        } else if name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let part = part.trim_ascii();
                let n = std::str::from_utf8(part)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok());
                match n {
                    None => self.bad_length = Some("invalid content-length"),
                    Some(n) if self.content_length.is_some_and(|l| l != n) => {
                        self.bad_length = Some("differing content-length values")
                    }
                    Some(n) => self.content_length = Some(n),
                }
            }
        }
    }
}

/// RFC 9112 §6.3, in its order.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    fields: &FramingFields,
    headers: &mut HeaderMap,
) -> Result<Framing, Error> {
    let mut keep_alive = version == Version::HTTP_11 && !fields.close;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Framing { body: BodyFraming::Upgraded, keep_alive: false });
    }
    if method == Method::HEAD || status.is_informational() || status == 204 || status == 304 {
        return Ok(Framing { body: BodyFraming::Empty, keep_alive });
    }
    if let Some(te) = &fields.transfer_encoding {
        if fields.content_length.is_some() || fields.bad_length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false; // both: a sign of trouble; don't reuse
        }
        let chunked = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            Framing { body: BodyFraming::Chunked(Chunked::Size), keep_alive }
        } else {
            Framing { body: BodyFraming::UntilClose, keep_alive: false }
        });
    }
    if let Some(bad) = fields.bad_length {
        return Err(Error::Malformed(bad));
    }
    Ok(match fields.content_length {
        Some(0) => Framing { body: BodyFraming::Empty, keep_alive },
        Some(n) => Framing { body: BodyFraming::Length(n), keep_alive },
        None => Framing { body: BodyFraming::UntilClose, keep_alive: false },
    })
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// A response body read straight off the upstream connection.
pub struct ResponseReader {
    conn: Connection,
    framing: BodyFraming,
    keep_alive: bool,
    /// The rest of the request body, when the answer came before it was
    /// all sent.
    upload: Option<Box<dyn Upload>>,
}

impl ResponseReader {
    fn new(conn: Connection, framing: Framing, upload: Option<Box<dyn Upload>>) -> Self {
        ResponseReader { conn, framing: framing.body, keep_alive: framing.keep_alive, upload }
    }

    pub fn is_upgrade(&self) -> bool {
        matches!(self.framing, BodyFraming::Upgraded)
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.framing, BodyFraming::Empty)
    }

    /// The exact body size, when the response says it.
    pub fn exact_len(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::Empty => Some(0),
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The answer ended before the request body was all sent (an upstream
    /// may answer without reading it, or early).
    pub fn is_uploading(&self) -> bool {
        self.upload.is_some()
    }

    /// After an answer that ended before its request body was all sent:
    /// send the rest if the upstream kept the connection alive (it will
    /// read it), and the connection may carry another request; otherwise
    /// read the rest of the client's body and drop it (as nginx discards
    /// it), so the *client's* connection stays usable for its next request.
    /// Each part is bounded by `limit`.
    pub async fn finish(mut self, limit: std::time::Duration) -> Option<Connection> {
        let Some(mut upload) = self.upload.take() else { return self.into_reusable() };
        if self.keep_alive {
            let stream = &mut self.conn.stream;
            match tokio::time::timeout(limit, std::future::poll_fn(|cx| upload.poll_upload(stream, cx))).await {
                Ok(Ok(())) => return self.into_reusable(),
                Ok(Err(Error::ClientBody(_))) => return None,
                Ok(Err(_)) | Err(_) => {}
            }
        }
        let _ = tokio::time::timeout(limit, std::future::poll_fn(|cx| upload.poll_discard(cx))).await;
        None
    }

    /// The connection, if the body was read to its end and it may carry
    /// another request.
    pub fn into_reusable(self) -> Option<Connection> {
        let done = matches!(self.framing, BodyFraming::Empty) && self.upload.is_none();
        (done && self.keep_alive && self.conn.read_buf.is_empty()).then_some(self.conn)
    }

    /// After a 101: the raw connection and whatever the upstream already
    /// sent past the response head.
    pub fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.conn.stream, self.conn.read_buf.freeze())
    }

    /// The next piece of body; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        if let Some(upload) = self.upload.as_mut() {
            match upload.poll_upload(&mut self.conn.stream, cx) {
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(e @ Error::ClientBody(_))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Err(_)) => {
                    self.upload = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match &mut self.framing {
                BodyFraming::Empty | BodyFraming::Upgraded => return Poll::Ready(None),
                BodyFraming::Length(left) => {
                    if !self.conn.read_buf.is_empty() {
                        let n = (*left).min(self.conn.read_buf.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            self.framing = BodyFraming::Empty;
                        }
                        return Poll::Ready(Some(Ok(self.conn.read_buf.split_to(n).freeze())));
                    }
                }
                BodyFraming::UntilClose => {
                    if !self.conn.read_buf.is_empty() {
                        return Poll::Ready(Some(Ok(self.conn.read_buf.split().freeze())));
                    }
                }
                BodyFraming::Chunked(state) => match decode_chunked(state, &mut self.conn.read_buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(None) => {
                        if *state == Chunked::Trailers && trailers_done(&mut self.conn.read_buf) {
                            self.framing = BodyFraming::Empty;
                            return Poll::Ready(None);
                        }
                    }
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
            if self.conn.read_buf.len() >= MAX_HEAD {
                return Poll::Ready(Some(Err(Error::Malformed("chunk line or trailers too long"))));
            }
            let n = match ready!(self.conn.poll_read_more(cx)) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            };
            if n == 0 {
                return Poll::Ready(match self.framing {
                    BodyFraming::UntilClose => {
                        self.framing = BodyFraming::Empty;
                        self.keep_alive = false;
                        None
                    }
                    _ => Some(Err(Error::ClosedMidResponse)),
                });
            }
        }
    }
}

/// Take the next piece of chunk data off `buf`, stepping `state` through
/// sizes and CRLFs. `Ok(None)`: more bytes are needed, or the last chunk
/// was reached (`state` is then `Trailers`).
fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
    loop {
        match *state {
            Chunked::Size => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else { return Ok(None) };
                let line = &buf[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let rest = &line[digits..];
                // After the size: nothing, or whitespace/`;` and extensions.
                if digits == 0 || digits > 16 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
                    return Err(Error::Malformed("bad chunk size"));
                }
                let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).expect("hex digits"), 16)
                    .map_err(|_| Error::Malformed("bad chunk size"))?;
                buf.advance(end + 1);
                *state = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = left.min(buf.len() as u64) as usize;
                *state = if n as u64 == left { Chunked::DataEnd } else { Chunked::Data(left - n as u64) };
                return Ok(Some(buf.split_to(n).freeze()));
            }
            Chunked::DataEnd => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else if buf.is_empty() || buf[..] == b"\r"[..] {
                    return Ok(None);
                } else {
                    return Err(Error::Malformed("chunk data not followed by CRLF"));
                }
                *state = Chunked::Size;
            }
            Chunked::Trailers => return Ok(None),
        }
    }
}

/// Drop trailer lines (they are not forwarded); true once the empty line
/// that ends them has been consumed.
fn trailers_done(buf: &mut BytesMut) -> bool {
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        let empty = end == 0 || (end == 1 && buf[0] == b'\r');
        buf.advance(end + 1);
        if empty {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split_at: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in [&input[..split_at], &input[split_at..]] {
            buf.extend_from_slice(part);
            while let Some(data) = decode_chunked(&mut state, &mut buf)? {
                out.extend_from_slice(&data);
            }
            if state == Chunked::Trailers && trailers_done(&mut buf) {
                return Ok((out, buf.is_empty()));
            }
        }
        Err(Error::ClosedMidResponse)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..=body.len() {
            let (data, drained) = decode_all(body, split).unwrap();
            assert_eq!(data, b"hello world", "split at {split}");
            assert!(drained);
        }
        let (data, _) = decode_all(b"A\n0123456789\n0\n\n", 3).unwrap();
        assert_eq!(data, b"0123456789", "bare LF line ends");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"11111111111111111\r\n", b"5x\r\nhello\r\n"] {
            assert!(decode_all(bad, bad.len()).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn framing_of(method: Method, status: u16, headers: &[(&str, &str)]) -> Result<(String, bool), Error> {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut fields = FramingFields::default();
        for (name, value) in &map {
            fields.see(name, value);
        }
        let f = framing(&method, StatusCode::from_u16(status).unwrap(), Version::HTTP_11, &fields, &mut map)?;
        let kind = match f.body {
            BodyFraming::Empty => "empty".to_string(),
            BodyFraming::Length(n) => format!("length {n}"),
            BodyFraming::Chunked(_) => "chunked".into(),
            BodyFraming::UntilClose => "close".into(),
            BodyFraming::Upgraded => "upgrade".into(),
        };
        Ok((kind, f.keep_alive))
    }

    #[test]
    fn cached_names_follow_what_the_upstream_sends() {
        let mut names = NameCache::default();
        let mut parse = |head: &[u8]| {
            let mut buf = BytesMut::from(head);
            let response = parse_head(&mut buf, &Method::GET, &mut names).unwrap().expect("a whole head");
            response.headers().iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect::<Vec<_>>()
        };
        let first = parse(b"HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-One: 1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(first, ["content-type=a", "x-one=1", "content-length=0"]);
        let again = parse(b"HTTP/1.1 200 OK\r\nContent-Type: b\r\nX-One: 2\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(again, ["content-type=b", "x-one=2", "content-length=0"]);
        let other = parse(b"HTTP/1.1 200 OK\r\nCONTENT-TYPE: c\r\nX-Two: 3\r\nServer: s\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(other, ["content-type=c", "x-two=3", "server=s", "content-length=0"], "a changed name is parsed");
        assert!(parse_head(
            &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Two\x01: 3\r\n\r\n"[..]),
            &Method::GET,
            &mut names
        )
        .is_err());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = || Method::GET;
        assert_eq!(framing_of(get(), 200, &[("content-length", "5")]).unwrap(), ("length 5".into(), true));
        assert_eq!(framing_of(get(), 200, &[("content-length", "5, 5")]).unwrap(), ("length 5".into(), true));
        assert!(framing_of(get(), 200, &[("content-length", "5"), ("content-length", "6")]).is_err());
        assert!(framing_of(get(), 200, &[("content-length", "+5")]).is_err());
        assert_eq!(
            framing_of(get(), 200, &[("content-length", "5"), ("transfer-encoding", "chunked")]).unwrap(),
            ("chunked".into(), false),
            "TE wins over CL, and the connection is not reused"
        );
        assert_eq!(framing_of(get(), 200, &[("transfer-encoding", "gzip")]).unwrap(), ("close".into(), false));
        assert_eq!(framing_of(get(), 200, &[]).unwrap(), ("close".into(), false));
        assert_eq!(framing_of(Method::HEAD, 200, &[("content-length", "5")]).unwrap(), ("empty".into(), true));
        assert_eq!(framing_of(get(), 204, &[]).unwrap(), ("empty".into(), true));
        assert_eq!(framing_of(get(), 304, &[("content-length", "5")]).unwrap(), ("empty".into(), true));
        assert_eq!(framing_of(get(), 101, &[]).unwrap().0, "upgrade");
        assert_eq!(
            framing_of(get(), 200, &[("content-length", "1"), ("connection", "Close")]).unwrap(),
            ("length 1".into(), false)
        );
    }
}
