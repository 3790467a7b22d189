//! What the store keeps for one entity: the entity's own state bytes plus
//! what the runtime keeps beside them ([`Meta`]): the replies remembered for
//! `Idempotency-Key`s, so a client retrying after a failover gets its first
//! reply from the new owner too, and the calls to other entities the entity
//! is waiting on, so the new owner can finish them.
//!
//! Layout: `u32` little-endian length of the meta JSON, the JSON, then the
//! state bytes exactly as the entity encoded them. The meta JSON is the list
//! of replies when nothing is awaited (the format before calls existed, so
//! old rows still read), else `{"replies": [...], "awaiting": {...}}`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::entity::{Call, Reply};

/// Everything the runtime stores beside an entity's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub replies: ReplyCache,
    pub awaiting: Option<Awaiting>,
}

/// Calls an entity made whose replies it has not had yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Awaiting {
    /// The `Idempotency-Key` of the request that made them: its reply, once
    /// decided, is remembered under it.
    pub idempotency_key: Option<String>,
    pub calls: Vec<Call>,
}

/// The meta JSON's object form (written only while calls are awaited).
#[derive(Serialize)]
struct WithAwaiting<'a> {
    replies: &'a VecDeque<Remembered>,
    awaiting: &'a Awaiting,
}

/// [`WithAwaiting`] as read back. (Not an untagged enum over both forms:
/// serde buffers those, and a call's raw JSON body cannot be buffered.)
#[derive(Deserialize)]
struct ReadWithAwaiting {
    replies: VecDeque<Remembered>,
    awaiting: Awaiting,
}

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

/// Wrap `state` bytes with `meta`.
pub fn encode(state: &[u8], meta: &Meta) -> Vec<u8> {
    let replies = &meta.replies.entries;
    let json = match &meta.awaiting {
        None => serde_json::to_vec(replies),
        Some(awaiting) => serde_json::to_vec(&WithAwaiting { replies, awaiting }),
    }
    .unwrap_or_else(|_| b"[]".to_vec());
    let mut bytes = Vec::with_capacity(4 + json.len() + state.len());
    bytes.extend_from_slice(&u32::try_from(json.len()).unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(state);
    bytes
}

/// Split stored bytes into the meta and the entity's state bytes.
pub fn decode(bytes: &[u8]) -> Result<(Meta, &[u8]), String> {
    let (length, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| "stored entity shorter than its header".to_string())?;
    let length = u32::from_le_bytes(*length) as usize;
    if rest.len() < length {
        return Err("stored entity shorter than its replies".into());
    }
    let (json, state) = rest.split_at(length);
    let unreadable = |e: serde_json::Error| format!("stored meta: {e}");
    let meta = if json.first() == Some(&b'{') {
        let read: ReadWithAwaiting = serde_json::from_slice(json).map_err(unreadable)?;
        Meta {
            replies: ReplyCache {
                entries: read.replies,
            },
            awaiting: Some(read.awaiting),
        }
    } else {
        Meta {
            replies: ReplyCache {
                entries: serde_json::from_slice(json).map_err(unreadable)?,
            },
            awaiting: None,
        }
    };
    Ok((meta, state))
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
        let meta = Meta {
            replies,
            awaiting: None,
        };
        let bytes = encode(b"state", &meta);
        let (decoded, state) = decode(&bytes).expect("decodes");
        assert_eq!(decoded, meta);
        assert_eq!(state, b"state");
    }

    #[test]
    fn awaited_calls_round_trip_beside_the_replies() {
        let mut meta = Meta::default();
        meta.replies.remember("k".into(), Reply::no_content(), 3);
        meta.awaiting = Some(Awaiting {
            idempotency_key: Some("checkout-1".into()),
            calls: vec![Call {
                kind: "inventory".into(),
                id: "show-1".into(),
                routing_key: "inventory:show-1".into(),
                body: serde_json::value::to_raw_value(&serde_json::json!({"op": "release"}))
                    .expect("serializes"),
                idempotency_id: "u/order-1/release".into(),
            }],
        });
        let bytes = encode(b"{}", &meta);
        let (decoded, state) = decode(&bytes).expect("decodes");
        assert_eq!(decoded, meta);
        assert_eq!(state, b"{}");
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        assert!(decode(b"\x10\0").is_err());
        assert!(decode(b"\x10\0\0\0[]").is_err());
    }
}
