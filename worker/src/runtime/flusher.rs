//! The flusher: writes dirty entities in fenced batches.
//!
//! One task, so at most one batch is in flight. It runs a round every
//! `flush_interval_ms`, or at once when a durable write or a full batch wakes
//! it; a durable write that arrives during a round joins the next one, which
//! starts as soon as the current one ends (group commit). Each round takes
//! the newest row of up to `batch_max` queued entities and writes them in one
//! store call:
//!
//! - written: replies held for it at the output gate are released;
//! - fenced (the epoch moved on): the entity is dropped from memory at once
//!   and every held reply gets [`FlushFailure::Fenced`];
//! - store error: a write-behind row goes back to its entity to be retried
//!   (unless a newer row replaced it); a row holding a durable change fails
//!   every held reply and puts the entity back to its state before that
//!   change ([`Activation::fail`]), so a failed durable write is never
//!   written later behind the client's back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::activation::{Activation, FlushFailure};
use super::map::EntityMap;
use crate::metrics::METRICS;
use crate::store::{FlushRow, Store};

/// Flush timing and size.
#[derive(Debug, Clone, Copy)]
pub struct FlushConfig {
    pub interval: Duration,
    pub batch_max: usize,
}

/// The queue of dirty entities and the task that drains it.
pub struct Flusher {
    store: Arc<dyn Store>,
    entities: Arc<EntityMap>,
    config: FlushConfig,
    /// Entities with a pending row, in the order they became dirty. A std
    /// mutex: pushes and drains are short and never span an `.await`.
    queue: Mutex<Vec<Arc<Activation>>>,
    /// Wakes the flush task early: a durable write, or a full batch.
    wake: Notify,
}

impl Flusher {
    pub fn new(store: Arc<dyn Store>, entities: Arc<EntityMap>, config: FlushConfig) -> Self {
        Flusher {
            store,
            entities,
            config,
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Queue `activation` (whose row was just deposited) for the next round;
    /// `urgent` (a durable write) starts that round now.
    pub fn schedule(&self, activation: &Arc<Activation>, urgent: bool) {
        let full = if activation.enqueue() {
            let mut queue = self.lock_queue();
            queue.push(Arc::clone(activation));
            METRICS.dirty_entities.set(queue.len() as i64);
            queue.len() >= self.config.batch_max
        } else {
            false
        };
        if urgent || full {
            self.wake.notify_one();
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Activation>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn queued(&self) -> usize {
        self.lock_queue().len()
    }

    /// Run rounds until `stop` turns true, then return once the round in
    /// flight (if any) has finished; the caller then drains with
    /// [`Flusher::flush_all`], so no batch is ever abandoned mid-write.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
            while !self.stopping(&stop) && self.round().await {}
        }
    }

    fn stopping(&self, stop: &watch::Receiver<bool>) -> bool {
        *stop.borrow()
    }

    /// Flush rounds until nothing is queued, or `deadline` passes. Returns
    /// whether everything was written.
    pub async fn flush_all(&self, deadline: Instant) -> bool {
        while self.queued() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            if !self.round().await && self.queued() > 0 {
                // The store failed; wait a little before trying again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        true
    }

    /// One batch. Returns true when another should follow at once (more
    /// queued than one batch holds, and this one succeeded).
    async fn round(&self) -> bool {
        let (batch, rows) = self.take_batch();
        if batch.is_empty() {
            return false;
        }
        let rows: Arc<[FlushRow]> = rows.into();
        let started = Instant::now();
        let result = self.store.flush(Arc::clone(&rows)).await;
        METRICS
            .flush_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        METRICS.flush_batch_rows.observe(rows.len() as f64);
        match result {
            Ok(fenced) => {
                self.complete(&batch, &rows, &fenced);
                self.queued() > 0
            }
            Err(e) => {
                METRICS.flush_failures.inc();
                tracing::warn!(error = %e, rows = rows.len(), "flush failed; will retry");
                self.fail(&batch, &rows, &e.into());
                false
            }
        }
    }

    /// Up to `batch_max` queued entities with their pending rows.
    fn take_batch(&self) -> (Vec<Arc<Activation>>, Vec<FlushRow>) {
        let drained: Vec<Arc<Activation>> = {
            let mut queue = self.lock_queue();
            let n = queue.len().min(self.config.batch_max);
            let drained = queue.drain(..n).collect();
            METRICS.dirty_entities.set(queue.len() as i64);
            drained
        };
        let mut batch = Vec::with_capacity(drained.len());
        let mut rows = Vec::with_capacity(drained.len());
        for activation in drained {
            match activation.take() {
                Some(row) => {
                    batch.push(activation);
                    rows.push(row);
                }
                None => activation.dequeue(),
            }
        }
        (batch, rows)
    }

    fn complete(&self, batch: &[Arc<Activation>], rows: &[FlushRow], fenced: &[usize]) {
        for (i, (activation, row)) in batch.iter().zip(rows).enumerate() {
            if fenced.contains(&i) {
                METRICS.fenced_writes.inc();
                tracing::info!(key = %activation.key, epoch = row.epoch, "write fenced: another worker owns the entity; dropping it");
                self.entities.evict(activation);
                activation.fence();
            } else {
                activation.confirm(row.version);
            }
            self.settle(activation);
        }
    }

    /// An activation's row has been dealt with: it leaves the queue, and
    /// goes back in if a newer row arrived while its batch was in flight.
    /// (It stays marked queued during the flight, so passivation leaves it
    /// alone and a new row does not queue it twice.)
    ///
    /// A fenced (gone) activation's newer row can never be written: it is
    /// discarded and its held replies told.
    fn settle(&self, activation: &Arc<Activation>) {
        activation.dequeue();
        if activation.is_gone() {
            activation.fence();
        } else if activation.has_pending() {
            self.schedule(activation, false);
        }
    }

    fn fail(&self, batch: &[Arc<Activation>], rows: &[FlushRow], failure: &FlushFailure) {
        for (activation, row) in batch.iter().zip(rows) {
            activation.fail(row.clone(), failure);
            self.settle(activation);
        }
    }
}
