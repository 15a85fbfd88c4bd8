//! Who goes where: routing-key extraction, the murmur3 bucket and the
//! stable/new decision. Pure functions, no I/O; the request path calls them
//! in this order: [`client_ip`] → [`Splitter::routing_key`] → [`bucket`] →
//! [`Splitter::decision`]. The flags API (docs/src/flags-ofrep.md) asks
//! [`Splitter::decision`] too, so a worker and a request agree.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, COOKIE};
use ipnet::IpNet;

pub use crate::config::KeySource;
use crate::config::{PoolName, SplitConfig};
use crate::control::state::Route;
pub use crate::proxy::conn::IpText;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where a routing key came from: the release (`split.group`) and the
/// source, shared by every exposure the ledger records from it.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyOrigin {
    pub release: String,
    pub source: String,
}

/// `murmur3_x86_32(seed 0, "{group}:{key}") mod 100`, the same number as
/// Unleash's `normalizedHash(key, group) - 1`. `prefix` is `"{group}:"`.
/// The two parts are fed to one hasher, so nothing is concatenated or
/// allocated. (`mur3` reads whole words from the slices; the `murmur3`
/// crate's `Read`-based API copied four bytes at a time and cost ~370 more
/// instructions per request. The tests check this against `murmur3`, the
/// spec vectors and all 396 Unleash rows.)
pub fn bucket(prefix: &[u8], key: &[u8]) -> u8 {
    use std::hash::Hasher;
    let mut hasher = mur3::Hasher32::with_seed(0);
    hasher.write(prefix);
    hasher.write(key);
    (hasher.finish32() % 100) as u8
}

/// The client's address (§1.2): the TCP peer, unless the peer is a trusted
/// proxy; then the right-most `X-Forwarded-For` entry that is not trusted.
/// If every entry is trusted the left-most one is used; an unparsable entry
/// ends the walk (the hop after it is the last one we can vouch for).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    // Later headers are closer to us, so walk the header values backwards.
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let Some(ip) = parse_forwarded_ip(entry.trim()) else {
                return client;
            };
            client = ip;
            if !is_trusted(ip, trusted) {
                return ip;
            }
        }
    }
    client
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// An X-Forwarded-For entry: a bare IP, or `IPv4:port` / `[IPv6]:port`.
pub fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|sa| sa.ip().to_canonical())
}

/// Everything the split decision needs, built once per config snapshot.
#[derive(Debug)]
pub struct Splitter {
    /// `"{group}:"`, the fixed head of every hashed string.
    prefix: Box<[u8]>,
    sources: Vec<KeySource>,
    /// One per source, then one for the client IP of last resort.
    origins: Box<[Arc<KeyOrigin>]>,
    force_new: HashSet<String>,
    force_stable: HashSet<String>,
    pub trusted_proxies: Vec<IpNet>,
    /// Changes when the group, the key sources or the force lists do: with
    /// the route, all that a decision depends on (the flags API's ETag).
    pub fingerprint: u64,
}

/// Where a routing key goes, why, and its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub pool: PoolName,
    pub reason: Reason,
    pub bucket: u8,
}

/// Why a request went where it went (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Percent,
    ForcedNew,
    ForcedStable,
    RolledBack,
}

impl Splitter {
    pub fn new(config: &SplitConfig) -> Self {
        let origin = |source: &KeySource| Arc::new(KeyOrigin { release: config.group.clone(), source: source.label() });
        Splitter {
            prefix: format!("{}:", config.group).into_bytes().into_boxed_slice(),
            sources: config.key.clone(),
            origins: config.key.iter().chain([&KeySource::ClientIp]).map(origin).collect(),
            force_new: config.force_new.clone(),
            force_stable: config.force_stable.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            fingerprint: fingerprint(config),
        }
    }

    /// The pool `key` belongs to under `route`: the one decision the
    /// request path and the flags API share. L2 shedding (it depends on the
    /// path) and the fallback to stable (it depends on health) come after.
    #[inline]
    pub fn decision(&self, key: &[u8], route: Route) -> Decision {
        let bucket = self.bucket(key);
        let (pool, reason) = self.decide(key, bucket, route.percent, route.new_refused());
        Decision { pool, reason, bucket }
    }

    /// The routing key: the first configured source present in the request.
    /// Header and cookie keys are borrowed from `headers`; the client IP is
    /// written into `ip_text`. Empty values count as absent.
    /// `ip_text`: the client IP as text ([`IpText`]), the key of last resort.
    pub fn routing_key<'a>(&self, headers: &'a HeaderMap, ip_text: &'a [u8]) -> &'a [u8] {
        self.routing_key_origin(headers, ip_text).0
    }

    /// The routing key and where it came from (for the exposure ledger).
    pub fn routing_key_origin<'a>(&self, headers: &'a HeaderMap, ip_text: &'a [u8]) -> (&'a [u8], &Arc<KeyOrigin>) {
        for (i, source) in self.sources.iter().enumerate() {
            let found = match source {
                KeySource::Header(name) => headers.get(name).map(|v| v.as_bytes()),
                KeySource::Cookie(name) => cookie(headers, name),
                KeySource::ClientIp => return (ip_text, &self.origins[i]),
            };
            if let Some(key) = found.filter(|k| !k.is_empty()) {
                return (key, &self.origins[i]);
            }
        }
        (ip_text, &self.origins[self.sources.len()])
    }

    pub fn bucket(&self, key: &[u8]) -> u8 {
        bucket(&self.prefix, key)
    }

    /// §1.3: a rollback (L1/L3) beats everything, overrides beat the percent.
    pub fn decide(&self, key: &[u8], bucket: u8, percent: u8, rolled_back: bool) -> (PoolName, Reason) {
        if rolled_back {
            return (PoolName::Stable, Reason::RolledBack);
        }
        if !self.force_new.is_empty() || !self.force_stable.is_empty() {
            if let Ok(key) = std::str::from_utf8(key) {
                if self.force_new.contains(key) {
                    return (PoolName::New, Reason::ForcedNew);
                }
                if self.force_stable.contains(key) {
                    return (PoolName::Stable, Reason::ForcedStable);
                }
            }
        }
        let pool = if bucket < percent { PoolName::New } else { PoolName::Stable };
        (pool, Reason::Percent)
    }
}

/// A hash of what the split decides with besides the route, the same on
/// every replica (sets are hashed in sorted order).
fn fingerprint(config: &SplitConfig) -> u64 {
    use std::hash::Hasher;
    let mut hasher = mur3::Hasher128::with_seed(0);
    let mut field = |bytes: &[u8]| {
        hasher.write(&(bytes.len() as u64).to_le_bytes());
        hasher.write(bytes);
    };
    // Every list is preceded by its length, every field by its own.
    field(config.group.as_bytes());
    field(&(config.key.len() as u64).to_le_bytes());
    for source in &config.key {
        field(source.label().as_bytes());
    }
    for list in [&config.force_new, &config.force_stable] {
        let mut keys: Vec<&String> = list.iter().collect();
        keys.sort();
        field(&(keys.len() as u64).to_le_bytes());
        for key in keys {
            field(key.as_bytes());
        }
    }
    hasher.finish128().0
}

/// The value of cookie `name` from any `Cookie` header (RFC 6265 §5.4),
/// with surrounding double quotes removed.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() == name.as_bytes() {
                let v = pair[eq + 1..].trim_ascii();
                let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
                return Some(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(group: &str, key: &str) -> u8 {
        bucket(format!("{group}:").as_bytes(), key.as_bytes())
    }

    #[test]
    fn spec_vectors() {
        assert_eq!(b("orders-v2", "alice"), 18);
        assert_eq!(b("orders-v2", "bob"), 26);
        assert_eq!(b("orders-v2", "10.1.2.3"), 45);
        assert_eq!(b("checkout", "user-42"), 41);
        assert_eq!(b("grayshift", ""), 95);
    }

    /// Every row of the shared reference file computed with Unleash's client.
    #[test]
    fn unleash_reference_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/buckets.csv");
        let text = std::fs::read_to_string(path).expect("tests/data/buckets.csv");
        let mut rows = 0;
        for record in parse_csv(&text).into_iter().skip(1) {
            let [group, key, expected] = <[String; 3]>::try_from(record).expect("3 columns");
            assert_eq!(b(&group, &key), expected.parse::<u8>().unwrap(), "group={group:?} key={key:?}");
            rows += 1;
        }
        assert_eq!(rows, 396);
    }

    /// Minimal RFC 4180 reader: quoted fields, doubled quotes, CRLF or LF.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\r') => {}
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        if !field.is_empty() || !row.is_empty() {
            row.push(field);
            rows.push(row);
        }
        rows
    }

    #[test]
    fn ip_text_matches_display() {
        let ips = [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.255",
            "100.64.9.99",
            "255.255.255.255",
            "192.168.100.10",
            "::1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ];
        for ip in ips {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
        for a in 0..=255u8 {
            let ip = IpAddr::from([a, 255 - a, a / 3, a.wrapping_mul(7)]);
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn stream_hash_equals_concatenated_hash_at_every_split_point() {
        let whole = "grp:abcdefghij";
        let expected = murmur3::murmur3_32(&mut whole.as_bytes(), 0).unwrap() % 100;
        for cut in 0..=whole.len() {
            assert_eq!(bucket(&whole.as_bytes()[..cut], &whole.as_bytes()[cut..]) as u32, expected);
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &nets(&["10.0.0.0/8"])), peer);
        assert_eq!(client_ip(peer, &h, &[]), peer);
    }

    #[test]
    fn trusted_peer_takes_rightmost_untrusted() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7"), ("x-forwarded-for", "10.1.1.1")]);
        let ip = client_ip("10.0.0.1".parse().unwrap(), &h, &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn all_trusted_uses_leftmost_and_garbage_stops_the_walk() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.7")]);
        assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &t), "10.9.9.9".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-forwarded-for", "1.1.1.1, nonsense, 10.0.0.7")]);
        assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &t), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_entries_with_ports_and_ipv6() {
        assert_eq!(parse_forwarded_ip("1.2.3.4:5678"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_forwarded_ip("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_forwarded_ip("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_forwarded_ip("::ffff:1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_forwarded_ip("unknown"), None);
    }

    fn splitter(keys: &[KeySource]) -> Splitter {
        let config = SplitConfig {
            key: keys.to_vec(),
            force_new: ["qa-new".to_string()].into(),
            force_stable: ["qa-stable".to_string()].into(),
            ..crate::config::parse(MINIMAL, "t").unwrap().split
        };
        Splitter::new(&config)
    }

    const MINIMAL: &str = "[split]\npercent = 0\ngroup = \"g\"\n[pools.stable]\nendpoints = [\"127.0.0.1:1\"]\n[pools.new]\nendpoints = [\"127.0.0.1:2\"]\n";

    #[test]
    fn the_key_origin_names_its_source_and_release() {
        let s = splitter(&[KeySource::Header(HeaderName::from_static("x-user-id")), KeySource::Cookie("uid".into())]);
        let mut headers = HeaderMap::new();
        let (key, origin) = s.routing_key_origin(&headers, b"10.0.0.1");
        assert_eq!((key, origin.source.as_str(), origin.release.as_str()), (&b"10.0.0.1"[..], "client_ip", "g"));
        headers.insert(COOKIE, "uid=bob".parse().unwrap());
        assert_eq!(s.routing_key_origin(&headers, b"ip").1.source, "cookie:uid");
        headers.insert("x-user-id", "alice".parse().unwrap());
        let (key, origin) = s.routing_key_origin(&headers, b"ip");
        assert_eq!((key, origin.source.as_str()), (&b"alice"[..], "header:x-user-id"));
    }

    #[test]
    fn key_sources_in_order_first_present_wins() {
        let s = splitter(&[
            KeySource::Header(HeaderName::from_static("x-user-id")),
            KeySource::Cookie("uid".into()),
            KeySource::ClientIp,
        ]);
        let ip = IpText::new("192.0.2.1".parse().unwrap());
        assert_eq!(s.routing_key(&headers(&[("x-user-id", "alice"), ("cookie", "uid=bob")]), ip.as_bytes()), b"alice");
        assert_eq!(s.routing_key(&headers(&[("cookie", "a=1; uid=\"bob\"; c=3")]), ip.as_bytes()), b"bob");
        assert_eq!(s.routing_key(&headers(&[("x-user-id", ""), ("cookie", "uidx=1")]), ip.as_bytes()), b"192.0.2.1");
        let v6 = IpText::new("2001:db8::1".parse().unwrap());
        assert_eq!(s.routing_key(&HeaderMap::new(), v6.as_bytes()), b"2001:db8::1");
    }

    #[test]
    fn overrides_win_over_percent_but_not_over_rollback() {
        let s = splitter(&[KeySource::ClientIp]);
        assert_eq!(s.decide(b"qa-new", 99, 0, false), (PoolName::New, Reason::ForcedNew));
        assert_eq!(s.decide(b"qa-stable", 0, 100, false), (PoolName::Stable, Reason::ForcedStable));
        assert_eq!(s.decide(b"qa-new", 0, 100, true), (PoolName::Stable, Reason::RolledBack));
        assert_eq!(s.decide(b"x", 19, 20, false).0, PoolName::New);
        assert_eq!(s.decide(b"x", 20, 20, false).0, PoolName::Stable);
    }

    #[test]
    fn the_decision_reads_the_route_and_a_closed_gate_refuses_new() {
        let s = splitter(&[KeySource::ClientIp]);
        let route = Route { percent: 19, rolled_back: false, shedding: true, gate_closed: false };
        // bucket("g", "qa-new") is whatever it is: the decision reports it.
        let d = s.decision(b"qa-new", route);
        assert_eq!((d.pool, d.reason, d.bucket), (PoolName::New, Reason::ForcedNew, s.bucket(b"qa-new")));
        let closed = Route { gate_closed: true, ..route };
        assert_eq!(s.decision(b"qa-new", closed).reason, Reason::RolledBack);
        let all = Route { percent: 100, ..route };
        assert_eq!(s.decision(b"anyone", all).pool, PoolName::New, "L2 alone moves nobody");
    }

    #[test]
    fn the_fingerprint_changes_with_the_force_lists_and_only_them() {
        let base = crate::config::parse(MINIMAL, "t").unwrap().split;
        let with = |new: &[&str], stable: &[&str]| {
            let config = SplitConfig {
                force_new: new.iter().map(|k| k.to_string()).collect(),
                force_stable: stable.iter().map(|k| k.to_string()).collect(),
                ..base.clone()
            };
            Splitter::new(&config).fingerprint
        };
        assert_eq!(with(&["a", "b"], &[]), with(&["b", "a"], &[]), "order of a set does not matter");
        assert_ne!(with(&["a"], &[]), with(&[], &["a"]));
        assert_ne!(with(&["ab"], &[]), with(&["a", "b"], &[]));
        assert_ne!(with(&[], &[]), Splitter::new(&SplitConfig { group: "h".into(), ..base.clone() }).fingerprint);
    }
}
