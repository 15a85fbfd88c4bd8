//! Upstreams that misbehave at the byte level: close before answering,
//! die mid-body, or hang. Each failure stays with its own request, is
//! counted by kind, and a truncated body never looks complete.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A raw upstream: reads a request head, then writes `answer` and closes.
async fn raw_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                let _ = s.flush().await;
                // Dropping the socket closes it mid-message.
            });
        }
    });
    addr
}

async fn read_all(addr: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let clean = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("proxy hung") {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), clean)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn an_upstream_closing_before_its_answer_is_a_502_for_that_request_only() {
    let dead = raw_upstream(b"").await;
    let new = Upstream::start("new").await;
    let proxy = Proxy::start(&config_addrs(&[dead], &[new.addr], 0, "")).await;
    let reply = proxy.get_as("/", Some("bob")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("stable"));
    assert_eq!(proxy.get_as("/", Some("qa")).await.status, 502);
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_eq!(metric(&metrics, "grayshift_upstream_errors_total{kind=\"reset\",pool=\"stable\"}"), 2.0);
    // Other requests are unaffected: the new pool still answers.
    assert_eq!(proxy.admin("PUT", "/percent", Some(serde_json::json!({ "percent": 100 })), None).await.status, 200);
    assert_eq!(proxy.get_as("/", Some("bob")).await.status, 200);
}

#[tokio::test]
async fn an_upstream_dying_mid_body_never_becomes_a_clean_response() {
    let truncated = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b").await;
    let new = Upstream::start("new").await;
    let proxy = Proxy::start(&config_addrs(&[truncated], &[new.addr], 0, "")).await;
    // Depending on timing the client gets the head and part of the body, or
    // the connection closes before anything was flushed; never all of it.
    let (text, _) = read_all(proxy.proxy_addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert!(body.len() < 100, "the client must not receive a complete body: {text}");
    eventually(Duration::from_secs(5), "reset counted", || async {
        let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
        (metric(&metrics, "grayshift_upstream_errors_total{kind=\"reset\",pool=\"stable\"}") == 1.0).then_some(())
    })
    .await;

    let chunked = raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let proxy = Proxy::start(&config_addrs(&[chunked], &[new.addr], 0, "")).await;
    let (text, _) = read_all(proxy.proxy_addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "a cut chunked body must not get its terminating chunk: {text:?}");
}

#[tokio::test]
async fn a_hung_upstream_is_a_504_and_the_next_request_is_fine() {
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    // Accepts (the kernel does) and never answers.
    let _keep = hung;
    let stable = Upstream::start("stable").await;
    let text = config_addrs(&[stable.addr], &[hung_addr], 100, "")
        .replace("request_timeout = \"2s\"", "request_timeout = \"300ms\"");
    let proxy = Proxy::start(&text).await;
    let reply = proxy.get_as("/", Some("alice")).await;
    assert_eq!(reply.status, 504);
    assert!(reply.text().contains("new"));
    assert_eq!(proxy.admin("PUT", "/percent", Some(serde_json::json!({ "percent": 0 })), None).await.status, 200);
    assert_eq!(proxy.get_as("/", Some("alice")).await.status, 200);
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_eq!(metric(&metrics, "grayshift_upstream_errors_total{kind=\"timeout\",pool=\"new\"}"), 1.0);
}
