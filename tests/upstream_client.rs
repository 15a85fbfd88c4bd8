//! grayshift's own HTTP/1.1 upstream client (src/h1.rs) against raw
//! upstreams that answer byte for byte what each test scripts: the
//! keep-alive race, an early answer to a body still being sent, interim
//! 1xx answers, chunked bodies with trailers, HEAD, and bad lengths.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream does with one request.
enum Step {
    /// Write these bytes and wait for the next request on the connection.
    Answer(&'static [u8]),
    /// Write these bytes, then hold the connection open without reading
    /// for a while (an upstream that answered early and stopped reading).
    AnswerAndStall(&'static [u8]),
    /// Write these bytes and close the connection at once.
    AnswerAndClose(&'static [u8]),
    /// Close the connection without answering.
    Close,
}

/// An upstream whose answer to request `r` (0-based) on connection `c`
/// (0-based, in accept order) is `script(c, r, head)`.
async fn scripted<F>(script: F) -> SocketAddr
where
    F: Fn(usize, usize, &str) -> Step + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(script);
    let conns = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (script, c) = (script.clone(), conns.fetch_add(1, Ordering::SeqCst));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for r in 0.. {
                    let Some(head) = read_head(&mut s, &mut buf).await else { return };
                    match script(c, r, &head) {
                        Step::Answer(bytes) => {
                            let _ = s.write_all(bytes).await;
                        }
                        Step::AnswerAndStall(bytes) => {
                            let _ = s.write_all(bytes).await;
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            return;
                        }
                        Step::AnswerAndClose(bytes) => {
                            let _ = s.write_all(bytes).await;
                            return;
                        }
                        Step::Close => return,
                    }
                }
            });
        }
    });
    addr
}

/// Read one request head (bodies in these tests are skipped by length or
/// not read at all); `None` at EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < length {
                let mut chunk = [0u8; 65536];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..length);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn proxy_to(upstream: SocketAddr) -> Proxy {
    Proxy::start(&config_addrs(&[upstream], &[upstream], 0, "")).await
}

/// Answers "first" on its first connection and then closes that connection
/// under the next request, as if its keep-alive timeout fired just as the
/// request arrived; later connections answer "fresh".
async fn closing_under_the_second_request() -> SocketAddr {
    scripted(|c, r, _| match (c, r) {
        (0, 0) => Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"),
        (0, _) => Step::Close,
        _ => Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"),
    })
    .await
}

#[tokio::test]
async fn a_kept_alive_connection_closed_under_a_bodiless_request_is_resent_on_a_fresh_one() {
    let proxy = proxy_to(closing_under_the_second_request().await).await;
    let first = proxy.get_as("/", Some("u")).await;
    assert_eq!((first.status.as_u16(), first.text()), (200, "first".to_string()));
    let second = proxy.get_as("/", Some("u")).await;
    assert_eq!((second.status.as_u16(), second.text()), (200, "fresh".to_string()), "resent on a new connection");
}

#[tokio::test]
async fn a_request_with_a_body_is_not_resent_and_gets_502() {
    let proxy = proxy_to(closing_under_the_second_request().await).await;
    assert_eq!(proxy.get_as("/", Some("u")).await.status, 200);
    let post = Request::post(proxy.url("/")).body(full(Bytes::from_static(b"payload"))).unwrap();
    assert_eq!(proxy.send(post).await.status, 502, "its body went up once and is gone");
}

#[tokio::test]
async fn an_early_answer_reaches_the_client_while_the_body_is_still_going_up() {
    let upstream = scripted(|_, _, _| {
        Step::AnswerAndStall(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
        )
    })
    .await;
    let proxy = proxy_to(upstream).await;
    // 64 MiB: far more than the socket buffers hold while nobody reads.
    let body = Bytes::from(vec![b'x'; 64 << 20]);
    let post = Request::post(proxy.url("/upload")).body(full(body)).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), proxy.send(post)).await.expect("answer in time");
    assert_eq!((reply.status.as_u16(), reply.text()), (413, "too big\n".to_string()));
}

#[tokio::test]
async fn interim_answers_are_skipped_and_chunked_bodies_with_trailers_arrive_whole() {
    let upstream = scripted(|_, r, _| match r {
        0 => Step::Answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
        ),
        _ => Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"),
    })
    .await;
    let proxy = proxy_to(upstream).await;
    let reply = proxy.get_as("/", Some("u")).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "hello, world".to_string()));
    // The same connection carries the next request: the chunked body was
    // framed exactly, trailers and all.
    let reply = proxy.get_as("/", Some("u")).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "second".to_string()));
}

#[tokio::test]
async fn a_head_answer_has_no_body_whatever_its_length_says() {
    let upstream = scripted(|_, _, head| {
        if head.starts_with("HEAD ") {
            Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        } else {
            Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = proxy_to(upstream).await;
    let head = proxy.send(Request::head(proxy.url("/")).body(empty()).unwrap()).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "1000", "HEAD keeps the length of what GET would send");
    let get = proxy.get_as("/", Some("u")).await;
    assert_eq!((get.status.as_u16(), get.text()), (200, "ok".to_string()));
}

#[tokio::test]
async fn conflicting_or_malformed_lengths_from_an_upstream_are_502() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
    ] {
        let upstream = scripted(move |_, _, _| Step::Answer(answer)).await;
        let proxy = proxy_to(upstream).await;
        let reply = proxy.get_as("/", Some("u")).await;
        assert_eq!(reply.status, 502, "{:?}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn a_body_delimited_by_close_is_read_to_the_end() {
    let upstream = scripted(|_, _, _| Step::AnswerAndStall(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")).await;
    let proxy = proxy_to(upstream).await;
    // The upstream holds the connection 3 s after writing, then closes.
    let reply = proxy.get_as("/", Some("u")).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "until the end".to_string()));
}

/// Send `method` with a chunked body cut after its first chunk and read
/// the answer until its text contains `until`; then the rest of the body
/// (`rest`) and a pipelined GET, and read to the close. The two answers.
async fn half_upload_then_next(proxy: &Proxy, method: &str, until: &str, rest: &[u8]) -> (String, String) {
    let mut client = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    let head = format!("{method} /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let n =
            tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.expect("first answer").unwrap();
        assert!(n > 0, "closed after the first answer: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    client.write_all(&[rest, b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"].concat()).await.unwrap();
    let mut next = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut next)).await.expect("second answer").unwrap();
    (String::from_utf8_lossy(&seen).into_owned(), String::from_utf8_lossy(&next).into_owned())
}

#[tokio::test]
async fn an_answer_before_the_whole_body_still_lets_the_client_send_its_next_request() {
    // The upstream answers on the head alone, kept alive, not waiting for
    // the body; the client's body is still coming.
    let upstream = scripted(|_, _, _| Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = proxy_to(upstream).await;
    let (_, next) = half_upload_then_next(&proxy, "POST", "\r\n\r\nok", b"0\r\n\r\n").await;
    assert!(next.starts_with("HTTP/1.1 200"), "the next request must be answered: {next:?}");
}

#[tokio::test]
async fn a_body_the_upstream_never_took_is_read_and_dropped_so_the_next_request_is_answered() {
    // The upstream answers on the head alone and closes: the rest of the
    // upload has nowhere to go. grayshift's answer to the client is a
    // keep-alive one, so the client goes on with its next request after
    // the body; grayshift must read that body to its end, not close.
    let upstream = scripted(|_, _, _| {
        Step::AnswerAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    })
    .await;
    let proxy = proxy_to(upstream).await;
    let (first, next) = half_upload_then_next(&proxy, "PUT", "\r\n\r\nok", b"6\r\n world\r\n0\r\n\r\n").await;
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "the answer is a keep-alive one: {first}");
    assert!(next.starts_with("HTTP/1.1 200"), "the next request must be answered: {next:?}");
}

#[tokio::test]
async fn a_body_nobody_read_is_dropped_and_the_next_request_is_answered() {
    // No upstream listens: grayshift answers 502 itself, without ever
    // reading the upload. That answer is a keep-alive one, so the client
    // sends the rest of its body and then its next request.
    let nobody = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = nobody.local_addr().unwrap();
    drop(nobody);
    let proxy = proxy_to(closed).await;
    let (first, next) = half_upload_then_next(&proxy, "PUT", "pool\n", b"6\r\n world\r\n0\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 502"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "the answer is a keep-alive one: {first}");
    assert!(next.starts_with("HTTP/1.1 502"), "the next request must be answered: {next:?}");
}
