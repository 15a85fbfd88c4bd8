//! The path an upstream routes is the path L2 matched (README "How
//! grayshift reads a path"), end to end: a real grayshift in front of a
//! real Werkzeug app (tests/data/checkout_app.py) that decodes `%2F` and does
//! not resolve `..`, as Flask apps do, over HTTP/1.1 and HTTP/2.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The Werkzeug checkout app on a free port (it binds port 0 and prints the
/// port once it listens). Killed when dropped.
struct App {
    addr: SocketAddr,
    _child: Child,
}

impl App {
    async fn start() -> App {
        let python = std::env::var("GRAYSHIFT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/checkout_app.py");
        let mut child = Command::new(&python)
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{python} {script}: {e} (scripts/deps.sh installs python3 and Werkzeug)"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the app printed its port")
            .unwrap()
            .expect("the app exited before listening (is Werkzeug installed? scripts/deps.sh)");
        let port: u16 = line.strip_prefix("PORT ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        App { addr: SocketAddr::from(([127, 0, 0, 1], port)), _child: child }
    }
}

/// One raw HTTP/1.1 request on a fresh connection: status and body.
async fn h1(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} {target} HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, body.to_string())
}

/// One HTTP/2 (prior knowledge) request with exactly this `:path`.
async fn h2(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let uri = http::Uri::builder().scheme("http").authority("shop.example").path_and_query(path).build().unwrap();
    let req = http::Request::builder().method(method).uri(uri).body(()).unwrap();
    let (response, _) = client.ready().await.unwrap().send_request(req, true).unwrap();
    let (status, bytes) = common::h2_read(response).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The route the app matched and the target it was sent.
fn routed(status: u16, body: &str) -> (String, String) {
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (seen["route"].as_str().unwrap().to_string(), seen["raw"].as_str().unwrap().to_string())
}

const FEATURES: &str = "[features]\npaths = [\"/api/v2/checkout\"]\n";

/// The variants of the issue; sent straight to the app, each one reaches a
/// checkout view.
const VARIANTS: [&str; 6] = [
    "/api/v2%2fcheckout",
    "/api%2Fv2%2Fcheckout",
    "/%2fapi/v2/checkout",
    "/api/v2/checkout/..",
    "/api/v2/checkout/%2e%2E",
    "/api/v2/checkout%2F..",
];

/// Read as Tomcat reads `;` parameters, these are checkout.
const PARAMETER_VARIANTS: [&str; 2] = ["/api;x/v2/checkout", "/public/..;/api/v2/checkout"];

async fn proxy_with_l2(app: &App, extra: &str) -> Proxy {
    let text = config_addrs(&[app.addr], &[app.addr], 50, &format!("{FEATURES}{extra}"));
    let proxy = Proxy::start(&text).await;
    let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L2", "reason": "db load" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    proxy
}

/// An answer on its way: status and body.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)>>>;

/// HTTP/1.1 or HTTP/2, for the tests that must hold over both.
type Sender = fn(SocketAddr, &'static str, &'static str) -> Answer;

fn over_h1(addr: SocketAddr, method: &'static str, target: &'static str) -> Answer {
    Box::pin(h1(addr, method, target))
}

fn over_h2(addr: SocketAddr, method: &'static str, target: &'static str) -> Answer {
    Box::pin(h2(addr, method, target))
}

/// Under L2 (default `escaped_slashes = "reject"`) no variant reaches a
/// checkout view: an ambiguous escaped slash is a 400, a dot segment goes
/// upstream resolved; unrelated paths reach the app as sent.
async fn l2_holds(send: Sender) {
    let app = App::start().await;
    for target in VARIANTS {
        let (route, _) = {
            let (s, b) = h1(app.addr, "POST", target).await;
            routed(s, &b)
        };
        assert!(route.starts_with("checkout"), "the app itself routes {target} to {route}");
    }
    let proxy = proxy_with_l2(&app, "").await;
    let at = proxy.proxy_addr;
    for target in ["/api/v2%2fcheckout", "/api%2Fv2%2Fcheckout", "/%2fapi/v2/checkout", "/api/v2/checkout%2F.."] {
        let (status, body) = send(at, "POST", target).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("escaped slash"), "{target}: {body}");
    }
    // Tomcat, Jetty and Spring strip `;` parameters and then resolve `..`
    // (Werkzeug does not: the answer here is grayshift's, nothing reached
    // the app).
    for target in PARAMETER_VARIANTS {
        let (status, body) = send(at, "POST", target).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("path parameter"), "{target}: {body}");
    }
    for target in ["/api/v2/checkout/..", "/api/v2/checkout/%2e%2E"] {
        let (status, body) = send(at, "POST", target).await;
        assert_eq!(routed(status, &body), ("other".into(), "/api/v2/".into()), "{target}");
    }
    for target in ["/api/v2/checkout", "/api/v2/x/../checkout", "/api/v2/./checkout/pay"] {
        let (status, body) = send(at, "POST", target).await;
        assert_eq!(status, 503, "{target} is shed: {body}");
    }
    for target in ["/api/v1/orders", "/files/a%2Fb", "/search?q=/api/v2/checkout/..", "/static/app.js?v=2"] {
        let (status, body) = send(at, "POST", target).await;
        assert_eq!(routed(status, &body), ("other".into(), target.into()), "{target} reaches the app as sent");
    }
}

#[tokio::test]
async fn l2_variants_never_reach_checkout_over_http1() {
    l2_holds(over_h1).await;
}

#[tokio::test]
async fn l2_variants_never_reach_checkout_over_http2() {
    l2_holds(over_h2).await;
}

/// `escaped_slashes = "decode"`: the ambiguous escaped slash becomes `/`,
/// is shed under L2 and reaches the app decoded otherwise.
#[tokio::test]
async fn decoded_escaped_slashes_are_shed_and_forwarded_decoded() {
    let app = App::start().await;
    let proxy = proxy_with_l2(&app, "escaped_slashes = \"decode\"\n").await;
    for send in [over_h1 as Sender, over_h2] {
        for target in ["/api/v2%2fcheckout", "/api%2Fv2%2Fcheckout", "/%2fapi/v2/checkout", "/api/v2%5Ccheckout"] {
            let (status, body) = send(proxy.proxy_addr, "POST", target).await;
            assert_eq!(status, 503, "{target} is shed: {body}");
        }
        for target in PARAMETER_VARIANTS {
            let (status, body) = send(proxy.proxy_addr, "POST", target).await;
            assert_eq!(status, 503, "{target} is read with its parameters stripped and shed: {body}");
        }
        let (status, body) = send(proxy.proxy_addr, "POST", "/api/v2/checkout%2F..").await;
        assert_eq!(routed(status, &body), ("other".into(), "/api/v2/".into()));
        let (status, body) = send(proxy.proxy_addr, "GET", "/files/a%2Fb").await;
        assert_eq!(routed(status, &body), ("other".into(), "/files/a%2Fb".into()), "data elsewhere");
    }
    let r = proxy.admin("POST", "/resume", Some(json!({ "level": "L2" })), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, body) = h1(proxy.proxy_addr, "POST", "/api%2Fv2%2Fcheckout").await;
    assert_eq!(routed(status, &body), ("checkout".into(), "/api/v2/checkout".into()));
    let (status, body) = h1(proxy.proxy_addr, "POST", "/public/..;/api/v2/checkout").await;
    assert_eq!(routed(status, &body), ("checkout".into(), "/api/v2/checkout".into()), "sent stripped and resolved");
}

/// `*` is a target for OPTIONS only, over both protocols.
#[tokio::test]
async fn asterisk_form_is_only_for_options() {
    let app = App::start().await;
    let proxy = Proxy::start(&config_addrs(&[app.addr], &[app.addr], 0, FEATURES)).await;
    let (status, body) = h1(proxy.proxy_addr, "POST", "*").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("only for OPTIONS"), "{body}");
    let (status, body) = h2(proxy.proxy_addr, "GET", "*").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("only for OPTIONS"), "{body}");
    let (status, body) = h1(proxy.proxy_addr, "OPTIONS", "*").await;
    assert_eq!(routed(status, &body), ("other".into(), "*".into()));
}

/// An escaped slash inside a path that is under `[features] paths` either
/// way is data: it reaches the app as sent (in both modes) while L2 is not
/// active, and is shed like any checkout path while it is.
#[tokio::test]
async fn an_escaped_slash_under_features_either_way_goes_as_sent() {
    const ITEM: &str = "/api/v2/checkout/items/AB%2F12";
    let app = App::start().await;
    for mode in ["reject", "decode"] {
        let extra = format!("{FEATURES}escaped_slashes = \"{mode}\"\n");
        let proxy = Proxy::start(&config_addrs(&[app.addr], &[app.addr], 50, &extra)).await;
        for send in [over_h1 as Sender, over_h2] {
            let (status, body) = send(proxy.proxy_addr, "GET", ITEM).await;
            assert_eq!(routed(status, &body), ("checkout-rest".into(), ITEM.into()), "{mode}");
        }
        let r = proxy.admin("POST", "/rollback", Some(json!({ "level": "L2", "reason": "db load" })), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        for send in [over_h1 as Sender, over_h2] {
            let (status, body) = send(proxy.proxy_addr, "GET", ITEM).await;
            assert_eq!(status, 503, "{mode}: {ITEM} is shed: {body}");
        }
    }
}
