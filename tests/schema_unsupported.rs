//! A schema version that no side supports (in neither `new_requires` nor
//! `stable_supports`), against a real PostgreSQL and real upstreams: nobody
//! moves. The same 1 000 users stay on `new` through the proxy, across a
//! restart and on every replica of a fleet (one joining meanwhile), and the
//! usual gate resumes by itself once the version is back in a list.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/fleet.rs"]
mod fleet_support;
#[path = "common/rules.rs"]
mod rules_support;

use std::collections::BTreeSet;

use common::*;
use etcd::Etcd;
use fleet_support::{Fleet, DEADLINE};
use rules_support::*;
use serde_json::{json, Value};

const USERS: usize = 1000;

/// The users (of `user-0..USERS`) the proxy sends to `new`, asked through
/// it with `X-User-ID` and told by the upstream that answered.
async fn on_new(proxy: &Proxy) -> BTreeSet<usize> {
    let mut users = BTreeSet::new();
    for u in 0..USERS {
        let reply = proxy.get_as("/", Some(&format!("user-{u}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.upstream() == "new" {
            users.insert(u);
        }
    }
    users
}

/// One migration tool's table, bounds and three moments: a version both
/// (or `new`) runs on, one in neither list, and one back within
/// `stable_supports` only (the gate closes again).
struct Case {
    setup: &'static str,
    bounds: &'static str,
    to_unlisted: &'static str,
    /// What `why` says of the unlisted version.
    why: &'static str,
    back_to_stable: &'static str,
}

const ALEMBIC: Case = Case {
    setup: "create table alembic_version (version_num varchar(32) primary key); insert into alembic_version values ('b2new')",
    bounds: "tool = \"alembic\"\nnew_requires = [\"b2new\"]\nstable_supports = [\"a1old\", \"b2new\"]",
    to_unlisted: "update alembic_version set version_num = 'c3contract'",
    why: "c3contract is not in new_requires [b2new]",
    back_to_stable: "update alembic_version set version_num = 'a1old'",
};

fn schema_section(db: &Scratch, case: &Case) -> String {
    format!("[schema]\nurl = \"{}\"\n{}\ninterval = \"100ms\"\n", db.url(), case.bounds)
}

const FLAG_TOKEN: &str = "schema-unsupported-flags";

/// `[flags]`, its token from an environment variable only this file sets.
fn flags_section() -> &'static str {
    std::env::set_var("GRAYSHIFT_TEST_SCHEMA_FLAG_TOKENS", FLAG_TOKEN);
    "\n[flags]\ntokens_env = \"GRAYSHIFT_TEST_SCHEMA_FLAG_TOKENS\"\n"
}

/// OFREP's `schema_ready` for one user.
async fn ofrep_schema_ready(proxy: &Proxy) -> Value {
    let body = json!({ "context": { "targetingKey": "user-1" } });
    let reply = proxy.admin("POST", "/ofrep/v1/evaluate/flags/orders-v2", Some(body), Some(FLAG_TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["metadata"]["schema_ready"].clone()
}

fn notify(url: &str, format: &str) -> String {
    format!("\n[[notify]]\nwebhook = \"{url}\"\nformat = \"{format}\"\ntimeout = \"2s\"\n")
}

async fn metric(proxy: &Proxy, name: &str) -> String {
    let text = proxy.admin("GET", "/metrics", None, None).await.text();
    text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default().to_string()
}

/// The gate read a version neither side runs on.
fn neither_runs_it(s: &Value) -> bool {
    s["schema"]["new_ready"] == false && s["schema"]["stable_supported"] == false
}

async fn wait_unsupported(proxy: &Proxy, unsupported: bool) -> Value {
    wait_status(proxy, &format!("no_side_supports = {unsupported}"), |s| s["schema"]["no_side_supports"] == unsupported)
        .await
}

/// At percent 50 the unlisted version lands: the same users stay on `new`;
/// back within stable_supports only, the gate closes as usual.
async fn holds_the_split(case: &Case) {
    let db = Scratch::new(case.setup).await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let extra = format!("{}{}", schema_section(&db, case), flags_section());
    let proxy = Proxy::start(&config(&[&stable], &[&new], 50, &extra)).await;
    wait_status(&proxy, "the gate open", |s| s["schema"]["new_ready"] == true && s["percent"]["effective"] == 50).await;
    assert_eq!(ofrep_schema_ready(&proxy).await, true);
    let before = on_new(&proxy).await;
    assert!((300..700).contains(&before.len()), "about half of the users on new: {}", before.len());

    db.exec(case.to_unlisted).await;
    wait_status(&proxy, "the version read", neither_runs_it).await;
    assert_eq!(on_new(&proxy).await, before, "nobody moved");
    let status = wait_unsupported(&proxy, true).await;
    assert_eq!(status["percent"]["effective"], 50, "{status:#}");
    assert!(status["schema"]["why"].as_str().unwrap().contains(case.why), "{status:#}");
    assert_eq!(on_new(&proxy).await, before, "nobody moved");
    assert_eq!(metric(&proxy, "grayshift_schema_unsupported").await, "grayshift_schema_unsupported 1");
    assert_eq!(ofrep_schema_ready(&proxy).await, false, "users stay on new, but new does not run on it");

    db.exec(case.back_to_stable).await;
    let status = wait_unsupported(&proxy, false).await;
    assert_eq!((status["schema"]["new_ready"].as_bool(), &status["percent"]["effective"]), (Some(false), &json!(0)));
    assert!(on_new(&proxy).await.is_empty(), "the gate is closed again: everyone on stable");
    assert_eq!(metric(&proxy, "grayshift_schema_unsupported").await, "grayshift_schema_unsupported 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alembic_a_revision_in_neither_list_moves_nobody() {
    holds_the_split(&ALEMBIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flyway_a_version_between_the_bounds_moves_nobody() {
    // new runs from 3.0 on, stable up to 2.5: an out-of-order 2.7 is in neither.
    holds_the_split(&Case {
        setup: "create table flyway_schema_history (installed_rank int primary key, version varchar(50), success boolean not null); \
                insert into flyway_schema_history values (1, '2.5', true), (2, '3.0', true)",
        bounds: "tool = \"flyway\"\nnew_requires = \"3.0\"\nstable_supports = \"2.5\"",
        to_unlisted: "insert into flyway_schema_history values (3, '2.7', true)",
        why: "2.7 is below new_requires 3.0",
        back_to_stable: "insert into flyway_schema_history values (4, '2.5', true)",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_a_version_between_the_bounds_moves_nobody() {
    holds_the_split(&Case {
        setup: "create table schema_migrations (version varchar primary key); \
                insert into schema_migrations values ('20240201000000'), ('20240301000000')",
        bounds: "tool = \"rails\"\nnew_requires = \"20240301000000\"\nstable_supports = \"20240201000000\"",
        to_unlisted: "delete from schema_migrations where version = '20240301000000'; insert into schema_migrations values ('20240215000000')",
        why: "20240215000000 is above stable_supports 20240201000000",
        back_to_stable: "delete from schema_migrations where version = '20240215000000'",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_another_apps_migration_with_orders_rolled_back_moves_nobody() {
    holds_the_split(&Case {
        setup: "create table django_migrations (id serial, app varchar, name varchar); \
                insert into django_migrations (app, name) values ('orders', '0041_a'), ('orders', '0042_add_phone'), ('billing', '0007_x')",
        bounds: "tool = \"django\"\nnew_requires = [\"orders.0042_add_phone\"]\nstable_supports = [\"orders.0043_backfill\", \"billing.0007_x\"]",
        to_unlisted: "delete from django_migrations where name = '0042_add_phone'; \
                      insert into django_migrations (app, name) values ('billing', '0008_other_team')",
        why: "orders is at 0041, below new_requires orders.0042_add_phone",
        back_to_stable: "delete from django_migrations where name = '0008_other_team'",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_split_survives_a_restart_and_changes_wait_for_a_supported_version() {
    let db = Scratch::new(ALEMBIC.setup).await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let (hook_json, hook_slack) = (JsonServer::start("{}").await, JsonServer::start("{}").await);
    let extra = format!(
        "{}{}{}",
        schema_section(&db, &ALEMBIC),
        notify(&hook_json.url("/json"), "json"),
        notify(&hook_slack.url("/slack"), "slack")
    );
    let text = config(&[&stable], &[&new], 50, &extra);
    let mut proxy = Proxy::start(&text).await;
    wait_status(&proxy, "the gate open", |s| s["percent"]["effective"] == 50).await;
    let before = on_new(&proxy).await;

    db.exec(ALEMBIC.to_unlisted).await;
    wait_status(&proxy, "the version read", neither_runs_it).await;
    assert_eq!(on_new(&proxy).await, before, "nobody moved");
    wait_unsupported(&proxy, true).await;
    // Audit and both webhooks say so at once.
    let audit = proxy.admin("GET", "/audit", None, None).await.json();
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "schema" && e["new"] == "no_side_supports"), "{audit:#}");
    for (hook, field) in [(&hook_json, "text"), (&hook_slack, "text")] {
        eventually(DEADLINE, "the notice", || async move {
            hook.received()
                .iter()
                .any(|m| m[field].as_str().is_some_and(|t| t.contains("NO SIDE SUPPORTS")))
                .then_some(())
        })
        .await;
    }
    assert!(hook_json.received().iter().any(|m| m["no_side_supports"] == true));

    // An operator's percent is recorded, not applied: it would move users.
    let reply = proxy.admin("PUT", "/percent", Some(json!({ "percent": 90 })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = proxy.status().await;
    assert_eq!((&status["percent"]["desired"], &status["percent"]["effective"]), (&json!(90), &json!(50)));
    assert_eq!(on_new(&proxy).await, before);

    proxy.stop().await;
    let proxy = Proxy::start_in(proxy.dir.clone(), &text).await;
    // Before and after the first read: the held split, never 0 %.
    assert_eq!(on_new(&proxy).await, before, "a restart keeps the held split");
    let status = wait_status(&proxy, "the first read", |s| s["schema"]["read_at"].is_string()).await;
    assert_eq!(status["schema"]["no_side_supports"], true, "{status:#}");
    assert_eq!(on_new(&proxy).await, before);

    // Back on a version both run on: the recorded 90 % applies.
    db.exec("update alembic_version set version_num = 'b2new'").await;
    let status = wait_unsupported(&proxy, false).await;
    assert_eq!(status["percent"]["effective"], 90, "{status:#}");
    let after = on_new(&proxy).await;
    assert!(after.is_superset(&before) && after.len() > before.len());
}

/// Stopped while everyone is on stable (`to_stable` says why), restarted
/// after the version moved to one in neither list: still nobody on `new`,
/// and a new percent waits for a supported version.
async fn a_restart_keeps_everyone_on_stable(setup: &str, to_stable: impl AsyncFnOnce(&Proxy)) {
    let db = Scratch::new(setup).await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let text = config(&[&stable], &[&new], 50, &schema_section(&db, &ALEMBIC));
    let mut proxy = Proxy::start(&text).await;
    to_stable(&proxy).await;
    let status = wait_status(&proxy, "everyone on stable", |s| s["percent"]["effective"] == 0).await;
    assert_eq!(status["schema"]["no_side_supports"], false, "{status:#}");
    assert!(on_new(&proxy).await.is_empty());

    proxy.stop().await;
    db.exec(ALEMBIC.to_unlisted).await;
    let proxy = Proxy::start_in(proxy.dir.clone(), &text).await;
    let status = proxy.status().await;
    assert_eq!(status["schema"]["no_side_supports"], true, "the first read comes before serving: {status:#}");
    assert_eq!(status["percent"]["effective"], 0, "{status:#}");
    assert!(on_new(&proxy).await.is_empty(), "nobody moved to new");
    let reply = proxy.admin("PUT", "/percent", Some(json!({ "percent": 90 })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let read_at = status["schema"]["read_at"].clone();
    let status = wait_status(&proxy, "a later read", |s| s["schema"]["read_at"] != read_at).await;
    assert_eq!((&status["percent"]["desired"], &status["percent"]["effective"]), (&json!(90), &json!(0)));
    assert!(on_new(&proxy).await.is_empty(), "recorded, not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_into_a_version_in_neither_list_keeps_an_l1_rollback() {
    a_restart_keeps_everyone_on_stable(ALEMBIC.setup, async |proxy: &Proxy| {
        wait_status(proxy, "the gate open", |s| s["percent"]["effective"] == 50).await;
        let l1 = json!({ "level": "L1", "reason": "errors" });
        assert_eq!(proxy.admin("POST", "/rollback", Some(l1), None).await.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_into_a_version_in_neither_list_keeps_the_gate_closed() {
    // a1old: stable runs on it, new does not yet.
    let setup = "create table alembic_version (version_num varchar(32) primary key); insert into alembic_version values ('a1old')";
    a_restart_keeps_everyone_on_stable(setup, async |proxy: &Proxy| {
        wait_status(proxy, "the gate closed", |s| s["schema"]["read_at"].is_string()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_version_past_stable_holds_the_split_as_an_error() {
    // new runs from 3.0 on, stable up to 2.5: at 3.0, past the point of no return.
    let db = Scratch::new(
        "create table flyway_schema_history (installed_rank int primary key, version varchar(50), success boolean not null); \
         insert into flyway_schema_history values (1, '2.5', true), (2, '3.0', true)",
    )
    .await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let bounds = "tool = \"flyway\"\nnew_requires = \"3.0\"\nstable_supports = \"2.5\"";
    let section = format!("[schema]\nurl = \"{}\"\n{bounds}\ninterval = \"100ms\"\n", db.url());
    let proxy = Proxy::start(&config(&[&stable], &[&new], 50, &section)).await;
    wait_status(&proxy, "past stable", |s| s["schema"]["stable_supported"] == false && s["percent"]["effective"] == 50)
        .await;
    let before = on_new(&proxy).await;

    // A version flyway cannot order is unreadable, not one in neither list.
    db.exec("insert into flyway_schema_history values (3, '3.1-hotfix', true)").await;
    let status = wait_status(&proxy, "the read error", |s| s["schema"]["error"].is_string()).await;
    assert!(status["schema"]["error"].as_str().unwrap().contains("3.1-hotfix"), "{status:#}");
    assert_eq!(status["schema"]["no_side_supports"], false, "{status:#}");
    assert_eq!(status["schema"]["held"], "3.0", "the last version read: {status:#}");
    assert_eq!(status["percent"]["effective"], 50, "nobody moves: {status:#}");
    assert_eq!(on_new(&proxy).await, before, "nobody moved");
    assert_eq!(metric(&proxy, "grayshift_schema_unsupported").await, "grayshift_schema_unsupported 0");
    let audit = proxy.admin("GET", "/audit", None, None).await.json();
    let told: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "schema").map(|e| &e["new"]).collect();
    assert!(told.contains(&&json!("held_unreadable")) && !told.contains(&&json!("no_side_supports")), "{audit:#}");

    // Readable again at 3.0: the usual point of no return, nothing held.
    db.exec("delete from flyway_schema_history where installed_rank = 3").await;
    let status = wait_status(&proxy, "read again", |s| s["schema"]["error"].is_null()).await;
    assert_eq!((&status["schema"]["held"], &status["percent"]["effective"]), (&Value::Null, &json!(50)), "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_and_one_joining_hold_the_same_split() {
    let etcd = Etcd::start().await;
    let db = Scratch::new(ALEMBIC.setup).await;
    let extra = schema_section(&db, &ALEMBIC);
    let fleet = Fleet::start(&etcd, 50, &extra).await;
    for r in &fleet.replicas {
        wait_status(r, "the gate open", |s| s["percent"]["effective"] == 50).await;
    }
    let before = on_new(&fleet.replicas[0]).await;

    db.exec(ALEMBIC.to_unlisted).await;
    for r in &fleet.replicas {
        wait_status(r, "the version read", neither_runs_it).await;
        assert_eq!(on_new(r).await, before, "nobody moved");
        wait_unsupported(r, true).await;
        assert_eq!(on_new(r).await, before, "nobody moved");
    }
    // A replica with no state file joins meanwhile: the fleet's split, not 0 %.
    let joining = Proxy::start(&fleet.config_for(&etcd, "d", &extra)).await;
    assert_eq!(on_new(&joining).await, before, "before its first read");
    wait_unsupported(&joining, true).await;
    assert_eq!(on_new(&joining).await, before, "after it");

    db.exec(ALEMBIC.back_to_stable).await;
    for r in fleet.replicas.iter().chain([&joining]) {
        wait_status(r, "the gate closed", |s| s["percent"]["effective"] == 0).await;
        assert!(on_new(r).await.is_empty());
    }
}

#[test]
fn check_warns_when_new_requires_lists_no_step_past_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grayshift.toml");
    let schema = "[schema]\nurl = \"postgresql://postgres@127.0.0.1:1/x\"\n";
    let write = |bounds: &str| {
        let text = config_addrs(&[dead_addr()], &[dead_addr()], 0, &format!("{schema}{bounds}\n"));
        std::fs::write(&path, text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayshift"))
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let warned = write(ALEMBIC.bounds);
    assert!(warned.contains("lists no version past stable_supports"), "{warned}");
    let listed = write(
        "tool = \"alembic\"\nnew_requires = [\"b2new\", \"c3contract\"]\nstable_supports = [\"a1old\", \"b2new\"]",
    );
    assert!(!listed.contains("lists no version past"), "{listed}");
}
