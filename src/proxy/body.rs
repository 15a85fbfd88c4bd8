//! Body types on both legs. Bodies stream frame by frame; nothing is
//! buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::time::Sleep;

use crate::metrics::{ClientErrorKind, ClientErrors};
use crate::proxy::h1::{self, ResponseReader};
use crate::proxy::upstream::Endpoint;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body as the server side hands it over: read off an
/// HTTP/1 connection by grayshift's own server, or an HTTP/2 stream's.
pub enum ClientBody {
    Empty,
    Http1(crate::proxy::h1_server::Body),
    Http2(Incoming),
    /// A body of which a shadow read keeps a copy as it goes up
    /// (docs/src/shadow.md): only for a mirrored request.
    Teed(Box<(ClientBody, crate::shadow::mirror::BodyTap)>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Teed(teed) => {
                let (body, tap) = &mut **teed;
                let polled = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            tap.data(data);
                        }
                        if body.is_end_stream() {
                            tap.finish();
                        }
                    }
                    None => tap.finish(),
                    Some(Err(_)) => tap.abort(),
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
            ClientBody::Teed(teed) => teed.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
            ClientBody::Teed(teed) => teed.0.size_hint(),
        }
    }
}

/// The client's request body on its way upstream, with the optional
/// `server.max_body_bytes` limit and the `server.body_read_timeout` (the
/// longest wait for the next piece of body, so a steady slow upload never
/// trips it) enforced while it streams. A failure is the client's: it is
/// counted once, here, in `grayshift_client_errors_total`, whether it
/// happens before the answer's head or while the answer streams.
pub struct RequestBody {
    inner: ClientBody,
    remaining: Option<u64>,
    read_timeout: Duration,
    errors: &'static ClientErrors,
    /// Failures are counted: not once the answer has ended and the rest is
    /// only read to be dropped ([`h1::DiscardableBody`]).
    counted: bool,
    /// Armed only while the client keeps us waiting, so a body that is
    /// already there costs no timer.
    waiting: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than server.max_body_bytes")]
pub struct BodyTooLarge;

#[derive(Debug, thiserror::Error)]
#[error("no request body data within server.body_read_timeout")]
pub struct BodyTimeout;

impl RequestBody {
    pub fn new(inner: ClientBody, limit: Option<u64>, read_timeout: Duration, errors: &'static ClientErrors) -> Self {
        RequestBody { inner, remaining: limit, read_timeout, errors, counted: true, waiting: None }
    }

    fn fail(&self, kind: ClientErrorKind, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.counted {
            self.errors.count(kind);
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl h1::DiscardableBody for RequestBody {
    fn discarding(&mut self) {
        self.counted = false;
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.waiting = None;
                frame
            }
            Poll::Pending => {
                let timeout = self.read_timeout;
                let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(waiting.as_mut().poll(cx));
                return self.fail(ClientErrorKind::BodyTimeout, Box::new(BodyTimeout));
            }
        };
        let frame = match frame {
            Some(Err(e)) => return self.fail(ClientErrorKind::BodyAborted, e),
            frame => frame,
        };
        if let (Some(Ok(f)), Some(remaining)) = (&frame, self.remaining.as_mut()) {
            let len = f.data_ref().map_or(0, |d| d.len() as u64);
            if len > *remaining {
                return self.fail(ClientErrorKind::BodyTooLarge, Box::new(BodyTooLarge));
            }
            *remaining -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What grayshift sends back to the client: the upstream's body, streamed,
/// or a short text of its own (errors, shed answers, admin JSON).
pub enum ResponseBody {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
    /// An upstream body of which shadow reads keep a copy as it streams
    /// (docs/src/shadow.md): only for a mirrored request.
    Teed(Box<(UpstreamBody, Box<crate::shadow::mirror::Tap>)>),
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(text.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }
}

/// How long the rest of a request body may take, after its answer has
/// ended, to go up (or be read and dropped).
const FINISH_UPLOAD_LIMIT: Duration = Duration::from_secs(60);

/// An upstream response body that hands its connection back to the pool
/// once read to the end. A body that fails mid-stream is counted as a
/// `reset` upstream error (unless the failure was the client's request
/// body, still going up: [`RequestBody`] counted that) and the error is
/// passed on, so the server side aborts the client response instead of
/// ending it cleanly. Either way the upstream connection is closed.
pub struct UpstreamBody {
    /// `None` once the body has ended (and the connection went back).
    reader: Option<ResponseReader>,
    endpoint: Arc<Endpoint>,
    resets: IntCounter,
}

impl UpstreamBody {
    pub fn new(reader: ResponseReader, endpoint: Arc<Endpoint>, resets: IntCounter) -> Self {
        let mut body = UpstreamBody { reader: Some(reader), endpoint, resets };
        if body.reader.as_ref().is_some_and(ResponseReader::is_end_stream) {
            body.release();
        }
        body
    }

    fn size_hint(&self) -> SizeHint {
        match self.reader.as_ref().map_or(Some(0), ResponseReader::exact_len) {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }

    /// The body has ended (its connection went back), or had none.
    pub fn is_done(&self) -> bool {
        self.reader.is_none()
    }

    #[inline]
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(reader) = self.reader.as_mut() else { return Poll::Ready(None) };
        match ready!(reader.poll_data(cx)) {
            Some(Ok(data)) => {
                if reader.is_end_stream() {
                    self.release();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => {
                self.release();
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                if !matches!(e, h1::Error::ClientBody(_)) {
                    self.resets.inc();
                }
                self.reader = None; // the connection is closed, not reused
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn release(&mut self) {
        let Some(reader) = self.reader.take() else { return };
        if reader.is_uploading() {
            // The client's body must still be read (sent on, or dropped):
            // the client's next request comes after it.
            let endpoint = self.endpoint.clone();
            tokio::spawn(async move {
                if let Some(conn) = reader.finish(FINISH_UPLOAD_LIMIT).await {
                    endpoint.release(conn);
                }
            });
        } else if let Some(conn) = reader.into_reusable() {
            self.endpoint.release(conn);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Upstream(up) => up.poll_frame(cx),
            ResponseBody::Teed(teed) => {
                let (up, tap) = &mut **teed;
                let polled = ready!(up.poll_frame(cx));
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            tap.data(data);
                        }
                        if up.is_done() {
                            tap.finish();
                        }
                    }
                    None => tap.finish(),
                    Some(Err(_)) => tap.abort(),
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(data) => data.is_none(),
            ResponseBody::Upstream(up) => up.reader.as_ref().is_none_or(ResponseReader::is_end_stream),
            ResponseBody::Teed(teed) => teed.0.reader.as_ref().is_none_or(ResponseReader::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ResponseBody::Upstream(up) => up.size_hint(),
            ResponseBody::Teed(teed) => teed.0.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request body reaches the client-error counters through a plain
    /// `&'static`: nothing shared is incremented per request (with an
    /// `Arc` here, every body was an atomic add and sub on one cache line).
    #[test]
    fn a_request_body_reaches_the_client_errors_without_a_reference_count() {
        let metrics = crate::metrics::Metrics::new();
        let errors: &'static ClientErrors = metrics.client_errors;
        let body = RequestBody::new(ClientBody::Empty, None, Duration::from_secs(1), errors);
        assert!(std::ptr::eq(body.errors, errors));
    }
}
