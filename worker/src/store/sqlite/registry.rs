//! The SQLite registry: Postgres's guarantees by SQLite's and the kernel's
//! means. Every worker sharing one SQLite file runs on one machine, so:
//!
//! - **Liveness lock**: an exclusive `flock` on `<db>.locks/<lock_id>`, held
//!   for the life of the process. The kernel drops it the instant the
//!   process dies, kill -9 included. A claimer tests it with a non-blocking
//!   try-lock of its own, inside the claim's `BEGIN IMMEDIATE` transaction.
//! - **Lease**: `lease_expires_ms` in `roost_workers`, on the machine's wall
//!   clock (which every process shares), renewed by heartbeat. A frozen
//!   (SIGSTOP) process keeps its `flock`, so as with Postgres it is the lease
//!   expiry that lets others claim its entities.
//! - **Hand-over requests**: rows in `roost_handover`, which the owner polls
//!   every [`POLL`] (SQLite has no LISTEN/NOTIFY); a read in WAL mode does
//!   not block writers.
//!
//! The lock file lives as long as the process holds it, so the lock is never
//! lost while the process lives: renewals are always
//! [`Renewal::Continuous`].

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::mpsc;

use super::SqliteStore;
use crate::store::membership::Membership;
use crate::store::{Member, MemberStatus, Registry, Renewal, StoreError, StoreResult};

const REGISTER: &str = "
INSERT OR IGNORE INTO roost_workers (id, addr, lock_id)
VALUES (?1, ?2, (SELECT coalesce(max(lock_id), 0) + 1 FROM roost_workers))";

const LOCK_ID: &str = "SELECT lock_id FROM roost_workers WHERE id = ?1";

const GO_LIVE: &str = "
UPDATE roost_workers
SET addr = ?2, generation = generation + 1, status = 'live', lease_expires_ms = ?3
WHERE id = ?1
RETURNING generation";

const RENEW: &str =
    "UPDATE roost_workers SET lease_expires_ms = ?3 WHERE id = ?1 AND generation = ?2";

const SET_STATUS: &str = "UPDATE roost_workers SET status = ?3 WHERE id = ?1 AND generation = ?2";

const LIVENESS: &str = "SELECT lock_id, lease_expires_ms FROM roost_workers WHERE id = ?1";

const TAKE_REQUESTS: &str = "DELETE FROM roost_handover WHERE owner = ?1 RETURNING key";

const ANY_REQUEST: &str = "SELECT 1 FROM roost_handover WHERE owner = ?1 LIMIT 1";

/// How often the owner looks for hand-over requests.
pub const POLL: Duration = Duration::from_millis(10);

/// How often `join` tries the lock while an earlier process holds it.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// The folder of the workers' lock files, beside the database file.
#[derive(Debug, Clone)]
pub struct LockFiles {
    dir: PathBuf,
}

impl LockFiles {
    pub fn beside(database: &Path) -> Self {
        let mut dir = database.as_os_str().to_owned();
        dir.push(".locks");
        LockFiles { dir: dir.into() }
    }

    fn path(&self, lock_id: i64) -> PathBuf {
        self.dir.join(lock_id.to_string())
    }

    /// Open (creating it) lock file `lock_id` and try to lock it.
    fn try_take(&self, lock_id: i64) -> std::io::Result<Option<File>> {
        std::fs::create_dir_all(&self.dir)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path(lock_id))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether some process holds lock `lock_id`.
    fn is_held(&self, lock_id: i64) -> std::io::Result<bool> {
        let file = match File::open(self.path(lock_id)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Whether worker `owner` is alive: holds its lock and its lease has not
/// expired. When the lock cannot be checked it counts as alive (the claim
/// then waits for a hand-over or for the lease to run out).
pub(super) fn is_alive(
    transaction: &Transaction<'_>,
    locks: &LockFiles,
    owner: &str,
) -> rusqlite::Result<bool> {
    let liveness: Option<(i64, i64)> = transaction
        .prepare_cached(LIVENESS)?
        .query_row(params![owner], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((lock_id, lease_expires_ms)) = liveness else {
        return Ok(false);
    };
    if lease_expires_ms <= wall_clock_ms() {
        return Ok(false);
    }
    Ok(locks.is_held(lock_id).unwrap_or(true))
}

pub(super) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn expiry_ms(lease: Duration) -> i64 {
    wall_clock_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// [`Registry`] on the store's own connection plus a lock file.
pub struct SqliteRegistry {
    store: SqliteStore,
    locks: LockFiles,
    /// Held open (and locked) for the life of the process.
    lock_file: Mutex<Option<File>>,
    membership: Membership,
}

impl SqliteRegistry {
    pub(super) fn new(store: SqliteStore, locks: LockFiles) -> Self {
        SqliteRegistry {
            store,
            locks,
            lock_file: Mutex::new(None),
            membership: Membership::default(),
        }
    }

    /// Take the lock file of `lock_id`, trying until `patience` has passed.
    async fn take_lock(
        &self,
        member: &Member,
        lock_id: i64,
        patience: Duration,
    ) -> StoreResult<()> {
        let deadline = tokio::time::Instant::now() + patience;
        let holding = self.membership.new_holding();
        loop {
            let taken = self.locks.try_take(lock_id).map_err(|e| {
                StoreError::Fatal(format!("cannot use the lock file of {:?}: {e}", member.id))
            })?;
            if let Some(file) = taken {
                *self.lock_file.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
                holding.locked();
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Fatal(format!(
                    "another live process holds worker id {:?}",
                    member.id
                )));
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// Forward hand-over requests for `id` until the receiver is gone.
    fn poll_requests(&self, id: String) {
        let (store, inbox) = (self.store.clone_handle(), self.membership.inbox());
        tokio::spawn(async move {
            while !inbox.is_closed() {
                tokio::time::sleep(POLL).await;
                let owner = id.clone();
                let taken = store
                    .with(move |c| {
                        if c.prepare_cached(ANY_REQUEST)?
                            .query_row(params![owner], |_| Ok(()))
                            .optional()?
                            .is_none()
                        {
                            return Ok(Vec::new());
                        }
                        c.prepare_cached(TAKE_REQUESTS)?
                            .query_map(params![owner], |row| row.get::<_, String>(0))?
                            .collect()
                    })
                    .await;
                match taken {
                    Ok(keys) => keys.into_iter().for_each(|key| {
                        let _ = inbox.send(key);
                    }),
                    Err(e) => tracing::warn!(error = %e, "cannot read hand-over requests"),
                }
            }
        });
    }
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn join(&self, member: &Member, lease: Duration, patience: Duration) -> StoreResult<i64> {
        self.membership.joining(member);
        let (id, addr) = (member.id.clone(), member.addr.clone());
        let lock_id: i64 = self
            .store
            .with(move |c| {
                c.prepare_cached(REGISTER)?.execute(params![id, addr])?;
                c.prepare_cached(LOCK_ID)?
                    .query_row(params![id], |row| row.get(0))
            })
            .await?;
        self.take_lock(member, lock_id, patience).await?;
        let (id, addr, expires) = (member.id.clone(), member.addr.clone(), expiry_ms(lease));
        let generation: i64 = self
            .store
            .with(move |c| {
                c.prepare_cached(GO_LIVE)?
                    .query_row(params![id, addr, expires], |row| row.get(0))
            })
            .await?;
        self.membership.set_generation(generation);
        self.poll_requests(member.id.clone());
        Ok(generation)
    }

    async fn renew(&self, lease: Duration) -> StoreResult<Renewal> {
        let member = self.membership.member()?;
        let (id, generation) = (member.id.clone(), self.membership.generation());
        let expires = expiry_ms(lease);
        let renewed = self
            .store
            .with(move |c| {
                c.prepare_cached(RENEW)?
                    .execute(params![id, generation, expires])
            })
            .await?;
        if renewed == 0 {
            return Err(StoreError::Fatal(format!(
                "worker id {:?} was registered again by another process",
                member.id
            )));
        }
        Ok(Renewal::Continuous)
    }

    async fn set_status(&self, status: MemberStatus) -> StoreResult<()> {
        let member = self.membership.member()?;
        let generation = self.membership.generation();
        self.store
            .with(move |c| {
                c.prepare_cached(SET_STATUS)?.execute(params![
                    member.id,
                    generation,
                    status.as_str()
                ])
            })
            .await?;
        Ok(())
    }

    fn handover_requests(&self) -> mpsc::UnboundedReceiver<String> {
        self.membership.take_requests()
    }

    fn lock_held(&self) -> Option<u64> {
        self.membership.lock_held()
    }
}
