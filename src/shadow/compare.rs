//! Comparing two answers to the same request (docs/src/shadow.md, "The
//! comparison"): the status, the headers not ignored, and the body — JSON
//! field by field, anything else byte for byte. Pure: no I/O, no clock.
//!
//! serde_json parses and compares the values (`Value`'s equality is the
//! JSON one: object key order and `12.5` vs `12.50` do not count); the walk
//! is ours because it must name every differing field by pointer, skip the
//! `ignore` patterns (with `*`), compare `unordered` arrays as multisets and
//! collapse array indices for the per-field statistics, which no diff
//! crate does together (json-patch's `diff`, for one, drops the old
//! values and reports an array's reorder as removals and additions).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use serde_json::Value;

use crate::config::FieldPattern;
use crate::proxy::hop_by_hop;

/// Headers never compared: they differ between any two answers (dates,
/// ids, cookies, cache validators), describe the connection rather than the
/// answer (lengths; the hop-by-hop ones are [`hop_by_hop::is_hop_by_hop`]),
/// or are grayshift's own.
pub const ALWAYS_IGNORED: [&str; 13] = [
    "date",
    "server",
    "set-cookie",
    "age",
    "expires",
    "etag",
    "last-modified",
    "via",
    "x-request-id",
    "content-length",
    "alt-svc",
    "x-gray-pool",
    "x-grayshift-shadow",
];

/// One side's answer as kept for the comparison (the body at most
/// `shadow.max_body`).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the comparison is told to leave out or read differently.
pub struct Rules<'a> {
    pub ignore: &'a [FieldPattern],
    pub ignore_headers: &'a [HeaderName],
    pub unordered: &'a [FieldPattern],
}

/// A field whose value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where: `status`, `header:<name>`, `body`, or a JSON pointer (`/items/3/total`).
    pub path: String,
    /// The same with array indices collapsed to `*` (`/items/*/total`):
    /// the field the statistics are kept for.
    pub field: String,
    /// Each side's value as text (JSON text for a JSON value); `None` where
    /// the field is absent.
    pub left: Option<String>,
    pub right: Option<String>,
}

impl Difference {
    fn plain(path: &str, left: Option<String>, right: Option<String>) -> Difference {
        Difference { path: path.to_string(), field: path.to_string(), left, right }
    }
}

/// Every field that differs between `left` and `right`. A differing status
/// is the whole difference: the bodies of a 404 and a 200 are not two
/// versions of one document.
pub fn compare(left: &Answer, right: &Answer, rules: &Rules) -> Vec<Difference> {
    if left.status != right.status {
        return vec![Difference::plain("status", Some(left.status.to_string()), Some(right.status.to_string()))];
    }
    let mut out = Vec::new();
    compare_headers(&left.headers, &right.headers, rules, &mut out);
    match (json_of(left), json_of(right)) {
        (Some(l), Some(r)) => {
            let mut walk = Walk { rules, path: Vec::new(), field: Vec::new(), out: &mut out };
            walk.value(&l, &r);
        }
        _ if left.body != right.body => {
            out.push(Difference::plain("body", Some(lossy(&left.body)), Some(lossy(&right.body))));
        }
        _ => {}
    }
    out
}

fn compare_headers(left: &HeaderMap, right: &HeaderMap, rules: &Rules, out: &mut Vec<Difference>) {
    let ignored = |name: &HeaderName| {
        ALWAYS_IGNORED.contains(&name.as_str())
            || hop_by_hop::is_hop_by_hop(name)
            || rules.ignore_headers.contains(name)
    };
    let joined = |map: &HeaderMap, name: &HeaderName| {
        let values: Vec<String> = map.get_all(name).iter().map(|v| lossy(v.as_bytes())).collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    // Each name once, in a stable order: the left's, then the right's own.
    let mut names: Vec<&HeaderName> = left.keys().chain(right.keys().filter(|n| !left.contains_key(*n))).collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in names.into_iter().filter(|n| !ignored(n)) {
        let (l, r) = (joined(left, name), joined(right, name));
        if l != r {
            out.push(Difference::plain(&format!("header:{}", name.as_str()), l, r));
        }
    }
}

/// The body as JSON, when its Content-Type says JSON and it parses.
fn json_of(answer: &Answer) -> Option<Value> {
    let content_type = answer.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return None;
    }
    serde_json::from_slice(&answer.body).ok()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The recursive walk over two JSON values, with the path it is at.
struct Walk<'r, 'o> {
    rules: &'r Rules<'r>,
    /// Unescaped segments, for matching the patterns.
    path: Vec<String>,
    /// The same with array indices as `*`.
    field: Vec<String>,
    out: &'o mut Vec<Difference>,
}

impl Walk<'_, '_> {
    fn value(&mut self, left: &Value, right: &Value) {
        if !self.path.is_empty() && self.rules.ignore.iter().any(|p| p.covers(&self.path)) {
            return;
        }
        match (left, right) {
            (Value::Object(l), Value::Object(r)) => {
                for (key, lv) in l {
                    self.child(key.clone(), key.clone(), Some(lv), r.get(key));
                }
                for (key, rv) in r.iter().filter(|(k, _)| !l.contains_key(*k)) {
                    self.child(key.clone(), key.clone(), None, Some(rv));
                }
            }
            (Value::Array(l), Value::Array(r)) if self.is_unordered() && multiset(l) != multiset(r) => {
                self.differ(Some(left), Some(right));
            }
            (Value::Array(_), Value::Array(_)) if self.is_unordered() => {}
            (Value::Array(l), Value::Array(r)) => {
                for i in 0..l.len().max(r.len()) {
                    self.child(i.to_string(), "*".to_string(), l.get(i), r.get(i));
                }
            }
            _ if left != right => self.differ(Some(left), Some(right)),
            _ => {}
        }
    }

    fn child(&mut self, segment: String, field: String, left: Option<&Value>, right: Option<&Value>) {
        self.path.push(segment);
        self.field.push(field);
        match (left, right) {
            (Some(l), Some(r)) => self.value(l, r),
            (l, r) => {
                if !self.rules.ignore.iter().any(|p| p.covers(&self.path)) {
                    self.differ(l, r);
                }
            }
        }
        self.path.pop();
        self.field.pop();
    }

    fn is_unordered(&self) -> bool {
        self.rules.unordered.iter().any(|p| p.matches(&self.path))
    }

    fn differ(&mut self, left: Option<&Value>, right: Option<&Value>) {
        self.out.push(Difference {
            path: pointer(&self.path),
            field: pointer(&self.field),
            left: left.map(Value::to_string),
            right: right.map(Value::to_string),
        });
    }
}

/// An RFC 6901 pointer from unescaped segments.
fn pointer(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&s.replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// An array as a multiset: its elements' canonical texts, sorted (one
/// sort, not a search per element).
fn multiset(items: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = items.iter().map(canonical).collect();
    texts.sort_unstable();
    texts
}

/// JSON text with object keys sorted, so equal values have equal texts
/// whatever order their keys came in.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, canonical(v))).collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> =
                entries.into_iter().map(|(k, v)| format!("{}:{v}", Value::String(k.clone()))).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn json(status: u16, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Answer { status, headers, body: Bytes::from(body.to_string()) }
    }

    fn pats(list: &[&str]) -> Vec<FieldPattern> {
        list.iter().map(|p| FieldPattern::parse(p).unwrap()).collect()
    }

    fn diff(l: &Answer, r: &Answer, ignore: &[&str], unordered: &[&str]) -> Vec<(String, String)> {
        let (ignore, unordered) = (pats(ignore), pats(unordered));
        let rules = Rules { ignore: &ignore, ignore_headers: &[], unordered: &unordered };
        compare(l, r, &rules).into_iter().map(|d| (d.path, d.field)).collect()
    }

    #[test]
    fn json_fields_differ_by_pointer_with_indices_collapsed() {
        let l =
            json(200, r#"{"id": 1, "total": 12.5, "items": [{"sku": "a", "n": 1}, {"sku": "b", "n": 2}], "a/b": 1}"#);
        let r =
            json(200, r#"{"total": 13.0, "id": 1, "items": [{"sku": "a", "n": 1}, {"sku": "b", "n": 3}], "a/b": 2}"#);
        assert_eq!(
            diff(&l, &r, &[], &[]),
            vec![
                ("/a~1b".into(), "/a~1b".into()),
                ("/items/1/n".into(), "/items/*/n".into()),
                ("/total".into(), "/total".into())
            ]
        );
        // Key order and 12.5 vs 12.50 are not differences.
        assert!(diff(&l, &json(200, &String::from_utf8_lossy(&l.body).replace("12.5", "12.50")), &[], &[]).is_empty());
        let d = compare(&l, &r, &Rules { ignore: &[], ignore_headers: &[], unordered: &[] });
        let total = d.iter().find(|d| d.path == "/total").unwrap();
        assert_eq!((total.left.as_deref(), total.right.as_deref()), (Some("12.5"), Some("13.0")));
    }

    #[test]
    fn missing_fields_have_no_value_on_their_side() {
        let d = compare(
            &json(200, r#"{"a": 1, "list": [1]}"#),
            &json(200, r#"{"b": "x", "list": [1, 2]}"#),
            &Rules { ignore: &[], ignore_headers: &[], unordered: &[] },
        );
        let by_path = |p: &str| d.iter().find(|d| d.path == p).map(|d| (d.left.clone(), d.right.clone())).unwrap();
        assert_eq!(by_path("/a"), (Some("1".into()), None));
        assert_eq!(by_path("/b"), (None, Some("\"x\"".into())));
        assert_eq!(by_path("/list/1"), (None, Some("2".into())));
    }

    #[test]
    fn ignore_patterns_take_a_star_for_one_segment() {
        let l = json(200, r#"{"meta": {"served_at": 1}, "items": [{"etag": "x", "v": 1}, {"etag": "y", "v": 2}]}"#);
        let r = json(200, r#"{"meta": {"served_at": 2}, "items": [{"etag": "z", "v": 1}, {"etag": "w", "v": 5}]}"#);
        assert_eq!(
            diff(&l, &r, &["/meta/served_at", "/items/*/etag"], &[]),
            vec![("/items/1/v".into(), "/items/*/v".into())]
        );
        assert!(diff(&l, &r, &["/meta", "/items"], &[]).is_empty(), "a pattern covers its subtree");
        assert_eq!(
            diff(&l, &r, &["/items/*/etag", "/items/*/v"], &[]),
            vec![("/meta/served_at".into(), "/meta/served_at".into())]
        );
    }

    #[test]
    fn unordered_arrays_are_multisets() {
        let l = json(200, r#"{"tags": ["a", "b", "b", {"x": 1, "y": 2}]}"#);
        let same = json(200, r#"{"tags": [{"y": 2, "x": 1}, "b", "a", "b"]}"#);
        let fewer = json(200, r#"{"tags": ["a", "b", {"x": 1, "y": 2}, "c"]}"#);
        assert!(diff(&l, &same, &[], &["/tags"]).is_empty());
        assert_eq!(diff(&l, &fewer, &[], &["/tags"]), vec![("/tags".into(), "/tags".into())], "b twice is not b once");
        assert_eq!(diff(&l, &same, &[], &[]).len(), 3, "ordered by default: index by index (1 is b both times)");
        let nested = json(200, r#"{"o": [{"t": [1, 2]}, {"t": [3]}]}"#);
        let nested2 = json(200, r#"{"o": [{"t": [2, 1]}, {"t": [3]}]}"#);
        assert!(diff(&nested, &nested2, &[], &["/o/*/t"]).is_empty());
    }

    #[test]
    fn status_headers_and_plain_bodies() {
        assert_eq!(diff(&json(404, "nope"), &json(200, "{}"), &[], &[]), vec![("status".into(), "status".into())]);
        let mut l = json(200, "{}");
        let mut r = json(200, "{}");
        l.headers.insert(header::DATE, HeaderValue::from_static("Mon, 07 Dec 2026 10:00:00 GMT"));
        r.headers.insert(header::DATE, HeaderValue::from_static("Mon, 07 Dec 2026 10:00:01 GMT"));
        l.headers.insert("x-request-id", HeaderValue::from_static("1"));
        l.headers.insert("x-version", HeaderValue::from_static("1"));
        r.headers.insert("x-version", HeaderValue::from_static("2"));
        r.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(
            diff(&l, &r, &[], &[]),
            vec![
                ("header:cache-control".into(), "header:cache-control".into()),
                ("header:x-version".into(), "header:x-version".into())
            ]
        );
        let x_version = [HeaderName::from_static("x-version")];
        let rules = Rules { ignore: &[], ignore_headers: &x_version, unordered: &[] };
        assert_eq!(compare(&l, &r, &rules).len(), 1, "ignore_headers adds to the built-in list");
        r.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r.headers.remove(header::CACHE_CONTROL);
        assert_eq!(
            diff(&l, &r, &[], &["/x"]),
            vec![
                ("header:content-type".into(), "header:content-type".into()),
                ("header:x-version".into(), "header:x-version".into())
            ],
            "same bytes, so no body difference"
        );
        let text = |b: &str| Answer { status: 200, headers: HeaderMap::new(), body: Bytes::from(b.to_string()) };
        assert_eq!(diff(&text("abc"), &text("abd"), &[], &[]), vec![("body".into(), "body".into())]);
        assert!(diff(&text("abc"), &text("abc"), &[], &[]).is_empty());
    }
}
