//! Where exposures go: a PostgreSQL table (upserted in batches; every
//! replica of a fleet writes the same one) or a JSON-lines file (one
//! replica, [`super::file`]). Both are read back the same way, as [`Row`]s, for the hook's
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

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::file::{append_jsonl, purge_jsonl, read_jsonl};
use super::rows::{Pending, Row, Seen};
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
    use crate::control::ledger::file::{push_u64, CHUNK};
    use crate::control::ledger::recorder::{Key, Marks};
    use crate::control::ledger::rows::{merge, sorted, Rows};
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
