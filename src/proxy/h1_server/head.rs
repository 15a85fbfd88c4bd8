//! A client's request head: parsed once, with httparse, off the front of
//! the connection's buffer, and its body framing decided there by the rules
//! of README's smuggling table (RFC 9112 §6): a request whose framing two
//! servers could read differently is refused before anything else sees it.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::proxy::framing::{self, FramingError};
use crate::proxy::h1::NameCache;

/// Header lines parsed into slots on the stack; a `server.max_headers`
/// above this takes a heap array per head.
const STACK_HEADERS: usize = 128;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head and what the connection needs to know of it.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version and header fields (all of them: dropping
    /// hop-by-hop fields is the forwarding step's job).
    pub request: Request<()>,
    pub body: BodyFraming,
    /// The client allows another request on this connection after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expect_continue: bool,
    /// A protocol upgrade grayshift would tunnel (WebSocket).
    pub upgrade: bool,
}

/// Why a head was refused; each is answered and the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than server.max_header_bytes")]
    TooLarge,
    #[error("more header lines than server.max_headers")]
    TooManyHeaders,
    #[error("malformed request head ({0})")]
    Malformed(&'static str),
    #[error(transparent)]
    Framing(#[from] FramingError),
}

impl HeadError {
    pub fn status(self) -> http::StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::Malformed(_) => http::StatusCode::BAD_REQUEST,
            HeadError::Framing(e) => e.status(),
        }
    }
}

/// The limits a head is parsed under (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// Parse a complete request head off the front of `buf` (leading empty
/// lines included, as RFC 9112 §2.2 allows). `Ok(None)`: more bytes are
/// needed. The head's bytes leave the buffer; the header values are
/// slices of them, not copies.
pub fn parse(buf: &mut BytesMut, limits: HeadLimits, names: &mut NameCache) -> Result<Option<Head>, HeadError> {
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, slots) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(parse_error(e))),
    };
    let method =
        Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| HeadError::Malformed("method"))?;
    let version = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    // Where the target and each field sit in the head, so that they can be
    // slices of it once it is split off the buffer.
    let base = buf.as_ptr() as usize;
    let offset = |s: &str| s.as_ptr() as usize - base;
    let path = parsed.path.unwrap_or_default();
    let target = (offset(path), offset(path) + path.len());
    let count = parsed.headers.len();
    let mut spans = [const { MaybeUninit::<[u32; 4]>::uninit() }; STACK_HEADERS];
    let mut heap_spans = Vec::new();
    let spans = if count <= STACK_HEADERS {
        &mut spans[..count]
    } else {
        heap_spans.resize_with(count, MaybeUninit::uninit);
        &mut heap_spans[..]
    };
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        span.write([name as u32, (name + h.name.len()) as u32, value as u32, (value + h.value.len()) as u32]);
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1)).map_err(|_| HeadError::Malformed("target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    let mut fields = Fields::default();
    for (i, span) in spans.iter().enumerate() {
        // SAFETY: the loop above wrote every span.
        let [ns, ne, vs, ve] = unsafe { span.assume_init() };
        let name = names.name(i, &head[ns as usize..ne as usize]).map_err(|_| HeadError::Malformed("field name"))?;
        // SAFETY: httparse accepted the value: no CR, LF, NUL or other
        // control byte but HTAB, which is what `HeaderValue` refuses.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(vs as usize..ve as usize)) };
        fields.see(&name, &value);
        headers.append(name, value);
    }
    let body = body_framing(version, &fields, &headers)?;
    let keep_alive = match version {
        Version::HTTP_11 => !fields.close,
        _ => fields.keep_alive && !fields.close,
    };
    let expect_continue = fields.expect_continue && version == Version::HTTP_11 && body != BodyFraming::Empty;
    let upgrade = fields.upgrade && crate::proxy::hop_by_hop::is_upgrade(&headers);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head { request, body, keep_alive, expect_continue, upgrade }))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "field name",
        httparse::Error::HeaderValue => "field value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status | httparse::Error::Token => "request line",
        httparse::Error::Version => "version",
        httparse::Error::TooManyHeaders => "too many fields",
    }
}

/// What the framing and connection rules read from the fields, noted as
/// the head is parsed rather than looked up in the map afterwards.
#[derive(Default)]
struct Fields {
    content_length: bool,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

impl Fields {
    fn see(&mut self, name: &header::HeaderName, value: &HeaderValue) {
        if name == header::CONTENT_LENGTH {
            self.content_length = true;
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            self.expect_continue |= value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::UPGRADE {
            self.upgrade = true;
        }
    }
}

/// RFC 9112 §6.1–6.3 for a request, strictly: Transfer-Encoding only in
/// HTTP/1.1 and only as a single, final `chunked`; never together with a
/// Content-Length; Content-Length values all the same digits.
fn body_framing(version: Version, fields: &Fields, headers: &HeaderMap) -> Result<BodyFraming, FramingError> {
    if fields.transfer_encoding {
        if version != Version::HTTP_11 {
            return Err(FramingError::BadTransferEncoding);
        }
        if fields.content_length {
            return Err(FramingError::LengthAndChunked);
        }
        framing::check_transfer_encoding(headers)?;
        return Ok(BodyFraming::Chunked);
    }
    if fields.content_length {
        return Ok(match framing::content_length(headers)? {
            Some(0) | None => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        });
    }
    Ok(BodyFraming::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_bytes: 1024, max_headers: 8 };

    fn parse_all(bytes: &[u8]) -> Result<Option<Head>, HeadError> {
        parse(&mut BytesMut::from(bytes), LIMITS, &mut NameCache::default())
    }

    fn framing_of(bytes: &str) -> Result<BodyFraming, HeadError> {
        Ok(parse_all(bytes.as_bytes())?.expect("a whole head").body)
    }

    #[test]
    fn heads_parse_once_and_leave_the_rest() {
        let mut buf = BytesMut::from(&b"\r\nGET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nNEXT"[..]);
        let head = parse(&mut buf, LIMITS, &mut NameCache::default()).unwrap().unwrap();
        assert_eq!(&buf[..], b"NEXT");
        assert_eq!(head.request.uri(), "/a?b");
        assert_eq!(head.request.headers()["x-a"], "1");
        assert_eq!(head.body, BodyFraming::Empty);
        assert!(head.keep_alive);
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none(), "incomplete");
    }

    #[test]
    fn framing_follows_the_smuggling_rules() {
        use BodyFraming::*;
        use FramingError::*;
        let h = |fields: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        assert_eq!(framing_of(&h("Content-Length: 5\r\n")), Ok(Length(5)));
        assert_eq!(framing_of(&h("Content-Length: 5\r\nContent-Length: 5\r\n")), Ok(Length(5)));
        assert_eq!(framing_of(&h("Content-Length: 0\r\n")), Ok(Empty));
        assert_eq!(framing_of(&h("Transfer-Encoding: Chunked\r\n")), Ok(Chunked));
        let refused = |fields: &str| framing_of(&h(fields)).unwrap_err();
        assert_eq!(
            refused("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            HeadError::Framing(LengthAndChunked)
        );
        assert_eq!(
            refused("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            HeadError::Framing(LengthAndChunked)
        );
        assert_eq!(refused("Content-Length: 5, 6\r\n"), HeadError::Framing(BadContentLength));
        assert_eq!(refused("Content-Length: +5\r\n"), HeadError::Framing(BadContentLength));
        assert_eq!(refused("Transfer-Encoding: gzip, chunked\r\n"), HeadError::Framing(UnsupportedTransferCoding));
        assert_eq!(refused("Transfer-Encoding: chunked, gzip\r\n"), HeadError::Framing(BadTransferEncoding));
        assert_eq!(
            framing_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Framing(BadTransferEncoding))
        );
    }

    #[test]
    fn limits_and_malformed_heads_are_refused() {
        assert_eq!(parse_all(&[b'a'; 1024]).unwrap_err(), HeadError::TooLarge);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(9));
        assert_eq!(parse_all(many.as_bytes()).unwrap_err(), HeadError::TooManyHeaders);
        assert!(matches!(parse_all(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert!(matches!(parse_all(b"GET / HTTP/1.7\r\nHost: a\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert!(matches!(parse_all(b"GET / HTTP/1.1\r\nHost: a\r\n x\r\n\r\n"), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn connection_fields_decide_keep_alive_continue_and_upgrade() {
        let head = |s: &str| parse_all(s.as_bytes()).unwrap().unwrap();
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
        assert!(!head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue, "no body to wait for");
        assert!(head("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(!head("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n").upgrade);
    }
}
