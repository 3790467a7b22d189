//! What the cut worker serves after the heal (the cut scenario). While it
//! was cut off, its lease ran out and other workers claimed the entities it
//! held in memory; when it hears from the store again it must serve nothing
//! from that memory until it has renewed its lease and dropped every entity
//! whose stored epoch moved on (`Runtime::revalidate` in the worker), and
//! an entity it serves again it must claim afresh, from the store's state.
//!
//! So from the heal on, the fault sends every session and cart the worker
//! held before the cut straight to it (with the proxy's credentials), in
//! rounds, until the proxy sees it healthy again and once more after that;
//! before each round it reads the entities' epochs from the store. Each
//! answer is one of:
//!
//! | answer | meaning |
//! |---|---|
//! | 503 | *refused*: not serving (yet) — allowed |
//! | 2xx under an epoch newer than its pre-cut one, not older than the store's | *re-claimed* — allowed |
//! | 2xx under its pre-cut epoch, still the store's | *kept*: nobody claimed it meanwhile — allowed |
//! | 2xx under an epoch older than the one stored before the probe was sent | *served from a fenced cache* — a violation |
//! | 2xx without a durable write acknowledged before the probe was sent | *missing a durable write* — a violation |
//!
//! The probes are in the ledger too ([`Phase::Probe`]), so the stale-read
//! and overlapping-owner checks judge their versions and epochs as well.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::lost::survived;
use super::readback::shown_state;
use super::{describe, secs, Examples};
use crate::ledger::{Durability, Phase, Record};

/// One probe and what the store and the ledger said before it was sent.
#[derive(Debug, Clone)]
pub struct Probed {
    pub record: Record,
    /// The entity's epoch in the store, read just before the probe's round.
    pub stored_epoch: Option<i64>,
    /// The epoch the worker served the entity under before the cut.
    pub epoch_before: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Revalidation {
    pub victim: String,
    /// Entities (sessions and carts) the victim served before the cut.
    pub keys: usize,
    pub probes: usize,
    pub refused: usize,
    pub reclaimed: usize,
    pub kept: usize,
    /// Served under an epoch the store had already moved past. Must be 0.
    pub stale_cache: usize,
    /// Served without a durable write acknowledged before. Must be 0.
    pub missing_durable: usize,
    /// A 2xx without `x-roost-epoch`: cannot be judged. Must be 0.
    pub unjudged: usize,
    /// Other outcomes (transport errors, 4xx…) → count.
    pub other: BTreeMap<String, usize>,
    /// The first 2xx after the heal, after the heal.
    pub first_served_ms: Option<f64>,
    pub examples: Examples,
}

impl Revalidation {
    pub fn holds(&self) -> bool {
        self.probes > 0 && self.stale_cache == 0 && self.missing_durable == 0 && self.unjudged == 0
    }

    /// Judge `probes` of `victim` (healed at `heal_us`) against the ledger.
    pub fn of(victim: &str, heal_us: u64, probes: &[Probed], records: &[Record]) -> Revalidation {
        let keys: BTreeSet<String> = probes.iter().map(|p| p.record.entity_key()).collect();
        let mut revalidation = Revalidation {
            victim: victim.to_owned(),
            keys: keys.len(),
            probes: probes.len(),
            ..Revalidation::default()
        };
        let durable = durable_acks(records);
        for probe in probes {
            revalidation.judge(probe, &durable);
        }
        revalidation.first_served_ms = probes
            .iter()
            .filter(|p| p.record.is_2xx())
            .map(|p| p.record.t_done_us)
            .min()
            .map(|t| t.saturating_sub(heal_us) as f64 / 1000.0);
        revalidation
    }

    fn judge(&mut self, probe: &Probed, durable: &BTreeMap<String, Vec<&Record>>) {
        let read = &probe.record;
        if read.status == Some(503) {
            self.refused += 1;
            return;
        }
        if !read.is_success() {
            *self.other.entry(read.outcome_label()).or_default() += 1;
            return;
        }
        let Some(epoch) = read.epoch else {
            self.unjudged += 1;
            self.examples
                .note(|| format!("no x-roost-epoch: {}", describe(read)));
            return;
        };
        let floor = probe.stored_epoch.max(probe.epoch_before);
        if floor.is_some_and(|floor| epoch < floor) {
            self.stale_cache += 1;
            self.examples.note(|| {
                format!(
                    "served under epoch {epoch}, the store had {:?} (pre-cut {:?}): {}",
                    probe.stored_epoch,
                    probe.epoch_before,
                    describe(read)
                )
            });
        } else if Some(epoch) == probe.epoch_before {
            self.kept += 1;
        } else {
            self.reclaimed += 1;
        }
        self.check_content(read, durable.get(&read.entity_key()));
    }

    /// Every durable write to the entity acknowledged before `read` was
    /// sent is in what it showed.
    fn check_content(&mut self, read: &Record, acks: Option<&Vec<&Record>>) {
        let shown = shown_state(read);
        let missing = acks
            .into_iter()
            .flatten()
            .filter(|a| a.t_done_us < read.t_send_us)
            .find(|a| survived(a, Some(&shown), &HashSet::new()) == Some(false));
        if let Some(ack) = missing {
            self.missing_durable += 1;
            self.examples.note(|| {
                format!(
                    "{} lacks {} acknowledged at {}",
                    describe(read),
                    ack.effect
                        .as_ref()
                        .map_or_else(|| "a write".into(), ToString::to_string),
                    secs(ack.t_done_us)
                )
            });
        }
    }
}

/// Acknowledged durable writes of the load, by entity.
fn durable_acks(records: &[Record]) -> BTreeMap<String, Vec<&Record>> {
    let mut acks: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in records.iter().filter(|r| {
        r.phase == Phase::Load
            && r.is_acknowledged_write()
            && r.durability == Some(Durability::Durable)
    }) {
        acks.entry(record.entity_key()).or_default().push(record);
    }
    acks
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ledger::{Effect, Kind, Op};

    fn probe(status: u16, epoch: i64, stored: i64, before: i64) -> Probed {
        let mut record = Record::sample(Kind::Cart, Op::Get, 5_000, 5_010);
        record.phase = Phase::Probe;
        record.status = Some(status);
        record.epoch = Some(epoch);
        record.body = Some(json!({"items": [{"sku": "a", "qty": 1}], "orders": []}));
        Probed {
            record,
            stored_epoch: Some(stored),
            epoch_before: Some(before),
        }
    }

    fn durable_add(sku: &str, done: u64) -> Record {
        let mut record = Record::sample(Kind::Cart, Op::Add, done - 10, done);
        record.durability = Some(Durability::Durable);
        record.effect = Some(Effect::CartItem { sku: sku.into() });
        record
    }

    #[test]
    fn refusals_reclaims_and_untouched_entities_pass() {
        let probes = [
            probe(503, 0, 3, 2),
            probe(200, 4, 3, 2),
            probe(200, 2, 2, 2),
        ];
        let found = Revalidation::of("w1", 0, &probes, &[durable_add("a", 100)]);
        assert_eq!((found.refused, found.reclaimed, found.kept), (1, 1, 1));
        assert!(found.holds());
    }

    #[test]
    fn the_pre_cut_epoch_after_another_claim_is_a_fenced_cache() {
        let found = Revalidation::of("w1", 0, &[probe(200, 2, 3, 2)], &[]);
        assert_eq!(found.stale_cache, 1);
        assert!(!found.holds());
    }

    #[test]
    fn a_durable_write_acknowledged_before_the_probe_must_show() {
        let records = [durable_add("a", 100), durable_add("b", 200)];
        let found = Revalidation::of("w1", 0, &[probe(200, 4, 3, 2)], &records);
        assert_eq!(found.missing_durable, 1);
        // Acknowledged after the probe was sent: not required.
        let later = [durable_add("a", 100), durable_add("b", 6_000)];
        let found = Revalidation::of("w1", 0, &[probe(200, 4, 3, 2)], &later);
        assert_eq!(found.missing_durable, 0);
    }
}
