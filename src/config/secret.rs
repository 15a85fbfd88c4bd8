//! Secrets out of the config file. Beside a key that takes a URL (`url`,
//! `webhook`, `postgres`), `KEY_env = "NAME"` reads it from an environment
//! variable and `KEY_file = "PATH"` from a file (surrounding whitespace
//! trimmed); beside a PostgreSQL URL, `password_env` / `password_file` give
//! just the password. Read at start and at every reload, like the rest of
//! the file. A value read this way never appears in an error message: it is
//! replaced by where it came from.

use std::ops::Range;

use super::raw::S;
use super::{invalid, Invalid};

/// A value and, when it came from the environment or a file, where from.
pub(super) struct Sourced {
    pub value: S<String>,
    from: Option<String>,
}

impl Sourced {
    /// Run `check` on the value; a refusal that would quote a secret value
    /// names its source instead.
    pub fn check<T>(&self, check: impl FnOnce(&S<String>) -> Result<T, Invalid>) -> Result<T, Invalid> {
        check(&self.value).map_err(|mut e| {
            if let Some(from) = &self.from {
                e.message = e.message.replace(self.value.get_ref().as_str(), &format!("(the value of {from})"));
            }
            e
        })
    }
}

/// Exactly one of `KEY`, `KEY_env`, `KEY_file`; `None` when none is set.
/// `whole` is the span to blame when more than one is.
pub(super) fn one_of(
    key: &str,
    direct: Option<&S<String>>,
    env: Option<&S<String>>,
    file: Option<&S<String>>,
    whole: Range<usize>,
) -> Result<Option<Sourced>, Invalid> {
    match (direct, env, file) {
        (None, None, None) => Ok(None),
        (Some(v), None, None) => Ok(Some(Sourced { value: v.clone(), from: None })),
        (None, Some(name), None) => {
            let value = read_env(name)?;
            Ok(Some(Sourced { value: S::new(name.span(), value), from: Some(format!("${}", name.get_ref())) }))
        }
        (None, None, Some(path)) => {
            let value = read_file(path)?;
            Ok(Some(Sourced { value: S::new(path.span(), value), from: Some(path.get_ref().clone()) }))
        }
        _ => invalid(whole, format!("give only one of `{key}`, `{key}_env` or `{key}_file`")),
    }
}

/// `password_env` or `password_file` (or neither).
pub(super) fn password(
    env: Option<&S<String>>,
    file: Option<&S<String>>,
    whole: Range<usize>,
) -> Result<Option<String>, Invalid> {
    match (env, file) {
        (None, None) => Ok(None),
        (Some(name), None) => read_env(name).map(Some),
        (None, Some(path)) => read_file(path).map(Some),
        _ => invalid(whole, "give only one of `password_env` or `password_file`"),
    }
}

fn read_env(name: &S<String>) -> Result<String, Invalid> {
    match std::env::var(name.get_ref()) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => invalid(name.span(), format!("environment variable {} is empty", name.get_ref())),
        Err(_) => invalid(name.span(), format!("environment variable {} is not set", name.get_ref())),
    }
}

fn read_file(path: &S<String>) -> Result<String, Invalid> {
    match std::fs::read_to_string(path.get_ref()) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => invalid(path.span(), format!("file {} is empty", path.get_ref())),
        Err(e) => invalid(path.span(), format!("cannot read {}: {e}", path.get_ref())),
    }
}

/// A URL as it may be printed: `user:***@` for its userinfo and `***` for
/// a `password=` parameter (URL query or `key=value` string).
pub fn redact_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => match rest[..at].split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
                    None => url.to_string(),
                },
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    while let Some(start) = out.find("password=").filter(|&i| i == 0 || out[..i].ends_with(['?', '&', ' '])) {
        let value = start + "password=".len();
        let end = out[value..].find(['&', ' ']).map_or(out.len(), |i| value + i);
        if &out[value..end] == "***" {
            break;
        }
        out.replace_range(value..end, "***");
    }
    out
}

/// `url` with `password` added as libpq's `password` parameter (so the
/// password never has to be written into the file).
pub(super) fn with_password(url: &str, password: &str) -> String {
    if url.contains("://") {
        let encoded: String = password
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}password={encoded}")
    } else {
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{url} password='{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_userinfo_and_password_parameters() {
        assert_eq!(redact_url("postgresql://u:s3cret@db:5432/x"), "postgresql://u:***@db:5432/x");
        assert_eq!(redact_url("postgresql://u@db/x"), "postgresql://u@db/x");
        assert_eq!(redact_url("postgresql://u:p@ss@db/x"), "postgresql://u:***@db/x");
        assert_eq!(
            redact_url("postgresql://u@db/x?sslmode=require&password=hunter2"),
            "postgresql://u@db/x?sslmode=require&password=***"
        );
        assert_eq!(redact_url("host=db user=u password=hunter2 dbname=x"), "host=db user=u password=*** dbname=x");
        assert_eq!(redact_url("host=db user=u"), "host=db user=u");
    }

    #[test]
    fn a_password_is_added_as_a_parameter_tokio_postgres_reads() {
        let url = with_password("postgresql://u@db/x?sslmode=require", "p&ss wörd");
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(config.get_password(), Some("p&ss wörd".as_bytes()));
        let kv = with_password("host=db user=u", "it's");
        let config: tokio_postgres::Config = kv.parse().unwrap();
        assert_eq!(config.get_password(), Some("it's".as_bytes()));
    }
}
