//! The final state, read straight from the store's `roost_entities` table:
//! the ground truth every acknowledged write is held against.
//!
//! A row's `state` is the worker's envelope: a `u32` little-endian length
//! L, L bytes of JSON (the replies remembered for idempotency keys), then
//! the entity's own JSON state (session: the document or `null`; cart:
//! `{"items": {sku: qty}, "orders": [...]}`; quota: `{"quotas": {name:
//! [{"id", "expires_at_ms"}]}}`).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use roost_testkit::postgres::connect;

/// One `roost_entities` row with its state decoded.
#[derive(Debug, Clone)]
pub struct StoredEntity {
    pub epoch: i64,
    pub owner: String,
    pub version: i64,
    /// The entity's own state; `Null` when the row has none yet.
    pub state: Value,
}

/// Every row, by key (`KIND/USER`).
pub async fn read_entities(url: &str) -> Result<HashMap<String, StoredEntity>> {
    let (client, connection) = connect(url).await?;
    let connection = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT key, epoch, owner, version, state FROM roost_entities",
            &[],
        )
        .await
        .context("read roost_entities")?;
    drop(client);
    let _ = connection.await;
    let mut entities = HashMap::with_capacity(rows.len());
    for row in rows {
        let key: String = row.try_get("key").context("roost_entities.key")?;
        let state: Option<Vec<u8>> = row.try_get("state").context("roost_entities.state")?;
        let state = match state {
            Some(bytes) => entity_state(&bytes).with_context(|| format!("state of {key}"))?,
            None => Value::Null,
        };
        let entity = StoredEntity {
            epoch: row.try_get("epoch").context("roost_entities.epoch")?,
            owner: row.try_get("owner").context("roost_entities.owner")?,
            version: row.try_get("version").context("roost_entities.version")?,
            state,
        };
        entities.insert(key, entity);
    }
    Ok(entities)
}

/// The entity's JSON state out of the envelope.
pub fn entity_state(envelope: &[u8]) -> Result<Value> {
    let Some((length, rest)) = envelope.split_first_chunk::<4>() else {
        bail!("{} bytes: shorter than the envelope header", envelope.len());
    };
    let length = usize::try_from(u32::from_le_bytes(*length)).context("envelope length")?;
    let Some(state) = rest.get(length..) else {
        bail!(
            "the envelope says {length} bytes of replies, {} follow",
            rest.len()
        );
    };
    serde_json::from_slice(state).context("the entity state is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_remembered_replies() {
        let replies = br#"[{"key":"k"}]"#;
        let mut bytes = u32::try_from(replies.len())
            .expect("short")
            .to_le_bytes()
            .to_vec();
        bytes.extend_from_slice(replies);
        bytes.extend_from_slice(br#"{"items":{"a":1},"orders":[]}"#);
        let state = entity_state(&bytes).expect("decodes");
        assert_eq!(state["items"]["a"], 1);
    }

    #[test]
    fn a_truncated_envelope_is_an_error() {
        assert!(entity_state(&[9, 0, 0, 0, b'[']).is_err());
        assert!(entity_state(&[1]).is_err());
    }
}
