//! Where exposures go: a PostgreSQL table (upserted in batches; every
//! replica of a fleet writes the same one) or a JSON-lines file (one
//! replica). Both are read back the same way, as [`Row`]s, for the hook's
//! CSV and `grayshift exposure`.
//!
//! The table (created when missing):
//! ```sql
//! CREATE TABLE IF NOT EXISTS grayshift_exposure (
//!     release    text        NOT NULL,
//!     source     text        NOT NULL,
//!     key        text        NOT NULL,
//!     first_seen timestamptz NOT NULL,
//!     last_seen  timestamptz NOT NULL,
//!     wrote      boolean     NOT NULL,
//!     served_new boolean     NOT NULL DEFAULT true,
//!     mismatch   boolean     NOT NULL DEFAULT false,
//!     PRIMARY KEY (release, source, key)
//! );
//! ```
//!
//! A table created before the shadow comparison existed lacks the last two
//! columns: they are added (`ADD COLUMN IF NOT EXISTS`, with the defaults
//! its rows had in meaning: every one a key `new` served), so an existing
//! ledger keeps working, and replicas of both versions can share it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::rows::{merge, sorted, Pending, Row, Rows, Seen};
use crate::config::LedgerSink;
use crate::control::pg::{self, PgSlot};

/// Parameters per row of the upsert.
const PARAMS: usize = 8;
/// Rows per INSERT: 8 000 parameters, well under PostgreSQL's 65 535.
const BATCH: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Sink {
    kind: LedgerSink,
    pg: PgSlot,
    table_ready: bool,
    /// The full batch's upsert, prepared on this connection: PostgreSQL
    /// (the primary database, often) parses and plans the 8 000-parameter
    /// statement once per connection instead of at every batch.
    full_batch: Option<(Arc<Client>, Statement)>,
}

impl Sink {
    pub fn new(kind: LedgerSink) -> Sink {
        Sink { kind, pg: PgSlot::default(), table_ready: false, full_batch: None }
    }

    /// Write `rows` (handed back, to be kept on error); on error nothing is
    /// known to be written (the caller keeps them and retries: the upsert
    /// makes a retry harmless).
    pub async fn write(&mut self, rows: Pending) -> (Pending, Result<(), String>) {
        if rows.is_empty() {
            return (rows, Ok(()));
        }
        let result = match &self.kind {
            LedgerSink::File(path) => {
                // Serialising and fsyncing is blocking work: off the runtime.
                let path = path.clone();
                let (rows, result) = tokio::task::spawn_blocking(move || {
                    let result =
                        append_jsonl(&path, &rows).map_err(|e| format!("cannot append to {}: {e}", path.display()));
                    (rows, result)
                })
                .await
                .expect("writing the ledger file does not panic");
                return (rows, result);
            }
            LedgerSink::Postgres { url, table } => {
                let (url, table) = (url.clone(), table.clone());
                self.write_postgres(&url, &table, &rows).await
            }
        };
        (rows, result)
    }

    async fn write_postgres(&mut self, url: &str, table: &str, rows: &Pending) -> Result<(), String> {
        if !self.table_ready {
            create_table(&self.pg, url, table).await?;
            self.table_ready = true;
        }
        let rows: Vec<PendingRow> = rows.iter().collect();
        for batch in rows.chunks(BATCH) {
            let result = upsert(&self.pg, url, table, batch, &mut self.full_batch).await;
            if let Err(e) = &result {
                self.full_batch = None; // prepared against a table or connection that may be gone
                if e.contains("does not exist") {
                    self.table_ready = false; // dropped behind our back: create it again next time
                }
            }
            result?;
        }
        Ok(())
    }

    /// Every row of `release`, ordered by key.
    pub async fn read(&self, release: &str) -> Result<Vec<Row>, String> {
        match &self.kind {
            LedgerSink::File(path) => read_jsonl(path, release),
            LedgerSink::Postgres { url, table } => {
                let sql = format!(
                    "SELECT release, key, source, extract(epoch from first_seen)::int8, extract(epoch from last_seen)::int8, \
                     wrote, served_new, mismatch FROM {table} WHERE release = $1 ORDER BY key, source"
                );
                // No table: nothing recorded yet. A table of an older
                // grayshift (no `served_new` column yet) is brought up to
                // date, then read again.
                let mut upgraded = false;
                let rows = loop {
                    let (sql, release) = (sql.clone(), release.to_string());
                    let result = pg::with_client(&self.pg, url, TIMEOUT, |client| async move {
                        client.query(&sql, &[&release]).await
                    })
                    .await;
                    match result {
                        Err(e) if !upgraded && e.contains("column") && e.contains("does not exist") => {
                            create_table(&self.pg, url, table).await?;
                            upgraded = true;
                        }
                        Err(e) if e.contains("relation") && e.contains("does not exist") => return Ok(Vec::new()),
                        other => break other?,
                    }
                };
                Ok(rows
                    .iter()
                    .map(|r| Row {
                        release: r.get(0),
                        key: r.get(1),
                        source: r.get(2),
                        first_seen: r.get::<_, i64>(3).max(0) as u64,
                        last_seen: r.get::<_, i64>(4).max(0) as u64,
                        wrote: r.get(5),
                        served_new: r.get(6),
                        mismatch: r.get(7),
                    })
                    .collect())
            }
        }
    }

    /// Delete every row of `release`; returns how many went.
    pub async fn purge(&self, release: &str) -> Result<u64, String> {
        match &self.kind {
            LedgerSink::File(path) => purge_jsonl(path, release),
            LedgerSink::Postgres { url, table } => {
                let sql = format!("DELETE FROM {table} WHERE release = $1");
                let release = release.to_string();
                pg::with_client(&self.pg, url, TIMEOUT, |client| async move { client.execute(&sql, &[&release]).await })
                    .await
            }
        }
    }

    /// For `/status` and logs: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.kind {
            LedgerSink::File(path) => format!("file {}", path.display()),
            LedgerSink::Postgres { url, table } => format!("postgres {} table {table}", redact_url(url)),
        }
    }
}

/// Create the table, or add the columns an older grayshift's lacks.
async fn create_table(slot: &PgSlot, url: &str, table: &str) -> Result<(), String> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
         release text NOT NULL, source text NOT NULL, key text NOT NULL, \
         first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, wrote boolean NOT NULL, \
         served_new boolean NOT NULL DEFAULT true, mismatch boolean NOT NULL DEFAULT false, \
         PRIMARY KEY (release, source, key)); \
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS served_new boolean NOT NULL DEFAULT true, \
         ADD COLUMN IF NOT EXISTS mismatch boolean NOT NULL DEFAULT false"
    );
    pg::with_client(slot, url, TIMEOUT, |client| async move { client.batch_execute(&sql).await }).await
}

/// One multi-row `INSERT … ON CONFLICT DO UPDATE`: the earliest first_seen,
/// the latest last_seen, wrote, served_new and mismatch once true stay true. A full batch uses the
/// statement in `full_batch`, preparing it when the connection is new.
async fn upsert(
    slot: &PgSlot,
    url: &str,
    table: &str,
    rows: &[PendingRow<'_>],
    full_batch: &mut Option<(Arc<Client>, Statement)>,
) -> Result<(), String> {
    let times: Vec<(f64, f64)> = rows.iter().map(|(.., s)| (s.first_seen as f64, s.last_seen as f64)).collect();
    pg::with_client(slot, url, TIMEOUT, |client| async move {
        let statement = match full_batch {
            Some((prepared_on, statement)) if rows.len() == BATCH && Arc::ptr_eq(prepared_on, &client) => {
                statement.clone()
            }
            _ => {
                let statement = client.prepare(&upsert_sql(table, rows.len())).await?;
                if rows.len() == BATCH {
                    *full_batch = Some((client.clone(), statement.clone()));
                }
                statement
            }
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows.len() * PARAMS);
        for ((release, source, key, seen), (first, last)) in rows.iter().zip(&times) {
            let marks = &seen.marks;
            let row: [&(dyn ToSql + Sync); PARAMS] =
                [release, source, key, first, last, &marks.wrote, &marks.served_new, &marks.mismatch];
            params.extend(row);
        }
        client.execute(&statement, &params).await
    })
    .await
    .map(|_| ())
}

/// The upsert's text for `rows` rows.
fn upsert_sql(table: &str, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = format!(
        "INSERT INTO {table} AS t (release, source, key, first_seen, last_seen, wrote, served_new, mismatch) VALUES "
    );
    for i in 0..rows {
        let p = i * PARAMS;
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(
            sql,
            "(${}, ${}, ${}, to_timestamp(${}::float8), to_timestamp(${}::float8), ${}, ${}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8
        );
    }
    sql.push_str(
        " ON CONFLICT (release, source, key) DO UPDATE SET \
         first_seen = LEAST(t.first_seen, EXCLUDED.first_seen), \
         last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen), \
         wrote = t.wrote OR EXCLUDED.wrote, \
         served_new = t.served_new OR EXCLUDED.served_new, \
         mismatch = t.mismatch OR EXCLUDED.mismatch",
    );
    sql
}

/// A row as the flusher writes it: (release, source, key, seen).
type PendingRow<'a> = (&'a str, &'a str, &'a str, &'a Seen);

/// Bytes of JSON lines gathered before a `write(2)`: one buffer, reused,
/// that stays in the cache, instead of the whole interval's text (megabytes
/// at a busy edge, allocated, faulted in and freed every interval).
const CHUNK: usize = 64 * 1024;

fn append_jsonl(path: &Path, rows: &Pending) -> std::io::Result<()> {
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

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
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

fn read_jsonl(path: &Path, release: &str) -> Result<Vec<Row>, String> {
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
fn purge_jsonl(path: &Path, release: &str) -> Result<u64, String> {
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

/// The CSV the data-rollback hook reads:
/// `key,source,first_seen,last_seen,wrote,served_new,mismatch` with RFC 3339
/// times, quoted as RFC 4180 says. The two last columns come after the
/// older five, so a hook that reads those by position keeps working.
pub fn csv<'a>(rows: impl IntoIterator<Item = &'a Row>) -> String {
    let mut out = String::from("key,source,first_seen,last_seen,wrote,served_new,mismatch\n");
    for row in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_field(&row.key),
            csv_field(&row.source),
            rfc3339(row.first_seen),
            rfc3339(row.last_seen),
            row.wrote,
            row.served_new,
            row.mismatch
        ));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

pub use crate::config::redact_url;

#[cfg(test)]
mod tests {
    use std::hash::{Hasher, RandomState};
    use std::sync::Arc;

    use super::*;
    use crate::control::ledger::recorder::{Key, Marks};
    use crate::proxy::split::KeyOrigin;

    fn row(key: &str, first: u64, last: u64, wrote: bool) -> Row {
        Row {
            release: "r".into(),
            key: key.into(),
            source: "header:X-User-ID".into(),
            first_seen: first,
            last_seen: last,
            wrote,
            served_new: true,
            mismatch: false,
        }
    }

    fn put(rows: &mut Rows, row: Row) {
        let (id, seen) = row.split();
        merge(rows, id, seen);
    }

    /// The rows as the flusher holds them, each with an origin of its own
    /// (equal strings must still make one group).
    fn pending(rows: impl IntoIterator<Item = Row>) -> Pending {
        let mut pending = Pending::new(RandomState::new());
        for row in rows {
            let (release, source, key) = (row.release.clone(), row.source.clone(), row.key.clone());
            add(&mut pending, &release, &source, key.as_bytes(), row.split().1);
        }
        pending
    }

    /// A sighting as the recorder hands it over, with its key hash.
    fn add(pending: &mut Pending, release: &str, source: &str, key: &[u8], seen: Seen) {
        let origin = Arc::new(KeyOrigin { release: release.into(), source: source.into() });
        let mut hasher = std::hash::BuildHasher::build_hasher(pending.hasher());
        hasher.write(key);
        let hash = hasher.finish();
        pending.add(&origin, Key::new(key), hash, seen);
    }

    #[test]
    fn pending_rows_merge_by_origin_text_and_clear_for_reuse() {
        let mut rows = pending([row("a", 10, 20, false), row("a", 5, 15, true), row("b", 1, 1, false)]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.group_count(), 1, "equal origins share one group");
        let mut got: Vec<_> =
            rows.iter().map(|(r, s, k, seen)| (r.to_string(), s.to_string(), k.to_string(), *seen)).collect();
        got.sort_by(|a, b| a.2.cmp(&b.2));
        let seen = |first, last, wrote| Seen { first_seen: first, last_seen: last, marks: Marks::served_new(wrote) };
        let (r, s) = ("r".to_string(), "header:X-User-ID".to_string());
        assert_eq!(
            got,
            vec![(r.clone(), s.clone(), "a".into(), seen(5, 20, true)), (r, s, "b".into(), seen(1, 1, false))]
        );
        rows.clear();
        assert!(rows.is_empty() && rows.iter().next().is_none());
        assert_eq!(rows.group_count(), 1, "the group and its map are kept");
        rows.clear();
        assert!(rows.group_count() == 0, "an origin unused for a whole interval goes");
    }

    #[test]
    fn merging_keeps_the_widest_span_and_any_write() {
        let mut rows = Rows::new();
        put(&mut rows, row("a", 10, 20, false));
        put(&mut rows, row("a", 5, 15, true));
        put(&mut rows, row("a", 12, 30, false));
        assert_eq!(sorted(rows), vec![row("a", 5, 30, true)]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_text_and_merges() {
        let mut rows = Pending::new(RandomState::new());
        let seen = |at| Seen { first_seen: at, last_seen: at, marks: Marks::served_new(false) };
        add(&mut rows, "r", "s", b"a\xff", seen(1));
        add(&mut rows, "r", "s", b"a\xfe", seen(2));
        add(&mut rows, "r", "s", "a\u{fffd}".as_bytes(), seen(3));
        let got: Vec<_> = rows.iter().map(|(.., k, s)| (k.to_string(), *s)).collect();
        assert_eq!(
            got,
            vec![("a\u{fffd}".to_string(), Seen { first_seen: 1, last_seen: 3, marks: Marks::served_new(false) })]
        );
    }

    #[test]
    fn numbers_are_written_as_decimal() {
        for n in [0, 7, 10, 1_764_547_200, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let stable_mismatch = Row { served_new: false, mismatch: true, ..row("m", 0, 0, false) };
        let text = csv(&[row("plain", 0, 60, false), row("a,\"b\"", 0, 0, true), stable_mismatch]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "key,source,first_seen,last_seen,wrote,served_new,mismatch");
        assert_eq!(lines[1], "plain,header:X-User-ID,1970-01-01T00:00:00Z,1970-01-01T00:01:00Z,false,true,false");
        assert_eq!(
            lines[2],
            "\"a,\"\"b\"\"\",header:X-User-ID,1970-01-01T00:00:00Z,1970-01-01T00:00:00Z,true,true,false"
        );
        assert_eq!(lines[3], "m,header:X-User-ID,1970-01-01T00:00:00Z,1970-01-01T00:00:00Z,false,false,true");
    }

    #[test]
    fn keys_that_need_escaping_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exposure.jsonl");
        let keys = ["plain", "quo\"te", "back\\slash", "new\nline", "tab\tand\u{1}", "émoji 🚀"];
        let rows = pending(keys.map(|key| row(key, 7, 9, true)));
        append_jsonl(&path, &rows).unwrap();
        let back: Vec<String> = read_jsonl(&path, "r").unwrap().into_iter().map(|r| r.key).collect();
        let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        expected.sort();
        assert_eq!(back, expected);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().all(|l| serde_json::from_str::<Row>(l).is_ok()), "{text}");
    }

    #[test]
    fn lines_are_serde_json_rows_byte_for_byte_across_chunks() {
        // More than one CHUNK of lines, two origins, times that share the
        // tail cache's slots: every line is what serde_json writes for it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exposure.jsonl");
        let rows: Vec<Row> = (0..3_000u64)
            .map(|i| {
                let first = 1_764_547_200 + i % 7 * 16;
                let row = Row {
                    served_new: i % 7 != 0,
                    mismatch: i % 4 == 0,
                    ..row(&format!("user-{i}"), first, first + i % 3, i % 5 == 0)
                };
                if i % 2 == 0 {
                    row
                } else {
                    Row { release: "rel\"2".into(), source: "cookie:uid".into(), ..row }
                }
            })
            .collect();
        append_jsonl(&path, &pending(rows.clone())).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() > CHUNK, "{} bytes", text.len());
        let mut got: Vec<&str> = text.lines().collect();
        let mut want: Vec<String> = rows.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn the_file_sink_round_trips_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exposure.jsonl");
        let rows = pending([row("a", 1, 2, false), Row { release: "other".into(), ..row("b", 1, 2, false) }]);
        append_jsonl(&path, &rows).unwrap();
        append_jsonl(&path, &pending([row("a", 3, 4, true)])).unwrap();
        let back = read_jsonl(&path, "r").unwrap();
        assert_eq!(back, vec![row("a", 1, 4, true)]);
        assert_eq!(purge_jsonl(&path, "r").unwrap(), 2);
        assert!(read_jsonl(&path, "r").unwrap().is_empty());
        assert_eq!(read_jsonl(&path, "other").unwrap().len(), 1);
    }

    #[test]
    fn lines_of_an_older_grayshift_read_as_keys_new_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exposure.jsonl");
        let old = r#"{"release":"r","key":"a","source":"header:X-User-ID","first_seen":1,"last_seen":2,"wrote":false}"#;
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let mismatch = Row { served_new: false, mismatch: true, ..row("a", 3, 3, false) };
        let stable_only = Row { served_new: false, mismatch: true, ..row("b", 3, 3, false) };
        append_jsonl(&path, &pending([mismatch, stable_only.clone()])).unwrap();
        let back = read_jsonl(&path, "r").unwrap();
        assert_eq!(back, vec![Row { mismatch: true, ..row("a", 1, 3, false) }, stable_only]);
    }
}
