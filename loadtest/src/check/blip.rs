//! The cut worker's users across a store blip (the blip scenario). The
//! worker's way to the store stops forwarding for less than its lease and
//! less than the workers' `store_grace_ms`, every socket open: nothing frees
//! its entities, so no other worker may claim them, and the worker may not
//! answer from memory while it cannot be sure of its lease. What issue 15
//! asks of it is to hold its users' requests across the blip and serve
//! them after it: latency, never an error.
//!
//! So every attempt of the cut worker's users answered from the cut on must
//! succeed, whatever it was (the load's requests are all replay-safe, and a
//! failed replay-safe request anywhere is a MUST of its own). What the held
//! requests were served is judged by the suite's stale-read and lost-write
//! checks; what the blip cost every client is the latency of the requests
//! in flight during it ([`super::traffic::DuringFault`]).
//!
//! The cut worker's users are those whose last success before the cut came
//! from it, as in the cut ([`super::failover`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::failover::{ms_after, victim_users, CutWindow};
use super::{describe, Examples};
use crate::ledger::{Phase, Record};

#[derive(Debug, Clone, Serialize)]
pub struct Blip {
    pub victim: String,
    /// From the cut to the heal.
    pub blip_ms: f64,
    /// Users the victim served last before the cut.
    pub users: usize,
    /// Their attempts answered from the cut on.
    pub attempts: usize,
    /// Those that did not succeed. Must be 0.
    pub failed: usize,
    /// Their outcomes (`503 lease_lost`, `transport timeout`…) → count.
    pub failures: BTreeMap<String, usize>,
    /// Users served by another worker from the cut on: sent away rather
    /// than held.
    pub moved: usize,
    /// The proxy stopped listing the victim as healthy, after the cut (if
    /// it did before the heal).
    pub detected_ms: Option<f64>,
    pub examples: Examples,
}

impl Blip {
    pub fn holds(&self) -> bool {
        self.users > 0 && self.failed == 0
    }

    pub fn of(records: &[Record], window: &CutWindow) -> Blip {
        let load: Vec<&Record> = records.iter().filter(|r| r.phase == Phase::Load).collect();
        let users = victim_users(&load, window);
        let mut blip = Blip {
            victim: window.victim.clone(),
            blip_ms: ms_after(window.cut_us, window.heal_us),
            users: users.len(),
            attempts: 0,
            failed: 0,
            failures: BTreeMap::new(),
            moved: 0,
            detected_ms: window.detected_us.map(|t| ms_after(window.cut_us, t)),
            examples: Examples::default(),
        };
        let after_cut = load
            .iter()
            .filter(|r| r.t_done_us >= window.cut_us && users.contains(&r.user));
        let mut moved = BTreeSet::new();
        for record in after_cut {
            blip.count(record);
            if record.is_success() && record.worker.as_deref() != Some(window.victim.as_str()) {
                moved.insert(record.user.as_str());
            }
        }
        blip.moved = moved.len();
        blip
    }

    fn count(&mut self, record: &Record) {
        self.attempts += 1;
        if record.is_success() {
            return;
        }
        self.failed += 1;
        *self.failures.entry(record.outcome_label()).or_default() += 1;
        self.examples.note(|| describe(record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::failover::tests::{cut_of_w1, reply};

    fn window() -> CutWindow {
        cut_of_w1(None, 2_000)
    }

    #[test]
    fn requests_held_across_the_blip_and_served_keep_it() {
        let records = [
            reply("u1", "w1", 200, 900, 910),
            reply("u1", "w1", 200, 1_100, 2_050),
            // Another worker's user, failing, is not the victim's.
            reply("u2", "w2", 200, 900, 910),
            reply("u2", "w2", 503, 1_500, 1_510),
        ];
        let blip = Blip::of(&records, &window());
        assert_eq!(
            (blip.users, blip.attempts, blip.failed, blip.moved),
            (1, 1, 0, 0)
        );
        assert!(blip.holds());
    }

    #[test]
    fn a_failed_attempt_of_the_cut_worker_s_user_breaks_it() {
        let records = [
            reply("u1", "w1", 200, 900, 910),
            reply("u1", "w1", 503, 1_100, 1_110),
            reply("u1", "w2", 200, 1_300, 1_310),
        ];
        let blip = Blip::of(&records, &window());
        assert_eq!((blip.failed, blip.moved), (1, 1));
        assert_eq!(blip.failures.get("503"), Some(&1));
        assert!(!blip.holds());
    }
}
