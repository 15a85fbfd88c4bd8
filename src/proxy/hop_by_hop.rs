//! Hop-by-hop fields (RFC 9110 §7.6.1): a connection's own, never forwarded
//! as received. The request leg leaves them out as it writes the upstream's
//! head (`forward::upstream_head`), the response leg as it parses the
//! upstream's (`h1`), so neither edits a header map afterwards.

use http::header::{self, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The connection-specific fields, plus the legacy ones.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Every hop-by-hop name starts with one of these letters; most headers
    // are ruled out by their first byte.
    matches!(name.as_str().as_bytes()[0], b'c' | b'k' | b'p' | b't' | b'u') && HOP_BY_HOP.contains(&name)
}

/// The names a `Connection` value lists for removal: readable tokens that
/// are not empty, not hop-by-hop (those go anyway) and not `Host`, which is
/// never removed: `Connection: host` would otherwise send the upstream an
/// HTTP/1.1 request without one (nginx ignores it as well).
pub fn connection_listed(value: &HeaderValue) -> impl Iterator<Item = &str> {
    let text = value.to_str().unwrap_or("");
    text.split(',').map(str::trim).filter(|token| {
        !token.is_empty()
            && !token.eq_ignore_ascii_case("host")
            && !HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_filter_covers_every_hop_by_hop_name() {
        for name in HOP_BY_HOP {
            assert!(b"ckptu".contains(&name.as_str().as_bytes()[0]), "{name}");
            assert!(is_hop_by_hop(name));
        }
        assert!(!is_hop_by_hop(&header::CONTENT_LENGTH) && !is_hop_by_hop(&header::HOST));
    }

    #[test]
    fn connection_lists_names_but_never_host_or_hop_by_hop_ones() {
        let listed =
            |v: &'static str| connection_listed(&HeaderValue::from_static(v)).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(listed("keep-alive, X-Secret ,, close"), ["X-Secret", "close"], "a field named close goes too");
        assert_eq!(listed("Host, x-a, Upgrade"), ["x-a"]);
        assert!(connection_listed(&HeaderValue::from_bytes(b"x-a, \xff").unwrap()).next().is_none(), "unreadable");
    }
}
