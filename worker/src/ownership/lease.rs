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
//! (the runtime), so the lease knows nothing of what it guards. The lease
//! counts as held only under the holding of the lock it was last validated
//! under ([`Registry::lock_held`]), so the moment between taking the lock
//! again and the end of that revalidation serves nothing either.
//!
//! # The store grace
//!
//! A store that is out of reach for a moment (Postgres restarting, a short
//! partition) need not be an error for clients: for `store_grace` after the
//! last renewal that reached the store, what needs the lease waits for it
//! ([`Lease::held_by`]) instead of failing, and readiness keeps passing
//! ([`Lease::in_grace`]). Nothing is served meanwhile: waiting requests are
//! held, not answered, until the lease is back (lock taken again, entities
//! revalidated). After a lapse the lease is renewed every
//! [`RETRY_AFTER_LAPSE`] rather than every `renew_every`, so it is back as
//! soon as the store is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use async_trait::async_trait;

use crate::store::{Member, Registry, Renewal, StoreError, StoreResult};

/// Part of the lease given up for clock-rate drift between this machine
/// and the store's.
pub const DRIFT_MARGIN: f64 = 0.05;

/// How often [`Lease::lapsed`] looks at the liveness lock between the
/// lease's own deadlines (the registry reports a lost lock as a flag).
const LOCK_LOOK_EVERY: Duration = Duration::from_millis(50);

/// How soon a renewal is tried again after one failed or the lease lapsed.
pub const RETRY_AFTER_LAPSE: Duration = Duration::from_millis(50);

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
    /// How long after the last renewal that reached the store requests wait
    /// for a lapsed lease to come back, rather than fail.
    pub store_grace: Duration,
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
    /// Microseconds after `origin` when the last renewal that reached the
    /// store was sent: the lease holds until then plus the usable duration.
    renewed_at_us: AtomicU64,
    /// The holding of the liveness lock the lease was last validated under
    /// (0: none yet).
    holding: AtomicU64,
    /// Set when another process took this worker's id: never serve again.
    revoked: AtomicBool,
    /// Woken whenever a renewal has made the lease hold.
    renewed: Notify,
    /// `true` from the moment the lease is lost (lapsed, and the store
    /// grace ran out) until it holds again; kept by [`Lease::signal_loss`].
    lost: watch::Sender<bool>,
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
            renewed_at_us: AtomicU64::new(0),
            holding: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
            renewed: Notify::new(),
            lost: watch::Sender::new(false),
        });
        let sent = Instant::now();
        lease
            .registry
            .join(member, config.duration, config.join_patience)
            .await?;
        lease.validated_under(lease.registry.lock_held());
        lease.extend_from(sent);
        tokio::spawn(Arc::clone(&lease).signal_loss());
        Ok(lease)
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// Whether this worker may serve right now.
    pub fn is_held(&self) -> bool {
        !self.revoked.load(Ordering::Acquire)
            && self.registry.lock_held() == Some(self.holding.load(Ordering::Acquire))
            && self.now_us() < self.valid_until_us()
    }

    /// Whether the store has been out of reach for less than `store_grace`
    /// (counted from the last renewal that reached it): what needs the
    /// lease may still wait for it.
    pub fn in_grace(&self) -> bool {
        !self.revoked.load(Ordering::Acquire) && Instant::now() < self.grace_ends()
    }

    /// How long a request may be held for the lease (`store_grace`).
    pub fn grace(&self) -> Duration {
        self.config.store_grace
    }

    /// Wait until the lease holds, no later than `deadline` nor the end of
    /// the store grace; whether it holds.
    pub async fn held_by(&self, deadline: Instant) -> bool {
        loop {
            let renewed = self.renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            if self.is_held() {
                return true;
            }
            let until = deadline.min(self.grace_ends());
            if Instant::now() >= until || self.revoked.load(Ordering::Acquire) {
                return false;
            }
            tokio::select! {
                () = renewed => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// Resolves once this worker can no longer be sure of its lease: what
    /// waits on the store (a reply held for a commit) stops waiting then,
    /// since another worker may claim the entity from that moment.
    pub async fn lapsed(&self) {
        while self.is_held() {
            let until = self.origin + Duration::from_micros(self.valid_until_us());
            let next = until.min(Instant::now() + LOCK_LOOK_EVERY);
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// Resolves once the lease has lapsed and the store grace has run out
    /// without it coming back. Costs no timer of its own: one task
    /// ([`Lease::signal_loss`]) times the lease for every waiter.
    pub async fn lost(&self) {
        let mut lost = self.lost.subscribe();
        // The sender lives as long as `self`: the wait ends only on `true`.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Raise and lower [`Lease::lost`]'s signal for as long as the lease
    /// is in use: a reply held for a commit waits on the signal rather
    /// than arming a timer per reply.
    async fn signal_loss(self: Arc<Self>) {
        loop {
            self.lapsed_past_grace().await;
            self.lost.send_replace(true);
            self.held_again().await;
            self.lost.send_replace(false);
        }
    }

    /// Resolves once the lease has lapsed and the store grace has run out
    /// without it coming back.
    async fn lapsed_past_grace(&self) {
        loop {
            self.lapsed().await;
            if !self.held_by(self.grace_ends()).await {
                return;
            }
        }
    }

    /// Resolves once the lease holds (again).
    async fn held_again(&self) {
        loop {
            let renewed = self.renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            if self.is_held() {
                return;
            }
            renewed.await;
        }
    }

    fn now_us(&self) -> u64 {
        self.micros_since_origin(Instant::now())
    }

    fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// The lease as counted: the duration less the drift margin.
    fn usable(&self) -> Duration {
        self.config.duration.mul_f64(1.0 - DRIFT_MARGIN)
    }

    fn valid_until_us(&self) -> u64 {
        let usable = u64::try_from(self.usable().as_micros()).unwrap_or(u64::MAX);
        self.renewed_at_us
            .load(Ordering::Acquire)
            .saturating_add(usable)
    }

    fn grace_ends(&self) -> Instant {
        self.origin
            + Duration::from_micros(self.renewed_at_us.load(Ordering::Acquire))
            + self.config.store_grace
    }

    /// A renewal sent at `sent` reached the store: the lease now runs
    /// until then plus the usable duration.
    fn extend_from(&self, sent: Instant) {
        let sent = self.micros_since_origin(sent);
        self.renewed_at_us.fetch_max(sent, Ordering::AcqRel);
        self.renewed.notify_waiters();
    }

    /// The entities held are valid under `holding` of the lock (revalidated,
    /// or never in doubt).
    fn validated_under(&self, holding: Option<u64>) {
        if let Some(holding) = holding {
            self.holding.store(holding, Ordering::Release);
        }
    }

    /// Renew every `renew_every` (at once when the lease lapses, and every
    /// [`RETRY_AFTER_LAPSE`] while it does not hold) until `stop`;
    /// revalidate `cache`'s entities whenever the lease did not hold all
    /// along.
    pub async fn keep(
        self: Arc<Self>,
        cache: Arc<dyn Revalidate>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failed = 0_u32;
        loop {
            let wait = if failed == 0 {
                self.config.renew_every
            } else {
                RETRY_AFTER_LAPSE
            };
            let held = self.is_held();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.lapsed(), if held => {}
                _ = stop.changed() => return,
            }
            match self.renew_once(cache.as_ref()).await {
                Ok(()) if failed > 0 => {
                    tracing::info!(failed, "lease renewed again");
                    failed = 0;
                }
                Ok(()) => {}
                Err(why) => {
                    if failed == 0 {
                        tracing::warn!(%why, "lease renewal failed; retrying every {RETRY_AFTER_LAPSE:?}");
                    }
                    failed = failed.saturating_add(1);
                }
            }
        }
    }

    /// One renewal: `Ok` when the lease holds after it, else why not.
    async fn renew_once(&self, cache: &dyn Revalidate) -> Result<(), String> {
        let sent = Instant::now();
        let renewal = tokio::time::timeout(
            self.config.duration / 2,
            self.registry.renew(self.config.duration),
        )
        .await;
        match renewal {
            Ok(Ok(renewal)) => {
                let holding = self.registry.lock_held();
                // Only a renewal that returned while the old lease still held
                // surely executed before the stored expiry.
                let continuous = renewal == Renewal::Continuous && self.is_held();
                if !continuous {
                    let dropped = cache
                        .revalidate()
                        .await
                        .map_err(|e| format!("cannot revalidate entities: {e}"))?;
                    tracing::warn!(
                        dropped,
                        "lease regained; entities claimed elsewhere meanwhile were dropped"
                    );
                }
                self.validated_under(holding);
                self.extend_from(sent);
                if self.is_held() {
                    Ok(())
                } else {
                    Err("the liveness lock was lost again".into())
                }
            }
            Ok(Err(StoreError::Fatal(message))) => {
                tracing::error!(%message, "lease revoked; this worker will serve nothing more");
                self.revoked.store(true, Ordering::Release);
                self.renewed.notify_waiters();
                Err(message)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.config.duration / 2)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The lease against a registry whose lock the test takes and loses by
    //! hand, with the store's answers immediate.

    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::store::membership::{Holding, Membership};
    use crate::store::MemberStatus;

    #[derive(Default)]
    struct HandRegistry {
        membership: Membership,
        holding: Mutex<Option<Holding>>,
    }

    impl HandRegistry {
        fn take_lock(&self) {
            let holding = self.membership.new_holding();
            holding.locked();
            *self.holding.lock().unwrap_or_else(|p| p.into_inner()) = Some(holding);
        }

        /// The lock's connection ended (a store restart).
        fn lose_lock(&self) {
            if let Some(holding) = self
                .holding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                holding.lost();
            }
        }
    }

    #[async_trait]
    impl Registry for HandRegistry {
        async fn join(&self, member: &Member, _: Duration, _: Duration) -> StoreResult<i64> {
            self.membership.joining(member);
            self.take_lock();
            Ok(1)
        }

        async fn renew(&self, _: Duration) -> StoreResult<Renewal> {
            if self.lock_held().is_some() {
                return Ok(Renewal::Continuous);
            }
            self.take_lock();
            Ok(Renewal::Rejoined)
        }

        async fn set_status(&self, _: MemberStatus) -> StoreResult<()> {
            Ok(())
        }

        fn handover_requests(&self) -> mpsc::UnboundedReceiver<String> {
            self.membership.take_requests()
        }

        fn lock_held(&self) -> Option<u64> {
            self.membership.lock_held()
        }
    }

    /// A revalidation that waits until the test lets it finish.
    #[derive(Default)]
    struct GatedRevalidation {
        started: Notify,
        finish: Notify,
    }

    #[async_trait]
    impl Revalidate for GatedRevalidation {
        async fn revalidate(&self) -> Result<usize, StoreError> {
            self.started.notify_one();
            self.finish.notified().await;
            Ok(0)
        }
    }

    async fn joined(store_grace: Duration) -> (Arc<HandRegistry>, Arc<Lease>) {
        let registry = Arc::new(HandRegistry::default());
        let config = LeaseConfig {
            duration: Duration::from_secs(10),
            renew_every: Duration::from_secs(1),
            join_patience: Duration::ZERO,
            store_grace,
        };
        let member = Member {
            id: "w1".into(),
            addr: "127.0.0.1:1".into(),
        };
        let lease = Lease::join(Arc::clone(&registry) as _, &member, config)
            .await
            .expect("the hand registry joins");
        (registry, lease)
    }

    #[tokio::test]
    async fn a_lock_taken_again_serves_nothing_until_revalidated() {
        let (registry, lease) = joined(Duration::from_secs(2)).await;
        assert!(lease.is_held());
        registry.lose_lock();
        assert!(!lease.is_held(), "a lost lock stops serving at once");

        let revalidation = Arc::new(GatedRevalidation::default());
        let renewing = {
            let (lease, revalidation) = (Arc::clone(&lease), Arc::clone(&revalidation));
            tokio::spawn(async move { lease.renew_once(revalidation.as_ref()).await })
        };
        revalidation.started.notified().await;
        assert!(registry.lock_held().is_some(), "the lock is taken again");
        assert!(
            !lease.is_held(),
            "between taking the lock again and revalidating, nothing is served"
        );
        assert!(lease.in_grace(), "readiness holds through the blip");
        revalidation.finish.notify_one();
        let renewed = renewing.await.expect("the renewal task ends");
        assert_eq!(renewed, Ok(()));
        assert!(lease.is_held());
    }

    #[tokio::test]
    async fn a_request_held_for_the_lease_is_let_go_when_it_is_back() {
        let (registry, lease) = joined(Duration::from_secs(2)).await;
        registry.lose_lock();
        let held = {
            let lease = Arc::clone(&lease);
            tokio::spawn(
                async move { lease.held_by(Instant::now() + Duration::from_secs(5)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!held.is_finished(), "the request waits for the lease");
        let revalidation = GatedRevalidation::default();
        revalidation.finish.notify_one();
        assert_eq!(lease.renew_once(&revalidation).await, Ok(()));
        assert!(held.await.expect("the held task ends"), "let go, served");
    }

    #[tokio::test]
    async fn past_the_grace_a_request_is_not_held() {
        let (registry, lease) = joined(Duration::from_millis(50)).await;
        registry.lose_lock();
        let waited = Instant::now();
        assert!(!lease.held_by(Instant::now() + Duration::from_secs(5)).await);
        assert!(
            waited.elapsed() < Duration::from_secs(1),
            "the grace (50 ms after the last renewal) bounds the wait"
        );
        assert!(!lease.in_grace(), "readiness fails past the grace");
        lease.lost().await;
    }

    #[tokio::test]
    async fn the_loss_signal_falls_again_when_the_lease_is_back() {
        let (registry, lease) = joined(Duration::from_millis(50)).await;
        registry.lose_lock();
        tokio::time::timeout(Duration::from_secs(1), lease.lost())
            .await
            .expect("lost once the grace has run out");
        let revalidation = GatedRevalidation::default();
        revalidation.finish.notify_one();
        assert_eq!(lease.renew_once(&revalidation).await, Ok(()));
        let mut lost = lease.lost.subscribe();
        tokio::time::timeout(Duration::from_secs(1), lost.wait_for(|lost| !*lost))
            .await
            .expect("the signal falls when the lease holds again")
            .expect("the lease keeps its sender");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), lease.lost())
                .await
                .is_err(),
            "a held lease is not lost"
        );
    }
}
