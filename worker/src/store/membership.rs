//! What every [`super::Registry`] keeps about its own worker, whatever the
//! store: who it registered as, under which generation, whether it holds its
//! liveness lock, and the inbox its hand-over requests arrive in.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Member, StoreError, StoreResult};

pub struct Membership {
    member: Mutex<Option<Member>>,
    generation: AtomicI64,
    /// Whether the liveness lock is surely held, by which holding.
    lock: Arc<LockState>,
    inbox: mpsc::UnboundedSender<String>,
    requests: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for Membership {
    fn default() -> Self {
        let (inbox, requests) = mpsc::unbounded_channel();
        Membership {
            member: Mutex::new(None),
            generation: AtomicI64::new(0),
            lock: Arc::new(LockState::default()),
            inbox,
            requests: Mutex::new(Some(requests)),
        }
    }
}

impl Membership {
    pub fn joining(&self, member: &Member) {
        *self.member.lock().unwrap_or_else(|p| p.into_inner()) = Some(member.clone());
    }

    /// Who this worker joined as.
    pub fn member(&self) -> StoreResult<Member> {
        self.member
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Fatal("the registry has not joined yet".into()))
    }

    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn set_generation(&self, generation: i64) {
        self.generation.store(generation, Ordering::Release);
    }

    /// A new holding of the liveness lock (a new connection, for Postgres):
    /// not yet locked; from now on only it can say the lock is held or lost.
    pub fn new_holding(&self) -> Holding {
        Holding {
            state: Arc::clone(&self.lock),
            generation: self.lock.next_generation(),
        }
    }

    /// The current holding's number while it holds the lock.
    pub fn lock_held(&self) -> Option<u64> {
        self.lock.held()
    }

    /// Where hand-over requests are to be delivered.
    pub fn inbox(&self) -> mpsc::UnboundedSender<String> {
        self.inbox.clone()
    }

    /// The receiving end of the inbox (an empty one after the first call).
    pub fn take_requests(&self) -> mpsc::UnboundedReceiver<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1)
    }
}

/// `generation << 1 | held`, in one atomic so that "held" always belongs to
/// the current generation.
#[derive(Default)]
struct LockState(AtomicU64);

impl LockState {
    fn next_generation(&self) -> u64 {
        let previous = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(((s >> 1) + 1) << 1)
            })
            .unwrap_or_default();
        (previous >> 1) + 1
    }

    fn held(&self) -> Option<u64> {
        let state = self.0.load(Ordering::Acquire);
        (state & 1 == 1).then_some(state >> 1)
    }
}

/// One holding of the liveness lock. When its connection ends it can mark
/// the lock lost only while it is still the newest holding, so an old
/// connection that closes late never clears a newer connection's lock.
#[derive(Clone)]
pub struct Holding {
    state: Arc<LockState>,
    generation: u64,
}

impl Holding {
    /// The lock is taken.
    pub fn locked(&self) {
        let unlocked = self.generation << 1;
        let _ = self.state.0.compare_exchange(
            unlocked,
            unlocked | 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The lock is gone with this holding's connection.
    pub fn lost(&self) {
        let unlocked = self.generation << 1;
        let _ = self.state.0.compare_exchange(
            unlocked | 1,
            unlocked,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_holding_cannot_clear_a_newer_lock() {
        let membership = Membership::default();
        let old = membership.new_holding();
        old.locked();
        assert!(membership.lock_held().is_some());
        let new = membership.new_holding();
        assert_eq!(
            membership.lock_held(),
            None,
            "a new holding starts unlocked"
        );
        new.locked();
        old.lost();
        assert!(
            membership.lock_held().is_some(),
            "the old connection ended late"
        );
        assert_ne!(membership.lock_held(), Some(old.generation));
        assert_eq!(membership.lock_held(), Some(new.generation));
        new.lost();
        assert_eq!(membership.lock_held(), None);
    }
}
