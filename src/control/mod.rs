//! The run-time state and what decides it: the desired percent and the
//! rollback levels ([`state`]), every change to them and the one function
//! that decides it ([`change`]), where they are kept ([`store`]: the state
//! file or the fleet's etcd) and what a change makes known ([`effects`]);
//! the rule engine that moves them by itself ([`rules`]), and the hot
//! reload of the config file ([`reload`]).

pub mod change;
pub mod effects;
pub mod fleet;
pub mod ledger;
pub mod notify;
pub mod pg;
pub mod release;
pub mod reload;
pub mod rules;
pub mod state;
pub mod store;
