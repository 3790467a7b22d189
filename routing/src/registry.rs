//! The workers table as both sides read it: which workers are live.
//!
//! Workers register themselves in `roost_workers` (the worker's `store`
//! module writes it); the proxy's discovery and the workers' own view of
//! their peers (for entity-to-entity calls) read it with these statements,
//! so both route over the same live set. A worker is live while its status
//! is `live` and its lease has not run out.

/// Postgres channel every worker `NOTIFY`s after it goes live or changes
/// status; readers of the live set `LISTEN` on it to re-read at once.
pub const FLEET_CHANNEL: &str = "roost_fleet";

/// Postgres: `(id, addr)` of every live worker.
pub const LIVE_POSTGRES: &str =
    "SELECT id, addr FROM roost_workers WHERE status = 'live' AND lease_expires_at > now()";

/// SQLite: the same; `?1` is now in milliseconds since the Unix epoch (the
/// lease is kept on the shared wall clock).
pub const LIVE_SQLITE: &str =
    "SELECT id, addr FROM roost_workers WHERE status = 'live' AND lease_expires_ms > ?1";
