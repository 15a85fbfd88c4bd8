//! PostgreSQL over TLS: libpq's `sslmode` and `sslrootcert` against a real
//! PostgreSQL that accepts TLS connections only, through the `postgres`
//! signal of a real grayshift. One server, one grayshift, a rule per case.

mod common;
#[path = "common/rules.rs"]
mod rules_support;
#[path = "common/tls_postgres.rs"]
mod tls_postgres;

use common::*;
use rules_support::*;
use tls_postgres::TlsPostgres;

fn rule_toml(name: &str, url: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\nlevel = \"L2\"\nsignal = {{ source = \"postgres\", url = \"{url}\", query = \"select 0.25\", timeout = \"5s\" }}\nabove = 1000\nfor = \"0s\"\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_work_against_a_tls_only_postgres_and_certificate_problems_are_named() {
    let pg = TlsPostgres::start();
    let ca = format!("sslrootcert={}", pg.ca.display());
    let wrong_ca = format!("sslrootcert={}", pg.other_ca.display());
    let cases = [
        ("verify-full", pg.url("localhost", &format!("sslmode=verify-full&{ca}"))),
        ("verify-ca-by-ip", pg.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}"))),
        ("require", pg.url("localhost", "sslmode=require")),
        ("prefer-default", pg.url("localhost", "application_name=t")),
        ("wrong-ca", pg.url("localhost", &format!("sslmode=verify-full&{wrong_ca}"))),
        ("wrong-name", pg.url("127.0.0.1", &format!("sslmode=verify-full&{ca}"))),
        ("plain", pg.url("localhost", "sslmode=disable")),
    ];
    let rules: String = cases.iter().map(|(name, url)| rule_toml(name, url)).collect();
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 10, &format!("[rollback]\ninterval = \"100ms\"\n\n{rules}"));
    let proxy = Proxy::start(&text).await;

    for name in ["verify-full", "verify-ca-by-ip", "require", "prefer-default"] {
        let r =
            wait_rule(&proxy, name, "a value over TLS", |r| r["state"] != "unknown" || r["why"] != "not evaluated yet")
                .await;
        assert_eq!(r["value"], 0.25, "{name}: {r}");
        assert_eq!(r["state"], "ok", "{name}: {r}");
    }
    let why = |r: &serde_json::Value| r["why"].as_str().unwrap_or("").to_string();
    let r = wait_rule(&proxy, "wrong-ca", "an unknown reading", |r| {
        r["state"] == "unknown" && why(r).contains("certificate")
    })
    .await;
    assert!(why(&r).contains("UnknownIssuer"), "{r}");
    let r = wait_rule(&proxy, "wrong-name", "an unknown reading", |r| {
        r["state"] == "unknown" && why(r).contains("certificate")
    })
    .await;
    assert!(why(&r).contains("not valid for name"), "{r}");
    let r = wait_rule(&proxy, "plain", "an unknown reading", |r| r["state"] == "unknown" && why(r).contains("pg_hba"))
        .await;
    assert!(why(&r).contains("no encryption"), "a plain connection to a TLS-only server says why: {r}");
}

#[test]
fn an_unknown_sslmode_is_a_config_error() {
    let text =
        config_addrs(&[dead_addr()], &[dead_addr()], 10, &rule_toml("r", "postgresql://u@db/x?sslmode=sometimes"));
    let err = grayshift::config::parse(&text, "g.toml").unwrap_err().to_string();
    assert!(err.starts_with("g.toml:"), "{err}");
    assert!(err.contains("unknown sslmode \"sometimes\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_or_the_environment_works_and_shows_nowhere() {
    const SECRET: &str = "s3cret-Pa55word";
    let pg = TlsPostgres::start_with(Some(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, format!("  {SECRET}\n")).unwrap();
    let url_file = dir.path().join("db-url");
    let ca = format!("sslmode=verify-full&sslrootcert={}", pg.ca.display());
    std::fs::write(&url_file, pg.url("localhost", &ca)).unwrap();
    std::env::set_var("GRAYSHIFT_TEST_WRONG_PASSWORD", "not-it");
    let rules = format!(
        "[[rules]]\nname = \"from-file\"\nlevel = \"L2\"\nsignal = {{ source = \"postgres\", url = \"{url}\", password_file = \"{pw}\", query = \"select 0.25\" }}\nabove = 1000\n\n\
         [[rules]]\nname = \"wrong\"\nlevel = \"L2\"\nsignal = {{ source = \"postgres\", url_file = \"{url_file}\", password_env = \"GRAYSHIFT_TEST_WRONG_PASSWORD\", query = \"select 0.25\" }}\nabove = 1000\n",
        url = pg.url("localhost", &ca),
        pw = password_file.display(),
        url_file = url_file.display(),
    );
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 10, &format!("[rollback]\ninterval = \"100ms\"\n\n{rules}"));
    let proxy = Proxy::start(&text).await;

    let r = wait_rule(&proxy, "from-file", "a value with the file's password", |r| r["value"].is_number()).await;
    assert_eq!(r["value"], 0.25);
    let r =
        wait_rule(&proxy, "wrong", "a refusal", |r| r["state"] == "unknown" && r["why"] != "not evaluated yet").await;
    assert!(r["why"].as_str().unwrap().contains("password authentication failed"), "{r}");

    // A reload writes the audit log; then look everywhere an operator would.
    assert_eq!(proxy.admin("POST", "/reload", None, None).await.status, 200);
    let status = proxy.status().await.to_string();
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    let audit = proxy.admin("GET", "/audit", None, None).await.text();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .args(["check", "--config"])
        .arg(&proxy.config_path)
        .output()
        .unwrap();
    let check_out = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{check_out}");
    for (what, text) in [("/status", &status), ("/metrics", &metrics), ("/audit", &audit), ("check", &check_out)] {
        assert!(!text.contains(SECRET), "the password shows in {what}");
        assert!(!text.contains("not-it"), "the wrong password shows in {what}");
    }

    // The same config served by the binary, logging at debug: its log must
    // not hold the password either.
    let log_path = dir.path().join("grayshift.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
        .args(["run", "--config"])
        .arg(&proxy.config_path)
        .env("GRAYSHIFT_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let admin = eventually(DEADLINE, "the binary's start line", || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let line = log.lines().find(|l| l.contains("grayshift started"))?.to_string();
        let at = line.find("admin=")? + "admin=".len();
        Some(line[at..].split_whitespace().next()?.to_string())
    })
    .await;
    eventually(DEADLINE, "both rules read by the binary", || async {
        let url = format!("http://{admin}/status");
        let (_, body) = grayshift::client::request(http::Method::GET, &url, None, &[], None, DEADLINE).await.ok()?;
        let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let rules = status["rules"].as_array()?.clone();
        let read = |name: &str| rules.iter().any(|r| r["name"] == name && r["evaluated_at"].is_string());
        (read("from-file") && read("wrong")).then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("password authentication failed") || log.contains("rule"), "the log was written: {log}");
    assert!(!log.contains(SECRET) && !log.contains("not-it"), "a password shows in the log");

    // A missing variable is a check error naming the variable, not a value.
    let broken = text.replace("GRAYSHIFT_TEST_WRONG_PASSWORD", "GRAYSHIFT_TEST_UNSET_PASSWORD");
    let err = grayshift::config::parse(&broken.replace("{dir}", "/tmp"), "g.toml").unwrap_err().to_string();
    assert!(err.contains("environment variable GRAYSHIFT_TEST_UNSET_PASSWORD is not set"), "{err}");
}
