//! Limits, client timeouts and TLS termination, through a real proxy and a
//! real worker on real sockets: each limit answers its status and JSON
//! error before any worker sees the request (the worker's own request
//! count does not move), a request just under it passes, slow and idle
//! clients are dropped, and HTTPS through the TLS listener reaches a
//! worker.
//!
//! Requests whose bytes matter (exact header sizes, chunked bodies,
//! stalled or trickled headers) are written by hand on a raw TCP socket.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::raw::{assert_refused, exchange, request, request_with_fields, Conn};
use support::{
    assert_json_error, assert_located, free_port, https_client, run_proxy, self_signed,
    FleetConfig, Missing, Source, TempDir, TestFleet, KEY_COOKIE, KEY_HEADER,
};

// ---------------------------------------------------------------------------
// Fleets
// ---------------------------------------------------------------------------

/// One worker behind a proxy with `yaml` (limits, timeouts) appended.
async fn fleet_with(yaml: &str) -> TestFleet {
    TestFleet::start(FleetConfig::new(1).missing(Missing::Any).yaml(yaml)).await
}

/// The proxy's `roost_proxy_limit_rejections_total{limit}`.
async fn rejections(fleet: &TestFleet, limit: &str) -> f64 {
    fleet.limit_rejections(limit).await
}

/// A padding header that makes `request("GET", "/v1/whoami", [key, pad])`
/// exactly `total` bytes long.
fn padded_request(total: usize) -> Vec<u8> {
    let bare = request("GET", "/v1/whoami", &[(KEY_HEADER, "alice"), ("x-pad", "")]);
    let pad = "p".repeat(total - bare.len());
    let bytes = request(
        "GET",
        "/v1/whoami",
        &[(KEY_HEADER, "alice"), ("x-pad", &pad)],
    );
    assert_eq!(bytes.len(), total);
    bytes
}

// ---------------------------------------------------------------------------
// Header size and count
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn headers_over_their_limits_get_431_and_never_reach_a_worker() {
    let fleet =
        fleet_with("limits: {max_header_bytes: 2048, max_headers: 20, rate: {per_s: 0}}\n").await;
    let addr = fleet.proxy_addr;
    let seen = fleet.worker_requests("whoami").await;

    let at_limit = exchange(addr, &padded_request(2048)).await;
    assert_eq!(at_limit.status, 200, "2048 header bytes pass: {at_limit:?}");
    // The proxy adds up to two fields (x-roost-key, x-roost-hop-token) and
    // counts them: 18 from the client fill the limit of 20.
    let fields = exchange(addr, &request_with_fields(18)).await;
    assert_eq!(fields.status, 200, "18 header fields pass: {fields:?}");
    assert_eq!(fleet.worker_requests("whoami").await, seen + 2);

    let big = exchange(addr, &padded_request(2049)).await;
    assert_refused(&big, 431, "headers_too_large", "2049 header bytes");
    let many = exchange(addr, &request_with_fields(19)).await;
    assert_refused(&many, 431, "headers_too_large", "19 header fields");

    // Past Pingora's own parser limit (256 fields) Pingora answers first:
    // a bare 400 with an empty body, and the connection is closed.
    let mut conn = Conn::open(addr).await;
    let start = Instant::now();
    let too_many = request_with_fields(300);
    assert!(too_many.len() < 4096, "{} bytes", too_many.len());
    conn.send(&too_many).await;
    let pingora = conn.reply().await;
    assert_eq!(pingora.status, 400, "300 fields: {pingora:?}");
    assert_eq!(pingora.body, "", "Pingora's 400 has no body");
    conn.closed_after(start, Duration::from_secs(5)).await;

    assert_eq!(
        fleet.worker_requests("whoami").await,
        seen + 2,
        "no refused request reached the worker"
    );
    assert!(rejections(&fleet, "headers").await >= 2.0);
}

// ---------------------------------------------------------------------------
// Key length and charset
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn keys_too_long_or_outside_visible_ascii_get_400_invalid_key() {
    let config = FleetConfig::new(1)
        .sources(vec![
            Source::inventory(),
            Source::Header(KEY_HEADER.into()),
            Source::Cookie(KEY_COOKIE.into()),
        ])
        .yaml("limits: {max_key_bytes: 16, rate: {per_s: 0}}\n");
    let fleet = TestFleet::start(config).await;
    let addr = fleet.proxy_addr;
    let seen = fleet.worker_requests("whoami").await;

    let sixteen = "k".repeat(16);
    let ok = exchange(
        addr,
        &request("GET", "/v1/whoami", &[(KEY_HEADER, &sixteen)]),
    )
    .await;
    assert_eq!(ok.status, 200, "a 16-byte key passes: {ok:?}");

    let seventeen = "k".repeat(17);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "a 17-byte key",
            request("GET", "/v1/whoami", &[(KEY_HEADER, &seventeen)]),
        ),
        (
            "a space inside the key",
            request("GET", "/v1/whoami", &[(KEY_HEADER, "ali ce")]),
        ),
        (
            "a non-ASCII key",
            b"GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\nx-user-id: caf\xc3\xa9\r\n\r\n".to_vec(),
        ),
        (
            "a path key that decodes to a space",
            request("GET", "/v1/inventory/show%201", &[(KEY_HEADER, "alice")]),
        ),
    ];
    for (context, bytes) in &cases {
        let reply = exchange(addr, bytes).await;
        assert_refused(&reply, 400, "invalid_key", context);
    }
    assert_eq!(
        fleet.worker_requests("whoami").await,
        seen + 1,
        "no refused key reached the worker"
    );
    assert!(rejections(&fleet, "key").await >= 4.0);
}

// ---------------------------------------------------------------------------
// Body size
// ---------------------------------------------------------------------------

/// `POST /v1/whoami` carrying `body` with a `content-length`.
fn post_declared(body: &[u8]) -> Vec<u8> {
    let length = body.len().to_string();
    let headers = [(KEY_HEADER, "alice"), ("content-length", length.as_str())];
    let mut bytes = request("POST", "/v1/whoami", &headers);
    bytes.extend_from_slice(body);
    bytes
}

/// `POST /v1/whoami` carrying `total` bytes in chunks of at most 400.
fn post_chunked(total: usize) -> Vec<u8> {
    let headers = [(KEY_HEADER, "alice"), ("transfer-encoding", "chunked")];
    let mut bytes = request("POST", "/v1/whoami", &headers);
    let body = vec![b'b'; total];
    for chunk in body.chunks(400) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let fleet = fleet_with("limits: {max_body_bytes: 1000, rate: {per_s: 0}}\n").await;
    let addr = fleet.proxy_addr;

    let seen = fleet.worker_requests("whoami").await;
    let declared = exchange(addr, &post_declared(&[b'b'; 1000])).await;
    assert_eq!(
        declared.status, 200,
        "a 1000-byte body passes: {declared:?}"
    );
    let streamed = exchange(addr, &post_chunked(1000)).await;
    assert_eq!(
        streamed.status, 200,
        "1000 chunked bytes pass: {streamed:?}"
    );
    assert_eq!(fleet.worker_requests("whoami").await, seen + 2);

    // Declared too large: refused before the worker is even chosen.
    let over = exchange(addr, &post_declared(&[b'b'; 1001])).await;
    assert_refused(&over, 413, "body_too_large", "content-length 1001");
    assert_eq!(
        fleet.worker_requests("whoami").await,
        seen + 2,
        "a declared oversized body never reaches the worker"
    );

    // Chunked: cut off as it passes the limit. The body streams, so the
    // worker got the header and the first 1000 bytes, then lost the
    // connection: it may count a (failed) request, never a whole one, and
    // nothing it answered reached the client.
    let cut = exchange(addr, &post_chunked(1001)).await;
    assert_refused(&cut, 413, "body_too_large", "1001 chunked bytes");
    assert!(fleet.worker_requests("whoami").await <= seen + 3);
    assert!(rejections(&fleet, "body").await >= 2.0);
}

// ---------------------------------------------------------------------------
// Rate per key
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_rate_gets_429_and_recovers_while_others_pass() {
    let fleet = fleet_with("limits: {rate: {per_s: 1, burst: 5}}\n").await;
    let seen = fleet.worker_requests("whoami").await;

    // The burst passes; the next request is refused with Retry-After.
    let start = Instant::now();
    let mut passed = 0;
    let refused = loop {
        let served = fleet.get_keyed("hot").await;
        if served.status != 200 {
            break served;
        }
        passed += 1;
        assert!(passed < 20, "the hot key was never limited");
    };
    let refilled = start.elapsed().as_secs() as usize + 1;
    assert!(
        (5..=5 + refilled).contains(&passed),
        "{passed} requests passed before the limit (burst 5, 1/s, {refilled} s)"
    );
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.worker, None);
    assert_json_error(&refused.body, "rate_limited", "over the burst");
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a 429 carries Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(fleet.worker_requests("whoami").await, seen + passed as u64);

    // Another key, and keyless requests (`missing: any`: limited by client
    // address, a bucket of their own), are unaffected.
    assert_eq!(fleet.get_keyed("cool").await.status, 200);
    assert_eq!(fleet.get("/v1/whoami", &[]).await.status, 200);

    // After the refill the hot key is served again.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    assert_eq!(fleet.get_keyed("hot").await.status, 200);
    assert!(rejections(&fleet, "rate").await >= 1.0);
}

// ---------------------------------------------------------------------------
// Slow and idle clients
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_is_slow_to_send_its_header_is_dropped() {
    let fleet = fleet_with("timeouts: {header_read_ms: 500}\n").await;
    let addr = fleet.proxy_addr;
    let within = Duration::from_secs(5);

    // A partial header line, then nothing.
    let mut partial = Conn::open(addr).await;
    let start = Instant::now();
    partial
        .send(b"GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\nx-us")
        .await;
    let dropped = partial.closed_after(start, within).await;
    assert!(
        dropped >= Duration::from_millis(450) && dropped < Duration::from_secs(3),
        "a stalled header is dropped after ~500 ms, not {dropped:?}"
    );

    // A byte every 100 ms: each read is quick, the header never completes.
    let mut trickle = Conn::open(addr).await;
    let start = Instant::now();
    let sent = async {
        for byte in b"GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\nx-user-id: a".repeat(4) {
            if trickle.try_send(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(within, sent)
        .await
        .expect("the trickle ends when the proxy closes");
    let dropped = trickle.closed_after(start, within).await;
    assert!(
        dropped < Duration::from_secs(3),
        "a trickled header is dropped at its deadline, not {dropped:?}"
    );

    // Nothing at all.
    let mut silent = Conn::open(addr).await;
    let dropped = silent.closed_after(Instant::now(), within).await;
    assert!(dropped < Duration::from_secs(3), "silent: {dropped:?}");

    // A header sent in two halves inside the limit is served.
    let mut halves = Conn::open(addr).await;
    let bytes = request("GET", "/v1/whoami", &[(KEY_HEADER, "alice")]);
    let (first, second) = bytes.split_at(20);
    halves.send(first).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    halves.send(second).await;
    assert_eq!(halves.reply().await.status, 200);

    assert!(rejections(&fleet, "header_timeout").await >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keepalive_connection_is_closed_after_its_idle_timeout() {
    let fleet = fleet_with("timeouts: {keepalive_idle_ms: 700}\n").await;
    let mut conn = Conn::open(fleet.proxy_addr).await;
    let get = request("GET", "/v1/whoami", &[(KEY_HEADER, "alice")]);

    conn.send(&get).await;
    assert_eq!(conn.reply().await.status, 200);
    // Within the idle timeout the connection is reused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.send(&get).await;
    let second = conn.reply().await;
    assert_eq!(second.status, 200, "the kept-alive connection serves again");

    let idle_since = Instant::now();
    let closed = conn.closed_after(idle_since, Duration::from_secs(5)).await;
    assert!(
        closed >= Duration::from_millis(600) && closed < Duration::from_secs(3),
        "an idle connection is closed after ~700 ms, not {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_gets_408() {
    let fleet = fleet_with("timeouts: {body_idle_ms: 500}\n").await;
    let mut conn = Conn::open(fleet.proxy_addr).await;
    let headers = [(KEY_HEADER, "alice"), ("content-length", "100")];
    let mut bytes = request("POST", "/v1/whoami", &headers);
    bytes.extend_from_slice(&[b'b'; 10]);
    let start = Instant::now();
    conn.send(&bytes).await;
    let reply = conn.reply().await;
    assert_refused(&reply, 408, "request_timeout", "a stalled body");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "answered after ~500 ms, not {waited:?}"
    );
    assert!(rejections(&fleet, "body_timeout").await >= 1.0);
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn https_through_the_tls_listener_reaches_a_worker() {
    let certs = TempDir::new("tls");
    let (cert, key, cert_pem) = self_signed(&certs, "proxy");
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fleet = fleet_with(&format!(
        "tls: {{listen: {tls_addr}, cert: {:?}, key: {:?}}}\nlimits: {{max_headers: 20}}\n",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .await;

    let client = https_client(&cert_pem, tls_addr);
    let url = format!("https://localhost:{}/v1/whoami", tls_addr.port());
    let response = client
        .get(&url)
        .header(KEY_HEADER, "alice")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    assert_eq!(response.status().as_u16(), 200);
    let worker = response.headers().get("x-roost-worker").cloned();
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["key"], "alice", "{body}");
    assert_eq!(
        worker.as_ref().and_then(|v| v.to_str().ok()),
        fleet.route("alice").await.owner.as_deref(),
        "routed by the key over TLS as over plain HTTP"
    );

    // The same limits hold on the TLS listener.
    let mut request = client.get(&url).header(KEY_HEADER, "alice");
    for i in 0..25 {
        request = request.header(format!("x-field-{i}"), "1");
    }
    let refused = request.send().await.expect("a refused HTTPS request");
    assert_eq!(refused.status().as_u16(), 431);

    // And the plain listener still serves.
    assert_eq!(fleet.get_keyed("alice").await.status, 200);
}

/// A valid proxy config whose `tls` section names `cert` (line 10) and
/// `key` (line 11).
fn tls_config(cert: &Path, key: &Path) -> String {
    format!(
        "listen: 127.0.0.1:18080\nadmin_listen: 127.0.0.1:19090\nhash_seed: \"t\"\n\
         key:\n  sources: [{{header: x-user-id}}]\n\
         workers:\n  - {{id: w1, addr: 127.0.0.1:19001}}\n\
         tls:\n  listen: 127.0.0.1:18443\n  cert: {:?}\n  key: {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[test]
fn a_bad_certificate_or_key_fails_startup_naming_the_file() {
    let dir = TempDir::new("tls-config");
    let (cert, key, _) = self_signed(&dir, "good");
    let (_, other_key, _) = self_signed(&dir, "other");
    let garbage = dir.write("garbage.pem", "not a certificate\n");
    let missing = dir.path().join("missing.crt");

    let good = dir.write("good.yaml", &tls_config(&cert, &key));
    let (code, stderr) = run_proxy(&["--check-config".as_ref(), good.as_os_str()]);
    assert_eq!(code, Some(0), "a good TLS config passes: {stderr}");

    // (name, cert, key, line, field, the file the error names)
    let cases = [
        ("missing-cert", &missing, &key, 10, "cert", &missing),
        ("garbage-cert", &garbage, &key, 10, "cert", &garbage),
        ("garbage-key", &cert, &garbage, 11, "key", &garbage),
        ("mismatched-key", &cert, &other_key, 11, "key", &other_key),
    ];
    for (name, cert, key, line, field, named) in cases {
        let path = dir.write(&format!("{name}.yaml"), &tls_config(cert, key));
        for flag in ["--check-config", "--config"] {
            let (code, stderr) = run_proxy(&[flag.as_ref(), path.as_os_str()]);
            assert_eq!(code, Some(1), "{name} {flag}: exits 1: {stderr}");
            assert_located(&stderr, &path, line, field, name);
            assert!(
                stderr.contains(&named.display().to_string()),
                "{name} {flag}: the error names {}: {stderr}",
                named.display()
            );
        }
    }
}
