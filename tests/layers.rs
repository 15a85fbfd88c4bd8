//! Which way imports go (docs/src/architecture.md, "The floor"): the
//! config imports nothing from the code above it, and the HTTP/1 protocol
//! code nothing from the request policy. A path that breaks this, in a
//! `use` or written inline, fails here with its file and line.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    assert!(!files.is_empty(), "no Rust files under {}", dir.display());
    files
}

/// The statements of a file (code split at `;`, comments left out, lines
/// kept), each with the line it starts on: a `use` spread over several
/// lines is one.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (j, part) in code.split(';').enumerate() {
            if j > 0 {
                out.push((start, std::mem::take(&mut current)));
            }
            if current.trim().is_empty() {
                current.clear();
                start = i + 1;
            }
            current.push_str(part);
        }
        current.push('\n');
    }
    out.push((start, current));
    out
}

/// Where `word` stands in `text` as a whole path segment.
fn segment_at(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// `file:line: code` for every statement under `dir` in which `bad` finds
/// something (at the offset it returns).
fn offenders(dir: &str, bad: impl Fn(&str) -> Option<usize>) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(&src().join(dir)) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (start, statement) in statements(&text) {
            if let Some(at) = bad(&statement) {
                let line = start + statement[..at].matches('\n').count();
                let code = text.lines().nth(line - 1).unwrap_or("").trim();
                found.push(format!("{}:{line}: {code}", file.display()));
            }
        }
    }
    found
}

#[test]
fn config_imports_nothing_above_it() {
    let found = offenders("config", |s| {
        ["crate::control", "crate::proxy", "crate::admin", "grayshift::"].iter().find_map(|p| s.find(p))
    });
    assert!(found.is_empty(), "config/ reaches above the floor:\n{}", found.join("\n"));
}

#[test]
fn the_http1_protocol_imports_no_request_policy() {
    for dir in ["proxy/h1_server", "proxy/h1"] {
        let found = offenders(dir, |s| {
            if !(s.contains("crate::proxy") || s.contains("super::super")) {
                return None;
            }
            ["handle", "forward", "split"].iter().find_map(|policy| segment_at(s, policy))
        });
        assert!(found.is_empty(), "{dir}/ imports request policy:\n{}", found.join("\n"));
    }
}

#[test]
fn the_checks_see_what_they_look_for() {
    let text = "use a::b;\nuse crate::proxy::{\n    body,\n    forward, // why\n};\nfn f() {}\n";
    let statements = statements(text);
    assert_eq!(statements[1].0, 2, "a statement starts on its first line: {statements:?}");
    let at = segment_at(&statements[1].1, "forward").expect("found in a group spread over lines");
    assert_eq!(statements[1].1[..at].matches('\n').count(), 2, "and placed on its own line");
    assert!(!statements[1].1.contains("why"), "comments are left out");
    assert_eq!(segment_at("crate::proxy::forwarded::X", "forward"), None, "a longer name is another one");
}
