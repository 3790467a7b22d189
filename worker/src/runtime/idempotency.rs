//! `Idempotency-Key`s, scoped to the request they were first used with.
//!
//! A key is remembered with the entity together with the reply it got and
//! the [`Fingerprint`] of its request. When the key comes again:
//!
//! - with the same request, the first reply is replayed and nothing runs
//!   (a client retrying after a lost reply or a failover);
//! - with another request (another method, path or body), it is refused
//!   with 422 `idempotency_key_reused` and nothing runs: a client that
//!   reused a key by mistake learns so instead of getting a reply to a
//!   request it did not send.
//!
//! The HTTP layer fingerprints a request, since it knows what identifies
//! one; the runtime stores and compares fingerprints, and entity types know
//! nothing of either. A call from another entity is fingerprinted the same
//! way wherever it arrives (in-process or over HTTP), and a retried call
//! carries the same body, so its retries replay.
//!
//! Keys are remembered per entity, and only for requests that changed it
//! (a refusal or a read can simply be sent again). A key remembered before
//! fingerprints were stored has none: it replays to any request, as it did
//! when it was stored.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::Xxh3;

use crate::entity::Reply;

/// What identifies a request: a 64-bit xxh3 (seed 0, a fixed algorithm,
/// so the same on every worker and every release) of its method, its path
/// and its body. Stored as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of `method path` with `body`. The method and the path
    /// are length-prefixed, so no two requests run together into the same
    /// bytes.
    pub fn of(method: &str, path: &str, body: &[u8]) -> Self {
        let mut hasher = Xxh3::new();
        for part in [method.as_bytes(), path.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(body);
        Fingerprint(hasher.digest())
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:016x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        if hex.len() != 16 {
            return Err(serde::de::Error::custom("a fingerprint is 16 hex digits"));
        }
        u64::from_str_radix(&hex, 16)
            .map(Fingerprint)
            .map_err(serde::de::Error::custom)
    }
}

/// An `Idempotency-Key` (or a call's idempotency id) and the request it
/// came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// `None` only for a key recorded before fingerprints were stored (an
    /// awaited call's request): its reply then replays to any request.
    pub request: Option<Fingerprint>,
}

impl Idempotency {
    pub fn new(key: String, request: Fingerprint) -> Self {
        Idempotency {
            key,
            request: Some(request),
        }
    }
}

/// The answer to a request that reused `key` for another request.
pub fn reused(key: &str) -> Reply {
    Reply::error(
        422,
        "idempotency_key_reused",
        format!(
            "Idempotency-Key {key:?} was first used with another request (method, path or body); \
             a new request needs a new key"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_of_a_request_counts() {
        let add = Fingerprint::of("POST", "/v1/cart/items", br#"{"sku":"mug","qty":1}"#);
        assert_eq!(
            add,
            Fingerprint::of("POST", "/v1/cart/items", br#"{"sku":"mug","qty":1}"#)
        );
        for other in [
            Fingerprint::of("PUT", "/v1/cart/items", br#"{"sku":"mug","qty":1}"#),
            Fingerprint::of("POST", "/v1/cart/checkout", br#"{"sku":"mug","qty":1}"#),
            Fingerprint::of("POST", "/v1/cart/items", br#"{"sku":"mug","qty":2}"#),
            Fingerprint::of("POST", "/v1/cart/item", br#"s{"sku":"mug","qty":1}"#),
        ] {
            assert_ne!(add, other);
        }
    }

    #[test]
    fn fingerprints_are_stable_and_round_trip() {
        // Stored with entities: the value must never change (it is what
        // the reference xxHash gives for the same bytes).
        let fingerprint = Fingerprint::of("DELETE", "/v1/cart", b"");
        let json = serde_json::to_string(&fingerprint).expect("serializes");
        assert_eq!(json, "\"88a7ca74e5ba8e7b\"");
        let read: Fingerprint = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(read, fingerprint);
        assert!(serde_json::from_str::<Fingerprint>("\"88a7\"").is_err());
        assert!(serde_json::from_str::<Fingerprint>("\"zza7ca74e5ba8e7b\"").is_err());
    }
}
