//! Where entity state is kept between owners: one trait, two stores.
//!
//! The store holds, per entity: key, `epoch`, `owner`, `version`, state
//! bytes. Two operations are all the runtime needs, and each is one
//! statement, so each is atomic on its own:
//!
//! - [`Store::claim`]: bump the epoch, set the owner, return the state.
//! - [`Store::flush`]: write a batch of rows, each guarded by the epoch it
//!   was claimed with; rows whose epoch moved on are *fenced*: not written,
//!   and reported back so their entity is dropped from memory.
//!
//! Stores: [`postgres`] (tokio-postgres + deadpool) and [`sqlite`] (rusqlite,
//! WAL; several worker processes on one machine may share one file).

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

/// The store's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The new epoch: every write by this owner is guarded by it.
    pub epoch: i64,
    /// Version of the stored state (0 for a key never written).
    pub version: i64,
    /// Stored state bytes; `None` for a key never written.
    pub state: Option<Vec<u8>>,
}

/// One entity's state to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushRow {
    pub key: String,
    /// The epoch of the claim the state was built under.
    pub epoch: i64,
    pub version: i64,
    pub state: Vec<u8>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or the statement failed; retrying later
    /// may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store URL or schema is unusable; retrying will not help.
    #[error("store misconfigured: {0}")]
    Fatal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A place to keep entity state. Implementations must make each call one
/// atomic statement (or transaction).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Claim `key` for `owner`: create it if new, bump its epoch, set the
    /// owner, and return the new epoch with the stored version and state.
    async fn claim(&self, key: &str, owner: &str) -> StoreResult<Claim>;

    /// Write `rows` in one atomic batch, each only if the stored epoch still
    /// equals the row's. Returns the indices of the rows *not* written
    /// (fenced).
    async fn flush(&self, rows: Arc<[FlushRow]>) -> StoreResult<Vec<usize>>;

    /// Read a key's stored `(epoch, version, state)` without claiming it (for
    /// tests and tools).
    async fn peek(&self, key: &str) -> StoreResult<Option<Claim>>;

    /// A short name for logs: `postgres` or `sqlite`.
    fn kind(&self) -> &'static str;
}

/// Open the store named by `url`: `postgres://…` or `sqlite://PATH`.
/// Creates the schema if it is missing.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::connect(url).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
    } else {
        Err(StoreError::Fatal(format!(
            "unknown store URL {url:?}: use postgres://… or sqlite://PATH"
        )))
    }
}
