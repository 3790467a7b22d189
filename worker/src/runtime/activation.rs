//! One entity in memory: its state behind a per-entity lock, its newest
//! unflushed row, the output gate, and the flags the flusher and the
//! passivation sweep use.
//!
//! # The output gate
//!
//! As in Durable Objects, a request is applied at once and only its *reply*
//! waits: a durable change's reply until the row holding it has committed,
//! and any other reply (a read, a write-behind change) until the newest
//! durable change it may have seen has committed. So the entity lock is held
//! for the handler alone, a user's second device does not wait behind the
//! first device's commit, and both changes can share one batch; yet nothing
//! is ever acknowledged that depends on a change that then fails.
//!
//! When a row holding a durable change fails to commit, every held reply
//! fails (503), and the entity goes back to the state just before the oldest
//! durable change not yet committed: the row of that state (which still
//! holds every write-behind change acknowledged before it) is queued for
//! writing and restored in memory by the next request to lock the entity.
//! A request that was applying its change while the failure happened sees
//! it when it settles ([`BuiltOnFailure`]) and fails too.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::envelope::{self, Meta};
use crate::entity::Entity;
use crate::ownership::ClaimError;
use crate::store::{Claim, FlushRow, StoreError};

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

/// A reply held at the output gate: resolves when what it depends on has
/// committed, or failed.
pub type Gate = oneshot::Receiver<FlushResult>;

/// An entity that is (or is being) activated on this worker.
pub struct Activation {
    /// Store key: `KIND/ID`.
    pub key: Arc<str>,
    /// Serialises requests to this entity: held while a request is applied
    /// (a tokio mutex, since the first request also claims under it), not
    /// while a reply waits at the output gate.
    pub slot: tokio::sync::Mutex<Slot>,
    /// Set once this activation has left the map (passivated, fenced, claim
    /// failed). A request that finds it set after locking the slot goes back
    /// to the map for a fresh activation.
    gone: AtomicBool,
    /// When a request last used the entity (ms on the runtime's clock).
    last_used_ms: AtomicU64,
    /// The newest row not yet handed to the flusher and the output gate. A
    /// std mutex: held for a few instructions, never across an `.await`.
    pending: Mutex<Pending>,
    /// Whether this activation is in the flusher's queue or its row is in a
    /// batch in flight, so it is queued once and not passivated meanwhile.
    queued: AtomicBool,
    /// The epoch of its claim (0 until claimed), for revalidation.
    epoch: AtomicI64,
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
    /// `state` as the entity encoded it at the last change (or as claimed):
    /// what a change that is not kept (over `max_state_bytes`, or calls a
    /// request did not declare) goes back to, and what a durable change's
    /// row of the state before it is built from. Kept, since every change
    /// encodes the state for its row anyway: neither costs an encode or a
    /// clone of the state, only these bytes of memory per entity held
    /// (boxed: exactly their length, none of a `Vec`'s spare capacity).
    pub encoded: Box<[u8]>,
    pub meta: Meta,
    /// Bumped on every change; persisted with the state.
    pub version: u64,
    /// The epoch of our claim: every write is guarded by it.
    pub epoch: i64,
}

impl Loaded {
    /// A claimed entity, from the state its claim returned.
    pub fn claimed<E: Entity>(entity: &E, key: &str, claim: Claim) -> Result<Self, ClaimError> {
        Loaded::stored(
            entity,
            key,
            claim.state.as_deref(),
            claim.version,
            claim.epoch,
        )
    }

    /// An entity as stored (`bytes`, at `version`), held under the claim of
    /// `epoch`: its state, the runtime's meta, and the state's own encoding.
    pub fn stored<E: Entity>(
        entity: &E,
        key: &str,
        bytes: Option<&[u8]>,
        version: i64,
        epoch: i64,
    ) -> Result<Self, ClaimError> {
        let (meta, state, encoded) = match bytes {
            None => {
                let state = E::State::default();
                let encoded = entity.encode(&state);
                (Meta::default(), state, encoded.into_boxed_slice())
            }
            Some(bytes) => {
                let (meta, state, encoded) = envelope::decode_stored(entity, key, bytes)?;
                (meta, state, encoded.into())
            }
        };
        Ok(Loaded {
            state: Box::new(state),
            encoded,
            meta,
            version: u64::try_from(version).unwrap_or(0),
            epoch,
        })
    }
}

/// Between the entity and the flusher: the newest unwritten row, the output
/// gate, and what a failed durable flush goes back to.
#[derive(Default)]
struct Pending {
    row: Option<FlushRow>,
    /// What is in flight besides the newest row; made only while there is
    /// some (most entities have none most of the time, and it is large to
    /// carry inline in every entity).
    flight: Option<Box<InFlight>>,
    /// Durable flush failures so far: a request that read the state under
    /// an older count was built on a change that failed.
    failures: u64,
    /// Version of the newest row deposited.
    newest: i64,
    /// Version of the newest row known written.
    written: i64,
}

/// Durable changes not yet committed, the replies held for them, and the
/// state to go back to after one failed.
#[derive(Default)]
struct InFlight {
    /// Durable changes not yet committed, oldest first.
    unconfirmed: VecDeque<Unconfirmed>,
    /// Replies held by the output gate.
    waiters: Vec<Waiter>,
    /// After a durable change failed to commit: the state to go back to.
    /// The next request to lock the entity restores it.
    revert: Option<FlushRow>,
}

impl Pending {
    fn flight(&mut self) -> &mut InFlight {
        self.flight.get_or_insert_with(Box::default)
    }

    /// The newest durable change not yet committed.
    fn newest_unconfirmed(&self) -> Option<i64> {
        self.flight.as_ref()?.unconfirmed.back().map(|u| u.version)
    }

    /// Give the in-flight part back once nothing is in it.
    fn tidy(&mut self) {
        let empty = self.flight.as_ref().is_some_and(|f| {
            f.unconfirmed.is_empty() && f.waiters.is_empty() && f.revert.is_none()
        });
        if empty {
            self.flight = None;
        }
    }
}

/// A durable change and the row of the state just before it.
struct Unconfirmed {
    version: i64,
    before: FlushRow,
}

/// A reply released once `version` has committed.
struct Waiter {
    version: i64,
    reply: oneshot::Sender<FlushResult>,
}

/// What a request did to the entity, for [`Activation::settle_request`].
pub enum Effect {
    /// Nothing changed (a read, a refused change, a replayed reply).
    Read,
    /// A change acknowledged at once.
    WriteBehind(FlushRow),
    /// A change acknowledged once committed; `before` is the row of the
    /// state before it.
    Durable { row: FlushRow, before: FlushRow },
}

/// A request whose view of the state included a durable change that failed
/// to commit while the request ran.
#[derive(Debug)]
pub struct BuiltOnFailure;

impl Activation {
    pub fn new(key: Arc<str>, now_ms: u64) -> Self {
        Activation {
            key,
            slot: tokio::sync::Mutex::new(Slot::default()),
            gone: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now_ms),
            pending: Mutex::new(Pending::default()),
            queued: AtomicBool::new(false),
            epoch: AtomicI64::new(0),
        }
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    pub fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
    }

    pub fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The epoch it was claimed under; `None` before the claim.
    pub fn epoch(&self) -> Option<i64> {
        Some(self.epoch.load(Ordering::Acquire)).filter(|e| *e != 0)
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

    /// The failure count to hand to [`Activation::settle_request`], and the
    /// state to restore first if a durable change failed since the last
    /// request. Called with the entity locked.
    pub fn revert_point(&self) -> (u64, Option<FlushRow>) {
        let mut pending = self.pending();
        let revert = pending.flight.as_mut().and_then(|f| f.revert.take());
        pending.tidy();
        (pending.failures, revert)
    }

    /// Record what a request did, through the output gate: a durable change
    /// waits for its own commit; any other request waits for the newest
    /// durable change it may have seen. Returns what to wait on (`None`:
    /// answer at once), or [`BuiltOnFailure`] when a durable change failed
    /// since `seen_failures` (nothing is recorded then).
    pub fn settle_request(
        &self,
        effect: Effect,
        seen_failures: u64,
    ) -> Result<Option<Gate>, BuiltOnFailure> {
        let mut pending = self.pending();
        if pending.failures != seen_failures {
            return Err(BuiltOnFailure);
        }
        match effect {
            Effect::Read => {}
            Effect::WriteBehind(row) => {
                pending.newest = row.version;
                pending.row = Some(row);
            }
            Effect::Durable { row, before } => {
                pending.newest = row.version;
                pending.flight().unconfirmed.push_back(Unconfirmed {
                    version: row.version,
                    before,
                });
                pending.row = Some(row);
            }
        }
        let Some(version) = pending.newest_unconfirmed() else {
            return Ok(None);
        };
        let (reply, wait) = oneshot::channel();
        pending.flight().waiters.push(Waiter { version, reply });
        Ok(Some(wait))
    }

    /// Wait for every row deposited so far to be written (`None`: nothing
    /// is waiting to be). The caller schedules the flush.
    pub fn await_flushed(&self) -> Option<Gate> {
        let mut pending = self.pending();
        if pending.newest <= pending.written {
            return None;
        }
        let (reply, wait) = oneshot::channel();
        let version = pending.newest;
        pending.flight().waiters.push(Waiter { version, reply });
        Some(wait)
    }

    /// Take the pending row for a flush, if any.
    pub fn take(&self) -> Option<FlushRow> {
        self.pending().row.take()
    }

    /// The row up to `version` has committed: release what waited for it.
    pub fn confirm(&self, version: i64) {
        let mut pending = self.pending();
        pending.written = pending.written.max(version);
        let Some(flight) = pending.flight.as_mut() else {
            return;
        };
        while flight
            .unconfirmed
            .front()
            .is_some_and(|u| u.version <= version)
        {
            flight.unconfirmed.pop_front();
        }
        let (released, held) = std::mem::take(&mut flight.waiters)
            .into_iter()
            .partition(|w| w.version <= version);
        flight.waiters = held;
        pending.tidy();
        drop(pending);
        release(released, &Ok(()));
    }

    /// Writing `row` failed. If it held a durable change, every reply held
    /// by the gate fails, and the entity goes back to the state before the
    /// oldest unconfirmed durable change: that row is queued in its place
    /// (it holds acknowledged write-behind changes) and restored by the next
    /// request. A write-behind row is kept for a retry unless a newer row
    /// replaced it.
    pub fn fail(&self, row: FlushRow, failure: &FlushFailure) {
        let mut pending = self.pending();
        let durable_failed = pending
            .flight
            .as_ref()
            .and_then(|f| f.unconfirmed.front())
            .is_some_and(|u| u.version <= row.version);
        if !durable_failed {
            drop(pending);
            return self.retry(row);
        }
        let flight = pending.flight();
        let before = flight.unconfirmed.drain(..).next().map(|u| u.before);
        let failed = std::mem::take(&mut flight.waiters);
        flight.revert.clone_from(&before);
        if let Some(before) = &before {
            pending.newest = before.version;
            pending.written = pending.written.min(before.version - 1);
        }
        pending.row = before;
        pending.failures += 1;
        pending.tidy();
        drop(pending);
        release(failed, &Err(failure.clone()));
    }

    /// Writing `row` failed and is to be tried again: it stays pending
    /// unless a newer row (which holds its changes) replaced it, and the
    /// replies held for it keep waiting.
    pub fn retry(&self, row: FlushRow) {
        self.pending().row.get_or_insert(row);
    }

    /// Another worker owns the entity: nothing pending can be written and
    /// nothing held may be acknowledged.
    pub fn fence(&self) {
        let mut pending = self.pending();
        pending.row = None;
        let fenced = match pending.flight.as_mut() {
            Some(flight) => {
                flight.unconfirmed.clear();
                std::mem::take(&mut flight.waiters)
            }
            None => Vec::new(),
        };
        pending.tidy();
        drop(pending);
        release(fenced, &Err(FlushFailure::Fenced));
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

/// Answer held replies (a waiter whose client has gone is fine to skip).
fn release(waiters: Vec<Waiter>, result: &FlushResult) {
    for waiter in waiters {
        let _ = waiter.reply.send(result.clone());
    }
}
