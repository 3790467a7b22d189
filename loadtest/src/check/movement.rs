//! Scale-out movement: which active entities changed worker when a new
//! worker joined. HRW promises that only about 1/N of the keys move (N the
//! fleet size after), and all of them to the new worker. The worker an
//! entity was on comes from `x-roost-worker`: its last reply before the new
//! worker started, and its last reply to a request sent after the proxy saw
//! the new worker healthy (and before it was told to leave).
//!
//! The proxy's own HRW order (`/admin/route`) says exactly which users
//! should move, so the moves are also compared with it one by one, and its
//! share for the new worker over many made-up keys shows whether a
//! fraction above the bound is the hash or the small sample of users.

use std::collections::HashMap;

use serde::Serialize;

use super::{by_entity, Examples};
use crate::ledger::Record;

/// When the new worker came and went, in run microseconds.
#[derive(Debug, Clone, Copy)]
pub struct ScaleWindow {
    /// The new worker was started.
    pub started_us: u64,
    /// The proxy saw it healthy.
    pub ready_us: u64,
    /// It was sent SIGTERM.
    pub leaving_us: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Movement {
    pub new_worker: String,
    pub fleet_after: usize,
    /// Entities answered both before and while the new worker served
    /// (load users' entities and bystanders).
    pub active: usize,
    /// Of which bystanders.
    pub bystanders: usize,
    pub moved_to_new: usize,
    pub fraction_moved: f64,
    /// 1.05 / fleet_after.
    pub bound: f64,
    /// Entities that changed to a worker other than the new one.
    pub moved_elsewhere: usize,
    /// Entities whose move (or stay) differs from the proxy's HRW order.
    pub disagree_with_hrw: usize,
    /// The new worker's share of [`Movement::sample_keys`] made-up keys in
    /// the proxy's HRW order: what `fraction_moved` estimates, without the
    /// noise of a few hundred users (60 users: ±0.056 standard deviation).
    pub sample_keys: usize,
    pub sample_share: f64,
    pub examples: Examples,
}

impl Movement {
    pub fn within_bound(&self) -> bool {
        self.fraction_moved <= self.bound
    }

    /// Count the bystanders (see [`crate::bystanders`]): the worker of each
    /// before the scale-out and while the new worker served.
    pub fn add_bystanders(&mut self, before: &[Option<String>], after: &[Option<String>]) {
        for (n, pair) in before.iter().zip(after).enumerate() {
            let (Some(before), Some(after)) = pair else {
                continue;
            };
            self.active += 1;
            self.bystanders += 1;
            if before != after && *after == self.new_worker {
                self.moved_to_new += 1;
            } else if before != after {
                self.moved_elsewhere += 1;
                self.examples.note(|| {
                    format!("bystander-{n} moved {before} → {after}, not to the new worker")
                });
            }
        }
        if self.active > 0 {
            self.fraction_moved = self.moved_to_new as f64 / self.active as f64;
        }
    }

    /// `hrw_first`: user → first worker of its HRW order over the grown fleet.
    pub fn of(
        records: &[Record],
        window: ScaleWindow,
        new_worker: &str,
        fleet_after: usize,
        hrw_first: &HashMap<String, String>,
    ) -> Movement {
        let mut movement = Movement {
            new_worker: new_worker.to_owned(),
            fleet_after,
            bound: 1.05 / fleet_after as f64,
            ..Movement::default()
        };
        for (key, group) in by_entity(records) {
            let Some((before, after)) = workers_around(&group, window) else {
                continue;
            };
            movement.active += 1;
            let user = group.first().map_or("", |r| r.user.as_str());
            movement.classify(&key, before, after, hrw_first.get(user));
        }
        if movement.active > 0 {
            movement.fraction_moved = movement.moved_to_new as f64 / movement.active as f64;
        }
        movement
    }

    fn classify(&mut self, key: &str, before: &str, after: &str, hrw: Option<&String>) {
        let moved = before != after;
        if moved && after == self.new_worker {
            self.moved_to_new += 1;
        } else if moved {
            self.moved_elsewhere += 1;
            self.examples
                .note(|| format!("{key} moved {before} → {after}, not to the new worker"));
        }
        let should_be_new = hrw.is_some_and(|w| *w == self.new_worker);
        if should_be_new != (after == self.new_worker) {
            self.disagree_with_hrw += 1;
            self.examples
                .note(|| format!("{key}: {before} → {after}, HRW first is {hrw:?}"));
        }
    }
}

/// The worker of the entity's last success before the window, and of its
/// last success sent inside it.
fn workers_around<'r>(records: &[&'r Record], window: ScaleWindow) -> Option<(&'r str, &'r str)> {
    let last_served = |wanted: &dyn Fn(&Record) -> bool| {
        records
            .iter()
            .filter(|r| r.is_success() && wanted(r))
            .max_by_key(|r| r.t_done_us)
            .and_then(|r| r.worker.as_deref())
    };
    let before = last_served(&|r| r.t_done_us < window.started_us)?;
    let after =
        last_served(&|r| r.t_send_us >= window.ready_us && r.t_done_us < window.leaving_us)?;
    Some((before, after))
}
