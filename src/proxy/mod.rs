//! The request path: what a request walks through, from the listener to
//! the upstream and back. [`handle`] puts the steps in order; each step
//! lives in its own module.

pub mod body;
pub mod conn;
pub mod error;
pub mod forward;
pub mod framing;
pub mod h1;
pub mod h1_server;
pub mod handle;
pub mod hop_by_hop;
pub mod path;
pub mod rewrite;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod tls;
pub mod underscore;
pub mod upstream;
