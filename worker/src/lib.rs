//! `roost-worker`: the process that will hold each user's state in memory.
//!
//! For now it is the test worker the proxy is built against: it answers
//! `/healthz` and every other path with 200 and `x-roost-worker: ID`, echoing
//! the routing key the proxy forwarded. The entity runtime comes next
//! (see `DESIGN.md`, "Ownership").
//!
//! # Layout
//!
//! - [`server`]: accept loop and shutdown.
//! - [`routes`]: what each path answers.

pub mod routes;
pub mod server;

pub use server::{run, WorkerIdentity};
