//! What the request path knows of the client connection a request came on,
//! made once per connection by the listener and read by every request.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's IP as text, made once per connection: it is the
    /// X-Forwarded-For entry (and the routing key of last resort) of every
    /// request on it.
    pub peer_text: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let text = IpText::new(peer.ip());
        let peer_text = HeaderValue::from_bytes(text.as_bytes()).expect("IP text is a valid header value");
        ConnInfo { peer, tls, peer_text }
    }
}

/// A client IP rendered as text without a heap allocation.
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    /// The same text as `ip.to_string()`. IPv4 (by far the most common)
    /// is written digit by digit; `fmt` machinery costs several times more.
    pub fn new(ip: IpAddr) -> Self {
        let mut buf = [0u8; 48];
        let len = match ip {
            IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    if octet >= 100 {
                        buf[len] = b'0' + octet / 100;
                        len += 1;
                    }
                    if octet >= 10 {
                        buf[len] = b'0' + octet / 10 % 10;
                        len += 1;
                    }
                    buf[len] = b'0' + octet % 10;
                    len += 1;
                }
                len
            }
            IpAddr::V6(_) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut buf[..]);
                write!(cursor, "{ip}").expect("an IP address fits in 48 bytes");
                cursor.position() as usize
            }
        };
        IpText { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
