//! `roost-worker`: keeps each user's state in memory, applies the user's
//! requests one at a time, and flushes batches to Postgres or SQLite, fenced
//! by epoch so a stale owner can never overwrite a newer one. See DESIGN.md
//! ("Ownership").
//!
//! # Layout
//!
//! - [`run`]: the entry point: start a worker (store, lease, runtime,
//!   calls, HTTP), serve until told to stop, drain; [`cli`]: the same
//!   behind a command line and the signals, which the `roost-worker`
//!   binary (and an application's) is.
//! - [`entity`]: the trait every entity type implements (start here to write
//!   your own), and how its requests are parsed from actions.
//! - [`kinds`]: the registry of the entity types a worker serves, checked
//!   against the config at start.
//! - [`runtime`]: the entity map, per-entity serial execution, the flusher,
//!   passivation and drain.
//! - [`ownership`]: claims and epochs, the lease (whether this worker may
//!   serve), hand-overs and revalidation after a lapse, and the invariants
//!   they uphold.
//! - [`alarms`]: waking the entities whose alarms are due, on whichever
//!   worker owns them.
//! - [`calls`]: entity-to-entity calls: routed by HRW over the live
//!   workers, retried with the same idempotency id.
//! - [`store`]: the `Store` and `Registry` traits; Postgres and SQLite.
//! - [`http`]: the accept loop, the routes (the generic scheme every kind
//!   is served by) and the HTTP API.
//! - [`engine`], [`stateless`]: what the API executes requests with: the
//!   runtime, or the Postgres-per-request baseline benchmarks compare with.
//! - [`config`], [`metrics`]: what the worker is told and what it reports.
//! - `fuzzing` (with the `fuzzing` feature): entry points of the fuzz targets and their regression
//!   tests.

pub mod alarms;
pub mod calls;
pub mod cli;
pub mod config;
pub mod engine;
pub mod entity;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod kinds;
pub mod metrics;
pub mod ownership;
pub mod run;
pub mod runtime;
pub mod stateless;
pub mod store;
