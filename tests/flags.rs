//! The flags API (docs/src/flags-ofrep.md, docs/src/flags-unleash.md) driven
//! by the real SDKs a worker would use: the OpenFeature Python and
//! JavaScript SDKs with their OFREP providers, and the Unleash Python SDK,
//! each in a small script (tests/flags_py, tests/flags_js) that prints its
//! answers as JSON lines. Every answer is compared with the pool a real
//! request with that `X-User-ID` reaches through the proxy.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/fleet.rs"]
mod fleet_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const TOKEN: &str = "flags-token-1";
const ADMIN_TOKEN: &str = "admin-token-1";
const GROUP: &str = "orders-v2";
/// Forced to `new` and to `stable`, whatever their bucket.
const FORCE_NEW: [&str; 3] = ["user-1", "user-2", "user-3"];
const FORCE_STABLE: [&str; 3] = ["user-4", "user-5", "user-6"];

/// `[flags]` reading its tokens from an environment variable this process
/// sets (the same value in every test, so tests may run in parallel).
fn flags_section() -> &'static str {
    std::env::set_var("GRAYSHIFT_TEST_FLAG_TOKENS", format!("another-token\n\n{TOKEN}\n"));
    "\n[flags]\ntokens_env = \"GRAYSHIFT_TEST_FLAG_TOKENS\"\n"
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

/// A proxy at `percent` with `[flags]`, the force lists and, with
/// `admin_token`, an admin token; `users` written to `{dir}/users.txt`.
async fn start(percent: u8, users: &[String], admin_token: bool) -> (Upstream, Upstream, Proxy) {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let list = |keys: &[&str]| keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ");
    let mut text = config(&[&stable], &[&new], percent, flags_section()).replace(
        "key = [\"header:X-User-ID\", \"client_ip\"]",
        &format!(
            "key = [\"header:X-User-ID\", \"client_ip\"]\nforce_new = [{}]\nforce_stable = [{}]",
            list(&FORCE_NEW),
            list(&FORCE_STABLE)
        ),
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    if admin_token {
        std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
        text = text.replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{dir}/admin-token\"",
        );
    }
    std::fs::write(dir.path().join("users.txt"), users.join("\n")).unwrap();
    let proxy = Proxy::start_in(dir, &text).await;
    (stable, new, proxy)
}

/// The pool each user reaches through the proxy ("stable" or "new").
async fn proxy_pools(proxy: &Proxy, users: &[String]) -> Vec<String> {
    let mut pools = Vec::with_capacity(users.len());
    for user in users {
        let reply = proxy.get_as("/", Some(user)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        pools.push(reply.upstream().to_string());
    }
    pools
}

/// One of the SDK scripts, kept running: each [`Sdk::round`] asks it to
/// evaluate every user once and returns its JSON line.
struct Sdk {
    name: &'static str,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl Sdk {
    fn python(script: &str, url: &str, token: &str, users_file: &Path) -> Sdk {
        let python = std::env::var("GRAYSHIFT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = format!("{}/tests/flags_py/{script}", env!("CARGO_MANIFEST_DIR"));
        Sdk::spawn("python", Command::new(python).arg(script), url, token, users_file)
    }

    fn javascript(url: &str, token: &str, users_file: &Path) -> Sdk {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flags_js");
        assert!(
            Path::new(dir).join("node_modules/@openfeature/ofrep-provider").exists(),
            "{dir}/node_modules is missing: scripts/deps.sh runs `npm ci` there"
        );
        Sdk::spawn("javascript", Command::new("node").arg(format!("{dir}/ofrep_eval.mjs")), url, token, users_file)
    }

    fn spawn(name: &'static str, command: &mut Command, url: &str, token: &str, users_file: &Path) -> Sdk {
        let mut child = command
            .args([url, token, GROUP, users_file.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} SDK script: {e} (scripts/deps.sh installs the SDKs)"));
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Sdk { name, stdin, lines, _child: child }
    }

    async fn round(&mut self) -> Vec<Value> {
        self.stdin.write_all(b"eval\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the {} SDK answered in time", self.name))
            .unwrap()
            .unwrap_or_else(|| panic!("the {} SDK script exited (see its stderr above)", self.name));
        serde_json::from_str::<Vec<Value>>(&line).unwrap_or_else(|e| panic!("{}: {e}: {line}", self.name))
    }
}

/// The OFREP answers of `sdk` are exactly the proxy's pools; returns how
/// many users are on `new`.
fn check_ofrep(sdk: &str, answers: &[Value], pools: &[String], users: &[String], disabled: bool) -> usize {
    assert_eq!(answers.len(), pools.len(), "{sdk}");
    for ((answer, pool), user) in answers.iter().zip(pools).zip(users) {
        let forced = FORCE_NEW.contains(&user.as_str()) || FORCE_STABLE.contains(&user.as_str());
        let reason = if disabled {
            "DISABLED"
        } else if forced {
            "TARGETING_MATCH"
        } else {
            "SPLIT"
        };
        assert_eq!(
            answer,
            &json!([pool == "new", pool, reason]),
            "{sdk}: user {user} reached {pool} through the proxy"
        );
    }
    pools.iter().filter(|p| *p == "new").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeature_sdks_agree_with_the_proxy_on_every_user() {
    let users = users(2000);
    let (_stable, _new, proxy) = start(20, &users, false).await;
    let users_file = proxy.dir.path().join("users.txt");
    let url = proxy.admin_url("");
    let mut python = Sdk::python("ofrep_eval.py", &url, TOKEN, &users_file);
    let mut javascript = Sdk::javascript(&url, TOKEN, &users_file);

    // 20 %, with the force lists (the two SDKs evaluate at the same time).
    let pools = proxy_pools(&proxy, &users).await;
    let (py, js) = tokio::join!(python.round(), javascript.round());
    let on_new = check_ofrep("python", &py, &pools, &users, false);
    check_ofrep("javascript", &js, &pools, &users, false);
    assert!((300..500).contains(&on_new), "about 20 % of 2000 on new: {on_new}");
    for user in FORCE_NEW {
        assert_eq!(pools[users.iter().position(|u| u == user).unwrap()], "new");
    }

    // 60 %.
    let reply = proxy.admin("PUT", "/percent", Some(json!({ "percent": 60 })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pools = proxy_pools(&proxy, &users).await;
    let (py, js) = tokio::join!(python.round(), javascript.round());
    let on_new = check_ofrep("python", &py, &pools, &users, false);
    check_ofrep("javascript", &js, &pools, &users, false);
    assert!((1050..1350).contains(&on_new), "about 60 % of 2000 on new: {on_new}");

    // L1: everyone on stable, `force_new` included.
    let reply = proxy.admin("POST", "/rollback", Some(json!({ "level": "L1" })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pools = proxy_pools(&proxy, &users).await;
    let (py, js) = tokio::join!(python.round(), javascript.round());
    assert_eq!(check_ofrep("python", &py, &pools, &users, true), 0);
    assert_eq!(check_ofrep("javascript", &js, &pools, &users, true), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unleash_sdk_agrees_with_the_proxy_and_follows_an_l1() {
    let users = users(2000);
    let (_stable, _new, proxy) = start(20, &users, false).await;
    let users_file = proxy.dir.path().join("users.txt");
    let mut sdk = Sdk::python("unleash_eval.py", &proxy.admin_url("/api"), TOKEN, &users_file);
    let expect = |pools: &[String]| pools.iter().map(|p| json!(p == "new")).collect::<Vec<_>>();

    // The SDK fetches at start and then every second: poll its answers
    // until they match (a mismatch that never clears fails the test).
    async fn agree(sdk: &mut Sdk, expected: &[Value], what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answers = sdk.round().await;
            if answers == expected {
                return;
            }
            let wrong = answers.iter().zip(expected).filter(|(a, e)| a != e).count();
            assert!(tokio::time::Instant::now() < deadline, "{what}: {wrong} users differ from the proxy");
        }
    }

    let pools = proxy_pools(&proxy, &users).await;
    let on_new = pools.iter().filter(|p| *p == "new").count();
    assert!((300..500).contains(&on_new), "about 20 % of 2000 on new: {on_new}");
    agree(&mut sdk, &expect(&pools), "20 %").await;

    let reply = proxy.admin("PUT", "/percent", Some(json!({ "percent": 60 })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pools = proxy_pools(&proxy, &users).await;
    agree(&mut sdk, &expect(&pools), "60 %").await;

    let reply = proxy.admin("POST", "/rollback", Some(json!({ "level": "L1" })), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pools = proxy_pools(&proxy, &users).await;
    assert!(pools.iter().all(|p| p == "stable"));
    agree(&mut sdk, &expect(&pools), "L1").await;

    // The SDK reported its evaluations (yes = new, no = stable).
    eventually(Duration::from_secs(10), "the SDK's metrics report", || async {
        let text = proxy.admin("GET", "/metrics", None, None).await.text();
        text.contains("grayshift_flag_evaluations_total{protocol=\"unleash\",variant=\"stable\"}")
            .then_some(())
            .filter(|_| !text.contains("grayshift_flag_evaluations_total{protocol=\"unleash\",variant=\"stable\"} 0"))
    })
    .await;
}

/// A raw request to the admin listener (for the refusals the SDKs hide).
async fn call(
    proxy: &Proxy,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(proxy.admin_url(path));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    proxy.send(req.body(full(body.to_string())).unwrap()).await
}

#[tokio::test]
async fn bad_input_gets_the_protocol_answer_and_changes_nothing() {
    let (_stable, _new, proxy) = start(20, &[], true).await;
    let eval = "/ofrep/v1/evaluate/flags/orders-v2";
    let bearer = format!("Bearer {TOKEN}");
    let good = r#"{"context": {"targetingKey": "alice"}}"#;

    // Tokens: none or wrong is 401; a flags token (bearer or bare) and the
    // admin token evaluate; a flags token cannot change anything.
    assert_eq!(call(&proxy, "POST", eval, None, good, &[]).await.status, 401);
    assert_eq!(call(&proxy, "POST", eval, Some("Bearer nope"), good, &[]).await.status, 401);
    assert_eq!(call(&proxy, "GET", "/api/client/features", Some("nope"), "", &[]).await.status, 401);
    let answer = call(&proxy, "POST", eval, Some(&bearer), good, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // alice's bucket in orders-v2 is 18 (docs/src/concepts.md).
    assert_eq!(
        answer.json(),
        json!({ "key": GROUP, "value": true, "variant": "new", "reason": "SPLIT",
                "metadata": { "bucket": 18, "percent": 20, "rollback_level": 0, "schema_ready": true, "shedding": false } })
    );
    assert_eq!(call(&proxy, "POST", eval, Some(TOKEN), good, &[]).await.status, 200);
    assert_eq!(call(&proxy, "POST", eval, Some(&format!("Bearer {ADMIN_TOKEN}")), good, &[]).await.status, 200);
    let change = call(&proxy, "PUT", "/percent", Some(&bearer), r#"{"percent": 100}"#, &[]).await;
    assert_eq!(change.status, 403, "{}", change.text());
    assert_eq!(call(&proxy, "PUT", "/percent", Some(TOKEN), r#"{"percent": 100}"#, &[]).await.status, 403);
    assert_eq!(call(&proxy, "POST", "/rollback", Some(&bearer), r#"{"level": "L1"}"#, &[]).await.status, 403);

    // Bodies: the protocol's error codes.
    let refused = |reply: Reply, status: u16, code: &str| {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.json()["errorCode"], code, "{}", reply.text());
    };
    refused(call(&proxy, "POST", eval, Some(&bearer), "{\"context\": ", &[]).await, 400, "PARSE_ERROR");
    refused(call(&proxy, "POST", eval, Some(&bearer), r#"{"context": {}}"#, &[]).await, 400, "TARGETING_KEY_MISSING");
    refused(call(&proxy, "POST", eval, Some(&bearer), "", &[]).await, 400, "TARGETING_KEY_MISSING");
    refused(call(&proxy, "POST", eval, Some(&bearer), r#"{"context": 7}"#, &[]).await, 400, "INVALID_CONTEXT");
    let not_a_string = r#"{"context": {"targetingKey": 42}}"#;
    refused(call(&proxy, "POST", eval, Some(&bearer), not_a_string, &[]).await, 400, "INVALID_CONTEXT");
    let unknown = call(&proxy, "POST", "/ofrep/v1/evaluate/flags/checkout", Some(&bearer), good, &[]).await;
    assert_eq!(unknown.json()["key"], "checkout");
    refused(unknown, 404, "FLAG_NOT_FOUND");
    let huge = format!(r#"{{"context": {{"targetingKey": "alice", "pad": "{}"}}}}"#, "x".repeat(100 * 1024));
    assert_eq!(call(&proxy, "POST", eval, Some(&bearer), &huge, &[]).await.status, 413);
    let cross_site = call(&proxy, "POST", eval, Some(&bearer), good, &[("origin", "https://evil.example")]).await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(call(&proxy, "GET", eval, Some(&bearer), "", &[]).await.status, 405);

    // Nothing changed.
    let status = proxy.admin("GET", "/status", None, None).await.json();
    assert_eq!(status["percent"]["desired"], 20, "{status:#}");
    assert_eq!(status["rollback"]["level"], 0, "{status:#}");
    assert!(!status.to_string().contains(TOKEN), "/status shows no flags token");
    let metrics = proxy.admin("GET", "/metrics", None, None).await.text();
    assert!(
        metrics.contains("grayshift_flag_evaluations_total{protocol=\"ofrep\",variant=\"new\"} 3"),
        "three good evaluations of alice: {metrics}"
    );
}

#[tokio::test]
async fn bulk_etag_changes_exactly_when_a_decision_can() {
    let (_stable, _new, proxy) = start(20, &[], true).await;
    let bearer = format!("Bearer {TOKEN}");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let bulk = "/ofrep/v1/evaluate/flags";
    let alice = r#"{"context": {"targetingKey": "alice"}}"#;

    let first = call(&proxy, "POST", bulk, Some(&bearer), alice, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["flags"][0]["variant"], "new");
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    let again = call(&proxy, "POST", bulk, Some(&bearer), alice, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // Another user is another answer.
    let bob = call(
        &proxy,
        "POST",
        bulk,
        Some(&bearer),
        r#"{"context": {"targetingKey": "bob"}}"#,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(bob.status, 200);

    // A percent change can change a decision: a new tag.
    let reply = call(&proxy, "PUT", "/percent", Some(&admin), r#"{"percent": 30}"#, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let after = call(&proxy, "POST", bulk, Some(&bearer), alice, &[("if-none-match", &etag)]).await;
    assert_eq!(after.status, 200);
    let etag_30 = after.headers["etag"].to_str().unwrap().to_string();
    assert_ne!(etag_30, etag);
    // A reload that changes no decision keeps the tag.
    let reply = call(&proxy, "POST", "/reload", Some(&admin), "", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(call(&proxy, "POST", bulk, Some(&bearer), alice, &[("if-none-match", &etag_30)]).await.status, 304);
    // An L1 does.
    let reply = call(&proxy, "POST", "/rollback", Some(&admin), r#"{"level": "L1"}"#, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let rolled_back = call(&proxy, "POST", bulk, Some(&bearer), alice, &[("if-none-match", &etag_30)]).await;
    assert_eq!(rolled_back.status, 200);
    assert_eq!(rolled_back.json()["flags"][0]["reason"], "DISABLED");

    // The Unleash features document has its own tag, with the same rule.
    let features = call(&proxy, "GET", "/api/client/features", Some(TOKEN), "", &[]).await;
    assert_eq!(features.status, 200, "{}", features.text());
    assert_eq!(features.json()["features"][0]["enabled"], false);
    let tag = features.headers["etag"].to_str().unwrap().to_string();
    let same = call(&proxy, "GET", "/api/client/features", Some(TOKEN), "", &[("if-none-match", &tag)]).await;
    assert_eq!(same.status, 304);

    let config = call(&proxy, "GET", "/ofrep/v1/configuration", Some(&bearer), "", &[]).await;
    assert_eq!(config.json()["capabilities"]["cacheInvalidation"]["polling"]["enabled"], true);
}

#[tokio::test]
async fn without_a_flags_section_the_paths_are_404() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 20, "")).await;
    for (method, path) in [("POST", "/ofrep/v1/evaluate/flags/orders-v2"), ("GET", "/api/client/features")] {
        assert_eq!(call(&proxy, method, path, Some(TOKEN), "", &[]).await.status, 404, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_set_through_one_replica_is_what_another_replica_answers() {
    let etcd = etcd::Etcd::start().await;
    let fleet = fleet_support::Fleet::start(&etcd, 0, flags_section()).await;
    let [a, b, _] = &fleet.replicas[..] else { unreachable!() };
    let users = users(100);
    let users_file = b.dir.path().join("users.txt");
    std::fs::write(&users_file, users.join("\n")).unwrap();
    let mut sdk = Sdk::python("ofrep_eval.py", &b.admin_url(""), TOKEN, &users_file);
    let all = |answers: &[Value], value: bool| answers.iter().all(|a| a[0] == json!(value));
    assert!(all(&sdk.round().await, false), "0 %: everyone on stable");

    let reply = fleet_support::admin_put(a, 100).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let deadline = tokio::time::Instant::now() + fleet_support::DEADLINE;
    loop {
        let answers = sdk.round().await;
        if all(&answers, true) {
            assert!(answers.iter().all(|a| a[1] == "new" && a[2] == "SPLIT"), "{answers:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B's OFREP answers still differ from A's percent");
    }
}
