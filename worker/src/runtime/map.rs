//! The concurrent map from entity key to activation (scc's lock-free-read
//! hash map). Entries only leave through [`EntityMap::evict`], which marks
//! the activation gone first, so a request holding an old `Arc` notices.

use std::sync::Arc;

use super::activation::Activation;
use crate::metrics::METRICS;

/// Every entity activated on this worker.
#[derive(Default)]
pub struct EntityMap {
    entries: scc::HashMap<Arc<str>, Arc<Activation>>,
}

impl EntityMap {
    /// The activation for `key`, creating an empty (unclaimed) one if absent.
    pub async fn get_or_insert(&self, key: &str, now_ms: u64) -> Arc<Activation> {
        if let Some(found) = self.entries.read_async(key, |_, a| Arc::clone(a)).await {
            return found;
        }
        let key: Arc<str> = key.into();
        let entry = self.entries.entry_async(Arc::clone(&key)).await;
        let mut created = false;
        let activation = entry
            .or_insert_with(|| {
                created = true;
                Arc::new(Activation::new(key, now_ms))
            })
            .get()
            .clone();
        if created {
            METRICS.active_entities.inc();
        }
        activation
    }

    /// The activation for `key`, if in memory.
    pub fn get(&self, key: &str) -> Option<Arc<Activation>> {
        self.entries.read_sync(key, |_, a| Arc::clone(a))
    }

    /// Drop `activation` from memory: mark it gone, then remove it if the
    /// map still holds this very activation.
    pub fn evict(&self, activation: &Arc<Activation>) {
        activation.mark_gone();
        let removed = self
            .entries
            .remove_if_sync(&activation.key, |current| Arc::ptr_eq(current, activation));
        if removed.is_some() {
            METRICS.active_entities.dec();
        }
    }

    /// Every activation (a snapshot; entries may come and go meanwhile).
    pub fn snapshot(&self) -> Vec<Arc<Activation>> {
        let mut all = Vec::with_capacity(self.entries.len());
        self.entries.iter_sync(|_, a| {
            all.push(Arc::clone(a));
            true
        });
        all
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
