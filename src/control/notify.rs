//! `[[notify]]`: every rollback level change, schema gate change, blocked
//! rollback and ramp step is POSTed to each webhook, fire and forget (each
//! call in its own task with the webhook's timeout; nothing waits for it).
//!
//! `format = "json"` (the default) sends grayshift's document: `event`,
//! `text` and the numbers (level, percent, actor, time, group). `format =
//! "slack"` sends `{"text": …}`, what a Slack (or Mattermost, Rocket.Chat)
//! incoming webhook shows as one message: the same sentence, no link.

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::client;
use crate::config::{Level, NotifyFormat};
use crate::control::state::{now_rfc3339, Event, LevelEvent};
use crate::Shared;

pub fn post(shared: &Shared, event: &Event) {
    let config = shared.config();
    if config.notify.is_empty() {
        return;
    }
    let (mut doc, text) = match event {
        Event::Level(e) => level_doc(e),
        Event::Notice(n) => {
            let mut doc = json!({ "event": n.event, "actor": n.actor });
            if let (Some(obj), Value::Object(extra)) = (doc.as_object_mut(), n.detail.clone()) {
                obj.extend(extra);
            }
            (doc, n.text.clone())
        }
    };
    let state = shared.control.state();
    let route = shared.control.route();
    let text = format!(
        "grayshift {}: {text} (new: {}% of users, desired {}%)",
        config.split.group, route.percent, state.desired_percent
    );
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("text".into(), json!(text));
        obj.insert("time".into(), json!(now_rfc3339()));
        obj.insert("rollback_level".into(), json!(state.highest_level().map_or(0, |l| l.number())));
        obj.insert("percent".into(), json!({ "desired": state.desired_percent, "effective": route.percent }));
        obj.insert("group".into(), json!(config.split.group));
    }
    let json_body = Bytes::from(doc.to_string());
    let slack_body = Bytes::from(json!({ "text": text }).to_string());
    for target in &config.notify {
        let body = match target.format {
            NotifyFormat::Json => json_body.clone(),
            NotifyFormat::Slack => slack_body.clone(),
        };
        let (url, ca, timeout) = (target.webhook.clone(), target.ca.clone(), target.timeout);
        tokio::spawn(async move {
            let result = client::request(Method::POST, &url, ca.as_deref(), &[], Some(body), timeout).await;
            // A webhook URL can be a secret (Slack's is): log its host only.
            let url = client::redacted(&url);
            match result {
                Ok((status, _)) if status.is_success() => tracing::debug!(url, %status, "notify webhook delivered"),
                Ok((status, _)) => tracing::warn!(url, %status, "notify webhook answered with an error"),
                Err(e) => tracing::warn!(url, error = %e, "notify webhook failed"),
            }
        });
    }
}

/// A level change: the document the JSON format always had, and its sentence.
fn level_doc(e: &LevelEvent) -> (Value, String) {
    let what = match e.level {
        Level::L1 => "error rate",
        Level::L2 => "database load: new-feature entry points shed",
        Level::L3 => "data inconsistency",
    };
    let text = match (e.active, &e.blocked) {
        (true, Some(why)) => format!(
            "{} rollback BLOCKED ({what}), users stay where they are: {why}. Reason it fired: {} (by {}). \
             To send users to stable anyway: grayshift ctl rollback {} --force",
            e.level, e.reason, e.actor, e.level
        ),
        (true, None) if e.level == Level::L2 => format!("L2 ACTIVE ({what}): {} (by {})", e.reason, e.actor),
        (true, None) => {
            format!("{} rollback ACTIVE ({what}), everyone on stable: {} (by {})", e.level, e.reason, e.actor)
        }
        (false, _) => format!("{} resumed by {}", e.level, e.actor),
    };
    let doc = json!({
        "event": if e.active { "rollback" } else { "resume" },
        "level": e.level,
        "active": e.active,
        "reason": e.reason,
        "actor": e.actor,
        "blocked": e.blocked.is_some(),
        "blocked_reason": e.blocked,
    });
    (doc, text)
}
