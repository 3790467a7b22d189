//! What the store keeps for one entity: the entity's own state bytes plus
//! what the runtime keeps beside them ([`Meta`]): the replies remembered for
//! `Idempotency-Key`s (with the fingerprint of the request each came with,
//! see [`super::idempotency`]), so a client retrying after a failover gets
//! its first reply from the new owner too, and the calls to other entities
//! the entity is waiting on, so the new owner can finish them.
//!
//! Layout: `u32` little-endian length of the meta JSON, the JSON, then the
//! state bytes exactly as the entity encoded them. The meta JSON is the list
//! of replies when nothing is awaited and no alarm pending (the format
//! before calls existed, so old rows still read), else `{"replies": [...],
//! "awaiting": {...}, "alarms": [...]}` (either of the last two may be
//! absent).
//! Fingerprints are optional fields, so rows written before them still read.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::idempotency::{self, Fingerprint, Idempotency};
use crate::entity::alarm::Alarms;
use crate::entity::{Call, Entity, Reply};
use crate::ownership::ClaimError;

/// Everything the runtime stores beside an entity's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub replies: ReplyCache,
    /// Boxed: rarely there, and large to carry inline in every entity.
    pub awaiting: Option<Box<Awaiting>>,
    /// The entity's pending alarms.
    pub alarms: Alarms,
}

/// Calls an entity made whose replies it has not had yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Awaiting {
    /// The `Idempotency-Key` of the request that made them: its reply, once
    /// decided, is remembered under it.
    pub idempotency_key: Option<String>,
    /// The fingerprint of that request, remembered with the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Fingerprint>,
    pub calls: Vec<Call>,
}

impl Awaiting {
    /// `calls`, made by the request with `idempotency` (if it had a key).
    pub fn new(idempotency: Option<Idempotency>, calls: Vec<Call>) -> Self {
        let (idempotency_key, request) = match idempotency {
            Some(Idempotency { key, request }) => (Some(key), request),
            None => (None, None),
        };
        Awaiting {
            idempotency_key,
            request,
            calls,
        }
    }

    /// The key (and request) the reply is to be remembered under.
    pub fn idempotency(&self) -> Option<Idempotency> {
        self.idempotency_key.clone().map(|key| Idempotency {
            key,
            request: self.request,
        })
    }
}

/// The meta JSON's object form (written only while calls are awaited or
/// alarms pending).
#[derive(Serialize)]
struct Full<'a> {
    replies: &'a VecDeque<Remembered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    awaiting: Option<&'a Awaiting>,
    #[serde(skip_serializing_if = "Alarms::is_empty")]
    alarms: &'a Alarms,
}

/// [`Full`] as read back. (Not an untagged enum over both forms: serde
/// buffers those, and a call's raw JSON body cannot be buffered.)
#[derive(Deserialize)]
struct ReadFull {
    replies: VecDeque<Remembered>,
    #[serde(default)]
    awaiting: Option<Awaiting>,
    #[serde(default)]
    alarms: Alarms,
}

/// How many idempotency keys an entity remembers (oldest forgotten first).
pub const REMEMBERED_REPLIES: usize = 64;

/// The replies of the last [`REMEMBERED_REPLIES`] mutations that carried an
/// `Idempotency-Key`, within a byte budget (see [`ReplyCache::remember`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyCache {
    entries: VecDeque<Remembered>,
}

/// A first reply, with the fingerprint of its request and the version it
/// produced (a replay answers with that version as its ETag, not the
/// entity's current one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub key: String,
    /// `None` in rows stored before fingerprints were: replays to any
    /// request with the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Fingerprint>,
    pub reply: Reply,
    pub version: u64,
}

impl ReplyCache {
    /// The answer to a request whose key was used before, without running
    /// it, and the version to answer with: the first reply and the version
    /// it produced, if it is the same request; 422 `idempotency_key_reused`
    /// at `current` if not. `None`: the key is new, run the request.
    pub fn answer_seen(&self, idempotency: &Idempotency, current: u64) -> Option<(Reply, u64)> {
        let first = self.entries.iter().find(|r| r.key == idempotency.key)?;
        Some(match first.request {
            Some(request) if idempotency.request != Some(request) => {
                (idempotency::reused(&first.key), current)
            }
            _ => (first.reply.clone(), first.version),
        })
    }

    /// Remember `reply` to the request of `idempotency`. The oldest replies
    /// are forgotten past [`REMEMBERED_REPLIES`], or while their bodies
    /// together exceed `budget_bytes` (the newest is kept whatever its
    /// size): replies can be as large as the state (a session's `PUT`
    /// answers with the document), and the whole envelope is encoded on
    /// every change.
    pub fn remember(
        &mut self,
        idempotency: Idempotency,
        reply: Reply,
        version: u64,
        budget_bytes: usize,
    ) {
        self.entries.push_back(Remembered {
            key: idempotency.key,
            request: idempotency.request,
            reply,
            version,
        });
        let mut bytes: usize = self.entries.iter().map(|r| r.reply.body_text().len()).sum();
        while self.entries.len() > REMEMBERED_REPLIES
            || (self.entries.len() > 1 && bytes > budget_bytes)
        {
            if let Some(forgotten) = self.entries.pop_front() {
                bytes -= forgotten.reply.body_text().len();
            }
        }
    }
}

/// Wrap `state` bytes with `meta`.
pub fn encode(state: &[u8], meta: &Meta) -> Vec<u8> {
    let replies = &meta.replies.entries;
    let json = if meta.awaiting.is_none() && meta.alarms.is_empty() {
        serde_json::to_vec(replies)
    } else {
        serde_json::to_vec(&Full {
            replies,
            awaiting: meta.awaiting.as_deref(),
            alarms: &meta.alarms,
        })
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
        let read: ReadFull = serde_json::from_slice(json).map_err(unreadable)?;
        Meta {
            replies: ReplyCache {
                entries: read.replies,
            },
            awaiting: read.awaiting.map(Box::new),
            alarms: read.alarms,
        }
    } else {
        Meta {
            replies: ReplyCache {
                entries: serde_json::from_slice(json).map_err(unreadable)?,
            },
            awaiting: None,
            alarms: Alarms::default(),
        }
    };
    Ok((meta, state))
}

/// Rebuild an entity's state and the runtime's meta from stored bytes
/// (`None`: a key never written).
pub fn decode_state<E: Entity>(
    entity: &E,
    key: &str,
    bytes: Option<&[u8]>,
) -> Result<(Meta, E::State), ClaimError> {
    let Some(bytes) = bytes else {
        return Ok((Meta::default(), E::State::default()));
    };
    let (meta, state, _) = decode_stored(entity, key, bytes)?;
    Ok((meta, state))
}

/// Stored bytes of `key` as the runtime's meta, the entity's state, and
/// the state's own encoding within them.
pub fn decode_stored<'b, E: Entity>(
    entity: &E,
    key: &str,
    bytes: &'b [u8],
) -> Result<(Meta, E::State, &'b [u8]), ClaimError> {
    let (meta, encoded) = decode(bytes).map_err(|e| ClaimError::corrupt(key, e))?;
    let state = entity
        .decode(encoded)
        .map_err(|e| ClaimError::corrupt(key, e))?;
    Ok((meta, state, encoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str) -> Idempotency {
        Idempotency::new(key.into(), Fingerprint::of("POST", "/v1/cart/items", b"{}"))
    }

    #[test]
    fn round_trips_and_forgets_the_oldest() {
        let mut replies = ReplyCache::default();
        for i in 0..=REMEMBERED_REPLIES {
            replies.remember(key(&format!("k{i}")), Reply::no_content(), i as u64, 1024);
        }
        assert_eq!(replies.answer_seen(&key("k0"), 99), None);
        assert_eq!(
            replies.answer_seen(&key("k1"), 99),
            Some((Reply::no_content(), 1))
        );
        let meta = Meta {
            replies,
            ..Meta::default()
        };
        let bytes = encode(b"state", &meta);
        let (decoded, state) = decode(&bytes).expect("decodes");
        assert_eq!(decoded, meta);
        assert_eq!(state, b"state");
    }

    #[test]
    fn a_key_replays_only_to_its_own_request() {
        let mut replies = ReplyCache::default();
        replies.remember(key("k"), Reply::no_content(), 3, 1024);
        let other = Idempotency::new("k".into(), Fingerprint::of("DELETE", "/v1/cart", b""));
        let (refused, version) = replies.answer_seen(&other, 7).expect("the key was seen");
        assert_eq!((refused.status, version), (422, 7));
        assert!(refused.body_text().contains("idempotency_key_reused"));
    }

    #[test]
    fn replies_stored_without_a_fingerprint_replay_to_any_request() {
        let stored = br#"[{"key":"k","reply":{"status":204,"body":null},"version":3}]"#;
        let mut bytes = u32::try_from(stored.len())
            .expect("short")
            .to_le_bytes()
            .to_vec();
        bytes.extend_from_slice(stored);
        let (meta, _) = decode(&bytes).expect("an old row reads");
        let any = Idempotency::new("k".into(), Fingerprint::of("GET", "/", b""));
        assert_eq!(
            meta.replies.answer_seen(&any, 9),
            Some((Reply::no_content(), 3))
        );
    }

    #[test]
    fn large_replies_are_forgotten_past_the_budget() {
        let mut replies = ReplyCache::default();
        let big = Reply::ok("x".repeat(600));
        replies.remember(key("a"), big.clone(), 1, 1000);
        replies.remember(key("b"), big.clone(), 2, 1000);
        assert_eq!(replies.answer_seen(&key("a"), 9), None, "over the budget");
        assert_eq!(replies.answer_seen(&key("b"), 9), Some((big.clone(), 2)));
        replies.remember(key("c"), Reply::ok("x".repeat(2000)), 3, 1000);
        assert!(
            replies.answer_seen(&key("c"), 9).is_some(),
            "the newest is kept whatever its size"
        );
    }

    #[test]
    fn awaited_calls_round_trip_beside_the_replies() {
        let mut meta = Meta::default();
        meta.replies
            .remember(key("k"), Reply::no_content(), 3, 1024);
        meta.awaiting = Some(Box::new(Awaiting {
            idempotency_key: Some("checkout-1".into()),
            request: Some(Fingerprint::of("POST", "/v1/cart/checkout", b"")),
            calls: vec![Call {
                kind: "inventory".into(),
                id: "show-1".into(),
                routing_key: "inventory:show-1".into(),
                action: "release".into(),
                body: serde_json::value::to_raw_value(&serde_json::json!({"reservation": "r"}))
                    .expect("serializes"),
                idempotency_id: "u/order-1/release".into(),
            }],
        }));
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
