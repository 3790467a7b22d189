//! The worker's HTTP side: the accept loop with graceful drain, and the API.
//!
//! - [`server`]: accept loop; on shutdown fails readiness, serves on for a
//!   short delay, stops accepting, lets in-flight requests finish, then the
//!   caller drains the runtime.
//! - [`api`]: the routes, request parsing and response building.
//! - [`requests`]: request bodies and path segments parsed into entity
//!   requests (pure, shared with the fuzz targets).
//! - [`body`]: bounded body reading and JSON parsing.

pub mod api;
pub mod body;
pub mod requests;
pub mod server;

pub use api::Api;
pub use server::{serve, Drain};
