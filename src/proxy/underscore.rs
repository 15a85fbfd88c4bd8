//! Header names with `_`: CGI, WSGI and Rack turn `-` into `_`, so an
//! upstream reads `X_Gray_Pool` as `X-Gray-Pool`. A client must not get a
//! value past grayshift that way next to (or instead of) the one grayshift
//! sets or strips.

use http::header::HeaderName;

use crate::proxy::hop_by_hop::HOP_BY_HOP;

/// The names grayshift sets or strips, other than the hop-by-hop ones.
const OURS: [&str; 8] = [
    "x-gray-pool",
    "x-grayshift-shadow",
    "x-gray-bucket",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "content-length",
    "host",
];

/// Whether the name has an `_` at all. Asked of every header of every
/// request, so eight bytes at a time (a word with a zero byte where it
/// had `_`), with the last word overlapping the one before: `memchr` cost
/// ~4.5 ns per name, most of it the call.
#[inline]
pub fn has_underscore(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    if name.len() < 8 {
        // A plain loop: `contains` would call memchr.
        for &b in name {
            if b == b'_' {
                return true;
            }
        }
        return false;
    }
    let word = |at: usize| {
        let x = u64::from_le_bytes(name[at..at + 8].try_into().expect("eight bytes")) ^ 0x5f5f_5f5f_5f5f_5f5f;
        x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
    };
    let mut at = 0;
    while at + 8 < name.len() {
        if word(at) {
            return true;
        }
        at += 8;
    }
    word(name.len() - 8)
}

/// Whether `name`, with `_` read as `-`, is a name grayshift sets or strips
/// (header names arrive lower-cased).
pub fn is_ours(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    let same = |ours: &str| {
        ours.len() == name.len() && ours.bytes().zip(name).all(|(o, &n)| o == n || (o == b'-' && n == b'_'))
    };
    OURS.iter().any(|o| same(o)) || HOP_BY_HOP.iter().any(|h| same(h.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_of_our_names_are_ours() {
        for name in
            ["x_gray_pool", "x-gray_bucket", "x_forwarded_for", "transfer_encoding", "content_length", "keep_alive"]
        {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(has_underscore(&name) && is_ours(&name), "{name}");
        }
        for name in ["x_user_id", "x_gray_pools", "my_header"] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(has_underscore(&name) && !is_ours(&name), "{name}");
        }
        assert!(!has_underscore(&http::header::HOST));
        for len in 1..40 {
            for at in 0..len {
                let mut name = vec![b'a'; len];
                assert!(!has_underscore(&HeaderName::from_bytes(&name).unwrap()));
                name[at] = b'_';
                assert!(has_underscore(&HeaderName::from_bytes(&name).unwrap()), "{len} {at}");
            }
        }
    }
}
