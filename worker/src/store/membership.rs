//! What every [`super::Registry`] keeps about its own worker, whatever the
//! store: who it registered as, under which generation, whether it holds its
//! liveness lock, and the inbox its hand-over requests arrive in.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Member, StoreError, StoreResult};

pub struct Membership {
    member: Mutex<Option<Member>>,
    generation: AtomicI64,
    /// True while the liveness lock is surely held.
    locked: Arc<AtomicBool>,
    inbox: mpsc::UnboundedSender<String>,
    requests: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for Membership {
    fn default() -> Self {
        let (inbox, requests) = mpsc::unbounded_channel();
        Membership {
            member: Mutex::new(None),
            generation: AtomicI64::new(0),
            locked: Arc::new(AtomicBool::new(false)),
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

    /// The flag the lock's keeper clears the moment the lock is gone.
    pub fn lock_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.locked)
    }

    pub fn set_locked(&self, locked: bool) {
        self.locked.store(locked, Ordering::Release);
    }

    pub fn holds_lock(&self) -> bool {
        self.locked.load(Ordering::Acquire)
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
