//! What an operator talks to: the admin API on its own listener ([`api`]),
//! the web console it serves at `/ui` ([`console`]) and `grayshift ctl`, its
//! command-line client ([`ctl`]); on the same listener, the flags API
//! for workers ([`flags`]).

pub mod api;
pub mod console;
pub mod ctl;
pub mod exposure;
pub mod flags;
