//! The worker's HTTP side: the accept loops with graceful drain, and the API.
//!
//! - [`server`]: the accept loops of the public and the admin listener; on
//!   shutdown fails readiness, serves on for a short delay, stops accepting
//!   on both, lets in-flight requests finish, then the caller drains the
//!   runtime.
//! - [`api`]: the routes, who may reach each (which listener, which
//!   credential), request parsing and response building.
//! - [`requests`]: request bodies and path segments parsed into entity
//!   requests (pure, shared with the fuzz targets).
//! - [`body`]: bounded body reading (and discarding after a 413) and JSON
//!   parsing.

pub mod api;
pub mod body;
pub mod requests;
pub mod server;

pub use api::{Api, Surface};
pub use server::{serve, Drain, Listeners};
