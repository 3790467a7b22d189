//! The metrics an operator acts on (issue 14), read off a running proxy's
//! and a running worker's `/metrics`: each is there, with its type, from
//! the first scrape, and `roost_build_info` names this build.

mod support;

use support::{FleetConfig, TestFleet};

/// What `# TYPE` says of each metric family in `text`.
fn types(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

fn assert_exported(text: &str, expected: &[(&str, &str)], whose: &str) {
    let exported = types(text);
    for (name, kind) in expected {
        assert!(
            exported.iter().any(|(n, k)| n == name && k == kind),
            "{whose} does not export {name} as a {kind}; it exports {exported:?}"
        );
    }
}

/// `roost_build_info`'s sample in `text`, which must be 1.
fn build_info(text: &str) -> &str {
    let line = text
        .lines()
        .find(|line| line.starts_with("roost_build_info{"))
        .unwrap_or_else(|| panic!("no roost_build_info sample in:\n{text}"));
    assert!(line.ends_with(" 1"), "roost_build_info is 1: {line}");
    line
}

#[tokio::test]
async fn the_proxy_and_the_worker_export_what_operators_act_on() {
    let fleet = TestFleet::start(FleetConfig::new(2)).await;
    for user in 0..10 {
        let served = fleet.get_keyed(&format!("metrics-user-{user}")).await;
        assert_eq!(served.status, 200);
    }

    let proxy = fleet.metrics().await;
    assert_exported(
        &proxy,
        &[
            ("roost_proxy_request_duration_seconds", "histogram"),
            ("roost_proxy_requests_in_flight", "gauge"),
            ("roost_proxy_client_connections", "gauge"),
            ("roost_proxy_health_checks_total", "counter"),
            ("roost_proxy_discovery_reads_total", "counter"),
            ("roost_proxy_reloads_total", "counter"),
            ("roost_proxy_config_last_reload_successful", "gauge"),
            ("roost_proxy_requests_total", "counter"),
            ("roost_proxy_upstream_latency_seconds", "histogram"),
            ("roost_proxy_worker_healthy", "gauge"),
            ("roost_build_info", "gauge"),
        ],
        "the proxy",
    );
    assert!(
        proxy.contains(r#"roost_proxy_request_duration_seconds_count{class="2xx"} "#),
        "requests are timed by status class:\n{proxy}"
    );
    assert!(proxy.contains(r#"roost_proxy_health_checks_total{result="pass",worker="w1"}"#));

    let worker = fleet.worker_metrics("w1").await;
    assert_exported(
        &worker,
        &[
            ("roost_worker_requests_total", "counter"),
            ("roost_worker_request_seconds", "histogram"),
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("roost_build_info", "gauge"),
        ],
        "the worker",
    );
    assert!(
        worker.contains(r#"roost_worker_requests_total{class="2xx",route="readyz"}"#),
        "responses are counted by route and status class:\n{worker}"
    );

    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    for info in [build_info(&proxy), build_info(&worker)] {
        assert!(info.contains(&version), "{info}");
        assert!(!info.contains(r#"commit="""#), "a commit is named: {info}");
    }
}
