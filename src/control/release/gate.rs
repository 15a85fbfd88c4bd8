//! The schema gate's task: every `schema.interval` it reads the database's
//! migration version (per tool, over the shared PostgreSQL connection code),
//! asks [`Bounds::judge`](crate::migration::Bounds::judge) for the verdict and
//! hands `Control` the stance (which sides run on it). Fail safe: the gate
//! starts closed when `[schema]` is configured, and an unreadable version
//! closes it, unless no side supported the version last read (then nobody
//! moves). Each change is audited, logged and notified once, not every read.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_postgres::SimpleQueryMessage;

use crate::config::SchemaConfig;
use crate::control::pg::{self, PgSlot};
use crate::control::state::{now_rfc3339, Actor};
use crate::migration::{Reading, Stance, Tool};
use crate::Shared;

/// What `/status.schema` shows (`None`: no `[schema]`).
#[derive(Default)]
pub struct GateBoard(Mutex<Option<Value>>);

impl GateBoard {
    pub fn view(&self) -> Option<Value> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, view: Option<Value>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = view;
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
                if shared.control.set_schema(true, None, "") != before {
                    shared.control.effects().audit(
                        &Actor::Config,
                        "schema",
                        json!({ "new": "open", "why": "no [schema]" }),
                    );
                }
                shared.schema.set(None);
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

async fn evaluate(shared: &Shared, slot: &PgSlot, schema: &SchemaConfig) {
    let before = shared.control.stance();
    // An unreadable version (or none yet) closes the gate (fail safe) and
    // leaves stable's support as last read: if no side supported the last
    // version read, nobody moves on a failed read either.
    let (new_ready, past_stable, mut view) = match read(slot, schema).await {
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
    let version = view["version"].as_str().unwrap_or_default().to_string();
    let now = shared.control.set_schema(new_ready, past_stable, &version);
    view["no_side_supports"] = json!(now == Stance::Neither);
    if now == Stance::Neither {
        view["held"] = json!(shared.control.state().schema_hold.map(|h| h.version));
    }
    announce(shared, before, now, &view);
    shared.metrics.schema_ready.set(now.new_ready() as i64);
    shared.metrics.schema_unsupported.set((now == Stance::Neither) as i64);
    shared.schema.set(Some(view));
}

/// Audit, log and notify a change of what the schema allows, once.
fn announce(shared: &Shared, before: Stance, now: Stance, view: &Value) {
    let (version, why) = (&view["version"], view["why"].as_str().unwrap_or("new_requires met").to_string());
    let route = shared.control.route();
    let (state, text) = if now == Stance::Neither && before != Stance::Neither {
        let text = format!(
            "NO SIDE SUPPORTS the schema, nobody moves (the split stays as it was, {}% on new): {why}.              Roll forward or restore the schema, or list the version in new_requires or stable_supports",
            route.percent
        );
        ("no_side_supports", text)
    } else if before == Stance::Neither && now != Stance::Neither {
        let gate = if now.new_ready() { "open" } else { "closed" };
        (gate, format!("schema {version} is supported again, the usual rules resume: schema gate {gate}"))
    } else if before.new_ready() != now.new_ready() && now != Stance::Neither {
        if now.new_ready() {
            ("open", format!("schema gate OPEN at version {version}: new gets its percent"))
        } else {
            ("closed", format!("schema gate CLOSED, nobody on new: {why}"))
        }
    } else {
        return;
    };
    tracing::warn!(gate = state, %version, why, "schema gate changed");
    shared.control.effects().audit(
        &Actor::Config,
        "schema",
        json!({ "new": state, "version": version, "why": why, "error": view["error"],
                "no_side_supports": now == Stance::Neither }),
    );
    shared.control.effects().notice(
        "schema",
        text,
        &Actor::Config,
        json!({ "gate": state, "version": version, "no_side_supports": now == Stance::Neither }),
    );
}
