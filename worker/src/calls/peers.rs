//! This worker's view of the fleet, for routing calls: the live workers
//! from the workers table (the proxy's discovery reads the same rows), on
//! an HRW ring with the proxy's seed, so a call for a key goes where the
//! proxy sends that key's clients.
//!
//! The view is refreshed in the background, at once when the store says a
//! worker went live or changed status (Postgres NOTIFY), and when an
//! attempt fails (at most every [`MIN_REFRESH_GAP`]). A worker that refused or broke
//! a connection, timed out or said it is not taking entities is skipped for
//! [`SUSPECT_FOR`]: a killed worker stays in the table until its lease runs
//! out, and its calls should move to the next candidate now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use roost_routing::hrw::{Member, Ring, Seed};
use tokio::sync::Notify;

use crate::store::Store;

/// How long a failed worker is skipped: about one refresh of the view, so
/// a dead worker (whose row stays live until its lease runs out) is not
/// tried on every call, and a restarted one gets its keys back soon (the
/// proxy already routes their clients to it again).
pub const SUSPECT_FOR: Duration = Duration::from_millis(250);

/// Reads of the table come at most this often.
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(50);

/// A worker a call can go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: Arc<str>,
    pub addr: String,
}

/// The live workers as this worker last read them.
pub struct Peers {
    me: String,
    seed: Seed,
    store: Arc<dyn Store>,
    ring: RwLock<Arc<Ring<String>>>,
    suspects: Mutex<HashMap<Arc<str>, Instant>>,
    /// When the last read of the table started; held across the read, so
    /// concurrent refreshes make one query.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl Peers {
    pub fn new(me: &str, seed: Seed, store: Arc<dyn Store>) -> Self {
        Peers {
            me: me.to_owned(),
            seed,
            store,
            ring: RwLock::new(Arc::new(Ring::empty())),
            suspects: Mutex::new(HashMap::new()),
            refreshed: tokio::sync::Mutex::new(None),
        }
    }

    /// This worker's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The highest-ranked worker for `key` that is not suspected.
    pub fn owner_of(&self, key: &str) -> Option<Peer> {
        let ring = Arc::clone(&self.ring.read().unwrap_or_else(|p| p.into_inner()));
        let now = Instant::now();
        let suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let owner = ring
            .candidates(key.as_bytes())
            .find(|member| suspects.get(&member.id).is_none_or(|until| *until <= now))
            .map(|member| Peer {
                id: Arc::clone(&member.id),
                addr: member.value.clone(),
            });
        owner
    }

    /// Skip `id` for [`SUSPECT_FOR`].
    pub fn suspect(&self, id: &Arc<str>) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        suspects.retain(|_, until| *until > now);
        suspects.insert(Arc::clone(id), now + SUSPECT_FOR);
    }

    /// Read the table again: at once, or [`MIN_REFRESH_GAP`] after the last
    /// read if that was more recent; not at all if a read started since
    /// this call (it sees everything this one would).
    pub async fn refresh_soon(&self) {
        let asked = Instant::now();
        let mut last_read = self.refreshed.lock().await;
        if let Some(started) = *last_read {
            if started >= asked {
                return;
            }
            tokio::time::sleep_until((started + MIN_REFRESH_GAP).into()).await;
        }
        *last_read = Some(Instant::now());
        self.read_table().await;
    }

    /// Refresh every `interval`, and at once when `changed` is notified
    /// (a worker went live or changed status), for the life of the process.
    pub async fn keep_fresh(self: Arc<Self>, interval: Duration, changed: Option<Arc<Notify>>) {
        let changed = changed.unwrap_or_default();
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = changed.notified() => {}
            }
            self.refresh_soon().await;
        }
    }

    /// Replace the ring with the live workers in the table; keep it when
    /// the table cannot be read.
    async fn read_table(&self) {
        let live = match self.store.live_workers().await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live workers; keeping the last view");
                return;
            }
        };
        let members = live.into_iter().map(|(id, addr)| Member {
            id: id.into(),
            weight: 1.0,
            value: addr,
        });
        match Ring::new(self.seed, members) {
            Ok(ring) => *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring),
            Err(e) => tracing::warn!(error = %e, "the workers table lists an unusable fleet"),
        }
    }
}
