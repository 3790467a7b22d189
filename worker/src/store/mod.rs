//! Where entity state and fleet membership are kept: two traits, two
//! stores.
//!
//! [`Store`] holds, per entity: key, `epoch`, `owner`, `version`, state
//! bytes. Each call is one statement (or transaction), so each is atomic:
//!
//! - [`Store::claim`]: bump the epoch, set the owner, return the state; only
//!   when the current owner is this worker, has released the entity, or is
//!   no longer alive (its liveness lock is free or its lease has expired).
//!   Otherwise the answer names the live owner, to be asked for a hand-over.
//! - [`Store::flush`]: write a batch of rows, each guarded by the epoch it
//!   was claimed with; rows whose epoch moved on are *fenced*: not written,
//!   and reported back so their entity is dropped from memory.
//! - [`Store::release`]: the owner gives an entity up after flushing it.
//! - [`Store::due_alarms`]: entities whose earliest alarm is due (each
//!   flushed row carries it), for whichever worker owns them to wake.
//!
//! [`Registry`] is one worker's membership: a row in the workers table with
//! a lease renewed by heartbeat, and a liveness lock held for as long as the
//! process lives (a Postgres session advisory lock; an `flock` for SQLite),
//! plus the hand-over requests addressed to it.
//!
//! Stores: [`postgres`] (tokio-postgres + deadpool) and [`sqlite`] (rusqlite,
//! WAL; several worker processes on one machine may share one file).

pub mod membership;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// The state a claim returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The new epoch: every write by this owner is guarded by it.
    pub epoch: i64,
    /// Version of the stored state (0 for a key never written).
    pub version: i64,
    /// Stored state bytes; `None` for a key never written.
    pub state: Option<Vec<u8>>,
}

/// The store's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(Claim),
    /// Another worker owns the entity and is alive: ask it to hand over.
    Owned {
        owner: String,
    },
}

/// One entity's state to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushRow {
    /// The entity's key, shared with its activation (no copy per change).
    pub key: std::sync::Arc<str>,
    /// The epoch of the claim the state was built under.
    pub epoch: i64,
    pub version: i64,
    pub state: Vec<u8>,
    /// When the entity's earliest alarm is due (wall-clock milliseconds),
    /// the store's index of entities to wake.
    pub alarm_at: Option<i64>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, or could not run the statement
    /// right now (shutting down, out of connections, busy); retrying later
    /// may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store ran the statement and refused it (a constraint, a
    /// trigger, a value it cannot take): the same statement fails again.
    #[error("store refused the statement: {0}")]
    Refused(String),
    /// The store URL or schema is unusable; retrying will not help.
    #[error("store misconfigured: {0}")]
    Fatal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A place to keep entity state. Implementations must make each call one
/// atomic statement (or transaction).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Claim `key` for `owner`: create it if new, or take it over if its
    /// owner is `owner`, released it, or is not alive; bump its epoch, set
    /// the owner, and return the new epoch with the stored version and
    /// state. A live owner is named instead.
    async fn claim(&self, key: &str, owner: &str) -> StoreResult<ClaimOutcome>;

    /// Ask `owner` to hand `key` over (flush, release, forget it).
    async fn ask_handover(&self, owner: &str, key: &str) -> StoreResult<()>;

    /// Give `key` up if `owner` still owns it (after flushing it): anyone
    /// may claim it at once afterwards.
    async fn release(&self, key: &str, owner: &str) -> StoreResult<()>;

    /// Give up everything `owner` owns (the end of a drain, when all is
    /// flushed).
    async fn release_all(&self, owner: &str) -> StoreResult<u64>;

    /// The stored epochs of `keys` (missing keys are left out).
    async fn epochs(&self, keys: &[String]) -> StoreResult<HashMap<String, i64>>;

    /// Write `rows` in one atomic batch, each only if the stored epoch still
    /// equals the row's. Returns the indices of the rows *not* written
    /// (fenced).
    async fn flush(&self, rows: Arc<[FlushRow]>) -> StoreResult<Vec<usize>>;

    /// Up to `limit` keys whose earliest alarm is due at `now_ms`
    /// (wall-clock milliseconds), earliest first.
    async fn due_alarms(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<String>>;

    /// Read a key's stored `(epoch, version, state)` without claiming it (for
    /// tests and tools).
    async fn peek(&self, key: &str) -> StoreResult<Option<Claim>>;

    /// `(id, addr)` of every live worker (the set calls are routed over).
    async fn live_workers(&self) -> StoreResult<Vec<(String, String)>>;

    /// A short name for logs: `postgres` or `sqlite`.
    fn kind(&self) -> &'static str;
}

/// A worker's entry in the workers table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// Where the proxy reaches it.
    pub addr: String,
}

/// What the workers table says a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    /// Serving.
    Live,
    /// Shutting down: out of the proxies' live set, still answering
    /// hand-over requests.
    Draining,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Live => "live",
            MemberStatus::Draining => "draining",
        }
    }
}

/// How a lease renewal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The liveness lock was held all along since the last renewal.
    Continuous,
    /// The lock had been lost (the store connection dropped) and was taken
    /// again: others may have claimed entities meanwhile.
    Rejoined,
}

/// One worker's membership of the fleet, kept in the store.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Take the liveness lock (waiting up to `patience` for an earlier
    /// process with the same id to let go of it), then register as live
    /// with a lease of `lease`. Returns the new generation.
    async fn join(&self, member: &Member, lease: Duration, patience: Duration) -> StoreResult<i64>;

    /// Extend the lease to `lease` from now (the store's clock), taking the
    /// liveness lock again if it was lost.
    async fn renew(&self, lease: Duration) -> StoreResult<Renewal>;

    /// Announce a status change (draining leaves the proxies' live set).
    async fn set_status(&self, status: MemberStatus) -> StoreResult<()>;

    /// Keys other workers asked this one to hand over. Call once.
    fn handover_requests(&self) -> tokio::sync::mpsc::UnboundedReceiver<String>;

    /// Woken when another worker goes live or changes status, where the
    /// store can tell (Postgres NOTIFY); `None`: only periodic reads.
    fn fleet_changes(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// The holding of the liveness lock (a number that changes each time
    /// the lock is taken again) if the lock is held right now; `None` from
    /// the moment its connection is known to be gone. A lease validated
    /// under one holding is not valid under the next: entities may have
    /// been claimed in between.
    fn lock_held(&self) -> Option<u64>;
}

/// A store, and the registry this worker keeps in it.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub registry: Arc<dyn Registry>,
}

/// Open the store named by `url`: `postgres://…` or `sqlite://PATH`.
/// Creates the schema if it is missing.
pub async fn open(url: &str) -> StoreResult<Opened> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::connect(url).await?;
        Ok(Opened {
            registry: Arc::new(store.registry()),
            store: Arc::new(store),
        })
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(path).await?;
        Ok(Opened {
            registry: Arc::new(store.registry()),
            store: Arc::new(store),
        })
    } else {
        Err(StoreError::Fatal(format!(
            "unknown store URL {url:?}: use postgres://… or sqlite://PATH"
        )))
    }
}
