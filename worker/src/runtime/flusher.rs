//! The flusher: writes dirty entities in fenced batches, several at once.
//!
//! Entities with a pending row wait in a queue. One task ([`Flusher::run`])
//! decides when a batch starts; each batch takes the newest row of up to
//! `batch_max` queued entities and is written by a task of its own in one
//! store call, with up to `pipeline` batches in flight at once. A batch
//! starts:
//!
//! - every `interval`, for write-behind rows;
//! - at once when a durable write (or a full batch) wakes an idle flusher:
//!   a lone durable write pays for one commit and nothing more;
//! - when the flusher is busy (a durable write wakes it while a batch is at
//!   the store, or a batch lands with more queued): after `linger`, so the
//!   writes arriving meanwhile join the same commit (group commit). Under
//!   load, commits then hold more rows each and cost less per write; a
//!   full batch does not wait, and neither does a client whose durable
//!   writes follow one another (each finds the flusher idle);
//! - never while `pipeline` batches are in flight: what is queued then goes
//!   out when one of them lands.
//!
//! # One entity, one batch in flight
//!
//! An entity is never in two batches in flight. Its activation stays marked
//! queued ([`Activation::enqueue`]) from the moment it enters the queue
//! until the batch that took its row has landed; a row it gets meanwhile
//! waits in the activation and goes back in the queue when that batch lands
//! (`settle`). So one entity's rows are written one after the
//! other, in version order, and batches in flight together touch disjoint
//! rows: [`Store::flush`] runs concurrently (Postgres: each batch on a
//! pooled connection of its own, each row still guarded by its epoch;
//! SQLite: one after the other on its one connection).
//!
//! # How a batch lands
//!
//! - written: replies held for it at the output gate are released;
//! - fenced (the epoch moved on): the entity is dropped from memory at once
//!   and every held reply gets [`FlushFailure::Fenced`];
//! - store error: a write-behind row goes back to its entity to be retried
//!   (unless a newer row replaced it). So does a row holding a durable
//!   change, its replies still held, while the store may come back: the
//!   lease is within its store grace and the flushes have been failing for
//!   less than that grace; a durable write waits
//!   for its commit across a reconnect. Past it, a durable row fails every
//!   held reply and puts the entity back to its state before that change
//!   ([`Activation::fail`]), so a failed durable write is never written
//!   later behind the client's back. The next batch then waits for the
//!   interval or a durable write, not the landing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::activation::{Activation, FlushFailure};
use super::map::EntityMap;
use crate::metrics::METRICS;
use crate::ownership::lease::Lease;
use crate::store::{FlushRow, Store, StoreError};

/// Flush timing and size.
#[derive(Debug, Clone, Copy)]
pub struct FlushConfig {
    /// The longest a write-behind row waits for a batch.
    pub interval: Duration,
    /// Rows per batch, at most.
    pub batch_max: usize,
    /// Batches in flight at once, at most (at least 1).
    pub pipeline: usize,
    /// How long a busy flusher waits before it starts a batch, so more
    /// writes join it (zero: never). Tokio's timer counts whole
    /// milliseconds: a linger ends on the first tick after it.
    pub linger: Duration,
}

/// The queue of dirty entities and the tasks that drain it.
pub struct Flusher {
    store: Arc<dyn Store>,
    entities: Arc<EntityMap>,
    /// Whether the store may yet come back ([`Lease::in_grace`]).
    lease: Arc<Lease>,
    /// When the batches started failing (`None`: the last one landed).
    failing_since: Mutex<Option<Instant>>,
    config: FlushConfig,
    /// Entities with a pending row, in the order they became dirty. A std
    /// mutex: pushes and drains are short and never span an `.await`.
    queue: Mutex<Vec<Arc<Activation>>>,
    /// Wakes the flush task early: a durable write, or a full batch.
    wake: Notify,
    /// Set by the first early wake since the flush task last took a batch:
    /// the durable writes after it do not wake the task again, so it is
    /// woken once per batch, however many writes join that batch.
    wake_pending: AtomicBool,
    /// Batches at the store right now (a batch that has its answer and is
    /// releasing its replies no longer counts): a durable write that finds
    /// none does not linger, however soon it follows the last reply.
    writing: AtomicUsize,
}

/// What makes the flush task start a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// `interval` passed.
    Tick,
    /// A durable write or a full batch.
    Woken,
    /// A batch was written and more is queued.
    Landed,
}

/// Activations taken for one batch, and their rows, in the same order.
struct Batch {
    activations: Vec<Arc<Activation>>,
    rows: Arc<[FlushRow]>,
}

/// The batches in flight, each a task answering whether its batch was
/// written. Owned by the flush task alone.
type Flights = JoinSet<bool>;

/// Whether a landed batch was written (a batch task that panicked was not).
fn landed(joined: Result<bool, tokio::task::JoinError>) -> bool {
    joined.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a flush batch task failed");
        false
    })
}

impl Flusher {
    pub fn new(
        store: Arc<dyn Store>,
        entities: Arc<EntityMap>,
        lease: Arc<Lease>,
        config: FlushConfig,
    ) -> Self {
        Flusher {
            store,
            entities,
            lease,
            failing_since: Mutex::new(None),
            config,
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            wake_pending: AtomicBool::new(false),
            writing: AtomicUsize::new(0),
        }
    }

    /// Queue `activation` (whose row was just deposited) for the next batch;
    /// `urgent` (a durable write) starts that batch now, or after the
    /// linger if the flusher is busy.
    pub fn schedule(&self, activation: &Arc<Activation>, urgent: bool) {
        let full = if activation.enqueue() {
            let mut queue = self.lock_queue();
            queue.push(Arc::clone(activation));
            METRICS.dirty_entities.set(queue.len() as i64);
            queue.len() >= self.config.batch_max
        } else {
            false
        };
        if (urgent || full) && !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Activation>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn queued(&self) -> usize {
        self.lock_queue().len()
    }

    /// Start batches until `stop` turns true, then return once every batch
    /// in flight has landed; the caller then drains with
    /// [`Flusher::flush_all`], so no batch is ever abandoned mid-write.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut flights = Flights::new();
        while let Some(cause) = self.next_cause(&mut flights, &mut stop).await {
            if self.lingers(cause) {
                tokio::time::sleep(self.config.linger).await;
            }
            self.launch(&mut flights);
        }
        while let Some(joined) = flights.join_next().await {
            landed(joined);
        }
    }

    /// Wait until a batch should start: something is queued, a batch may
    /// go in flight, and the interval passed, a durable write came, or a
    /// written batch landed. `None` once told to stop.
    async fn next_cause(
        &self,
        flights: &mut Flights,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Cause> {
        let mut tick = Instant::now() + self.config.interval;
        loop {
            let cause = tokio::select! {
                biased;
                _ = stop.changed() => return None,
                Some(joined) = flights.join_next() => {
                    if !landed(joined) {
                        // Retried at the interval, or on the next durable write.
                        self.wake_pending.store(false, Ordering::Release);
                        continue;
                    }
                    Cause::Landed
                }
                () = self.wake.notified() => Cause::Woken,
                () = tokio::time::sleep_until(tick) => {
                    tick = Instant::now() + self.config.interval;
                    Cause::Tick
                }
            };
            if self.queued() > 0 && flights.len() < self.config.pipeline {
                return Some(cause);
            }
        }
    }

    /// Whether to wait `linger` before starting the batch `cause` calls
    /// for: only while busy (a batch just landed with more queued, or a
    /// durable write came while one is at the store), and never for the
    /// interval's batch or a full one.
    fn lingers(&self, cause: Cause) -> bool {
        let busy = match cause {
            Cause::Tick => false,
            Cause::Woken => self.writing.load(Ordering::Acquire) > 0,
            Cause::Landed => true,
        };
        busy && !self.config.linger.is_zero() && self.queued() < self.config.batch_max
    }

    /// Start batches while some are queued and the pipeline has room. A
    /// durable write queued after the wake flag is cleared here wakes the
    /// task again, so none waits for the interval.
    fn launch(self: &Arc<Self>, flights: &mut Flights) {
        while let Some(joined) = flights.try_join_next() {
            landed(joined);
        }
        while flights.len() < self.config.pipeline {
            self.wake_pending.store(false, Ordering::Release);
            let Some(batch) = self.take_batch() else {
                return;
            };
            let flusher = Arc::clone(self);
            flights.spawn(async move { flusher.write(batch).await });
        }
    }

    /// Write batches one after the other until nothing is queued, or
    /// `deadline` passes (only once [`Flusher::run`] has returned, so
    /// nothing else is in flight). Returns whether everything was written.
    pub async fn flush_all(&self, deadline: std::time::Instant) -> bool {
        while self.queued() > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            let written = match self.take_batch() {
                Some(batch) => self.write(batch).await,
                None => false,
            };
            if !written && self.queued() > 0 {
                // The store failed; wait a little before trying again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        true
    }

    /// Write one batch and settle its entities. Returns whether it was
    /// written (some rows may have been fenced).
    async fn write(&self, batch: Batch) -> bool {
        METRICS.flush_batches_in_flight.inc();
        self.writing.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let result = self.store.flush(Arc::clone(&batch.rows)).await;
        self.writing.fetch_sub(1, Ordering::AcqRel);
        METRICS.flush_batches_in_flight.dec();
        METRICS
            .flush_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        METRICS.flush_batch_rows.observe(batch.rows.len() as f64);
        match result {
            Ok(fenced) => {
                self.lock_failing_since().take();
                self.complete(&batch, &fenced);
                true
            }
            Err(e) => {
                METRICS.flush_failures.inc();
                let rows = batch.rows.len();
                if self.retries(&e) {
                    tracing::warn!(error = %e, rows, "flush failed; will retry, durable replies held");
                    self.retry(&batch);
                } else {
                    tracing::warn!(error = %e, rows, "flush failed; durable changes undone, the rest will retry");
                    self.fail(&batch, &e.into());
                }
                false
            }
        }
    }

    /// Whether a batch that failed with `error` is tried again whole,
    /// durable changes included: the store is unreachable, not refusing,
    /// and may come back, since the lease is within its store grace and
    /// the flushes have been failing for less than that grace.
    fn retries(&self, error: &StoreError) -> bool {
        let since = *self.lock_failing_since().get_or_insert_with(Instant::now);
        matches!(error, StoreError::Unavailable(_))
            && self.lease.in_grace()
            && since.elapsed() < self.lease.grace()
    }

    fn lock_failing_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failing_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `batch_max` queued entities with their pending rows (`None`:
    /// no row to write).
    fn take_batch(&self) -> Option<Batch> {
        let drained: Vec<Arc<Activation>> = {
            let mut queue = self.lock_queue();
            let n = queue.len().min(self.config.batch_max);
            let drained = queue.drain(..n).collect();
            METRICS.dirty_entities.set(queue.len() as i64);
            drained
        };
        let mut activations = Vec::with_capacity(drained.len());
        let mut rows = Vec::with_capacity(drained.len());
        for activation in drained {
            match activation.take() {
                Some(row) => {
                    activations.push(activation);
                    rows.push(row);
                }
                None => activation.dequeue(),
            }
        }
        (!rows.is_empty()).then(|| Batch {
            activations,
            rows: rows.into(),
        })
    }

    fn complete(&self, batch: &Batch, fenced: &[usize]) {
        for (i, (activation, row)) in batch.activations.iter().zip(&*batch.rows).enumerate() {
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
    /// alone, a new row does not queue it twice, and no other batch takes
    /// it meanwhile.)
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

    fn retry(&self, batch: &Batch) {
        for (activation, row) in batch.activations.iter().zip(&*batch.rows) {
            activation.retry(row.clone());
            self.settle(activation);
        }
    }

    fn fail(&self, batch: &Batch, failure: &FlushFailure) {
        for (activation, row) in batch.activations.iter().zip(&*batch.rows) {
            activation.fail(row.clone(), failure);
            self.settle(activation);
        }
    }
}
