//! The SQLite store, the embedded default: rusqlite (bundled SQLite) in WAL
//! mode, so several worker processes on one machine can share one file.
//!
//! SQLite serialises writers itself; each process keeps one connection behind
//! a mutex and runs statements on tokio's blocking pool. A claim is one
//! `BEGIN IMMEDIATE` transaction: read the owner, decide whether it is alive
//! (see [`registry`]), then the `INSERT … ON CONFLICT DO UPDATE … RETURNING`;
//! a flush is one `BEGIN IMMEDIATE` transaction running the epoch-guarded
//! `UPDATE` per row (there is no network round trip to save, so one
//! statement per row costs nothing extra). Batches the flusher has in
//! flight together take the connection one after the other, each in its
//! own transaction. `synchronous = FULL`: a committed flush survives a
//! crash of the process and of the machine.
//!
//! # Opening
//!
//! Any number of workers may start at once on a new or existing file. The
//! first switch to WAL needs the file to itself, and SQLite answers a
//! second process trying it meanwhile with `database is locked` at once,
//! without waiting out the busy timeout. So setting the file up (WAL, then
//! the schema in one `BEGIN IMMEDIATE` transaction) is serialised between
//! processes by an `flock` on `<db>.lock`, as the Postgres store serialises
//! its schema with an advisory lock; and an attempt that still finds the
//! file busy is retried with backoff for `SETUP_PATIENCE`. Every
//! statement waits up to `BUSY_TIMEOUT` for another process's write lock.

pub mod registry;

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{Claim, ClaimOutcome, FlushRow, Store, StoreError, StoreResult};

/// One write transaction, so a worker creating the schema never meets
/// another's half-made one.
const SCHEMA: &str = "
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS roost_entities (
    key        TEXT PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    owner      TEXT NOT NULL,
    version    INTEGER NOT NULL DEFAULT 0,
    state      BLOB,
    updated_at INTEGER NOT NULL DEFAULT (unixepoch()),
    alarm_at   INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roost_workers (
    id               TEXT PRIMARY KEY,
    addr             TEXT NOT NULL,
    lock_id          INTEGER NOT NULL UNIQUE,
    generation       INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL DEFAULT 'live',
    lease_expires_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roost_handover (
    owner TEXT NOT NULL,
    key   TEXT NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
COMMIT;";

const CLAIM: &str = "
INSERT INTO roost_entities (key, epoch, owner) VALUES (?1, 1, ?2)
ON CONFLICT (key) DO UPDATE SET epoch = epoch + 1, owner = excluded.owner
RETURNING epoch, version, state";

/// Files made before alarms existed get the column (SQLite has no `ADD
/// COLUMN IF NOT EXISTS`: [`set_up`] asks first), then the index.
const ADD_ALARMS: &str = "ALTER TABLE roost_entities ADD COLUMN alarm_at INTEGER";
const ALARMS_INDEX: &str = "CREATE INDEX IF NOT EXISTS roost_entities_alarms \
     ON roost_entities (alarm_at) WHERE alarm_at IS NOT NULL";

const FLUSH_ROW: &str = "
UPDATE roost_entities SET state = ?4, version = ?3, alarm_at = ?5, updated_at = unixepoch()
WHERE key = ?1 AND epoch = ?2";

const DUE_ALARMS: &str =
    "SELECT key FROM roost_entities WHERE alarm_at <= ?1 ORDER BY alarm_at LIMIT ?2";

const OWNER: &str = "SELECT owner FROM roost_entities WHERE key = ?1";

const ASK_HANDOVER: &str = "INSERT OR IGNORE INTO roost_handover (owner, key) VALUES (?1, ?2)";

const RELEASE: &str = "UPDATE roost_entities SET owner = '' WHERE key = ?1 AND owner = ?2";

const RELEASE_ALL: &str = "UPDATE roost_entities SET owner = '' WHERE owner = ?1";

const EPOCH: &str = "SELECT epoch FROM roost_entities WHERE key = ?1";

const PEEK: &str = "SELECT epoch, version, state FROM roost_entities WHERE key = ?1";

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long opening keeps trying while the file is busy (other workers
/// setting it up, or writing); then the worker gives up and says why.
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// First pause between attempts to set the file up; doubles up to
/// [`SETUP_RETRY_MAX`].
const SETUP_RETRY_MIN: Duration = Duration::from_millis(5);
const SETUP_RETRY_MAX: Duration = Duration::from_millis(250);

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    /// One connection; a std mutex because it is only locked on the blocking
    /// pool, never across an `.await`.
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Where the workers' liveness lock files are.
    locks: registry::LockFiles,
}

impl SqliteStore {
    /// Open (creating the file and its folder if needed) and set up WAL and
    /// the schema.
    pub async fn open(path: &str) -> StoreResult<Self> {
        let path = PathBuf::from(path);
        let opened = path.clone();
        let connection = tokio::task::spawn_blocking(move || open_connection(&opened))
            .await
            .map_err(|e| StoreError::Fatal(format!("sqlite open task failed: {e}")))??;
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            locks: registry::LockFiles::beside(&path),
            path,
        })
    }

    /// This worker's registry (it shares the store's connection).
    pub fn registry(&self) -> registry::SqliteRegistry {
        registry::SqliteRegistry::new(self.clone_handle(), self.locks.clone())
    }

    fn clone_handle(&self) -> SqliteStore {
        SqliteStore {
            connection: Arc::clone(&self.connection),
            path: self.path.clone(),
            locks: self.locks.clone(),
        }
    }

    /// Run `f` with the connection on the blocking pool.
    pub(crate) async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut connection).map_err(|e| unavailable(&path, e))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite task failed: {e}")))?
    }
}

/// Why one attempt to set the file up failed.
enum SetupError {
    /// Another process holds the file or its setup lock: try again.
    Busy(String),
    /// Trying again will not help (not a database, no permission, …).
    Fatal(String),
}

impl From<rusqlite::Error> for SetupError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                SetupError::Busy(e.to_string())
            }
            _ => SetupError::Fatal(e.to_string()),
        }
    }
}

/// Open the file (and its folder) set up for use, trying again with
/// backoff while it is busy, for at most `SETUP_PATIENCE`.
fn open_connection(path: &Path) -> StoreResult<Connection> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .map_err(|e| StoreError::Fatal(format!("cannot create {}: {e}", folder.display())))?;
    }
    let deadline = Instant::now() + SETUP_PATIENCE;
    let mut pause = SETUP_RETRY_MIN;
    loop {
        let busy = match set_up(path) {
            Ok(connection) => return Ok(connection),
            Err(SetupError::Fatal(e)) => {
                return Err(StoreError::Fatal(format!("sqlite {}: {e}", path.display())));
            }
            Err(SetupError::Busy(e)) => e,
        };
        if Instant::now() + pause > deadline {
            return Err(StoreError::Unavailable(format!(
                "sqlite {}: still busy after trying to set it up for {SETUP_PATIENCE:?}: {busy}",
                path.display()
            )));
        }
        tracing::debug!(path = %path.display(), reason = %busy, "the store is busy; setting it up again shortly");
        std::thread::sleep(pause);
        pause = (pause * 2).min(SETUP_RETRY_MAX);
    }
}

/// One attempt, holding the setup lock: open the file, switch it to WAL,
/// create the schema.
fn set_up(path: &Path) -> Result<Connection, SetupError> {
    let _setting_up = setup_lock(path)?;
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SetupError::Fatal(format!(
            "cannot switch to WAL (the journal mode stays {mode:?})"
        )));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(SCHEMA)?;
    let has_alarms: bool = connection.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('roost_entities') WHERE name = 'alarm_at'",
        [],
        |row| row.get(0),
    )?;
    if !has_alarms {
        connection.execute_batch(ADD_ALARMS)?;
    }
    connection.execute_batch(ALARMS_INDEX)?;
    Ok(connection)
}

/// The `flock` on `<db>.lock` that one process at a time sets the file up
/// under, released when the file is dropped (or the process dies).
fn setup_lock(database: &Path) -> Result<File, SetupError> {
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| SetupError::Fatal(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(SetupError::Busy(format!(
            "another process is setting it up ({} is locked)",
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(SetupError::Fatal(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// A statement SQLite refused (a constraint or trigger, a value too big or
/// of the wrong type) is [`StoreError::Refused`]; anything else (busy,
/// locked, I/O) may work later.
fn unavailable(path: &Path, e: rusqlite::Error) -> StoreError {
    let message = format!("sqlite {}: {e}", path.display());
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
            StoreError::Refused(message)
        }
        _ => StoreError::Unavailable(message),
    }
}

fn claim_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Claim> {
    Ok(Claim {
        epoch: row.get(0)?,
        version: row.get(1)?,
        state: row.get(2)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn claim(&self, key: &str, owner: &str) -> StoreResult<ClaimOutcome> {
        let (key, owner, locks) = (key.to_owned(), owner.to_owned(), self.locks.clone());
        self.with(move |c| {
            let transaction =
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<String> = transaction
                .prepare_cached(OWNER)?
                .query_row(params![key], |row| row.get(0))
                .optional()?;
            if let Some(current) = current.filter(|o| !o.is_empty() && *o != owner) {
                if registry::is_alive(&transaction, &locks, &current)? {
                    return Ok(ClaimOutcome::Owned { owner: current });
                }
            }
            let claim = transaction
                .prepare_cached(CLAIM)?
                .query_row(params![key, owner], claim_of)?;
            transaction.commit()?;
            Ok(ClaimOutcome::Claimed(claim))
        })
        .await
    }

    async fn ask_handover(&self, owner: &str, key: &str) -> StoreResult<()> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.with(move |c| c.prepare_cached(ASK_HANDOVER)?.execute(params![owner, key]))
            .await?;
        Ok(())
    }

    async fn release(&self, key: &str, owner: &str) -> StoreResult<()> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.with(move |c| c.prepare_cached(RELEASE)?.execute(params![key, owner]))
            .await?;
        Ok(())
    }

    async fn release_all(&self, owner: &str) -> StoreResult<u64> {
        let owner = owner.to_owned();
        let released = self
            .with(move |c| c.prepare_cached(RELEASE_ALL)?.execute(params![owner]))
            .await?;
        Ok(released as u64)
    }

    async fn epochs(&self, keys: &[String]) -> StoreResult<HashMap<String, i64>> {
        let keys = keys.to_vec();
        self.with(move |c| {
            let mut select = c.prepare_cached(EPOCH)?;
            let mut epochs = HashMap::with_capacity(keys.len());
            for key in keys {
                if let Some(epoch) = select
                    .query_row(params![key], |row| row.get(0))
                    .optional()?
                {
                    epochs.insert(key, epoch);
                }
            }
            Ok(epochs)
        })
        .await
    }

    async fn flush(&self, rows: Arc<[FlushRow]>) -> StoreResult<Vec<usize>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.with(move |c| {
            let transaction =
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut fenced = Vec::new();
            {
                let mut update = transaction.prepare_cached(FLUSH_ROW)?;
                for (i, row) in rows.iter().enumerate() {
                    let written = update.execute(params![
                        &*row.key,
                        row.epoch,
                        row.version,
                        row.state,
                        row.alarm_at
                    ])?;
                    if written == 0 {
                        fenced.push(i);
                    }
                }
            }
            transaction.commit()?;
            Ok(fenced)
        })
        .await
    }

    async fn due_alarms(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<String>> {
        self.with(move |c| {
            c.prepare_cached(DUE_ALARMS)?
                .query_map(params![now_ms, limit], |row| row.get(0))?
                .collect()
        })
        .await
    }

    async fn peek(&self, key: &str) -> StoreResult<Option<Claim>> {
        let key = key.to_owned();
        self.with(move |c| {
            c.prepare_cached(PEEK)?
                .query_row(params![key], claim_of)
                .optional()
        })
        .await
    }

    async fn live_workers(&self) -> StoreResult<Vec<(String, String)>> {
        let now = registry::wall_clock_ms();
        self.with(move |c| {
            c.prepare_cached(roost_routing::registry::LIVE_SQLITE)?
                .query_map(params![now], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
