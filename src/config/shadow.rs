//! `[shadow]`: which requests are mirrored to the other side and how the
//! two answers are compared (docs/src/shadow.md). Every value is checked
//! here, with the span of the one at fault: a share outside 0–100 %, a
//! method that is not one, an unsafe method without `unsafe_methods`, a
//! JSON pointer that is not RFC 6901, a size or a header name that does
//! not parse.

use std::time::Duration;

use http::header::HeaderName;
use http::Method;

use super::raw::{RawShadow, S};
use super::{invalid, positive_duration, Invalid};

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// As written (`"2%"`), for `/status`.
    pub sample_text: String,
    /// The share of eligible requests mirrored, in millionths (0..=1_000_000):
    /// compared with a 20-bit draw, no float on the request path.
    pub sample_ppm: u32,
    pub methods: Vec<Method>,
    /// Prefixes; empty = every path.
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub noise: bool,
    pub ignore: Vec<FieldPattern>,
    /// Beyond the built-in list (`crate::shadow::compare::ALWAYS_IGNORED`).
    pub ignore_headers: Vec<HeaderName>,
    pub unordered: Vec<FieldPattern>,
    pub max_body: usize,
    pub max_in_flight: usize,
    pub timeout: Duration,
}

impl ShadowConfig {
    /// The request is one `[shadow]` may mirror: its method is listed, its
    /// path is under `paths` (all when empty) and under no `exclude`.
    pub fn eligible(&self, method: &Method, path: &str) -> bool {
        self.methods.contains(method)
            && (self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str())))
            && !self.exclude.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// One segment of a [`FieldPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `*`: any one key or index.
    Any,
    /// A key or an index, unescaped (`~1` → `/`, `~0` → `~`).
    Key(String),
}

/// An RFC 6901 JSON pointer in which a segment `*` stands for any one key
/// or array index (`/items/*/etag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPattern {
    pub text: String,
    pub segments: Vec<Segment>,
}

impl FieldPattern {
    /// Parse a pointer; `""` (the whole document) is refused: ignoring
    /// everything is `[shadow]` removed, and arrays-as-sets at the root are
    /// written as `""` nowhere else in grayshift either.
    pub fn parse(text: &str) -> Result<FieldPattern, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with '/', e.g. \"/meta/served_at\" (RFC 6901)"
            ));
        };
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            if raw == "*" {
                segments.push(Segment::Any);
                continue;
            }
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => key.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => key.push('~'),
                        Some('1') => key.push('/'),
                        _ => {
                            return Err(format!(
                                "{text:?} is not a JSON pointer: '~' must be followed by 0 or 1 (\"~0\" is '~', \"~1\" is '/')"
                            ))
                        }
                    },
                }
            }
            segments.push(Segment::Key(key));
        }
        Ok(FieldPattern { text: text.to_string(), segments })
    }

    /// Whether the pattern names exactly the field at `path` (unescaped segments).
    pub fn matches<S: AsRef<str>>(&self, path: &[S]) -> bool {
        self.segments.len() == path.len() && self.covers(path)
    }

    /// Whether the pattern names the field at `path` or one of its parents.
    pub fn covers<S: AsRef<str>>(&self, path: &[S]) -> bool {
        self.segments.len() <= path.len()
            && self.segments.iter().zip(path).all(|(s, p)| match s {
                Segment::Any => true,
                Segment::Key(k) => k == p.as_ref(),
            })
    }
}

/// The methods mirrored by default: safe reads only.
const DEFAULT_METHODS: [Method; 2] = [Method::GET, Method::HEAD];

pub(super) fn validate(raw: &S<RawShadow>) -> Result<ShadowConfig, Invalid> {
    let r = raw.get_ref();
    let (sample_text, sample_ppm) = match &r.sample {
        None => ("100%".to_string(), 1_000_000),
        Some(s) => (s.get_ref().trim().to_string(), sample_ppm(s)?),
    };
    let unsafe_methods = r.unsafe_methods.unwrap_or(false);
    let methods = match &r.methods {
        None => DEFAULT_METHODS.to_vec(),
        Some(list) if list.get_ref().is_empty() => {
            return invalid(
                list.span(),
                "shadow.methods needs at least one method (the default is [\"GET\", \"HEAD\"])",
            )
        }
        Some(list) => list.get_ref().iter().map(|m| method(m, unsafe_methods)).collect::<Result<_, _>>()?,
    };
    let prefixes = |list: &[S<String>], key: &str| {
        list.iter()
            .map(|p| match p.get_ref().starts_with('/') {
                true => Ok(p.get_ref().clone()),
                false => invalid(p.span(), format!("shadow.{key} entry {:?} must start with '/'", p.get_ref())),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let patterns = |list: &[S<String>], key: &str| {
        list.iter()
            .map(|p| FieldPattern::parse(p.get_ref()).or_else(|e| invalid(p.span(), format!("shadow.{key}: {e}"))))
            .collect::<Result<Vec<_>, _>>()
    };
    let ignore_headers = r
        .ignore_headers
        .iter()
        .map(|h| {
            HeaderName::from_bytes(h.get_ref().trim().as_bytes()).or_else(|_| {
                invalid(h.span(), format!("invalid header name {:?} in shadow.ignore_headers", h.get_ref()))
            })
        })
        .collect::<Result<_, _>>()?;
    let max_body = match &r.max_body {
        None => 256 * 1024,
        Some(v) => size(v)?,
    };
    let max_in_flight = match &r.max_in_flight {
        None => 64,
        Some(v) if (1..=65_536).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => return invalid(v.span(), "shadow.max_in_flight must be between 1 and 65536"),
    };
    Ok(ShadowConfig {
        sample_text,
        sample_ppm,
        methods,
        paths: prefixes(&r.paths, "paths")?,
        exclude: prefixes(&r.exclude, "exclude")?,
        noise: r.noise.unwrap_or(false),
        ignore: patterns(&r.ignore, "ignore")?,
        ignore_headers,
        unordered: patterns(&r.unordered, "unordered")?,
        max_body,
        max_in_flight,
        timeout: positive_duration(&r.timeout, "2s")?,
    })
}

/// `"2%"`, `"0.5%"`, `"100%"` → millionths.
fn sample_ppm(v: &S<String>) -> Result<u32, Invalid> {
    let text = v.get_ref().trim();
    let percent = text.strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok());
    match percent {
        Some(p) if (0.0..=100.0).contains(&p) => Ok((p * 10_000.0).round() as u32),
        Some(_) => invalid(v.span(), format!("shadow.sample {text:?} must be between 0% and 100%")),
        None => invalid(v.span(), format!("shadow.sample {text:?} must be a percentage such as \"2%\" or \"0.5%\"")),
    }
}

/// A method of `shadow.methods`: one that exists, and safe unless the
/// config says `unsafe_methods = true` (a mirrored write runs twice).
fn method(m: &S<String>, unsafe_methods: bool) -> Result<Method, Invalid> {
    let name = m.get_ref().trim().to_ascii_uppercase();
    let known = ["GET", "HEAD", "OPTIONS", "TRACE", "POST", "PUT", "PATCH", "DELETE"];
    if !known.contains(&name.as_str()) {
        return invalid(
            m.span(),
            format!("unknown HTTP method {:?} in shadow.methods (use {})", m.get_ref(), known.join(", ")),
        );
    }
    let method = Method::from_bytes(name.as_bytes()).expect("a known method");
    if !method.is_safe() && !unsafe_methods {
        return invalid(
            m.span(),
            format!("shadow.methods lists {name}, which is not safe: a mirrored {name} runs twice, once on each side; set `unsafe_methods = true` if the apps skip side effects on X-Grayshift-Shadow"),
        );
    }
    Ok(method)
}

/// `"256KiB"`, `"1MiB"`, `"4096"` (bytes); at most 64 MiB.
fn size(v: &S<String>) -> Result<usize, Invalid> {
    let text = v.get_ref().trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_bytes = match unit.trim() {
        "" | "B" => Some(1),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        "KB" | "kB" => Some(1000),
        "MB" => Some(1_000_000),
        _ => None,
    };
    let bytes = number.parse::<usize>().ok().zip(unit_bytes).and_then(|(n, u)| n.checked_mul(u));
    match bytes {
        Some(b) if (1..=64 << 20).contains(&b) => Ok(b),
        Some(_) => invalid(v.span(), "shadow.max_body must be between 1 byte and 64MiB"),
        None => {
            invalid(v.span(), format!("invalid size {text:?}: write e.g. \"256KiB\", \"1MiB\" or a number of bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ConfigError};

    const BASE: &str = "[split]\npercent = 20\ngroup = \"g\"\n[pools.stable]\nendpoints = [\"127.0.0.1:8001\"]\n[pools.new]\nendpoints = [\"127.0.0.1:8002\"]\n[shadow]\n";

    fn with(lines: &str) -> Result<crate::config::Config, ConfigError> {
        parse(&format!("{BASE}{lines}\n"), "t.toml")
    }

    fn err(lines: &str) -> ConfigError {
        with(lines).expect_err("should be refused")
    }

    #[test]
    fn defaults_mirror_every_safe_read() {
        let c = with("").unwrap().shadow.unwrap();
        assert_eq!(c.methods, vec![Method::GET, Method::HEAD]);
        assert_eq!((c.sample_ppm, c.max_body, c.max_in_flight), (1_000_000, 256 * 1024, 64));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert!(!c.noise);
        assert!(c.eligible(&Method::GET, "/anything"));
        assert!(!c.eligible(&Method::POST, "/anything"), "POST is never mirrored by default");
        let c = with("sample = \"2.5%\"\npaths = [\"/api/\"]\nexclude = [\"/api/v2/checkout\"]\nmax_body = \"1MiB\"")
            .unwrap()
            .shadow
            .unwrap();
        assert_eq!((c.sample_ppm, c.max_body), (25_000, 1 << 20));
        assert!(c.eligible(&Method::GET, "/api/orders/1"));
        assert!(!c.eligible(&Method::GET, "/api/v2/checkout/7"));
        assert!(!c.eligible(&Method::GET, "/health"));
    }

    #[test]
    fn errors_point_at_the_value() {
        // [shadow] is line 8; the first added line is line 9.
        let e = err("sample = \"150%\"");
        assert_eq!((e.line, e.col), (9, 10), "{e}");
        assert!(e.message.contains("between 0% and 100%"), "{e}");
        let e = err("sample = \"2\"");
        assert!(e.message.contains("percentage"), "{e}");
        let e = err("methods = [\"GET\", \"FETCH\"]");
        assert_eq!((e.line, e.col), (9, 19), "{e}");
        assert!(e.message.contains("unknown HTTP method"), "{e}");
        let e = err("ignore = [\"/ok\", \"meta/served_at\"]");
        assert_eq!((e.line, e.col), (9, 18), "{e}");
        assert!(e.message.contains("must start with '/'"), "{e}");
        let e = err("unordered = [\"/a~2b\"]");
        assert!(e.message.contains("'~' must be followed by 0 or 1"), "{e}");
        let e = err("max_body = \"lots\"");
        assert!(e.message.contains("invalid size"), "{e}");
        let e = err("max_in_flight = 0");
        assert!(e.message.contains("between 1 and 65536"), "{e}");
        let e = err("ignore_headers = [\"bad header\"]");
        assert!(e.message.contains("invalid header name"), "{e}");
        let e = err("bogus = 1");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn unsafe_methods_need_saying_so() {
        let e = err("methods = [\"GET\", \"POST\"]");
        assert_eq!((e.line, e.col), (9, 19), "{e}");
        assert!(e.message.contains("unsafe_methods = true"), "{e}");
        let c = with("methods = [\"GET\", \"post\"]\nunsafe_methods = true").unwrap().shadow.unwrap();
        assert_eq!(c.methods, vec![Method::GET, Method::POST]);
    }

    #[test]
    fn pointers_unescape_and_match_one_segment_per_star() {
        let p = FieldPattern::parse("/items/*/e~1tag~0").unwrap();
        assert_eq!(p.segments, vec![Segment::Key("items".into()), Segment::Any, Segment::Key("e/tag~".into())]);
        assert!(p.matches(&["items", "3", "e/tag~"]));
        assert!(!p.matches(&["items", "3"]));
        assert!(p.covers(&["items", "0", "e/tag~", "deeper"]));
        assert!(!p.covers(&["items", "0", "etag"]));
        assert!(FieldPattern::parse("").is_err());
        assert!(FieldPattern::parse("/").unwrap().matches(&[""]), "\"/\" is the key \"\"");
    }
}
