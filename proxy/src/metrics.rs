//! Prometheus metrics of the proxy, registered once in the default registry
//! (the one `pingora-prometheus` serves), with each worker's children
//! resolved up front so the request path does no label lookups.

use std::sync::LazyLock;

use pingora_prometheus::prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Upstream latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Label used for requests that reached no worker.
pub const NO_WORKER: &str = "none";

struct Families {
    requests: IntCounterVec,
    upstream_latency: HistogramVec,
    healthy: IntGaugeVec,
    failovers: IntCounterVec,
    retries: IntCounterVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    requests: register_int_counter_vec!(
        "roost_proxy_requests_total",
        "Requests answered, by the worker that served them and status class.",
        &["worker", "class"]
    )
    .expect("register roost_proxy_requests_total"),
    upstream_latency: register_histogram_vec!(
        "roost_proxy_upstream_latency_seconds",
        "Time from choosing a worker to its response header, in seconds.",
        &["worker"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("register roost_proxy_upstream_latency_seconds"),
    healthy: register_int_gauge_vec!(
        "roost_proxy_worker_healthy",
        "1 while the worker is in the live set, 0 while it is down.",
        &["worker"]
    )
    .expect("register roost_proxy_worker_healthy"),
    failovers: register_int_counter_vec!(
        "roost_proxy_failovers_total",
        "Requests whose owner (label) was down or failed, served by a later candidate.",
        &["worker"]
    )
    .expect("register roost_proxy_failovers_total"),
    retries: register_int_counter_vec!(
        "roost_proxy_retries_total",
        "Connection attempts to the worker (label) that failed and were retried elsewhere.",
        &["worker"]
    )
    .expect("register roost_proxy_retries_total"),
});

/// The status classes we count, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Per-status-class request counters for one `worker` label.
pub struct RequestCounters([IntCounter; 5]);

impl RequestCounters {
    pub fn for_worker(worker: &str) -> Self {
        RequestCounters(CLASSES.map(|class| FAMILIES.requests.with_label_values(&[worker, class])))
    }

    /// Count one response with `status` (anything outside 100..=599 counts as 5xx).
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].inc();
    }
}

/// One worker's metric children.
pub struct WorkerMetrics {
    pub requests: RequestCounters,
    pub upstream_latency: Histogram,
    pub healthy: IntGauge,
    pub failovers: IntCounter,
    pub retries: IntCounter,
}

impl WorkerMetrics {
    pub fn for_worker(worker: &str) -> Self {
        let healthy = FAMILIES.healthy.with_label_values(&[worker]);
        healthy.set(0);
        WorkerMetrics {
            requests: RequestCounters::for_worker(worker),
            upstream_latency: FAMILIES.upstream_latency.with_label_values(&[worker]),
            healthy,
            failovers: FAMILIES.failovers.with_label_values(&[worker]),
            retries: FAMILIES.retries.with_label_values(&[worker]),
        }
    }
}

/// Client connections open now, on every listener (what a drain waits
/// for).
pub static CLIENT_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "roost_proxy_client_connections",
        "Client connections open now."
    )
    .expect("register roost_proxy_client_connections")
});

/// Events that are normal in steady state: counted here and logged at
/// debug, so an ERROR line always means an operator must act.
#[derive(Debug, Clone, Copy)]
pub enum Benign {
    /// A client closed its connection before its response was written.
    ClientDisconnect,
    /// Pingora found a pooled worker connection still held by its idle
    /// watcher and opened a new one instead.
    PoolMiss,
}

static BENIGN: LazyLock<[IntCounter; 2]> = LazyLock::new(|| {
    let client = pingora_prometheus::prometheus::register_int_counter!(
        "roost_proxy_client_disconnects_total",
        "Requests whose client closed the connection before the response was written."
    )
    .expect("register roost_proxy_client_disconnects_total");
    let pool = pingora_prometheus::prometheus::register_int_counter!(
        "roost_proxy_upstream_pool_misses_total",
        "Pooled worker connections that could not be taken (a new one was opened)."
    )
    .expect("register roost_proxy_upstream_pool_misses_total");
    [client, pool]
});

/// Count one benign event.
pub fn count(event: Benign) {
    BENIGN[event as usize].inc();
}

/// Register the benign-event counters, so `/metrics` lists them from the
/// start.
pub fn register_benign() {
    LazyLock::force(&BENIGN);
}
