//! The book under docs/ cannot rot: its config examples pass `grayshift
//! check`, the metrics, admin paths and `ctl` commands it names exist (and
//! every one that exists is documented), and it builds with mdBook with no
//! broken internal link. See docs/src/getting-started.md, "This book".

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const GRAYSHIFT: &str = env!("CARGO_BIN_EXE_grayshift");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every page of the book, in SUMMARY.md's directory: (file name, text).
fn pages() -> Vec<(String, String)> {
    let mut pages: Vec<_> = std::fs::read_dir(root().join("docs/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    pages.sort();
    assert!(pages.len() > 10, "docs/src has the book's pages");
    pages
}

fn page(name: &str) -> String {
    std::fs::read_to_string(root().join("docs/src").join(name)).unwrap()
}

/// A fenced code block: its info string, first line number and body.
struct Block {
    info: String,
    line: usize,
    body: String,
}

fn code_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.as_mut() {
            None if trimmed.starts_with("```") => {
                open = Some(Block { info: trimmed[3..].trim().to_string(), line: i + 1, body: String::new() })
            }
            Some(_) if trimmed.starts_with("```") => blocks.push(open.take().unwrap()),
            Some(b) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The text outside fenced code blocks (inline code spans are kept).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push('\n');
        }
    }
    out
}

// --- Config examples ------------------------------------------------------------

/// The config a ```` ```toml,fragment ```` block is checked inside: the
/// sections every config needs, unless the fragment has its own.
const MINIMAL: &[(&str, &str)] = &[
    ("[split]", "[split]\npercent = 10\ngroup = \"orders-v2\"\n"),
    ("[pools.stable]", "[pools.stable]\nendpoints = [\"127.0.0.1:8001\"]\n"),
    ("[pools.new]", "[pools.new]\nendpoints = [\"127.0.0.1:8002\"]\n"),
];

/// The environment variables the book's examples read secrets from
/// (`*_env = "NAME"`), with a value of the right shape.
const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("ORDERS_DB_URL", "postgresql://grayshift@127.0.0.1:5432/orders"),
    ("GRAYSHIFT_ETCD_PASSWORD", "example"),
    ("GRAYSHIFT_DB_PASSWORD", "example"),
    ("GRAYSHIFT_ADMIN_TOKEN", "example"),
    ("GRAYSHIFT_FLAG_TOKENS", "example"),
];

/// `grayshift check` on `text`, run in `dir`; paths under /etc/grayshift/
/// (where the examples keep CA files) are `dir`, which holds a real CA PEM
/// for each `.pem` the text names.
fn check(dir: &Path, text: &str) -> Result<(), String> {
    let text = text.replace("/etc/grayshift/", &format!("{}/", dir.display()));
    let ca = test_ca("docs example CA").0.pem();
    for word in text.split(|c: char| c == '"' || c == '&' || c == '=' || c.is_whitespace()) {
        if let Some(name) = word.strip_prefix(&format!("{}/", dir.display())).filter(|n| n.ends_with(".pem")) {
            std::fs::write(dir.join(name), &ca).unwrap();
        }
    }
    let path = dir.join("grayshift.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(GRAYSHIFT)
        .args(["check", "--config"])
        .arg(&path)
        .current_dir(dir)
        .envs(EXAMPLE_ENV.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim() == "ok" {
        Ok(())
    } else {
        Err(format!("{stdout}{}\n--- the config checked:\n{text}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A block's body with mdBook's `{{#include PATH}}` lines replaced by the
/// file (relative to docs/src/), as the rendered page shows it.
fn with_includes(body: &str) -> String {
    body.lines()
        .map(|line| match line.trim().strip_prefix("{{#include ").and_then(|r| r.strip_suffix("}}")) {
            Some(path) => std::fs::read_to_string(root().join("docs/src").join(path.trim()))
                .unwrap_or_else(|e| panic!("{{{{#include {path}}}}}: {e}")),
            None => format!("{line}\n"),
        })
        .collect()
}

#[test]
fn every_toml_example_passes_grayshift_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, text) in pages() {
        for block in code_blocks(&text) {
            let mut info = block.info.split([',', ' ']).filter(|w| !w.is_empty());
            if info.next() != Some("toml") {
                continue;
            }
            let fragment = info.any(|w| w == "fragment");
            let body = with_includes(&block.body);
            let config = if fragment {
                let missing: String =
                    MINIMAL.iter().filter(|(header, _)| !body.contains(header)).map(|(_, section)| *section).collect();
                format!("{missing}\n{body}")
            } else {
                body
            };
            checked += 1;
            if let Err(e) = check(dir.path(), &config) {
                let kind = if fragment { "toml,fragment" } else { "toml" };
                failures
                    .push(format!("docs/src/{name}:{}: this ```{kind} block fails grayshift check:\n{e}", block.line));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 10, "only {checked} toml blocks found in the book");
}

// --- Metrics ---------------------------------------------------------------------

/// `grayshift_…` words in the book that are not metric names.
const NOT_METRICS: &[&str] = &[
    "grayshift_exposure", // the exposure ledger's default PostgreSQL table
];

/// Metrics a running grayshift exports only after an event this test does
/// not cause; each must still be registered in src/metrics.rs and be on the
/// metrics page (checked below, so the list cannot go stale).
/// None today: every labelled metric is either pre-initialised or moved by
/// the events below.
const ONLY_AFTER_AN_EVENT: &[&str] = &[];

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("grayshift_") {
        let start = i + at;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            start + text[start..].find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(text.len() - start);
        let name = &text[start..end];
        if before_ok && name.len() > "grayshift_".len() && !NOT_METRICS.contains(&name) {
            names.insert(name.trim_end_matches('_').to_string());
        }
        i = end;
    }
    names
}

/// What /metrics exports: the `# TYPE` names, histograms with their series.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap(), words.next().unwrap_or(""));
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// A grayshift with every feature that registers or moves a metric: fleet
/// mode (on a real etcd), the exposure ledger, a schema gate (open, on
/// PostgreSQL, so `new` gets users), a ramp, an L1
/// rule, a rule whose signal cannot be read and an L3 hook; then traffic, a
/// connect failure, a reload and an L3 by hand, so every labelled metric has
/// a series.
#[tokio::test]
async fn metrics_in_the_book_are_exported_and_every_exported_one_is_documented() {
    let etcd = etcd::Etcd::start().await;
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let extra = format!(
        r#"
[rollback]
interval = "100ms"
hook = {{ exec = ["/bin/sh", "-c", "exit 0"] }}

[ledger]
file = "{{dir}}/exposure.jsonl"
flush = "100ms"

[schema]
url = "{pg}"
tool = "sql"
query = "select 'b'"
new_requires = ["b"]
stable_supports = ["a", "b"]
interval = "100ms"

[ramp]
steps = [10, 100]
hold = "1h"

[[rules]]
name = "new-error-rate"
level = "L1"
signal = {{ source = "local", metric = "error_rate", pool = "new", window = "1m" }}
above = 0.5
for = "5m"

[[rules]]
name = "unreadable"
level = "L2"
signal = {{ source = "http", url = "http://{dead}/value", pointer = "/v", timeout = "200ms" }}
above = 1

[fleet]
etcd = [{urls}]
name = "docs-{pid}"
replica = "a"
lease_ttl = "2s"
sync_timeout = "1s"
"#,
        dead = dead_addr(),
        pg = std::env::var("GRAYSHIFT_TEST_PG_URL").expect("GRAYSHIFT_TEST_PG_URL (scripts/test.sh sets it)"),
        urls = etcd.toml_urls(),
        pid = std::process::id(),
    );
    // `new` has a dead endpoint too: a connect failure, counted.
    let proxy = Proxy::start(&config_addrs(&[stable.addr], &[dead_addr(), new.addr], 100, &extra)).await;
    eventually(Duration::from_secs(20), "the schema gate opens", || async {
        (proxy.status().await["schema"]["new_ready"] == true).then_some(())
    })
    .await;
    for i in 0..20 {
        proxy.get_as("/", Some(&format!("u{i}"))).await;
    }
    assert_eq!(proxy.admin("POST", "/reload", None, None).await.status, 200);
    let l3 = serde_json::json!({"level": "L3", "reason": "docs test"});
    assert_eq!(proxy.admin("POST", "/rollback", Some(l3), None).await.status, 200);
    let text = eventually(Duration::from_secs(20), "every labelled metric has a series", || async {
        let text = proxy.admin("GET", "/metrics", None, None).await.text();
        [
            "grayshift_hook_runs_total{",
            "grayshift_signal_errors_total{",
            "grayshift_upstream_errors_total{",
            "grayshift_rule_value{",
        ]
        .iter()
        .all(|m| text.contains(m))
        .then_some(text)
    })
    .await;
    let exported = exported(&text);

    let metrics_page = metric_names(&page("metrics.md"));
    let mut problems = Vec::new();
    for name in exported.iter().filter(|n| !n.ends_with("_bucket") && !n.ends_with("_sum") && !n.ends_with("_count")) {
        if !metrics_page.contains(name) {
            problems.push(format!("{name} is exported by /metrics but not on docs/src/metrics.md"));
        }
    }
    for (file, text) in pages() {
        for name in metric_names(&text) {
            if !exported.contains(&name) && !ONLY_AFTER_AN_EVENT.contains(&name.as_str()) {
                problems.push(format!("docs/src/{file} names {name}, which /metrics does not export"));
            }
        }
    }
    let registered = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    for name in ONLY_AFTER_AN_EVENT {
        if exported.contains(*name) {
            problems.push(format!("{name} is exported now: take it off ONLY_AFTER_AN_EVENT"));
        }
        if !registered.contains(&format!("\"{name}\"")) || !metrics_page.contains(*name) {
            problems.push(format!("{name} (ONLY_AFTER_AN_EVENT) is no longer in src/metrics.rs or metrics.md"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- Admin API and ctl -------------------------------------------------------------

/// `METHOD /path` pairs named anywhere in `text` (a query is left off).
fn admin_calls(text: &str) -> BTreeSet<(String, String)> {
    let mut calls = BTreeSet::new();
    for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
        let needle = format!("{method} /");
        let mut rest = text;
        while let Some(at) = rest.find(&needle) {
            let before = rest[..at].chars().next_back();
            let path_start = at + needle.len() - 1;
            let end = rest[path_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-{}".contains(c)))
                .map_or(rest.len(), |e| path_start + e);
            if !before.is_some_and(|c| c.is_ascii_alphanumeric()) {
                calls.insert((method.to_string(), rest[path_start..end].to_string()));
            }
            rest = &rest[end..];
        }
    }
    calls
}

#[tokio::test]
async fn every_admin_path_in_the_book_exists_and_every_route_is_documented() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    // With `[flags]` and `[shadow]`, whose paths are 404 without them.
    std::env::set_var("GRAYSHIFT_DOCS_FLAG_TOKENS", "t");
    let flags = "[flags]\ntokens_env = \"GRAYSHIFT_DOCS_FLAG_TOKENS\"\n[shadow]\nsample = \"1%\"\n";
    let proxy = Proxy::start(&config(&[&stable], &[&new], 10, flags)).await;
    let mut problems = Vec::new();
    for (file, text) in pages() {
        for (method, route) in admin_calls(&text) {
            // A route's `{key}` is the release group.
            let path = route.replace("{key}", "orders-v2");
            // No body: a change is refused (400/409/415), never a 404 when the path exists.
            let status = proxy.admin(&method, &path, None, None).await.status;
            if status == 404 || status == 405 {
                problems.push(format!("docs/src/{file}: `{method} {path}` answers {status}"));
            }
        }
    }
    let documented = admin_calls(&page("admin-api.md"));
    for (method, path) in grayshift::admin::api::ROUTES {
        if !documented.contains(&(method.to_string(), path.to_string())) {
            problems.push(format!("`{method} {path}` is served but not on docs/src/admin-api.md"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn help_text(args: &[&str]) -> String {
    let out = Command::new(GRAYSHIFT).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "grayshift {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands and the `--flags` a `--help` text lists.
fn help(args: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = help_text(args);
    let (mut commands, mut flags) = (BTreeSet::new(), BTreeSet::new());
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line;
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if section.starts_with("Commands:") && first != "help" {
            commands.insert(first.to_string());
        }
        if section.starts_with("Options:") {
            for word in line.split([' ', ',', '=', '[', '<']) {
                if word.starts_with("--") && word != "--help" && word != "--version" {
                    flags.insert(word.to_string());
                }
            }
        }
    }
    (commands, flags)
}

/// `--flags` in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_ctl_command_and_flag_in_the_book_exists_and_every_one_is_documented() {
    let (commands, global) = help(&["ctl"]);
    assert!(commands.contains("set-percent"), "ctl --help lists its commands: {commands:?}");
    let flags: BTreeMap<String, BTreeSet<String>> =
        commands.iter().map(|c| (c.clone(), &help(&["ctl", c]).1 - &global)).collect();
    let page = page("admin-api.md");
    let mut problems = Vec::new();

    // Every command and flag that exists is documented: a row of the ctl
    // table per command, with each of its flags; the global ones on the page.
    for (command, command_flags) in &flags {
        let row = page.lines().find(|l| l.starts_with(&format!("| `grayshift ctl {command}")));
        match row {
            None => problems.push(format!("`ctl {command}` has no row in docs/src/admin-api.md's ctl table")),
            Some(row) => {
                for flag in command_flags.difference(&flags_in(row)) {
                    problems.push(format!("`ctl {command} {flag}` is not in its row of docs/src/admin-api.md"));
                }
            }
        }
    }
    for flag in global.difference(&flags_in(&page)) {
        problems.push(format!("`ctl {flag}` is not on docs/src/admin-api.md"));
    }

    // Every `ctl COMMAND …` the book (and the README) shows exists, with
    // flags that command or ctl itself takes. A use runs to the end of its
    // code span, or of its line in a code block.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for (file, text) in pages().into_iter().chain([("../../README.md".to_string(), readme)]) {
        for line in text.lines() {
            // `L1\|L2` in a table cell is one word, not the cell's end.
            let line = line.replace("\\|", "/");
            let mut rest = line.as_str();
            while let Some(at) = rest.find("ctl ") {
                let is_word = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
                let after = &rest[at + 4..];
                let end = after.find(['`', '|', '#']).unwrap_or(after.len());
                let words: Vec<&str> = after[..end].split_whitespace().collect();
                rest = &after[end..];
                // `--admin URL` and `--token T` may come before the command.
                let mut i = 0;
                while i < words.len() && words[i].starts_with("--") {
                    i += 2;
                }
                let Some(command) = words.get(i).filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                else {
                    continue;
                };
                if !is_word || command.is_empty() {
                    continue;
                }
                match flags.get(*command) {
                    None => problems.push(format!("docs/src/{file}: `ctl {command}` is not a ctl command: {line}")),
                    Some(known) => {
                        for flag in flags_in(&words.join(" ")) {
                            if !known.contains(&flag) && !global.contains(&flag) {
                                problems
                                    .push(format!("docs/src/{file}: `ctl {command} {flag}` does not exist: {line}"));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `grayshift --help` and every subcommand's name a page of the book to read
/// next, and the section it names (in parentheses) is a heading there.
#[test]
fn every_help_names_a_page_of_the_book() {
    let mut commands: Vec<Vec<String>> = vec![vec![]];
    for command in help(&[]).0 {
        if command == "ctl" {
            commands.extend(help(&["ctl"]).0.into_iter().map(|sub| vec!["ctl".to_string(), sub]));
        }
        commands.push(vec![command]);
    }
    let mut problems = Vec::new();
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = help_text(&args);
        let Some(next) = text.lines().find_map(|l| l.strip_prefix("Read next: docs/src/")) else {
            problems.push(format!("grayshift {} --help names no page (\"Read next: docs/src/…\")", args.join(" ")));
            continue;
        };
        let file = next.split_whitespace().next().unwrap();
        let Ok(page) = std::fs::read_to_string(root().join("docs/src").join(file)) else {
            problems.push(format!("grayshift {} --help names docs/src/{file}, which does not exist", args.join(" ")));
            continue;
        };
        if let Some(section) = next.split_once(" (").and_then(|(_, r)| r.strip_suffix(')')) {
            if !page.lines().any(|l| l.starts_with('#') && l.ends_with(section)) {
                problems.push(format!("grayshift {} --help: no heading \"{section}\" in {file}", args.join(" ")));
            }
        }
    }
    assert!(commands.len() > 10, "{commands:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- mdBook build and internal links ------------------------------------------------

/// mdBook's heading id: lower case, whitespace to `-`, only alphanumerics,
/// `-` and `_` kept (mdbook's `normalize_id`), after markdown is stripped;
/// a repeated id gets `-1`, `-2`, … as mdBook numbers them.
fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in prose(text).lines() {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')).filter(|t| t.starts_with(' '))
        else {
            continue;
        };
        let plain = strip_links(title.trim());
        let id: String = plain
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_ascii_lowercase())
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let n = seen.entry(id.clone()).or_insert(0);
        ids.insert(if *n == 0 { id.clone() } else { format!("{id}-{n}") });
        *n += 1;
    }
    ids
}

/// `[text](target)` → `text`.
fn strip_links(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find("](") {
        let close = rest[open..].find(')').map_or(rest.len(), |c| open + c + 1);
        out.push_str(&rest[..open].replacen('[', "", 1));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// The targets of `[text](target)` and `![alt](target)` outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in prose(text).lines().enumerate() {
        // Inline code spans are not links.
        let outside: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = outside.as_str();
        while let Some(at) = rest.find("](") {
            let target_start = at + 2;
            let end = rest[target_start..].find(')').map_or(rest.len(), |e| target_start + e);
            found.push((n + 1, rest[target_start..end].to_string()));
            rest = &rest[end..];
        }
    }
    found
}

#[test]
fn the_book_builds_and_has_no_broken_internal_link() {
    let mdbook = std::env::var("GRAYSHIFT_TEST_MDBOOK").unwrap_or_else(|_| "mdbook".into());
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(&mdbook)
        .arg("build")
        .arg(root().join("docs"))
        .arg("--dest-dir")
        .arg(out_dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {mdbook} (scripts/deps.sh installs it): {e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mdbook build docs failed:\n{log}");
    assert!(!log.contains("[ERROR]") && !log.contains("[WARN]"), "mdbook build docs complained:\n{log}");
    assert!(out_dir.path().join("introduction.html").exists());

    let src = root().join("docs/src");
    let ids: BTreeMap<String, BTreeSet<String>> = pages().into_iter().map(|(f, t)| (f, heading_ids(&t))).collect();
    let summary = page("SUMMARY.md");
    let mut problems = Vec::new();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let sources = pages().into_iter().map(|(f, t)| (src.join(f), t)).chain([(root().join("README.md"), readme)]);
    for (file, text) in sources {
        let dir = file.parent().unwrap().to_path_buf();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let at = format!("{}:{line}: ({target})", file.strip_prefix(root()).unwrap().display());
            let resolved = if path.is_empty() { file.clone() } else { dir.join(path) };
            let Ok(resolved) = resolved.canonicalize() else {
                problems.push(format!("{at}: no such file"));
                continue;
            };
            let in_book = resolved.starts_with(src.canonicalize().unwrap());
            if file.starts_with(&src) && !in_book {
                problems.push(format!("{at}: leaves the book (mdBook renders it as a dead link)"));
                continue;
            }
            let name = resolved.file_name().unwrap().to_string_lossy().into_owned();
            if in_book && name.ends_with(".md") && !summary.contains(&format!("]({name})")) {
                problems.push(format!("{at}: {name} is not in SUMMARY.md"));
            }
            if !anchor.is_empty() && !ids.get(&name).is_some_and(|ids| ids.contains(anchor)) {
                problems.push(format!("{at}: no heading with id #{anchor} in {name}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
