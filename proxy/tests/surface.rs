//! What the proxy shows the outside: the admin API and metrics, the headers
//! a worker receives, keyless and no-worker answers, the access log, and
//! config errors.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::upstream::Recorder;
use support::{
    assert_json_error, assert_located, eventually, metric_value, run_proxy, FleetConfig, Missing,
    TempDir, TestFleet, KEY_COOKIE, KEY_HEADER,
};

fn is_hex16(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------
// e. Admin endpoints
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_answer_as_documented() {
    let weights = [1.0, 2.0, 0.5];
    let fleet = TestFleet::start(FleetConfig::new(3).weights(&weights)).await;

    // GET /admin/workers: [{id, addr, weight, healthy, since}], in config order.
    let (status, content_type, body) = fleet.admin_get("/admin/workers").await;
    assert_eq!(status, 200, "/admin/workers: {body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let workers: Value = serde_json::from_str(&body).expect("/admin/workers is JSON");
    let workers = workers.as_array().expect("/admin/workers is an array");
    assert_eq!(workers.len(), 3, "{body}");
    for (listed, (worker, weight)) in workers.iter().zip(fleet.workers.iter().zip(weights)) {
        let fields: BTreeSet<&str> = listed
            .as_object()
            .expect("each worker is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["id", "addr", "weight", "healthy", "since"]),
            "{listed}"
        );
        assert_eq!(listed["id"], worker.id.as_str(), "{listed}");
        assert_eq!(listed["addr"], worker.addr.to_string(), "{listed}");
        assert_eq!(listed["weight"].as_f64(), Some(weight), "{listed}");
        assert_eq!(listed["healthy"], true, "{listed}");
        let since = listed["since"]
            .as_str()
            .unwrap_or_else(|| panic!("since is an RFC 3339 string once checked: {listed}"));
        assert!(
            since.len() >= 20 && since.as_bytes()[10] == b'T' && since.ends_with('Z'),
            "since looks like RFC 3339 UTC: {since:?}"
        );
    }

    // GET /admin/route?key=K: {owner, key_hash, candidates: [{id, addr, healthy}]}.
    let key = "route me/&?=ü"; // survives query encoding
    let (status, content_type, body) = fleet
        .admin_get(&format!(
            "/admin/route?key={}",
            form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(status, 200, "/admin/route: {body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let route: Value = serde_json::from_str(&body).expect("/admin/route is JSON");
    assert_eq!(
        route
            .as_object()
            .expect("/admin/route is an object")
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["owner", "key_hash", "candidates"]),
        "{body}"
    );
    let key_hash = route["key_hash"].as_str().expect("key_hash is a string");
    assert!(
        is_hex16(key_hash),
        "key_hash is 16 hex digits: {key_hash:?}"
    );
    let candidates = route["candidates"]
        .as_array()
        .expect("candidates is an array");
    assert_eq!(candidates.len(), 3, "every worker is a candidate: {body}");
    for candidate in candidates {
        let id = candidate["id"].as_str().expect("candidate id is a string");
        assert_eq!(
            candidate,
            &json!({"id": id, "addr": fleet.worker_addr(id).to_string(), "healthy": true}),
        );
    }
    let ids: BTreeSet<&str> = candidates.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["w1", "w2", "w3"]), "{body}");
    assert_eq!(
        route["owner"], candidates[0]["id"],
        "owner = first healthy candidate"
    );
    assert_eq!(
        fleet.route(key).await.key_hash,
        key_hash,
        "the same key has the same hash"
    );
    assert_ne!(
        fleet.route("another key").await.key_hash,
        key_hash,
        "another key has another hash"
    );

    // Errors are JSON too.
    for (path, status_wanted, code) in [
        ("/admin/route", 400, "missing_key"),
        ("/admin/route?key=", 400, "missing_key"),
        ("/admin/route?other=1", 400, "missing_key"),
        ("/admin/nope", 404, "not_found"),
        ("/", 404, "not_found"),
    ] {
        let (status, content_type, body) = fleet.admin_get(path).await;
        assert_eq!(status, status_wanted, "GET {path}: {body}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "GET {path}"
        );
        assert_json_error(&body, code, &format!("GET {path}"));
    }

    // GET /metrics: every family is there, and the request counter moves.
    let metrics = fleet.metrics().await;
    for family in [
        "roost_proxy_requests_total",
        "roost_proxy_upstream_latency_seconds",
        "roost_proxy_worker_healthy",
        "roost_proxy_failovers_total",
        "roost_proxy_retries_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "/metrics has {family}:\n{metrics}"
        );
    }
    for worker in fleet.worker_ids() {
        assert_eq!(
            metric_value(
                &metrics,
                "roost_proxy_worker_healthy",
                &[("worker", &worker)]
            ),
            Some(1.0),
            "{worker} is healthy in /metrics"
        );
    }
    let owner = fleet.route("metered").await.owner.expect("an owner");
    let served_2xx = |text: &str| {
        metric_value(
            text,
            "roost_proxy_requests_total",
            &[("worker", owner.as_str()), ("class", "2xx")],
        )
        .unwrap_or(0.0)
    };
    let latency_count = |text: &str| {
        metric_value(
            text,
            "roost_proxy_upstream_latency_seconds_count",
            &[("worker", owner.as_str())],
        )
        .unwrap_or(0.0)
    };
    let (requests_before, latency_before) = (served_2xx(&metrics), latency_count(&metrics));
    const SENT: usize = 5;
    for _ in 0..SENT {
        let served = fleet.get_keyed("metered").await;
        assert_eq!(served.status, 200);
        assert_eq!(served.worker.as_deref(), Some(owner.as_str()));
    }
    // The counters move in the logging phase, just after the response.
    eventually(
        Duration::from_secs(5),
        "the request counter and latency histogram to count 5 more",
        || async {
            let metrics = fleet.metrics().await;
            let moved = served_2xx(&metrics) - requests_before;
            let timed = latency_count(&metrics) - latency_before;
            assert!(
                moved <= SENT as f64,
                "counted {moved} requests, sent {SENT}"
            );
            (moved == SENT as f64 && timed == SENT as f64).then_some(())
        },
    )
    .await;
}

/// The proxy's probes are the operator's: on the admin listener, at their
/// exact paths, for GET; the client listener never answers with them (a
/// client's `/readyz` is a request like any other: here, keyless, 401).
#[tokio::test(flavor = "multi_thread")]
async fn the_probes_answer_on_the_admin_listener_only() {
    let fleet = TestFleet::start(FleetConfig::new(1)).await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let (code, content_type, body) = fleet.admin_get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_str(&body).expect("a probe answers JSON");
        assert_eq!(body, json!({"status": status}), "{path}");
    }
    for path in [
        "/readyz/",
        "//readyz",
        "/READYZ",
        "/%72eadyz",
        "/healthz?x=1/",
    ] {
        let (code, _, body) = fleet.admin_get(path).await;
        let expected = if path.starts_with("/healthz?") {
            200
        } else {
            404
        };
        assert_eq!(code, expected, "admin {path}: {body}");
    }
    // A 405 says in `Allow` what the path takes.
    for (method, path, allowed) in [
        (reqwest::Method::POST, "/readyz", "GET"),
        (reqwest::Method::GET, "/admin/reload", "POST"),
    ] {
        let url = format!("{}{path}", fleet.admin_url());
        let answer = fleet.client().request(method.clone(), url).send().await;
        let answer =
            answer.unwrap_or_else(|e| panic!("{method} {path} on the admin listener: {e}"));
        assert_eq!(answer.status().as_u16(), 405, "{method} {path}");
        let allow = answer.headers().get("allow").and_then(|v| v.to_str().ok());
        assert_eq!(allow, Some(allowed), "{method} {path}");
    }
    // A reload is the operator's: on the client listener, however it is
    // spelled, it is a client request (refused, or a worker's 404), and
    // nothing is reloaded.
    for path in [
        "/admin/reload",
        "//admin/reload",
        "/admin/%72eload",
        "/admin/reload/",
    ] {
        for headers in [&[][..], &[(KEY_HEADER, "reload-user")][..]] {
            let served = fleet.send(reqwest::Method::POST, path, headers, None).await;
            assert_ne!(
                served.status, 200,
                "POST {path} on the client listener: {}",
                served.body
            );
        }
    }
    let metrics = fleet.metrics().await;
    assert!(
        metrics.contains("roost_proxy_reloads_total{result=\"success\"} 0"),
        "no reload came from the client listener"
    );
    for path in ["/readyz", "/healthz"] {
        let served = fleet.get(path, &[]).await;
        assert_eq!(
            served.status, 401,
            "{path} on the client listener is a client request: {}",
            served.body
        );
    }
}

// ---------------------------------------------------------------------------
// f. x-roost-* headers
// ---------------------------------------------------------------------------

/// The `x-roost-*` headers a worker gets for a request the client sent with
/// `sent` and forged ones, and the key a worker is told: the proxy's key
/// and hop token, nothing the client sent. A fake worker records them; real
/// workers check the key and the routing.
#[tokio::test(flavor = "multi_thread")]
async fn client_sent_roost_headers_never_reach_the_worker() {
    let fake = Recorder::start("fake").await;
    let recorded = TestFleet::start(
        FleetConfig::new(0)
            .missing(Missing::Any)
            .trusted_hop()
            .with_fake_worker(&fake),
    )
    .await;
    let hop_token = recorded.hop().proxy_token.clone();
    let fleet = TestFleet::start(FleetConfig::new(2).missing(Missing::Any)).await;
    let forged: &[(&str, &str)] = &[
        ("x-roost-key", "forged-key"),
        ("X-Roost-Worker", "w1"),
        ("X-ROOST-TOKEN", "let-me-in"),
        ("x-roost-hop-token", "forged-hop-token-0000"),
        ("x-roost-internal-token", "forged-internal-token-0000"),
        ("x-roost-anything", "1"),
    ];
    let cookie = format!("theme=dark; {KEY_COOKIE}=bob-from-cookie");
    // (what the client sends besides the forged headers, the key expected)
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Headers, Option<&str>)> = vec![
        (
            vec![(KEY_HEADER, "alice-from-header")],
            Some("alice-from-header"),
        ),
        (vec![("cookie", cookie.as_str())], Some("bob-from-cookie")),
        (
            vec![(KEY_HEADER, "header-wins"), ("cookie", cookie.as_str())],
            Some("header-wins"),
        ),
        (vec![], None), // keyless, sent to any worker under `missing: any`
    ];
    for (sent, expected_key) in cases {
        let headers: Vec<(&str, &str)> = sent.iter().chain(forged).copied().collect();

        let served = recorded.get("/v1/whoami", &headers).await;
        assert_eq!(served.status, 200, "{headers:?}: {}", served.body);
        let last = fake.last();
        let mut seen = last.roost_headers();
        seen.sort_unstable();
        let mut expected = vec![("x-roost-hop-token", hop_token.as_str())];
        expected.extend(expected_key.map(|key| ("x-roost-key", key)));
        expected.sort_unstable();
        assert_eq!(
            seen, expected,
            "the worker gets only the proxy's x-roost-key and hop token (sent {headers:?})"
        );

        let served = fleet.get("/v1/whoami", &headers).await;
        assert_eq!(served.status, 200, "{headers:?}: {}", served.body);
        let body = served.json();
        assert_eq!(body["key"], json!(expected_key), "{body}");
        if let Some(key) = expected_key {
            let owner = fleet.route(key).await.owner;
            assert_eq!(served.worker, owner, "{key} is routed by the extracted key");
        }
    }
}

// ---------------------------------------------------------------------------
// g. Keyless requests and no live worker
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn keyless_requests_are_rejected_or_routed_as_configured() {
    let reject = TestFleet::start(FleetConfig::new(2)).await;
    let served = reject
        .get(
            "/v1/whoami",
            &[("cookie", "theme=dark"), (KEY_HEADER, "   ")],
        )
        .await;
    assert_eq!(served.status, 401, "missing: reject → 401: {}", served.body);
    assert_eq!(served.worker, None, "no worker saw it");
    assert_eq!(
        served.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert_json_error(&served.body, "missing_key", "keyless under reject");

    let mut any = TestFleet::start(FleetConfig::new(2).missing(Missing::Any)).await;
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let served = any.get("/v1/whoami", &[]).await;
        assert_eq!(served.status, 200, "missing: any → 200: {}", served.body);
        seen.insert(served.worker.expect("a worker answered"));
    }
    assert!(!seen.is_empty());

    // Every worker dead: 503 JSON with Retry-After, keyed or not.
    for id in any.worker_ids() {
        any.kill9(&id);
    }
    for headers in [vec![], vec![(KEY_HEADER, "carol")]] {
        let served = any.get("/v1/whoami", &headers).await;
        assert_eq!(
            served.status, 503,
            "no live worker ({headers:?}): {}",
            served.body
        );
        let retry_after = served
            .headers
            .get("retry-after")
            .unwrap_or_else(|| panic!("a 503 carries Retry-After ({headers:?})"));
        let seconds: u64 = retry_after
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After is a number of seconds: {retry_after:?}"));
        assert!(seconds >= 1, "Retry-After: {seconds}");
        assert_eq!(
            served.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert_json_error(&served.body, "unavailable", "no live worker");
    }
}

// ---------------------------------------------------------------------------
// h. Access log
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn access_log_has_one_line_per_request_with_the_key_hash_never_the_key() {
    let fleet = TestFleet::start(FleetConfig::new(2).json_logs()).await;
    let keys: Vec<String> = (0..20)
        .map(|i| format!("raw-secret-key-{i}-d41d8cd9"))
        .collect();
    let mut expected = Vec::new(); // (path, key hash or "-", status)
    for (i, key) in keys.iter().enumerate() {
        let path = "/v1/whoami".to_owned();
        let cookie = format!("{KEY_COOKIE}={key}");
        let headers = if i % 2 == 0 {
            [(KEY_HEADER, key.as_str())]
        } else {
            [("cookie", cookie.as_str())]
        };
        let served = fleet.get(&path, &headers).await;
        assert_eq!(served.status, 200);
        expected.push((path, fleet.route(key).await.key_hash, 200));
    }
    let served = fleet.get("/logged/keyless", &[]).await;
    assert_eq!(served.status, 401);
    expected.push(("/logged/keyless".to_owned(), "-".to_owned(), 401));

    let lines = fleet.access_log_lines(expected.len()).await;
    let log = fleet.proxy_log();
    assert_eq!(
        lines.len(),
        expected.len(),
        "exactly one access-log line per request:\n{log}"
    );
    for (path, hash, status) in &expected {
        let matching: Vec<&Value> = lines
            .iter()
            .filter(|l| l["path"] == path.as_str() && l["key"] == hash.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "one line for {path}:\n{log}");
        let line = matching[0];
        assert_eq!(
            line["key"],
            hash.as_str(),
            "{path} is logged with its key hash: {line}"
        );
        assert_eq!(line["status"], *status, "{line}");
        if hash != "-" {
            assert!(is_hex16(hash), "the key hash is 16 hex digits: {hash}");
        }
    }
    for key in &keys {
        assert!(
            !log.contains(key.as_str()),
            "the raw key {key} appears in the proxy log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------
// i. Config errors
// ---------------------------------------------------------------------------

/// A valid config; each bad case changes one line of it.
const GOOD: &str = "\
listen: 127.0.0.1:18080
admin_listen: 127.0.0.1:19090
hash_seed: \"tests\"
key:
  sources: [{header: x-user-id}, {cookie: uid}]
  missing: reject
workers:
  - {id: w1, addr: 127.0.0.1:19001, weight: 1}
  - {id: w2, addr: 127.0.0.1:19002, weight: 1}
health: {path: /healthz, interval_ms: 50, timeout_ms: 200, rise: 2, fall: 2}
";

#[test]
fn bad_configs_are_rejected_with_file_line_and_field() {
    let dir = TempDir::new("config");
    let check = |path: &Path| run_proxy(&["--check-config".as_ref(), path.as_os_str()]);

    let good = dir.write("good.yaml", GOOD);
    let (code, stderr) = check(&good);
    assert_eq!(code, Some(0), "a good config passes: {stderr}");

    // (name, line to replace (1-based), replacement, field named)
    let cases = [
        ("unknown-field", 3, "hash_sed: \"tests\"", "hash_sed"),
        (
            "bad-address",
            9,
            "  - {id: w2, addr: localhost:nope, weight: 1}",
            "addr",
        ),
        (
            "zero-weight",
            9,
            "  - {id: w2, addr: 127.0.0.1:19002, weight: 0}",
            "weight",
        ),
        (
            "duplicate-id",
            9,
            "  - {id: w1, addr: 127.0.0.1:19002, weight: 1}",
            "id",
        ),
        (
            "key-source-with-two-kinds",
            5,
            "  sources: [{header: x-user-id, cookie: uid}]",
            "cookie",
        ),
        (
            "path-template-without-key",
            5,
            "  sources: [{path: \"/v1/inventory\", prefix: \"inventory:\"}]",
            "path",
        ),
        (
            "discovery-store-scheme",
            10,
            "discovery: {store: \"mysql://db/roost\"}",
            "store",
        ),
    ];
    for (name, line, replacement, field) in cases {
        let text: Vec<&str> = GOOD
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line { replacement } else { l })
            .collect();
        let path = dir.write(&format!("{name}.yaml"), &(text.join("\n") + "\n"));
        let (code, stderr) = check(&path);
        assert_eq!(code, Some(1), "{name}: --check-config exits 1: {stderr}");
        assert_located(&stderr, &path, line as u32, field, name);

        if name == "zero-weight" {
            // Running with a bad config fails the same way, before binding.
            let (code, stderr) = run_proxy(&["--config".as_ref(), path.as_os_str()]);
            assert_eq!(code, Some(1), "--config with a bad file exits 1: {stderr}");
            assert_located(&stderr, &path, line as u32, field, "--config");
        }
    }

    let missing = dir.path().join("does-not-exist.yaml");
    let (code, stderr) = check(&missing);
    assert_eq!(code, Some(1), "a missing file exits 1: {stderr}");
    assert!(
        stderr.starts_with(&format!("{}:1:", missing.display())),
        "a missing file is reported as PATH:1:...: {stderr:?}"
    );
    assert!(
        stderr.contains("cannot read"),
        "the error says why: {stderr:?}"
    );
}
