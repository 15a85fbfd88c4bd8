//! The operator's changes as they travel: the JSON bodies of the admin
//! API's change endpoints (docs/src/admin-api.md), which `grayshift ctl`
//! sends and the console builds the same way. Each turns into a
//! [`Change`] once its fields are checked; a field that does not check is
//! a 400 with the message of [`RequestError`].

use serde::{Deserialize, Serialize};

use super::Change;
use crate::config::Level;
use crate::control::release::ramp::Command;

/// `PUT /percent`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPercent {
    pub percent: i64,
}

/// `POST /rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub level: String,
    pub reason: Option<String>,
    /// Send users to stable even past the point of no return.
    #[serde(default)]
    pub force: bool,
}

/// `POST /ramp`: becomes a [`Change::Ramp`] once the ramp's plan and the
/// conditions are known (`control::release::driver::command`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub action: String,
}

/// `POST /resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    pub level: String,
    #[serde(default)]
    pub confirm: bool,
}

/// A request field that does not check (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// The API takes exactly `L1`..`L3`.
pub fn level(text: &str) -> Result<Level, RequestError> {
    Level::parse(text).ok_or_else(|| RequestError(format!("level must be \"L1\", \"L2\" or \"L3\", got {text:?}")))
}

impl SetPercent {
    pub fn change(&self) -> Change {
        Change::SetPercent { percent: self.percent }
    }
}

impl Rollback {
    /// `hook`: `rollback.hook` is configured.
    pub fn change(&self, hook: bool) -> Result<Change, RequestError> {
        Ok(Change::Activate {
            level: level(&self.level)?,
            reason: self.reason.clone().unwrap_or_else(|| "manual rollback".into()),
            force: self.force,
            hook,
        })
    }
}

impl Resume {
    pub fn change(&self) -> Result<Change, RequestError> {
        Ok(Change::Resume { level: level(&self.level)?, confirm: self.confirm })
    }
}

impl Ramp {
    pub fn command(&self) -> Result<Command, RequestError> {
        Command::parse(&self.action).ok_or_else(|| {
            RequestError(format!(
                "action must be \"start\", \"pause\", \"resume\", \"promote\" or \"abort\", got {:?}",
                self.action
            ))
        })
    }
}
