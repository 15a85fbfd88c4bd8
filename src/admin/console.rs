//! The operator console: `GET /ui` on the admin listener (docs/src/console.md).
//!
//! One page, its script and its stylesheet, embedded in the binary
//! (`include_str!`), served with a strict Content-Security-Policy: no inline
//! script or style, no request to anything but this listener, no framing.
//! The page only reads what `/status`, `/metrics` and `/audit` already
//! expose, and changes things through the same admin API as `grayshift ctl`.
//!
//! The admin API refuses any change carrying an `Origin` header, except the
//! console's own (see [`same_origin_console`]): a page loaded from another
//! origin, a cross-site form, or a DNS-rebinding host name still cannot
//! change anything, and the bearer token is still required.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::proxy::body::ResponseBody;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// The policy: everything from this listener only, nothing inline, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Is `path` one of the console's paths? (For the 405 on other methods.)
pub fn is_console_path(path: &str) -> bool {
    matches!(path, "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css")
}

/// The console's page or asset for a `GET path`, or `None` if `path` is not one.
pub fn asset(path: &str) -> Option<Response<ResponseBody>> {
    let (body, content_type) = match path {
        "/ui" | "/ui/" => (PAGE, "text/html; charset=utf-8"),
        "/ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(ResponseBody::text(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(headers);
    Some(response)
}

/// The headers every console response carries.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// May a change carrying an `Origin` header go through? Only when it comes
/// from the console itself, reached at a host name no DNS answer can forge:
///
/// - `Origin` is exactly `http://<Host>` (same scheme, host and port as the
///   request was sent to: the page was loaded from this listener);
/// - the `Host` name is `localhost` or an IP literal (`127.0.0.1:9090`,
///   `[::1]:9090`, `10.1.2.3:9090`). A DNS-rebinding attack makes the browser
///   send `Host: evil.example` with `Origin: http://evil.example` — the
///   same-origin test alone would pass, the name test does not. An IP
///   literal origin can only be a page this listener served;
/// - if the browser sends `Sec-Fetch-Site`, it says `same-origin`.
///
/// No config key: behind a real host name (an ingress), the console still
/// reads everything, and changes go through `grayshift ctl` or `curl`.
pub fn same_origin_console(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) else {
        return false;
    };
    if headers.get_all(header::ORIGIN).iter().count() != 1 || headers.get_all(header::HOST).iter().count() != 1 {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return false;
        }
    }
    origin.strip_prefix("http://") == Some(host) && unforgeable_host(host)
}

/// `localhost` or an IP literal, with an optional port.
fn unforgeable_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_port(digits: &str) -> bool {
    !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_console_on_an_unforgeable_host_passes() {
        let ok = |host: &str, origin: &str| same_origin_console(&headers(&[("host", host), ("origin", origin)]));
        assert!(ok("127.0.0.1:9090", "http://127.0.0.1:9090"));
        assert!(ok("localhost:9090", "http://localhost:9090"));
        assert!(ok("[::1]:9090", "http://[::1]:9090"));
        assert!(ok("10.0.0.7:9090", "http://10.0.0.7:9090"));
        assert!(ok("localhost", "http://localhost"));
        // DNS rebinding: same origin, but a name a DNS answer controls.
        assert!(!ok("evil.example:9090", "http://evil.example:9090"));
        assert!(!ok("localhost.evil.example:9090", "http://localhost.evil.example:9090"));
        assert!(!ok("127.0.0.1.nip.io:9090", "http://127.0.0.1.nip.io:9090"));
        // Another origin (port, scheme, host) or a sandboxed one.
        assert!(!ok("127.0.0.1:9090", "http://127.0.0.1:8000"));
        assert!(!ok("127.0.0.1:9090", "https://127.0.0.1:9090"));
        assert!(!ok("127.0.0.1:9090", "null"));
        assert!(!ok("127.0.0.1:9090", "http://127.0.0.1:9090/"));
        assert!(!ok("127.0.0.1:x", "http://127.0.0.1:x"));
        assert!(!ok("[::1]x", "http://[::1]x"));
        let h = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!same_origin_console(&h));
        let h = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(same_origin_console(&h));
        let h = headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090"), ("origin", "http://x")]);
        assert!(!same_origin_console(&h));
        assert!(!same_origin_console(&headers(&[("origin", "http://127.0.0.1:9090")])));
    }
}
