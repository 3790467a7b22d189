//! Discovery: a proxy with no static worker list finds the workers in the
//! store they register in, drops a worker the moment it drains, and takes it
//! back when it returns; users keep being served throughout.

mod support;

use std::time::Duration;

use support::{FleetConfig, TestFleet};

/// The ids `/admin/workers` lists.
async fn listed(fleet: &TestFleet) -> Vec<String> {
    let mut ids: Vec<String> = fleet
        .admin_workers()
        .await
        .iter()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

async fn wait_listed(fleet: &TestFleet, expected: &[&str], limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let ids = listed(fleet).await;
        if ids == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/admin/workers listed {ids:?}, expected {expected:?}; proxy log:\n{}",
            fleet.proxy_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every one of `users` is served (200) through the proxy.
async fn all_served(fleet: &TestFleet, users: usize) {
    for user in 0..users {
        let served = fleet.get_keyed(&format!("discovered-user-{user}")).await;
        assert_eq!(served.status, 200, "user {user}: {}", served.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_join_drain_and_return_without_config_edits() {
    let mut fleet = TestFleet::start(FleetConfig::new(3).discovered()).await;
    wait_listed(&fleet, &["w1", "w2", "w3"], Duration::from_secs(5)).await;
    all_served(&fleet, 30).await;

    let series = r#"worker="w2""#;
    assert!(fleet.metrics().await.contains(series), "w2 has series");

    fleet.sigterm("w2");
    // Its row turned `draining` and then went; the next read drops it.
    wait_listed(&fleet, &["w1", "w3"], Duration::from_secs(2)).await;
    all_served(&fleet, 30).await;
    let metrics = fleet.metrics().await;
    assert!(
        !metrics.contains(series),
        "a worker that left the fleet leaves /metrics too:\n{metrics}"
    );

    fleet.restart("w2");
    wait_listed(&fleet, &["w1", "w2", "w3"], Duration::from_secs(5)).await;
    fleet.wait_healthy("w2", true, Duration::from_secs(5)).await;
    all_served(&fleet, 30).await;
    assert!(fleet.metrics().await.contains(series), "w2 is back");
}
