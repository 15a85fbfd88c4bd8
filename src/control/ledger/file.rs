//! The JSON-lines file sink (`[ledger] sink = { file = ... }`): one row a
//! line, appended every flush, read back (merged by key) for the hook's CSV
//! and `grayshift exposure`, and rewritten without a release on purge.

use std::io::Write;
use std::path::Path;

use super::rows::{merge, sorted, Pending, Row, Rows, Seen};

/// Bytes of JSON lines gathered before a `write(2)`: one buffer, reused,
/// that stays in the cache, instead of the whole interval's text (megabytes
/// at a busy edge, allocated, faulted in and freed every interval).
pub(super) const CHUNK: usize = 64 * 1024;

pub(super) fn append_jsonl(path: &Path, rows: &Pending) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let start = file.metadata()?.len();
    let result = write_lines(&mut file, rows).and_then(|()| file.sync_data());
    if result.is_err() {
        // Written in chunks, so a failure can leave part of the rows (and
        // half a line) behind: cut the file back to where this write began
        // (best effort; the rows are kept and written again on the retry).
        let _ = file.set_len(start);
    }
    result
}

fn write_lines(file: &mut std::fs::File, rows: &Pending) -> std::io::Result<()> {
    let mut text = Vec::with_capacity(CHUNK + 1024);
    let mut tails = Tails::default();
    // Written by hand (serde_json cost ~1,700 instructions a row here, most
    // of the flusher's time); read back by serde as a `Row`. What an
    // origin's lines share is formatted once: `{"release":R,"key":` before
    // the key and `,"source":S,"first_seen":` after it.
    let (mut head, mut middle) = (Vec::new(), Vec::new());
    for (release, source, keys) in rows.by_origin() {
        head.clear();
        head.extend_from_slice(b"{\"release\":");
        push_json_str(&mut head, release);
        head.extend_from_slice(b",\"key\":");
        middle.clear();
        middle.extend_from_slice(b",\"source\":");
        push_json_str(&mut middle, source);
        middle.extend_from_slice(b",\"first_seen\":");
        for (key, seen) in keys {
            text.extend_from_slice(&head);
            push_json_str(&mut text, key);
            text.extend_from_slice(&middle);
            text.extend_from_slice(tails.get(seen));
            if text.len() >= CHUNK {
                file.write_all(&text)?;
                text.clear();
            }
        }
    }
    file.write_all(&text)
}

/// The end of a line, `F,"last_seen":L,"wrote":W,"served_new":S,"mismatch":M}\n`,
/// kept for the few (first, last, marks) an interval has (its seconds, mostly first = last):
/// a row copies it instead of formatting two numbers.
#[derive(Default)]
struct Tails {
    slots: [Option<(Seen, Vec<u8>)>; 16],
}

impl Tails {
    fn get(&mut self, seen: &Seen) -> &[u8] {
        let marks = seen.marks;
        let i = (seen.first_seen.wrapping_mul(3) ^ seen.last_seen ^ marks.wrote as u64) as usize % 16;
        let slot = &mut self.slots[i];
        if !slot.as_ref().is_some_and(|(s, _)| s == seen) {
            let mut tail = slot.take().map(|(_, t)| t).unwrap_or_default();
            tail.clear();
            push_u64(&mut tail, seen.first_seen);
            tail.extend_from_slice(b",\"last_seen\":");
            push_u64(&mut tail, seen.last_seen);
            for (name, set) in [
                (&b",\"wrote\":"[..], marks.wrote),
                (b",\"served_new\":", marks.served_new),
                (b",\"mismatch\":", marks.mismatch),
            ] {
                tail.extend_from_slice(name);
                tail.extend_from_slice(if set { b"true" } else { b"false" });
            }
            tail.extend_from_slice(b"}\n");
            *slot = Some((*seen, tail));
        }
        slot.as_ref().map_or(&[], |(_, t)| t)
    }
}

pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `s` as a JSON string: copied as it is when nothing needs escaping (user
/// IDs almost never do), else escaped by serde_json.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("a string serializes");
    }
}

pub(super) fn read_jsonl(path: &Path, release: &str) -> Result<Vec<Row>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut rows = Rows::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Row =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: not a ledger row: {e}", path.display(), n + 1))?;
        if row.release == release {
            let (id, seen) = row.split();
            merge(&mut rows, id, seen);
        }
    }
    Ok(sorted(rows))
}

/// Rewrite the file without `release`'s rows (temp file, then rename).
pub(super) fn purge_jsonl(path: &Path, release: &str) -> Result<u64, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut kept = String::new();
    let mut purged = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Row>(line) {
            Ok(row) if row.release == release => purged += 1,
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    let tmp = path.with_extension("purge.tmp");
    std::fs::write(&tmp, kept)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot rewrite {}: {e}", path.display()))?;
    Ok(purged)
}
