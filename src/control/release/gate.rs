//! The schema gate's task: every `schema.interval` it reads the database's
//! migration version (per tool, over the shared PostgreSQL connection code),
//! asks [`Bounds::judge`](crate::migration::Bounds::judge) for the verdict and
//! opens or closes the gate in `Control`. Fail safe: the gate starts closed
//! when `[schema]` is configured, and an unreadable version closes it.
//! Each opening and closing is audited and logged once, not every read.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_postgres::SimpleQueryMessage;

use crate::config::SchemaConfig;
use crate::control::pg::{self, PgSlot};
use crate::control::state::{now_rfc3339, Actor};
use crate::migration::{Reading, Tool};
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

/// Run until shutdown. Follows reloads: a `[schema]` added later starts
/// reading, one removed opens the gate.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let slot = PgSlot::default();
    loop {
        let config = shared.config();
        let wait = match &config.schema {
            None => {
                if shared.control.set_schema_gate(true) {
                    shared.control.audit(&Actor::Config, "schema", json!({ "new": "open", "why": "no [schema]" }));
                }
                shared.schema.set(None);
                shared.metrics.schema_ready.set(1);
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
    let (open, view) = match read(slot, schema).await {
        Ok(reading) => {
            let v = schema.bounds.judge(&reading);
            // An unreadable version changes nothing here: the closed gate
            // already keeps everyone on stable.
            shared.control.set_stable_support(
                (!v.stable_supported).then(|| {
                    format!("stable does not support schema {}; roll forward or restore the schema", v.version)
                }),
            );
            let view = json!({
                "tool": schema.bounds.tool, "version": v.version, "new_ready": v.new_ready,
                "stable_supported": v.stable_supported, "error": Value::Null, "why": v.why, "read_at": now_rfc3339(),
            });
            (v.new_ready, view)
        }
        Err(e) => {
            let view = json!({
                "tool": schema.bounds.tool, "version": Value::Null, "new_ready": false,
                "stable_supported": false, "error": e, "why": "the version could not be read: gate closed (fail safe)",
                "read_at": now_rfc3339(),
            });
            (false, view)
        }
    };
    if shared.control.set_schema_gate(open) {
        let state = if open { "open" } else { "closed" };
        let why = view["why"].as_str().unwrap_or("new_requires met").to_string();
        tracing::warn!(gate = state, version = %view["version"], why, "schema gate changed");
        shared.control.audit(
            &Actor::Config,
            "schema",
            json!({ "new": state, "version": view["version"], "why": why, "error": view["error"] }),
        );
        let text = if open {
            format!("schema gate OPEN at version {}: new gets its percent", view["version"])
        } else {
            format!("schema gate CLOSED, nobody on new: {why}")
        };
        shared.control.notice("schema", text, &Actor::Config, json!({ "gate": state, "version": view["version"] }));
    }
    shared.metrics.schema_ready.set(open as i64);
    shared.schema.set(Some(view));
}
