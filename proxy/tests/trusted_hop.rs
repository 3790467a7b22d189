//! The trusted hop: workers with a proxy token take entity requests only
//! with it, and the proxy sends it (from `trusted_hop`) with every request
//! it forwards, never in its logs or metrics; a proxy with another token is
//! refused. The proxy's token is not the workers' internal token, which no
//! proxy holds. Real proxy, real workers.

mod support;

use support::{assert_json_error, random_token, FleetConfig, TestFleet, TrustedHop};

#[tokio::test]
async fn requests_through_the_proxy_pass_and_around_it_get_403() {
    let fleet = TestFleet::start(FleetConfig::new(2).trusted_hop()).await;
    let hop = fleet.hop().clone();
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
    // A client cannot smuggle either header through: the proxy strips
    // every x-roost-* header and sets its own.
    let forged = fleet
        .get(
            "/v1/whoami",
            &[
                ("x-user-id", "alice"),
                ("x-roost-internal-token", "nope-nope-nope-nope"),
                ("x-roost-hop-token", "nope-nope-nope-nope"),
            ],
        )
        .await;
    assert_eq!(forged.status, 200, "{}", forged.body);
    let log = fleet.proxy_log();
    let metrics = fleet.metrics().await;
    for token in [&hop.proxy_token, &hop.internal_token] {
        assert!(!log.contains(token.as_str()), "a token in the proxy's log");
        assert!(!metrics.contains(token.as_str()), "a token in its metrics");
    }
}

#[tokio::test]
async fn a_proxy_with_the_wrong_token_is_refused() {
    let hop = TrustedHop {
        proxy_sends: random_token(),
        ..TrustedHop::random()
    };
    let fleet = TestFleet::start(FleetConfig::new(2).with_hop(hop)).await;
    let served = fleet.get_keyed("alice").await;
    assert_eq!(served.status, 403, "{}", served.body);
    assert_json_error(
        &served.body,
        "untrusted_hop",
        "a proxy with the wrong token",
    );
}

/// The example config takes its hop token (the workers' proxy token) from
/// the environment: it checks with the variable set, and without it the
/// error names the field; the workers' internal token is not what it reads.
#[test]
fn the_example_config_takes_the_token_from_the_environment() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config/proxy.example.yaml");
    let check = |name: Option<&str>| {
        let mut command = std::process::Command::new(support::proxy_bin());
        command.arg("--check-config").arg(&example);
        command.env_remove("ROOST_PROXY_TOKEN");
        command.env_remove("ROOST_INTERNAL_TOKEN");
        if let Some(name) = name {
            command.env(name, random_token());
        }
        command.output().expect("run roost-proxy --check-config")
    };
    let ok = check(Some("ROOST_PROXY_TOKEN"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for name in [None, Some("ROOST_INTERNAL_TOKEN")] {
        let unset = check(name);
        assert!(
            !unset.status.success(),
            "without ROOST_PROXY_TOKEN ({name:?} set) the example is refused"
        );
        let stderr = String::from_utf8_lossy(&unset.stderr);
        assert!(
            stderr.contains("token_env") && stderr.contains("ROOST_PROXY_TOKEN"),
            "{stderr}"
        );
    }
}
