//! Slow and greedy clients: header and body read timeouts, idle keep-alive,
//! the connection limit, and normal clients served while slowloris runs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limited(stable: &Upstream, new: &Upstream, extra_server: &str) -> String {
    config(&[stable], &[new], 0, "")
        .replace("drain_timeout = \"5s\"", &format!("drain_timeout = \"5s\"\n{extra_server}"))
}

#[tokio::test]
async fn a_slow_head_and_an_idle_keep_alive_connection_are_closed() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&limited(&stable, &new, "header_read_timeout = \"300ms\"")).await;
    let mut slow = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    let text = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "closed before the timeout");
    assert!(text.starts_with("HTTP/1.1 408"), "a partial head is answered 408: {text}");

    // A connection that sends nothing is closed without an answer.
    let mut silent = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent, Duration::from_secs(5)).await, "");

    let mut idle = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let text = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(stable.hits(), 1, "the slow head never reached an upstream");
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&limited(&stable, &new, "body_read_timeout = \"300ms\"")).await;
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part").await.unwrap();
    let text = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(
        !metrics.contains("grayshift_upstream_errors_total{kind=\"reset\",pool=\"stable\"} 1"),
        "not the upstream's fault"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_slots_come_back() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&limited(&stable, &new, "max_connections = 3")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0, "served within the limit");
        held.push(s);
    }
    let mut over = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    let _ = over.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(read_until_closed(&mut over, Duration::from_secs(5)).await, "", "refused without an answer");
    drop(held.pop());
    eventually(Duration::from_secs(5), "a slot frees up", || async {
        let mut s = TcpStream::connect(proxy.proxy_addr).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await.ok()?.ok()?;
        (n > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_clients_are_served_while_400_slowloris_connections_hang() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&limited(&stable, &new, "header_read_timeout = \"3s\"")).await;
    let mut slow = Vec::new();
    for _ in 0..400 {
        let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Drip: ").await.unwrap();
        slow.push(s);
    }
    for i in 0..100 {
        let reply = proxy.get_as("/", Some(&format!("user-{i}"))).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(stable.hits() + new.hits(), 100);
    for mut s in slow {
        read_until_closed(&mut s, Duration::from_secs(10)).await;
    }
}
