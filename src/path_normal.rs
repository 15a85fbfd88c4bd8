//! The normal form in which L2 compares a request path with `[features]
//! paths` (docs/src/security.md, "How grayshift reads a path"). It sits
//! below both the config, which stores `[features] paths` in this form,
//! and the request path, which matches requests in it (`proxy/path.rs`).

use std::borrow::Cow;

/// `path` as L2 matches it: RFC 3986 §6.2.2 normalisation (escaped
/// unreserved characters decoded, other escapes upper-cased, dot segments
/// removed) plus repeated slashes merged, as Envoy's `normalize_path` and
/// `merge_slashes` do. Borrowed (one scan, no allocation) when there is
/// nothing to normalise. A path that does not start with `/` is left alone.
pub fn normalize(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || !needs_work(path.as_bytes()) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(merge_and_remove_dots(&decode_unreserved(path.as_bytes())))
}

/// Whether `path` has an escape, an empty segment or a dot segment.
fn needs_work(path: &[u8]) -> bool {
    let at = |i: usize| path.get(i).copied();
    path.iter().enumerate().any(|(i, &b)| match b {
        b'%' => true,
        b'/' => matches!(
            (at(i + 1), at(i + 2), at(i + 3)),
            (Some(b'/'), _, _) | (Some(b'.'), None | Some(b'/'), _) | (Some(b'.'), Some(b'.'), None | Some(b'/'))
        ),
        _ => false,
    })
}

/// The value of one hex digit (also read by the HTTP/1 server's chunk sizes).
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` of an unreserved character (RFC 3986 §2.3) becomes the character;
/// other valid escapes are upper-cased (`%2f` → `%2F`: still an escaped
/// slash, never a segment boundary); a broken `%` stays as it is.
fn decode_unreserved(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let escape = (path[i] == b'%').then(|| Some((hex(*path.get(i + 1)?)?, hex(*path.get(i + 2)?)?))).flatten();
        match escape {
            Some((hi, lo)) => {
                let c = hi << 4 | lo;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c);
                } else {
                    out.extend_from_slice(&[b'%', path[i + 1].to_ascii_uppercase(), path[i + 2].to_ascii_uppercase()]);
                }
                i += 3;
            }
            None => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments dropped (the
/// merged slashes); a trailing slash, or a final dot segment, leaves the
/// result ending in `/`.
fn merge_and_remove_dots(path: &[u8]) -> String {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for segment in path.split(|&b| b == b'/').skip(1) {
        trailing = true;
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => {
                segments.push(segment);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        // Only ASCII came in, and decoding produced ASCII.
        out.push_str(std::str::from_utf8(segment).unwrap_or(""));
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    out
}
