//! Request smuggling and framing: raw bytes on a socket, one case per line.
//! Every refused case must get its status, close the connection, and reach
//! no upstream; accepted controls must arrive intact.
//! References (Debian's nginx 1.22 / HAProxy 2.6 answers) are in
//! `tests/data/smuggling-references.md`.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// (name, raw request, expected status).
const REFUSED: &[(&str, &str, u16)] = &[
    ("two_differing_cl", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl_list_differing", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
    ("cl_plus_sign", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("cl_negative", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("cl_not_a_number", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
    ("cl_hex", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400),
    ("cl_overflow", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("te_chunked_twice", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_two_headers", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_gzip_only", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400),
    ("te_chunked_not_last", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te_unknown_coding", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("te_identity", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n", 400),
    ("te_empty_element", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_gzip_chunked", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te_in_http10", "POST /drain HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("missing_host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    ("absolute_form_missing_host", "GET http://a/ HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    ("two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host_with_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host_with_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("obs_fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    ("space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("tab_before_colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    ("bad_header_name", "GET / HTTP/1.1\r\nHost: a\r\nX@A: 1\r\n\r\n", 400),
    ("nul_in_value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
    ("bad_method", "G<T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bad_version", "GET / HTTP/1.7\r\nHost: a\r\n\r\n", 400),
    ("lf_in_request_line", "GET /\nx HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("empty_header_name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400),
    ("space_in_target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("connect_method", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    ("chunk_size_not_hex", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_overflow", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_negative", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_data_too_long", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n", 400),
];

async fn upstreams() -> (Upstream, Upstream, Proxy) {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 0, "")).await;
    (stable, new, proxy)
}

/// Send raw bytes, read until the peer closes (or 5 s pass).
async fn exchange(proxy: &Proxy, raw: &[u8]) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_to_close(&mut s).await
}

fn status_of(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_get_their_status_close_and_reach_no_upstream() {
    let (stable, new, proxy) = upstreams().await;
    let mut failures = Vec::new();
    for (name, raw, expected) in REFUSED {
        let before = stable.hits() + new.hits();
        let (response, closed) = exchange(&proxy, raw.as_bytes()).await;
        let status = status_of(&response);
        let reached = stable.hits() + new.hits() - before;
        // Bad chunk framing is only seen after the head went upstream; the
        // upstream request is aborted then, so it may count a hit.
        let body_case = name.starts_with("chunk_");
        if status != *expected || !closed || (reached > 0 && !body_case) {
            failures.push(format!(
                "{name}: status {status} (want {expected}), closed {closed}, reached upstream {reached}\n{response}"
            ));
        }
    }
    assert!(REFUSED.len() >= 30);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), REFUSED.len(), failures.join("\n---\n"));
    // The proxy is fine afterwards.
    assert_eq!(proxy.get_as("/", Some("bob")).await.status, 200);
}

/// RFC 9112 §6.1: a request with both Content-Length and Transfer-Encoding
/// is refused, in either order and any letter case, with hyper's own 400
/// and the connection closed (hyper alone would drop the Content-Length and
/// frame by chunked; the framing guard under it makes it refuse instead).
const CL_AND_TE: &[(&str, &str)] = &[
    (
        "cl_then_te",
        "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "te_then_cl",
        "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    ("mixed_case", "POST /drain HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING: chunked\r\ncontent-LENGTH: 3\r\n\r\n0\r\n\r\n"),
    ("cl_zero", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bare_lf", "POST /drain HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 5\n\n0\n\n"),
    ("te_not_chunked", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
];

/// Requests that go through normally before the conflicting one.
const FIRST: &[(&str, &str)] = &[
    ("get", "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("cl_body", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
    (
        "chunked_body",
        "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    ),
];

/// Read until the peer closes (or 5 s pass): what came, and whether it closed.
async fn read_to_close(s: &mut (impl AsyncRead + Unpin)) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Read one whole response (framed by its Content-Length).
async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1];
    loop {
        let head_end = out.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("a response").unwrap();
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&out));
        out.push(buf[0]);
    }
}

/// Exactly one response, a 400 with nothing of the rest answered.
fn refused_alone(response: &str) -> bool {
    status_of(response) == 400 && response.matches("HTTP/1.1").count() == 1
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_closes() {
    let (stable, new, proxy) = upstreams().await;
    for (name, raw) in CL_AND_TE {
        let (response, closed) = exchange(&proxy, raw.as_bytes()).await;
        assert!(refused_alone(&response), "{name}: {response}");
        assert!(closed, "{name}: {response}");
        assert_eq!(stable.hits() + new.hits(), 0, "{name}: reached an upstream");
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_in_a_later_request() {
    let (stable, new, proxy) = upstreams().await;
    let mut hits = 0;
    // Pipelined: both requests in one write.
    for (first_name, first) in FIRST {
        for (name, raw) in CL_AND_TE {
            let (response, closed) = exchange(&proxy, format!("{first}{raw}").as_bytes()).await;
            assert_eq!(status_of(&response), 200, "{first_name} + {name}: {response}");
            assert!(closed, "{first_name} + {name}");
            let second = response.get(response.rfind("HTTP/1.1").unwrap_or(0)..).unwrap_or_default();
            assert!(
                refused_alone(second) && response.matches("HTTP/1.1").count() == 2,
                "{first_name} + {name}: {response}"
            );
            assert!(!response.contains("smuggled"), "{response}");
            hits += 1;
            assert_eq!(stable.hits() + new.hits(), hits, "{first_name} + {name}: only the first reaches an upstream");
        }
    }
    // Keep-alive: the second request after the first's response, and it
    // dribbled a byte at a time, so the guard sees every split.
    for (name, raw) in CL_AND_TE {
        let mut s = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(FIRST[1].1.as_bytes()).await.unwrap();
        let first = read_response(&mut s).await;
        assert!(status_of(&first) == 200 && first.contains("drained 5"), "{first}");
        for byte in raw.as_bytes() {
            if s.write_all(&[*byte]).await.is_err() {
                break; // refused before the end: fine
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (response, closed) = read_to_close(&mut s).await;
        assert!(refused_alone(&response) && closed, "{name} dribbled: {response}");
        hits += 1;
        assert_eq!(stable.hits() + new.hits(), hits, "{name} dribbled");
    }
    // The proxy is fine afterwards, and a normal keep-alive connection too.
    assert_eq!(proxy.get_as("/", Some("bob")).await.status, 200);
    let (response, closed) = exchange(
        &proxy,
        format!("{}{}{}", FIRST[0].1, FIRST[1].1, FIRST[2].1.replace("Host: a", "Host: a\r\nConnection: close"))
            .as_bytes(),
    )
    .await;
    assert!(closed);
    assert_eq!(response.matches("HTTP/1.1 200").count(), 3, "{response}");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_over_tls() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key_pair.serialize_pem()).unwrap();
    let text = config(&[&stable], &[&new], 0, "").replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\ntls = { cert = \"{dir}/tls.crt\", key = \"{dir}/tls.key\" }",
    );
    let proxy = Proxy::start_in(dir, &text).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    for (name, raw) in CL_AND_TE {
        let tcp = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
        let name_ = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name_, tcp).await.unwrap();
        tls.write_all(format!("{}{raw}", FIRST[0].1).as_bytes()).await.unwrap();
        let (response, closed) = read_to_close(&mut tls).await;
        let second = response.get(response.rfind("HTTP/1.1").unwrap_or(0)..).unwrap_or_default();
        assert_eq!(status_of(&response), 200, "{name}: {response}");
        assert!(refused_alone(second) && closed, "{name} over TLS: {response}");
    }
    assert_eq!(stable.hits() + new.hits(), CL_AND_TE.len());
}

#[tokio::test]
async fn accepted_framings_arrive_intact() {
    let (_stable, _new, proxy) = upstreams().await;
    let cases: &[(&str, &str, &str)] = &[
        ("plain", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", "drained 5"),
        ("same_cl_twice", "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", "drained 5"),
        ("chunked", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "drained 11"),
        ("chunked_upper", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "drained 3"),
        ("chunk_extension", "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n", "drained 3"),
        ("http10_no_host", "GET / HTTP/1.0\r\n\r\n", "\"upstream\":\"stable\""),
    ];
    for (name, raw, expected) in cases {
        let (response, _) = exchange(&proxy, raw.as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{name}: {response}");
        assert!(response.contains(expected), "{name}: {response}");
    }
}

#[tokio::test]
async fn pipelined_requests_after_a_body_are_framed_correctly() {
    let (_stable, _new, proxy) = upstreams().await;
    let raw = "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (response, closed) = exchange(&proxy, raw.as_bytes()).await;
    assert!(closed);
    assert_eq!(response.matches("HTTP/1.1 200").count(), 2, "{response}");
    assert!(response.contains("drained 5") && response.contains("\"path\":\"/second\""), "{response}");
}

#[tokio::test]
async fn oversized_heads_are_refused_with_431_and_414() {
    let (stable, new, proxy) = upstreams().await;
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let (response, closed) = exchange(&proxy, big.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "{}", &response[..response.len().min(200)]);
    assert!(closed);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (response, _) = exchange(&proxy, format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes()).await;
    assert_eq!(status_of(&response), 431, "{response}");
    let (response, _) =
        exchange(&proxy, format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000)).as_bytes()).await;
    assert_eq!(status_of(&response), 414, "{response}");
    assert_eq!(stable.hits() + new.hits(), 0);
}

#[tokio::test]
async fn body_limit_answers_413() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 0, "")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"5s\"\nmax_body_bytes = 10");
    let proxy = Proxy::start(&text).await;
    let (response, _) =
        exchange(&proxy, b"POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world").await;
    assert_eq!(status_of(&response), 413, "{response}");
    let chunked =
        "POST /drain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n";
    let (response, _) = exchange(&proxy, chunked.as_bytes()).await;
    assert_eq!(status_of(&response), 413, "a chunked body is cut off at the limit: {response}");
    let (response, _) =
        exchange(&proxy, b"POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await;
    assert_eq!(status_of(&response), 200, "{response}");
}

/// Not a check: prints how another proxy answers the same corpus, for the
/// reference table in `tests/data/smuggling-references.md`.
/// `SMUGGLING_TARGET=127.0.0.1:8081 cargo test --test smuggling -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn print_reference_answers() {
    let target: std::net::SocketAddr =
        std::env::var("SMUGGLING_TARGET").expect("SMUGGLING_TARGET=host:port").parse().unwrap();
    for (name, raw, expected) in REFUSED {
        let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        let text = String::from_utf8_lossy(&out);
        let statuses: Vec<&str> =
            text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)).collect();
        println!(
            "| {name} | {expected} | {} | {} |",
            if statuses.is_empty() { "-".into() } else { statuses.join(", ") },
            if closed { "closed" } else { "open" }
        );
    }
}
