//! The rollback rule engine (SPEC §4). Placeholder while the engine lands.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::config::RuleConfig;
use crate::control::LevelEvent;
use crate::Shared;

pub struct RuleBoard;

impl RuleBoard {
    pub fn new(_rules: &[RuleConfig]) -> Self {
        RuleBoard
    }
    pub fn update(&self, _rules: &[RuleConfig]) {}
    pub fn view(&self) -> Value {
        Value::Array(vec![])
    }
}

pub fn spawn(_shared: Arc<Shared>, _events: mpsc::UnboundedReceiver<LevelEvent>, _shutdown: watch::Receiver<bool>) {}
