//! `[ledger]`: exactly one sink (`postgres` URL or `file`), the table name
//! (an SQL identifier, never quoted into SQL unchecked), flush interval and
//! capacity.

use std::path::PathBuf;

use super::raw::{RawLedger, S};
use super::{invalid, positive_duration, postgres_url, secret, Invalid, LedgerConfig, LedgerSink};

pub(super) fn validate(raw: &S<RawLedger>) -> Result<LedgerConfig, Invalid> {
    let l = raw.get_ref();
    let postgres =
        secret::one_of("postgres", l.postgres.as_ref(), l.postgres_env.as_ref(), l.postgres_file.as_ref(), raw.span())?;
    let sink = match (postgres, &l.file) {
        (Some(url), None) => {
            let password = secret::password(l.password_env.as_ref(), l.password_file.as_ref(), raw.span())?;
            let url = postgres_url(&url, password.as_deref())?;
            let table = match &l.table {
                None => "grayshift_exposure".to_string(),
                Some(t) if is_identifier(t.get_ref()) => t.get_ref().clone(),
                Some(t) => {
                    return invalid(
                        t.span(),
                        format!("ledger.table {:?} must be a plain SQL name like \"grayshift_exposure\" or \"audit.exposure\" (letters, digits, _)", t.get_ref()),
                    )
                }
            };
            LedgerSink::Postgres { url, table }
        }
        (None, Some(file)) if !file.get_ref().is_empty() => {
            if let Some(t) = &l.table {
                return invalid(t.span(), "ledger.table applies to the postgres sink only");
            }
            LedgerSink::File(PathBuf::from(file.get_ref()))
        }
        _ => return invalid(raw.span(), "[ledger] needs exactly one of `postgres = \"URL\"` or `file = \"PATH\"`"),
    };
    let capacity = match &l.capacity {
        None => 65_536,
        Some(c) if (16..=16 << 20).contains(c.get_ref()) => *c.get_ref(),
        Some(c) => return invalid(c.span(), "ledger.capacity must be between 16 and 16777216 keys"),
    };
    Ok(LedgerConfig { sink, flush: positive_duration(&l.flush, "5s")?, capacity })
}

/// `name` or `schema.name`, each part `[A-Za-z_][A-Za-z0-9_]*`, at most 63
/// bytes (PostgreSQL's limit).
fn is_identifier(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let mut parts = s.split('.');
    let ok = parts.by_ref().take(2).all(part);
    ok && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::is_identifier;

    #[test]
    fn table_names_are_plain_identifiers() {
        for ok in ["grayshift_exposure", "audit.exposure", "_t1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1t", "t;drop table x", "a.b.c", "a.", "\"t\"", "t-x"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
