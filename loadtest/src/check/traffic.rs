//! What the load did: attempts, failures by kind, operations given up on,
//! and the latency distribution (HdrHistogram, microseconds).

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ledger::{Phase, Record};

/// Latency is recorded up to a minute; slower is clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    /// HTTP attempts of the load (retries included).
    pub requests: usize,
    /// Attempts that failed: transport error, 5xx, or an unexpected 4xx.
    pub failed: usize,
    /// Those of them that were replay-safe (a read, or a mutation with an
    /// `Idempotency-Key`): a fault should show these clients latency, not
    /// an error.
    pub failed_replay_safe: usize,
    /// `503 handoff_timeout`, `transport timeout`… → count.
    pub failures: BTreeMap<String, usize>,
    /// Logical operations, and those never answered with success.
    pub operations: usize,
    pub operations_given_up: usize,
    pub latency_ms: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    /// p50/p99/max of `latencies_us`.
    pub fn of(latencies_us: impl IntoIterator<Item = u64>) -> LatencySummary {
        let histogram = histogram(latencies_us);
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            p50: ms(histogram.value_at_quantile(0.5)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// An HdrHistogram of microsecond values (3 significant digits).
pub fn histogram(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("1 µs to a minute at 3 digits is a valid histogram");
    for value in values_us {
        histogram.saturating_record(value.clamp(1, MAX_LATENCY_US));
    }
    histogram
}

/// The load's requests that were in flight at some moment of the fault,
/// from its first step to its last: what a client sees of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DuringFault {
    pub requests: usize,
    /// Those of them that failed.
    pub failed: usize,
    #[serde(flatten)]
    pub latency_ms: LatencySummary,
}

impl DuringFault {
    /// The load's requests of `records` in flight at some moment of
    /// `[from_us, to_us]`.
    pub fn of(records: &[Record], (from_us, to_us): (u64, u64)) -> DuringFault {
        let overlapping: Vec<&Record> = records
            .iter()
            .filter(|r| r.phase == Phase::Load && r.t_send_us <= to_us && r.t_done_us >= from_us)
            .collect();
        DuringFault {
            requests: overlapping.len(),
            failed: overlapping.iter().filter(|r| !r.is_success()).count(),
            latency_ms: LatencySummary::of(overlapping.iter().map(|r| r.latency_us())),
        }
    }
}

impl Traffic {
    pub fn of(records: &[Record]) -> Traffic {
        let load: Vec<&Record> = records.iter().filter(|r| r.phase == Phase::Load).collect();
        let mut traffic = Traffic {
            requests: load.len(),
            latency_ms: LatencySummary::of(load.iter().map(|r| r.latency_us())),
            ..Traffic::default()
        };
        for record in load.iter().filter(|r| !r.is_success()) {
            traffic.failed += 1;
            traffic.failed_replay_safe += usize::from(record.is_replay_safe());
            *traffic.failures.entry(record.outcome_label()).or_default() += 1;
        }
        let mut succeeded: HashMap<&str, bool> = HashMap::new();
        for record in &load {
            *succeeded.entry(&record.op_id).or_default() |= record.is_success();
        }
        traffic.operations = succeeded.len();
        traffic.operations_given_up = succeeded.values().filter(|ok| !**ok).count();
        traffic
    }
}
