//! Writing a response to an HTTP/1 client: the head and the first pieces
//! of body in one buffer and one write, the framing chosen as RFC 9112 §6.3
//! has the client read it.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::proxy::body::ResponseBody;
use crate::proxy::h1::field;

/// A body piece larger than this is written as it is rather than copied
/// into the connection's buffer.
const COPY_LIMIT: usize = 16 * 1024;

/// What the request said that decides how its response is written.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub head_request: bool,
    pub version: Version,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Write `response`; returns whether the connection may be kept alive.
/// An error (the client went away, or the body failed mid-way) leaves the
/// response cut short: the connection must close.
pub async fn write<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    response: Response<ResponseBody>,
    exchange: Exchange,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body =
        exchange.head_request || status.is_informational() || status == StatusCode::NO_CONTENT || status == 304;
    out.clear();
    status_line(out, status);
    // One pass: the fields written, and what the framing needs of them.
    let (mut date, mut declared, mut connection, mut close) = (false, None, false, false);
    for (name, value) in &parts.headers {
        field(out, name.as_str(), value.as_bytes());
        if name == header::DATE {
            date = true;
        } else if name == header::CONTENT_LENGTH {
            declared = std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.parse::<u64>().ok());
        } else if name == header::CONNECTION {
            connection = true;
            close |= value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    if !date {
        DATE.with(|date| field(out, "date", date.borrow_mut().now()));
    }
    let mut keep_alive = exchange.keep_alive && !close;
    let framing = if no_body {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        field(out, "content-length", itoa::Buffer::new().format(n).as_bytes());
        Framing::Length(n)
    } else if exchange.version == Version::HTTP_11 {
        field(out, "transfer-encoding", b"chunked");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    if !keep_alive && !connection && status != StatusCode::SWITCHING_PROTOCOLS {
        field(out, "connection", b"close");
    } else if keep_alive && exchange.version == Version::HTTP_10 {
        field(out, "connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    if framing == Framing::None {
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }
    let mut sent = 0u64;
    loop {
        // Take the next piece if it is already there; flush what is
        // buffered before waiting for one.
        let frame = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match frame {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                io.write_all(out).await?;
                io.flush().await?;
                out.clear();
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data: Bytes = match frame {
            None => break,
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers: not forwarded
            },
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Framing::Length(n) = framing {
            if sent > n {
                return Err(io::Error::other("response body longer than its Content-Length"));
            }
        }
        if framing == Framing::Chunked {
            let mut hex = [0u8; 16];
            out.extend_from_slice(hex_len(&mut hex, data.len()));
            out.extend_from_slice(b"\r\n");
        }
        if data.len() > COPY_LIMIT {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    match framing {
        Framing::Length(n) if sent < n => {
            io.write_all(out).await?;
            return Err(io::Error::other("response body shorter than its Content-Length"));
        }
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    io.write_all(out).await?;
    io.flush().await?;
    Ok(keep_alive)
}

/// A response grayshift writes on its own when a request head is refused
/// (no body to stream, and the connection closes after it).
pub async fn write_refusal<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    response: Response<ResponseBody>,
) -> io::Result<()> {
    let exchange = Exchange { head_request: false, version: Version::HTTP_11, keep_alive: false };
    write(io, out, response, exchange).await.map(drop)
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn hex_len(buf: &mut [u8; 16], mut n: usize) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: 0, text: [0; 29] }) };
}

/// The `Date` field's value, formatted once a second per worker thread.
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn written(response: Response<ResponseBody>, exchange: Exchange) -> (String, bool) {
        let mut wire = Vec::new();
        let keep = write(&mut wire, &mut Vec::new(), response, exchange).await.unwrap();
        let text = String::from_utf8(wire).unwrap();
        let without_date: Vec<_> = text.split("\r\n").filter(|l| !l.starts_with("date: ")).collect();
        (without_date.join("\r\n"), keep)
    }

    const GET11: Exchange = Exchange { head_request: false, version: Version::HTTP_11, keep_alive: true };

    #[tokio::test]
    async fn framing_of_what_grayshift_writes() {
        let (text, keep) = written(Response::new(ResponseBody::text("hi")), GET11).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
        assert!(keep);
        let (text, _) = written(Response::new(ResponseBody::empty()), GET11).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let head = Exchange { head_request: true, ..GET11 };
        let mut response = Response::new(ResponseBody::empty());
        response.headers_mut().insert(header::CONTENT_LENGTH, 5.into());
        assert_eq!(written(response, head).await.0, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        let old = Exchange { version: Version::HTTP_10, ..GET11 };
        let (text, keep) = written(Response::new(ResponseBody::text("hi")), old).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nhi");
        assert!(keep);
        let mut response = Response::new(ResponseBody::text("no"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        let (text, keep) = written(response, GET11).await;
        assert_eq!(text, "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno");
        assert!(!keep);
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut buf = [0; 16];
        assert_eq!(hex_len(&mut buf, 0), b"0");
        assert_eq!(hex_len(&mut buf, 255), b"ff");
        assert_eq!(hex_len(&mut buf, 0x10000), b"10000");
    }
}
