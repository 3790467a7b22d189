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

use support::{
    assert_json_error, assert_located, free_port, https_client, metric_value, run_proxy,
    self_signed, FleetConfig, Missing, Source, TempDir, TestFleet, KEY_COOKIE, KEY_HEADER,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw exchange may take before the test fails.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/// A response read off a raw socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The worker that answered (`x-roost-worker`), if one did.
    fn worker(&self) -> Option<&str> {
        self.header("x-roost-worker")
    }
}

/// `METHOD path HTTP/1.1` with a `host` header and then `headers`, ending
/// the header section; no body.
fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: proxy\r\n");
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    text += "\r\n";
    text.into_bytes()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to the proxy at {addr}: {e}"))
}

/// Write `bytes` on a fresh connection and read one response.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = connect(addr).await;
    stream
        .write_all(bytes)
        .await
        .expect("write the request to the proxy");
    read_reply(&mut stream).await
}

/// Read one response (header, then a `content-length` body).
async fn read_reply(stream: &mut TcpStream) -> Reply {
    tokio::time::timeout(RAW_TIMEOUT, read_reply_unbounded(stream))
        .await
        .unwrap_or_else(|_| panic!("no response within {RAW_TIMEOUT:?}"))
}

async fn read_reply_unbounded(stream: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read a response");
        assert!(
            n > 0,
            "the proxy closed the connection mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read a response body");
        assert!(n > 0, "the proxy closed the connection mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// How long until the proxy closes `stream` (EOF or reset), reading and
/// discarding anything it sends; panics after `limit`.
async fn closed_after(stream: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
    let wait = async {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or_else(|_| panic!("the proxy kept the connection open for {limit:?}"));
    since.elapsed()
}

// ---------------------------------------------------------------------------
// Fleets
// ---------------------------------------------------------------------------

/// One worker behind a proxy with `yaml` (limits, timeouts) appended.
async fn fleet_with(yaml: &str) -> TestFleet {
    let mut config = FleetConfig::new(1).missing(Missing::Any);
    config.extra_yaml = yaml.to_owned();
    TestFleet::start(config).await
}

/// The proxy's `roost_proxy_limit_rejections_total{limit}`.
async fn rejections(fleet: &TestFleet, limit: &str) -> f64 {
    let metrics = fleet.metrics().await;
    metric_value(
        &metrics,
        "roost_proxy_limit_rejections_total",
        &[("limit", limit)],
    )
    .unwrap_or_else(|| panic!("/metrics has no rejections for {limit}"))
}

/// Assert `reply` is `status` with the JSON error `code`, from the proxy.
fn assert_refused(reply: &Reply, status: u16, code: &str, context: &str) {
    assert_eq!(reply.status, status, "{context}: {reply:?}");
    assert_eq!(reply.worker(), None, "{context}: no worker answered");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{context}"
    );
    assert_json_error(&reply.body, code, context);
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

/// A request with `count` header fields in all (`host` and the key among
/// them), short enough (under 4 KiB for 300 fields) that the proxy reads it
/// whole before answering, so closing leaves nothing unread to reset on.
fn request_with_fields(count: usize) -> Vec<u8> {
    let names: Vec<String> = (2..count).map(|i| format!("f{i}")).collect();
    let mut headers = vec![(KEY_HEADER, "alice")];
    headers.extend(names.iter().map(|name| (name.as_str(), "1")));
    request("GET", "/v1/whoami", &headers)
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
    let fields = exchange(addr, &request_with_fields(20)).await;
    assert_eq!(fields.status, 200, "20 header fields pass: {fields:?}");
    assert_eq!(fleet.worker_requests("whoami").await, seen + 2);

    let big = exchange(addr, &padded_request(2049)).await;
    assert_refused(&big, 431, "headers_too_large", "2049 header bytes");
    let many = exchange(addr, &request_with_fields(21)).await;
    assert_refused(&many, 431, "headers_too_large", "21 header fields");

    // Past Pingora's own parser limit (256 fields) Pingora answers first:
    // a bare 400 with an empty body, and the connection is closed.
    let mut stream = connect(addr).await;
    let start = Instant::now();
    let too_many = request_with_fields(300);
    assert!(too_many.len() < 4096, "{} bytes", too_many.len());
    stream
        .write_all(&too_many)
        .await
        .expect("write 300 header fields");
    let pingora = read_reply(&mut stream).await;
    assert_eq!(pingora.status, 400, "300 fields: {pingora:?}");
    assert_eq!(pingora.body, "", "Pingora's 400 has no body");
    closed_after(&mut stream, start, Duration::from_secs(5)).await;

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
    let mut config = FleetConfig::new(1).sources(vec![
        Source::Path {
            template: "/v1/inventory/{key}".into(),
            prefix: "inventory:".into(),
        },
        Source::Header(KEY_HEADER.into()),
        Source::Cookie(KEY_COOKIE.into()),
    ]);
    config.extra_yaml = "limits: {max_key_bytes: 16, rate: {per_s: 0}}\n".into();
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

    // Another key, and keyless requests (`missing: any`), are unaffected.
    assert_eq!(fleet.get_keyed("cool").await.status, 200);
    for _ in 0..10 {
        assert_eq!(fleet.get("/v1/whoami", &[]).await.status, 200);
    }

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
    let mut partial = connect(addr).await;
    let start = Instant::now();
    partial
        .write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\nx-us")
        .await
        .expect("write a partial header");
    let dropped = closed_after(&mut partial, start, within).await;
    assert!(
        dropped >= Duration::from_millis(450) && dropped < Duration::from_secs(3),
        "a stalled header is dropped after ~500 ms, not {dropped:?}"
    );

    // A byte every 100 ms: each read is quick, the header never completes.
    let mut trickle = connect(addr).await;
    let start = Instant::now();
    let sent = async {
        for byte in b"GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\nx-user-id: a".repeat(4) {
            if trickle.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(within, sent)
        .await
        .expect("the trickle ends when the proxy closes");
    let dropped = closed_after(&mut trickle, start, within).await;
    assert!(
        dropped < Duration::from_secs(3),
        "a trickled header is dropped at its deadline, not {dropped:?}"
    );

    // Nothing at all.
    let mut silent = connect(addr).await;
    let dropped = closed_after(&mut silent, Instant::now(), within).await;
    assert!(dropped < Duration::from_secs(3), "silent: {dropped:?}");

    // A header sent in two halves inside the limit is served.
    let mut halves = connect(addr).await;
    let bytes = request("GET", "/v1/whoami", &[(KEY_HEADER, "alice")]);
    let (first, second) = bytes.split_at(20);
    halves.write_all(first).await.expect("write the first half");
    tokio::time::sleep(Duration::from_millis(200)).await;
    halves
        .write_all(second)
        .await
        .expect("write the second half");
    assert_eq!(read_reply(&mut halves).await.status, 200);

    assert!(rejections(&fleet, "header_timeout").await >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keepalive_connection_is_closed_after_its_idle_timeout() {
    let fleet = fleet_with("timeouts: {keepalive_idle_ms: 700}\n").await;
    let mut stream = connect(fleet.proxy_addr).await;
    let get = request("GET", "/v1/whoami", &[(KEY_HEADER, "alice")]);

    stream.write_all(&get).await.expect("write a request");
    assert_eq!(read_reply(&mut stream).await.status, 200);
    // Within the idle timeout the connection is reused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
        .write_all(&get)
        .await
        .expect("write a second request");
    let second = read_reply(&mut stream).await;
    assert_eq!(second.status, 200, "the kept-alive connection serves again");

    let idle_since = Instant::now();
    let closed = closed_after(&mut stream, idle_since, Duration::from_secs(5)).await;
    assert!(
        closed >= Duration::from_millis(600) && closed < Duration::from_secs(3),
        "an idle connection is closed after ~700 ms, not {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_gets_408() {
    let fleet = fleet_with("timeouts: {body_idle_ms: 500}\n").await;
    let mut stream = connect(fleet.proxy_addr).await;
    let headers = [(KEY_HEADER, "alice"), ("content-length", "100")];
    let mut bytes = request("POST", "/v1/whoami", &headers);
    bytes.extend_from_slice(&[b'b'; 10]);
    let start = Instant::now();
    stream
        .write_all(&bytes)
        .await
        .expect("write a partial body");
    let reply = read_reply(&mut stream).await;
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
