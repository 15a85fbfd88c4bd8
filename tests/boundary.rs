//! The HTTP/2 → HTTP/1.1 boundary and header variants (issue 12), end to
//! end: raw bytes or an h2 client, a real grayshift, real upstreams (the
//! harness's, or a raw one here that records every head it gets and can
//! answer what a misbehaving upstream would).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1.1 upstream on a raw socket: records each request head (no
/// bodies in these tests) and writes `answer(head)` for it, as long as the
/// connection stays open.
struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start(answer: fn(&str) -> Vec<u8>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                            buf.drain(..end + 4);
                            seen.lock().unwrap().push(head.clone());
                            if s.write_all(&answer(&head)).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        RawUpstream { addr, heads, task }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An h2c-capable upstream: 101 to an `Upgrade: h2c`, else a 200 whose
/// body is the head it got.
fn h2c_capable(head: &str) -> Vec<u8> {
    if head.to_ascii_lowercase().contains("\r\nupgrade: h2c") {
        return b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    }
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}", head.len()).into_bytes()
}

/// An upstream that switches protocols whatever it is asked.
fn always_101(_: &str) -> Vec<u8> {
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec()
}

/// Read one response with a Content-Length body (or up to EOF).
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())
            });
            // A 101 has no body: the tunnel follows.
            if len.is_some_and(|len| body.len() >= len) || head.starts_with("HTTP/1.1 101") {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
        if n == 0 {
            return text;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Send raw bytes on a fresh connection and read one response.
async fn exchange(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_response(&mut s).await
}

/// The JSON of headers the harness upstream saw, from a raw response.
fn seen_json(response: &str) -> serde_json::Value {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {response}"));
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

/// An HTTP/2 (prior knowledge) connection to the proxy.
async fn h2_client(proxy: &Proxy) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Send one bodiless h2 request; its status and body.
async fn h2_send(client: &mut h2::client::SendRequest<bytes::Bytes>, req: http::Request<()>) -> (u16, Vec<u8>) {
    let (response, _) = client.clone().ready().await.unwrap().send_request(req, true).unwrap();
    common::h2_read(response).await
}

fn metric(proxy: &Proxy, series: &str) -> f64 {
    let text = proxy.shared().metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in metrics"))
        .trim()
        .parse()
        .unwrap()
}

const H2C_UPGRADE: &[u8] = b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
    HTTP2-Settings: AAMAAABk\r\nx-gray-pool: new\r\nx-forwarded-for: 6.6.6.6\r\n\r\n";

// 1. An h2c upgrade is not tunnelled: the request goes as plain HTTP/1.1.
#[tokio::test]
async fn h2c_upgrade_is_dropped_and_the_request_forwarded_as_http1() {
    let upstream = RawUpstream::start(h2c_capable).await;
    let proxy = Proxy::start(&config_addrs(&[upstream.addr], &[upstream.addr], 0, "")).await;
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(H2C_UPGRADE).await.unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "a normal answer, not a 101: {first}");
    // Still HTTP/1.1 through grayshift: a second request on the connection
    // is rewritten like any other (HTTP2-Settings unlisted in Connection).
    s.write_all(b"GET /second HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n").await.unwrap();
    let second = read_response(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let heads = upstream.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        for gone in ["\r\nupgrade:", "\r\nhttp2-settings:", "\r\nconnection:"] {
            assert!(!lower.contains(gone), "{gone:?} reached the upstream: {head}");
        }
        assert!(lower.contains("\r\nx-gray-pool: stable\r\n") && !lower.contains("x-gray-pool: new"), "{head}");
    }
    // The client's X-Forwarded-For is appended to, as for any request.
    assert!(heads[0].contains("\r\nx-forwarded-for: 6.6.6.6, 127.0.0.1\r\n"), "{}", heads[0]);
    assert!(heads[1].contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{}", heads[1]);
}

// 1. WebSocket is still tunnelled, whatever the case of its token.
#[tokio::test]
async fn websocket_upgrade_still_tunnels() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping");
}

// 5. A 101 nobody asked for is a 502 and an upstream error of the pool.
#[tokio::test]
async fn an_unasked_101_is_a_502_for_http1_and_http2_clients() {
    let upstream = RawUpstream::start(always_101).await;
    let proxy = Proxy::start(&config_addrs(&[upstream.addr], &[upstream.addr], 0, "")).await;
    let resets = "grayshift_upstream_errors_total{kind=\"reset\",pool=\"stable\"}";

    // HTTP/1.1, pipelined: both answered, the second is not lost.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    for _ in 0..2 {
        let response = read_response(&mut s).await;
        assert!(response.starts_with("HTTP/1.1 502"), "{response}");
        assert!(response.contains("stable pool failed to answer"), "{response}");
    }
    assert_eq!(metric(&proxy, resets), 2.0);

    // A WebSocket request the upstream switches to something else.
    let ws =
        exchange(&proxy, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").await;
    assert!(ws.starts_with("HTTP/1.1 502"), "{ws}");
    assert_eq!(metric(&proxy, resets), 3.0);

    // HTTP/2: a 502, never a HEADERS frame with :status 101.
    let mut client = h2_client(&proxy).await;
    let (status, _) = h2_send(&mut client, http::Request::get(proxy.url("/h2")).body(()).unwrap()).await;
    assert_eq!(status, 502);
    assert_eq!(metric(&proxy, resets), 4.0);
    assert_eq!(metric(&proxy, "grayshift_requests_total{code=\"5xx\",pool=\"stable\"}"), 4.0);
}

// 2. HTTP/2 cookie crumbs become one Cookie line.
#[tokio::test]
async fn http2_cookie_fields_reach_the_upstream_as_one() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let upstream = RawUpstream::start(h2c_capable).await;
    let raw_proxy = Proxy::start(&config_addrs(&[upstream.addr], &[upstream.addr], 0, "")).await;
    let req = || {
        http::Request::get(proxy.url("/c"))
            .header("cookie", "session=abc123")
            .header("cookie", "uid=bob")
            .body(())
            .unwrap()
    };
    let (status, body) = h2_send(&mut h2_client(&proxy).await, req()).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["cookie"], "session=abc123; uid=bob");
    // On the wire: exactly one line.
    let (status, _) = h2_send(&mut h2_client(&raw_proxy).await, req()).await;
    assert_eq!(status, 200);
    let head = upstream.heads().pop().unwrap();
    assert_eq!(head.to_ascii_lowercase().matches("\r\ncookie:").count(), 1, "{head}");
    assert!(head.contains("\r\ncookie: session=abc123; uid=bob\r\n"), "{head}");
}

// 3. The request's authority wins over a Host field.
#[tokio::test]
async fn the_authority_wins_over_host_for_http2_and_absolute_form() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let req = http::Request::get("http://a.example/h2").header("host", "b.example").body(()).unwrap();
    let (status, body) = h2_send(&mut h2_client(&proxy).await, req).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((&seen["host"], &seen["x-forwarded-host"]), (&json!("a.example"), &json!("a.example")));

    let seen = seen_json(&exchange(&proxy, b"GET http://a.example:81/z HTTP/1.1\r\nHost: b.example\r\n\r\n").await);
    assert_eq!((&seen["host"], &seen["x-forwarded-host"]), (&json!("a.example:81"), &json!("a.example:81")));
    assert_eq!(seen["path"], "/z");
    let seen = seen_json(&exchange(&proxy, b"GET http://u:p@a.example/z HTTP/1.1\r\nHost: a.example\r\n\r\n").await);
    assert_eq!(seen["host"], "a.example", "no userinfo in Host");
}

// 4. Host is always sent: the endpoint's host:port when the client named none.
#[tokio::test]
async fn a_request_without_host_gets_the_endpoints() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let seen = seen_json(&exchange(&proxy, b"GET /x HTTP/1.0\r\n\r\n").await);
    assert_eq!(seen["host"], stable.addr.to_string());
    assert!(seen.get("x-forwarded-host").is_none(), "the client named no host: {seen}");

    let req = http::Request::get("/x").body(()).unwrap();
    let (status, body) = h2_send(&mut h2_client(&proxy).await, req).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["host"], stable.addr.to_string(), "HTTP/2 without :authority");
    assert!(seen.get("x-forwarded-host").is_none(), "{seen}");
}

const UNDERSCORES: &[u8] = b"GET /u HTTP/1.1\r\nHost: a\r\nX_Gray_Pool: new\r\nX_Forwarded_For: 6.6.6.6\r\n\
    X_Forwarded_Host: evil.example\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\nX_Custom: 1\r\nX-Normal: 2\r\n\r\n";

fn underscore_names(seen: &serde_json::Value) -> Vec<String> {
    seen.as_object().unwrap().keys().filter(|k| k.contains('_')).cloned().collect()
}

// 6. Underscore variants of our names never pass; the rest as configured.
#[tokio::test]
async fn underscore_header_names_are_dropped_allowed_or_refused() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    let seen = seen_json(&exchange(&proxy, UNDERSCORES).await);
    assert!(underscore_names(&seen).is_empty(), "drop is the default: {seen}");
    assert_eq!((&seen["x-normal"], &seen["x-gray-pool"]), (&json!("2"), &json!("stable")));
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    drop(proxy);

    let allow = config(&[&stable], &[&new], 0, "").replace("[server]\n", "[server]\nunderscore_headers = \"allow\"\n");
    let proxy = Proxy::start(&allow).await;
    let seen = seen_json(&exchange(&proxy, UNDERSCORES).await);
    assert_eq!(underscore_names(&seen), ["x_custom"], "only names that are not ours: {seen}");
    drop(proxy);

    let reject =
        config(&[&stable], &[&new], 0, "").replace("[server]\n", "[server]\nunderscore_headers = \"reject\"\n");
    let proxy = Proxy::start(&reject).await;
    let hits = stable.hits();
    let refused = exchange(&proxy, b"GET /u HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("connection: close"), "{refused}");
    assert_eq!(stable.hits(), hits, "nothing reached the upstream");
    let fine = seen_json(&exchange(&proxy, b"GET /u HTTP/1.1\r\nHost: a\r\nX-Custom: 1\r\n\r\n").await);
    assert_eq!(fine["x-custom"], "1");
}

// 7. Under L2, variants of a shed path are shed; dot segments go upstream resolved.
#[tokio::test]
async fn l2_sheds_the_normalised_path() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let features = "[features]\npaths = [\"/api/v2/checkout\"]\n";
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, features)).await;
    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L2", "reason": "db load" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let variants = [
        "/api/v2/checkout",
        "//api/v2/checkout",
        "/api/v2//checkout",
        "/api/v2/./checkout",
        "/api/v1/../v2/checkout",
        "/api/v2/%63heckout",
        "/api/v2/checkout/../checkout?x=1",
    ];
    let hits = stable.hits();
    for path in variants {
        let response = exchange(&proxy, format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 503"), "{path} was not shed: {response}");
    }
    assert_eq!(stable.hits(), hits, "no variant reached the upstream");
    // Not shed: forwarded with its dot segments resolved (what was matched),
    // the rest as the client wrote it.
    let seen = seen_json(&exchange(&proxy, b"GET /api/v2/./other/../l%69st?q=/../x HTTP/1.1\r\nHost: a\r\n\r\n").await);
    assert_eq!(seen["path"], "/api/v2/l%69st?q=/../x");
    let seen = seen_json(&exchange(&proxy, b"GET /API/V2/Checkout HTTP/1.1\r\nHost: a\r\n\r\n").await);
    assert_eq!(seen["path"], "/API/V2/Checkout", "case-sensitive by default");
    drop(proxy);

    let text = config(&[&stable], &[&new], 0, &format!("{features}case_insensitive = true\n"));
    let proxy = Proxy::start(&text).await;
    assert_eq!(proxy.admin("POST", "/rollback", Some(json!({ "level": "L2" })), None).await.status, 200);
    let response = exchange(&proxy, b"GET /API/V2/%43heckout HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
}
