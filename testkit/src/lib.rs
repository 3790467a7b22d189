//! Fixtures every Roost test binary needs, written once: the proxy's and
//! the worker's integration tests (and the load tests) build their fleets
//! on these.
//!
//! # Layout
//!
//! - [`app`]: an application's worker binary in a fleet, and a JSON
//!   client through its proxy (the examples' tests).
//! - [`bins`]: the workspace's binaries under test, built on demand.
//! - [`dir`]: a fresh temp dir per test, removed on drop.
//! - [`fleet`]: N workers on one store and a proxy in front of them,
//!   driven by signals, restarts and store cuts ([`relay`]).
//! - [`http`]: the HTTP client of the fixtures and tests.
//! - [`metrics`]: a sample from Prometheus text.
//! - [`net`]: loopback ports no other fixture of the process was given,
//!   and whether something listens on one.
//! - [`poll`]: polling until a condition holds, within a limit.
//! - [`postgres`]: a throwaway Postgres cluster (or `DATABASE_URL`);
//!   [`postgres_tls`]: one that speaks TLS and wants a password.
//! - [`process`]: running a command to completion, its output in the
//!   error; child processes reaped on drop.
//! - [`relay`]: a TCP relay to the store that can be cut with its sockets
//!   open.
//!
//! Fixtures panic with a message naming what failed: they run inside tests,
//! where a panic is the failure report.

#![allow(clippy::unwrap_used)] // tests' fixtures: a panic is the report

pub mod app;
pub mod bins;
pub mod dir;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod net;
pub mod poll;
pub mod postgres;
pub mod postgres_tls;
pub mod process;
pub mod relay;

pub use dir::{open_log, TempDir};
pub use net::{accepts, free_port, try_free_port};
pub use postgres::{postgres_url, Cluster};
pub use postgres_tls::{tls_cluster, TlsCluster};
