//! The entity runtime: entities in memory, one request at a time per entity,
//! flushed in fenced batches.
//!
//! [`Runtime::execute`] is the whole request path for one entity:
//!
//! 1. find or create the activation in the [`map::EntityMap`];
//! 2. lock it (per-entity serial execution); if it left the map meanwhile,
//!    start over; if a durable change failed since the last request, go
//!    back to the state before it;
//! 3. claim it from the store on first use (asking a live owner to hand it
//!    over; see [`crate::ownership`]), then make sure the lease still
//!    holds ([`crate::ownership::lease`]; if not: 503);
//! 4. answer a repeated `Idempotency-Key` from the remembered reply, or
//!    refuse it (422) if it came with another request
//!    ([`idempotency`]);
//! 5. run the handler; on a change, encode the state (a client's change
//!    that makes it larger than `max_state_bytes` is undone and refused
//!    with 413: the encode every change needs for its row is the size
//!    check), bump the version and hand the row to the
//!    [`flusher::Flusher`];
//! 6. unlock, and hold the reply at the output gate while it depends on a
//!    durable change not yet committed (its own, or one it may have seen);
//!    if that change fails, answer 503
//!    ([`activation`](self::activation#the-output-gate)).
//!
//! A handler may answer with calls to other entities instead
//! ([`crate::entity#calling-other-entities`]). Then, with the entity still
//! locked, the runtime commits the state that records the calls, sends them
//! through a [`CallSender`], and runs [`Entity::on_replies`] on the replies
//! (durably too), until it has a reply. Calls still awaited when a request
//! comes (the last owner crashed mid-way, or the calls missed their
//! deadline) are finished before that request runs.
//!
//! A background sweep passivates entities idle longer than `idle`.

pub mod activation;
pub mod envelope;
pub mod flusher;
pub mod handover;
pub mod idempotency;
pub mod map;
pub mod precondition;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use self::activation::{Activation, BuiltOnFailure, Effect, FlushFailure, Gate, Loaded};
use self::envelope::Awaiting;
use self::flusher::{FlushConfig, Flusher};
use self::idempotency::Idempotency;
use self::map::EntityMap;
use self::precondition::IfMatch;
use crate::calls::{CallError, CallSender};
pub use crate::entity::Durability;
use crate::entity::{Alarm, AlarmChange, Context, Entity, Next, Outcome, Reply};
use crate::metrics::METRICS;
use crate::ownership::lease::{Lease, Revalidate, RETRY_AFTER_LAPSE};
use crate::ownership::{claim, revalidation, ClaimError};
use crate::store::{FlushRow, Store, StoreError};

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client, through a proxy.
    Client,
    /// Another entity's call: a step of a protocol between entities that
    /// must not be refused halfway (a reservation's release must apply),
    /// so `max_state_bytes` does not apply to it; an entity type that takes
    /// calls bounds what they add to its state.
    Entity,
}

/// How to run one request, besides what it asks.
#[derive(Debug, Clone)]
pub struct Options {
    /// How the change is acknowledged (durable whatever this says when the
    /// request makes calls).
    pub durability: Durability,
    /// Its `Idempotency-Key` (a call's idempotency id), with what
    /// identifies the request.
    pub idempotency: Option<Idempotency>,
    pub origin: Origin,
    /// `If-Match`, checked before the handler runs.
    pub if_match: Option<IfMatch>,
    /// A read (`GET`): the handler must leave the state as it was.
    pub read: bool,
}

impl Options {
    /// A client's request with nothing but its durability.
    pub fn client(durability: Durability) -> Self {
        Options {
            durability,
            idempotency: None,
            origin: Origin::Client,
            if_match: None,
            read: false,
        }
    }
}

/// A reply about one entity, with what identifies the answering owner.
#[derive(Debug, Clone)]
pub struct EntityReply {
    pub reply: Reply,
    /// Version after the request (the ETag).
    pub version: u64,
    /// Epoch of the claim this worker served it under.
    pub epoch: i64,
}

/// Why a request could not be served (mapped to 503 or 500 by the API).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("this worker cannot be sure it still holds its lease")]
    LeaseLost,
    #[error("cannot activate the entity: {0}")]
    Claim(#[from] ClaimError),
    #[error("the change was not made durable: {0}")]
    NotDurable(FlushFailure),
    #[error("the entity was claimed by another worker")]
    Fenced,
    #[error("calls to other entities are not finished: {0}")]
    CallsUnfinished(#[from] CallError),
    #[error("{kind} made calls from a request it did not declare in makes_calls")]
    UndeclaredCalls { kind: &'static str },
}

/// What a handler step ran into.
enum Step<E: Entity> {
    /// A client's request, with its `If-Match` and whether it is a read.
    Request(E::Request, Option<IfMatch>, bool),
    /// Another entity's call ([`Origin::Entity`]).
    Call(E::Request),
    /// The replies to the calls the entity made.
    Replies(Vec<Reply>),
    /// A due alarm.
    Alarm(Alarm),
}

/// What applying a step left to do.
enum Applied {
    /// Answer with this reply (once the gate, if any, opens).
    Replied(EntityReply, Option<Gate>),
    /// Send the calls now recorded in the entity's meta, once the gate opens.
    Calling(Option<Gate>),
}

/// Runtime settings.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    pub flush: FlushConfig,
    /// Entities unused this long are flushed and dropped.
    pub idle: Duration,
    /// The longest a claim waits for a live owner to hand an entity over.
    pub handoff_timeout: Duration,
    /// The longest one round of calls to other entities may take, retries
    /// included; past it the request gets 503 and the calls stay awaited.
    pub call_timeout: Duration,
    /// The largest encoded state a client's change may leave an entity
    /// with (a change that shrinks a larger one is let through), and the
    /// budget of the replies it remembers for idempotency keys.
    pub max_state_bytes: usize,
}

/// The entity runtime of one worker.
pub struct Runtime {
    owner: Arc<str>,
    store: Arc<dyn Store>,
    lease: Arc<Lease>,
    entities: Arc<EntityMap>,
    flusher: Arc<Flusher>,
    config: RuntimeConfig,
    /// Origin of the runtime's millisecond clock (monotonic).
    started: Instant,
    /// Tells the background tasks to stop.
    stop: watch::Sender<bool>,
    /// The flusher task: drain waits for it, and it for every batch in
    /// flight, so each batch taken is written (or failed and requeued)
    /// before the final flush.
    flusher_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Runtime {
    /// Start the runtime and its background tasks (flusher, passivation,
    /// lease renewal, hand-overs).
    pub fn start(
        owner: &str,
        store: Arc<dyn Store>,
        lease: Arc<Lease>,
        config: RuntimeConfig,
    ) -> Arc<Self> {
        let entities = Arc::new(EntityMap::default());
        let flusher = Arc::new(Flusher::new(
            Arc::clone(&store),
            Arc::clone(&entities),
            Arc::clone(&lease),
            config.flush,
        ));
        let (stop, stopped) = watch::channel(false);
        let runtime = Arc::new(Runtime {
            owner: owner.into(),
            store,
            lease,
            entities,
            flusher,
            config,
            started: Instant::now(),
            stop,
            flusher_task: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(Arc::clone(&runtime.flusher).run(stopped.clone()));
        *runtime
            .flusher_task
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(task);
        tokio::spawn(Arc::clone(&runtime).passivate_forever(stopped.clone()));
        let cache: Arc<dyn Revalidate> = Arc::clone(&runtime) as _;
        tokio::spawn(Arc::clone(&runtime.lease).keep(cache, stopped.clone()));
        let requests = runtime.lease.registry().handover_requests();
        tokio::spawn(Arc::clone(&runtime).serve_handovers(requests));
        runtime
    }

    pub fn registry(&self) -> &Arc<dyn crate::store::Registry> {
        self.lease.registry()
    }

    /// Whether this worker serves now, or holds requests for a store
    /// that may come back within the grace: what readiness reports, so a
    /// proxy keeps sending through a store blip.
    pub fn is_ready(&self) -> bool {
        self.lease.is_held() || self.lease.in_grace()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Entities held in memory.
    pub fn active(&self) -> usize {
        self.entities.len()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Apply `request` to the entity `id` of type `E`, one request at a time;
    /// the reply waits at the output gate when it must
    /// ([`activation`](self::activation#the-output-gate)). Calls the handler
    /// makes go out through `calls`.
    pub async fn execute<E: Entity>(
        &self,
        entity: &E,
        id: &str,
        request: E::Request,
        options: Options,
        calls: &dyn CallSender,
    ) -> Result<EntityReply, RuntimeError> {
        let key = entity_key(E::KIND, id);
        let Options {
            durability,
            idempotency,
            origin,
            if_match,
            read,
        } = options;
        let durability = if entity.makes_calls(&request) || entity.always_durable(&request) {
            Durability::Durable
        } else {
            durability
        };
        let step = match origin {
            Origin::Client => Step::Request(request, if_match, read),
            Origin::Entity => Step::Call(request),
        };
        let (reply, gate) = self
            .with_loaded(entity, &key, calls, async |activation, loaded| {
                let applied =
                    self.apply(entity, activation, loaded, step, durability, idempotency)?;
                self.answer(entity, activation, loaded, applied, calls)
                    .await
            })
            .await?;
        if let Some(gate) = gate {
            self.wait_at_gate(gate).await?;
        }
        Ok(reply)
    }

    /// Run the due alarms of entity `id` of type `E`
    /// ([`Entity::on_alarm`]), earliest first, each as a durable change;
    /// returns how many ran. An entity whose alarms another worker's wake
    /// already ran (the store's index lags by a flush) runs none.
    pub async fn wake<E: Entity>(
        &self,
        entity: &E,
        id: &str,
        calls: &dyn CallSender,
    ) -> Result<usize, RuntimeError> {
        let key = entity_key(E::KIND, id);
        let (fired, gate) = self
            .with_loaded(entity, &key, calls, async |activation, loaded| {
                let (mut fired, mut last) = (0, None);
                while let Some(alarm) = loaded.meta.alarms.due(wall_clock_ms()).cloned() {
                    let step = Step::Alarm(alarm);
                    let applied =
                        self.apply(entity, activation, loaded, step, Durability::Durable, None)?;
                    let (_, gate) = self
                        .answer(entity, activation, loaded, applied, calls)
                        .await?;
                    (fired, last) = (fired + 1, gate);
                }
                Ok((fired, last))
            })
            .await?;
        if let Some(gate) = gate {
            self.wait_at_gate(gate).await?;
        }
        Ok(fired)
    }

    /// Run `work` on entity `key`, locked (one request at a time), claimed
    /// from the store on first use, with this worker's lease held and the
    /// calls an earlier request left awaited finished first. The lock is
    /// released when `work` returns (held replies wait unlocked).
    async fn with_loaded<E: Entity, T>(
        &self,
        entity: &E,
        key: &str,
        calls: &dyn CallSender,
        work: impl AsyncFnOnce(&Arc<Activation>, &mut Loaded) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let arrived = Instant::now();
        loop {
            let activation = self.entities.get_or_insert(key, self.now_ms()).await;
            let mut slot = activation.slot.lock().await;
            if activation.is_gone() {
                continue;
            }
            activation.touch(self.now_ms());
            while !activation.is_gone() && slot.loaded.is_none() {
                self.hold_for_lease(arrived).await?;
                if activation.is_gone() {
                    break;
                }
                slot.loaded = self
                    .claim_while_in_grace(entity, &activation, arrived)
                    .await?;
            }
            self.hold_for_lease(arrived).await?;
            if activation.is_gone() {
                // Revalidation dropped it while the request was held.
                continue;
            }
            let Some(loaded) = slot.loaded.as_mut() else {
                continue;
            };
            if loaded.meta.awaiting.is_some() {
                // An earlier request's calls first (unless the change that
                // recorded them failed to commit: going back drops them);
                // their reply is remembered for their idempotency key.
                Self::revert_if_failed(entity, &activation, loaded)?;
                if loaded.meta.awaiting.is_some() {
                    self.finish_calls(entity, &activation, loaded, calls)
                        .await?;
                }
            }
            return work(&activation, loaded).await;
        }
    }

    /// The reply to a step once applied: its own, or, when it made calls,
    /// the one after they are finished.
    async fn answer<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
        loaded: &mut Loaded,
        applied: Applied,
        calls: &dyn CallSender,
    ) -> Result<(EntityReply, Option<Gate>), RuntimeError> {
        match applied {
            Applied::Replied(reply, gate) => Ok((reply, gate)),
            Applied::Calling(gate) => {
                if let Some(gate) = gate {
                    self.wait_at_gate(gate).await?;
                }
                self.finish_calls(entity, activation, loaded, calls).await
            }
        }
    }

    /// Send the awaited calls and run the entity's `on_replies`, round after
    /// round, until it answers. The entity stays locked; every round's state
    /// is committed before its calls go out.
    async fn finish_calls<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
        loaded: &mut Loaded,
        calls: &dyn CallSender,
    ) -> Result<(EntityReply, Option<Gate>), RuntimeError> {
        loop {
            let Some(awaiting) = loaded.meta.awaiting.clone() else {
                return Err(RuntimeError::UndeclaredCalls { kind: E::KIND });
            };
            let replies = self.send_all(&awaiting, calls).await?;
            let step = Step::Replies(replies);
            let idempotency = awaiting.idempotency();
            match self.apply(
                entity,
                activation,
                loaded,
                step,
                Durability::Durable,
                idempotency,
            )? {
                Applied::Replied(reply, gate) => return Ok((reply, gate)),
                Applied::Calling(gate) => {
                    if let Some(gate) = gate {
                        self.wait_at_gate(gate).await?;
                    }
                }
            }
        }
    }

    /// Send one round of calls at once; each retries until it has a
    /// decided reply or the round's deadline passes.
    async fn send_all(
        &self,
        awaiting: &Awaiting,
        calls: &dyn CallSender,
    ) -> Result<Vec<Reply>, CallError> {
        let deadline = Instant::now() + self.config.call_timeout;
        let sent = awaiting.calls.iter().map(|call| calls.send(call, deadline));
        futures_util::future::join_all(sent)
            .await
            .into_iter()
            .collect()
    }

    /// If a durable change failed since the entity was last used, go back
    /// to the state before it. Returns the failures seen so far.
    fn revert_if_failed<E: Entity>(
        entity: &E,
        activation: &Activation,
        loaded: &mut Loaded,
    ) -> Result<u64, RuntimeError> {
        let (seen_failures, revert) = activation.revert_point();
        if let Some(row) = revert {
            Self::restore(entity, loaded, &row)?;
        }
        Ok(seen_failures)
    }

    /// Hold a request until the lease holds (at once when it does): while
    /// the store is away, for at most `store_grace` from when the request
    /// `arrived` and no longer than the lease's own grace
    /// ([`Lease::held_by`](crate::ownership::lease::Lease::held_by)); past
    /// it, 503 `lease_lost`. The entity stays locked meanwhile, so its
    /// requests are served in the order they came.
    async fn hold_for_lease(&self, arrived: Instant) -> Result<(), RuntimeError> {
        if self.lease.is_held() {
            return Ok(());
        }
        let waiting = Waiting::start();
        let held = self.lease.held_by(arrived + self.lease.grace()).await;
        waiting.end(held);
        if held {
            Ok(())
        } else {
            Err(RuntimeError::LeaseLost)
        }
    }

    /// Claim the entity, as [`Runtime::claim`]; a claim the store could not
    /// answer (it went away meanwhile) is `None`, to be tried again once
    /// the lease holds, while `store_grace` from `arrived` lasts.
    async fn claim_while_in_grace<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
        arrived: Instant,
    ) -> Result<Option<Loaded>, RuntimeError> {
        match self.claim(entity, activation).await {
            Ok(loaded) => Ok(Some(loaded)),
            Err(RuntimeError::Claim(ClaimError::Store(StoreError::Unavailable(why))))
                if Instant::now() + RETRY_AFTER_LAPSE < arrived + self.lease.grace() =>
            {
                tracing::debug!(key = %activation.key, %why, "claim failed; held for the store");
                tokio::time::sleep(RETRY_AFTER_LAPSE).await;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Claim the entity: at once when nobody alive owns it; from a live
    /// owner by asking it to hand the entity over, then asking the store
    /// again (with backoff) until it has, or `handoff_timeout` has passed.
    async fn claim<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
    ) -> Result<Loaded, RuntimeError> {
        let claimed = claim::claim(
            &*self.store,
            &activation.key,
            &self.owner,
            self.config.handoff_timeout,
        )
        .await;
        match claimed {
            Ok(claim) => {
                METRICS.claims.inc();
                activation.set_epoch(claim.epoch);
                Ok(Loaded::claimed(entity, &activation.key, claim)?)
            }
            Err(e) => {
                METRICS.claim_failures.inc();
                self.entities.evict(activation);
                Err(e.into())
            }
        }
    }

    /// Steps 4 and 5 of the request path, with the entity locked: answer
    /// an idempotency key seen before, or run the step and record what
    /// changed.
    fn apply<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
        loaded: &mut Loaded,
        step: Step<E>,
        durability: Durability,
        idempotency: Option<Idempotency>,
    ) -> Result<Applied, RuntimeError> {
        let seen_failures = Self::revert_if_failed(entity, activation, loaded)?;
        let seen = match (&step, &idempotency) {
            (Step::Request(..) | Step::Call(_), Some(idempotency)) => {
                loaded.meta.replies.answer_seen(idempotency, loaded.version)
            }
            _ => None,
        };
        let (reply, effect) = match seen {
            Some((reply, version)) => (
                Some(EntityReply {
                    reply,
                    version,
                    epoch: loaded.epoch,
                }),
                Effect::Read,
            ),
            None => self.run_handler(entity, activation, loaded, step, durability, idempotency)?,
        };
        let changed = !matches!(effect, Effect::Read);
        match activation.settle_request(effect, seen_failures) {
            Ok(gate) => {
                if changed {
                    self.flusher
                        .schedule(activation, durability == Durability::Durable);
                }
                Ok(match reply {
                    Some(reply) => Applied::Replied(reply, gate),
                    None => Applied::Calling(gate),
                })
            }
            Err(BuiltOnFailure) => {
                // A durable change under this request's view failed to commit
                // while it ran: go back now, and fail it like the others.
                Self::revert_if_failed(entity, activation, loaded)?;
                Err(RuntimeError::NotDurable(FlushFailure::Store(
                    StoreError::Unavailable(
                        "an earlier durable change to this entity did not commit".into(),
                    ),
                )))
            }
        }
    }

    /// Run the handler (or `on_replies`); on a change, encode the state,
    /// bump the version, record awaited calls or remember the reply for its
    /// idempotency key, and build the row. The reply is `None` when the
    /// step made calls.
    ///
    /// A change is undone (the state goes back to [`Loaded::encoded`])
    /// when a client's request would leave the state larger than
    /// `max_state_bytes` (413, nothing recorded), or made calls it did not
    /// declare. Calls from other entities ([`Origin::Entity`]) and the
    /// replies to this entity's calls are not capped: what the calls did
    /// to other entities has happened, and is recorded whatever its size.
    fn run_handler<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
        loaded: &mut Loaded,
        step: Step<E>,
        durability: Durability,
        idempotency: Option<Idempotency>,
    ) -> Result<(Option<EntityReply>, Effect), RuntimeError> {
        let state = held_state::<E>(&activation.key, &mut loaded.state)?;
        let ctx = Context {
            key: Arc::clone(&activation.key),
            now_ms: wall_clock_ms(),
            version: loaded.version,
            random: rand::random(),
        };
        let (capped, read) = match &step {
            Step::Request(_, _, read) => (true, *read),
            _ => (false, false),
        };
        let Outcome {
            next,
            changed,
            alarms,
        } = run_step(entity, state, step, &ctx);
        let (version, epoch) = (loaded.version, loaded.epoch);
        let unchanged = |reply| {
            let reply = EntityReply {
                reply,
                version,
                epoch,
            };
            Ok((Some(reply), Effect::Read))
        };
        if read && (changed || matches!(next, Next::Calls(_))) {
            self.undo(entity, activation, state, &loaded.encoded)?;
            return unchanged(read_changed_state::<E>());
        }
        match &next {
            Next::Reply(reply) if !changed && loaded.meta.awaiting.is_none() => {
                return unchanged(reply.clone());
            }
            _ => {}
        }
        let bytes = entity.encode(state);
        let max = self.config.max_state_bytes;
        if capped && bytes.len() > max && bytes.len() > loaded.encoded.len() {
            self.undo(entity, activation, state, &loaded.encoded)?;
            return unchanged(too_large::<E>(bytes.len(), max));
        }
        let durable = durability == Durability::Durable;
        if !durable && matches!(next, Next::Calls(_)) {
            // Calls go out only once the state recording them has
            // committed, which only a durable change waits for.
            self.undo(entity, activation, state, &loaded.encoded)?;
            return Err(RuntimeError::UndeclaredCalls { kind: E::KIND });
        }
        let kept = (next, alarms);
        Ok(self.record_change(activation, loaded, kept, idempotency, bytes, durable))
    }

    /// A change the handler made and the runtime keeps (what comes next,
    /// and its alarms): bump the version, set and cancel the alarms,
    /// remember the reply under its idempotency key (or the calls it
    /// awaits), and build the row to flush (with the row before it, for a
    /// durable change, to go back to if its flush fails).
    fn record_change(
        &self,
        activation: &Activation,
        loaded: &mut Loaded,
        (next, alarms): (Next, Vec<AlarmChange>),
        idempotency: Option<Idempotency>,
        bytes: Vec<u8>,
        durable: bool,
    ) -> (Option<EntityReply>, Effect) {
        let before = durable.then(|| {
            row(
                activation,
                loaded.epoch,
                loaded.version,
                &loaded.meta,
                &loaded.encoded,
            )
        });
        loaded.version += 1;
        for change in alarms {
            loaded.meta.alarms.apply(change);
        }
        let reply = match next {
            Next::Reply(reply) => {
                loaded.meta.awaiting = None;
                if let Some(idempotency) = idempotency {
                    loaded.meta.replies.remember(
                        idempotency,
                        reply.clone(),
                        loaded.version,
                        self.config.max_state_bytes,
                    );
                }
                Some(EntityReply {
                    reply,
                    version: loaded.version,
                    epoch: loaded.epoch,
                })
            }
            Next::Calls(calls) => {
                loaded.meta.awaiting = Some(Box::new(Awaiting::new(idempotency, calls)));
                None
            }
        };
        let row = row(
            activation,
            loaded.epoch,
            loaded.version,
            &loaded.meta,
            &bytes,
        );
        loaded.encoded = bytes.into_boxed_slice();
        let effect = match before {
            Some(before) => Effect::Durable { row, before },
            None => Effect::WriteBehind(row),
        };
        (reply, effect)
    }

    /// Put `state` back to `encoded` (its encoding before the handler ran).
    /// Bytes the entity encoded that it cannot decode are a bug in the
    /// entity type: the entity is dropped from memory, so the next request
    /// reloads what was committed.
    fn undo<E: Entity>(
        &self,
        entity: &E,
        activation: &Arc<Activation>,
        state: &mut E::State,
        encoded: &[u8],
    ) -> Result<(), RuntimeError> {
        match entity.decode(encoded) {
            Ok(before) => {
                *state = before;
                Ok(())
            }
            Err(reason) => {
                tracing::error!(key = %activation.key, %reason, "cannot decode the state the entity encoded; dropping it");
                self.entities.evict(activation);
                Err(ClaimError::Corrupt {
                    key: activation.key.to_string(),
                    reason,
                }
                .into())
            }
        }
    }

    /// Wait for the commit a held reply depends on, for as long as the
    /// lease holds or may come back within the store grace (the flusher
    /// retries the batch across a reconnect meanwhile). A worker cut off
    /// from its store for longer gets no commit and no lease; from then on
    /// another worker may claim the entity (and the flush, if it ever
    /// arrives, is fenced), so the reply is 503 `lease_lost` rather than
    /// after the cut heals: a proxy sends a replay-safe request on to the
    /// key's next candidate.
    async fn wait_at_gate(&self, gate: Gate) -> Result<(), RuntimeError> {
        let waited = Instant::now();
        let result = tokio::select! {
            result = gate => result.unwrap_or_else(|_| {
                Err(FlushFailure::Store(StoreError::Unavailable(
                    "the flusher stopped".into(),
                )))
            }),
            () = self.lease.lost() => return Err(RuntimeError::LeaseLost),
        };
        METRICS
            .durable_ack_seconds
            .observe(waited.elapsed().as_secs_f64());
        match result {
            Ok(()) => Ok(()),
            Err(FlushFailure::Fenced) => Err(RuntimeError::Fenced),
            Err(failure) => Err(RuntimeError::NotDurable(failure)),
        }
    }

    /// Go back to the state in `row` (a durable change after it failed).
    fn restore<E: Entity>(
        entity: &E,
        loaded: &mut Loaded,
        row: &FlushRow,
    ) -> Result<(), RuntimeError> {
        let epoch = loaded.epoch;
        *loaded = Loaded::stored(entity, &row.key, Some(&row.state), row.version, epoch)?;
        Ok(())
    }

    /// Passivate idle entities every quarter of `idle` until stopped.
    async fn passivate_forever(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = (self.config.idle / 4).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => self.passivate_idle(),
                _ = stop.changed() => return,
            }
        }
    }

    /// Drop entities idle longer than `idle` whose changes are all flushed;
    /// dirty ones go at a later sweep, after the flusher wrote them.
    pub fn passivate_idle(&self) {
        let idle_ms = u64::try_from(self.config.idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        for activation in self.entities.snapshot() {
            if now.saturating_sub(activation.idle_since_ms()) < idle_ms || !activation.is_clean() {
                continue;
            }
            // A request holding the lock is using it: not idle.
            let Ok(_slot) = activation.slot.try_lock() else {
                continue;
            };
            if activation.is_clean() {
                self.entities.evict(&activation);
                METRICS.passivations.inc();
            }
        }
    }

    /// Stop the background tasks and flush everything dirty, until
    /// `deadline`. Returns whether everything was written.
    pub async fn drain(&self, deadline: Instant) -> bool {
        let _ = self.stop.send(true);
        let task = self
            .flusher_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, task).await.is_err() {
                return false;
            }
        }
        if !self.flusher.flush_all(deadline).await {
            return false;
        }
        match self.store.release_all(&self.owner).await {
            Ok(released) => tracing::info!(released, "released every entity"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the entities; others claim them when the lease runs out")
            }
        }
        true
    }
}

/// A request held for the lease, in the metrics until it is let go.
struct Waiting {
    since: Instant,
}

impl Waiting {
    fn start() -> Self {
        METRICS.store_waiting.inc();
        Waiting {
            since: Instant::now(),
        }
    }

    /// The wait ended: the lease is back (`served`) or the grace ran out.
    fn end(self, served: bool) {
        let outcome = if served { "served" } else { "gave_up" };
        METRICS
            .store_wait_seconds
            .with_label_values(&[outcome])
            .observe(self.since.elapsed().as_secs_f64());
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        METRICS.store_waiting.dec();
    }
}

/// The row for an entity state's bytes, as of `version`.
fn row(
    activation: &Activation,
    epoch: i64,
    version: u64,
    meta: &envelope::Meta,
    state: &[u8],
) -> FlushRow {
    FlushRow {
        key: Arc::clone(&activation.key),
        epoch,
        version: i64::try_from(version).unwrap_or(i64::MAX),
        state: envelope::encode(state, meta),
        alarm_at: meta
            .alarms
            .next()
            .map(|alarm| i64::try_from(alarm.at_ms).unwrap_or(i64::MAX)),
    }
}

/// The state an activation holds, as `E`'s: an activation of another type
/// under this key is a bug, reported as unreadable state.
fn held_state<'s, E: Entity>(
    key: &str,
    state: &'s mut Box<dyn Any + Send>,
) -> Result<&'s mut E::State, RuntimeError> {
    state.downcast_mut::<E::State>().ok_or_else(|| {
        ClaimError::Corrupt {
            key: key.to_owned(),
            reason: format!("held state is not a {}", E::KIND),
        }
        .into()
    })
}

/// 413 `state_too_large`: a change would make a `E` `bytes` long.
fn too_large<E: Entity>(bytes: usize, max: usize) -> Reply {
    Reply::error(
        413,
        "state_too_large",
        format!(
            "the change would make this {} {bytes} bytes, over max_state_bytes ({max}); it was not applied",
            E::KIND
        ),
    )
}

/// A client's request: refused with 412 when its `If-Match` does not hold
/// (the handler does not run), else handled.
pub fn handle_request<E: Entity>(
    entity: &E,
    state: &mut E::State,
    request: E::Request,
    ctx: &Context,
    if_match: Option<&IfMatch>,
) -> Outcome {
    let exists = ctx.version > 0 && entity.exists(state);
    match if_match.and_then(|condition| condition.check(ctx.version, exists)) {
        Some(refused) => Outcome::read(refused),
        None => entity.handle(state, request, ctx),
    }
}

/// Run the handler a step is for. A fired alarm is a change whatever the
/// handler did: the alarm is gone (cancelled before anything the handler
/// set, so it may set the same id again).
fn run_step<E: Entity>(entity: &E, state: &mut E::State, step: Step<E>, ctx: &Context) -> Outcome {
    match step {
        Step::Request(request, if_match, _) => {
            handle_request(entity, state, request, ctx, if_match.as_ref())
        }
        Step::Call(request) => entity.handle(state, request, ctx),
        Step::Replies(replies) => entity.on_replies(state, replies, ctx),
        Step::Alarm(alarm) => {
            let mut outcome = entity.on_alarm(state, &alarm, ctx);
            outcome.alarms.insert(0, AlarmChange::Cancel(alarm.id));
            outcome.changed = true;
            outcome
        }
    }
}

/// 500 `read_changed_state`: a `GET` action's handler changed the state
/// (a bug in the entity type; the change is undone, since a proxy may
/// send a `GET` twice).
/// The store key of entity `id` of kind `kind`: `{kind}/{id}`.
pub fn entity_key(kind: &str, id: &str) -> String {
    [kind, "/", id].concat()
}

pub fn read_changed_state<E: Entity>() -> Reply {
    Reply::error(
        500,
        "read_changed_state",
        format!(
            "{}'s read action changed the state; the change was undone",
            E::KIND
        ),
    )
}

/// Milliseconds since the Unix epoch (handlers' notion of now).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait::async_trait]
impl Revalidate for Runtime {
    /// After the lease lapsed: drop every cached entity whose stored epoch
    /// is no longer the one it was claimed under (another worker claimed it
    /// meanwhile). Returns how many were dropped.
    async fn revalidate(&self) -> Result<usize, StoreError> {
        let held: Vec<Arc<Activation>> = self
            .entities
            .snapshot()
            .into_iter()
            .filter(|a| a.epoch().is_some())
            .collect();
        let epochs: Vec<(String, i64)> = held
            .iter()
            .filter_map(|a| Some((a.key.to_string(), a.epoch()?)))
            .collect();
        let stale = revalidation::stale(&*self.store, &epochs).await?;
        for &position in &stale {
            let activation = &held[position];
            self.entities.evict(activation);
            activation.fence();
            METRICS.revalidation_drops.inc();
        }
        Ok(stale.len())
    }
}
