//! Migration-aware release: the schema gate's verdict ([`schema`]) and the
//! progressive ramp's decisions ([`ramp`]). Both are pure; the tasks that
//! read the database and drive the ramp sit beside the rule engine.

pub mod driver;
pub mod gate;
pub mod ramp;
pub mod schema;
