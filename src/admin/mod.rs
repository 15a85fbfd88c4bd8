//! What an operator talks to: the admin API on its own listener ([`api`])
//! and `grayshift ctl`, its command-line client ([`ctl`]).

pub mod api;
pub mod ctl;
pub mod exposure;
