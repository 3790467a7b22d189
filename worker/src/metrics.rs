//! Prometheus metrics of the worker, registered once in the default registry
//! and served at `GET /metrics`, with the process's own (CPU, memory, open
//! files) and `roost_build_info`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::process_collector::ProcessCollector;
use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Histogram, HistogramVec, IntCounter, IntCounterVec,
    IntGauge,
};
use roost_routing::build_info;

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Batch sizes: 1 to 4096 rows.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Every metric the worker exports.
pub struct Metrics {
    pub active_entities: IntGauge,
    pub dirty_entities: IntGauge,
    pub claims: IntCounter,
    pub claim_failures: IntCounter,
    pub flush_batch_rows: Histogram,
    pub flush_batch_seconds: Histogram,
    pub flush_failures: IntCounter,
    pub flush_batches_in_flight: IntGauge,
    pub durable_ack_seconds: Histogram,
    pub fenced_writes: IntCounter,
    pub passivations: IntCounter,
    pub handovers_requested: IntCounter,
    pub handovers: IntCounter,
    pub revalidation_drops: IntCounter,
    pub store_wait_seconds: HistogramVec,
    pub store_waiting: IntGauge,
    pub request_seconds: HistogramVec,
    pub requests: IntCounterVec,
    pub call_attempts: IntCounterVec,
    pub calls_unfinished: IntCounter,
    pub alarms_fired: IntCounter,
}

/// Registration only fails on a name clash inside this file.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let buckets = || LATENCY_BUCKETS.to_vec();
    Metrics {
        active_entities: register_int_gauge!(
            "roost_worker_active_entities",
            "Entities held in memory."
        )
        .expect("register active_entities"),
        dirty_entities: register_int_gauge!(
            "roost_worker_dirty_entities",
            "Entities with changes not yet flushed."
        )
        .expect("register dirty_entities"),
        claims: register_int_counter!(
            "roost_worker_claims_total",
            "Entities claimed from the store."
        )
        .expect("register claims"),
        claim_failures: register_int_counter!(
            "roost_worker_claim_failures_total",
            "Claims the store could not answer."
        )
        .expect("register claim_failures"),
        flush_batch_rows: register_histogram!(
            "roost_worker_flush_batch_rows",
            "Rows per flush batch.",
            BATCH_BUCKETS.to_vec()
        )
        .expect("register flush_batch_rows"),
        flush_batch_seconds: register_histogram!(
            "roost_worker_flush_batch_seconds",
            "Time to write one flush batch, in seconds.",
            buckets()
        )
        .expect("register flush_batch_seconds"),
        flush_failures: register_int_counter!(
            "roost_worker_flush_failures_total",
            "Flush batches the store rejected or could not take."
        )
        .expect("register flush_failures"),
        flush_batches_in_flight: register_int_gauge!(
            "roost_worker_flush_batches_in_flight",
            "Flush batches being written now (at most flush_pipeline, or one while draining)."
        )
        .expect("register flush_batches_in_flight"),
        durable_ack_seconds: register_histogram!(
            "roost_worker_durable_ack_seconds",
            "Time a reply waited at the output gate for a durable change (its own, or one it may reveal) to commit, in seconds.",
            buckets()
        )
        .expect("register durable_ack_seconds"),
        fenced_writes: register_int_counter!(
            "roost_worker_fenced_writes_total",
            "Rows not written because another worker claimed the entity; the entity was dropped."
        )
        .expect("register fenced_writes"),
        passivations: register_int_counter!(
            "roost_worker_passivations_total",
            "Idle entities flushed and dropped from memory."
        )
        .expect("register passivations"),
        handovers_requested: register_int_counter!(
            "roost_worker_handovers_requested_total",
            "Claims that found a live owner and asked it to hand the entity over."
        )
        .expect("register handovers_requested"),
        handovers: register_int_counter!(
            "roost_worker_handovers_total",
            "Entities this worker flushed, forgot and released because another asked."
        )
        .expect("register handovers"),
        alarms_fired: register_int_counter!(
            "roost_worker_alarms_fired_total",
            "Entity alarms whose handler ran on this worker."
        )
        .expect("register alarms_fired"),
        revalidation_drops: register_int_counter!(
            "roost_worker_revalidation_drops_total",
            "Entities dropped after a lease lapse because another worker claimed them meanwhile."
        )
        .expect("register revalidation_drops"),
        store_wait_seconds: register_histogram_vec!(
            "roost_worker_store_wait_seconds",
            "Time requests were held for the lease while the store was away (store_grace_ms), in seconds, by how the wait ended: served, or gave_up (503).",
            &["outcome"],
            buckets()
        )
        .expect("register store_wait_seconds"),
        store_waiting: register_int_gauge!(
            "roost_worker_store_waiting_requests",
            "Requests held right now until the lease comes back."
        )
        .expect("register store_waiting"),
        request_seconds: register_histogram_vec!(
            "roost_worker_request_seconds",
            "Request latency by route, in seconds.",
            &["route"],
            buckets()
        )
        .expect("register request_seconds"),
        requests: register_int_counter_vec!(
            "roost_worker_requests_total",
            "Requests answered, by route and status class (1xx to 5xx).",
            &["route", "class"]
        )
        .expect("register requests"),
        call_attempts: register_int_counter_vec!(
            "roost_worker_call_attempts_total",
            "Attempts at entity-to-entity calls: decided (the receiver answered), or retried (no worker, a broken connection, a timeout, 421 or 5xx).",
            &["result"]
        )
        .expect("register call_attempts"),
        calls_unfinished: register_int_counter!(
            "roost_worker_calls_unfinished_total",
            "Requests answered 503 because their calls were undecided at the deadline (the calls stay awaited and finish with the entity's next request)."
        )
        .expect("register calls_unfinished"),
    }
});

/// The status classes counted, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's series, resolved once so a request does no label lookup:
/// how long its requests take, and how they were answered.
pub struct RouteMetrics {
    seconds: Histogram,
    answered: [IntCounter; 5],
}

impl RouteMetrics {
    /// The series of `route` (`{kind}_{action}`, a fixed route's name, or
    /// `unmatched`).
    pub fn for_route(route: &str) -> Self {
        RouteMetrics {
            seconds: METRICS.request_seconds.with_label_values(&[route]),
            answered: CLASSES.map(|class| METRICS.requests.with_label_values(&[route, class])),
        }
    }

    /// One request answered `status` after `elapsed` (a status outside
    /// 100..=599 counts as 5xx).
    pub fn observe(&self, status: u16, elapsed: Duration) {
        self.seconds.observe(elapsed.as_secs_f64());
        self.answered[usize::from(status / 100).clamp(1, 5) - 1].inc();
    }
}

/// Register what is there from the start: the process collector (Linux
/// only; `process_*` series) and `roost_build_info`.
pub fn register_at_start() {
    LazyLock::force(&METRICS);
    if let Err(e) = prometheus::register(Box::new(ProcessCollector::for_self())) {
        tracing::debug!(error = %e, "process metrics already registered");
    }
    match register_int_gauge_vec!(build_info::NAME, build_info::HELP, &build_info::LABELS) {
        Ok(info) => info.with_label_values(&build_info::VALUES).set(1),
        Err(e) => tracing::debug!(error = %e, "roost_build_info already registered"),
    }
}

/// The Prometheus text of every registered metric.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut buffer = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buffer) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    buffer
}
