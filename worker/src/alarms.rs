//! Waking entities whose alarms are due, wherever they are.
//!
//! Every flushed row carries its entity's earliest alarm, so the store
//! indexes every pending alarm, of entities in memory or not. Each worker
//! asks the store every `alarm_poll_ms` for the alarms due and wakes the
//! entities it owns by HRW over the live workers (the same view calls are
//! routed by): it claims them if need be, like a request would, and runs
//! their due alarms ([`crate::runtime::Runtime::wake`]). So an alarm fires
//! on whichever worker owns its entity by then: after passivation, after
//! its owner died (once the view drops it), after a restart. A worker that
//! is draining wakes nothing: the next owners will.
//!
//! The store's index lags the entities in memory by a flush, so a key can
//! come back after its alarm ran; the wake then finds nothing due. A key
//! whose wake is still running is not woken again meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::calls::peers::Peers;
use crate::http::Api;
use crate::metrics::METRICS;
use crate::runtime::wall_clock_ms;
use crate::store::Store;

/// Most keys read per poll.
const BATCH: i64 = 256;

/// Wakes the entities with due alarms that this worker owns.
pub struct Waker {
    store: Arc<dyn Store>,
    peers: Arc<Peers>,
    api: Arc<Api>,
    /// Keys whose wake is running.
    waking: Mutex<HashSet<String>>,
}

impl Waker {
    pub fn new(store: Arc<dyn Store>, peers: Arc<Peers>, api: Arc<Api>) -> Arc<Self> {
        Arc::new(Waker {
            store,
            peers,
            api,
            waking: Mutex::new(HashSet::new()),
        })
    }

    /// Poll every `period` until `stop` turns true.
    pub async fn run(self: Arc<Self>, period: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() || self.api.is_draining() {
                return;
            }
            self.poll().await;
        }
    }

    /// Wake every due entity this worker owns, each in a task of its own.
    async fn poll(self: &Arc<Self>) {
        let now = i64::try_from(wall_clock_ms()).unwrap_or(i64::MAX);
        let keys = match self.store.due_alarms(now, BATCH).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the due alarms; trying again");
                return;
            }
        };
        for key in keys {
            if self.owns(&key) && self.start_waking(&key) {
                let waker = Arc::clone(self);
                tokio::spawn(async move { waker.wake(key).await });
            }
        }
    }

    /// Whether `key` (`kind/id`) is a served kind's entity this worker owns.
    fn owns(&self, key: &str) -> bool {
        let Some((kind, id)) = key.split_once('/') else {
            return false;
        };
        let Some(kind) = self.api.catalog().get(kind) else {
            return false;
        };
        self.peers
            .owner_of(&kind.routing_key(id))
            .is_some_and(|owner| *owner.id == *self.peers.me())
    }

    /// Mark `key` as being woken; false if it already is.
    fn start_waking(&self, key: &str) -> bool {
        let mut waking = self.waking.lock().unwrap_or_else(|p| p.into_inner());
        waking.insert(key.to_owned())
    }

    async fn wake(&self, key: String) {
        if let Some((kind, id)) = key.split_once('/') {
            if let Some(kind) = self.api.catalog().get(kind) {
                match self.api.wake(&**kind, id).await {
                    Ok(fired) => METRICS.alarms_fired.inc_by(fired as u64),
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "cannot run the entity's due alarms")
                    }
                }
            }
        }
        let mut waking = self.waking.lock().unwrap_or_else(|p| p.into_inner());
        waking.remove(&key);
    }
}
