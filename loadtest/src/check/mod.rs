//! The questions asked of a run's ledger and final state, one module each.
//! Each check returns counts plus a few concrete examples from the ledger,
//! so a failure names the requests that show it.

pub mod availability;
pub mod blip;
pub mod failover;
pub mod lost;
pub mod movement;
pub mod overlap;
pub mod readback;
pub mod revalidation;
pub mod stale;
pub mod traffic;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::ledger::Record;
use crate::stored::StoredEntity;

/// Examples kept per finding.
const EXAMPLES: usize = 5;

/// Up to `EXAMPLES` descriptions of what a check found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Examples(Vec<String>);

impl Examples {
    pub fn note(&mut self, example: impl FnOnce() -> String) {
        if self.0.len() < EXAMPLES {
            self.0.push(example());
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

/// `7.123 s` from run microseconds.
pub fn secs(us: u64) -> String {
    format!("{:.3} s", us as f64 / 1e6)
}

/// One line that identifies a record in the ledger.
pub fn describe(record: &Record) -> String {
    let outcome = match (record.status, &record.error) {
        (Some(status), Some(error)) => format!("{status} {error}"),
        (Some(status), None) => status.to_string(),
        (None, error) => format!("transport error {}", error.as_deref().unwrap_or("?")),
    };
    format!(
        "{user} d{device} {kind} {op:?} op {op_id} attempt {attempt}: sent {sent}, done {done}, {outcome}, worker {worker}, epoch {epoch}, version {version}",
        user = record.user,
        device = record.device,
        kind = record.entity.name(),
        op = record.op,
        op_id = record.op_id,
        attempt = record.attempt,
        sent = secs(record.t_send_us),
        done = secs(record.t_done_us),
        worker = record.worker.as_deref().unwrap_or("-"),
        epoch = record.epoch.map_or("-".into(), |e| e.to_string()),
        version = record.version.map_or("-".into(), |v| v.to_string()),
    )
}

/// Records grouped by entity (`KIND/USER`), each group in ledger order.
pub fn by_entity(records: &[Record]) -> BTreeMap<String, Vec<&Record>> {
    let mut groups: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in records {
        groups.entry(record.entity_key()).or_default().push(record);
    }
    groups
}

/// Run `check` on every entity's records, collecting into one `T`.
pub fn per_entity<T: Default>(records: &[Record], check: impl Fn(&mut T, &[&Record])) -> T {
    let mut found = T::default();
    for group in by_entity(records).values() {
        check(&mut found, group);
    }
    found
}

/// The records of one entity that `keep` selects, by completion time.
pub fn by_completion<'r>(
    records: &[&'r Record],
    keep: impl Fn(&Record) -> bool,
) -> Vec<&'r Record> {
    let mut kept: Vec<&Record> = records.iter().copied().filter(|r| keep(r)).collect();
    kept.sort_by_key(|r| r.t_done_us);
    kept
}

/// Everything the checks found in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    pub traffic: traffic::Traffic,
    pub availability: availability::Availability,
    pub lost: lost::LostWrites,
    pub stale: stale::StaleReads,
    pub overlap: overlap::Overlaps,
    pub readback: readback::ReadBack,
    /// The requests in flight during the fault, from its first step to its
    /// last: how many, how many failed, their latency.
    pub during_fault: Option<traffic::DuringFault>,
    /// Kill -9: the windows of the killed worker's users.
    pub crash: Option<crate::crash::CrashWindows>,
    /// Scale: which entities moved.
    pub movement: Option<movement::Movement>,
    /// Cut: how the cut worker's users moved.
    pub failover: Option<failover::Failover>,
    /// Cut: what the cut worker served after the heal.
    pub revalidation: Option<revalidation::Revalidation>,
    /// Blip: what the cut worker's users saw of it.
    pub blip: Option<blip::Blip>,
}

impl Findings {
    /// The checks every run gets; the scenario's own are set after.
    pub fn examine(
        records: &[Record],
        stored: &HashMap<String, StoredEntity>,
        run_end_us: u64,
    ) -> Findings {
        Findings {
            traffic: traffic::Traffic::of(records),
            availability: availability::Availability::of(records, run_end_us),
            lost: lost::LostWrites::of(records, stored),
            stale: stale::StaleReads::of(records),
            overlap: overlap::Overlaps::of(records),
            readback: readback::ReadBack::of(records, stored),
            during_fault: None,
            crash: None,
            movement: None,
            failover: None,
            revalidation: None,
            blip: None,
        }
    }
}
