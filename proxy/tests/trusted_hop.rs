//! The trusted hop: workers with an internal token take requests only
//! with it, and the proxy sends it (from `trusted_hop`) with every request
//! it forwards, never in its logs. Real proxy, real workers.

mod support;

use support::{assert_json_error, FleetConfig, TestFleet};

const TOKEN: &str = "hop-token-for-the-tests-0123";

/// A fleet whose workers require `TOKEN`, behind a proxy that sends
/// `proxy_token`.
async fn fleet(proxy_token: &str) -> TestFleet {
    let mut config = FleetConfig::new(2)
        .worker_env("ROOST_INTERNAL_TOKEN", TOKEN)
        .proxy_env("ROOST_TEST_HOP_TOKEN", proxy_token);
    config.extra_yaml = "trusted_hop: {token_env: ROOST_TEST_HOP_TOKEN}\n".into();
    TestFleet::start(config).await
}

#[tokio::test]
async fn requests_through_the_proxy_pass_and_around_it_get_403() {
    let fleet = fleet(TOKEN).await;
    for user in ["alice", "bob", "carol"] {
        let served = fleet.get_keyed(user).await;
        assert_eq!(
            served.status, 200,
            "{user} through the proxy: {}",
            served.body
        );
    }
    for id in fleet.worker_ids() {
        let direct = fleet
            .client()
            .get(format!("http://{}/v1/whoami", fleet.worker_addr(&id)))
            .header("x-roost-key", "alice")
            .send()
            .await
            .expect("the worker answers");
        assert_eq!(direct.status(), 403, "straight to {id}");
        let body = direct.text().await.expect("a body");
        assert_json_error(&body, "untrusted_hop", "straight to a worker");
    }
    // A client cannot smuggle the header through: the proxy strips every
    // x-roost-* header and sets its own.
    let forged = fleet
        .get(
            "/v1/whoami",
            &[("x-user-id", "alice"), ("x-roost-internal-token", "nope")],
        )
        .await;
    assert_eq!(forged.status, 200, "{}", forged.body);
    let log = fleet.proxy_log();
    assert!(!log.contains(TOKEN), "the token is not in the proxy's log");
    let metrics = fleet.metrics().await;
    assert!(!metrics.contains(TOKEN), "nor in its metrics");
}

#[tokio::test]
async fn a_proxy_with_the_wrong_token_is_refused() {
    let fleet = fleet("not-the-fleets-token-0123").await;
    let served = fleet.get_keyed("alice").await;
    assert_eq!(served.status, 403, "{}", served.body);
    assert_json_error(
        &served.body,
        "untrusted_hop",
        "a proxy with the wrong token",
    );
}

/// The example config takes its hop token from the environment: it checks
/// with the variable set, and without it the error names the field.
#[test]
fn the_example_config_takes_the_token_from_the_environment() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config/proxy.example.yaml");
    let check = |token: Option<&str>| {
        let mut command = std::process::Command::new(support::proxy_bin());
        command.arg("--check-config").arg(&example);
        command.env_remove("ROOST_INTERNAL_TOKEN");
        if let Some(token) = token {
            command.env("ROOST_INTERNAL_TOKEN", token);
        }
        command.output().expect("run roost-proxy --check-config")
    };
    let ok = check(Some(TOKEN));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let unset = check(None);
    assert!(!unset.status.success(), "a missing token is an error");
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(
        stderr.contains("token_env") && stderr.contains("ROOST_INTERNAL_TOKEN"),
        "{stderr}"
    );
}
