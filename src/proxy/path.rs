//! How grayshift reads a request path (README "How grayshift reads a
//! path"), for HTTP/1.1 and HTTP/2 alike:
//!
//! 1. Dot segments (`.`, `..`, also escaped as `%2E`) are resolved, RFC 3986
//!    §5.2.4, and the resolved path is what goes upstream: an app that does
//!    not resolve them (Werkzeug routes `/a/checkout/..` to `checkout/<path>`)
//!    then sees the same path grayshift matched.
//! 2. An escaped slash (`%2F`, `%5C`, or a bare `\`) is data to grayshift but
//!    a separator to many apps (nginx, Werkzeug decode `%2F`). When that
//!    reading changes the answer — read as `/`, the path has a dot segment,
//!    or falls under `[features] paths` when the sent path does not (or the
//!    other way round) — `features.escaped_slashes` decides:
//!    `reject` (400) or `decode` (`/` goes upstream and is matched). Any
//!    other escaped slash goes upstream as sent.
//! 3. `;` path parameters (also `%3B`) are stripped from each segment by
//!    Tomcat, Jetty and Spring before they resolve `..`. When stripping
//!    them (alone or with escaped slashes read as `/`) makes a dot segment
//!    or changes whether the path is under features, the same setting
//!    decides: `reject` (400) or `decode` (stripped, slashes decoded,
//!    resolved). Any other parameter goes upstream as sent.
//! 4. L2 matches [`normalize`] of that path: escaped unreserved characters
//!    decoded, repeated slashes merged, as frameworks route it.
//!
//! An ordinary path (no `%`, no `\`, no `;`, no dot segment) costs one scan and no
//! allocation; only a path that is rewritten allocates.

use http::uri::{PathAndQuery, Uri};
use http::Method;

use crate::config::{EscapedSlashes, FeaturesConfig};
pub(crate) use crate::path_normal::hex;
pub use crate::path_normal::normalize;
use crate::proxy::framing::FramingError;

/// The target to send upstream in place of `uri`'s, if it must change
/// (`None`: the client's goes as sent). `Err`: refused, 400.
pub fn upstream_uri(method: &Method, uri: &Uri, features: &FeaturesConfig) -> Result<Option<Uri>, FramingError> {
    let path = uri.path();
    // `*` (OPTIONS only) is the framing check's; there is nothing to resolve.
    if !path.starts_with('/') {
        return Ok(None);
    }
    let Some(resolved) = resolve(path, features.escaped_slashes, |p| features.matches(method, p))? else {
        return Ok(None);
    };
    let target = match uri.query() {
        Some(query) => format!("{resolved}?{query}"),
        None => resolved,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).map_err(|_| FramingError::BadTarget)?);
    Uri::from_parts(parts).map(Some).map_err(|_| FramingError::BadTarget)
}

/// Steps 1 to 3 of the module's rule on an absolute path: the path to
/// send instead (`None`: `path` itself). `under_features` says whether a
/// path (free of dot segments) is one L2 sheds.
pub fn resolve(
    path: &str,
    escaped_slashes: EscapedSlashes,
    under_features: impl Fn(&str) -> bool,
) -> Result<Option<String>, FramingError> {
    if is_plain(path.as_bytes()) {
        return Ok(None);
    }
    let resolved = remove_dot_segments(path);
    let sent = resolved.as_deref().unwrap_or(path);
    let Some((error, read)) = other_reading(sent, under_features) else {
        return Ok(resolved);
    };
    match escaped_slashes {
        EscapedSlashes::Reject => Err(error),
        EscapedSlashes::Decode => Ok(Some(remove_dot_segments(&read).unwrap_or(read))),
    }
}

/// Whether an upstream could read `sent` (free of dot segments) as a
/// different path than grayshift does: escaped slashes as `/`, `;`
/// parameters stripped from each segment, or both in either order (Tomcat
/// strips them from the raw path and then decodes; others decode first).
/// Some reading changes the answer when it has a dot segment, or is under
/// features when `sent` is not (or the other way round). Then: why it is
/// refused, and the path read with parameters stripped and slashes
/// decoded (dot segments not yet resolved), the one `decode` sends.
fn other_reading(sent: &str, under_features: impl Fn(&str) -> bool) -> Option<(FramingError, String)> {
    let slashes = has_escaped_slash(sent.as_bytes());
    let params = has_param(sent.as_bytes());
    if !slashes && !params {
        return None;
    }
    let sent_under = under_features(sent);
    let changes = |reading: &str| remove_dot_segments(reading).is_some() || under_features(reading) != sent_under;
    let slashed = slashes.then(|| decode_slashes(sent));
    if !params {
        let slashed = slashed.expect("an escaped slash");
        return changes(&slashed).then_some((FramingError::EscapedSlash, slashed));
    }
    let stripped = strip_params(sent);
    if !slashes {
        return changes(&stripped).then_some((FramingError::PathParameter, stripped));
    }
    let slashed = slashed.expect("an escaped slash");
    let read = decode_slashes(&stripped);
    let error = if changes(&slashed) {
        FramingError::EscapedSlash
    } else if changes(&stripped) || changes(&read) || changes(&strip_params(&slashed)) {
        FramingError::PathParameter
    } else {
        return None;
    };
    Some((error, read))
}

/// Nothing to resolve: no `%`, no `\`, no `;`, no segment starting with a dot.
fn is_plain(path: &[u8]) -> bool {
    !path.iter().enumerate().any(|(i, &b)| match b {
        b'%' | b'\\' | b';' => true,
        b'.' => i > 0 && path[i - 1] == b'/',
        _ => false,
    })
}

/// How many dots `segment` is made of, if it is only dots (`.` or `%2E`).
fn dots(segment: &[u8]) -> usize {
    let mut rest = segment;
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return 0,
        };
        count += 1;
    }
    count
}

/// RFC 3986 §5.2.4 on an absolute path, with `%2E` read as `.`; empty
/// segments are kept (`/a//..` is `/a/`), `..` above the root stays at the
/// root, and a final dot segment leaves a trailing `/`. `None`: no dot
/// segment, nothing to do.
fn remove_dot_segments(path: &str) -> Option<String> {
    let is_dot_segment = |s: &str| matches!(dots(s.as_bytes()), 1 | 2);
    if !path.split('/').skip(1).any(is_dot_segment) {
        return None;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match dots(segment.as_bytes()) {
            1 => {}
            2 => {
                kept.pop();
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        if i + 1 == segments.len() {
            kept.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if kept.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `%2F`, `%5C` (any case) or a bare `\`.
fn has_escaped_slash(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| b == b'\\' || (b == b'%' && escaped_slash_at(path, i)))
}

fn escaped_slash_at(path: &[u8], i: usize) -> bool {
    matches!(path.get(i + 1..i + 3), Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C']))
}

/// A `;` or `%3B` (any case): the start of a segment's parameters to
/// Tomcat, Jetty and Spring.
fn has_param(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| b == b';' || (b == b'%' && param_at(path, i)))
}

fn param_at(path: &[u8], i: usize) -> bool {
    matches!(path.get(i + 1..i + 3), Some([b'3', b'b' | b'B']))
}

/// Each segment cut at its first `;` or `%3B`, as Tomcat strips path
/// parameters (`/a;x/..;/b` is `/a/../b`).
fn strip_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let bytes = segment.as_bytes();
        let end = (0..bytes.len()).find(|&j| bytes[j] == b';' || (bytes[j] == b'%' && param_at(bytes, j)));
        out.push_str(&segment[..end.unwrap_or(segment.len())]);
    }
    out
}

/// Every escaped slash as `/`.
fn decode_slashes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && escaped_slash_at(bytes, i) {
            out.push('/');
            i += 3;
        } else if bytes[i] == b'\\' {
            out.push('/');
            i += 1;
        } else {
            let next = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + next]);
            i += next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn variants_of_a_path_normalise_to_it() {
        for variant in [
            "//api/v2/checkout",
            "/api/v2//checkout",
            "/api/v2/./checkout",
            "/api/v1/../v2/checkout",
            "/api/v2/%63heckout",
            "/api/v2/%63%68eckout",
            "/api/%2E/v2/checkout",
            "/x/%2e%2E/api/v2/checkout",
            "/../api/v2/checkout",
            "///api///v2///checkout",
        ] {
            assert_eq!(normalize(variant), "/api/v2/checkout", "{variant}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/api/v2/checkout", "/a/b/", "/.well-known/x", "/a/..b/c.", "/a/.../b", "*", ""] {
            assert!(matches!(normalize(path), Cow::Borrowed(_)), "{path}");
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(normalize("/a/b/"), "/a/b/");
        assert_eq!(normalize("/a//"), "/a/");
        assert_eq!(normalize("/a/."), "/a/");
        assert_eq!(normalize("/a/b/.."), "/a/");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize("//"), "/");
        assert_eq!(normalize("/a%2fb"), "/a%2Fb", "an escaped slash stays escaped");
        assert_eq!(normalize("/a%2Fb/../c"), "/c", "and is one segment");
        assert_eq!(normalize("/a%zz/%4"), "/a%zz/%4", "broken escapes stay");
        assert_eq!(normalize("/%41%7e%20"), "/A~%20");
    }

    const CHECKOUT: &str = "/api/v2/checkout";

    /// `resolve` with `[features] paths = ["/api/v2/checkout"]`.
    fn read(path: &str, mode: EscapedSlashes) -> Result<Option<String>, FramingError> {
        resolve(path, mode, |p| normalize(p).starts_with(CHECKOUT))
    }

    fn sent(path: &str, mode: EscapedSlashes) -> String {
        read(path, mode).unwrap().unwrap_or_else(|| path.to_string())
    }

    #[test]
    fn ordinary_paths_are_left_alone() {
        for path in ["/", "/api/v2/checkout", "/a/b/", "/.well-known/x", "/a/..b/c.", "/a/.../b", "/a//b", "/caf%C3%A9"]
        {
            assert_eq!(read(path, EscapedSlashes::Reject), Ok(None), "{path}");
        }
        assert!(is_plain(b"/api/v2/checkout?x=1"));
    }

    #[test]
    fn dot_segments_are_resolved_for_the_upstream() {
        let mode = EscapedSlashes::Reject;
        assert_eq!(sent("/api/v2/checkout/..", mode), "/api/v2/");
        assert_eq!(sent("/api/v2/checkout/.", mode), "/api/v2/checkout/");
        assert_eq!(sent("/api/v2/checkout/%2e%2E", mode), "/api/v2/");
        assert_eq!(sent("/api/v2/checkout/.%2e/x", mode), "/api/v2/x");
        assert_eq!(sent("/api/v1/../v2/checkout", mode), "/api/v2/checkout");
        assert_eq!(sent("/../../api", mode), "/api", "above the root stays at the root");
        assert_eq!(sent("/..", mode), "/");
        assert_eq!(sent("/a//..", mode), "/a/", "an empty segment is a segment");
        assert_eq!(sent("/a/%252e%252e/b", mode), "/a/%252e%252e/b", "double encoding is data");
        assert_eq!(sent("/a/b%2e/c", mode), "/a/b%2e/c");
    }

    #[test]
    fn escaped_slashes_under_features_are_refused_or_decoded() {
        for path in [
            "/api/v2%2fcheckout",
            "/api%2Fv2%2Fcheckout",
            "/%2fapi/v2/checkout",
            "/api/v2%5Ccheckout",
            "/api\\v2\\checkout",
        ] {
            assert_eq!(read(path, EscapedSlashes::Reject), Err(FramingError::EscapedSlash), "{path}");
            assert_eq!(normalize(&sent(path, EscapedSlashes::Decode)), CHECKOUT, "{path}");
        }
        // Read as a separator it makes a dot segment: ambiguous anywhere.
        assert_eq!(read("/api/v2/checkout%2F..", EscapedSlashes::Reject), Err(FramingError::EscapedSlash));
        assert_eq!(sent("/api/v2/checkout%2F..", EscapedSlashes::Decode), "/api/v2/");
        assert_eq!(read("/static/a%2f..%2Fb", EscapedSlashes::Reject), Err(FramingError::EscapedSlash));
        assert_eq!(sent("/static/a%2f..%2Fb", EscapedSlashes::Decode), "/static/b");
        // Elsewhere an escaped slash is data and goes as sent, in both modes;
        // so is one in a path already under features either way.
        for mode in [EscapedSlashes::Reject, EscapedSlashes::Decode] {
            assert_eq!(read("/api/v2/checkout/items/AB%2F12", mode), Ok(None));
            assert_eq!(read("/api/v2/checkout%5Citems", mode), Ok(None));
            assert_eq!(read("/files/a%2Fb", mode), Ok(None));
            assert_eq!(sent("/files/x/../a%2Fb", mode), "/files/a%2Fb");
        }
    }

    #[test]
    fn path_parameters_that_change_the_path_are_refused_or_stripped() {
        // Stripped as Tomcat does, they fall under features or make a dot segment.
        for path in
            ["/api;x/v2/checkout", "/public/..;/api/v2/checkout", "/api%3Bx/v2/checkout", "/api/v2/checkout;a/..;b"]
        {
            assert_eq!(read(path, EscapedSlashes::Reject), Err(FramingError::PathParameter), "{path}");
        }
        assert_eq!(sent("/api;x/v2/checkout", EscapedSlashes::Decode), CHECKOUT);
        assert_eq!(sent("/public/..;/api/v2/checkout", EscapedSlashes::Decode), CHECKOUT);
        assert_eq!(sent("/api/v2/checkout;a/..;b", EscapedSlashes::Decode), "/api/v2/");
        assert_eq!(sent("/a;x%2F..", EscapedSlashes::Decode), "/a", "parameters stripped from the raw segment first");
        assert_eq!(read("/a;x%2F..", EscapedSlashes::Reject), Err(FramingError::EscapedSlash));
        // Both ways the same answer: data, as sent, in both modes.
        for mode in [EscapedSlashes::Reject, EscapedSlashes::Decode] {
            for path in ["/api/v2/checkout;jsessionid=1", "/files/a;v=2/b", "/api/v2/checkout/items/A%3BB", "/x;y%2Fz"]
            {
                assert_eq!(read(path, mode), Ok(None), "{path}");
            }
        }
    }

    #[test]
    fn the_upstream_uri_keeps_query_and_authority() {
        let features = crate::config::parse(
            "[split]\npercent = 0\ngroup = \"g\"\n[pools.stable]\nendpoints = [\"127.0.0.1:1\"]\n\
             [pools.new]\nendpoints = [\"127.0.0.1:2\"]\n[features]\npaths = [\"/api/v2/checkout\"]\n",
            "t",
        )
        .unwrap()
        .features;
        let get = |uri: &str| upstream_uri(&Method::GET, &uri.parse().unwrap(), &features);
        assert_eq!(get("/a/./b?x=/../y").unwrap().unwrap(), "/a/b?x=/../y");
        assert_eq!(get("http://h.example:81/a/../b?q").unwrap().unwrap(), "http://h.example:81/b?q");
        assert_eq!(get("/a/b?x=/../y").unwrap(), None);
        assert_eq!(get("*").unwrap(), None);
        assert_eq!(get("/api/v2%2Fcheckout?x").unwrap_err(), FramingError::EscapedSlash);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn percent_decode(path: &str) -> String {
            let bytes = path.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                    (b'%', Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                    }
                    (b, _, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).unwrap()
        }

        fn merge_slashes(path: &str) -> String {
            let mut out = String::new();
            for c in path.chars() {
                if !(c == '/' && out.ends_with('/')) {
                    out.push(c);
                }
            }
            out
        }

        /// How apps route a target: Werkzeug (decode, no dot segments
        /// resolved), nginx (decode, merge, resolve), both again for an
        /// app that takes `\` for `/`, Tomcat (strip `;` parameters from
        /// each raw segment, decode, resolve) and an app that strips them
        /// after decoding.
        fn app_readings(target: &str) -> Vec<String> {
            let decoded = merge_slashes(&percent_decode(target));
            let backslashed = merge_slashes(&decoded.replace('\\', "/"));
            let resolved = |p: &str| remove_dot_segments(p).map_or_else(|| p.to_string(), |r| merge_slashes(&r));
            let tomcat = merge_slashes(&percent_decode(&strip_params(target)));
            let decoded_then_stripped = merge_slashes(&strip_params(&decoded));
            vec![
                resolved(&decoded),
                resolved(&backslashed),
                resolved(&tomcat),
                resolved(&decoded_then_stripped),
                decoded,
                backslashed,
            ]
        }

        fn segment() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "",
                ".",
                "..",
                "%2e",
                "%2E.",
                ".%2e",
                "%2e%2E",
                "api",
                "v2",
                "checkout",
                "%63heckout",
                "api%2Fv2",
                "v2%2fcheckout",
                "%2F",
                "%5c",
                "\\",
                "x",
                "%252F",
                "..%2F",
                "%2F..",
                "..;",
                "..;x",
                ".;",
                "api;x",
                "v2%3bx",
                "checkout;jsessionid=1",
                ";",
                "%3B",
                "x;%2F",
            ])
        }

        proptest! {
            #[test]
            fn no_app_reading_reaches_a_shed_path_grayshift_did_not_match(
                segments in prop::collection::vec(segment(), 1..7),
                decode in any::<bool>(),
            ) {
                let path = format!("/{}", segments.join("/"));
                let mode = if decode { EscapedSlashes::Decode } else { EscapedSlashes::Reject };
                let Ok(resolved) = read(&path, mode) else { return Ok(()) };
                let upstream = resolved.unwrap_or_else(|| path.clone());
                // What goes upstream is settled: reading it again changes nothing.
                prop_assert_eq!(read(&upstream, mode), Ok(None), "{} → {}", path, upstream);
                let matched = normalize(&upstream).starts_with(CHECKOUT);
                for reading in app_readings(&upstream) {
                    prop_assert!(
                        matched || !reading.starts_with(CHECKOUT),
                        "{} → {}: an app reads {} but L2 would not shed it", path, upstream, reading
                    );
                }
            }
        }
    }
}
