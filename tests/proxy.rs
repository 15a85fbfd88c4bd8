//! The request path end to end: real upstreams, a real grayshift, real sockets.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pool_of(reply: &Reply) -> String {
    reply.headers.get("x-gray-pool").expect("x-gray-pool on response").to_str().unwrap().to_string()
}

fn bucket_of(group: &str, key: &str) -> u8 {
    grayshift::proxy::split::bucket(format!("{group}:").as_bytes(), key.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_on_new_is_the_percent_and_users_are_sticky() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 20, "")).await;
    let mut on_new = 0;
    for i in 0..10_000 {
        let user = format!("user-{i}");
        let reply = proxy.get_as("/", Some(&user)).await;
        assert_eq!(reply.status, 200);
        let pool = pool_of(&reply);
        assert_eq!(pool, reply.upstream(), "X-Gray-Pool names the pool that answered");
        assert_eq!(pool == "new", bucket_of("orders-v2", &user) < 20, "{user} routed against its bucket");
        on_new += (pool == "new") as usize;
    }
    let share = on_new as f64 / 100.0;
    assert!((share - 20.0).abs() <= 1.5, "share on new = {share}%");
    for _ in 0..20 {
        assert_eq!(pool_of(&proxy.get_as("/", Some("alice")).await), "new", "alice (bucket 18) always on new at 20%");
        assert_eq!(pool_of(&proxy.get_as("/", Some("bob")).await), "stable", "bob (bucket 26) always on stable at 20%");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_percent_only_moves_users_from_stable_to_new() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 20, "")).await;
    let users: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    let mut new_at_20 = HashSet::new();
    for u in &users {
        if pool_of(&proxy.get_as("/", Some(u)).await) == "new" {
            new_at_20.insert(u.clone());
        }
    }
    let r = proxy.admin("PUT", "/percent", Some(serde_json::json!({ "percent": 50 })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut new_at_50 = HashSet::new();
    for u in &users {
        if pool_of(&proxy.get_as("/", Some(u)).await) == "new" {
            new_at_50.insert(u.clone());
        }
    }
    assert!(new_at_20.is_subset(&new_at_50), "every user on new at 20% is still on new at 50%");
    assert!(new_at_50.len() > new_at_20.len() + 200, "{} -> {}", new_at_20.len(), new_at_50.len());
}

#[tokio::test]
async fn forwarded_and_gray_headers_reach_the_upstream() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 100, "")).await;
    let req = Request::get(proxy.url("/orders?id=7"))
        .header("host", "shop.example")
        .header("x-user-id", "alice")
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-gray-pool", "stable")
        .body(empty())
        .unwrap();
    let reply = proxy.send(req).await;
    let seen = reply.json();
    assert_eq!(seen["upstream"], "new");
    assert_eq!(seen["path"], "/orders?id=7");
    assert_eq!(seen["host"], "shop.example", "Host is kept");
    assert_eq!(seen["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert_eq!(seen["x-gray-pool"], "new", "a client cannot spoof X-Gray-Pool");
    assert_eq!(seen["x-gray-bucket"], "18");
    assert_eq!(reply.headers["x-gray-pool"], "new");
}

#[tokio::test]
async fn client_ip_comes_from_forwarded_for_only_behind_a_trusted_proxy() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    // Key on client_ip only; 127.0.0.1 is the trusted load balancer.
    let text = config(&[&stable], &[&new], 50, "").replace(
        "key = [\"header:X-User-ID\", \"client_ip\"]",
        "key = [\"client_ip\"]\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let proxy = Proxy::start(&text).await;
    for ip in ["10.1.2.3", "203.0.113.5", "2001:db8::7", "192.0.2.200"] {
        let req =
            Request::get(proxy.url("/")).header("x-forwarded-for", format!("{ip}, 127.0.0.9")).body(empty()).unwrap();
        let reply = proxy.send(req).await;
        let expected = if bucket_of("orders-v2", ip) < 50 { "new" } else { "stable" };
        assert_eq!(pool_of(&reply), expected, "client {ip}");
        assert_eq!(reply.json()["x-gray-bucket"], bucket_of("orders-v2", ip).to_string());
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nProxy-Authorization: Basic Zm9v\r\nUpgrade-Insecure-Requests: 1\r\nX-App: kept\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_response(&mut s).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    for gone in ["connection", "x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(seen.get(gone).is_none(), "{gone} reached the upstream: {seen}");
    }
    assert_eq!(seen["x-app"], "kept");
    assert_eq!(seen["upgrade-insecure-requests"], "1", "not hop-by-hop, not named in Connection");
    assert!(!head.to_ascii_lowercase().contains("keep-alive: timeout"), "upstream Keep-Alive leaked: {head}");
}

/// Read one HTTP/1.1 response with a Content-Length body.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|len| body.len() >= len) || n == 0 {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_without_buffering() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    const SIZE: usize = 256 * 1024 * 1024;
    let before = peak_rss_kib();
    // Upload 256 MiB, echoed back: client → proxy → upstream → proxy → client.
    let req =
        Request::post(proxy.url("/echo")).body(http_body_util::BodyExt::boxed(RepeatBody { remaining: SIZE })).unwrap();
    let resp = proxy.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, SIZE);
    // Download 256 MiB.
    let resp =
        proxy.client.request(Request::get(proxy.url(&format!("/bytes/{SIZE}"))).body(empty()).unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let mut received = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, SIZE);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB: a body was buffered");
}

#[tokio::test]
async fn new_pool_down_falls_back_to_stable_and_counts_it() {
    let stable = Upstream::start("stable").await;
    let text = config_addrs(&[stable.addr], &[dead_addr()], 100, "");
    let proxy = Proxy::start(&text).await;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let reply = proxy.get_as("/", Some(user)).await;
        assert_eq!(reply.status, 200, "{user}: {}", reply.text());
        assert_eq!(pool_of(&reply), "stable");
    }
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    let fallbacks: f64 = metric(&metrics, "grayshift_fallback_total");
    assert!(fallbacks >= 5.0, "fallbacks counted: {fallbacks}");
    assert!(metric(&metrics, "grayshift_upstream_errors_total{kind=\"connect\",pool=\"new\"}") >= 1.0);
}

/// The value of one sample line in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn connect_failure_is_502_and_timeout_is_504_naming_the_pool() {
    let new = Upstream::start("new").await;
    let proxy = Proxy::start(&config_addrs(&[dead_addr()], &[new.addr], 0, "")).await;
    let reply = proxy.get_as("/", Some("bob")).await;
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("stable"), "{}", reply.text());

    let stable = Upstream::start("stable").await;
    let text = config(&[&stable], &[&new], 0, "").replace("request_timeout = \"2s\"", "request_timeout = \"200ms\"");
    let proxy = Proxy::start(&text).await;
    let reply = proxy.get_as("/slow/2000", Some("bob")).await;
    assert_eq!(reply.status, 504);
    assert!(reply.text().contains("stable"), "{}", reply.text());
    // The proxy still serves after both.
    assert_eq!(proxy.get_as("/", Some("bob")).await.status, 200);
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_eq!(metric(&metrics, "grayshift_upstream_errors_total{kind=\"timeout\",pool=\"stable\"}"), 1.0);
    assert_eq!(metric(&metrics, "grayshift_requests_total{code=\"5xx\",pool=\"stable\"}"), 1.0);
}

/// Each request on a kept-alive upstream connection has its own deadline
/// (the connection keeps one timer across requests): the timer left by an
/// earlier request neither cuts a later one short nor lets a hung one run on.
#[tokio::test]
async fn request_timeout_is_each_requests_own_on_a_reused_upstream_connection() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 0, "").replace("request_timeout = \"2s\"", "request_timeout = \"1s\"");
    let proxy = Proxy::start(&text).await;
    assert_eq!(proxy.get_as("/slow/400", Some("bob")).await.status, 200);
    // Runs past the first request's deadline (~1.0 s), within its own (~1.4 s).
    let reply = proxy.get_as("/slow/700", Some("bob")).await;
    assert_eq!(reply.status, 200, "cut short by an earlier request's deadline: {}", reply.text());
    let started = std::time::Instant::now();
    let reply = proxy.get_as("/slow/5000", Some("bob")).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(started.elapsed() >= Duration::from_secs(1), "timed out before its own deadline: {:?}", started.elapsed());
    assert_eq!(stable.connections(), 1, "all three went over one kept-alive connection");
}

#[tokio::test]
async fn idempotent_requests_retry_another_endpoint_and_dead_endpoints_are_ejected() {
    let (alive, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dead = dead_addr();
    let text = config_addrs(&[dead, alive.addr], &[new.addr], 0, "");
    let proxy = Proxy::start(&text).await;
    for _ in 0..10 {
        let reply = proxy.get_as("/", Some("bob")).await;
        assert_eq!(reply.status, 200, "GET is retried on the other endpoint: {}", reply.text());
    }
    let status = proxy.status().await;
    let endpoints = status["pools"]["stable"]["endpoints"].as_array().unwrap();
    let dead_entry = endpoints.iter().find(|e| e["address"] == dead.to_string()).unwrap();
    assert_eq!(dead_entry["healthy"], false, "3 consecutive connect failures eject it: {status}");
    // Once ejected, even a POST (never retried) lands on the live endpoint.
    for _ in 0..4 {
        let req = Request::post(proxy.url("/")).header("x-user-id", "bob").body(full("x")).unwrap();
        assert_eq!(proxy.send(req).await.status, 200);
    }
    assert!(alive.hits() >= 14);
}

#[tokio::test]
async fn active_health_checks_take_endpoints_out_and_back() {
    let (a, b, new) =
        (Upstream::start("stable-a").await, Upstream::start("stable-b").await, Upstream::start("new").await);
    let text = config(&[&a, &b], &[&new], 0, "")
        .replace("request_timeout = \"2s\"\n\n[pools.new]", "request_timeout = \"2s\"\nhealth = { path = \"/healthz\", interval = \"50ms\", timeout = \"500ms\" }\n\n[pools.new]");
    let proxy = Proxy::start(&text).await;
    a.set_healthy(false);
    let a_addr = a.addr.to_string();
    eventually(Duration::from_secs(5), "stable-a marked unhealthy", || async {
        let s = proxy.status().await;
        let eps = s["pools"]["stable"]["endpoints"].as_array().unwrap().clone();
        eps.iter().any(|e| e["address"] == a_addr.as_str() && e["healthy"] == false).then_some(())
    })
    .await;
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(proxy.get_as("/", Some("bob")).await.upstream(), "stable-b");
    }
    assert_eq!(a.hits(), before, "no traffic to an endpoint failing its health check");
    b.set_healthy(false);
    eventually(Duration::from_secs(5), "readyz turns 503 with no healthy stable endpoint", || async {
        (proxy.admin("GET", "/readyz", None, None).await.status == 503).then_some(())
    })
    .await;
    a.set_healthy(true);
    eventually(Duration::from_secs(5), "readyz back to 200", || async {
        (proxy.admin("GET", "/readyz", None, None).await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 100, "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let req = Request::get(proxy.url("/h2")).header("x-user-id", "alice").body(empty()).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let reply = Reply::read(resp).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["upstream"], "new");
    assert_eq!(seen["host"], proxy.proxy_addr.to_string(), "HTTP/2 :authority becomes Host for the HTTP/1.1 upstream");
}

#[tokio::test]
async fn overrides_win_over_the_percent() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 0, "").replace(
        "key = [\"header:X-User-ID\", \"client_ip\"]",
        "key = [\"header:X-User-ID\", \"client_ip\"]\nforce_new = [\"qa-1\"]\nforce_stable = [\"alice\"]",
    );
    let proxy = Proxy::start(&text).await;
    assert_eq!(pool_of(&proxy.get_as("/", Some("qa-1")).await), "new");
    let r = proxy.admin("PUT", "/percent", Some(serde_json::json!({ "percent": 100 })), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(pool_of(&proxy.get_as("/", Some("alice")).await), "stable");
    assert_eq!(pool_of(&proxy.get_as("/", Some("bob")).await), "new");
}
