//! Hop-by-hop fields (RFC 9110 §7.6.1): a connection's own, never forwarded
//! as received. The request leg leaves them out as it writes the upstream's
//! head (`rewrite::upstream_head`), the response leg as it parses the
//! upstream's (`h1`), so neither edits a header map afterwards.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The settings of an h2c upgrade (RFC 9113 §3.2.1 calls it
/// connection-specific); never forwarded, as h2c upgrades are not.
pub static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The connection-specific fields, plus the legacy ones.
pub static HOP_BY_HOP: [&HeaderName; 10] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &HTTP2_SETTINGS,
];

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Every hop-by-hop name starts with one of these letters; most headers
    // are ruled out by their first byte (and `host` by one compare).
    match name.as_str().as_bytes()[0] {
        b'c' | b'k' | b'p' | b't' | b'u' => HOP_BY_HOP.contains(&name),
        b'h' => *name == HTTP2_SETTINGS,
        _ => false,
    }
}

/// The protocols an `Upgrade` is tunnelled for: WebSocket only. Anything
/// else (`h2c` above all: the client would then speak HTTP/2 to the
/// upstream past every rewrite and L2) is dropped with the other
/// hop-by-hop fields and the request goes as a plain HTTP/1.1 one.
pub fn upgrade_allowed(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"websocket")
}

/// True for a request asking to switch to a protocol grayshift tunnels
/// (WebSocket, see [`upgrade_allowed`]). Any other `Upgrade` is dropped
/// with the hop-by-hop fields.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).is_some_and(|v| upgrade_allowed(v.as_bytes()))
        && has_token(headers, &header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
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
            assert!(b"ckptuh".contains(&name.as_str().as_bytes()[0]), "{name}");
            assert!(is_hop_by_hop(name));
        }
        assert!(!is_hop_by_hop(&header::CONTENT_LENGTH) && !is_hop_by_hop(&header::HOST));
    }

    #[test]
    fn only_websocket_upgrades_are_allowed() {
        assert!(upgrade_allowed(b"websocket") && upgrade_allowed(b" WebSocket "));
        for other in [&b"h2c"[..], b"h2c, websocket", b"websocket, h2c", b"HTTP/2.0", b"TLS/1.2", b""] {
            assert!(!upgrade_allowed(other), "{}", String::from_utf8_lossy(other));
        }
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
