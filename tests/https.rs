//! `https://` for what grayshift calls itself: a real HTTPS server (rustls,
//! a certificate for `localhost` from a CA the test made) serving a
//! Prometheus-shaped answer and a JSON health document, and receiving the
//! notify and L3 hook webhooks, checked against the CA given as `ca`.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use std::sync::Arc;

use common::*;
use rules_support::*;
use serde_json::json;

/// A server config for `localhost`, and the PEM of the CA that signed it.
fn tls_pair(ca_name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let ca = test_ca(ca_name);
    let (cert, key) = localhost_cert(&ca);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    (Arc::new(config), ca.0.pem())
}

const PROMETHEUS_ANSWER: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.42"]}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_webhooks_reach_https_endpoints_checked_against_their_ca() {
    let (tls, ca_pem) = tls_pair("grayshift https test CA");
    let (_, other_ca_pem) = tls_pair("another CA");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&other_ca, other_ca_pem).unwrap();

    let prometheus = JsonServer::start_tls(PROMETHEUS_ANSWER, tls.clone()).await;
    let health = JsonServer::start_tls(r#"{"db":{"load":0.3}}"#, tls.clone()).await;
    let notify = JsonServer::start_tls("{}", tls.clone()).await;
    let hook = JsonServer::start_tls("{}", tls).await;
    let extra = format!(
        r#"
[rollback]
interval = "100ms"
hook = {{ webhook = "{hook}", timeout = "5s", ca = "{ca}" }}

[[notify]]
webhook = "{notify}"
ca = "{ca}"

[[rules]]
name = "prom"
level = "L2"
signal = {{ source = "prometheus", url = "{prom}", query = "up", ca = "{ca}" }}
above = 1000

[[rules]]
name = "health"
level = "L2"
signal = {{ source = "http", url = "{health}", pointer = "/db/load", ca = "{ca}" }}
above = 1000

[[rules]]
name = "wrong-ca"
level = "L2"
signal = {{ source = "http", url = "{health}", pointer = "/db/load", ca = "{other}" }}
above = 1000

[[rules]]
name = "system-roots"
level = "L2"
signal = {{ source = "http", url = "{health}", pointer = "/db/load" }}
above = 1000
"#,
        hook = hook.url("/hook"),
        notify = notify.url("/events"),
        prom = prometheus.url(""),
        health = health.url("/health"),
        ca = ca.display(),
        other = other_ca.display(),
    );
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 10, &extra)).await;

    let r = wait_rule(&proxy, "prom", "a value over https", |r| r["value"].is_number()).await;
    assert_eq!(r["value"], 0.42);
    let r = wait_rule(&proxy, "health", "a value over https", |r| r["value"].is_number()).await;
    assert_eq!(r["value"], 0.3);
    let why = |r: &serde_json::Value| r["why"].as_str().unwrap_or("").to_string();
    let r = wait_rule(&proxy, "wrong-ca", "unknown", |r| r["state"] == "unknown" && why(r).contains("TLS")).await;
    assert!(why(&r).contains("UnknownIssuer"), "{r}");
    let r = wait_rule(&proxy, "system-roots", "unknown", |r| r["state"] == "unknown" && why(r).contains("TLS")).await;
    assert!(why(&r).contains("UnknownIssuer"), "a private CA is not among the system's roots: {r}");

    let reply = proxy.admin("POST", "/rollback", Some(json!({"level": "L3", "reason": "rows differ"})), None).await;
    assert_eq!(reply.status, 200);
    let events = eventually(DEADLINE, "the notify webhook over https", || async {
        let got = notify.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(events[0]["level"], "L3");
    let calls = eventually(DEADLINE, "the hook webhook over https", || async {
        let got = hook.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(calls[0]["event"], "rollback_hook");
    wait_status(&proxy, "the hook succeeded", |s| s["rollback"]["active"]["L3"]["hook"] == "succeeded").await;
}

#[test]
fn a_missing_ca_file_is_a_config_error() {
    let extra = "[[notify]]\nwebhook = \"https://hooks.example/x\"\nca = \"/nonexistent/ca.pem\"\n";
    let text = config_addrs(&[dead_addr()], &[dead_addr()], 10, extra);
    let err = grayshift::config::parse(&text, "g.toml").unwrap_err().to_string();
    assert!(err.starts_with("g.toml:") && err.contains("CA file /nonexistent/ca.pem"), "{err}");
}
