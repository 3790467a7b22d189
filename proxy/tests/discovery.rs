//! Discovery: a proxy with no static worker list finds the workers in the
//! store they register in, drops a worker the moment it drains, and takes it
//! back when it returns; users keep being served throughout. Over TLS it
//! finds them in a Postgres it verifies, and refuses to start on one whose
//! certificate it cannot verify.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roost_testkit::postgres_tls::TLS_USER;
use roost_testkit::{tls_cluster, TlsCluster};
use support::{free_port, run_proxy, FleetConfig, TempDir, TestFleet};

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

/// This binary's TLS cluster, started outside the test's runtime.
fn cluster() -> &'static TlsCluster {
    std::thread::spawn(tls_cluster)
        .join()
        .expect("the TLS cluster starts")
}

/// A password file (mode 0600) in `dir` with the password of the
/// cluster's user, so no URL and no variable carries it.
fn password_file(dir: &TempDir, cluster: &TlsCluster) -> PathBuf {
    let line = format!(
        "localhost:{}:roost:{TLS_USER}:{}\n",
        cluster.port(),
        cluster.password()
    );
    let path = dir.write("pgpass", &line);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod the pgpass");
    path
}

/// The cluster at `localhost` under `verify-full` with `ca`.
fn verify_full(cluster: &TlsCluster, ca: &Path, passfile: &Path) -> String {
    let params = format!(
        "sslmode=verify-full&sslrootcert={}&passfile={}",
        ca.display(),
        passfile.display()
    );
    cluster.url("localhost", &params)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_over_tls_finds_the_workers_in_a_verified_store() {
    let cluster = cluster();
    let dir = TempDir::new("pgpass");
    let store = verify_full(cluster, cluster.ca(), &password_file(&dir, cluster));
    let fleet = TestFleet::start(FleetConfig::new(2).discovered().store(&store)).await;
    wait_listed(&fleet, &["w1", "w2"], Duration::from_secs(5)).await;
    all_served(&fleet, 10).await;
    let log = fleet.proxy_log();
    assert!(
        !log.contains(cluster.password()),
        "the password shows in the proxy's log:\n{log}"
    );
}

#[test]
fn discovery_over_tls_refuses_to_start_on_a_store_it_cannot_verify() {
    let dir = TempDir::new("tls-refused");
    let config = verifying_config(&dir, tls_cluster().other_ca());
    let stderr = refused(&config, "--config");
    let expected = "invalid peer certificate: UnknownIssuer";
    assert!(
        stderr.contains("discovery.store") && stderr.contains(expected),
        "the error names the discovery store and {expected:?}: {stderr}"
    );
}

#[test]
fn a_discovery_ca_file_that_cannot_be_read_is_a_config_error() {
    let dir = TempDir::new("tls-no-ca");
    let missing = dir.path().join("no-such-ca.pem");
    let config = verifying_config(&dir, &missing);
    let expected = format!("sslrootcert {}: cannot read", missing.display());
    for flag in ["--check-config", "--config"] {
        let stderr = refused(&config, flag);
        assert!(
            stderr.starts_with(&format!("{}:", config.display()))
                && stderr.contains("field `store`")
                && stderr.contains(&expected),
            "{flag}: the error names the file, the field and {expected:?}: {stderr}"
        );
    }
}

/// A proxy config in `dir`, with no worker listed, that discovers them in
/// the TLS cluster under `verify-full` with `ca`.
fn verifying_config(dir: &TempDir, ca: &Path) -> PathBuf {
    let cluster = tls_cluster();
    let store = verify_full(cluster, ca, &password_file(dir, cluster));
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let yaml = FleetConfig::new(0).discovered().to_yaml(
        local(free_port()),
        local(free_port()),
        &[],
        &store,
    );
    dir.write("proxy.yaml", &yaml)
}

/// Run the proxy with `flag config`, which must exit 1; its stderr.
fn refused(config: &Path, flag: &str) -> String {
    let (code, stderr) = run_proxy(&[OsStr::new(flag), config.as_os_str()]);
    assert_eq!(
        code,
        Some(1),
        "{flag}: the proxy exits 1; its stderr: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_store_that_cannot_be_reached_at_start_only_warns() {
    let store = format!("postgres://roost@127.0.0.1:{}/roost", free_port());
    let fleet = TestFleet::start(FleetConfig::new(0).discovered().store(&store)).await;
    let log = fleet.proxy_log();
    assert!(
        log.contains("cannot read the live workers before the start"),
        "the proxy started and said why it has no workers yet:\n{log}"
    );
}
