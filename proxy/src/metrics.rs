//! Prometheus metrics of the proxy, registered once in the default registry
//! (the one `pingora-prometheus` serves), with each worker's children
//! resolved up front so the request path does no label lookups, and
//! removed when the worker leaves the fleet ([`WorkerMetrics::forget`]), so
//! a fleet that changes does not grow the series without bound.

use std::sync::LazyLock;

use roost_routing::build_info;

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
    health_checks: IntCounterVec,
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
    health_checks: register_int_counter_vec!(
        "roost_proxy_health_checks_total",
        "Active health checks of the worker (label), by result (pass, fail).",
        &["worker", "result"]
    )
    .expect("register roost_proxy_health_checks_total"),
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
        self.0[class_index(status)].inc();
    }
}

/// One worker's metric children.
pub struct WorkerMetrics {
    pub requests: RequestCounters,
    pub upstream_latency: Histogram,
    pub healthy: IntGauge,
    pub failovers: IntCounter,
    pub retries: IntCounter,
    /// Active health checks passed, failed.
    pub checks: [IntCounter; 2],
}

/// The `result` labels of `roost_proxy_health_checks_total`.
const CHECK_RESULTS: [&str; 2] = ["pass", "fail"];

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
            checks: CHECK_RESULTS
                .map(|result| FAMILIES.health_checks.with_label_values(&[worker, result])),
        }
    }

    /// Count one active health check.
    pub fn count_check(&self, passed: bool) {
        self.checks[usize::from(!passed)].inc();
    }

    /// Drop every series of `worker` (it left the fleet). Children still
    /// held count on, unexported, until their last holder is gone.
    pub fn forget(worker: &str) {
        for class in CLASSES {
            let _ = FAMILIES.requests.remove_label_values(&[worker, class]);
        }
        for result in CHECK_RESULTS {
            let _ = FAMILIES
                .health_checks
                .remove_label_values(&[worker, result]);
        }
        let _ = FAMILIES.upstream_latency.remove_label_values(&[worker]);
        let _ = FAMILIES.healthy.remove_label_values(&[worker]);
        let _ = FAMILIES.failovers.remove_label_values(&[worker]);
        let _ = FAMILIES.retries.remove_label_values(&[worker]);
    }
}

/// The proxy's own series: requests end to end, connections, discovery.
pub struct ProxyMetrics {
    /// Request durations, first byte read to last byte written, by status
    /// class (1xx to 5xx, in that order).
    pub request_seconds: [Histogram; 5],
    pub requests_in_flight: IntGauge,
    /// Client connections open now (what a drain waits on).
    pub client_connections: IntGauge,
    /// Reads of the live workers by discovery: succeeded, failed.
    pub discovery_reads: [IntCounter; 2],
    /// Config reloads (SIGHUP, `POST /admin/reload`): applied, refused.
    pub reloads: [IntCounter; 2],
    /// 1 while the last reload was applied (or none was tried), 0 after a
    /// refused one: the file on disk is not what runs.
    pub last_reload_successful: IntGauge,
}

impl ProxyMetrics {
    /// Count one request of `status` that took `seconds`.
    pub fn observe_request(&self, status: u16, seconds: f64) {
        self.request_seconds[class_index(status)].observe(seconds);
    }
}

/// The index in `CLASSES` of `status` (anything outside 100..=599 counts
/// as 5xx).
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

pub static PROXY: LazyLock<ProxyMetrics> = LazyLock::new(|| {
    let seconds = register_histogram_vec!(
        "roost_proxy_request_duration_seconds",
        "Requests end to end (first byte read to last byte written), by status class.",
        &["class"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("register roost_proxy_request_duration_seconds");
    let reads = register_int_counter_vec!(
        "roost_proxy_discovery_reads_total",
        "Reads of the live workers from the store, by result (ok, error).",
        &["result"]
    )
    .expect("register roost_proxy_discovery_reads_total");
    let reloads = register_int_counter_vec!(
        "roost_proxy_reloads_total",
        "Config reloads, by result (success, failure).",
        &["result"]
    )
    .expect("register roost_proxy_reloads_total");
    let last_reload_successful = register_int_gauge!(
        "roost_proxy_config_last_reload_successful",
        "1 unless the last config reload was refused (the file on disk is then not what runs)."
    )
    .expect("register roost_proxy_config_last_reload_successful");
    last_reload_successful.set(1);
    ProxyMetrics {
        request_seconds: CLASSES.map(|class| seconds.with_label_values(&[class])),
        requests_in_flight: register_int_gauge!(
            "roost_proxy_requests_in_flight",
            "Requests read and not yet fully answered."
        )
        .expect("register roost_proxy_requests_in_flight"),
        client_connections: register_int_gauge!(
            "roost_proxy_client_connections",
            "Client connections open now."
        )
        .expect("register roost_proxy_client_connections"),
        discovery_reads: ["ok", "error"].map(|result| reads.with_label_values(&[result])),
        reloads: ["success", "failure"].map(|result| reloads.with_label_values(&[result])),
        last_reload_successful,
    }
});

/// One request in flight (`roost_proxy_requests_in_flight`) for as long
/// as it lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        PROXY.requests_in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        PROXY.requests_in_flight.dec();
    }
}

/// Which limit refused a request: the `limit` label of
/// `roost_proxy_limit_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Headers,
    Key,
    Body,
    Rate,
    /// A connection dropped because its request header did not arrive in
    /// time ([`crate::timeouts`]).
    HeaderTimeout,
    BodyTimeout,
    /// `Content-Length` values that disagree or do not parse.
    Framing,
    /// A path with no single meaning.
    InvalidPath,
    /// A path under the fleet's internal prefix.
    InternalPath,
    /// A connection over the per-address limit.
    Connections,
}

impl Limit {
    /// Every limit, in declaration order.
    const ALL: [Limit; 10] = [
        Limit::Headers,
        Limit::Key,
        Limit::Body,
        Limit::Rate,
        Limit::HeaderTimeout,
        Limit::BodyTimeout,
        Limit::Framing,
        Limit::InvalidPath,
        Limit::InternalPath,
        Limit::Connections,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::Headers => "headers",
            Limit::Key => "key",
            Limit::Body => "body",
            Limit::Rate => "rate",
            Limit::HeaderTimeout => "header_timeout",
            Limit::BodyTimeout => "body_timeout",
            Limit::Framing => "framing",
            Limit::InvalidPath => "invalid_path",
            Limit::InternalPath => "internal_path",
            Limit::Connections => "connections",
        }
    }
}

/// One counter per [`Limit`], in `Limit::ALL` order, resolved once.
static REJECTIONS: LazyLock<[IntCounter; Limit::ALL.len()]> = LazyLock::new(|| {
    let family = register_int_counter_vec!(
        "roost_proxy_limit_rejections_total",
        "Requests refused (or connections dropped) by a limit, by limit.",
        &["limit"]
    )
    .expect("register roost_proxy_limit_rejections_total");
    Limit::ALL.map(|limit| family.with_label_values(&[limit.label()]))
});

/// Count one rejection by `limit`.
pub fn count_rejection(limit: Limit) {
    // `ALL` lists the variants in declaration order, so a variant's
    // discriminant is its counter's index.
    REJECTIONS[limit as usize].inc();
}

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

/// Register the series that do not wait for a first event, so `/metrics`
/// lists them from the start, and `roost_build_info`.
pub fn register_at_start() {
    LazyLock::force(&BENIGN);
    LazyLock::force(&PROXY);
    LazyLock::force(&REJECTIONS);
    let info = register_int_gauge_vec!(build_info::NAME, build_info::HELP, &build_info::LABELS)
        .expect("register roost_build_info");
    info.with_label_values(&build_info::VALUES).set(1);
}
