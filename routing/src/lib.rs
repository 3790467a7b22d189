//! Routing pieces shared by Roost's proxy and workers: pure logic, no
//! network I/O (except the `postgres` feature's connector).
//!
//! # Layout
//!
//! - [`hrw`]: weighted rendezvous (highest random weight) hashing with a
//!   stable, seeded 64-bit hash. Every proxy (and later every worker) with the
//!   same seed and the same live set computes the same owner for a key.
//! - [`headers`]: names of the HTTP headers both sides of the proxy use.
//! - [`path`]: the one normal spelling of a request path, which the proxy
//!   routes and forwards and a worker insists on.
//! - [`config_file`]: how both binaries load YAML config, with errors that
//!   name the file, the line and the field.
//! - [`registry`]: how both sides read the live workers from the store.
//! - [`pem`]: PEM certificate files, read the same way for the proxy's TLS
//!   listener and a Postgres `sslrootcert`.
//! - [`build_info`]: the version and commit both report in
//!   `roost_build_info`.
//! - `postgres` (with the `postgres` feature): store URLs read as libpq
//!   reads them (`sslmode`, `sslrootcert`, `PGPASSWORD`, `.pgpass`) and the
//!   rustls connector both reach Postgres through.
//! - `fuzzing` (with the `fuzzing` feature): replaying kept fuzz inputs in both crates' tests.

pub mod build_info;
pub mod config_file;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod headers;
pub mod hrw;
pub mod path;
pub mod pem;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod registry;

pub use hrw::{Member, Ring, RingError, Seed};
