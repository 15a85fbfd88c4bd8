//! The header rewrites, both legs: what the upstream's request head carries
//! ([`upstream_head`]: hop-by-hop fields and the names `Connection` lists
//! left out, underscore variants of our names dropped, `Host`, `Cookie`,
//! X-Forwarded-*, X-Gray-*) and what the client's answer gets
//! ([`rewrite_response`]: X-Gray-Pool). A new header rewrite goes here
//! (docs/src/architecture.md, "Where to add a header rewrite"); which names
//! are hop-by-hop and which underscore variants are ours live in
//! `hop_by_hop.rs` and `underscore.rs`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, Uri};

use crate::config::{PoolName, UnderscoreHeaders};
use crate::proxy::h1::field;
use crate::proxy::hop_by_hop::{connection_listed, is_hop_by_hop};
use crate::proxy::underscore::{has_underscore, is_ours};

pub static X_GRAY_POOL: HeaderName = HeaderName::from_static("x-gray-pool");
pub static X_GRAY_BUCKET: HeaderName = HeaderName::from_static("x-gray-bucket");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Marks a shadow read's request (docs/src/shadow.md): added by
/// [`mark_shadow`] to shadows only, so a client's own is always dropped.
pub static X_GRAYSHIFT_SHADOW: HeaderName = HeaderName::from_static("x-grayshift-shadow");
pub fn pool_header(pool: PoolName) -> HeaderValue {
    match pool {
        PoolName::Stable => HeaderValue::from_static("stable"),
        PoolName::New => HeaderValue::from_static("new"),
    }
}

/// `"0"`…`"99"` as static header values: the request path never formats a
/// number, and a static value is cloned without touching a reference count.
fn bucket_header(bucket: u8) -> HeaderValue {
    const DIGITS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839\
                          40414243444546474849505152535455565758596061626364656667686970717273747576777879\
                          8081828384858687888990919293949596979899";
    let i = 2 * (bucket.min(99) as usize);
    let text = if bucket < 10 { &DIGITS[i + 1..i + 2] } else { &DIGITS[i..i + 2] };
    HeaderValue::from_static(text)
}

/// What the request path learned about a request, for the upstream's eyes.
pub struct Forwarded<'a> {
    /// The peer's IP as text ([`crate::proxy::conn::ConnInfo::peer_text`]).
    pub peer: &'a HeaderValue,
    /// The peer is a trusted proxy: its X-Forwarded-Proto/Host stand.
    pub peer_trusted: bool,
    pub tls: bool,
    pub pool: PoolName,
    pub bucket: u8,
    /// An upgrade grayshift tunnels ([`crate::proxy::hop_by_hop::is_upgrade`]).
    pub upgrade: bool,
    /// The upstream endpoint's `host:port`: the Host of a request that
    /// names none (HTTP/1.0 without Host, HTTP/2 without `:authority`).
    pub endpoint: &'a str,
    /// Underscore header names other than variants of ours, which always go.
    pub underscores: UnderscoreHeaders,
}

/// The request head the upstream gets, written straight from the client's
/// request in one pass over its headers (editing the `HeaderMap` first and
/// encoding it after cost ~2,900 instructions per request more: a map
/// growth, five hashed inserts and the lookups around them).
///
/// What changes on the way (docs/src/architecture.md, Forwarding): origin-form target, HTTP/1.1;
/// `Host` from the request's authority when it has one (HTTP/2
/// `:authority`, an absolute-form target: RFC 9113 §8.3.1, RFC 9112
/// §3.2.2), else the client's `Host`, else the endpoint's `host:port`;
/// hop-by-hop headers and those `Connection` names dropped (an upgrade
/// keeps `Connection: upgrade` and its first `Upgrade`); several `Cookie`
/// fields joined into one with `"; "` (RFC 9113 §8.2.3); underscore
/// variants of the names below dropped (the other underscore names as
/// `underscores` says); X-Forwarded-For appended to, X-Forwarded-Proto/Host
/// set (a trusted peer's own kept), X-Gray-Pool and X-Gray-Bucket set. A
/// body without a Content-Length goes chunked; the returned flag says so.
pub fn upstream_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    fwd: &Forwarded,
    has_body: bool,
) -> (Vec<u8>, bool) {
    // Names that `Connection` lists: usually none (`keep-alive` and
    // `close` are hop-by-hop anyway), and then nothing is allocated.
    let listed: Vec<&str> = if headers.keys().any(|name| name == header::CONNECTION) {
        headers.get_all(header::CONNECTION).iter().flat_map(connection_listed).collect()
    } else {
        Vec::new()
    };
    // One allocation for a usual head; counting the exact size first cost
    // more than an occasional regrowth.
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");

    // Only HTTP/2 and absolute-form requests carry an authority; it wins
    // over a Host field and goes first, as a user agent would send it.
    let mut host = uri.authority().map(|a| without_userinfo(a.as_str())).filter(|a| !a.is_empty());
    let from_authority = host.is_some();
    if let Some(authority) = host {
        field(&mut head, header::HOST.as_str(), authority);
    }
    let (mut prior_xff, mut kept_proto, mut kept_host, mut has_length) = (false, false, false, false);
    let mut upgrade = None;
    let mut cookie = false;
    for (name, value) in headers {
        if is_hop_by_hop(name) {
            if fwd.upgrade && name == header::UPGRADE && upgrade.is_none() {
                upgrade = Some(value);
            }
            continue;
        }
        if !listed.is_empty() && listed.iter().any(|token| token.eq_ignore_ascii_case(name.as_str())) {
            continue;
        }
        if has_underscore(name) && (fwd.underscores != UnderscoreHeaders::Allow || is_ours(name)) {
            continue;
        }
        if name == header::HOST {
            if from_authority {
                continue;
            }
            host = host.or(Some(value.as_bytes()));
        } else if name == header::CONTENT_LENGTH {
            // One value, once: a list of equal values (`5, 5`, or the line
            // repeated) was accepted as one length, and an upstream may
            // refuse the list (hyper does).
            if !has_length {
                has_length = true;
                let first = value.as_bytes().split(|&b| b == b',').next().unwrap_or_default();
                field(&mut head, name.as_str(), first.trim_ascii());
            }
            continue;
        } else if name == header::COOKIE {
            // A map yields one name's values together: a second one
            // continues the line the first began.
            if cookie {
                head.truncate(head.len() - 2);
                head.extend_from_slice(b"; ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
                continue;
            }
            cookie = true;
        } else if name.as_str().as_bytes()[0] == b'x' {
            if name == X_FORWARDED_FOR {
                prior_xff = true;
                continue;
            } else if name == X_FORWARDED_PROTO && fwd.peer_trusted {
                kept_proto = true;
            } else if name == X_FORWARDED_HOST && fwd.peer_trusted {
                kept_host = true;
            } else if [&X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_GRAY_POOL, &X_GRAY_BUCKET, &X_GRAYSHIFT_SHADOW]
                .contains(&name)
            {
                continue; // ours replace them
            }
        }
        field(&mut head, name.as_str(), value.as_bytes());
    }
    // An HTTP/1.1 request always has a Host (RFC 9112 §3.2); the client
    // named none, so neither is there an X-Forwarded-Host to tell.
    if host.is_none() {
        field(&mut head, header::HOST.as_str(), fwd.endpoint.as_bytes());
    }

    // "a, b, peer": the entries that came, then the peer.
    head.extend_from_slice(b"x-forwarded-for: ");
    if prior_xff {
        for value in headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()) {
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b", ");
        }
    }
    head.extend_from_slice(fwd.peer.as_bytes());
    head.extend_from_slice(b"\r\n");
    if !kept_proto {
        field(&mut head, X_FORWARDED_PROTO.as_str(), if fwd.tls { b"https" } else { b"http" });
    }
    if let Some(host) = host.filter(|_| !kept_host) {
        field(&mut head, X_FORWARDED_HOST.as_str(), host);
    }
    field(&mut head, X_GRAY_POOL.as_str(), fwd.pool.as_str().as_bytes());
    field(&mut head, X_GRAY_BUCKET.as_str(), bucket_header(fwd.bucket).as_bytes());
    if let Some(upgrade) = upgrade {
        field(&mut head, header::CONNECTION.as_str(), b"upgrade");
        field(&mut head, header::UPGRADE.as_str(), upgrade.as_bytes());
    }
    let chunked = has_body && !has_length;
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    (head, chunked)
}

/// Mark a head written by [`upstream_head`] as a shadow read's: one more
/// field before the blank line that ends it (done here rather than in
/// `upstream_head` so the client's request pays no branch for it).
pub fn mark_shadow(head: &mut Vec<u8>) {
    debug_assert!(head.ends_with(b"\r\n\r\n"));
    head.truncate(head.len() - 2);
    field(head, X_GRAYSHIFT_SHADOW.as_str(), b"1");
    head.extend_from_slice(b"\r\n");
}

/// An authority as Host (RFC 9112 §3.2.2): `host[:port]`, without userinfo.
fn without_userinfo(authority: &str) -> &[u8] {
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).as_bytes()
}

/// Mark an upstream response for the client (its hop-by-hop fields were
/// left out as it was parsed).
pub fn rewrite_response<B>(resp: &mut Response<B>, pool: PoolName, expose_pool: bool) {
    if expose_pool {
        resp.headers_mut().insert(&X_GRAY_POOL, pool_header(pool));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    #[test]
    fn bucket_values_are_the_numbers() {
        for b in 0..100u8 {
            assert_eq!(bucket_header(b), b.to_string().as_str());
        }
    }

    /// The head `upstream_head` writes, parsed back: the target, the
    /// headers in order, and whether the body goes chunked.
    fn head_of(req: &Request<()>, fwd: &Forwarded, has_body: bool) -> (String, HeaderMap, bool) {
        let (head, chunked) = upstream_head(req.method(), req.uri(), req.headers(), fwd, has_body);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        assert_eq!(parsed.parse(&head).unwrap(), httparse::Status::Complete(head.len()), "one whole head");
        assert_eq!(parsed.version, Some(1), "HTTP/1.1");
        let mut headers = HeaderMap::new();
        for h in parsed.headers.iter() {
            headers
                .append(HeaderName::from_bytes(h.name.as_bytes()).unwrap(), HeaderValue::from_bytes(h.value).unwrap());
        }
        (parsed.path.unwrap().to_string(), headers, chunked)
    }

    fn fwd(peer: &HeaderValue) -> Forwarded<'_> {
        Forwarded {
            peer,
            peer_trusted: false,
            tls: false,
            pool: PoolName::New,
            bucket: 7,
            upgrade: false,
            endpoint: "10.9.9.9:8080",
            underscores: UnderscoreHeaders::Drop,
        }
    }

    #[test]
    fn a_clients_shadow_mark_is_dropped_and_only_a_shadow_gets_one() {
        let req = Request::get("/orders/1")
            .header("x-grayshift-shadow", "1")
            .header("x_grayshift_shadow", "1")
            .header("x-user-id", "u1")
            .body(())
            .unwrap();
        let peer = HeaderValue::from_static("10.0.0.9");
        let (_, h, _) = head_of(&req, &fwd(&peer), false);
        assert!(!h.contains_key("x-grayshift-shadow") && !h.contains_key("x_grayshift_shadow"), "{h:?}");
        assert_eq!(h["x-user-id"], "u1");
        let (mut head, _) = upstream_head(req.method(), req.uri(), req.headers(), &fwd(&peer), false);
        mark_shadow(&mut head);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        assert_eq!(parsed.parse(&head).unwrap(), httparse::Status::Complete(head.len()), "still one whole head");
        let marks: Vec<&[u8]> =
            parsed.headers.iter().filter(|h| h.name == "x-grayshift-shadow").map(|h| h.value).collect();
        assert_eq!(marks, [b"1"]);
    }

    #[test]
    fn upstream_head_sets_forwarding_headers() {
        let req = Request::get("http://shop.example/cart?x=1")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-proto", "https")
            .header("x-gray-pool", "spoofed")
            .body(())
            .unwrap();
        let peer = HeaderValue::from_static("10.0.0.9");
        let (target, h, chunked) = head_of(&req, &fwd(&peer), false);
        assert_eq!(target, "/cart?x=1");
        assert_eq!(h["host"], "shop.example");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http", "an untrusted peer's proto is replaced");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h.get_all("x-gray-pool").iter().collect::<Vec<_>>(), ["new"], "the client's is replaced");
        assert_eq!(h["x-gray-bucket"], "7");
        assert!(!chunked && !h.contains_key("transfer-encoding"));
    }

    #[test]
    fn upstream_head_keeps_origin_form_and_host() {
        let req = Request::get("/a/b?c=d")
            .header("host", "shop.example:8080")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .body(())
            .unwrap();
        let peer = HeaderValue::from_static("2001:db8::7");
        let fwd = Forwarded { tls: true, pool: PoolName::Stable, bucket: 42, ..fwd(&peer) };
        let (target, h, _) = head_of(&req, &fwd, false);
        assert_eq!(target, "/a/b?c=d");
        assert_eq!(h.len(), 6, "{h:?}");
        assert_eq!(h["host"], "shop.example:8080");
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(h["x-gray-pool"], "stable");
        assert_eq!(h["x-gray-bucket"], "42");
    }

    #[test]
    fn upstream_head_frames_the_body() {
        let peer = HeaderValue::from_static("10.0.0.9");
        let chunked_upload =
            Request::post("/up").header("host", "a").header("transfer-encoding", "chunked").body(()).unwrap();
        let (_, h, chunked) = head_of(&chunked_upload, &fwd(&peer), true);
        assert!(chunked, "a body without a length goes chunked");
        assert_eq!(h.get_all("transfer-encoding").iter().collect::<Vec<_>>(), ["chunked"]);
        let sized = Request::post("/up").header("host", "a").header("content-length", "5").body(()).unwrap();
        let (_, h, chunked) = head_of(&sized, &fwd(&peer), true);
        assert!(!chunked && !h.contains_key("transfer-encoding"));
        assert_eq!(h["content-length"], "5");
        let listed = Request::post("/up")
            .header("host", "a")
            .header("content-length", "5, 5")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (_, h, _) = head_of(&listed, &fwd(&peer), true);
        assert_eq!(h.get_all("content-length").iter().collect::<Vec<_>>(), ["5"], "one length, once");
    }

    #[test]
    fn upstream_head_of_an_upgrade_keeps_connection_upgrade() {
        let req = Request::get("/ws")
            .header("host", "a")
            .header("connection", "Upgrade, x-secret")
            .header("upgrade", "websocket")
            .header("x-secret", "1")
            .body(())
            .unwrap();
        let peer = HeaderValue::from_static("10.0.0.9");
        let (_, h, _) = head_of(&req, &Forwarded { upgrade: true, ..fwd(&peer) }, false);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("x-secret"), "named in Connection");
    }
}
