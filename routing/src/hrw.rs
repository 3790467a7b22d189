//! Weighted rendezvous (HRW) hashing.
//!
//! Every worker gets a score for a key; the key's owner is the worker with the
//! highest score and its failover order is the rest in descending score. So
//! when a worker leaves, only its keys move (each to its second candidate), and
//! when one joins it takes about `1/(N+1)` of the keys and nothing else moves.
//!
//! # The hash, exactly
//!
//! Stability across builds and platforms is part of the contract (two proxies
//! must agree), so the hash is spelled out instead of left to `std::hash`:
//!
//! ```text
//! seed          = xxh3_64(hash_seed phrase bytes)
//! worker_seed   = xxh3_64_with_seed(worker id bytes, seed)
//! h(key, w)     = xxh3_64_with_seed(key bytes, worker_seed(w))
//! score(key, w) = ln(h / u64::MAX) / weight(w)       (higher wins; ties by id)
//! ```
//!
//! The logarithmic weighting ("Weighted Distributed Hash Tables", Schindelhauer
//! and Schomaker) comes from the `rendezvous_hash` crate and gives each worker
//! a share of keys proportional to its weight. The seed keeps clients from
//! choosing which worker their keys land on.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rendezvous_hash::{Capacity, KeyValueNode, NodeHasher, RendezvousNodes, WeightedNode};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Why a set of workers cannot form a ring.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RingError {
    #[error("worker {id:?}: weight {weight} must be a finite number greater than zero")]
    BadWeight { id: String, weight: f64 },
    #[error("worker id {0:?} appears more than once")]
    DuplicateId(String),
    #[error("worker id must not be empty")]
    EmptyId,
}

/// The 64-bit seed of every score, derived from the configured phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(u64);

impl Seed {
    /// Derive the seed from the `hash_seed` phrase in config.
    pub fn from_phrase(phrase: &str) -> Self {
        Seed(xxh3_64(phrase.as_bytes()))
    }
}

/// Check a weight before it reaches the ring: finite and strictly positive.
pub fn validate_weight(id: &str, weight: f64) -> Result<(), RingError> {
    if Capacity::new(weight).is_some() {
        Ok(())
    } else {
        Err(RingError::BadWeight {
            id: id.to_owned(),
            weight,
        })
    }
}

/// One worker on the ring with the caller's payload (`T`: an address, a
/// backend handle, an index).
#[derive(Debug, Clone)]
pub struct Member<T> {
    pub id: Arc<str>,
    pub weight: f64,
    pub value: T,
}

/// The identity of a ring node: its id and the per-worker seed derived from it.
/// Ordered by id, which breaks (astronomically rare) score ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NodeKey {
    id: Arc<str>,
    seed: u64,
}

type Node<T> = WeightedNode<KeyValueNode<NodeKey, Member<T>>>;

/// A set of weighted workers that ranks them for any key.
pub struct Ring<T> {
    nodes: RendezvousNodes<Node<T>, ScoreHasher>,
}

impl<T> Ring<T> {
    /// Build a ring; rejects empty or duplicate ids and bad weights.
    pub fn new(
        seed: Seed,
        members: impl IntoIterator<Item = Member<T>>,
    ) -> Result<Self, RingError> {
        let mut nodes = RendezvousNodes::new(ScoreHasher);
        for member in members {
            if member.id.is_empty() {
                return Err(RingError::EmptyId);
            }
            let capacity = Capacity::new(member.weight).ok_or_else(|| RingError::BadWeight {
                id: member.id.to_string(),
                weight: member.weight,
            })?;
            let key = NodeKey {
                seed: xxh3_64_with_seed(member.id.as_bytes(), seed.0),
                id: member.id.clone(),
            };
            if nodes.contains(&key) {
                return Err(RingError::DuplicateId(member.id.to_string()));
            }
            nodes.insert(WeightedNode::new(KeyValueNode::new(key, member), capacity));
        }
        Ok(Ring { nodes })
    }

    /// A ring with no members: every key has no owner.
    pub fn empty() -> Self {
        Ring {
            nodes: RendezvousNodes::new(ScoreHasher),
        }
    }

    /// All members in the key's candidate order: owner first, then failover.
    pub fn candidates<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Member<T>> + 'a {
        self.nodes
            .calc_candidates(&RawKey(key))
            .map(|node| &node.node.value)
    }

    /// The highest-scoring member for `key`, if the ring is not empty.
    pub fn owner<'a>(&'a self, key: &'a [u8]) -> Option<&'a Member<T>> {
        self.candidates(key).next()
    }

    /// Members in insertion order.
    pub fn members(&self) -> impl Iterator<Item = &Member<T>> {
        self.nodes.iter().map(|node| &node.node.value)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// A key's raw bytes, hashed as exactly those bytes (no length prefix, which
/// `[u8]`'s own `Hash` would add in a platform-sized integer).
struct RawKey<'a>(&'a [u8]);

impl Hash for RawKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// Scores a key against one node: `xxh3_64_with_seed(key, node seed)`.
struct ScoreHasher;

impl NodeHasher<NodeKey> for ScoreHasher {
    fn hash<K: Hash>(&self, node: &NodeKey, item: &K) -> u64 {
        let mut hasher = ChainedXxh3 { state: node.seed };
        item.hash(&mut hasher);
        hasher.finish()
    }
}

/// Each `write` rehashes its bytes seeded by the previous result. With one
/// write (what [`RawKey`] does) it is plain seeded xxh3 of the key.
struct ChainedXxh3 {
    state: u64,
}

impl Hasher for ChainedXxh3 {
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxh3_64_with_seed(bytes, self.state);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}
