//! The schema gate's task: every `schema.interval` it reads the database's
//! migration version (per tool, over the shared PostgreSQL connection code),
//! asks [`Bounds::judge`](crate::migration::Bounds::judge) for the verdict and
//! hands `Control` the stance (which sides run on it). Fail safe: the gate
//! starts closed when `[schema]` is configured, and an unreadable version
//! closes it, unless stable did not support the version last read (then
//! nobody moves: the route in force is held). An unreadable version is an
//! error, never "no side supports". Each change is audited, logged and
//! notified once, not every read.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_postgres::SimpleQueryMessage;

use crate::config::SchemaConfig;
use crate::control::pg::{self, PgSlot};
use crate::control::state::{now_rfc3339, Actor};
use crate::migration::{Reading, Stance, Tool};
use crate::Shared;

/// What `/status.schema` shows (`None`: no `[schema]`), and what the gate
/// last told.
#[derive(Default)]
pub struct GateBoard {
    view: Mutex<Option<Value>>,
    told: Mutex<Option<Told>>,
}

impl GateBoard {
    pub fn view(&self) -> Option<Value> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, view: Option<Value>) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// What the gate last told, or at start what `stance` says.
    fn told(&self, stance: Stance) -> Told {
        self.told.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(Told::of(stance, true))
    }

    fn set_told(&self, told: Told) {
        *self.told.lock().unwrap_or_else(|e| e.into_inner()) = Some(told);
    }
}

/// The SQL that reads the version, per tool.
fn version_query(schema: &SchemaConfig) -> &str {
    match schema.bounds.tool {
        Tool::Alembic => "select version_num from alembic_version",
        // Failed migrations stay in the history with success = false.
        Tool::Flyway => {
            "select version from flyway_schema_history where success and version is not null \
             order by installed_rank desc limit 1"
        }
        Tool::Rails => "select max(version) from schema_migrations",
        Tool::Django => "select app || '.' || name from django_migrations",
        Tool::Sql => schema.query.as_deref().unwrap_or("select null"),
    }
}

async fn read(slot: &PgSlot, schema: &SchemaConfig) -> Result<Reading, String> {
    let rows = pg::simple_query(slot, &schema.url, version_query(schema), schema.timeout).await?;
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    // Only alembic (heads) and django (applied migrations) have many rows.
    let values = match schema.bounds.tool {
        Tool::Alembic | Tool::Django => values,
        _ => values.into_iter().take(1).collect(),
    };
    Ok(Reading(values))
}

/// The read at start, before grayshift serves.
pub async fn first_read(shared: &Shared, slot: &PgSlot) {
    if let Some(schema) = &shared.config().schema {
        evaluate(shared, slot, schema).await;
    }
}

/// Run until shutdown. Follows reloads: a `[schema]` added later starts
/// reading, one removed opens the gate.
pub async fn run(shared: Arc<Shared>, slot: PgSlot, mut shutdown: watch::Receiver<bool>) {
    loop {
        let config = shared.config();
        let wait = match &config.schema {
            None => {
                let before = shared.control.stance();
                if shared.control.set_schema(true, None, None) != before {
                    shared.control.effects().audit(
                        &Actor::Config,
                        "schema",
                        json!({ "new": "open", "why": "no [schema]" }),
                    );
                }
                shared.schema.set(None);
                shared.schema.set_told(Told::Open);
                shared.metrics.schema_ready.set(1);
                shared.metrics.schema_unsupported.set(0);
                std::time::Duration::from_secs(1)
            }
            Some(schema) => {
                evaluate(&shared, &slot, schema).await;
                schema.interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => return,
        }
    }
}

/// What the gate last told the audit log and the notifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Open,
    Closed,
    NoSideSupports,
    /// The version could not be read and stable did not support the last
    /// one read: nobody moves, but no side is known not to support it.
    HeldUnreadable,
}

impl Told {
    fn of(stance: Stance, readable: bool) -> Told {
        match stance {
            Stance::Neither if readable => Told::NoSideSupports,
            Stance::Neither => Told::HeldUnreadable,
            stance if stance.new_ready() => Told::Open,
            _ => Told::Closed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Told::Open => "open",
            Told::Closed => "closed",
            Told::NoSideSupports => "no_side_supports",
            Told::HeldUnreadable => "held_unreadable",
        }
    }
}

async fn evaluate(shared: &Shared, slot: &PgSlot, schema: &SchemaConfig) {
    let before = shared.schema.told(shared.control.stance());
    // An unreadable version (or none yet) closes the gate (fail safe) and
    // leaves stable's support as last read: if stable did not support the
    // last version read, nobody moves on a failed read either.
    // A version the tool cannot order is unreadable, not one in neither list.
    let reading = read(slot, schema).await.and_then(|r| schema.bounds.unreadable(&r).map_or(Ok(r), Err));
    let (new_ready, past_stable, mut view) = match reading {
        Ok(reading) if !reading.0.is_empty() => {
            let v = schema.bounds.judge(&reading);
            let past_stable = (!v.stable_supported).then(|| v.why.clone().unwrap_or_default());
            let view = json!({
                "tool": schema.bounds.tool, "version": v.version, "new_ready": v.new_ready,
                "stable_supported": v.stable_supported, "error": Value::Null, "why": v.why, "read_at": now_rfc3339(),
            });
            (v.new_ready, past_stable, view)
        }
        read => {
            let (error, why) = match read {
                Ok(_) => (Value::Null, "no migration has been applied yet: gate closed (fail safe)"),
                Err(e) => (json!(e), "the version could not be read: gate closed (fail safe)"),
            };
            let view = json!({
                "tool": schema.bounds.tool, "version": Value::Null, "new_ready": false,
                "stable_supported": shared.control.past_stable().is_none(), "error": error, "why": why,
                "read_at": now_rfc3339(),
            });
            (false, shared.control.past_stable(), view)
        }
    };
    let readable = !view["version"].is_null();
    let now = shared.control.set_schema(new_ready, past_stable, view["version"].as_str());
    let now = Told::of(now, readable);
    view["no_side_supports"] = json!(now == Told::NoSideSupports);
    if matches!(now, Told::NoSideSupports | Told::HeldUnreadable) {
        view["held"] = json!(shared.control.state().schema_hold.map(|h| h.version));
    }
    announce(shared, before, now, &view);
    // Unreadable after a version no side supported: still held, and the
    // read error is the news; reading it again is not.
    shared.schema.set_told(if (before, now) == (Told::NoSideSupports, Told::HeldUnreadable) { before } else { now });
    shared.metrics.schema_ready.set((now == Told::Open) as i64);
    shared.metrics.schema_unsupported.set((now == Told::NoSideSupports) as i64);
    shared.schema.set(Some(view));
}

/// Audit, log and notify a change of what the schema allows, once.
fn announce(shared: &Shared, before: Told, now: Told, view: &Value) {
    let (version, why) = (&view["version"], view["why"].as_str().unwrap_or("new_requires met").to_string());
    let route = shared.control.route();
    let text = match (before, now) {
        (before, now) if before == now => return,
        (Told::NoSideSupports, Told::HeldUnreadable) => return,
        (_, Told::NoSideSupports) => format!(
            "NO SIDE SUPPORTS the schema, nobody moves (the split stays as it was, {}% on new): {why}. \
             Roll forward or restore the schema, or list the version in new_requires or stable_supports",
            route.percent
        ),
        (_, Told::HeldUnreadable) => format!(
            "schema version UNREADABLE and stable did not support the last one read: nobody moves \
             (the split stays as it was, {}% on new): {}",
            route.percent,
            view["error"].as_str().unwrap_or(&why)
        ),
        (Told::NoSideSupports, now) => {
            format!("schema {version} is supported again, the usual rules resume: schema gate {}", now.name())
        }
        (_, Told::Open) => format!("schema gate OPEN at version {version}: new gets its percent"),
        (_, Told::Closed) => format!("schema gate CLOSED, nobody on new: {why}"),
    };
    let state = now.name();
    tracing::warn!(gate = state, %version, why, "schema gate changed");
    shared.control.effects().audit(
        &Actor::Config,
        "schema",
        json!({ "new": state, "version": version, "why": why, "error": view["error"],
                "no_side_supports": now == Told::NoSideSupports }),
    );
    shared.control.effects().notice(
        "schema",
        text,
        &Actor::Config,
        json!({ "gate": state, "version": version, "no_side_supports": now == Told::NoSideSupports }),
    );
}
