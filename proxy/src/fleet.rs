//! The fleet as the proxy sees it: the workers, their HRW selection and their
//! health. The request path, the health checker and the admin API all read
//! this one struct, so `/admin/route` answers exactly as requests are routed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use pingora::lb::selection::BackendSelection;
use pingora::lb::Backend;
use roost_routing::Seed;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::{HealthConfig, WorkerConfig};
use crate::health::{HealthBoard, Transition};
use crate::metrics::WorkerMetrics;
use crate::select::{HrwIter, HrwSelection, WorkerTag};

/// Workers, selection and health, shared by every part of the proxy.
pub struct Fleet {
    selection: Arc<HrwSelection>,
    tags: Vec<WorkerTag>,
    backends: Vec<(usize, Backend)>,
    health: HealthBoard,
    metrics: Vec<WorkerMetrics>,
    /// Seed for the key hash in access logs (not the routing seed).
    log_seed: u64,
    /// Round-robin position for keyless requests under `missing: any`.
    any_cursor: AtomicUsize,
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'f> {
    pub worker: &'f WorkerTag,
    /// The key's owner when it was skipped (down or already tried).
    pub failed_over_from: Option<&'f WorkerTag>,
}

/// One candidate with its health, for `/admin/route`.
pub struct Candidate<'f> {
    pub worker: &'f WorkerTag,
    pub healthy: bool,
}

impl Fleet {
    pub fn new(hash_seed: &str, workers: &[WorkerConfig], health: &HealthConfig) -> Self {
        let tags: Vec<WorkerTag> = workers
            .iter()
            .enumerate()
            .map(|(index, w)| WorkerTag {
                index,
                id: w.id.value.as_str().into(),
                addr: w.addr,
                weight: w.weight.value,
            })
            .collect();
        let backends: Vec<(usize, Backend)> =
            tags.iter().map(|t| (t.index, backend_for(t))).collect();
        let set: BTreeSet<Backend> = backends.iter().map(|(_, b)| b.clone()).collect();
        let selection = Arc::new(HrwSelection::build_with_config(
            &set,
            &Seed::from_phrase(hash_seed),
        ));
        Fleet {
            selection,
            metrics: tags
                .iter()
                .map(|t| WorkerMetrics::for_worker(&t.id))
                .collect(),
            health: HealthBoard::new(tags.len(), health),
            tags,
            backends,
            log_seed: xxh3_64_with_seed(hash_seed.as_bytes(), 0x6c6f_6773),
            any_cursor: AtomicUsize::new(0),
        }
    }

    pub fn workers(&self) -> &[WorkerTag] {
        &self.tags
    }

    pub fn backends(&self) -> &[(usize, Backend)] {
        &self.backends
    }

    pub fn metrics(&self, worker: usize) -> Option<&WorkerMetrics> {
        self.metrics.get(worker)
    }

    pub fn is_up(&self, worker: usize) -> bool {
        self.health.is_up(worker)
    }

    pub fn since(&self, worker: usize) -> Option<SystemTime> {
        self.health.since(worker)
    }

    /// The key's candidates, best first.
    pub fn candidates(&self, key: &[u8]) -> HrwIter {
        self.selection.iter(key)
    }

    /// The first live candidate for `key` that has not been `tried`.
    pub fn pick(&self, key: &[u8], tried: &[usize]) -> Option<Pick<'_>> {
        let mut candidates = self.candidates(key);
        let owner = candidates.next_tag()?.index;
        let usable = |i: usize| self.is_up(i) && !tried.contains(&i);
        if usable(owner) {
            return Some(Pick {
                worker: &self.tags[owner],
                failed_over_from: None,
            });
        }
        let next =
            std::iter::from_fn(|| candidates.next_tag().map(|t| t.index)).find(|&i| usable(i))?;
        Some(Pick {
            worker: &self.tags[next],
            failed_over_from: Some(&self.tags[owner]),
        })
    }

    /// Any live worker not yet tried, round robin (for keyless requests).
    pub fn pick_any(&self, tried: &[usize]) -> Option<Pick<'_>> {
        let start = self.any_cursor.fetch_add(1, Ordering::Relaxed);
        let n = self.tags.len();
        (0..n)
            .map(|offset| (start + offset) % n)
            .find(|&i| self.is_up(i) && !tried.contains(&i))
            .map(|i| Pick {
                worker: &self.tags[i],
                failed_over_from: None,
            })
    }

    /// The key's candidates with their health; the owner is the first healthy.
    pub fn route(&self, key: &[u8]) -> Vec<Candidate<'_>> {
        let mut candidates = self.candidates(key);
        std::iter::from_fn(|| candidates.next_tag().map(|t| t.index))
            .map(|i| Candidate {
                worker: &self.tags[i],
                healthy: self.is_up(i),
            })
            .collect()
    }

    /// A stable, non-reversible tag for a key in logs: never the raw key.
    pub fn key_hash(&self, key: &[u8]) -> String {
        format!("{:016x}", xxh3_64_with_seed(key, self.log_seed))
    }

    /// Active check result for `worker`.
    pub fn record_check(&self, worker: usize, passed: bool) {
        let transition = self.health.observe(worker, passed);
        self.after_transition(worker, transition, "active check");
    }

    /// Passive detection: a connection to `worker` was refused.
    pub fn mark_down(&self, worker: usize) {
        let transition = self.health.mark_down(worker).then_some(Transition::Down);
        self.after_transition(worker, transition, "connection refused");
    }

    fn after_transition(&self, worker: usize, transition: Option<Transition>, cause: &str) {
        let (Some(transition), Some(tag)) = (transition, self.tags.get(worker)) else {
            return;
        };
        let up = transition == Transition::Up;
        if let Some(metrics) = self.metrics.get(worker) {
            metrics.healthy.set(i64::from(up));
        }
        if up {
            tracing::info!(worker = %tag.id, addr = %tag.addr, cause, "worker up");
        } else {
            tracing::warn!(worker = %tag.id, addr = %tag.addr, cause, "worker down");
        }
    }
}

fn backend_for(tag: &WorkerTag) -> Backend {
    let mut backend = Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(tag.addr),
        weight: 1,
        ext: Default::default(),
    };
    backend.ext.insert(tag.clone());
    backend
}
