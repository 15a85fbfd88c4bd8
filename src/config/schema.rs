//! `[schema]`: the PostgreSQL URL, the migration tool, the version bounds
//! (checked per tool by `Bounds::new`), the read interval and timeout, and the
//! query (with `tool = "sql"` only).

use super::raw::{RawSchema, S};
use super::{invalid, positive_duration, postgres_url, secret, Invalid, SchemaConfig};
use crate::migration::{Bounds, Tool};

pub(super) fn validate(raw: &S<RawSchema>) -> Result<SchemaConfig, Invalid> {
    let s = raw.get_ref();
    let url = secret::one_of("url", s.url.as_ref(), s.url_env.as_ref(), s.url_file.as_ref(), raw.span())?
        .map_or_else(|| invalid(raw.span(), "[schema] needs `url` (or `url_env`, `url_file`)"), Ok)?;
    let password = secret::password(s.password_env.as_ref(), s.password_file.as_ref(), raw.span())?;
    let url = postgres_url(&url, password.as_deref()).map_err(|mut e| {
        e.message = format!("schema.url: {}", e.message);
        e
    })?;
    let Some(tool) = Tool::parse(s.tool.get_ref()) else {
        return invalid(
            s.tool.span(),
            format!("schema.tool {:?} must be one of alembic, flyway, rails, django, sql", s.tool.get_ref()),
        );
    };
    let query = match (&s.query, tool) {
        (Some(q), Tool::Sql) if !q.get_ref().trim().is_empty() => Some(q.get_ref().clone()),
        (Some(q), Tool::Sql) => return invalid(q.span(), "schema.query must not be empty"),
        (None, Tool::Sql) => return invalid(raw.span(), "[schema] with tool = \"sql\" needs `query = \"select …\"`"),
        (Some(q), _) => return invalid(q.span(), "schema.query applies to tool = \"sql\" only"),
        (None, _) => None,
    };
    let bounds =
        Bounds::new(tool, s.new_requires.get_ref().to_vec(), s.stable_supports.get_ref().to_vec()).or_else(|e| {
            let span = if e.key == "stable_supports" { s.stable_supports.span() } else { s.new_requires.span() };
            invalid(span, format!("schema.{e}"))
        })?;
    Ok(SchemaConfig {
        url,
        bounds,
        interval: positive_duration(&s.interval, "10s")?,
        timeout: positive_duration(&s.timeout, "5s")?,
        query,
    })
}
