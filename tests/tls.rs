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
