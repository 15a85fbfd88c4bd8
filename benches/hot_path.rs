//! Micro-benchmarks of the per-request work grayshift adds on top of moving
//! bytes: who is the user, which bucket, which pool, the header rewrite on
//! both legs and the metrics. Each should take tens of nanoseconds; a
//! regression to microseconds shows here long before it shows in
//! `scripts/bench.sh`.
//!
//! ```text
//! cargo bench --bench hot_path            # all
//! cargo bench --bench hot_path -- split/  # a group
//! ```

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use grayshift::config::PoolName;
use grayshift::metrics::Metrics;
use grayshift::proxy::forward::{self, Forwarded};
use grayshift::proxy::split::{self, IpText, Splitter};
use http::{HeaderMap, HeaderValue, Request};

/// The benchmark's config: the bench load's split (50 % on X-User-ID) and
/// `extra` keys for the `[split]` table.
fn splitter(key: &str, extra: &str) -> Splitter {
    let text = format!(
        r#"
[split]
percent = 50
group = "orders-v2"
key = {key}
{extra}

[pools.stable]
endpoints = ["127.0.0.1:8001"]

[pools.new]
endpoints = ["127.0.0.1:8002"]
"#
    );
    let config = grayshift::config::parse(&text, "bench.toml").expect("bench config is valid");
    Splitter::new(&config.split)
}

/// What a browser behind a load balancer sends (8 headers, ~450 bytes).
/// The header map has room to grow, as hyper's recycled maps do once a
/// connection has served a request or two.
fn browser_request() -> Request<()> {
    roomy(&browser_request_exact())
}

/// A copy of `req` whose header map has room for 32 headers (a plain
/// `clone` has none to spare).
fn roomy(req: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    let headers = copy.headers_mut();
    headers.reserve(32);
    headers.extend(req.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
    copy
}

fn browser_request_exact() -> Request<()> {
    Request::get("/api/v1/orders?page=2")
        .header("host", "shop.example.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
        .header("accept", "application/json, text/plain, */*")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("cookie", "theme=dark; session=6f1c0c3e9a0b4d2f8e7a; uid=user-48151623; consent=1")
        .header("x-user-id", "user-48151623")
        .header("connection", "keep-alive")
        .body(())
        .unwrap()
}

/// What nginx answers (the upstream of the load benchmark), as it comes.
const UPSTREAM_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 03:15:17 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 1234\r\nConnection: keep-alive\r\n\r\n";

fn bench_split(c: &mut Criterion) {
    let req = browser_request();
    let headers = req.headers();
    let ip = IpText::new("203.0.113.77".parse().unwrap());

    let by_header = splitter(r#"["header:X-User-ID", "client_ip"]"#, "");
    c.bench_function("split/routing_key/header", |b| {
        b.iter(|| black_box(by_header.routing_key(black_box(headers), ip.as_bytes())).len())
    });
    let by_cookie = splitter(r#"["cookie:uid", "client_ip"]"#, "");
    c.bench_function("split/routing_key/cookie", |b| {
        b.iter(|| black_box(by_cookie.routing_key(black_box(headers), ip.as_bytes())).len())
    });
    let by_ip = splitter(r#"["client_ip"]"#, "");
    c.bench_function("split/routing_key/client_ip", |b| {
        b.iter(|| {
            let ip = IpText::new(black_box(IpAddr::from([203, 0, 113, 77])));
            black_box(by_ip.routing_key(black_box(headers), ip.as_bytes())).len()
        })
    });
    c.bench_function("split/ip_text/v4", |b| {
        b.iter(|| IpText::new(black_box(IpAddr::from([203, 0, 113, 77]))).as_bytes().len())
    });

    c.bench_function("split/bucket", |b| {
        b.iter(|| split::bucket(black_box(b"orders-v2:"), black_box(b"user-48151623")))
    });
    c.bench_function("split/decide", |b| {
        b.iter(|| by_header.decide(black_box(b"user-48151623"), black_box(18), black_box(20), black_box(false)))
    });
    let with_overrides = splitter(
        r#"["header:X-User-ID"]"#,
        r#"force_new = ["qa-1", "qa-2"]
force_stable = ["vip-1"]"#,
    );
    c.bench_function("split/decide/with_overrides", |b| {
        b.iter(|| with_overrides.decide(black_box(b"user-48151623"), black_box(18), black_box(20), black_box(false)))
    });
    c.bench_function("split/all_steps", |b| {
        b.iter(|| {
            let ip = IpText::new(black_box(IpAddr::from([203, 0, 113, 77])));
            let key = by_header.routing_key(black_box(headers), ip.as_bytes());
            let bucket = by_header.bucket(key);
            by_header.decide(key, bucket, 20, false)
        })
    });

    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.168.0.0/16".parse().unwrap()];
    let mut xff = HeaderMap::new();
    xff.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.23, 10.1.2.3"));
    let lb: IpAddr = "10.0.0.5".parse().unwrap();
    c.bench_function("split/client_ip/trusted_xff", |b| {
        b.iter(|| split::client_ip(black_box(lb), black_box(&xff), &trusted))
    });
    let untrusted: IpAddr = "203.0.113.77".parse().unwrap();
    c.bench_function("split/client_ip/untrusted_peer", |b| {
        b.iter(|| split::client_ip(black_box(untrusted), black_box(&xff), &trusted))
    });
}

fn bench_forward(c: &mut Criterion) {
    let req = browser_request();
    let fwd = Forwarded {
        peer: &http::HeaderValue::from_static("10.0.0.5"),
        peer_trusted: false,
        tls: false,
        pool: PoolName::New,
        bucket: 18,
        upgrade: false,
        endpoint: "10.0.0.7:8080",
        underscores: grayshift::config::UnderscoreHeaders::Drop,
    };
    c.bench_function("forward/upstream_head", |b| {
        b.iter(|| forward::upstream_head(req.method(), req.uri(), black_box(req.headers()), &fwd, false))
    });
    let mut with_xff = browser_request();
    with_xff.headers_mut().insert("x-forwarded-for", HeaderValue::from_static("198.51.100.23"));
    c.bench_function("forward/upstream_head/prior_xff", |b| {
        b.iter(|| forward::upstream_head(with_xff.method(), with_xff.uri(), black_box(with_xff.headers()), &fwd, false))
    });

    // A connection's name cache, warm: the same upstream, response after response.
    let mut names = grayshift::proxy::h1::NameCache::default();
    c.bench_function("h1/parse_head/response", |b| {
        b.iter_batched(
            || bytes::BytesMut::from(UPSTREAM_RESPONSE),
            |mut buf| {
                grayshift::proxy::h1::parse_head(&mut buf, &http::Method::GET, &mut names).unwrap().expect("complete")
            },
            BatchSize::SmallInput,
        )
    });
}

fn bench_metrics(c: &mut Criterion) {
    let metrics = Metrics::new();
    let pool = metrics.pool(PoolName::New);
    c.bench_function("metrics/count_response", |b| b.iter(|| pool.count_response(black_box(200), black_box(0.000_8))));
}

/// The exposure ledger's offer, against the two obvious alternatives: a
/// mutex-guarded set (a lock per request) and a queue without the seen table
/// (an allocation per request). Keys cycle through 1 000 users, as a
/// `flush` interval of real traffic mostly repeats the same users.
fn bench_ledger(c: &mut Criterion) {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use grayshift::control::ledger::Recorder;
    use grayshift::proxy::split::KeyOrigin;

    let origin = Arc::new(KeyOrigin { release: "orders-v2".into(), source: "header:x-user-id".into() });
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let dropped = prometheus::IntCounter::new("d", "d").unwrap();
    let recorder = Recorder::new(65_536, dropped.clone());
    let mut i = 0;
    c.bench_function("ledger/offer/seen_table", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            recorder.offer(black_box(keys[i].as_bytes()), &origin, false)
        })
    });
    // Every offer a first sighting (a new interval every 1 000 keys), and the
    // queue drained as the flusher does: what a user new in the interval costs
    // the request path.
    let fresh = Recorder::new(65_536, dropped.clone());
    c.bench_function("ledger/offer/first_sighting", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            if i == 0 {
                drop(black_box(fresh.rotate()));
            }
            fresh.offer(black_box(keys[i].as_bytes()), &origin, false)
        })
    });
    let set: Mutex<HashSet<(Vec<u8>, bool)>> = Mutex::new(HashSet::new());
    c.bench_function("ledger/offer/mutex_set", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let key = black_box(keys[i].as_bytes());
            let mut set = set.lock().unwrap();
            if !set.contains(&(key.to_vec(), false)) {
                set.insert((key.to_vec(), false));
            }
        })
    });
    let queue = crossbeam_queue::ArrayQueue::new(1 << 20);
    c.bench_function("ledger/offer/queue_every_request", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            if queue.push((Box::<[u8]>::from(black_box(keys[i].as_bytes())), origin.clone())).is_err() {
                while queue.pop().is_some() {}
            }
        })
    });
}

criterion_group!(benches, bench_split, bench_forward, bench_metrics, bench_ledger);
criterion_main!(benches);
