//! The client connection's read side, and a request body read straight off
//! it as the request path polls it: by Content-Length, or chunked.
//!
//! While a request has a body, the body owns the read side; it hands it
//! back to the connection when it reaches its end (or is dropped before
//! it), so the connection reads the next head only once the body's bytes
//! are out of the way.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{oneshot, Notify};

use super::head::BodyFraming;
use crate::proxy::body::BoxError;
use crate::proxy::path::hex;

/// A client stream's read half.
pub trait ReadIo: AsyncRead + Send + Unpin + 'static {
    /// Ready once the stream can be read without waiting, so an idle
    /// connection can wait without holding a buffer. A stream that cannot
    /// tell says ready at once (and is read into a buffer).
    fn poll_readable(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ReadIo for tokio::net::tcp::OwnedReadHalf {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl<T: AsyncRead + Send + 'static> ReadIo for tokio::io::ReadHalf<T> {}

/// The connection's read half and the bytes read off it but not used yet.
pub struct Reader {
    pub(super) io: Box<dyn ReadIo>,
    pub(super) buf: BytesMut,
}

impl Reader {
    pub(super) fn new(io: Box<dyn ReadIo>, buf: BytesMut) -> Self {
        Reader { io, buf }
    }

    /// Read what the stream has, with at least `room` bytes free for it;
    /// `Ok(0)` at the end of the stream. An empty buffer that would have
    /// to wait is given back to the allocator if it grew past a head's
    /// size (a body, a long head): an idle connection keeps 1 KiB at most.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            ready!(self.io.poll_readable(cx))?;
        }
        if self.buf.capacity() - self.buf.len() < room {
            self.buf.reserve(room);
        }
        let spare = self.buf.spare_capacity_mut();
        let mut read = ReadBuf::uninit(spare);
        match Pin::new(&mut *self.io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                // SAFETY: `poll_read` initialised the first `n` spare bytes.
                unsafe { self.buf.set_len(self.buf.len() + n) };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.buf.is_empty() && self.buf.capacity() > IDLE_BUFFER {
                    self.buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
    }
}

/// What a body gives back to its connection.
pub struct Returned {
    pub reader: Reader,
    /// The body was read to its end: the next bytes are the next request.
    pub finished: bool,
    /// Set when the body was dropped before its end while still readable
    /// (the handler answered without reading it all): where its decoder
    /// stood, so the connection can read the rest and drop it.
    pub unread: Option<Unread>,
}

/// A request body's decoder, left part way through.
pub struct Unread {
    decode: Decode,
    meta: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("client closed the connection in the middle of the request body")]
    Closed,
    #[error("malformed chunked request body: {0}")]
    Chunked(&'static str),
    #[error("client connection: {0}")]
    Io(#[from] io::Error),
}

/// How much of chunk extensions and trailers one body may carry (they are
/// read and dropped; hyper's limit too).
const CHUNK_META_LIMIT: usize = 16 * 1024;
/// The most buffer an idle connection keeps.
const IDLE_BUFFER: usize = 1024;
/// The room a body read asks for.
const BODY_READ: usize = 16 * 1024;

/// A request body on an HTTP/1 connection.
pub struct Body {
    reader: Option<Reader>,
    decode: Decode,
    /// Chunk extension and trailer bytes still allowed.
    meta: usize,
    back: Option<oneshot::Sender<Returned>>,
    /// Set for `Expect: 100-continue`: tells the connection, at the first
    /// poll, to send `100 Continue` (the client waits for it).
    continue_wanted: Option<Arc<Notify>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decode {
    Length(u64),
    Chunked(Chunk),
    Done,
    Failed,
}

/// Where a chunked body's decoder stands (RFC 9112 §7.1, CRLF strictly).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace after the size.
    SizeWs {
        size: u64,
    },
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the empty line that ends them.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

impl Body {
    pub(super) fn new(
        reader: Reader,
        framing: BodyFraming,
        continue_wanted: Option<Arc<Notify>>,
    ) -> (Self, oneshot::Receiver<Returned>) {
        let decode = match framing {
            BodyFraming::Empty => Decode::Done,
            BodyFraming::Length(n) => Decode::Length(n),
            BodyFraming::Chunked => Decode::Chunked(Chunk::Size { digits: 0, size: 0 }),
        };
        let (back, returned) = oneshot::channel();
        (Body { reader: Some(reader), decode, meta: CHUNK_META_LIMIT, back: Some(back), continue_wanted }, returned)
    }

    fn give_back(&mut self) {
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            // A client still waiting for `100 Continue` may never send the
            // body, so that one is not worth reading to its end.
            let readable =
                matches!(self.decode, Decode::Length(_) | Decode::Chunked(_)) && self.continue_wanted.is_none();
            let unread = readable.then_some(Unread { decode: self.decode, meta: self.meta });
            let _ = back.send(Returned { reader, finished: self.decode == Decode::Done, unread });
        }
    }

    /// Read what is left of a body the handler dropped and throw it away,
    /// at most `limit` bytes, each piece within `idle`: the reader comes
    /// back at the next request, or `None` when the body was longer,
    /// slower, malformed or cut off.
    pub(super) async fn discard(reader: Reader, unread: Unread, limit: u64, idle: Duration) -> Option<Reader> {
        use http_body_util::BodyExt as _;
        let (back, returned) = oneshot::channel();
        let mut body = Body {
            reader: Some(reader),
            decode: unread.decode,
            meta: unread.meta,
            back: Some(back),
            continue_wanted: None,
        };
        let mut read = 0u64;
        while let Some(frame) = tokio::time::timeout(idle, body.frame()).await.ok()? {
            read += frame.ok()?.data_ref().map_or(0, |d| d.len() as u64);
            if read > limit {
                return None;
            }
        }
        drop(body);
        match returned.await {
            Ok(Returned { reader, finished: true, .. }) => Some(reader),
            _ => None,
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.decode = Decode::Failed;
        self.give_back();
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(wanted) = this.continue_wanted.take() {
            wanted.notify_one();
        }
        loop {
            let Some(reader) = this.reader.as_mut() else { return Poll::Ready(None) };
            let data = match &mut this.decode {
                Decode::Done | Decode::Failed => return Poll::Ready(None),
                Decode::Length(_) if reader.buf.is_empty() => None,
                Decode::Length(left) => {
                    let n = (*left).min(reader.buf.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        this.decode = Decode::Done;
                    }
                    Some(reader.buf.split_to(n as usize).freeze())
                }
                Decode::Chunked(chunk) => match decode_chunked(chunk, &mut this.meta, &mut reader.buf) {
                    Ok(Step::Data(data)) => Some(data),
                    Ok(Step::More) => None,
                    Ok(Step::End) => {
                        this.decode = Decode::Done;
                        None
                    }
                    Err(e) => return this.fail(BodyError::Chunked(e)),
                },
            };
            let done = this.decode == Decode::Done;
            if done {
                this.give_back();
            }
            match data {
                Some(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                None if done => return Poll::Ready(None),
                None => {}
            }
            let reader = this.reader.as_mut().expect("still reading");
            match ready!(reader.poll_fill(cx, BODY_READ)) {
                Ok(0) => return this.fail(BodyError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(BodyError::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done | Decode::Failed)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

enum Step {
    Data(Bytes),
    More,
    End,
}

/// Step a chunked body's decoder over the bytes in `buf`, taking off what
/// it used: the next piece of chunk data, or the end. `meta` counts the
/// extension and trailer bytes still allowed.
fn decode_chunked(chunk: &mut Chunk, meta: &mut usize, buf: &mut BytesMut) -> Result<Step, &'static str> {
    if let Chunk::Data(left) = *chunk {
        if buf.is_empty() {
            return Ok(Step::More);
        }
        let n = left.min(buf.len() as u64);
        *chunk = if n == left { Chunk::DataCr } else { Chunk::Data(left - n) };
        return Ok(Step::Data(buf.split_to(n as usize).freeze()));
    }
    let mut used = 0;
    let step = loop {
        let Some(&b) = buf.get(used) else { break Step::More };
        used += 1;
        *chunk = match *chunk {
            Chunk::Size { digits, size } => match (hex(b), b) {
                (Some(_), _) if digits == 16 => return Err("chunk size too large"),
                (Some(digit), _) => Chunk::Size { digits: digits + 1, size: size << 4 | u64::from(digit) },
                _ if digits == 0 => return Err("chunk size is not a hex number"),
                (_, b'\r') => Chunk::SizeLf { size },
                (_, b' ' | b'\t') => Chunk::SizeWs { size },
                (_, b';') => Chunk::Extension { size },
                _ => return Err("chunk size is not a hex number"),
            },
            Chunk::SizeWs { size } => match b {
                b' ' | b'\t' => Chunk::SizeWs { size },
                b';' => Chunk::Extension { size },
                b'\r' => Chunk::SizeLf { size },
                _ => return Err("bad chunk size line"),
            },
            Chunk::Extension { size } => match b {
                b'\r' => Chunk::SizeLf { size },
                b'\t' | b' '..=b'~' | 0x80.. => {
                    *meta = meta.checked_sub(1).ok_or("chunk extensions too long")?;
                    Chunk::Extension { size }
                }
                _ => return Err("bad chunk extension"),
            },
            Chunk::SizeLf { size } => match b {
                b'\n' if size == 0 => Chunk::TrailerStart,
                b'\n' => {
                    *chunk = Chunk::Data(size);
                    buf.advance(used);
                    return decode_chunked(chunk, meta, buf);
                }
                _ => return Err("chunk size line not ended by CRLF"),
            },
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataLf if b == b'\n' => Chunk::Size { digits: 0, size: 0 },
            Chunk::DataCr | Chunk::DataLf => return Err("chunk data not followed by CRLF"),
            Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
            Chunk::TrailerStart | Chunk::Trailer => match b {
                b'\r' => Chunk::TrailerLf,
                b'\n' => return Err("trailer line not ended by CRLF"),
                _ => {
                    *meta = meta.checked_sub(1).ok_or("trailers too long")?;
                    Chunk::Trailer
                }
            },
            Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
            Chunk::EndLf if b == b'\n' => break Step::End,
            Chunk::TrailerLf | Chunk::EndLf => return Err("trailer line not ended by CRLF"),
            Chunk::Data(_) => unreachable!("handled above"),
        };
    };
    buf.advance(used);
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in two reads split at `at`.
    fn decode_all(input: &[u8], at: usize) -> Result<(Vec<u8>, bool, Vec<u8>), &'static str> {
        let (mut chunk, mut meta) = (Chunk::Size { digits: 0, size: 0 }, CHUNK_META_LIMIT);
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        for (i, part) in [&input[..at], &input[at..]].into_iter().enumerate() {
            buf.extend_from_slice(part);
            loop {
                match decode_chunked(&mut chunk, &mut meta, &mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::More => break,
                    Step::End if i == 0 => return Ok((out, true, [&buf[..], &input[at..]].concat())),
                    Step::End => return Ok((out, true, buf.to_vec())),
                }
            }
        }
        Ok((out, false, buf.to_vec()))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let body = b"5\r\nhello\r\n6;a=b\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for at in 0..=body.len() {
            let (data, ended, rest) = decode_all(body, at).unwrap();
            assert_eq!(data, b"hello world", "split at {at}");
            assert!(ended, "split at {at}");
            assert_eq!(rest, b"NEXT", "the next request stays in the buffer (split at {at})");
        }
        assert_eq!(decode_all(b"A \r\n0123456789\r\n0\r\n\r\n", 0).unwrap().0, b"0123456789");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\nhello\r\n",
            b"5\r\nhelloXX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nX-T: 1\n\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"\r\n",
        ] {
            assert!(decode_all(bad, bad.len()).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
