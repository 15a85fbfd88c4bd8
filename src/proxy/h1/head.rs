//! The upstream's response head: parsed off the connection's buffer, its
//! framing decided from the fields (RFC 9112 §6.3), the connection's own
//! fields left out, the header names reused from the last response.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::body::Chunked;
use super::{Error, MAX_HEADERS};
use crate::proxy::hop_by_hop::{connection_listed, is_hop_by_hop};

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
        // SAFETY: httparse accepted the value: no CR, LF, NUL or other
        // control byte but HTAB, which is what `HeaderValue` refuses.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(vs as usize..ve as usize)) };
        fields.see(&name, &value);
        if !is_hop_by_hop(&name) {
            headers.append(name, value);
        }
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

    pub fn name(&mut self, place: usize, bytes: &[u8]) -> Result<HeaderName, Error> {
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

/// How a response's body is delimited, and whether the connection may be
/// reused after it.
pub struct Framing {
    pub(super) body: BodyFraming,
    pub(super) keep_alive: bool,
}

pub(super) enum BodyFraming {
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
    /// Note what one field says for the framing. Every Content-Length line
    /// and list element must be the same number.
    fn see(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == header::CONNECTION {
            self.close |= value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            if connection_listed(value).next().is_some() {
                self.connection_lists.push(value.clone());
            }
        } else if name == header::UPGRADE {
            self.upgrade.get_or_insert_with(|| value.clone());
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

/// One `name: value` line of an HTTP/1 head, as both legs write them.
pub fn field(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

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
