//! The lease: a worker serves an entity only while it is sure no other
//! worker may have claimed it.
//!
//! Other workers claim a live worker's entities only after its lease in the
//! workers table has expired (by the store's clock), or once its liveness
//! lock is free. So this worker counts its lease from the moment it *sent*
//! the renewal (a renewal executes later than that, so the stored expiry is
//! later than ours), shortened by [`DRIFT_MARGIN`] for clock-rate drift, on
//! the monotonic clock; and it stops at once when the registry reports its
//! lock lost. Between those two it serves; outside them every request gets
//! 503 and readiness fails.
//!
//! When a renewal did not follow on from a valid lease (the lease ran out,
//! or the lock had been lost and taken again), entities may have been
//! claimed elsewhere meanwhile: before serving again the worker revalidates
//! every cached entity's epoch against the store and drops those whose epoch
//! moved on: whatever holds the entities does that, through [`Revalidate`]
//! (the runtime), so the lease knows nothing of what it guards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use async_trait::async_trait;

use crate::store::{Member, Registry, Renewal, StoreError, StoreResult};

/// Part of the lease given up for clock-rate drift between this machine
/// and the store's.
pub const DRIFT_MARGIN: f64 = 0.05;

/// How often [`Lease::lapsed`] looks at the liveness lock between the
/// lease's own deadlines (the registry reports a lost lock as a flag).
const LOCK_LOOK_EVERY: Duration = Duration::from_millis(100);

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// How long a renewal keeps the lease.
    pub duration: Duration,
    /// How often it is renewed.
    pub renew_every: Duration,
    /// How long to wait at start for an earlier process with this worker's
    /// id to let go of its lock.
    pub join_patience: Duration,
}

/// What holds entities claimed under the lease: after a lapse it must drop
/// the ones other workers claimed meanwhile before the lease is used again.
#[async_trait]
pub trait Revalidate: Send + Sync {
    /// Drop every cached entity whose stored epoch is no longer the one it
    /// was claimed under; how many were dropped.
    async fn revalidate(&self) -> Result<usize, StoreError>;
}

/// This worker's lease, as far as it can be sure of it.
pub struct Lease {
    registry: Arc<dyn Registry>,
    config: LeaseConfig,
    origin: Instant,
    /// Microseconds after `origin` until which the lease surely holds.
    valid_until_us: AtomicU64,
    /// Set when another process took this worker's id: never serve again.
    revoked: AtomicBool,
}

impl Lease {
    /// Join the fleet: take the liveness lock and register as live.
    pub async fn join(
        registry: Arc<dyn Registry>,
        member: &Member,
        config: LeaseConfig,
    ) -> StoreResult<Arc<Lease>> {
        let lease = Arc::new(Lease {
            registry,
            config,
            origin: Instant::now(),
            valid_until_us: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
        });
        let sent = Instant::now();
        lease
            .registry
            .join(member, config.duration, config.join_patience)
            .await?;
        lease.extend_from(sent);
        Ok(lease)
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// Whether this worker may serve right now.
    pub fn is_held(&self) -> bool {
        !self.revoked.load(Ordering::Acquire)
            && self.registry.holds_lock()
            && self.micros_since_origin(Instant::now())
                < self.valid_until_us.load(Ordering::Acquire)
    }

    /// Resolves once this worker can no longer be sure of its lease: what
    /// waits on the store (a reply held for a commit) stops waiting then,
    /// since another worker may claim the entity from that moment.
    pub async fn lapsed(&self) {
        while self.is_held() {
            let until =
                self.origin + Duration::from_micros(self.valid_until_us.load(Ordering::Acquire));
            let next = until.min(Instant::now() + LOCK_LOOK_EVERY);
            tokio::time::sleep_until(next.into()).await;
        }
    }

    fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// The lease now runs until `sent` + the duration less the drift margin.
    fn extend_from(&self, sent: Instant) {
        let usable = self.config.duration.mul_f64(1.0 - DRIFT_MARGIN);
        let until = self.micros_since_origin(sent + usable);
        self.valid_until_us.fetch_max(until, Ordering::AcqRel);
    }

    /// Renew every `renew_every` until `stop`; revalidate `cache`'s
    /// entities whenever the lease did not hold all along.
    pub async fn keep(
        self: Arc<Self>,
        cache: Arc<dyn Revalidate>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.renew_every) => {}
                _ = stop.changed() => return,
            }
            self.renew_once(cache.as_ref()).await;
        }
    }

    async fn renew_once(&self, cache: &dyn Revalidate) {
        let sent = Instant::now();
        let renewal = tokio::time::timeout(
            self.config.duration / 2,
            self.registry.renew(self.config.duration),
        )
        .await;
        match renewal {
            Ok(Ok(renewal)) => {
                // Only a renewal that returned while the old lease still held
                // surely executed before the stored expiry.
                let continuous = renewal == Renewal::Continuous && self.is_held();
                if !continuous {
                    match cache.revalidate().await {
                        Ok(dropped) => {
                            tracing::warn!(
                                dropped,
                                "lease regained; entities claimed elsewhere meanwhile were dropped"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot revalidate entities; still not serving");
                            return;
                        }
                    }
                }
                self.extend_from(sent);
            }
            Ok(Err(StoreError::Fatal(message))) => {
                tracing::error!(%message, "lease revoked; this worker will serve nothing more");
                self.revoked.store(true, Ordering::Release);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease renewal failed; serving stops when the lease runs out");
            }
            Err(_) => {
                tracing::warn!("lease renewal timed out; serving stops when the lease runs out");
            }
        }
    }
}
