//! Zero-downtime binary upgrade (issue 14): under load, a proxy started
//! with `--upgrade` takes the listening sockets of the running one, which
//! SIGQUIT makes hand them over and drain. Clients see no failed request
//! and no reset connection, and the new proxy serves on alone.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::load::{Connections, Load};
use support::{eventually, random_token, FleetConfig, Health, TestFleet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_no_request() {
    let sock = std::env::temp_dir().join(format!("roost-upgrade-{}.sock", random_token()));
    // Checks as slow as production's: the upgraded proxy must not wait
    // `rise` intervals before its workers serve (it checks them once
    // before it takes the sockets).
    let health = Health {
        interval_ms: 500,
        rise: 3,
        ..Health::default()
    };
    let config = FleetConfig::new(2).health(health).yaml(&format!(
        "upgrade_sock: {}\ndrain_delay_ms: 200",
        sock.display()
    ));
    let mut fleet = TestFleet::start(config).await;
    // New connections keep arriving (new users), besides kept-alive ones.
    let kept = Load::start(3, Connections::KeptAlive, fleet.proxy_addr, None);
    let new = Load::start(3, Connections::New, fleet.proxy_addr, None);
    let (kept_tally, new_tally) = (Arc::clone(&kept.tally), Arc::clone(&new.tally));
    let served = move || kept_tally.served() + new_tally.served();
    let until_served = |more: u64, what: &'static str| {
        let served = served.clone();
        let target = served() + more;
        eventually(Duration::from_secs(5), what, move || {
            let now = served();
            async move { (now > target).then_some(()) }
        })
    };
    until_served(50, "load through the proxy").await;

    let mut old = fleet.upgrade_proxy(&sock).await;
    let exit = old
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the old proxy exits after handing over");
    assert!(exit.success(), "the old proxy exits 0, not {exit}");
    until_served(50, "load through the upgraded proxy alone").await;

    let mut failures = kept.stop().await.failures();
    failures.extend(new.stop().await.failures());
    assert!(
        failures.is_empty(),
        "{} failed requests across the upgrade: {failures:#?}",
        failures.len()
    );
    let (status, _, _) = fleet.admin_get("/readyz").await;
    assert_eq!(status, 200, "the admin listener went over too");
    let _ = std::fs::remove_file(&sock);
}
