//! The drain a SIGTERM starts (issue 14), against a real proxy in front of
//! real workers: `/readyz` fails at once, the proxy serves on for
//! `drain_delay_ms`, then closes its listeners, answers what is in flight
//! with `Connection: close`, closes idle keep-alive connections, and exits
//! 0. A client that moves to a second proxy when the first refuses its
//! connection (what a load balancer does) sees no failed request.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::load::{Connections, Load};
use support::raw::{self, Conn};
use support::{accepts, eventually, FleetConfig, TestFleet, KEY_HEADER};

/// The drain delay of these tests' proxies.
const DELAY: Duration = Duration::from_millis(500);
/// How soon after SIGTERM `/readyz` must fail.
const READYZ_LIMIT: Duration = Duration::from_millis(100);
/// Closed-loop clients of the load test.
const CLIENTS: usize = 6;

fn draining_fleet() -> FleetConfig {
    FleetConfig::new(2).yaml(&format!(
        "drain_delay_ms: {}\ndrain_timeout_ms: 5000",
        DELAY.as_millis()
    ))
}

/// `/readyz` on `fleet`'s admin listener: its status and error code.
async fn readyz(fleet: &TestFleet) -> (u16, Option<String>) {
    let (status, _, body) = fleet.admin_get("/readyz").await;
    let body: serde_json::Value = serde_json::from_str(&body).expect("/readyz answers JSON");
    (status, body["error"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_proxy_without_failing_a_request() {
    let mut fleet = TestFleet::start(draining_fleet()).await;
    let second = fleet.second_proxy().await;
    assert_eq!(readyz(&fleet).await, (200, None), "ready before the signal");

    // Kept-alive connections: a client that opens a new one as the
    // listener closes can be reset from the backlog, whoever the proxy
    // (the load balancer's job is to stop sending first, in the delay).
    let load = Load::start(
        CLIENTS,
        Connections::KeptAlive,
        fleet.proxy_addr,
        Some(second.addr),
    );
    let tally = std::sync::Arc::clone(&load.tally);
    eventually(
        Duration::from_secs(5),
        "load through the first proxy",
        || {
            let served = tally.by_first.load(Ordering::Relaxed);
            async move { (served > 50).then_some(()) }
        },
    )
    .await;

    let signalled = Instant::now();
    fleet.signal_proxy(Signal::SIGTERM);
    let (status, code) = eventually(Duration::from_secs(2), "/readyz to fail", || async {
        let (status, code) = readyz(&fleet).await;
        (status == 503).then_some((status, code))
    })
    .await;
    let turned = signalled.elapsed();
    assert_eq!((status, code.as_deref()), (503, Some("draining")));
    assert!(
        turned <= READYZ_LIMIT,
        "/readyz turned 503 only {turned:?} after SIGTERM"
    );

    let during_delay = tally.by_first.load(Ordering::Relaxed);
    tokio::time::sleep(DELAY / 2).await;
    assert!(
        tally.by_first.load(Ordering::Relaxed) > during_delay,
        "the first proxy serves on during its drain delay"
    );
    let exit = fleet.wait_proxy_exit(Duration::from_secs(10)).await;
    let exited = signalled.elapsed();
    assert!(exit.success(), "the drained proxy exits 0, not {exit}");
    assert!(
        exited >= DELAY,
        "the proxy exited {exited:?} after SIGTERM, before its drain delay"
    );

    let moved = tally.by_fallback.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(5),
        "load through the second proxy",
        || {
            let served = tally.by_fallback.load(Ordering::Relaxed);
            async move { (served > moved + 50).then_some(()) }
        },
    )
    .await;
    let failures = load.stop().await.failures();
    assert!(
        failures.is_empty(),
        "{} failed requests during the drain: {failures:#?}",
        failures.len()
    );
}

#[tokio::test]
async fn the_drain_closes_keep_alive_connections_politely() {
    let mut fleet = TestFleet::start(draining_fleet()).await;
    // A request whose body is still arriving when the listeners close, and
    // a connection that is idle then.
    let body = br#"{"note": "sent in two parts"}"#;
    let request = raw::with_body("POST", "/v1/whoami", &[(KEY_HEADER, "alice")], body);
    let (early, late) = request.split_at(request.len() - 5);
    let mut in_flight = Conn::open(fleet.proxy_addr).await;
    let mut idle = Conn::open(fleet.proxy_addr).await;
    idle.send(&raw::whoami("bob")).await;
    let kept = idle.reply().await;
    assert_eq!(kept.status, 200);
    assert!(!kept.closes(), "a keep-alive connection before the drain");

    fleet.signal_proxy(Signal::SIGTERM);
    idle.send(&raw::whoami("bob")).await;
    let during_delay = idle.reply().await;
    assert_eq!(during_delay.status, 200);
    assert!(
        !during_delay.closes(),
        "during the drain delay, connections are served as before"
    );
    in_flight.send(early).await;
    eventually(Duration::from_secs(3), "the listeners to close", || async {
        (!accepts(fleet.proxy_addr)).then_some(())
    })
    .await;

    assert!(
        idle.closes_within(Duration::from_secs(2)).await,
        "an idle keep-alive connection is closed once the listeners are"
    );
    in_flight.send(late).await;
    let finished = in_flight.reply().await;
    assert_eq!(finished.status, 200, "the request in flight is answered");
    assert!(
        finished.closes(),
        "the answer in flight says Connection: close"
    );
    assert!(in_flight.closes_within(Duration::from_secs(2)).await);
    let exit = fleet.wait_proxy_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "the drained proxy exits 0, not {exit}");
}

#[tokio::test]
async fn sigint_stops_the_proxy_at_once() {
    let mut fleet = TestFleet::start(draining_fleet()).await;
    let idle = Conn::open(fleet.proxy_addr).await;
    let signalled = Instant::now();
    fleet.signal_proxy(Signal::SIGINT);
    let exit = fleet.wait_proxy_exit(Duration::from_secs(5)).await;
    assert!(exit.success(), "SIGINT exits 0, not {exit}");
    assert!(
        signalled.elapsed() < DELAY,
        "SIGINT does not wait for the drain delay ({:?})",
        signalled.elapsed()
    );
    drop(idle);
}
