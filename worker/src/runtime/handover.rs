//! Handing an entity over when another worker asks (invariant 6 of
//! [`crate::ownership`]): finish the request in progress, flush what is
//! unwritten, release the entity in the store, then forget it.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::Runtime;
use crate::metrics::METRICS;

impl Runtime {
    /// Hand entities over as other workers ask, until the registry stops.
    pub(super) async fn serve_handovers(self: Arc<Self>, mut requests: UnboundedReceiver<String>) {
        while let Some(key) = requests.recv().await {
            let runtime = Arc::clone(&self);
            tokio::spawn(async move { runtime.hand_over(&key).await });
        }
    }

    /// Hand `key` over: finish the request in progress, flush what is
    /// unwritten, forget the entity and release it in the store. Gives up
    /// (keeping the entity) if the flush does not complete within
    /// `handoff_timeout`; the claimer then times out too.
    ///
    /// The release happens with the key's current activation locked (one
    /// is made if there is none) and before it is evicted, so no request of
    /// ours can claim the key between our last look and the release; and an
    /// activation replaced while we waited for its lock (an earlier
    /// hand-over of the same key evicted it, and a request claimed the key
    /// back) is not the one to hand over: the current one is. Without these
    /// checks the release could undo a claim a later request made, and that
    /// request's writes would be fenced.
    pub async fn hand_over(&self, key: &str) {
        loop {
            let activation = self.entities.get_or_insert(key, self.now_ms()).await;
            let slot = activation.slot.lock().await;
            if activation.is_gone() {
                continue;
            }
            if let Some(flushed) = activation.await_flushed() {
                self.flusher.schedule(&activation, true);
                match tokio::time::timeout(self.config.handoff_timeout, flushed).await {
                    Ok(Ok(Ok(()))) => {}
                    _ => {
                        tracing::warn!(key, "hand-over: could not flush the entity; keeping it");
                        return;
                    }
                }
            }
            // Release first, evict after: a request of ours waiting on
            // this slot must not claim the key (taking it from ourselves)
            // before the release, which would then undo its claim.
            match self.store.release(key, &self.owner).await {
                Ok(()) => {
                    self.entities.evict(&activation);
                    METRICS.handovers.inc();
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "hand-over: cannot release the entity; keeping it");
                }
            }
            drop(slot);
            return;
        }
    }
}
