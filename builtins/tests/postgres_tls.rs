//! Postgres over TLS: a worker whose `--store` says `sslmode=verify-full`
//! and names the CA serves from a cluster that admits its user only over
//! TLS and only with its password, which comes from `PGPASSWORD`. A server
//! certificate it cannot verify (signed by another CA, or not naming the
//! host) stops it at start with an error saying so; the password shows in
//! none of its output.
//!
//! The cluster is one of this binary's own with TLS on, whether or not
//! `DATABASE_URL` is set ([`tls_cluster`]).

#[allow(unused_macros)] // both_stores!: these tests need a TLS store
mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use roost_testkit::process::Process;
use roost_testkit::{tls_cluster, TempDir, TlsCluster};
use serde_json::json;
use support::{unique_key, Store, Worker};

/// How long a worker the store refuses may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// A host name the server's certificate does not hold; connections go to
/// 127.0.0.1 by `hostaddr`, so nothing resolves it.
const OTHER_NAME: &str = "db.roost.test";

/// The URL parameters of `sslmode` with `ca` as `sslrootcert`.
fn tls_params(mode: &str, ca: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", ca.display())
}

/// The cluster at [`OTHER_NAME`] (reached at 127.0.0.1) under `mode`.
fn other_name_url(cluster: &TlsCluster, mode: &str) -> String {
    let params = tls_params(mode, cluster.ca());
    cluster.url(OTHER_NAME, &format!("hostaddr=127.0.0.1&{params}"))
}

/// Run a worker on `store`, the password in `PGPASSWORD`, until it exits:
/// its status and all it wrote to stdout and stderr.
fn run_until_exit(cluster: &TlsCluster, store: &str) -> (ExitStatus, String) {
    run_until_exit_with(store, Some(cluster.password()))
}

/// [`run_until_exit`] with `password` (if any) in `PGPASSWORD`.
fn run_until_exit_with(store: &str, password: Option<&str>) -> (ExitStatus, String) {
    let dir = TempDir::new("tls-worker");
    let output = dir.path().join("output");
    let mut command = Command::new(Worker::bin());
    command
        .args(["--id", "tls-refused", "--listen", "127.0.0.1:0"])
        .args(["--store", store])
        .env_remove("PGPASSWORD")
        .envs(password.map(|password| ("PGPASSWORD", password)))
        .env("RUST_LOG", "info");
    let mut process = Process::spawn("roost-worker (refused by the store)", command, &output)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = process.wait_exit_blocking(EXIT_LIMIT);
    let printed = fs::read_to_string(&output).unwrap_or_default();
    let status = status.unwrap_or_else(|e| panic!("{e:#}; it printed:\n{printed}"));
    (status, printed)
}

/// The worker exited non-zero, said `expected`, and did not print the
/// password.
fn assert_refused(cluster: &TlsCluster, (status, printed): (ExitStatus, String), expected: &str) {
    assert!(
        !status.success(),
        "the worker started; it printed:\n{printed}"
    );
    assert!(
        printed.contains(expected),
        "the error says {expected:?}; the worker printed:\n{printed}"
    );
    assert!(
        !printed.contains(cluster.password()),
        "the password shows in the worker's output:\n{printed}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the test's tokio runtime")
}

/// Start worker `id` on `url` with the password in `PGPASSWORD`, write a
/// durable session, and read it back from a fresh process (so from the
/// store); the password must not show in the worker's log.
async fn serves_over_tls(cluster: &TlsCluster, id: &str, url: String) {
    let store = Store::Postgres(url);
    let env = [("PGPASSWORD", cluster.password())];
    let mut worker = Worker::start_with_env(id, &store, None, &env).await;
    let key = unique_key("tls");
    let document = json!({"theme": "dark", "over": "tls"});
    worker
        .api()
        .put_session(&key, &document)
        .durability("durable")
        .send()
        .await
        .expect_status(200, "PUT a durable session");
    worker.kill9();
    worker.restart().await;
    let read = worker.api().get_session(&key).send().await;
    read.expect_status(200, "GET the session from a fresh process");
    assert_eq!(
        read.json(),
        document,
        "the session came back from the store"
    );
    let log = worker.log();
    assert!(
        !log.contains(cluster.password()),
        "the password shows in the worker's log:\n{log}"
    );
}

#[test]
fn verify_full_with_the_ca_serves_with_the_password_from_the_environment() {
    let cluster = tls_cluster();
    let url = cluster.url("localhost", &tls_params("verify-full", cluster.ca()));
    runtime().block_on(serves_over_tls(cluster, "tls-full", url));
}

#[test]
fn verify_full_with_another_ca_refuses_to_start() {
    let cluster = tls_cluster();
    let url = cluster.url("localhost", &tls_params("verify-full", cluster.other_ca()));
    let refused = run_until_exit(cluster, &url);
    assert_refused(cluster, refused, "invalid peer certificate: UnknownIssuer");
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let cluster = tls_cluster();
    let refused = run_until_exit(cluster, &other_name_url(cluster, "verify-full"));
    assert_refused(cluster, refused, "certificate not valid for name");
    let url = other_name_url(cluster, "verify-ca");
    runtime().block_on(serves_over_tls(cluster, "tls-ca", url));
}

#[test]
fn an_unreadable_root_certificate_refuses_to_start() {
    let cluster = tls_cluster();
    let missing = cluster.ca().with_file_name("no-such-ca.pem");
    let url = cluster.url("localhost", &tls_params("verify-full", &missing));
    let refused = run_until_exit(cluster, &url);
    assert_refused(
        cluster,
        refused,
        &format!("sslrootcert {}", missing.display()),
    );
}

/// What makes the tests above mean something: the cluster lets the user
/// in neither without TLS nor without its password.
#[test]
fn the_cluster_admits_the_user_only_over_tls_with_its_password() {
    let cluster = tls_cluster();
    let plain = cluster.url("localhost", "sslmode=disable");
    let refused = run_until_exit(cluster, &plain);
    assert_refused(cluster, refused, "no encryption");
    let url = cluster.url("localhost", &tls_params("verify-full", cluster.ca()));
    let refused = run_until_exit_with(&url, None);
    assert_refused(cluster, refused, "password missing");
}

/// The default: TLS whenever the server offers it, its certificate
/// unchecked (the cluster admits the user over TLS only).
#[test]
fn prefer_negotiates_tls_when_the_server_offers_it() {
    let cluster = tls_cluster();
    let url = cluster.url("localhost", "");
    runtime().block_on(serves_over_tls(cluster, "tls-prefer", url));
}

/// As in libpq: `require` with a root certificate checks the chain.
#[test]
fn require_with_a_root_certificate_checks_the_chain() {
    let cluster = tls_cluster();
    let url = cluster.url("localhost", &tls_params("require", cluster.other_ca()));
    let refused = run_until_exit(cluster, &url);
    assert_refused(cluster, refused, "invalid peer certificate: UnknownIssuer");
}
