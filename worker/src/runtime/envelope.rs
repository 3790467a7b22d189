//! What the store keeps for one entity: the entity's own state bytes plus the
//! replies remembered for `Idempotency-Key`s, so a client retrying after a
//! failover gets its first reply from the new owner too.
//!
//! Layout: `u32` little-endian length of the replies' JSON, the JSON, then
//! the state bytes exactly as the entity encoded them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::entity::Reply;

/// How many idempotency keys an entity remembers (oldest forgotten first).
pub const REMEMBERED_REPLIES: usize = 64;

/// The replies of the last [`REMEMBERED_REPLIES`] mutations that carried an
/// `Idempotency-Key`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyCache {
    entries: VecDeque<Remembered>,
}

/// A first reply, with the version it produced (a replay answers with that
/// version as its ETag, not the entity's current one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub key: String,
    pub reply: Reply,
    pub version: u64,
}

impl ReplyCache {
    pub fn get(&self, key: &str) -> Option<&Remembered> {
        self.entries.iter().find(|r| r.key == key)
    }

    pub fn remember(&mut self, key: String, reply: Reply, version: u64) {
        if self.entries.len() == REMEMBERED_REPLIES {
            self.entries.pop_front();
        }
        self.entries.push_back(Remembered {
            key,
            reply,
            version,
        });
    }
}

/// Wrap `state` bytes with `replies`.
pub fn encode(state: &[u8], replies: &ReplyCache) -> Vec<u8> {
    let json = serde_json::to_vec(&replies.entries).unwrap_or_else(|_| b"[]".to_vec());
    let mut bytes = Vec::with_capacity(4 + json.len() + state.len());
    bytes.extend_from_slice(&u32::try_from(json.len()).unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(state);
    bytes
}

/// Split stored bytes into the replies and the entity's state bytes.
pub fn decode(bytes: &[u8]) -> Result<(ReplyCache, &[u8]), String> {
    let (length, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| "stored entity shorter than its header".to_string())?;
    let length = u32::from_le_bytes(*length) as usize;
    if rest.len() < length {
        return Err("stored entity shorter than its replies".into());
    }
    let (json, state) = rest.split_at(length);
    let entries = serde_json::from_slice(json).map_err(|e| format!("stored replies: {e}"))?;
    Ok((ReplyCache { entries }, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_forgets_the_oldest() {
        let mut replies = ReplyCache::default();
        for i in 0..=REMEMBERED_REPLIES {
            replies.remember(format!("k{i}"), Reply::no_content(), i as u64);
        }
        assert!(replies.get("k0").is_none());
        assert!(replies.get("k1").is_some());
        let bytes = encode(b"state", &replies);
        let (decoded, state) = decode(&bytes).expect("decodes");
        assert_eq!(decoded, replies);
        assert_eq!(state, b"state");
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        assert!(decode(b"\x10\0").is_err());
        assert!(decode(b"\x10\0\0\0[]").is_err());
    }
}
