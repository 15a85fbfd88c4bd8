//! The schema gate's verdict: given what the database says its migration
//! version is, may `new` get users (`new_ready`), and can `stable` still run
//! on it (`stable_supported`)? Pure: reading the version from PostgreSQL is
//! someone else's job; this module only orders and compares versions, per
//! migration tool. It sits below both the config, which validates
//! `[schema]` bounds into [`Bounds`], and the gate task that judges with it.
//!
//! How each tool's versions compare:
//! - `alembic`: opaque revision ids, matched exactly. A database with several
//!   heads (branches) is ready for `new` when any head is one `new` requires,
//!   and supported by `stable` only when every head is one it supports.
//! - `flyway`, `rails`: ordered (dotted numbers; `2.10` > `2.9`, `2.4` =
//!   `2.4.0`, flyway's `2_4` = `2.4`). `new_requires = "2.4"` means the
//!   version is at least 2.4; `stable_supports = "2.4"` means at most 2.4.
//! - `django`: per app, by migration number: `"orders.0042_add_phone"` in
//!   `new_requires` means app `orders` has applied a migration numbered 42 or
//!   more; in `stable_supports` it means no applied `orders` migration is
//!   numbered above 42. Apps not named are not constrained.
//! - `sql`: numbers ordered as flyway's, anything else opaque (exact match).

use std::cmp::Ordering;

/// The migration tool whose bookkeeping table holds the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Alembic,
    Flyway,
    Rails,
    Django,
    Sql,
}

impl Tool {
    pub fn parse(s: &str) -> Option<Tool> {
        Some(match s {
            "alembic" => Tool::Alembic,
            "flyway" => Tool::Flyway,
            "rails" => Tool::Rails,
            "django" => Tool::Django,
            "sql" => Tool::Sql,
            _ => return None,
        })
    }

    /// Whether the tool's versions are ordered (one bound each) rather than
    /// matched from a list.
    pub fn ordered(self) -> bool {
        matches!(self, Tool::Flyway | Tool::Rails)
    }
}

/// Which sides can run on the schema, as the gate last knew it. The route
/// the proxy uses is decided from it by `State::route_for` (see README,
/// "Schema gate").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stance {
    /// Both sides run on it, or there is no `[schema]`.
    #[default]
    Both,
    /// `[schema]` is configured and nothing was read yet (fail safe: as
    /// [`Stance::StableOnly`], but it is no verdict and nothing is held).
    Unread,
    /// `new` cannot run on it (or it could not be read): the gate is closed.
    StableOnly,
    /// `stable` cannot run on it: past the point of no return.
    NewOnly,
    /// In neither list (or neither bound), or unreadable while stable did
    /// not support the last version read: nobody moves.
    Neither,
}

impl Stance {
    pub fn of(new_ready: bool, stable_supported: bool) -> Stance {
        match (new_ready, stable_supported) {
            (true, true) => Stance::Both,
            (false, true) => Stance::StableOnly,
            (true, false) => Stance::NewOnly,
            (false, false) => Stance::Neither,
        }
    }

    /// `new` may get (more) users: the gate is open.
    pub fn new_ready(self) -> bool {
        matches!(self, Stance::Both | Stance::NewOnly)
    }
}

/// What the database reported: the version rows as the tool keeps them
/// (alembic: every head; flyway/rails/sql: the one current version; django:
/// every applied `app.name` pair as `"app.0042_name"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading(pub Vec<String>);

/// The gate's verdict on one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub new_ready: bool,
    pub stable_supported: bool,
    /// The version as shown in `/status` (heads joined with `,`).
    pub version: String,
    /// Why the gate is closed, or why stable is not supported.
    pub why: Option<String>,
}

/// `new_requires` and `stable_supports`, validated for their tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub tool: Tool,
    pub new_requires: Vec<String>,
    pub stable_supports: Vec<String>,
}

/// A shape error in `new_requires` / `stable_supports`, for `grayshift check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BoundsError {
    pub key: &'static str,
    pub message: String,
}

impl Bounds {
    pub fn new(tool: Tool, new_requires: Vec<String>, stable_supports: Vec<String>) -> Result<Bounds, BoundsError> {
        for (key, list) in [("new_requires", &new_requires), ("stable_supports", &stable_supports)] {
            if list.is_empty() {
                return Err(BoundsError { key, message: "must name at least one version".into() });
            }
            if tool.ordered() && list.len() != 1 {
                return Err(BoundsError {
                    key,
                    message: format!("{tool:?} versions are ordered: give one version (a bound), not a list")
                        .to_lowercase(),
                });
            }
            for v in list {
                match tool {
                    Tool::Flyway | Tool::Rails if parse_dotted(v).is_none() => {
                        return Err(BoundsError { key, message: format!("{v:?} is not a dotted number like \"2.4\"") });
                    }
                    Tool::Django if django_key(v).is_none() => {
                        return Err(BoundsError {
                            key,
                            message: format!("{v:?} is not a django migration like \"orders.0042_add_phone\""),
                        });
                    }
                    _ if v.trim().is_empty() => {
                        return Err(BoundsError { key, message: "an empty version".into() });
                    }
                    _ => {}
                }
            }
        }
        if tool == Tool::Django {
            for (key, list) in [("new_requires", &new_requires), ("stable_supports", &stable_supports)] {
                let mut apps: Vec<&str> = list.iter().filter_map(|v| django_key(v)).map(|(app, _)| app).collect();
                apps.sort_unstable();
                if apps.windows(2).any(|w| w[0] == w[1]) {
                    return Err(BoundsError { key, message: "names the same app twice".into() });
                }
            }
        }
        Ok(Bounds { tool, new_requires, stable_supports })
    }

    /// The verdict on what the database reported.
    pub fn judge(&self, reading: &Reading) -> Verdict {
        let version = reading.0.join(",");
        let (new_ready, stable_supported) = match self.tool {
            Tool::Alembic => opaque(&self.new_requires, &self.stable_supports, &reading.0),
            Tool::Flyway | Tool::Rails => match reading.0.first().and_then(|v| parse_dotted(v)) {
                Some(current) => (
                    cmp_dotted(&current, &parse_dotted(&self.new_requires[0]).unwrap_or_default()) != Ordering::Less,
                    cmp_dotted(&current, &parse_dotted(&self.stable_supports[0]).unwrap_or_default())
                        != Ordering::Greater,
                ),
                None => (false, false),
            },
            Tool::Sql => match reading.0.first().and_then(|v| parse_dotted(v)) {
                Some(current) if self.all_numeric() => (
                    self.new_requires.iter().filter_map(|v| parse_dotted(v)).all(|r| cmp_dotted(&current, &r).is_ge()),
                    self.stable_supports
                        .iter()
                        .filter_map(|v| parse_dotted(v))
                        .all(|s| cmp_dotted(&current, &s).is_le()),
                ),
                _ => opaque(&self.new_requires, &self.stable_supports, &reading.0),
            },
            Tool::Django => django(&self.new_requires, &self.stable_supports, &reading.0),
        };
        let why = if reading.0.is_empty() {
            Some("no migration has been applied yet".to_string())
        } else {
            match (new_ready, stable_supported) {
                (true, true) => None,
                (false, true) => Some(format!("schema gate closed: {}", self.not_ready(&reading.0))),
                (true, false) => Some(format!(
                    "stable does not support schema {version} ({}): roll forward or restore the schema",
                    self.unsupported(&reading.0)
                )),
                (false, false) => Some(format!(
                    "no side supports schema {version}: {}; {}",
                    self.not_ready(&reading.0),
                    self.unsupported(&reading.0)
                )),
            }
        };
        Verdict { new_ready, stable_supported, version, why }
    }

    /// Why `reading` is no version of this tool (an ordered tool's version
    /// that is no dotted number), if it is not: the gate treats it as
    /// unreadable (fail safe), never as a version in neither list.
    pub fn unreadable(&self, reading: &Reading) -> Option<String> {
        match (self.tool, reading.0.first()) {
            (Tool::Flyway | Tool::Rails, Some(v)) if parse_dotted(v).is_none() => {
                Some(format!("{v:?} is not a {:?} version (a dotted number)", self.tool).to_lowercase())
            }
            _ => None,
        }
    }

    /// True when some version satisfies both `new_requires` and
    /// `stable_supports` (an expand/contract migration). False means that
    /// from the moment `new` may run, stable cannot: every rollback would
    /// be blocked. `grayshift check` warns about it.
    pub fn overlap(&self) -> bool {
        match self.tool {
            Tool::Alembic => self.new_requires.iter().any(|v| self.stable_supports.contains(v)),
            Tool::Flyway | Tool::Rails => {
                let (Some(need), Some(max)) =
                    (parse_dotted(&self.new_requires[0]), parse_dotted(&self.stable_supports[0]))
                else {
                    return false;
                };
                cmp_dotted(&need, &max) != Ordering::Greater
            }
            Tool::Sql if self.all_numeric() => {
                let need = self.new_requires.iter().filter_map(|v| parse_dotted(v)).max_by(|a, b| cmp_dotted(a, b));
                let max = self.stable_supports.iter().filter_map(|v| parse_dotted(v)).min_by(|a, b| cmp_dotted(a, b));
                matches!((need, max), (Some(n), Some(m)) if cmp_dotted(&n, &m) != Ordering::Greater)
            }
            Tool::Sql => self.new_requires.iter().any(|v| self.stable_supports.contains(v)),
            Tool::Django => self.new_requires.iter().filter_map(|v| django_key(v)).all(|(app, need)| {
                self.stable_supports
                    .iter()
                    .filter_map(|v| django_key(v))
                    .find(|(a, _)| *a == app)
                    .is_none_or(|(_, max)| need <= max)
            }),
        }
    }

    /// True when `new_requires` lists a version that `stable_supports` does
    /// not: the step past what stable runs on (the contract migration). For
    /// opaque ids only (ordered tools always have versions past a bound).
    /// False means that the next migration after the expand is in neither
    /// list, so when it lands no side supports it; `grayshift check` warns.
    pub fn lists_a_step_past_stable(&self) -> bool {
        let opaque = match self.tool {
            Tool::Alembic => true,
            Tool::Sql => !self.all_numeric(),
            _ => false,
        };
        !opaque || self.new_requires.iter().any(|v| !self.stable_supports.contains(v))
    }

    /// What grayshift knows about why `new` cannot run on `heads`: the
    /// version is not listed (opaque ids) or below the bound (ordered).
    fn not_ready(&self, heads: &[String]) -> String {
        let version = heads.join(",");
        match self.tool {
            Tool::Django => {
                django_why(&self.new_requires, heads, |newest, need| newest.is_some_and(|n| n >= need), "below")
            }
            _ if self.ordered_reading(heads) => {
                format!("{version} is below new_requires {}", self.new_requires.join(","))
            }
            _ => format!("{version} is not in new_requires [{}]", self.new_requires.join(", ")),
        }
    }

    /// Why `stable` cannot run on `heads`: not listed, or above the bound.
    fn unsupported(&self, heads: &[String]) -> String {
        match self.tool {
            Tool::Django => {
                django_why(&self.stable_supports, heads, |newest, max| newest.is_none_or(|n| n <= max), "above")
            }
            _ if self.ordered_reading(heads) => {
                format!("{} is above stable_supports {}", heads.join(","), self.stable_supports.join(","))
            }
            _ => {
                let unknown: Vec<&str> =
                    heads.iter().filter(|h| !self.stable_supports.contains(h)).map(String::as_str).collect();
                format!("{} is not in stable_supports [{}]", unknown.join(","), self.stable_supports.join(", "))
            }
        }
    }

    /// The reading is compared by order (flyway, rails, numeric sql), not
    /// looked up in a list.
    fn ordered_reading(&self, heads: &[String]) -> bool {
        let numeric = heads.first().and_then(|v| parse_dotted(v)).is_some();
        match self.tool {
            Tool::Flyway | Tool::Rails => numeric,
            Tool::Sql => numeric && self.all_numeric(),
            _ => false,
        }
    }

    fn all_numeric(&self) -> bool {
        self.new_requires.iter().chain(&self.stable_supports).all(|v| parse_dotted(v).is_some())
    }
}

/// Exact matching: ready when any head is required, supported when every
/// head is supported.
fn opaque(new_requires: &[String], stable_supports: &[String], heads: &[String]) -> (bool, bool) {
    let ready = heads.iter().any(|h| new_requires.contains(h));
    let supported = !heads.is_empty() && heads.iter().all(|h| stable_supports.contains(h));
    (ready, supported)
}

fn django(new_requires: &[String], stable_supports: &[String], applied: &[String]) -> (bool, bool) {
    let newest =
        |app: &str| applied.iter().filter_map(|v| django_key(v)).filter(|(a, _)| *a == app).map(|(_, n)| n).max();
    let ready =
        new_requires.iter().filter_map(|v| django_key(v)).all(|(app, need)| newest(app).is_some_and(|n| n >= need));
    let supported =
        stable_supports.iter().filter_map(|v| django_key(v)).all(|(app, max)| newest(app).is_none_or(|n| n <= max));
    (ready, supported)
}

/// The first app in `bounds` whose newest applied migration fails `ok`,
/// said as "orders is at 0041, below orders.0042_add_phone".
fn django_why(bounds: &[String], applied: &[String], ok: impl Fn(Option<u32>, u32) -> bool, side: &str) -> String {
    let key = if side == "below" { "new_requires" } else { "stable_supports" };
    let newest =
        |app: &str| applied.iter().filter_map(|v| django_key(v)).filter(|(a, _)| *a == app).map(|(_, n)| n).max();
    for bound in bounds {
        let Some((app, n)) = django_key(bound) else { continue };
        let at = newest(app);
        if !ok(at, n) {
            let at = at.map_or("has no migration".to_string(), |n| format!("is at {n:04}"));
            return format!("{app} {at}, {side} {key} {bound}");
        }
    }
    format!("the applied migrations do not meet {key}")
}

/// `"orders.0042_add_phone"` → `("orders", 42)`.
fn django_key(v: &str) -> Option<(&str, u32)> {
    let (app, name) = v.split_once('.')?;
    let digits = name.split('_').next()?;
    if app.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((app, digits.parse().ok()?))
}

/// `"2.10.1"` → `[2, 10, 1]`; flyway's `2_10` is the same. None when any
/// part is not a number.
fn parse_dotted(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    v.split(['.', '_']).map(|part| part.parse::<u64>().ok()).collect()
}

/// Compare part by part; missing parts are zero (2.4 = 2.4.0).
fn cmp_dotted(a: &[u64], b: &[u64]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len).map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn bounds(tool: Tool, new: &[&str], stable: &[&str]) -> Bounds {
        Bounds::new(tool, s(new), s(stable)).unwrap()
    }

    fn judge(b: &Bounds, reading: &[&str]) -> (bool, bool) {
        let v = b.judge(&Reading(s(reading)));
        (v.new_ready, v.stable_supported)
    }

    #[test]
    fn an_ordered_version_that_is_no_number_is_unreadable_not_in_neither_list() {
        for tool in [Tool::Flyway, Tool::Rails] {
            let b = bounds(tool, &["3.0"], &["2.5"]);
            assert_eq!(b.unreadable(&Reading(s(&["2.7"]))), None, "{tool:?}");
            let why = b.unreadable(&Reading(s(&["3.0-hotfix"]))).expect("unreadable");
            assert!(why.contains("\"3.0-hotfix\" is not a"), "{why}");
        }
        let opaque = bounds(Tool::Alembic, &["b2"], &["a1"]);
        assert_eq!(opaque.unreadable(&Reading(s(&["c3-hotfix"]))), None);
    }

    #[test]
    fn dotted_versions_compare_as_numbers() {
        let c = |a: &str, b: &str| cmp_dotted(&parse_dotted(a).unwrap(), &parse_dotted(b).unwrap());
        assert_eq!(c("2.10", "2.9"), Ordering::Greater);
        assert_eq!(c("2.4", "2.4.0"), Ordering::Equal);
        assert_eq!(c("2_4", "2.4"), Ordering::Equal);
        assert_eq!(c("1.0.1", "1.1"), Ordering::Less);
        assert_eq!(c("20240101120000", "20231231235959"), Ordering::Greater);
        assert!(parse_dotted("2.x").is_none());
        assert!(parse_dotted("").is_none());
        assert!(parse_dotted("2..4").is_none());
    }

    #[test]
    fn alembic_matches_exactly_and_is_conservative_with_heads() {
        let b = bounds(Tool::Alembic, &["e3a1"], &["a1b2", "e3a1"]);
        assert_eq!(judge(&b, &["a1b2"]), (false, true), "old revision: gate closed, stable fine");
        assert_eq!(judge(&b, &["e3a1"]), (true, true), "expand landed: both run");
        assert_eq!(judge(&b, &["f00d"]), (false, false), "unknown revision: neither");
        assert_eq!(judge(&b, &["e3a1", "f00d"]), (true, false), "a head stable does not know blocks rollbacks");
        assert_eq!(judge(&b, &[]), (false, false), "no revision at all");
        assert!(b.overlap());
        assert!(!bounds(Tool::Alembic, &["c0ffee"], &["a1b2"]).overlap());
    }

    #[test]
    fn flyway_and_rails_are_bounds() {
        let b = bounds(Tool::Flyway, &["2.4"], &["2.10"]);
        assert_eq!(judge(&b, &["2.3"]), (false, true));
        assert_eq!(judge(&b, &["2.4"]), (true, true));
        assert_eq!(judge(&b, &["2.9"]), (true, true), "2.9 < 2.10");
        assert_eq!(judge(&b, &["2.10"]), (true, true));
        assert_eq!(judge(&b, &["2.11"]), (true, false), "past the point of no return");
        assert_eq!(judge(&b, &["garbage"]), (false, false));
        assert!(b.overlap());
        assert!(!bounds(Tool::Flyway, &["3.0"], &["2.10"]).overlap());
        let r = bounds(Tool::Rails, &["20240301000000"], &["20240301000000"]);
        assert_eq!(judge(&r, &["20240229000000"]), (false, true));
        assert_eq!(judge(&r, &["20240301000000"]), (true, true));
        assert_eq!(judge(&r, &["20240302000000"]), (true, false));
    }

    #[test]
    fn django_is_per_app_by_migration_number() {
        let b = bounds(Tool::Django, &["orders.0042_add_phone"], &["orders.0043_backfill", "billing.0007_x"]);
        let applied = ["orders.0001_initial", "orders.0041_a", "billing.0007_x"];
        assert_eq!(judge(&b, &applied), (false, true));
        let applied = ["orders.0001_initial", "orders.0042_add_phone", "billing.0007_x"];
        assert_eq!(judge(&b, &applied), (true, true));
        let applied = ["orders.0042_add_phone", "orders.0044_drop_old", "billing.0003_y"];
        assert_eq!(judge(&b, &applied), (true, false), "orders is past 0043");
        let applied = ["orders.0042_add_phone", "billing.0008_z"];
        assert_eq!(judge(&b, &applied), (true, false), "billing is past 0007");
        let applied = ["orders.0042_add_phone"];
        assert_eq!(judge(&b, &applied), (true, true), "an app with nothing applied is within any bound");
        assert!(b.overlap());
        assert!(!bounds(Tool::Django, &["orders.0050_x"], &["orders.0043_y"]).overlap());
        assert!(bounds(Tool::Django, &["orders.0050_x"], &["billing.0001_y"]).overlap());
    }

    #[test]
    fn sql_orders_numbers_and_matches_text() {
        let b = bounds(Tool::Sql, &["7"], &["8"]);
        assert_eq!(judge(&b, &["6"]), (false, true));
        assert_eq!(judge(&b, &["7"]), (true, true));
        assert_eq!(judge(&b, &["9"]), (true, false));
        let t = bounds(Tool::Sql, &["v2-expand"], &["v1", "v2-expand"]);
        assert_eq!(judge(&t, &["v1"]), (false, true));
        assert_eq!(judge(&t, &["v2-expand"]), (true, true));
        assert_eq!(judge(&t, &["v3"]), (false, false));
    }

    #[test]
    fn verdict_says_what_grayshift_knows() {
        let why = |b: &Bounds, reading: &[&str]| b.judge(&Reading(s(reading))).why.unwrap_or_default();
        let b = bounds(Tool::Flyway, &["2.4"], &["2.4"]);
        assert_eq!(why(&b, &["2.3"]), "schema gate closed: 2.3 is below new_requires 2.4");
        assert!(why(&b, &["2.5"]).starts_with("stable does not support schema 2.5 (2.5 is above stable_supports 2.4)"));
        assert_eq!(b.judge(&Reading(s(&["2.4"]))).why, None);
        let a = bounds(Tool::Alembic, &["b2new"], &["a1old", "b2new"]);
        assert_eq!(
            why(&a, &["c3contract"]),
            "no side supports schema c3contract: c3contract is not in new_requires [b2new]; \
             c3contract is not in stable_supports [a1old, b2new]"
        );
        assert_eq!(why(&a, &["a1old"]), "schema gate closed: a1old is not in new_requires [b2new]");
        assert_eq!(b.judge(&Reading(s(&["garbage"]))).why.unwrap(), "no side supports schema garbage: garbage is not in new_requires [2.4]; garbage is not in stable_supports [2.4]");
        let d = bounds(Tool::Django, &["orders.0042_add_phone"], &["orders.0043_x"]);
        assert_eq!(
            why(&d, &["orders.0041_a"]),
            "schema gate closed: orders is at 0041, below new_requires orders.0042_add_phone"
        );
        assert!(why(&d, &["orders.0044_y"]).contains("orders is at 0044, above stable_supports orders.0043_x"));
        assert!(why(&d, &["billing.0001_y"]).contains("orders has no migration, below new_requires"));
    }

    #[test]
    fn stance_and_the_listed_contract_step() {
        assert_eq!(Stance::of(false, false), Stance::Neither);
        assert!(Stance::NewOnly.new_ready() && !Stance::Unread.new_ready() && !Stance::Neither.new_ready());
        assert!(!bounds(Tool::Alembic, &["b2"], &["a1", "b2"]).lists_a_step_past_stable());
        assert!(bounds(Tool::Alembic, &["b2", "c3"], &["a1", "b2"]).lists_a_step_past_stable());
        assert!(!bounds(Tool::Sql, &["v2"], &["v1", "v2"]).lists_a_step_past_stable());
        assert!(bounds(Tool::Sql, &["7"], &["8"]).lists_a_step_past_stable(), "numbers are ordered");
        assert!(bounds(Tool::Flyway, &["2.4"], &["2.4"]).lists_a_step_past_stable());
    }

    #[test]
    fn bad_bounds_are_refused_with_the_key() {
        let e = Bounds::new(Tool::Flyway, s(&["2.4", "2.5"]), s(&["2.4"])).unwrap_err();
        assert_eq!(e.key, "new_requires");
        let e = Bounds::new(Tool::Flyway, s(&["2.4"]), s(&["two"])).unwrap_err();
        assert_eq!(e.key, "stable_supports");
        let e = Bounds::new(Tool::Django, s(&["orders"]), s(&["orders.0001_x"])).unwrap_err();
        assert!(e.message.contains("django migration"), "{e}");
        let e = Bounds::new(Tool::Django, s(&["a.0001_x", "a.0002_y"]), s(&["a.0003_z"])).unwrap_err();
        assert!(e.message.contains("same app twice"), "{e}");
        let e = Bounds::new(Tool::Alembic, vec![], s(&["a"])).unwrap_err();
        assert!(e.message.contains("at least one"));
        assert_eq!(Tool::parse("liquibase"), None);
    }
}
