//! HRW as a Pingora [`BackendSelection`].
//!
//! The iterator yields every worker in descending score for the key, so the
//! proxy's failover order is exactly the key's candidate order: when the owner
//! is down the request goes to the second candidate, and only a dead worker's
//! keys move.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use roost_routing::hrw::validate_weight;
use roost_routing::{Member, Ring, Seed};

/// Who a [`Backend`] is, carried in its `ext` so the selection can score by
/// worker id (the address may change; the id keeps its keys).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerTag {
    /// Position in the fleet: indexes health state and metrics.
    pub index: usize,
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub weight: f64,
}

/// The backends of one fleet snapshot, ranked per key by weighted HRW.
pub struct HrwSelection {
    tags: Vec<WorkerTag>,
    backends: Vec<Backend>,
    /// Ring members carry the position in `backends`/`tags`.
    ring: Ring<usize>,
}

impl HrwSelection {
    /// The tag of the backend at `position` (as yielded by [`HrwIter`]).
    pub fn tag(&self, position: usize) -> &WorkerTag {
        &self.tags[position]
    }
}

impl BackendSelection for HrwSelection {
    type Iter = HrwIter;
    type Config = Seed;

    /// Backends without a [`WorkerTag`] are scored by their address and
    /// integer weight. A duplicate id keeps only its first backend; the
    /// config loader rejects duplicates long before this point.
    fn build_with_config(backends: &BTreeSet<Backend>, seed: &Seed) -> Self {
        let mut tags: Vec<WorkerTag> = Vec::with_capacity(backends.len());
        let mut kept = Vec::with_capacity(backends.len());
        for backend in backends {
            let tag = tag_of(backend, tags.len());
            if tags.iter().any(|t| t.id == tag.id) || validate_weight(&tag.id, tag.weight).is_err()
            {
                tracing::warn!(worker = %tag.id, "skipping a duplicate or zero-weight worker");
                continue;
            }
            tags.push(tag);
            kept.push(backend.clone());
        }
        let members = tags.iter().enumerate().map(|(position, tag)| Member {
            id: tag.id.clone(),
            weight: tag.weight,
            value: position,
        });
        let ring = Ring::new(*seed, members).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the HRW ring; routing to no worker");
            Ring::empty()
        });
        HrwSelection {
            tags,
            backends: kept,
            ring,
        }
    }

    /// Without a seed, the phrase is empty: only for callers that do not care
    /// which worker owns what.
    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &Seed::from_phrase(""))
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> HrwIter {
        HrwIter {
            order: self.ring.candidates(key).map(|m| m.value).collect(),
            next: 0,
            selection: Arc::clone(self),
        }
    }
}

fn tag_of(backend: &Backend, position: usize) -> WorkerTag {
    backend
        .ext
        .get::<WorkerTag>()
        .cloned()
        .unwrap_or_else(|| WorkerTag {
            index: position,
            id: backend.addr.to_string().into(),
            addr: backend
                .addr
                .as_inet()
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            weight: backend.weight as f64,
        })
}

/// One key's candidates, best first.
pub struct HrwIter {
    order: Vec<usize>,
    next: usize,
    selection: Arc<HrwSelection>,
}

impl HrwIter {
    /// Like [`BackendIter::next`], but yields the worker's tag.
    pub fn next_tag(&mut self) -> Option<&WorkerTag> {
        let position = *self.order.get(self.next)?;
        self.next += 1;
        Some(self.selection.tag(position))
    }
}

impl BackendIter for HrwIter {
    fn next(&mut self) -> Option<&Backend> {
        let position = *self.order.get(self.next)?;
        self.next += 1;
        self.selection.backends.get(position)
    }
}
