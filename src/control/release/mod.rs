//! Migration-aware release: the schema gate ([`gate`], its verdicts in
//! [`crate::migration`]) and the progressive ramp's decisions ([`ramp`]).
//! The verdicts and the decisions are pure; the tasks that read the
//! database and drive the ramp sit beside the rule engine.

pub mod driver;
pub mod gate;
pub mod ramp;
