//! The worker's HTTP side: the accept loops with graceful drain, and the API.
//!
//! - [`server`]: the accept loops of the public and the admin listener; on
//!   shutdown fails readiness, serves on for a short delay, stops accepting
//!   on both, lets in-flight requests finish, then the caller drains the
//!   runtime.
//! - [`api`]: who may reach each route (which listener, which
//!   credential), request options, and response building.
//! - [`routes`]: which route a request is for: the fixed ones and every
//!   registered kind's, by the generic scheme and the kinds' aliases.
//! - [`body`]: bounded body reading (and discarding after a 413).

pub mod api;
pub mod body;
pub mod routes;
pub mod server;

pub use api::{Api, Surface};
pub use server::{serve, Drain, Listeners};
