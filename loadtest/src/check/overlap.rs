//! Overlapping owners (guarantee G2): for one entity, a reply served under
//! epoch e1 to a request sent after a reply under a newer epoch e2 > e1 had
//! already been received. The newer claim fenced the older owner off before
//! the request even left, so the older owner must not have served it.
//!
//! The brief's case is two different workers; the same worker id under two
//! epochs (a restarted process, or a re-claim) is just as wrong and is
//! counted too, separately. Both must be 0.

use serde::Serialize;

use super::{by_completion, describe, per_entity, Examples};
use crate::ledger::Record;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Overlaps {
    /// Replies that carried an epoch and a worker.
    pub replies: usize,
    pub different_workers: usize,
    pub same_worker_id: usize,
    pub examples: Examples,
}

impl Overlaps {
    pub fn total(&self) -> usize {
        self.different_workers + self.same_worker_id
    }

    pub fn of(records: &[Record]) -> Overlaps {
        per_entity(records, Overlaps::check_entity)
    }

    fn check_entity(&mut self, records: &[&Record]) {
        let replies = by_completion(records, |r| r.epoch.is_some() && r.worker.is_some());
        self.replies += replies.len();
        let newest_so_far = newest_epoch_prefix(&replies);
        for reply in &replies {
            let received = replies.partition_point(|r| r.t_done_us < reply.t_send_us);
            let Some(newer) = received.checked_sub(1).map(|i| newest_so_far[i]) else {
                continue;
            };
            if newer.epoch > reply.epoch {
                self.count(reply, newer);
            }
        }
    }

    fn count(&mut self, old: &Record, newer: &Record) {
        if old.worker == newer.worker {
            self.same_worker_id += 1;
        } else {
            self.different_workers += 1;
        }
        self.examples.note(|| {
            format!(
                "{} — sent after {} had answered",
                describe(old),
                describe(newer)
            )
        });
    }
}

/// For each position, the reply with the highest epoch up to it.
fn newest_epoch_prefix<'r>(replies: &[&'r Record]) -> Vec<&'r Record> {
    let mut newest: Vec<&Record> = Vec::with_capacity(replies.len());
    for reply in replies {
        let best = match newest.last() {
            Some(best) if best.epoch >= reply.epoch => best,
            _ => reply,
        };
        newest.push(best);
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Kind, Op};

    fn reply(worker: &str, epoch: i64, sent: u64, done: u64) -> Record {
        let mut record = Record::sample(Kind::Cart, Op::Get, sent, done);
        record.worker = Some(worker.into());
        record.epoch = Some(epoch);
        record
    }

    #[test]
    fn an_old_owner_answering_after_the_new_one_is_an_overlap() {
        let records = [reply("w2", 2, 0, 10), reply("w1", 1, 20, 30)];
        assert_eq!(Overlaps::of(&records).different_workers, 1);
    }

    #[test]
    fn concurrent_replies_across_a_claim_are_not() {
        let records = [reply("w2", 2, 0, 10), reply("w1", 1, 5, 30)];
        assert_eq!(Overlaps::of(&records).total(), 0);
    }

    #[test]
    fn the_same_id_under_an_older_epoch_counts_separately() {
        let records = [reply("w1", 3, 0, 10), reply("w1", 2, 20, 30)];
        let overlaps = Overlaps::of(&records);
        assert_eq!(
            (overlaps.same_worker_id, overlaps.different_workers),
            (1, 0)
        );
    }
}
