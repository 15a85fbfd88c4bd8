//! grayshift's request checks on requests built from fuzz bytes: never
//! panic, and whatever they accept is unambiguous. `framing::check` (the
//! request path's check): one Host on HTTP/1.1, no CONNECT, the target
//! within the limit. The body framing is decided by the HTTP/1 parser as
//! it parses a head (`h1_server::parse`, since grayshift's own server
//! replaced hyper's), so for heads that go through httparse the parser is
//! run too: a head it accepts never has both a Transfer-Encoding and a
//! Content-Length, has TE only as a lone `chunked` (HTTP/1.1), all
//! Content-Length values the same plain number, and the `BodyFraming` it
//! returns is the one those fields say.
//!
//! The first byte picks how the rest becomes a request: through httparse
//! (what grayshift's parser lets through) or split leniently on `\n` and
//! `:` (header sets httparse would refuse, to reach every branch of the
//! check).
#![no_main]

use http::header::{HeaderName, HeaderValue};
use http::{Request, Version};
use libfuzzer_sys::fuzz_target;

fn via_httparse(data: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(data).ok()?;
    let mut b = Request::builder().method(parsed.method?).uri(parsed.path?).version(if parsed.version? == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    });
    for h in parsed.headers.iter() {
        b = b.header(HeaderName::from_bytes(h.name.as_bytes()).ok()?, HeaderValue::from_bytes(h.value).ok()?);
    }
    b.body(()).ok()
}

fn lenient(mode: u8, data: &[u8]) -> Option<Request<()>> {
    let version = [Version::HTTP_09, Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][(mode >> 1) as usize % 4];
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next()?;
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(sp) => (&first[..sp], &first[sp + 1..]),
        None => (&b"GET"[..], first),
    };
    let mut b = Request::builder().method(method).uri(target).version(version);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&line[colon + 1..]))
        else {
            continue;
        };
        b = b.header(name, value);
    }
    b.body(()).ok()
}

/// A head `h1_server::parse` accepted: its framing fields are unambiguous
/// and its `BodyFraming` follows from them.
fn check_body_framing(head: &grayshift::proxy::h1_server::Head) {
    use grayshift::proxy::h1_server::BodyFraming;
    let h = head.request.headers();
    let te: Vec<_> = h.get_all("transfer-encoding").iter().collect();
    let cl: Vec<_> = h.get_all("content-length").iter().collect();
    assert!(te.is_empty() || cl.is_empty(), "Transfer-Encoding with Content-Length accepted");
    if let [only] = te.as_slice() {
        assert!(only.to_str().is_ok_and(|t| t.trim().eq_ignore_ascii_case("chunked")), "TE {only:?} accepted");
        assert_eq!(head.request.version(), Version::HTTP_11, "Transfer-Encoding in HTTP/1.0 accepted");
        assert_eq!(head.body, BodyFraming::Chunked);
        return;
    }
    assert!(te.is_empty(), "several Transfer-Encoding headers accepted");
    let mut lengths = cl.iter().flat_map(|v| v.to_str().unwrap().split(',').map(str::trim));
    let Some(first) = lengths.next() else {
        assert_eq!(head.body, BodyFraming::Empty);
        return;
    };
    assert!(!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()), "Content-Length {first:?}");
    let n: u64 = first.parse().unwrap();
    assert!(lengths.all(|l| l.parse::<u64>().ok() == Some(n) && l.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(head.body, if n == 0 { BodyFraming::Empty } else { BodyFraming::Length(n) });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let limits = grayshift::proxy::h1_server::HeadLimits { max_bytes: 64 * 1024, max_headers: 64 };
        let mut buf = bytes::BytesMut::from(rest);
        if let Ok(Some(head)) = grayshift::proxy::h1_server::parse(&mut buf, limits, &mut Default::default()) {
            check_body_framing(&head);
        }
    }
    let req = if mode & 1 == 0 { via_httparse(rest) } else { lenient(mode, rest) };
    let Some(req) = req else { return };
    let max_uri = 64 + (mode as usize >> 3) * 16;
    let Ok(()) = grayshift::proxy::framing::check(&req, max_uri) else { return };

    assert_ne!(req.method(), http::Method::CONNECT);
    assert!(req.uri().path_and_query().map_or(0, |p| p.as_str().len()) <= max_uri);
    if req.version() >= Version::HTTP_2 {
        return;
    }
    let h = req.headers();
    let hosts = h.get_all("host").iter().count();
    assert!(hosts <= 1, "duplicate Host accepted");
    if req.version() == Version::HTTP_11 {
        assert_eq!(hosts, 1, "HTTP/1.1 without Host accepted");
    }
});
