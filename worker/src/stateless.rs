//! The stateless baseline: the same HTTP API with nothing kept in memory.
//! Every request is one Postgres transaction — `SELECT … FOR UPDATE`, run
//! the handler, `UPDATE` — the way a conventional service keeps per-user
//! state. It exists so benchmarks can measure what the in-memory runtime
//! saves (`roost-worker --stateless`); it is not meant for production.

use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};

use crate::entity::{Context, Entity, Next, Reply};
use crate::ownership::ClaimError;
use crate::runtime::{
    entity_key, envelope, handle_request, read_changed_state, EntityReply, Options, RuntimeError,
};
use crate::store::postgres::PostgresStore;
use crate::store::StoreError;

const ENSURE: &str = "INSERT INTO roost_entities (key, epoch, owner) VALUES ($1, 0, $2) ON CONFLICT (key) DO NOTHING";
const LOCK: &str = "SELECT epoch, version, state FROM roost_entities WHERE key = $1 FOR UPDATE";
const WRITE: &str =
    "UPDATE roost_entities SET state = $2, version = $3, updated_at = now() WHERE key = $1";

/// Serves every request straight from Postgres.
pub struct StatelessEngine {
    pool: Pool,
    owner: Arc<str>,
}

fn unavailable(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Claim(ClaimError::Store(StoreError::Unavailable(format!(
        "postgres: {e}"
    ))))
}

impl StatelessEngine {
    pub fn new(store: &PostgresStore, owner: &str) -> Self {
        StatelessEngine {
            pool: store.pool().clone(),
            owner: owner.into(),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One transaction: lock the row, apply the request, write it back.
    pub async fn execute<E: Entity>(
        &self,
        entity: &E,
        id: &str,
        request: E::Request,
        options: Options,
    ) -> Result<EntityReply, RuntimeError> {
        let key = entity_key(E::KIND, id);
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let transaction = client.transaction().await.map_err(unavailable)?;
        let (epoch, version, bytes) = self.lock_row(&transaction, &key).await?;
        let (mut meta, mut state) = envelope::decode_state(entity, &key, bytes.as_deref())?;
        let answered = |reply, version| EntityReply {
            reply,
            version,
            epoch,
        };
        let seen = options
            .idempotency
            .as_ref()
            .and_then(|i| meta.replies.answer_seen(i, version));
        if let Some((reply, version)) = seen {
            return Ok(answered(reply, version));
        }
        let ctx = Context {
            key: key.as_str().into(),
            now_ms: crate::runtime::wall_clock_ms(),
            version,
            random: rand::random(),
        };
        let outcome = handle_request(entity, &mut state, request, &ctx, options.if_match.as_ref());
        // A refusal below rolls the transaction back when it is dropped.
        if options.read && outcome.changed {
            return Ok(answered(read_changed_state::<E>(), version));
        }
        let Next::Reply(reply) = outcome.next else {
            let message = "the stateless baseline makes no calls to other entities";
            return Ok(answered(
                Reply::error(501, "calls_unsupported", message),
                version,
            ));
        };
        let version = version + u64::from(outcome.changed);
        if outcome.changed {
            if let Some(idempotency) = options.idempotency {
                // The baseline enforces no size limits.
                meta.replies
                    .remember(idempotency, reply.clone(), version, usize::MAX);
            }
            let bytes = envelope::encode(&entity.encode(&state), &meta);
            write_row(&transaction, &key, &bytes, version).await?;
        }
        transaction.commit().await.map_err(unavailable)?;
        Ok(answered(reply, version))
    }

    /// The entity's row, locked (`SELECT … FOR UPDATE`), made first if it
    /// is new: its epoch, version and stored bytes. Statements are
    /// prepared once per connection, as a tuned service would.
    async fn lock_row(
        &self,
        transaction: &Transaction<'_>,
        key: &str,
    ) -> Result<(i64, u64, Option<Vec<u8>>), RuntimeError> {
        let lock = transaction
            .prepare_cached(LOCK)
            .await
            .map_err(unavailable)?;
        let mut row = transaction
            .query_opt(&lock, &[&key])
            .await
            .map_err(unavailable)?;
        if row.is_none() {
            transaction
                .execute(ENSURE, &[&key, &&*self.owner])
                .await
                .map_err(unavailable)?;
            row = transaction
                .query_opt(&lock, &[&key])
                .await
                .map_err(unavailable)?;
        }
        let row = row.ok_or_else(|| unavailable("the row vanished"))?;
        let (epoch, version): (i64, i64) = (row.get(0), row.get(1));
        Ok((epoch, u64::try_from(version).unwrap_or(0), row.get(2)))
    }
}

/// Write the entity's new bytes and version in the transaction.
async fn write_row(
    transaction: &Transaction<'_>,
    key: &str,
    bytes: &[u8],
    version: u64,
) -> Result<(), RuntimeError> {
    let stored_version = i64::try_from(version).unwrap_or(i64::MAX);
    let write = transaction
        .prepare_cached(WRITE)
        .await
        .map_err(unavailable)?;
    transaction
        .execute(&write, &[&key, &bytes, &stored_version])
        .await
        .map_err(unavailable)?;
    Ok(())
}
