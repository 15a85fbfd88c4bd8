//! The schema gate against a real PostgreSQL: each test keeps the migration
//! tool's table in a schema of its own (`search_path` in the URL), so the
//! tools' fixed table names never clash.

mod common;
#[path = "common/rules.rs"]
mod rules_support;

use common::*;
use rules_support::*;

fn gate_config(stable: &Upstream, new: &Upstream, schema: &str) -> String {
    config(&[stable], &[new], 100, &format!("[schema]\n{schema}\ninterval = \"100ms\"\n")).replace(
        "key = [\"header:X-User-ID\", \"client_ip\"]",
        "key = [\"header:X-User-ID\", \"client_ip\"]\nforce_new = [\"qa\"]",
    )
}

async fn pools_seen(proxy: &Proxy) -> (String, String) {
    (
        proxy.get_as("/", Some("alice")).await.upstream().to_string(),
        proxy.get_as("/", Some("qa")).await.upstream().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alembic_gate_keeps_everyone_off_new_until_the_migration_lands() {
    let db = Scratch::new("create table alembic_version (version_num varchar(32) primary key); insert into alembic_version values ('a1b2c3')").await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let schema = format!(
        "url = \"{}\"\ntool = \"alembic\"\nnew_requires = [\"e3a1\"]\nstable_supports = [\"a1b2c3\", \"e3a1\"]",
        db.url()
    );
    let proxy = Proxy::start(&gate_config(&stable, &new, &schema)).await;

    let status = wait_status(&proxy, "the first read", |s| s["schema"]["read_at"].is_string()).await;
    assert_eq!(status["schema"]["version"], "a1b2c3");
    assert_eq!(status["schema"]["new_ready"], false);
    assert_eq!(status["percent"]["effective"], 0, "{status}");
    assert_eq!(pools_seen(&proxy).await, ("stable".into(), "stable".into()), "force_new too stays off new");
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(metrics.lines().any(|l| l == "grayshift_schema_ready 0"), "{metrics}");

    db.exec("update alembic_version set version_num = 'e3a1'").await;
    wait_status(&proxy, "the gate open", |s| s["schema"]["new_ready"] == true && s["percent"]["effective"] == 100)
        .await;
    assert_eq!(pools_seen(&proxy).await, ("new".into(), "new".into()));
    let audit = proxy.admin("GET", "/audit", None, None).await.json();
    assert!(
        audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "schema" && e["new"] == "open"),
        "{audit}"
    );

    // A missing table closes it again, with the reason.
    db.exec("drop table alembic_version").await;
    let status = wait_status(&proxy, "the gate closed", |s| s["schema"]["error"].is_string()).await;
    assert!(status["schema"]["error"].as_str().unwrap().contains("alembic_version"), "{status}");
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(pools_seen(&proxy).await, ("stable".into(), "stable".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flyway_ignores_failed_migrations_and_orders_dotted_versions_as_numbers() {
    let db = Scratch::new(
        "create table flyway_schema_history (installed_rank int primary key, version varchar(50), success boolean not null); \
         insert into flyway_schema_history values (1, '2.9', true), (2, '2.10', false)",
    )
    .await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let schema =
        format!("url = \"{}\"\ntool = \"flyway\"\nnew_requires = \"2.10\"\nstable_supports = \"2.10\"", db.url());
    let proxy = Proxy::start(&gate_config(&stable, &new, &schema)).await;
    let status = wait_status(&proxy, "the first read", |s| s["schema"]["read_at"].is_string()).await;
    assert_eq!(status["schema"]["version"], "2.9", "the failed 2.10 does not count");
    assert_eq!(status["schema"]["new_ready"], false);
    db.exec("insert into flyway_schema_history values (3, '2.10', true)").await;
    let status = wait_status(&proxy, "2.10 landed", |s| s["schema"]["new_ready"] == true).await;
    assert_eq!(status["schema"]["version"], "2.10");
    assert_eq!(proxy.get_as("/", Some("alice")).await.upstream(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_and_django_read_their_own_tables() {
    let db = Scratch::new(
        "create table schema_migrations (version varchar primary key); insert into schema_migrations values ('20240101000000'), ('20240301000000'); \
         create table django_migrations (id serial, app varchar, name varchar); \
         insert into django_migrations (app, name) values ('orders', '0041_a'), ('billing', '0007_x')",
    )
    .await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let rails = format!(
        "url = \"{}\"\ntool = \"rails\"\nnew_requires = \"20240301000000\"\nstable_supports = \"20240301000000\"",
        db.url()
    );
    let proxy = Proxy::start(&gate_config(&stable, &new, &rails)).await;
    let status = wait_status(&proxy, "rails read", |s| s["schema"]["read_at"].is_string()).await;
    assert_eq!(
        (status["schema"]["version"].as_str(), status["schema"]["new_ready"].as_bool()),
        (Some("20240301000000"), Some(true))
    );

    let django = format!(
        "url = \"{}\"\ntool = \"django\"\nnew_requires = [\"orders.0042_add_phone\"]\nstable_supports = [\"orders.0043_x\", \"billing.0007_x\"]",
        db.url()
    );
    let proxy = Proxy::start(&gate_config(&stable, &new, &django)).await;
    let status = wait_status(&proxy, "django read", |s| s["schema"]["read_at"].is_string()).await;
    assert_eq!(status["schema"]["new_ready"], false, "orders is at 0041: {status}");
    db.exec("insert into django_migrations (app, name) values ('orders', '0042_add_phone')").await;
    let status = wait_status(&proxy, "orders at 0042", |s| s["schema"]["new_ready"] == true).await;
    assert_eq!(status["schema"]["stable_supported"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_keeps_the_gate_closed_from_the_start() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let schema = format!(
        "url = \"postgresql://postgres@{}/x?connect_timeout=1\"\ntool = \"alembic\"\nnew_requires = [\"b\"]\nstable_supports = [\"a\", \"b\"]\ntimeout = \"1s\"",
        dead_addr()
    );
    let proxy = Proxy::start(&gate_config(&stable, &new, &schema)).await;
    // Closed before the first read finishes, and after it.
    assert_eq!(pools_seen(&proxy).await, ("stable".into(), "stable".into()));
    let status = wait_status(&proxy, "the read failed", |s| s["schema"]["error"].is_string()).await;
    assert!(status["schema"]["error"].as_str().unwrap().contains("cannot connect"), "{status}");
    assert_eq!(status["percent"]["effective"], 0);
}
