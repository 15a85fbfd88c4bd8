//! Differential: the same raw bytes (one client connection, possibly
//! several pipelined requests) go to three readers of HTTP/1.1, and their
//! accept/reject and framing decisions are compared.
//!
//! 1. grayshift: `h1_server::parse` on the bytes (the first head's
//!    `BodyFraming`, keep-alive and `Expect` decisions), and
//!    `h1_server::serve` over an in-memory duplex with `framing::check` as
//!    the service, which reads every accepted body to its end and notes
//!    what it got; the statuses written back are read off the output.
//! 2. `model`: RFC 9112 (§2.2, §6, §7.1, §9.3) for a request, written here
//!    independently of grayshift's code, with grayshift's deliberate extra
//!    strictness written out as such (each place says "design").
//!    httparse is the syntax layer for the head (as it is for hyper and
//!    grayshift); everything above it — framing, Host, limits, the chunked
//!    decoder, keep-alive — is the model's own.
//! 3. hyper 1.x's HTTP/1 server, fed the same bytes, with a service that
//!    reads each body and notes it: an outside implementation.
//!
//! What must hold:
//! - grayshift and the model agree exactly: the same first-head framing,
//!   the same sequence of requests (method, target, version, body bytes,
//!   or a body that failed) and the same refusal status, which is one of
//!   400, 405, 414, 431, 501;
//! - every request grayshift accepted and read to its end, hyper read too,
//!   as the same request with the same body: so where one request ends
//!   (and the next begins) is the same for both. hyper is more lenient
//!   than grayshift in many places (CL+TE, list rules, chunk-size digits,
//!   `gzip, chunked`…); that is never a finding, since it is only checked
//!   where grayshift accepted. The two places where hyper refuses what
//!   grayshift accepts are listed in `hyper_may_differ`.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use grayshift::proxy::body::{ClientBody, ResponseBody};
use grayshift::proxy::h1_server::{BodyFraming, HeadLimits};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Small limits, so that the fuzzer reaches them (431, 414) with short
/// inputs.
const MAX_HEADER_BYTES: usize = 2048;
const MAX_HEADERS: usize = 16;
const MAX_URI_BYTES: usize = 128;
/// grayshift's bound on chunk-extension and trailer bytes together in one
/// body (`body.rs`, CHUNK_META_LIMIT).
const CHUNK_META_LIMIT: usize = 16 * 1024;

fn config_text() -> String {
    format!(
        r#"
[server]
max_header_bytes = {MAX_HEADER_BYTES}
max_headers = {MAX_HEADERS}
max_uri_bytes = {MAX_URI_BYTES}
[split]
percent = 50
group = "fuzz"
[pools.stable]
endpoints = ["127.0.0.1:1"]
[pools.new]
endpoints = ["127.0.0.1:2"]
"#
    )
}

fn server() -> &'static grayshift::config::ServerConfig {
    static SERVER: OnceLock<grayshift::config::ServerConfig> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = grayshift::config::parse(&config_text(), "fuzz.toml").expect("fuzz config").server;
        assert_eq!(
            (server.max_header_bytes, server.max_headers, server.max_uri_bytes),
            (MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES)
        );
        server
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// One request as a server handed it on (or the refusal that ended the
/// connection).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Request {
        method: Method,
        target: String,
        version: Version,
        /// `None`: the body failed (malformed, or cut short by the EOF).
        body: Option<Vec<u8>>,
    },
    Refused(u16),
}

const REFUSALS: [u16; 5] = [400, 405, 414, 431, 501];

// ---------------------------------------------------------------- model --

/// What the model decides for one head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelHead {
    len: usize,
    method: Method,
    target: String,
    version: Version,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    /// Fields named Transfer-Encoding / Content-Length etc. are looked up
    /// by the model itself, case-insensitively, from httparse's list.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

enum HeadOutcome {
    /// Not a whole head yet (at the EOF: the connection just closes).
    Incomplete,
    Refused(u16),
    /// Not HTTP/1.1 syntax (httparse's error): 400. `maybe_431`: the error
    /// comes only after the first `MAX_HEADER_BYTES` bytes, which are not a
    /// whole head; a reader that stops at its limit before it has read
    /// that far answers 431 instead (grayshift does, depending on how much
    /// its reads have brought in). Either way the head is refused.
    Syntax {
        maybe_431: bool,
    },
    Head(ModelHead),
}

fn named<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_slice())
}

/// A field value as list text: visible ASCII, SP and HTAB only (obs-text
/// in a framing field is refused: design, RFC 9110 §5.5 lets a recipient
/// treat it as opaque, grayshift does not guess).
fn list_text(value: &[u8]) -> Option<&str> {
    value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)).then(|| std::str::from_utf8(value).unwrap())
}

/// RFC 9110 §5.6.1 list elements, OWS trimmed. Design: an empty element is
/// refused rather than ignored as §5.6.1 asks of a recipient (`, chunked`
/// is read differently by different servers).
fn elements(values: &[&[u8]]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for v in values {
        for e in list_text(v)?.split(',') {
            let e = e.trim_matches(|c| c == ' ' || c == '\t');
            if e.is_empty() {
                return None;
            }
            out.push(e.to_ascii_lowercase());
        }
    }
    Some(out)
}

/// RFC 3986 §3.2.2 host (reg-name characters, pct-encoded, an IP literal's
/// brackets and colons) with an optional port; empty allowed (RFC 9112
/// §3.2: a target without an authority).
fn host_ok(value: &[u8]) -> bool {
    const SUB_DELIMS: &[u8] = b"!$&'()*+,;=";
    value.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~%:[]".contains(&b) || SUB_DELIMS.contains(&b))
}

fn model_head(bytes: &[u8]) -> HeadOutcome {
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(bytes) {
        // Limits (RFC 9112 §2.3 / RFC 6585 §5): a head over the limit, or
        // an unfinished one that already is, gets 431; so do too many
        // field lines.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEADER_BYTES => return HeadOutcome::Refused(431),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEADER_BYTES => return HeadOutcome::Refused(431),
        Ok(httparse::Status::Partial) => return HeadOutcome::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return HeadOutcome::Refused(431),
        Err(_) => {
            let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let maybe_431 = bytes.len() >= MAX_HEADER_BYTES
                && matches!(
                    httparse::Request::new(&mut slots).parse(&bytes[..MAX_HEADER_BYTES]),
                    Ok(httparse::Status::Partial)
                );
            return HeadOutcome::Syntax { maybe_431 };
        }
    };
    let Ok(method) = Method::from_bytes(req.method.unwrap().as_bytes()) else { return HeadOutcome::Refused(400) };
    let Ok(uri) = req.path.unwrap().parse::<Uri>() else { return HeadOutcome::Refused(400) };
    let version = if req.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let fields: Vec<(Vec<u8>, Vec<u8>)> =
        req.headers.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec())).collect();
    if fields.iter().any(|(n, _)| http::HeaderName::from_bytes(n).is_err()) {
        return HeadOutcome::Refused(400);
    }

    // RFC 9112 §6.1–6.3, with grayshift's design choices (README's
    // smuggling table):
    let te: Vec<&[u8]> = named(&fields, "transfer-encoding").collect();
    let cl: Vec<&[u8]> = named(&fields, "content-length").collect();
    let framing = if !te.is_empty() {
        // §6.1 says an HTTP/1.0 message with Transfer-Encoding has faulty
        // framing and must be closed after; design: refused outright.
        if version == Version::HTTP_10 {
            return HeadOutcome::Refused(400);
        }
        // §6.3 point 3 lets a server read TE and ignore CL (then close);
        // design: both together are refused (hyper reads the TE).
        if !cl.is_empty() {
            return HeadOutcome::Refused(400);
        }
        let Some(codings) = elements(&te) else { return HeadOutcome::Refused(400) };
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        // §6.3 point 4: chunked must be the final coding, else 400; and
        // (§7) applied once only.
        if chunked != 1 || codings.last().map(String::as_str) != Some("chunked") {
            return HeadOutcome::Refused(400);
        }
        // §6.1: a coding the server does not understand → 501; grayshift
        // implements only chunked (it does not decode gzip etc.).
        if codings.len() > 1 {
            return HeadOutcome::Refused(501);
        }
        BodyFraming::Chunked
    } else if !cl.is_empty() {
        // §6.3 point 5, §8.6 of RFC 9110: 1*DIGIT; a list of identical
        // values may be taken as one. Design: every element must be plain
        // digits that fit in 64 bits (no sign, no empty element).
        let mut length: Option<u64> = None;
        for v in &cl {
            let Some(text) = list_text(v) else { return HeadOutcome::Refused(400) };
            for e in text.split(',') {
                let e = e.trim_matches(|c| c == ' ' || c == '\t');
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return HeadOutcome::Refused(400);
                }
                let Ok(n) = e.parse::<u64>() else { return HeadOutcome::Refused(400) };
                if length.is_some_and(|l| l != n) {
                    return HeadOutcome::Refused(400);
                }
                length = Some(n);
            }
        }
        match length {
            Some(0) | None => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        }
    } else {
        // §6.3 point 7: a request with neither has no body.
        BodyFraming::Empty
    };

    // The request path's rules (after the framing, as in grayshift, so a
    // CONNECT with bad framing is a 400 rather than a 405).
    // Design: a reverse proxy does not tunnel CONNECT (RFC 9110 §9.3.6).
    if method == Method::CONNECT {
        return HeadOutcome::Refused(405);
    }
    // RFC 9112 §3: a server may refuse a long target with 414; the limit
    // counts path and query (an absolute-form's authority is not counted).
    if uri.path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI_BYTES {
        return HeadOutcome::Refused(414);
    }
    // RFC 9112 §3.2: HTTP/1.1 needs exactly one Host; more than one, or an
    // invalid one, is a 400. HTTP/1.0 may omit it.
    let hosts: Vec<&[u8]> = named(&fields, "host").collect();
    match hosts.as_slice() {
        [] if version == Version::HTTP_11 => return HeadOutcome::Refused(400),
        [] => {}
        [one] if host_ok(one) => {}
        _ => return HeadOutcome::Refused(400),
    }

    // RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with
    // `keep-alive`, and `close` wins.
    let tokens: Vec<Vec<u8>> = named(&fields, "connection")
        .flat_map(|v| v.split(|&b| b == b',').map(|t| t.trim_ascii().to_ascii_lowercase()).collect::<Vec<_>>())
        .collect();
    let close = tokens.iter().any(|t| t == b"close");
    let keep_alive = !close && (version == Version::HTTP_11 || tokens.iter().any(|t| t == b"keep-alive"));
    // RFC 9110 §10.1.1: 100-continue is only for HTTP/1.1 and a body.
    let expect_continue = version == Version::HTTP_11
        && framing != BodyFraming::Empty
        && named(&fields, "expect").any(|v| v.eq_ignore_ascii_case(b"100-continue"));
    HeadOutcome::Head(ModelHead {
        len,
        method,
        target: uri.to_string(),
        version,
        framing,
        keep_alive,
        expect_continue,
        fields,
    })
}

/// A chunked body decoded by RFC 9112 §7.1: `Some((data, bytes used,
/// trailer lines))`, or `None` when it is malformed or not all there (the
/// connection closes either way). Design (grayshift is stricter than the
/// grammar allows a recipient to be, and than hyper):
/// - every line ends in CRLF, never a bare LF (§2.2 allows LF);
/// - at most 16 hex digits of size (so it fits in 64 bits; hyper allows
///   leading zeros beyond that);
/// - whitespace after the size is allowed before `;` or CRLF (the BWS of
///   chunk-ext, and hyper's leniency before CRLF); extensions are not
///   parsed but must be HTAB, SP, VCHAR or obs-text up to the CR;
/// - trailer lines are not parsed as fields (grayshift drops them): any
///   bytes but CR and LF, up to CRLF; the empty line ends them;
/// - extension and trailer bytes together at most 16 KiB per body.
fn model_chunked(b: &[u8]) -> Option<(Vec<u8>, usize, usize)> {
    let mut at = 0;
    let mut data = Vec::new();
    let mut meta = 0usize;
    loop {
        let digits = b[at..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&b[at..at + digits]).unwrap(), 16).unwrap();
        at += digits;
        while matches!(b.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if b.get(at) == Some(&b';') {
            at += 1;
            while let Some(&c) = b.get(at) {
                if c == b'\r' {
                    break;
                }
                if !(c == b'\t' || (0x20..0x7f).contains(&c) || c >= 0x80) {
                    return None;
                }
                meta += 1;
                at += 1;
            }
        }
        if meta > CHUNK_META_LIMIT || b.get(at..at + 2) != Some(b"\r\n") {
            return None;
        }
        at += 2;
        if size == 0 {
            break;
        }
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        data.extend_from_slice(b.get(at..end)?);
        at = end;
        if b.get(at..at + 2) != Some(b"\r\n") {
            return None;
        }
        at += 2;
    }
    let mut trailers = 0;
    loop {
        let line = b[at..].iter().take_while(|&&c| c != b'\r' && c != b'\n').count();
        meta += line;
        if meta > CHUNK_META_LIMIT || b.get(at + line..at + line + 2) != Some(b"\r\n") {
            return None;
        }
        at += line + 2;
        if line == 0 {
            return Some((data, at, trailers));
        }
        trailers += 1;
    }
}

/// The model's reading of a whole connection: requests one after another
/// while the connection persists; a refusal, a failed body or a head not
/// all there ends it. Also returns, per request, what `hyper_may_differ`
/// needs to know of it, and whether the final refusal may be a 431
/// instead (`HeadOutcome::Syntax`).
fn model(mut bytes: &[u8]) -> (Vec<Seen>, Vec<Notes>, bool) {
    let (mut seen, mut notes, mut maybe_431) = (Vec::new(), Vec::new(), false);
    loop {
        let head = match model_head(bytes) {
            HeadOutcome::Incomplete => break,
            HeadOutcome::Refused(status) => {
                seen.push(Seen::Refused(status));
                break;
            }
            HeadOutcome::Syntax { maybe_431: may } => {
                seen.push(Seen::Refused(400));
                maybe_431 = may;
                break;
            }
            HeadOutcome::Head(head) => head,
        };
        bytes = &bytes[head.len..];
        let (body, used, trailer_lines) = match head.framing {
            BodyFraming::Empty => (Some(Vec::new()), 0, 0),
            BodyFraming::Length(n) => match usize::try_from(n).ok().and_then(|n| bytes.get(..n)) {
                Some(b) => (Some(b.to_vec()), b.len(), 0),
                None => (None, 0, 0),
            },
            BodyFraming::Chunked => match model_chunked(bytes) {
                Some((data, used, t)) => (Some(data), used, t),
                None => (None, 0, 0),
            },
        };
        let ok = body.is_some();
        seen.push(Seen::Request { method: head.method, target: head.target, version: head.version, body });
        notes.push(Notes {
            trailers: trailer_lines > 0,
            length_list: named(&head.fields, "content-length").any(|v| v.contains(&b',')),
        });
        if !ok || !head.keep_alive {
            break;
        }
        bytes = &bytes[used..];
    }
    (seen, notes, maybe_431)
}

/// What a request had that hyper reads differently from grayshift.
#[derive(Debug, Clone, Copy)]
struct Notes {
    /// Trailer lines after the last chunk.
    trailers: bool,
    /// A Content-Length written as a list (`5, 5`).
    length_list: bool,
}

// ------------------------------------------------------------ grayshift --

type Log = Arc<Mutex<Vec<Seen>>>;
/// Which of the requests the service saw were HEAD (their responses have
/// no body), refused ones included.
type Heads = Arc<Mutex<Vec<bool>>>;

async fn grayshift_service(
    req: Request<ClientBody>,
    log: Log,
    heads: Heads,
) -> Result<Response<ResponseBody>, Infallible> {
    let reply = |status: StatusCode, close: bool| {
        let mut resp = Response::new(ResponseBody::text("x"));
        *resp.status_mut() = status;
        if close {
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        Ok(resp)
    };
    heads.lock().unwrap().push(req.method() == Method::HEAD);
    if let Err(e) = grayshift::proxy::framing::check(&req, server().max_uri_bytes) {
        log.lock().unwrap().push(Seen::Refused(e.status().as_u16()));
        return reply(e.status(), true);
    }
    let (method, target, version) = (req.method().clone(), req.uri().to_string(), req.version());
    let body = req.into_body().collect().await.ok().map(|b| b.to_bytes().to_vec());
    let ok = body.is_some();
    log.lock().unwrap().push(Seen::Request { method, target, version, body });
    if ok {
        reply(StatusCode::OK, false)
    } else {
        reply(StatusCode::BAD_REQUEST, true)
    }
}

/// The final statuses in a grayshift output (1xx skipped), each response
/// framed by its Content-Length (HEAD responses have none).
fn statuses(mut out: &[u8], heads: &[bool]) -> Vec<u16> {
    let mut statuses = Vec::new();
    while !out.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut fields);
        let len = match resp.parse(out) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("grayshift wrote a bad response ({other:?}): {:?}", String::from_utf8_lossy(out)),
        };
        let code = resp.code.unwrap();
        let version = resp.version.unwrap();
        assert_eq!(version, 1, "grayshift answered HTTP/1.{version}");
        assert!(
            !resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
            "every response here has a known length"
        );
        let cl = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
        out = &out[len..];
        if (100..200).contains(&code) {
            assert_eq!(code, 100, "only 100 Continue is interim");
            continue;
        }
        let is_head = heads.get(statuses.len()).copied().unwrap_or(false);
        let body = if is_head { 0 } else { cl.expect("a final response without Content-Length") };
        assert!(out.len() >= body, "response body cut short");
        out = &out[body..];
        statuses.push(code);
    }
    statuses
}

/// grayshift's reading of the connection, in the model's terms.
fn grayshift(data: &[u8]) -> Vec<Seen> {
    let log = Log::default();
    let heads = Heads::default();
    let out = runtime().block_on(async {
        let (client, server_io) = tokio::io::duplex(1 << 16);
        let settings = grayshift::proxy::h1_server::Settings::new(server());
        let handler = |_, req| grayshift_service(req, log.clone(), heads.clone());
        let conn = async {
            let info = grayshift::proxy::handle::ConnInfo::new(([127, 0, 0, 1], 1).into(), false);
            let drain = grayshift::proxy::server::DrainWatch::detached();
            let started = tokio::time::Instant::now();
            let _ = grayshift::proxy::h1_server::serve(
                server_io,
                BytesMut::new(),
                started,
                info,
                &handler,
                settings,
                drain,
            )
            .await;
        };
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let (_, _, out) =
            tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(conn, write, read) })
                .await
                .expect("grayshift hung after the client's EOF");
        out
    });
    let mut seen = log.lock().unwrap().clone();
    let statuses = statuses(&out, &heads.lock().unwrap());
    for (i, s) in seen.iter().enumerate() {
        let want = match s {
            Seen::Request { body: Some(_), .. } => 200,
            Seen::Request { body: None, .. } => 400,
            Seen::Refused(status) => *status,
        };
        assert_eq!(statuses.get(i), Some(&want), "response {i} to {s:?}; all: {statuses:?}");
    }
    // One response more than the service gave: the head refused by the
    // parser.
    match statuses.len() - seen.len() {
        0 => {}
        1 => seen.push(Seen::Refused(*statuses.last().unwrap())),
        n => panic!("{n} responses that no request explains: {statuses:?}"),
    }
    seen
}

// ---------------------------------------------------------------- hyper --

/// hyper's reading of the connection: every request it handed to the
/// service (body read to the end, or failed), and whether the connection
/// ended in an error (hyper refused a head, or a body).
fn hyper(data: &[u8]) -> (Vec<Seen>, Option<String>) {
    let log = Log::default();
    let result = runtime().block_on(async {
        let (client, server_io) = tokio::io::duplex(1 << 16);
        let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move {
                let (method, target, version) = (req.method().clone(), req.uri().to_string(), req.version());
                let body = req.into_body().collect().await.ok().map(|b| b.to_bytes().to_vec());
                log.lock().unwrap().push(Seen::Request { method, target, version, body });
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"x"))))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .max_headers(MAX_HEADERS)
            .half_close(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(None);
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(server_io), service);
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
        };
        let (result, _, _) =
            tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(conn, write, read) })
                .await
                .expect("hyper hung after the client's EOF");
        result
    });
    let seen = log.lock().unwrap().clone();
    (seen, result.err().map(|e| format!("{e:?}")))
}

// ------------------------------------------------------------ the check --

/// `REQUEST_HEAD_DIFF_DEBUG=1`: print each side's reading (to look at an
/// input: `…/request_head_diff FILE`).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("REQUEST_HEAD_DIFF_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    // The first head, straight through the parser: the framing decision
    // itself (not only its effect on the body) against the model's.
    let limits = HeadLimits { max_bytes: MAX_HEADER_BYTES, max_headers: MAX_HEADERS };
    let mut names = Default::default();
    let parsed = grayshift::proxy::h1_server::parse(&mut BytesMut::from(data), limits, &mut names);
    let modelled = model_head(data);
    match (&parsed, &modelled) {
        (Ok(None), HeadOutcome::Incomplete) => {}
        (Err(e), HeadOutcome::Refused(status)) => assert_eq!(e.status().as_u16(), *status, "{e}"),
        // The whole input in one buffer: the syntax error is seen.
        (Err(e), HeadOutcome::Syntax { .. }) => assert_eq!(e.status().as_u16(), 400, "{e}"),
        (Ok(Some(head)), HeadOutcome::Refused(status)) => {
            // Refused by the request path's check, not by the parser.
            let e = grayshift::proxy::framing::check(&head.request, server().max_uri_bytes)
                .expect_err("grayshift's parser and check accepted what the model refuses");
            assert_eq!(e.status().as_u16(), *status, "{e}");
        }
        (Ok(Some(head)), HeadOutcome::Head(m)) => {
            assert_eq!(grayshift::proxy::framing::check(&head.request, server().max_uri_bytes), Ok(()));
            assert_eq!(head.body, m.framing, "body framing");
            assert_eq!(head.keep_alive, m.keep_alive, "keep-alive");
            assert_eq!(head.expect_continue, m.expect_continue, "100-continue");
            assert_eq!(head.request.method(), m.method);
            assert_eq!(head.request.version(), m.version);
            assert_eq!(head.request.uri().to_string(), m.target);
            assert_eq!(head.request.headers().len(), m.fields.len(), "every field kept");
        }
        (p, _) => panic!(
            "grayshift's parser says {p:?}, the model says {}",
            match modelled {
                HeadOutcome::Incomplete => "incomplete".to_string(),
                HeadOutcome::Refused(s) => format!("refused {s}"),
                HeadOutcome::Syntax { .. } => "refused 400 (syntax)".to_string(),
                HeadOutcome::Head(m) => format!("{m:?}"),
            }
        ),
    }

    // The whole connection: grayshift against the model, exactly.
    let g = grayshift(data);
    let (m, notes, maybe_431) = model(data);
    let last_431 = |g: &[Seen]| g.last() == Some(&Seen::Refused(431));
    if !(maybe_431 && g.len() == m.len() && g[..g.len() - 1] == m[..m.len() - 1] && last_431(&g)) {
        assert_eq!(g, m, "grayshift's connection (left) against the model (right)");
    }
    for s in &g {
        if let Seen::Refused(status) = s {
            assert!(REFUSALS.contains(status), "refused with {status}");
        }
    }

    // Every request grayshift accepted and read to its end, hyper read the
    // same way (same request, same body, so the same end and the same
    // next request).
    let (h, h_err) = hyper(data);
    if debug() {
        eprintln!("grayshift: {g:?}\nhyper:     {h:?} {h_err:?}");
    }
    for (i, seen) in g.iter().enumerate() {
        let Seen::Request { body: Some(_), .. } = seen else { break };
        match h.get(i) {
            Some(hs) if hs == seen => {}
            other => {
                if hyper_may_differ(seen, other, notes[i], h_err.as_deref()) {
                    break;
                }
                panic!(
                    "request {i}: grayshift accepted {seen:?}, hyper saw {other:?} (hyper's connection error: {h_err:?})"
                )
            }
        }
    }
});

/// Where hyper refuses what grayshift accepts, by design (hyper's reading
/// is then not compared further: it has closed the connection, or failed
/// the body, so it forwards nothing that could be framed differently):
/// - trailer lines: grayshift finds their end (the empty line) and drops
///   them without parsing them; hyper parses them as fields (httparse) and
///   counts them against `max_headers`, and fails the body when they are
///   not valid fields or too many. Where the trailer section ends is the
///   same for both (the model checks grayshift's end); what is in it is
///   never forwarded.
/// - a Content-Length list of one value (`5, 5`, `0, 0`): RFC 9110 §8.6
///   lets a recipient take it as that one length, and grayshift does (as
///   README's smuggling table says: only lists of differing values are
///   refused); hyper parses one number per field line and refuses the
///   head (`ContentLengthInvalid`, or `VersionH2` when an HTTP/2 preface
///   follows in the buffer: hyper reports that instead). Several lines of
///   the same value both accept, and are compared.
fn hyper_may_differ(seen: &Seen, hyper: Option<&Seen>, notes: Notes, err: Option<&str>) -> bool {
    match (seen, hyper) {
        (
            Seen::Request { method, target, version, body: Some(_) },
            Some(Seen::Request { method: hm, target: ht, version: hv, body: None }),
        ) => notes.trailers && (method, target, version) == (hm, ht, hv),
        (Seen::Request { .. }, None) => notes.length_list && err.is_some_and(|e| e.contains("Parse(")),
        _ => false,
    }
}
