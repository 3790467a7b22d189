//! Ownership: claims, epochs, the lease, hand-overs and revalidation, the
//! part of DESIGN.md's protocol that keeps a stale owner from overwriting a
//! newer one and two workers from serving one entity at once.
//!
//! - [`claim`]: taking an entity from the store (asking a live owner to
//!   hand it over first);
//! - [`lease`]: whether this worker may serve at all;
//! - [`revalidation`]: which held entities moved on during a lapse;
//! - the hand-over itself (flush, release, forget) runs where the entities
//!   are held, `crate::runtime::handover`, since it must hold the entity's
//!   lock while it releases it.
//!
//! # Invariants and who upholds them
//!
//! 1. **A worker serves an entity only under a claim.** An activation holds
//!    no state until its claim has returned; the claim bumps the stored epoch
//!    and sets the owner in one statement ([`crate::store::Store::claim`]), so
//!    two claims are always ordered and the later one has the higher epoch.
//!    The statement takes the entity only from an owner that released it or
//!    is not alive (its liveness lock is free, or its lease has expired); a
//!    live owner is asked to hand it over first (it flushes, forgets and
//!    releases it), and the claim waits for that, at most
//!    `handoff_timeout_ms`.
//! 2. **Every write is guarded by the epoch it was claimed with.** Rows carry
//!    their claim's epoch ([`crate::store::FlushRow::epoch`]); the store
//!    writes a row only while the stored epoch still equals it. A worker whose
//!    entity was claimed by another therefore writes nothing for it, ever
//!    (G1: no stale owner overwrites a newer one).
//! 3. **A fenced entity leaves memory at once.** When a flush reports a row
//!    fenced, the flusher evicts the activation
//!    ([`crate::runtime::flusher`]); the next request for it on this worker
//!    claims it afresh from the store's latest state.
//! 4. **A durable write is acknowledged only after its batch committed**, no
//!    reply that may reveal it goes out before then, and a durable write
//!    whose batch failed is undone in memory before any further request runs
//!    (the output gate, [`crate::runtime::activation`]), so an acknowledged
//!    durable write is in the store and an unacknowledged one is nowhere.
//!
//! 5. **A worker serves only while its lease surely holds** ([`lease`]):
//!    counted from before each renewal was sent, less a drift margin, and
//!    ended at once when its liveness lock is lost. Others claim its entities
//!    only after the stored lease (which runs longer) has expired, or once
//!    the lock is free, so two workers never serve one entity at the same
//!    instant (G2). After a lapse it serves nothing until it has renewed and
//!    dropped every entity whose epoch moved on ([`revalidation`]): the
//!    lease holds only under the holding of the lock it was validated
//!    under. Requests that come meanwhile are held, not answered, for at
//!    most `store_grace_ms` after the last renewal that reached the store.
//! 6. **A hand-over releases only what it flushed, under the entity's
//!    lock**: the owner asked finishes the request in progress, flushes the
//!    entity and releases it in the store before it forgets it, so no
//!    request of its own can claim the key back between its last look and
//!    the release; a flush that does not complete in time keeps the entity
//!    (the claimer times out).

pub mod claim;
pub mod lease;
pub mod revalidation;

use crate::store::StoreError;

/// Why an entity could not be activated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its live owner did not hand it over within `handoff_timeout_ms`.
    #[error("worker {owner} did not hand the entity over in time")]
    HandoffTimeout { owner: String },
    /// The stored bytes do not decode as this entity type.
    #[error("stored state of {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

impl ClaimError {
    /// The stored bytes of `key` do not decode, for `reason`.
    pub fn corrupt(key: &str, reason: String) -> Self {
        ClaimError::Corrupt {
            key: key.to_owned(),
            reason,
        }
    }
}
