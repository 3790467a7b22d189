//! The Postgres registry: one worker's row in `roost_workers`, its lease,
//! its liveness lock and its hand-over inbox, all on one dedicated
//! connection.
//!
//! The connection holds `pg_advisory_lock(7265, lock_id)` at session level
//! and `LISTEN`s on `roost_handover_<lock_id>`, and on [`FLEET_CHANNEL`],
//! which every worker notifies when it goes live or changes status, so the
//! others re-read the live workers at once rather than at their next
//! periodic read (calls then agree with the proxy sooner after a worker
//! joins or drains). Between heartbeats it is idle,
//! so when the process dies Postgres notices the closed socket and frees the
//! lock within milliseconds: claimers then take the worker's entities at
//! once. When the connection drops while the process lives (Postgres
//! restarted, network cut), [`Registry::lock_held`] turns `None` the moment
//! the driver task sees it, and the next renewal connects again, takes the
//! lock again and reports [`Renewal::Rejoined`].

use std::future::poll_fn;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{AsyncMessage, Client};

use roost_routing::postgres::Endpoint;
use roost_routing::registry::FLEET_CHANNEL;

use super::{unavailable, LOCK_SPACE};
use crate::store::membership::{Holding, Membership};
use crate::store::{Member, MemberStatus, Registry, Renewal, StoreError, StoreResult};

const REGISTER: &str = "
INSERT INTO roost_workers (id, addr) VALUES ($1, $2)
ON CONFLICT (id) DO NOTHING";

const LOCK_ID: &str = "SELECT lock_id FROM roost_workers WHERE id = $1";

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1, $2)";

const GO_LIVE: &str = "
UPDATE roost_workers
SET addr = $2, generation = generation + 1, status = 'live',
    lease_expires_at = now() + $3 * interval '1 millisecond', updated_at = now()
WHERE id = $1
RETURNING generation";

const RENEW: &str = "
UPDATE roost_workers
SET lease_expires_at = now() + $3 * interval '1 millisecond', updated_at = now()
WHERE id = $1 AND generation = $2";

const SET_STATUS: &str = "
UPDATE roost_workers SET status = $3, updated_at = now() WHERE id = $1 AND generation = $2";

/// How often `join` tries the lock while an earlier process holds it.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// [`Registry`] on a dedicated Postgres connection.
pub struct PostgresRegistry {
    endpoint: Endpoint,
    /// The heartbeat connection; `None` before `join` and after it dropped.
    client: tokio::sync::Mutex<Option<Client>>,
    /// Locked while the heartbeat connection (and so the lock) is up.
    membership: Membership,
    /// Woken by a notification on [`FLEET_CHANNEL`].
    fleet_changed: Arc<Notify>,
}

impl PostgresRegistry {
    pub fn new(endpoint: Endpoint) -> Self {
        PostgresRegistry {
            endpoint,
            client: tokio::sync::Mutex::new(None),
            membership: Membership::default(),
            fleet_changed: Arc::new(Notify::new()),
        }
    }

    /// Open the heartbeat connection; its driver task forwards hand-over
    /// requests and fleet changes, and marks the lock lost when the
    /// connection ends.
    async fn connect(&self) -> StoreResult<(Client, Holding)> {
        let (client, mut connection) = self.endpoint.connect().await.map_err(unavailable)?;
        let holding = self.membership.new_holding();
        let (inbox, watched) = (self.membership.inbox(), holding.clone());
        let fleet_changed = Arc::clone(&self.fleet_changed);
        tokio::spawn(async move {
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) if n.channel() == FLEET_CHANNEL => {
                        fleet_changed.notify_one();
                    }
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = inbox.send(n.payload().to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "registry connection failed");
                        break;
                    }
                }
            }
            watched.lost();
        });
        Ok((client, holding))
    }

    /// Register the row if new and take the advisory lock, trying until
    /// `patience` has passed.
    async fn lock(
        &self,
        client: &Client,
        holding: &Holding,
        member: &Member,
        patience: Duration,
    ) -> StoreResult<()> {
        client
            .execute(REGISTER, &[&member.id, &member.addr])
            .await
            .map_err(unavailable)?;
        let lock_id: i32 = client
            .query_one(LOCK_ID, &[&member.id])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let taken: bool = client
                .query_one(TRY_LOCK, &[&LOCK_SPACE, &lock_id])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(unavailable)?;
            if taken {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Fatal(format!(
                    "another live process holds worker id {:?}",
                    member.id
                )));
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
        client
            .batch_execute(&format!(
                "LISTEN roost_handover_{lock_id}; LISTEN {FLEET_CHANNEL}"
            ))
            .await
            .map_err(unavailable)?;
        holding.locked();
        Ok(())
    }

    async fn extend(&self, client: &Client, member: &Member, lease: Duration) -> StoreResult<()> {
        let generation = self.membership.generation();
        let renewed = client
            .execute(RENEW, &[&member.id, &generation, &millis(lease)])
            .await
            .map_err(unavailable)?;
        if renewed == 0 {
            return Err(StoreError::Fatal(format!(
                "worker id {:?} was registered again by another process",
                member.id
            )));
        }
        Ok(())
    }
}

/// Tell the other workers the live set changed. Best effort: they re-read
/// it periodically anyway.
async fn announce(client: &Client) {
    if let Err(e) = client
        .batch_execute(&format!("NOTIFY {FLEET_CHANNEL}"))
        .await
    {
        tracing::debug!(error = %e, "could not announce the fleet change");
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[async_trait]
impl Registry for PostgresRegistry {
    async fn join(&self, member: &Member, lease: Duration, patience: Duration) -> StoreResult<i64> {
        self.membership.joining(member);
        let (client, holding) = self.connect().await?;
        self.lock(&client, &holding, member, patience).await?;
        let generation: i64 = client
            .query_one(GO_LIVE, &[&member.id, &member.addr, &millis(lease)])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(unavailable)?;
        self.membership.set_generation(generation);
        announce(&client).await;
        *self.client.lock().await = Some(client);
        Ok(generation)
    }

    async fn renew(&self, lease: Duration) -> StoreResult<Renewal> {
        let member = self.membership.member()?;
        let mut client = self.client.lock().await;
        if let Some(live) = client.as_ref().filter(|_| self.lock_held().is_some()) {
            self.extend(live, &member, lease).await?;
            return Ok(Renewal::Continuous);
        }
        *client = None;
        let (fresh, holding) = self.connect().await?;
        // Our lost session may still hold the lock until Postgres notices it
        // is gone (a cut network): not fatal, the next heartbeat tries again,
        // and meanwhile the lease runs out and nothing is served.
        self.lock(&fresh, &holding, &member, Duration::ZERO)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot take the lock again yet: {e}")))?;
        self.extend(&fresh, &member, lease).await?;
        *client = Some(fresh);
        Ok(Renewal::Rejoined)
    }

    async fn set_status(&self, status: MemberStatus) -> StoreResult<()> {
        let member = self.membership.member()?;
        let client = self.client.lock().await;
        let client = client
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("registry connection is down".into()))?;
        let generation = self.membership.generation();
        client
            .execute(SET_STATUS, &[&member.id, &generation, &status.as_str()])
            .await
            .map_err(unavailable)?;
        announce(client).await;
        Ok(())
    }

    fn handover_requests(&self) -> mpsc::UnboundedReceiver<String> {
        self.membership.take_requests()
    }

    fn fleet_changes(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.fleet_changed))
    }

    fn lock_held(&self) -> Option<u64> {
        self.membership.lock_held()
    }
}
