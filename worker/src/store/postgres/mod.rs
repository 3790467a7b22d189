//! The Postgres store: tokio-postgres behind a deadpool pool.
//!
//! A claim is one `INSERT … ON CONFLICT DO UPDATE … RETURNING`; a flush is
//! one `UPDATE … FROM UNNEST(…)` over the whole batch, guarded per row by
//! its epoch, answering with the positions of the rows it did not write
//! (usually none, so a batch's answer is a few bytes whatever its size).

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{Claim, FlushRow, Store, StoreError, StoreResult};

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
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMIT;";

const CLAIM: &str = "
INSERT INTO roost_entities AS e (key, epoch, owner) VALUES ($1, 1, $2)
ON CONFLICT (key) DO UPDATE SET epoch = e.epoch + 1, owner = EXCLUDED.owner
RETURNING epoch, version, state";

/// Returns the 1-based positions of the fenced rows.
const FLUSH: &str = "
WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bytea[])
        WITH ORDINALITY AS u(key, epoch, version, state, position)
), written AS (
    UPDATE roost_entities AS e
    SET state = u.state, version = u.version, updated_at = now()
    FROM u
    WHERE e.key = u.key AND e.epoch = u.epoch
    RETURNING u.position
)
SELECT position FROM u WHERE position NOT IN (SELECT position FROM written)";

const PEEK: &str = "SELECT epoch, version, state FROM roost_entities WHERE key = $1";

/// Postgres-backed [`Store`].
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Connect, check the connection works and create the schema if missing.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Fatal(format!("bad postgres URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|e| StoreError::Fatal(format!("cannot build the postgres pool: {e}")))?;
        let store = PostgresStore { pool };
        store
            .client()
            .await?
            .batch_execute(SCHEMA)
            .await
            .map_err(unavailable)?;
        Ok(store)
    }

    /// The connection pool (the stateless baseline runs its own
    /// transactions on it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no postgres connection: {e}")))
    }
}

/// The server's own message when there is one ("db error" alone hides it).
pub(crate) fn unavailable(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            StoreError::Unavailable(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StoreError::Unavailable(format!("postgres: {e}")),
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
    async fn claim(&self, key: &str, owner: &str) -> StoreResult<Claim> {
        let client = self.client().await?;
        let statement = client.prepare_cached(CLAIM).await.map_err(unavailable)?;
        let row = client
            .query_one(&statement, &[&key, &owner])
            .await
            .map_err(unavailable)?;
        claim_of(&row)
    }

    async fn flush(&self, rows: Arc<[FlushRow]>) -> StoreResult<Vec<usize>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let epochs: Vec<i64> = rows.iter().map(|r| r.epoch).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let states: Vec<&[u8]> = rows.iter().map(|r| r.state.as_slice()).collect();
        let client = self.client().await?;
        let statement = client.prepare_cached(FLUSH).await.map_err(unavailable)?;
        let fenced = client
            .query(&statement, &[&keys, &epochs, &versions, &states])
            .await
            .map_err(unavailable)?;
        fenced.iter().map(fenced_position).collect()
    }

    async fn peek(&self, key: &str) -> StoreResult<Option<Claim>> {
        let client = self.client().await?;
        let row = client.query_opt(PEEK, &[&key]).await.map_err(unavailable)?;
        row.as_ref().map(claim_of).transpose()
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
