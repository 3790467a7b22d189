//! The cut worker's users moving elsewhere (the cut scenario). A worker cut
//! off from the store keeps its sockets and its advisory lock, so nothing
//! but its lease frees its entities: the worker itself stops serving when it
//! can no longer be sure of the lease (`lease_ms`, less a drift margin,
//! after its last renewal was sent), the store lets another worker claim
//! them once the stored lease has expired (at most `lease_ms` after the
//! cut), and the proxy stops sending to it once its health checks fail
//! `fall` times in a row, `interval_ms` apart (or once discovery no longer
//! lists it). So every user it served before the cut must be served by
//! another worker within
//!
//! ```text
//! bound = lease_ms + health interval_ms × fall + margin
//! ```
//!
//! counted from the cut, where the margin covers a client's retry backoff
//! (at most 500 ms), discovery's read (100 ms) and a claim, with room for
//! debug builds on two CPUs.
//!
//! A user's *move time* is the time from the cut to the first successful
//! reply from another worker to a request the user sent after the cut (on
//! either device). The cut worker's users are those whose last success
//! before the cut came from it. Every failed attempt of theirs from the cut
//! until they moved is counted by outcome: what the move cost the clients.
//!
//! The bound leaves nothing for a request held inside the cut worker past
//! its lease: a durable write that reached it before its lease ran out must
//! be let go when the lease lapses (503 `lease_lost`, which the proxy
//! retries on the next candidate), not wait for a commit that cannot come.
//! One that waits until the client gives up (3 s, a `transport timeout`;
//! `REQUEST_TIMEOUT` in `crate::client`) and retries elsewhere moves its
//! user about 3.1 s after it was sent (timeout and backoff), past the
//! suite's 3.5 s bound if it was sent more than about 0.4 s after the cut;
//! the check then fails, and the held requests show in the failures.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::traffic::LatencySummary;
use super::{describe, secs, Examples};
use crate::ledger::{Phase, Record};

/// Part of the bound beyond the lease and the health checks.
pub const MOVE_MARGIN_MS: u64 = 1_000;

/// When the cut came and went, in run microseconds.
#[derive(Debug, Clone)]
pub struct CutWindow {
    pub victim: String,
    /// The relay stopped forwarding.
    pub cut_us: u64,
    /// The proxy no longer listed the victim as healthy (if it did before
    /// the heal).
    pub detected_us: Option<u64>,
    /// The relay forwarded again.
    pub heal_us: u64,
    /// The proxy saw the victim healthy again (if it did).
    pub back_us: Option<u64>,
}

/// What the bound is made of, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MoveBound {
    pub lease_ms: u64,
    /// The proxy's health `interval_ms × fall`.
    pub detection_ms: u64,
    pub margin_ms: u64,
}

impl MoveBound {
    pub fn total_ms(self) -> u64 {
        self.lease_ms + self.detection_ms + self.margin_ms
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    pub victim: String,
    pub bound: MoveBound,
    pub bound_ms: u64,
    /// Users the victim served last before the cut.
    pub users: usize,
    pub moved_in_time: usize,
    pub moved_late: usize,
    /// Users not served by another worker before the heal.
    pub unmoved: usize,
    /// Move times over the users that moved.
    pub move_ms: LatencySummary,
    /// The proxy stopped listing the victim as healthy, after the cut.
    pub detected_ms: Option<f64>,
    /// The victim's last success during the cut (served from memory while
    /// its lease surely held), after the cut.
    pub victim_last_served_ms: Option<f64>,
    /// Attempts of the victim's users from the cut until each moved (until
    /// the heal for those who did not) that did not succeed. Every request
    /// of the load is replay-safe (reads, and mutations with an
    /// `Idempotency-Key`).
    pub failed_while_moving: usize,
    /// Their outcomes (`503 lease_lost`, `transport timeout`…) → count.
    pub failures: BTreeMap<String, usize>,
    pub examples: Examples,
}

impl Failover {
    pub fn holds(&self) -> bool {
        self.users > 0 && self.moved_late == 0 && self.unmoved == 0
    }

    pub fn of(records: &[Record], window: &CutWindow, bound: MoveBound) -> Failover {
        let load: Vec<&Record> = records.iter().filter(|r| r.phase == Phase::Load).collect();
        let users = victim_users(&load, window);
        let mut failover = Failover {
            victim: window.victim.clone(),
            bound,
            bound_ms: bound.total_ms(),
            users: users.len(),
            moved_in_time: 0,
            moved_late: 0,
            unmoved: 0,
            move_ms: LatencySummary::default(),
            detected_ms: window.detected_us.map(|t| ms_after(window.cut_us, t)),
            victim_last_served_ms: victim_last_served(&load, window)
                .map(|t| ms_after(window.cut_us, t)),
            failed_while_moving: 0,
            failures: BTreeMap::new(),
            examples: Examples::default(),
        };
        let mut moves_us = Vec::with_capacity(users.len());
        for user in &users {
            let mine: Vec<&Record> = load.iter().copied().filter(|r| r.user == *user).collect();
            let moved = first_served_elsewhere(&mine, window);
            let until_us = moved.map_or(window.heal_us, |r| r.t_done_us);
            let failed = failover.count_failures(&mine, window.cut_us, until_us);
            match moved {
                Some(record) => {
                    let move_us = record.t_done_us - window.cut_us;
                    moves_us.push(move_us);
                    failover.judge_move(user, move_us, record, &failed);
                }
                None => {
                    failover.unmoved += 1;
                    failover
                        .examples
                        .note(|| format!("{user}: not served by another worker before the heal"));
                }
            }
        }
        failover.move_ms = LatencySummary::of(moves_us);
        failover
    }

    /// `failed`: the user's failed attempts before the move, which say
    /// why a late move was late (`transport timeout`: held by the victim).
    fn judge_move(
        &mut self,
        user: &str,
        move_us: u64,
        record: &Record,
        failed: &BTreeMap<String, usize>,
    ) {
        if move_us <= self.bound_ms * 1000 {
            self.moved_in_time += 1;
        } else {
            self.moved_late += 1;
            self.examples.note(|| {
                let failed: Vec<String> = failed
                    .iter()
                    .map(|(label, n)| format!("{n}× {label}"))
                    .collect();
                format!(
                    "{user} moved {} after the cut (bound {} ms), after [{}]: {}",
                    secs(move_us),
                    self.bound_ms,
                    failed.join(", "),
                    describe(record)
                )
            });
        }
    }

    /// Count the user's failed attempts sent from `from_us` to `until_us`;
    /// returns them by outcome.
    fn count_failures(
        &mut self,
        records: &[&Record],
        from_us: u64,
        until_us: u64,
    ) -> BTreeMap<String, usize> {
        let mut mine = BTreeMap::new();
        for record in records
            .iter()
            .filter(|r| r.t_send_us >= from_us && r.t_send_us <= until_us && !r.is_success())
        {
            self.failed_while_moving += 1;
            *self.failures.entry(record.outcome_label()).or_default() += 1;
            *mine.entry(record.outcome_label()).or_default() += 1;
        }
        mine
    }
}

pub(super) fn ms_after(from_us: u64, at_us: u64) -> f64 {
    at_us.saturating_sub(from_us) as f64 / 1000.0
}

/// Users whose last success before the cut came from the victim.
pub(super) fn victim_users(load: &[&Record], window: &CutWindow) -> BTreeSet<String> {
    let mut last: BTreeMap<&str, &Record> = BTreeMap::new();
    for record in load
        .iter()
        .filter(|r| r.is_success() && r.t_done_us < window.cut_us)
    {
        let entry = last.entry(&record.user).or_insert(record);
        if record.t_done_us >= entry.t_done_us {
            *entry = record;
        }
    }
    last.into_iter()
        .filter(|(_, r)| r.worker.as_deref() == Some(window.victim.as_str()))
        .map(|(user, _)| user.to_owned())
        .collect()
}

/// The user's first success from another worker, sent after the cut and
/// answered before the heal.
fn first_served_elsewhere<'r>(records: &[&'r Record], window: &CutWindow) -> Option<&'r Record> {
    records
        .iter()
        .copied()
        .filter(|r| {
            r.is_success()
                && r.t_send_us >= window.cut_us
                && r.t_done_us < window.heal_us
                && r.worker.as_deref().is_some_and(|w| w != window.victim)
        })
        .min_by_key(|r| r.t_done_us)
}

/// When the victim last answered a success during the cut.
fn victim_last_served(load: &[&Record], window: &CutWindow) -> Option<u64> {
    load.iter()
        .filter(|r| {
            r.is_success()
                && r.t_done_us >= window.cut_us
                && r.t_done_us < window.heal_us
                && r.worker.as_deref() == Some(window.victim.as_str())
        })
        .map(|r| r.t_done_us)
        .max()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ledger::{Kind, Op};

    const BOUND: MoveBound = MoveBound {
        lease_ms: 2_000,
        detection_ms: 500,
        margin_ms: 1_000,
    };

    /// `w1` cut off from 1 s to `heal_ms`, seen down at `detected_ms`.
    pub(in crate::check) fn cut_of_w1(detected_ms: Option<u64>, heal_ms: u64) -> CutWindow {
        CutWindow {
            victim: "w1".into(),
            cut_us: 1_000_000,
            detected_us: detected_ms.map(|ms| ms * 1000),
            heal_us: heal_ms * 1000,
            back_us: None,
        }
    }

    fn window() -> CutWindow {
        cut_of_w1(Some(3_100), 9_000)
    }

    /// A cart read by `user`, answered `status` by `worker`.
    pub(in crate::check) fn reply(
        user: &str,
        worker: &str,
        status: u16,
        sent_ms: u64,
        done_ms: u64,
    ) -> Record {
        let mut record = Record::sample(Kind::Cart, Op::Get, sent_ms * 1000, done_ms * 1000);
        record.user = user.into();
        record.worker = Some(worker.into());
        record.status = Some(status);
        record
    }

    #[test]
    fn a_user_served_elsewhere_within_the_bound_moved_in_time() {
        let records = [
            reply("u1", "w1", 200, 900, 910),
            reply("u1", "w1", 503, 2_900, 2_910),
            reply("u1", "w2", 200, 3_000, 3_010),
            // Another worker's user is not the victim's.
            reply("u2", "w3", 200, 900, 910),
        ];
        let failover = Failover::of(&records, &window(), BOUND);
        assert_eq!((failover.users, failover.moved_in_time), (1, 1));
        assert_eq!(failover.failures.get("503"), Some(&1));
        assert!(failover.holds());
    }

    #[test]
    fn a_user_moved_past_the_bound_or_never_breaks_it() {
        let records = [
            reply("u1", "w1", 200, 900, 910),
            reply("u1", "w2", 200, 4_400, 4_600),
            reply("u2", "w1", 200, 900, 910),
        ];
        let failover = Failover::of(&records, &window(), BOUND);
        assert_eq!((failover.moved_late, failover.unmoved), (1, 1));
        assert!(!failover.holds());
    }
}
