//! Request framing checks, run before anything is forwarded.
//!
//! A proxy must parse strictly, because whatever it lets through is
//! re-framed for the upstream, and any disagreement on where a request ends
//! is request smuggling (RFC 9112 §6.3, §11.2). The body framing rules are
//! applied by the HTTP/1 server as it parses a head (`h1_server/head.rs`);
//! the target and Host rules by the request path, for every protocol.
//! Every refusal is a 400 (501 for a transfer coding we do not implement)
//! with `Connection: close`.

use http::header::{HeaderMap, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request, StatusCode, Version};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndChunked,
    #[error("conflicting or invalid Content-Length")]
    BadContentLength,
    #[error("Transfer-Encoding must end with a single chunked")]
    BadTransferEncoding,
    #[error("transfer coding not implemented")]
    UnsupportedTransferCoding,
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    BadHost,
    #[error("request target too long")]
    UriTooLong,
    #[error("CONNECT is not supported by a reverse proxy")]
    Connect,
    #[error("the asterisk-form target \"*\" is only for OPTIONS")]
    AsteriskForm,
    #[error("invalid request target")]
    BadTarget,
    #[error("an escaped slash (%2F, %5C or \\) that an upstream could read as a separator (features.escaped_slashes = \"reject\")")]
    EscapedSlash,
    #[error(
        "a ; path parameter that an upstream could strip into another path (features.escaped_slashes = \"reject\")"
    )]
    PathParameter,
    #[error("header name with an underscore (server.underscore_headers = \"reject\")")]
    UnderscoreHeader,
}

impl FramingError {
    pub fn status(self) -> StatusCode {
        match self {
            FramingError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            FramingError::UriTooLong => StatusCode::URI_TOO_LONG,
            FramingError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Check one request's target and Host. `max_uri` bounds the request
/// target in bytes. (Its body framing was checked as its head was parsed.)
pub fn check<B>(req: &Request<B>, max_uri: usize) -> Result<(), FramingError> {
    if req.method() == Method::CONNECT {
        return Err(FramingError::Connect);
    }
    // `OPTIONS *` asks about the server; any other method on `*` has no
    // resource an upstream could agree on (RFC 9112 §3.2.4).
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Err(FramingError::AsteriskForm);
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > max_uri {
        return Err(FramingError::UriTooLong);
    }
    // HTTP/2 frames bodies itself and carries the authority in `:authority`;
    // the h2 codec already refuses connection-specific headers.
    if req.version() >= Version::HTTP_2 {
        return Ok(());
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => Err(FramingError::MissingHost),
        (None, _) => Ok(()),
        (Some(host), None) if valid_host(host.as_bytes()) => Ok(()),
        (Some(_), None) => Err(FramingError::BadHost),
        (Some(_), Some(_)) => Err(FramingError::DuplicateHost),
    }
}

/// With `server.underscore_headers = "reject"`: refuse a request with any
/// `_` in a header name (see `underscore.rs`).
pub fn no_underscores(headers: &HeaderMap) -> Result<(), FramingError> {
    if headers.keys().any(crate::proxy::underscore::has_underscore) {
        return Err(FramingError::UnderscoreHeader);
    }
    Ok(())
}

/// RFC 9110 §7.2: `uri-host [ ":" port ]`, i.e. reg-name characters
/// (unreserved, pct-encoded, sub-delims), an IP literal in brackets, a
/// port. Empty is allowed (a request target without an authority).
fn valid_host(host: &[u8]) -> bool {
    host.iter().all(|&b| {
        matches!(b,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
            | b'-' | b'.' | b'_' | b'~' | b'%'
            | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            | b':' | b'[' | b']')
    })
}

/// Returns whether the body is chunked. Only exactly one `chunked`, last,
/// is accepted; other codings are not implemented.
pub(crate) fn check_transfer_encoding(headers: &HeaderMap) -> Result<bool, FramingError> {
    let mut codings = 0;
    let mut chunked_at = None;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| FramingError::BadTransferEncoding)?;
        for coding in text.split(',') {
            let coding = coding.trim();
            if coding.is_empty() {
                return Err(FramingError::BadTransferEncoding);
            }
            codings += 1;
            if coding.eq_ignore_ascii_case("chunked") {
                if chunked_at.is_some() {
                    return Err(FramingError::BadTransferEncoding);
                }
                chunked_at = Some(codings);
            }
        }
    }
    match (codings, chunked_at) {
        (0, _) => Ok(false),
        (n, Some(at)) if at == n && n == 1 => Ok(true),
        (n, Some(at)) if at == n => Err(FramingError::UnsupportedTransferCoding),
        _ => Err(FramingError::BadTransferEncoding),
    }
}

/// The Content-Length, if any. Several are accepted only when they all
/// carry the same digits (RFC 9112 §6.3 point 5).
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| FramingError::BadContentLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::BadContentLength);
            }
            let n = part.parse::<u64>().map_err(|_| FramingError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::post("/x").version(version);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    fn check11(headers: &[(&str, &str)]) -> Result<(), FramingError> {
        check(&req(Version::HTTP_11, headers), 8192)
    }

    fn te(values: &[&str]) -> Result<bool, FramingError> {
        check_transfer_encoding(
            req(Version::HTTP_11, &values.iter().map(|v| ("transfer-encoding", *v)).collect::<Vec<_>>()).headers(),
        )
    }

    fn cl(values: &[&str]) -> Result<Option<u64>, FramingError> {
        content_length(
            req(Version::HTTP_11, &values.iter().map(|v| ("content-length", *v)).collect::<Vec<_>>()).headers(),
        )
    }

    #[test]
    fn body_framing_fields() {
        use FramingError::*;
        assert_eq!(cl(&["5"]), Ok(Some(5)));
        assert_eq!(cl(&["5", "5"]), Ok(Some(5)));
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&["5", "6"]), Err(BadContentLength));
        assert_eq!(cl(&["5, 6"]), Err(BadContentLength));
        assert_eq!(cl(&["+5"]), Err(BadContentLength));
        assert_eq!(te(&["chunked"]), Ok(true));
        assert_eq!(te(&["Chunked"]), Ok(true));
        assert_eq!(te(&["chunked, chunked"]), Err(BadTransferEncoding));
        assert_eq!(te(&["chunked", "chunked"]), Err(BadTransferEncoding));
        assert_eq!(te(&["chunked, gzip"]), Err(BadTransferEncoding));
        assert_eq!(te(&["gzip"]), Err(BadTransferEncoding));
        assert_eq!(te(&["gzip, chunked"]), Err(UnsupportedTransferCoding));
        assert_eq!(te(&[",chunked"]), Err(BadTransferEncoding));
    }

    #[test]
    fn target_and_host_cases() {
        use FramingError::*;
        let h = ("host", "a");
        assert_eq!(check11(&[h]), Ok(()));
        assert_eq!(check11(&[]), Err(MissingHost));
        assert_eq!(check11(&[h, ("host", "b")]), Err(DuplicateHost));
        assert_eq!(check11(&[("host", "a b")]), Err(BadHost));
        assert_eq!(check11(&[("host", "a/b")]), Err(BadHost));
        assert_eq!(check11(&[("host", "user@a")]), Err(BadHost), "no userinfo in Host");
        assert_eq!(check11(&[("host", "[2001:db8::1]:8080")]), Ok(()));
        assert_eq!(check11(&[("host", "")]), Ok(()), "empty Host: a target without authority");
        assert_eq!(check(&req(Version::HTTP_10, &[]), 8192), Ok(()), "HTTP/1.0 may omit Host");
        assert_eq!(check(&req(Version::HTTP_2, &[]), 8192), Ok(()));
        let long = Request::get(format!("/{}", "a".repeat(100))).header("host", "a").body(()).unwrap();
        assert_eq!(check(&long, 50), Err(UriTooLong));
        let connect = Request::connect("a:443").header("host", "a").body(()).unwrap();
        assert_eq!(check(&connect, 8192), Err(Connect));
        let star = |method: Method| {
            check(&Request::builder().method(method).uri("*").header("host", "a").body(()).unwrap(), 8192)
        };
        assert_eq!(star(Method::OPTIONS), Ok(()));
        assert_eq!(star(Method::POST), Err(AsteriskForm));
        assert_eq!(star(Method::GET), Err(AsteriskForm));
    }
}
