//! The Postgres store: tokio-postgres behind a deadpool pool, and the
//! registry on a connection of its own. Both connect as the store URL
//! says, read as libpq reads it (`sslmode`, `sslrootcert`, the password
//! from `PGPASSWORD` or a password file: [`roost_routing::postgres`]).
//!
//! A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`: it
//! takes the row only when the owner is the claimer, released it, or is not
//! alive, meaning it does not both hold its advisory lock (seen in
//! `pg_locks`) and have an unexpired lease. A flush is one `UPDATE … FROM
//! UNNEST(…)` over the whole batch, guarded per row by its epoch, answering
//! with the positions of the rows it did not write (usually none, so a
//! batch's answer is a few bytes whatever its size). The flusher's
//! batches in flight run at once, each on a pooled connection of its own, in
//! its own transaction; they hold disjoint rows (an entity is in one batch
//! in flight at most), so they do not wait for each other's row locks.
//!
//! The registry keeps one dedicated connection that holds the worker's
//! session-level advisory lock and LISTENs for hand-over requests; it stays
//! idle between short heartbeats, so Postgres frees the lock within
//! milliseconds of the process dying (DESIGN.md, "Ownership").

pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use roost_routing::postgres::{certificate_rejected, describe, Endpoint};

use super::{Claim, ClaimOutcome, FlushRow, Store, StoreError, StoreResult};

/// Serialised by an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS`
/// from workers starting together can otherwise fail on the catalog.
const SCHEMA: &str = "
SET client_min_messages TO warning;
BEGIN;
SELECT pg_advisory_xact_lock(7265000001);
CREATE TABLE IF NOT EXISTS roost_entities (
    key        text PRIMARY KEY,
    epoch      bigint NOT NULL,
    owner      text NOT NULL,
    version    bigint NOT NULL DEFAULT 0,
    state      bytea,
    updated_at timestamptz NOT NULL DEFAULT now(),
    alarm_at   bigint
);
ALTER TABLE roost_entities ADD COLUMN IF NOT EXISTS alarm_at bigint;
CREATE INDEX IF NOT EXISTS roost_entities_alarms ON roost_entities (alarm_at)
    WHERE alarm_at IS NOT NULL;
CREATE SEQUENCE IF NOT EXISTS roost_worker_locks AS integer;
CREATE TABLE IF NOT EXISTS roost_workers (
    id               text PRIMARY KEY,
    addr             text NOT NULL,
    lock_id          integer NOT NULL DEFAULT nextval('roost_worker_locks'),
    generation       bigint NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'live',
    lease_expires_at timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMIT;";

/// First key of every worker's advisory lock (the second is its `lock_id`;
/// `CLAIM` spells the same number).
pub(super) const LOCK_SPACE: i32 = 7265;

/// Takes the row unless its owner is another worker that is alive: holds its
/// advisory lock and has an unexpired lease.
const CLAIM: &str = "
INSERT INTO roost_entities AS e (key, epoch, owner) VALUES ($1, 1, $2)
ON CONFLICT (key) DO UPDATE SET epoch = e.epoch + 1, owner = EXCLUDED.owner
WHERE e.owner = EXCLUDED.owner OR e.owner = '' OR NOT EXISTS (
    SELECT 1 FROM roost_workers w
    JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = 7265 AND l.objid = w.lock_id::oid AND l.objsubid = 2
    WHERE w.id = e.owner AND w.lease_expires_at > now())
RETURNING epoch, version, state";

const OWNER: &str = "SELECT owner FROM roost_entities WHERE key = $1";

const ASK_HANDOVER: &str =
    "SELECT pg_notify('roost_handover_' || lock_id, $2) FROM roost_workers WHERE id = $1";

const RELEASE: &str = "UPDATE roost_entities SET owner = '' WHERE key = $1 AND owner = $2";

const RELEASE_ALL: &str = "UPDATE roost_entities SET owner = '' WHERE owner = $1";

const EPOCHS: &str = "SELECT key, epoch FROM roost_entities WHERE key = ANY($1)";

/// Returns the 1-based positions of the fenced rows.
const FLUSH: &str = "
WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[])
        WITH ORDINALITY AS u(key, epoch, version, state, alarm_at, position)
), written AS (
    UPDATE roost_entities AS e
    SET state = u.state, version = u.version, alarm_at = u.alarm_at, updated_at = now()
    FROM u
    WHERE e.key = u.key AND e.epoch = u.epoch
    RETURNING u.position
)
SELECT position FROM u WHERE position NOT IN (SELECT position FROM written)";

const DUE_ALARMS: &str =
    "SELECT key FROM roost_entities WHERE alarm_at <= $1 ORDER BY alarm_at LIMIT $2";

const PEEK: &str = "SELECT epoch, version, state FROM roost_entities WHERE key = $1";

/// Connections in the pool: claims, flushes (one per batch in flight)
/// and reads share them.
pub const POOL_SIZE: usize = 16;

/// Postgres-backed [`Store`].
pub struct PostgresStore {
    pool: Pool,
    endpoint: Endpoint,
}

impl PostgresStore {
    /// Connect, check the connection works and create the schema if missing.
    /// A server certificate that fails verification is [`StoreError::Fatal`]:
    /// the worker must not start on a store it cannot trust.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let endpoint = Endpoint::from_url(url).map_err(|e| StoreError::Fatal(e.to_string()))?;
        let manager = Manager::from_config(
            endpoint.config().clone(),
            endpoint.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Fatal(format!("cannot build the postgres pool: {e}")))?;
        let store = PostgresStore { pool, endpoint };
        let client = store.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) if certificate_rejected(&e) => {
                StoreError::Fatal(format!("postgres: {}", describe(&e)))
            }
            e => no_connection(e),
        })?;
        client.batch_execute(SCHEMA).await.map_err(unavailable)?;
        Ok(store)
    }

    /// This worker's registry, on a connection of its own.
    pub fn registry(&self) -> registry::PostgresRegistry {
        registry::PostgresRegistry::new(self.endpoint.clone())
    }

    /// The connection pool (the stateless baseline runs its own
    /// transactions on it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(no_connection)
    }
}

/// Why the pool has no connection: the server's or the driver's own words
/// when it could not open one (deadpool's message alone hides them).
fn no_connection(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => unavailable(e),
        e => StoreError::Unavailable(format!("no postgres connection: {e}")),
    }
}

/// The server's own message when there is one ("db error" alone hides it).
/// A statement the server refused is [`StoreError::Refused`], unless its
/// SQLSTATE says the server could not run it now: a connection exception
/// (class 08), a shutdown or restart (57), lack of resources (53) or a
/// serialization failure or deadlock (40).
pub(crate) fn unavailable(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let message = format!("postgres: {} ({code})", db.message());
            if ["08", "57", "53", "40"]
                .iter()
                .any(|class| code.starts_with(class))
            {
                StoreError::Unavailable(message)
            } else {
                StoreError::Refused(message)
            }
        }
        None => StoreError::Unavailable(format!("postgres: {}", describe(&e))),
    }
}

/// A fenced row's 0-based index in the batch.
fn fenced_position(row: &tokio_postgres::Row) -> StoreResult<usize> {
    let position: i64 = row.try_get(0).map_err(unavailable)?;
    usize::try_from(position - 1)
        .map_err(|_| StoreError::Unavailable(format!("postgres: bad row position {position}")))
}

fn claim_of(row: &tokio_postgres::Row) -> StoreResult<Claim> {
    Ok(Claim {
        epoch: row.try_get(0).map_err(unavailable)?,
        version: row.try_get(1).map_err(unavailable)?,
        state: row.try_get(2).map_err(unavailable)?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn claim(&self, key: &str, owner: &str) -> StoreResult<ClaimOutcome> {
        let client = self.client().await?;
        let statement = client.prepare_cached(CLAIM).await.map_err(unavailable)?;
        if let Some(row) = client
            .query_opt(&statement, &[&key, &owner])
            .await
            .map_err(unavailable)?
        {
            return Ok(ClaimOutcome::Claimed(claim_of(&row)?));
        }
        let row = client
            .query_one(OWNER, &[&key])
            .await
            .map_err(unavailable)?;
        Ok(ClaimOutcome::Owned {
            owner: row.try_get(0).map_err(unavailable)?,
        })
    }

    async fn ask_handover(&self, owner: &str, key: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(ASK_HANDOVER, &[&owner, &key])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, key: &str, owner: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(RELEASE, &[&key, &owner])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release_all(&self, owner: &str) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(RELEASE_ALL, &[&owner])
            .await
            .map_err(unavailable)
    }

    async fn epochs(&self, keys: &[String]) -> StoreResult<HashMap<String, i64>> {
        let client = self.client().await?;
        let rows = client.query(EPOCHS, &[&keys]).await.map_err(unavailable)?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(unavailable)
    }

    async fn flush(&self, rows: Arc<[FlushRow]>) -> StoreResult<Vec<usize>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = rows.iter().map(|r| &*r.key).collect();
        let epochs: Vec<i64> = rows.iter().map(|r| r.epoch).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let states: Vec<&[u8]> = rows.iter().map(|r| r.state.as_slice()).collect();
        let alarms: Vec<Option<i64>> = rows.iter().map(|r| r.alarm_at).collect();
        let client = self.client().await?;
        let statement = client.prepare_cached(FLUSH).await.map_err(unavailable)?;
        let fenced = client
            .query(&statement, &[&keys, &epochs, &versions, &states, &alarms])
            .await
            .map_err(unavailable)?;
        fenced.iter().map(fenced_position).collect()
    }

    async fn due_alarms(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(DUE_ALARMS)
            .await
            .map_err(unavailable)?;
        let rows = client
            .query(&statement, &[&now_ms, &limit])
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn peek(&self, key: &str) -> StoreResult<Option<Claim>> {
        let client = self.client().await?;
        let row = client.query_opt(PEEK, &[&key]).await.map_err(unavailable)?;
        row.as_ref().map(claim_of).transpose()
    }

    async fn live_workers(&self) -> StoreResult<Vec<(String, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(roost_routing::registry::LIVE_POSTGRES, &[])
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(unavailable)
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
