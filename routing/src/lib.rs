//! Routing pieces shared by Roost's proxy and workers. Pure: no I/O.
//!
//! # Layout
//!
//! - [`hrw`]: weighted rendezvous (highest random weight) hashing with a
//!   stable, seeded 64-bit hash. Every proxy (and later every worker) with the
//!   same seed and the same live set computes the same owner for a key.
//! - [`headers`]: names of the HTTP headers both sides of the proxy use.

pub mod headers;
pub mod hrw;

pub use hrw::{Member, Ring, RingError, Seed};
