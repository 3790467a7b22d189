//! Clients that stall, flood or vanish, against a real proxy and real
//! workers: stalled bodies get 408 on time while no worker is taken down
//! and other users are served throughout; keyless clients (`missing: any`
//! or `mint`) are rate limited by their address; and a load of clients
//! that disconnect mid-request leaves no ERROR line in the proxy's log.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::raw::{assert_refused, request, whoami, Conn};
use support::{assert_json_error, FleetConfig, Missing, Served, TestFleet, KEY_HEADER};

// ---------------------------------------------------------------------------
// Stalled bodies
// ---------------------------------------------------------------------------

const BODY_IDLE: Duration = Duration::from_millis(2000);

/// Send a `PUT /v1/session` head declaring `declared` bytes and then
/// `sent` of them, stop, and wait for the 408: how long it took from the
/// last byte sent.
async fn stall(fleet: &TestFleet, key: &str, declared: usize, sent: usize) -> Duration {
    let mut conn = Conn::open(fleet.proxy_addr).await;
    let length = declared.to_string();
    let mut bytes = request(
        "PUT",
        "/v1/session",
        &[(KEY_HEADER, key), ("content-length", &length)],
    );
    bytes.extend(std::iter::repeat_n(b' ', sent));
    conn.send(&bytes).await;
    let since = Instant::now();
    let reply = conn.reply().await;
    let context = format!("{key}: {sent} of {declared} bytes, then nothing");
    assert_refused(&reply, 408, "request_timeout", &context);
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_get_408_while_workers_stay_up_and_others_are_served() {
    let config = FleetConfig::new(3).yaml("timeouts: {body_idle_ms: 2000}\n");
    let fleet = TestFleet::start(config).await;
    let done = AtomicBool::new(false);

    let stalls = async {
        let mut stallers: Vec<_> = (0..6).map(|i| (format!("staller-{i}"), 100, 6)).collect();
        // Large enough to be streamed to the worker, not read ahead.
        stallers.push(("staller-large".into(), 200 << 10, 100 << 10));
        let waits = futures::future::join_all(
            stallers
                .iter()
                .map(|(key, declared, sent)| stall(&fleet, key, *declared, *sent)),
        )
        .await;
        done.store(true, Ordering::Relaxed);
        waits
    };
    let watch = async {
        let mut down = Vec::new();
        while !done.load(Ordering::Relaxed) {
            for worker in fleet.admin_workers().await {
                if worker["healthy"] != true {
                    down.push(worker);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        down
    };
    let others = async {
        let (mut served, mut failed) = (0, Vec::new());
        while !done.load(Ordering::Relaxed) {
            let reply = fleet.get_keyed(&format!("other-{}", served % 20)).await;
            if reply.status != 200 {
                failed.push(reply.status);
            }
            served += 1;
        }
        (served, failed)
    };
    let (waits, down, (served, failed)) = tokio::join!(stalls, watch, others);

    for wait in &waits {
        assert!(
            *wait >= BODY_IDLE - Duration::from_millis(100)
                && *wait <= BODY_IDLE + Duration::from_secs(1),
            "408 after body_idle_ms (2 s) + at most 1 s, not {wait:?}"
        );
    }
    assert!(down.is_empty(), "a worker was reported down: {down:?}");
    assert!(served >= 10, "others were served throughout ({served})");
    assert!(failed.is_empty(), "others got {failed:?}");
}

// ---------------------------------------------------------------------------
// Keyless rate
// ---------------------------------------------------------------------------

/// Send keyless requests (no cookie sent back) until one is refused, and
/// check the burst of 5 at 1/s passed first and the refusal is a 429.
async fn assert_keyless_limited(fleet: &TestFleet) {
    let start = Instant::now();
    let mut passed = 0;
    let refused: Served = loop {
        let served = fleet.get("/v1/whoami", &[]).await;
        if served.status != 200 {
            break served;
        }
        passed += 1;
        assert!(passed < 20, "keyless requests were never limited");
    };
    let refilled = start.elapsed().as_secs() as usize + 1;
    assert!(
        (5..=5 + refilled).contains(&passed),
        "{passed} keyless requests passed before the limit (burst 5, 1/s)"
    );
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.worker, None);
    assert_json_error(&refused.body, "rate_limited", "keyless over the burst");
    assert!(
        refused.headers.get("retry-after").is_some(),
        "a 429 carries Retry-After"
    );
    // A keyed request is in its own bucket.
    assert_eq!(fleet.get_keyed("keyed-user").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_requests_are_rate_limited_by_address() {
    let config = FleetConfig::new(2)
        .missing(Missing::Any)
        .yaml("limits: {rate: {per_s: 1, burst: 5}}\n");
    assert_keyless_limited(&TestFleet::start(config).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn minted_requests_are_rate_limited_by_address() {
    let mut config = FleetConfig::new(2)
        .signed_cookie("sid")
        .missing(Missing::Mint)
        .yaml("limits: {rate: {per_s: 1, burst: 5}}\n");
    // Keyed requests come by the header, after the cookie.
    config
        .sources
        .push(support::Source::Header(KEY_HEADER.into()));
    assert_keyless_limited(&TestFleet::start(config).await).await;
}

// ---------------------------------------------------------------------------
// Disconnects under load
// ---------------------------------------------------------------------------

const LOAD: Duration = Duration::from_secs(10);
/// Requests per client task at most, whatever the speed of the machine.
const MAX_PER_TASK: usize = 5_000;

/// One step of a client that misbehaves in turn: `step % 4` picks how.
async fn misbehave(addr: std::net::SocketAddr, task: usize, step: usize) {
    let key = format!("load-{task}-{}", step % 16);
    let mut conn = Conn::open(addr).await;
    match step % 4 {
        // Half a small body, then gone.
        0 => {
            let head = request(
                "PUT",
                "/v1/session",
                &[(KEY_HEADER, key.as_str()), ("content-length", "100")],
            );
            let _ = conn.try_send(&[head, vec![b' '; 50]].concat()).await;
        }
        // Half a streamed body, then gone.
        1 => {
            let head = request(
                "POST",
                "/v1/whoami",
                &[(KEY_HEADER, key.as_str()), ("content-length", "200000")],
            );
            let _ = conn.try_send(&[head, vec![b'x'; 100_000]].concat()).await;
        }
        // A whole request, gone before the response.
        2 => {
            let _ = conn.try_send(&whoami(&key)).await;
        }
        // A plain request.
        _ => {
            conn.send(&whoami(&key)).await;
            let reply = conn.reply().await;
            assert_eq!(reply.status, 200, "a plain GET under load: {reply:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_vanish_mid_request_log_no_errors() {
    let config = FleetConfig::new(3)
        .json_logs()
        .yaml("limits: {rate: {per_s: 0}}\n");
    let fleet = TestFleet::start(config).await;
    let addr = fleet.proxy_addr;
    let deadline = Instant::now() + LOAD;
    let tasks = (0..4).map(|task| async move {
        let mut step = 0;
        while Instant::now() < deadline && step < MAX_PER_TASK {
            misbehave(addr, task, step).await;
            step += 1;
        }
        step
    });
    let steps: usize = futures::future::join_all(tasks).await.into_iter().sum();
    assert!(steps >= 40, "the load ran ({steps} requests)");

    // The proxy still serves, and its log has had time to be written.
    assert_eq!(fleet.get_keyed("after-the-load").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = fleet.proxy_log();
    let bad: Vec<&str> = log
        .lines()
        .filter(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(entry) => entry["level"] == "ERROR",
                Err(_) => line.contains("panicked") || line.contains(" ERROR "),
            },
        )
        .take(20)
        .collect();
    assert!(
        bad.is_empty(),
        "ERROR lines in the proxy log under disconnects:\n{}",
        bad.join("\n")
    );
}
