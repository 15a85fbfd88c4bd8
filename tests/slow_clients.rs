//! A slow client is the client's fault, never the pool's: a steady slow
//! upload completes and no upstream clock runs while grayshift waits for
//! it; a stalled upload is `server.body_read_timeout`'s 408 (HTTP/1.1 and
//! HTTP/2 alike), counted as a client error, never as an upstream error, a
//! 5xx of the pool or toward L1; and the upstream connection it had is
//! closed, never pooled half-written.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Frame;
use rules_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// L1 on `new`'s error rate, evaluated often, with a low request floor.
const L1_ON_NEW: &str = r#"
[rollback]
interval = "100ms"

[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "30s" }
above = 0.05
for = "300ms"
min_requests = 5
"#;

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Everything `new` was counted for that would make it look broken or slow.
fn assert_nothing_against_new(metrics: &str) {
    for kind in ["connect", "timeout", "reset"] {
        let series = format!("grayshift_upstream_errors_total{{kind=\"{kind}\",pool=\"new\"}}");
        assert_eq!(metric(metrics, &series), 0.0, "{series}\n{metrics}");
    }
    assert_eq!(metric(metrics, "grayshift_requests_total{code=\"5xx\",pool=\"new\"}"), 0.0, "{metrics}");
    assert_eq!(metric(metrics, "grayshift_rollback_level"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_slow_uploads_complete_and_never_fire_l1() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text =
        config(&[&stable], &[&new], 100, L1_ON_NEW).replace("request_timeout = \"2s\"", "request_timeout = \"3s\"");
    let proxy = Proxy::start(&text).await;

    // Eight clients, each sending its 8-byte body one byte per second:
    // every upload takes longer than `request_timeout`.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = proxy.proxy_addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /drain HTTP/1.1\r\nHost: a\r\nX-User-ID: slow-{i}\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.unwrap();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                for byte in b"12345678" {
                    tick.tick().await;
                    if s.write_all(&[*byte]).await.is_err() {
                        break; // answered (and closed) before the body was all sent
                    }
                }
                read_until_closed(&mut s, Duration::from_secs(30)).await
            })
        })
        .collect();
    for client in clients {
        let answer = client.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("x-gray-pool: new"), "{answer}");
        assert!(answer.ends_with("drained 8"), "the whole body reached the upstream: {answer}");
    }

    // The rule has seen all eight requests, and nothing to fire on.
    wait_more_evaluations(&proxy, "new-error-rate").await;
    let r = rule(&proxy, "new-error-rate").await;
    assert_eq!(r["state"], "ok", "{r:#}");
    assert_eq!(r["value"], 0.0, "{r:#}");
    assert_eq!(proxy.shared().control.route().percent, 100);
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_nothing_against_new(&metrics);
    assert_eq!(metric(&metrics, "grayshift_requests_total{code=\"2xx\",pool=\"new\"}"), 8.0, "{metrics}");
    // Each upload took 7 s or more; the pool answered each in moments.
    let pool_seconds = metric(&metrics, "grayshift_request_duration_seconds_sum{pool=\"new\"}");
    assert!(pool_seconds < 8.0, "the uploads' time is not new's latency: {pool_seconds} s for 8 requests");
}

/// A raw upstream that never answers a request on its own: it reads until
/// the connection closes and reports what it received. A request for
/// `/early` is answered at once with a chunked 200 and one chunk, before
/// its body has come (as an app that streams while it reads).
async fn recording_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if !answered && got.starts_with(b"POST /early ") && got.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let _ =
                            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n").await;
                    }
                }
                let _ = closed.send(String::from_utf8_lossy(&got).into_owned());
            });
        }
    });
    (addr, received)
}

/// `request_timeout` shorter than `body_read_timeout`: were the upstream's
/// clock running during the upload, a stall would be a 504.
fn stall_config(new: SocketAddr) -> String {
    config_addrs(&[dead_addr()], &[new], 100, "")
        .replace("request_timeout = \"2s\"", "request_timeout = \"1s\"")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"5s\"\nbody_read_timeout = \"2s\"")
}

#[tokio::test]
async fn a_stalled_http1_upload_is_the_clients_408_and_its_upstream_connection_is_closed() {
    let (upstream, mut closed) = recording_upstream().await;
    let proxy = Proxy::start(&stall_config(upstream)).await;

    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part").await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let seen = tokio::time::timeout(Duration::from_secs(10), closed.recv()).await.expect("upstream connection closed");
    assert!(seen.unwrap().ends_with("\r\n\r\nonly part"), "the upstream got the head and the part, then a close");

    // The answer began before the body stalled: the response is cut, and
    // that is still the client's fault, not a reset of the pool.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part").await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.ends_with("0\r\n\r\n"), "a cut response never looks complete: {answer}");
    tokio::time::timeout(Duration::from_secs(10), closed.recv()).await.expect("upstream connection closed");

    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_nothing_against_new(&metrics);
    assert_eq!(metric(&metrics, "grayshift_client_errors_total{kind=\"body_timeout\"}"), 2.0, "{metrics}");
}

#[tokio::test]
async fn an_upstream_that_stops_reading_the_upload_is_still_a_504() {
    // Reads the head, then holds the connection without reading on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        std::future::pending::<()>().await;
    });
    let proxy = Proxy::start(&stall_config(upstream)).await;

    let (mut read, mut write) = TcpStream::connect(proxy.proxy_addr).await.unwrap().into_split();
    const LEN: usize = 64 << 20; // far more than the socket buffers on the way hold
    let sender = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {LEN}\r\n\r\n");
        write.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..LEN / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), read.read_exact(&mut answer)).await.expect("answered").unwrap();
    assert_eq!(&answer, b"HTTP/1.1 504", "{}", String::from_utf8_lossy(&answer));
    sender.abort();
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_eq!(metric(&metrics, "grayshift_upstream_errors_total{kind=\"timeout\",pool=\"new\"}"), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "grayshift_client_errors_total{kind=\"body_timeout\"}"), 0.0, "{metrics}");
}

/// A request body that sends what it is given and then waits.
struct HeldBody(mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

#[tokio::test]
async fn a_stalled_http2_upload_is_the_clients_408_too() {
    let (upstream, mut closed) = recording_upstream().await;
    let proxy = Proxy::start(&stall_config(upstream)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();

    let (part, body) = mpsc::unbounded_channel();
    part.send(Bytes::from_static(b"only part")).unwrap();
    let body = HeldBody(body).map_err(|never| match never {}).boxed();
    let req = Request::post(proxy.url("/upload")).body(body).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.expect("answered").unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 408);
    drop(part);
    let seen = tokio::time::timeout(Duration::from_secs(10), closed.recv()).await.expect("upstream connection closed");
    assert!(seen.unwrap().contains("\r\n\r\n9\r\nonly part\r\n"), "the part went up chunked, then a close");

    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_nothing_against_new(&metrics);
    assert_eq!(metric(&metrics, "grayshift_client_errors_total{kind=\"body_timeout\"}"), 1.0, "{metrics}");
}

/// The upstream fails after a slow upload (it reads the whole body, then
/// closes without answering: a 502): the wait for the client's body is not
/// the pool's latency on the error path either.
#[tokio::test]
async fn a_failure_after_a_slow_upload_does_not_count_the_upload_as_pool_latency() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n1234") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let proxy = Proxy::start(&stall_config(upstream)).await;

    // Four bytes, one each half second: the upload takes 1.5 s or more.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for byte in b"1234" {
        tick.tick().await;
        s.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_eq!(metric(&metrics, "grayshift_request_duration_seconds_count{pool=\"new\"}"), 1.0, "{metrics}");
    let pool_seconds = metric(&metrics, "grayshift_request_duration_seconds_sum{pool=\"new\"}");
    assert!(pool_seconds < 1.5, "the upload's time is not new's latency: {pool_seconds} s");
}

/// The upstream answers early (a 413, closing) and the client stops
/// sending: the rest of its body is read only to be dropped, and a stall
/// there is no client error (the answer was already complete).
#[tokio::test]
async fn a_stall_after_an_early_answer_is_not_counted_as_a_client_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.unwrap();
        std::future::pending::<()>().await; // holds the connection, reads no more
    });
    let proxy = Proxy::start(&stall_config(upstream)).await;

    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part").await.unwrap();
    // The answer comes, then grayshift drops the stalled rest of the body
    // (after `body_read_timeout`) and closes the client's connection.
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert_eq!(metric(&metrics, "grayshift_requests_total{code=\"4xx\",pool=\"new\"}"), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "grayshift_client_errors_total{kind=\"body_timeout\"}"), 0.0, "{metrics}");
}
