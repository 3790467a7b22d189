//! The fleet as the proxy sees it: the current [`Roster`] of workers (their
//! HRW selection, health and metrics), swapped whole when discovery sees the
//! live set change. The request path, the health checker and the admin API
//! all read a roster snapshot, so `/admin/route` answers exactly as requests
//! are routed, and one request keeps one roster across its retries.
//!
//! A worker's health and metrics belong to its id and address, not to a
//! roster: a worker that stays in the live set keeps its health state when
//! the roster is rebuilt around it. A worker new to the set starts down.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use pingora::lb::selection::BackendSelection;
use pingora::lb::Backend;
use roost_routing::Seed;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::{HealthConfig, WorkerConfig};
use crate::health::{Thresholds, Transition, WorkerHealth};
use crate::metrics::WorkerMetrics;
use crate::select::{HrwIter, HrwSelection, WorkerTag};

/// One worker as configured or discovered.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub weight: f64,
}

impl From<&WorkerConfig> for WorkerSpec {
    fn from(w: &WorkerConfig) -> Self {
        WorkerSpec {
            id: w.id.value.as_str().into(),
            addr: w.addr,
            weight: w.weight.value,
        }
    }
}

/// What outlives rosters: one worker's health and metric children.
pub struct WorkerState {
    pub health: WorkerHealth,
    pub metrics: WorkerMetrics,
}

/// Every worker seen so far, by id and address.
type StateTable = Mutex<HashMap<(Arc<str>, SocketAddr), Arc<WorkerState>>>;

/// Workers, selection and health, shared by every part of the proxy.
pub struct Fleet {
    roster: ArcSwap<Roster>,
    thresholds: Thresholds,
    /// What the roster is built from; changed by discovery and reloads.
    membership: Mutex<Membership>,
    /// Every worker seen so far, by id and address.
    states: StateTable,
    /// Seed for the key hash in access logs (not the routing seed).
    log_seed: u64,
    /// Round-robin position for keyless requests under `missing: any`.
    any_cursor: AtomicUsize,
}

/// What the roster is built from.
struct Membership {
    seed: Seed,
    /// The config's `workers`: always in the roster, whatever discovery
    /// says.
    configured: Vec<WorkerSpec>,
    /// What discovery last read.
    discovered: Vec<WorkerSpec>,
}

impl Membership {
    /// The configured workers plus the discovered ones (a configured id
    /// wins over a discovered one), by id.
    fn specs(&self) -> Vec<WorkerSpec> {
        let mut specs = self.configured.clone();
        for spec in &self.discovered {
            if !specs.iter().any(|s| s.id == spec.id) {
                specs.push(spec.clone());
            }
        }
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        specs
    }
}

/// One snapshot of the fleet: who is in it, ranked per key by HRW.
pub struct Roster {
    selection: Arc<HrwSelection>,
    tags: Vec<WorkerTag>,
    backends: Vec<(usize, Backend)>,
    states: Vec<Arc<WorkerState>>,
    thresholds: Thresholds,
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'r> {
    pub worker: &'r WorkerTag,
    /// The key's owner when it was skipped (down or already tried).
    pub failed_over_from: Option<&'r WorkerTag>,
}

/// One candidate with its health, for `/admin/route`.
pub struct Candidate<'r> {
    pub worker: &'r WorkerTag,
    pub healthy: bool,
}

impl Fleet {
    pub fn new(hash_seed: &str, workers: &[WorkerConfig], health: &HealthConfig) -> Self {
        let membership = Membership {
            seed: Seed::from_phrase(hash_seed),
            configured: workers.iter().map(WorkerSpec::from).collect(),
            discovered: Vec::new(),
        };
        let thresholds = Thresholds::from(health);
        let states = Mutex::new(HashMap::new());
        let roster = Roster::build(&membership.seed, thresholds, &membership.specs(), |spec| {
            state_for(&states, spec)
        });
        Fleet {
            roster: ArcSwap::from_pointee(roster),
            thresholds,
            membership: Mutex::new(membership),
            states,
            log_seed: xxh3_64_with_seed(hash_seed.as_bytes(), 0x6c6f_6773),
            any_cursor: AtomicUsize::new(0),
        }
    }

    /// The current roster.
    pub fn roster(&self) -> Arc<Roster> {
        self.roster.load_full()
    }

    /// Discovery saw `discovered` live: the roster becomes the configured
    /// workers plus those. Returns whether the roster changed.
    pub fn discovered(&self, discovered: &[WorkerSpec]) -> bool {
        let mut membership = self.membership();
        membership.discovered = discovered.to_vec();
        self.rebuild(&membership, false)
    }

    /// A reload: the configured workers and the seed are now these. A
    /// worker that stays keeps its health; a new one starts down, and a
    /// new seed re-ranks every key. Returns whether the roster changed.
    pub fn reconfigure(&self, hash_seed: &str, workers: &[WorkerConfig]) -> bool {
        let mut membership = self.membership();
        let seed = Seed::from_phrase(hash_seed);
        let reseeded = seed != membership.seed;
        membership.seed = seed;
        membership.configured = workers.iter().map(WorkerSpec::from).collect();
        self.rebuild(&membership, reseeded)
    }

    fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Install the roster `membership` gives, if it differs from the
    /// current one (or `always`).
    fn rebuild(&self, membership: &Membership, always: bool) -> bool {
        let specs = membership.specs();
        let current = self.roster();
        let mut now: Vec<WorkerSpec> = current.tags.iter().map(WorkerSpec::from).collect();
        now.sort_by(|a, b| a.id.cmp(&b.id));
        if now == specs && !always {
            return false;
        }
        let (before, after) = (ids(&now), ids(&specs));
        tracing::info!(before = %before, after = %after, "worker set changed");
        let roster = Roster::build(&membership.seed, self.thresholds, &specs, |spec| {
            state_for(&self.states, spec)
        });
        self.roster.store(Arc::new(roster));
        self.forget_departed(&specs);
        true
    }

    /// Workers not in `specs` left the fleet: their state goes (one that
    /// comes back starts down, as a new one does) and so do the metric
    /// series of ids no worker in `specs` has.
    fn forget_departed(&self, specs: &[WorkerSpec]) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let stays =
            |id: &str, addr: SocketAddr| specs.iter().any(|s| &*s.id == id && s.addr == addr);
        let departed: Vec<(Arc<str>, SocketAddr)> = states
            .keys()
            .filter(|(id, addr)| !stays(id, *addr))
            .cloned()
            .collect();
        for (id, addr) in departed {
            states.remove(&(Arc::clone(&id), addr));
            if !specs.iter().any(|s| s.id == id) {
                WorkerMetrics::forget(&id);
            }
        }
    }

    /// Any live worker of `roster` not yet tried, round robin (for keyless
    /// requests).
    pub fn pick_any<'r>(&self, roster: &'r Roster, tried: &[usize]) -> Option<Pick<'r>> {
        let start = self.any_cursor.fetch_add(1, Ordering::Relaxed);
        let n = roster.tags.len();
        (0..n)
            .map(|offset| (start + offset) % n.max(1))
            .find(|&i| roster.is_up(i) && !tried.contains(&i))
            .map(|i| Pick {
                worker: &roster.tags[i],
                failed_over_from: None,
            })
    }

    /// A stable, non-reversible tag for a key in logs: never the raw key.
    pub fn key_hash(&self, key: &[u8]) -> String {
        format!("{:016x}", xxh3_64_with_seed(key, self.log_seed))
    }
}

/// The state of the worker `spec` names, created (down) on first sight.
fn state_for(states: &StateTable, spec: &WorkerSpec) -> Arc<WorkerState> {
    let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
    let state = states
        .entry((spec.id.clone(), spec.addr))
        .or_insert_with(|| {
            Arc::new(WorkerState {
                health: WorkerHealth::down(),
                metrics: WorkerMetrics::for_worker(&spec.id),
            })
        });
    Arc::clone(state)
}

fn ids(specs: &[WorkerSpec]) -> String {
    specs.iter().map(|s| &*s.id).collect::<Vec<_>>().join(",")
}

impl From<&WorkerTag> for WorkerSpec {
    fn from(tag: &WorkerTag) -> Self {
        WorkerSpec {
            id: tag.id.clone(),
            addr: tag.addr,
            weight: tag.weight,
        }
    }
}

impl Roster {
    fn build(
        seed: &Seed,
        thresholds: Thresholds,
        specs: &[WorkerSpec],
        mut state_of: impl FnMut(&WorkerSpec) -> Arc<WorkerState>,
    ) -> Self {
        let tags: Vec<WorkerTag> = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| WorkerTag {
                index,
                id: spec.id.clone(),
                addr: spec.addr,
                weight: spec.weight,
            })
            .collect();
        let backends: Vec<(usize, Backend)> =
            tags.iter().map(|t| (t.index, backend_for(t))).collect();
        let set: BTreeSet<Backend> = backends.iter().map(|(_, b)| b.clone()).collect();
        Roster {
            selection: Arc::new(HrwSelection::build_with_config(&set, seed)),
            states: specs.iter().map(&mut state_of).collect(),
            tags,
            backends,
            thresholds,
        }
    }

    pub fn workers(&self) -> &[WorkerTag] {
        &self.tags
    }

    pub fn backends(&self) -> &[(usize, Backend)] {
        &self.backends
    }

    pub fn backend(&self, worker: usize) -> Option<&Backend> {
        self.backends.get(worker).map(|(_, backend)| backend)
    }

    pub fn metrics(&self, worker: usize) -> Option<&WorkerMetrics> {
        self.states.get(worker).map(|s| &s.metrics)
    }

    pub fn is_up(&self, worker: usize) -> bool {
        self.states.get(worker).is_some_and(|s| s.health.is_up())
    }

    /// Whether any worker passes its health checks.
    pub fn any_up(&self) -> bool {
        self.states.iter().any(|s| s.health.is_up())
    }

    pub fn since(&self, worker: usize) -> Option<SystemTime> {
        self.states.get(worker).map(|s| s.health.since())
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

    /// Active check result for `worker`.
    pub fn record_check(&self, worker: usize, passed: bool) {
        let transition = self.states.get(worker).and_then(|s| {
            s.metrics.count_check(passed);
            s.health.observe(passed, self.thresholds)
        });
        self.after_transition(worker, transition, "active check");
    }

    /// The check before the proxy takes traffic
    /// ([`crate::checker::HealthChecker::first_round`]).
    pub fn record_first_check(&self, worker: usize, passed: bool) {
        let transition = self.states.get(worker).and_then(|s| {
            s.metrics.count_check(passed);
            s.health.observe_first(passed)
        });
        self.after_transition(worker, transition, "first check");
    }

    /// Passive detection: a connection to `worker` was refused.
    pub fn mark_down(&self, worker: usize) {
        let transition = self
            .states
            .get(worker)
            .and_then(|s| s.health.mark_down().then_some(Transition::Down));
        self.after_transition(worker, transition, "connection refused");
    }

    fn after_transition(&self, worker: usize, transition: Option<Transition>, cause: &str) {
        let (Some(transition), Some(tag), Some(state)) =
            (transition, self.tags.get(worker), self.states.get(worker))
        else {
            return;
        };
        let up = transition == Transition::Up;
        state.metrics.healthy.set(i64::from(up));
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
