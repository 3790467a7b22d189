//! One entity in memory: its state behind a per-entity lock, its newest
//! unflushed row, and the flags the flusher and the passivation sweep use.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::envelope::ReplyCache;
use crate::store::{FlushRow, StoreError};

/// Why a durable write was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlushFailure {
    /// Another worker claimed the entity; this one may not write it.
    #[error("another worker owns the entity now")]
    Fenced,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type FlushResult = Result<(), FlushFailure>;

/// An entity that is (or is being) activated on this worker.
pub struct Activation {
    /// Store key: `KIND/ID`.
    pub key: Arc<str>,
    /// Serialises requests to this entity. A tokio mutex because a durable
    /// request holds it across the wait for its commit: nothing may read a
    /// change before it is durable (the output gate).
    pub slot: tokio::sync::Mutex<Slot>,
    /// Set once this activation has left the map (passivated, fenced, claim
    /// failed). A request that finds it set after locking the slot goes back
    /// to the map for a fresh activation.
    gone: AtomicBool,
    /// When a request last used the entity (ms on the runtime's clock).
    last_used_ms: AtomicU64,
    /// The newest row not yet handed to the flusher, and the durable requests
    /// waiting for it. A std mutex: held for a few instructions, never across
    /// an `.await`.
    pending: Mutex<Pending>,
    /// Whether this activation is in the flusher's queue or its row is in a
    /// batch in flight, so it is queued once and not passivated meanwhile.
    queued: AtomicBool,
}

/// The state behind the per-entity lock.
#[derive(Default)]
pub struct Slot {
    /// `None` until the claim has succeeded.
    pub loaded: Option<Loaded>,
}

/// A claimed entity's state.
pub struct Loaded {
    /// The entity's `State`, type-erased so one map holds every entity type.
    pub state: Box<dyn Any + Send>,
    pub replies: ReplyCache,
    /// Bumped on every change; persisted with the state.
    pub version: u64,
    /// The epoch of our claim: every write is guarded by it.
    pub epoch: i64,
}

#[derive(Default)]
struct Pending {
    row: Option<FlushRow>,
    waiters: Vec<oneshot::Sender<FlushResult>>,
}

/// A row taken by the flusher, with the durable requests waiting on it.
pub struct TakenRow {
    pub row: FlushRow,
    pub waiters: Vec<oneshot::Sender<FlushResult>>,
}

impl Activation {
    pub fn new(key: Arc<str>, now_ms: u64) -> Self {
        Activation {
            key,
            slot: tokio::sync::Mutex::new(Slot::default()),
            gone: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now_ms),
            pending: Mutex::new(Pending::default()),
            queued: AtomicBool::new(false),
        }
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    pub fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn idle_since_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace the pending row with a newer one; returns a receiver for its
    /// commit when `durable`.
    pub fn deposit(&self, row: FlushRow, durable: bool) -> Option<oneshot::Receiver<FlushResult>> {
        let mut pending = self.pending();
        pending.row = Some(row);
        durable.then(|| {
            let (tx, rx) = oneshot::channel();
            pending.waiters.push(tx);
            rx
        })
    }

    /// Take the pending row for a flush, if any.
    pub fn take(&self) -> Option<TakenRow> {
        let mut pending = self.pending();
        let row = pending.row.take()?;
        Some(TakenRow {
            row,
            waiters: std::mem::take(&mut pending.waiters),
        })
    }

    /// Give back a row whose flush failed, unless a newer one replaced it.
    pub fn give_back(&self, row: FlushRow) {
        let mut pending = self.pending();
        if pending.row.is_none() {
            pending.row = Some(row);
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending().row.is_some()
    }

    /// No change waits to be written and none is being written.
    pub fn is_clean(&self) -> bool {
        !self.queued.load(Ordering::Acquire) && !self.has_pending()
    }

    /// Mark queued; returns false when it already was.
    pub fn enqueue(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
    }

    pub fn dequeue(&self) {
        self.queued.store(false, Ordering::Release);
    }
}
