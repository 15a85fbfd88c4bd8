//! TLS on the proxy listener: ALPN h2 and http/1.1, X-Forwarded-Proto,
//! certificates reloaded with the config, a bad certificate keeps the old one.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

/// Write a fresh self-signed certificate for `localhost`; returns its DER.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key_pair.serialize_pem()).unwrap();
    cert.der().clone()
}

fn client_config(trusted: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    proxy: &Proxy,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(proxy.proxy_addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

async fn get_h1(proxy: &Proxy, config: Arc<rustls::ClientConfig>) -> serde_json::Value {
    let tls = connect(proxy, config).await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/tls").header("host", "localhost").header("x-user-id", "alice").body(empty()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

fn tls_config(stable: &Upstream, new: &Upstream) -> String {
    config(&[stable], &[new], 100, "").replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\ntls = { cert = \"{dir}/tls.crt\", key = \"{dir}/tls.key\" }",
    )
}

#[tokio::test]
async fn serves_http1_and_h2_over_tls_and_reloads_certificates() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let first = write_cert(dir.path());
    let proxy = Proxy::start_in(dir.clone(), &tls_config(&stable, &new)).await;

    let seen = get_h1(&proxy, client_config(&first, &[b"http/1.1"])).await;
    assert_eq!(seen["upstream"], "new");
    assert_eq!(seen["x-forwarded-proto"], "https");

    // ALPN h2.
    let tls = connect(&proxy, client_config(&first, &[b"h2", b"http/1.1"])).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/h2").header("x-user-id", "alice").body(empty()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);

    // A broken certificate: the reload is refused, the old one keeps serving.
    std::fs::write(dir.path().join("tls.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        .unwrap();
    let r = proxy.admin("POST", "/reload", None, None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("tls.crt"), "{}", r.text());
    get_h1(&proxy, client_config(&first, &[b"http/1.1"])).await;

    // A renewed certificate is picked up by the next reload.
    let second = write_cert(dir.path());
    assert_eq!(proxy.admin("POST", "/reload", None, None).await.status, 200);
    get_h1(&proxy, client_config(&second, &[b"http/1.1"])).await;
    assert!(
        connect(&proxy, client_config(&first, &[b"http/1.1"])).await.is_err(),
        "the old certificate is no longer served"
    );
}

#[tokio::test]
async fn a_missing_certificate_is_a_start_up_error() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grayshift.toml");
    std::fs::write(&path, tls_config(&stable, &new).replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let err = grayshift::start(grayshift::Options::new(&path)).await.err().expect("no certificate: refuse to start");
    assert!(err.to_string().contains("tls.crt"), "{err}");
}

/// A TLS 1.2 ClientHello whose SNI carries `name` (what `wrk
/// https://127.0.0.1/` and `openssl s_client -servername 127.0.0.1` send;
/// rustls' own client never puts an IP address there).
fn client_hello_with_sni(name: &[u8]) -> Vec<u8> {
    let mut sni = vec![0x00]; // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&sni);
    let mut extensions = vec![0x00, 0x00]; // server_name
    extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&list);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f]); // ECDHE-RSA-AES128-GCM-SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The binary, as deployed (its own log setup): a client that sends an IP
/// address as SNI, or breaks off its handshake, gets no `warn` line per
/// connection; both are counted instead.
#[tokio::test]
async fn per_connection_tls_complaints_are_counted_not_logged_at_warn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = write_cert(dir.path());
    let (proxy, admin) = (free(), free());
    let text = tls_config(&stable, &stable)
        .replace("listen = \"127.0.0.1:0\"\ndrain_timeout", &format!("listen = \"{proxy}\"\ndrain_timeout"))
        .replace("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"{admin}\""))
        .replace("{dir}", dir.path().to_str().unwrap());
    let config_path = dir.path().join("grayshift.toml");
    std::fs::write(&config_path, text).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .args(["run", "--config", config_path.to_str().unwrap()])
        .env_remove("GRAYSHIFT_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let metrics = || async move {
        let url = format!("http://{admin}/metrics");
        let r = grayshift::client::request(http::Method::GET, &url, None, &[], None, std::time::Duration::from_secs(1))
            .await;
        r.ok().map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
    };
    let sample = |text: &str, series: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
    };
    eventually(std::time::Duration::from_secs(20), "grayshift's admin listener", metrics).await;

    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(&client_hello_with_sni(b"127.0.0.1")).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    }
    // A well-behaved client is still served.
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&trusted, &[b"http/1.1"]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(tls.is_ok(), "{tls:?}");

    let counted = eventually(std::time::Duration::from_secs(10), "the complaints counted", || async {
        let text = metrics().await?;
        let warnings = sample(&text, "grayshift_tls_client_warnings_total");
        let failed = sample(&text, "grayshift_tls_handshake_errors_total{reason=\"failed\"}");
        (warnings >= 3.0 && failed >= 3.0).then_some((warnings, failed))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(log.contains("grayshift started"), "the log was captured: {log}");
    assert!(!log.contains("WARN") && !log.contains("Illegal SNI"), "per-connection warnings in the log: {log}");
    assert!(counted.0 >= 3.0 && counted.1 >= 3.0);
}
