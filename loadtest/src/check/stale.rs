//! Stale reads: a read (GET) that returned a version older than a version
//! already acknowledged to that user (any device, any reply with an ETag)
//! before the read was sent.
//!
//! Every such read is counted (`strict`). One kind of them is the
//! write-behind loss the design allows, not a stale read: after a failover
//! (the read is served under a newer claim epoch than every newer version
//! acknowledged) the new owner starts from the last flush, so write-behind
//! changes acknowledged since are gone and the version counter with them.
//! Such a read is `explained` only when none of the newer acknowledged
//! versions came from a durable write (those are committed before they are
//! acknowledged) and all of them were served under an older epoch. All
//! others are `violations` — the MUST.

use serde::Serialize;

use super::{by_completion, describe, per_entity, Examples};
use crate::ledger::{Durability, Record};

#[derive(Debug, Clone, Default, Serialize)]
pub struct StaleReads {
    /// Reads that returned a version.
    pub reads: usize,
    /// Reads older than a version acknowledged before they were sent.
    pub strict: usize,
    /// Of those: after a failover, below write-behind acknowledgements only.
    pub explained_by_write_behind_loss: usize,
    /// Of those: the rest. Must be 0.
    pub violations: usize,
    pub violation_examples: Examples,
    pub explained_examples: Examples,
}

impl StaleReads {
    pub fn of(records: &[Record]) -> StaleReads {
        per_entity(records, StaleReads::check_entity)
    }

    fn check_entity(&mut self, records: &[&Record]) {
        let acks = by_completion(records, |r| r.is_success() && r.version.is_some());
        for read in acks.iter().filter(|r| r.op.is_read()) {
            self.reads += 1;
            let before = acks.partition_point(|a| a.t_done_us < read.t_send_us);
            self.judge(read, &acks[..before]);
        }
    }

    /// Judge `read` against the acknowledgements received before it was sent.
    fn judge(&mut self, read: &Record, earlier: &[&Record]) {
        let Some(seen) = read.version else {
            return;
        };
        let newer: Vec<&Record> = earlier
            .iter()
            .copied()
            .filter(|a| a.version.is_some_and(|v| v > seen))
            .collect();
        let Some(newest) = newer.iter().max_by_key(|a| (a.version, a.t_done_us)) else {
            return;
        };
        self.strict += 1;
        let example = || {
            format!(
                "read {} — older than acknowledged {}",
                describe(read),
                describe(newest)
            )
        };
        if is_write_behind_loss(read, &newer) {
            self.explained_by_write_behind_loss += 1;
            self.explained_examples.note(example);
        } else {
            self.violations += 1;
            self.violation_examples.note(example);
        }
    }
}

/// Every newer acknowledgement was not a durable write and was served under
/// an older epoch than the read.
fn is_write_behind_loss(read: &Record, newer: &[&Record]) -> bool {
    let Some(read_epoch) = read.epoch else {
        return false;
    };
    newer.iter().all(|a| {
        a.durability != Some(Durability::Durable) && a.epoch.is_some_and(|e| e < read_epoch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Kind, Op};

    fn reply(op: Op, sent: u64, done: u64, version: u64, epoch: i64) -> Record {
        let mut record = Record::sample(Kind::Session, op, sent, done);
        record.durability = (op != Op::Get).then_some(Durability::WriteBehind);
        record.version = Some(version);
        record.epoch = Some(epoch);
        record
    }

    #[test]
    fn a_read_behind_an_earlier_ack_in_the_same_epoch_is_a_violation() {
        let records = [reply(Op::Patch, 0, 10, 5, 1), reply(Op::Get, 20, 30, 4, 1)];
        let stale = StaleReads::of(&records);
        assert_eq!((stale.strict, stale.violations), (1, 1));
    }

    #[test]
    fn a_read_after_a_failover_below_write_behind_acks_is_explained() {
        let records = [reply(Op::Patch, 0, 10, 5, 1), reply(Op::Get, 20, 30, 4, 2)];
        let stale = StaleReads::of(&records);
        assert_eq!((stale.strict, stale.explained_by_write_behind_loss), (1, 1));
        assert_eq!(stale.violations, 0);
    }

    #[test]
    fn a_read_below_a_durable_ack_is_a_violation_in_any_epoch() {
        let mut durable = reply(Op::Patch, 0, 10, 5, 1);
        durable.durability = Some(Durability::Durable);
        let records = [durable, reply(Op::Get, 20, 30, 4, 2)];
        assert_eq!(StaleReads::of(&records).violations, 1);
    }

    #[test]
    fn concurrent_acks_do_not_count() {
        let records = [reply(Op::Patch, 0, 25, 5, 1), reply(Op::Get, 20, 30, 4, 1)];
        assert_eq!(StaleReads::of(&records).strict, 0);
    }
}
