//! The worker's HTTP side: the accept loop with graceful drain, and the API.
//!
//! - [`server`]: accept loop; on shutdown fails readiness, serves on for a
//!   short delay, stops accepting, lets in-flight requests finish, then the
//!   caller drains the runtime.
//! - [`api`]: the routes, request parsing and response building.
//! - [`body`]: bounded body reading.

pub mod api;
pub mod body;
pub mod server;

pub use api::Api;
pub use server::{serve, Drain};
