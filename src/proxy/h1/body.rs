//! The upstream's response body, read straight off the connection as
//! the client's server side polls it: by length, chunked, or until close.

use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;

use super::head::{BodyFraming, Framing};
use super::{Connection, Error, Upload, MAX_HEAD};

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Chunked {
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
    /// The upstream stopped taking the upload (it answered without reading
    /// the body, then closed): the upload is kept only so that `finish`
    /// reads the rest of the client's body and drops it.
    upload_refused: bool,
}

impl ResponseReader {
    pub(super) fn new(conn: Connection, framing: Framing, upload: Option<Box<dyn Upload>>) -> Self {
        ResponseReader { conn, framing: framing.body, keep_alive: framing.keep_alive, upload, upload_refused: false }
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
        if let Some(upload) = self.upload.as_mut().filter(|_| !self.upload_refused) {
            match upload.poll_upload(&mut self.conn.stream, cx) {
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(e @ Error::ClientBody(_))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Err(_)) => {
                    // Not dropped: the client's next request comes after
                    // the rest of this body, which `finish` reads.
                    self.upload_refused = true;
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
}
