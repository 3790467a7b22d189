//! A worker that takes a request and goes quiet (SIGSTOP: frozen, as a long
//! GC pause or a cut-off host would look): after `upstream_timeout_ms` the
//! proxy takes it down and sends a replay-safe request (an idempotent method,
//! or one with an `Idempotency-Key`) to the key's next candidate, which
//! claims the user once the frozen worker's lease runs out. A request that
//! is not safe to replay gets 504 instead of hanging.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{FleetConfig, Health, TestFleet, KEY_HEADER};

/// The upstream timeout is longer than the workers' lease (2 s), as it must
/// be (a worker may legitimately wait that long to claim a frozen owner's
/// user), and health checks are slow enough to leave both requests to the
/// frozen owner.
fn fleet_config() -> FleetConfig {
    let mut config = FleetConfig::new(2).health(Health {
        interval_ms: 5000,
        timeout_ms: 1000,
        rise: 1,
        fall: 1,
    });
    config.extra_yaml = "upstream_timeout_ms: 2500\n".into();
    config
}

fn signal(fleet: &TestFleet, id: &str, signal: Signal) {
    let pid = fleet.worker_pid(id).expect("the worker runs");
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), signal).expect("signal the worker");
}

async fn add_item(
    fleet: &TestFleet,
    key: &str,
    idempotency_key: Option<&str>,
) -> (u16, Option<String>, Duration) {
    let mut request = fleet
        .client()
        .post(format!("{}/v1/cart/items", fleet.proxy_url()))
        .header(KEY_HEADER, key)
        .json(&serde_json::json!({"sku": "mug", "qty": 1}));
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let sent = Instant::now();
    let response = request.send().await.expect("the proxy answers");
    let status = response.status().as_u16();
    let worker = response
        .headers()
        .get("x-roost-worker")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, worker, sent.elapsed())
}

/// A key (`PREFIX-N`) that `owner` owns.
async fn key_owned_by(fleet: &TestFleet, owner: &str, prefix: &str) -> String {
    for i in 0..1000 {
        let candidate = format!("{prefix}-{i}");
        if fleet.route(&candidate).await.owner.as_deref() == Some(owner) {
            return candidate;
        }
    }
    panic!("none of 1000 keys belongs to {owner}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_safe_requests_leave_a_frozen_worker_and_the_rest_get_504() {
    let fleet = TestFleet::start(fleet_config()).await;
    let key = "frozen-user";
    // The owner holds the user's cart, so the next candidate must wait for
    // the frozen owner's lease to run out before it may claim it.
    let owner = fleet
        .get("/v1/cart", &[(KEY_HEADER, key)])
        .await
        .worker
        .expect("a worker answered");
    let other = fleet
        .worker_ids()
        .into_iter()
        .find(|id| *id != owner)
        .expect("two workers");
    // Another user of the same owner, for the request that is not safe to
    // replay.
    let unsafe_key = key_owned_by(&fleet, &owner, "frozen-user").await;

    signal(&fleet, &owner, Signal::SIGSTOP);
    // Both reach the frozen owner before anything took it down.
    let ((status, worker, took), (unsafe_status, _, unsafe_took)) = tokio::join!(
        add_item(&fleet, key, Some("add-mug-once")),
        add_item(&fleet, &unsafe_key, None)
    );
    signal(&fleet, &owner, Signal::SIGCONT);

    eprintln!("keyed add served after {took:?}; unkeyed add answered after {unsafe_took:?}");
    assert_eq!(status, 200, "the keyed add moved on (after {took:?})");
    assert_eq!(
        worker.as_deref(),
        Some(other.as_str()),
        "served by the next candidate"
    );
    assert!(
        took < Duration::from_secs(6),
        "served after about the timeout: {took:?}"
    );
    assert_eq!(
        unsafe_status, 504,
        "the unkeyed add is not replayed (after {unsafe_took:?})"
    );
    assert!(
        unsafe_took < Duration::from_secs(5),
        "504 after about the timeout: {unsafe_took:?}"
    );
}

/// A worker killed (kill -9) while it holds requests: the connection breaks
/// under them. A replay-safe request goes to the next candidate; one that is
/// not safe to replay gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_safe_requests_survive_a_worker_killed_under_them() {
    let fleet = TestFleet::start(fleet_config()).await;
    let key = "killed-user";
    // Asked, not sent a request: the proxy holds no pooled connection to
    // the owner, so the requests below go out on fresh ones (a reused
    // connection that breaks is retried by Pingora's own rule).
    let owner = fleet.route(key).await.owner.expect("an owner");
    let unsafe_key = key_owned_by(&fleet, &owner, "killed-user").await;

    // Frozen first, so both requests are surely inside it when it dies.
    signal(&fleet, &owner, Signal::SIGSTOP);
    let requests = async {
        tokio::join!(
            add_item(&fleet, key, Some("add-mug-once")),
            add_item(&fleet, &unsafe_key, None)
        )
    };
    let kill_soon = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(&fleet, &owner, Signal::SIGKILL);
    };
    let (((status, worker, took), (unsafe_status, _, _)), ()) = tokio::join!(requests, kill_soon);

    assert_eq!(status, 200, "the keyed add moved on (after {took:?})");
    assert_ne!(
        worker.as_deref(),
        Some(owner.as_str()),
        "served by another worker"
    );
    assert_eq!(unsafe_status, 502, "the unkeyed add is not replayed");
}

/// With the default `suspect_after_ms` and an upstream timeout far above
/// the lease, a replay-safe request to a frozen owner is not held for the
/// timeout: the owner, silent and not answering its `/healthz`, is taken
/// down at once, and the next candidate, silent too while it waits for the
/// frozen owner's lease to run out but answering its `/healthz`, is waited
/// for and serves the request. The client sees about the lease, no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_is_left_after_suspect_after_ms_and_a_waiting_candidate_is_not() {
    let mut config = fleet_config();
    config.workers.push(("w3".into(), 1.0));
    config.extra_yaml = "upstream_timeout_ms: 10000\n".into();
    let fleet = TestFleet::start(config).await;
    let key = "suspected-user";
    let owner = fleet
        .get("/v1/cart", &[(KEY_HEADER, key)])
        .await
        .worker
        .expect("a worker answered");
    let route = fleet.route(key).await;
    let next = route.order()[1].to_owned();

    signal(&fleet, &owner, Signal::SIGSTOP);
    let (status, worker, took) = add_item(&fleet, key, Some("add-mug-suspected")).await;
    let next_healthy = fleet.is_healthy(&next).await;
    signal(&fleet, &owner, Signal::SIGCONT);

    eprintln!("served by {worker:?} after {took:?}");
    assert_eq!(status, 200, "served (after {took:?})");
    assert_eq!(
        worker.as_deref(),
        Some(next.as_str()),
        "by the key's next candidate, which was waited for"
    );
    assert!(next_healthy, "the waiting candidate was not taken down");
    // The lease (2 s) plus the suspicion and the probe, not the 10 s
    // upstream timeout.
    assert!(
        took < Duration::from_secs(4),
        "served after about the lease: {took:?}"
    );
}
