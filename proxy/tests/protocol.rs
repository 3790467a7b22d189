//! HTTP/1.1 at the edge, byte for byte on raw sockets through a real proxy
//! and real workers: odd spellings of an entity's path still reach the
//! entity's owner (or get 400, never another worker), and a worker gets
//! the path's normal form (a recording fake worker is the witness);
//! pipelined requests are answered in order; a half-closed client gets its
//! response; bodies with conflicting or oversized `Content-Length` are
//! refused before any worker sees them; the header-count limit counts the
//! fields the proxy adds, so a worker never answers a bare 431; an empty
//! cookie does not hide a valid one; connections per client address are
//! limited; and an early 413 or 431 reaches a client that writes its whole
//! request before reading, every time.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::raw::{
    assert_refused, exchange, exchange_parts, request, request_with_fields, whoami, with_body,
    Conn, Reply,
};
use support::upstream::Recorder;
use support::{
    cookie_signer, eventually, now_s, FleetConfig, Missing, Source, TestFleet, COOKIE_SECRET,
    KEY_HEADER,
};

/// A fleet of `n` workers, keys from the `x-user-id` header, keyless
/// requests anywhere, rate limit off, and these `limits` entries.
async fn fleet_with(n: usize, limits: &[&str]) -> TestFleet {
    let limits = [&["rate: {per_s: 0}"], limits].concat().join(", ");
    let config = FleetConfig::new(n)
        .missing(Missing::Any)
        .yaml(&format!("limits: {{{limits}}}\n"));
    TestFleet::start(config).await
}

/// The key a worker's `/v1/whoami` reply says it saw.
fn key_seen(reply: &Reply) -> Value {
    reply.json()["key"].clone()
}

// ---------------------------------------------------------------------------
// Path spellings reach the entity's owner
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn odd_spellings_of_an_inventory_path_reach_its_owner_or_get_400() {
    let config = FleetConfig::new(3)
        .sources(vec![Source::inventory(), Source::Header(KEY_HEADER.into())])
        .yaml("limits: {rate: {per_s: 0}}\n");
    let fleet = TestFleet::start(config).await;
    let user = "alice";
    let user_worker = fleet.route(user).await.owner.expect("an owner");

    // SKUs owned by another worker than the user's: a spelling that lost
    // the path key would land on the user's worker.
    let mut skus = Vec::new();
    for i in 0..200 {
        let sku = format!("sku-{i}");
        let owner = fleet.route(&format!("inventory:{sku}")).await.owner;
        let owner = owner.expect("an owner");
        if owner != user_worker {
            skus.push((sku, owner));
        }
        if skus.len() == 6 {
            break;
        }
    }
    assert_eq!(skus.len(), 6, "six SKUs away from {user_worker}");

    let keyed = [(KEY_HEADER, user)];
    for (sku, owner) in &skus {
        let plain = exchange(
            fleet.proxy_addr,
            &request("GET", &format!("/v1/inventory/{sku}"), &keyed),
        )
        .await;
        assert_eq!(plain.worker(), Some(owner.as_str()), "{sku}: {plain:?}");
        for target in [
            format!("//v1/inventory/{sku}"),
            format!("/v1//inventory/{sku}"),
            format!("/v1/./inventory/{sku}"),
            format!("/v1/inventory/./{sku}"),
            format!("/v1/x/../inventory/{sku}"),
            format!("/%761/inventory/{sku}"),
            format!("///v1///inventory//{sku}"),
            format!("/v1/%2e/inventory/{sku}"),
        ] {
            let reply = exchange(fleet.proxy_addr, &request("GET", &target, &keyed)).await;
            if reply.status == 400 {
                assert_refused(&reply, 400, "invalid_path", &target);
            } else {
                assert_eq!(
                    reply.worker(),
                    Some(owner.as_str()),
                    "GET {target} reaches the owner of inventory:{sku}: {reply:?}"
                );
            }
        }
    }
}

/// What a worker receives for an odd spelling is the normal form the proxy
/// routed by (query kept as sent), so the two can never disagree.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_forwards_the_normal_form_of_the_path() {
    let fake = Recorder::start("fake").await;
    let config = FleetConfig::new(0)
        .missing(Missing::Any)
        .with_fake_worker(&fake);
    let fleet = TestFleet::start(config).await;
    for (sent, forwarded) in [
        ("/v1/whoami", "/v1/whoami"),
        ("//v1/./whoami", "/v1/whoami"),
        (
            "/v1/x/../inventory//show-1?a=1&b=%2F",
            "/v1/inventory/show-1?a=1&b=%2F",
        ),
        ("/%761/%69nventory/show%3a1", "/v1/inventory/show%3A1"),
        ("/v1/session/", "/v1/session/"),
        ("http://proxy/v1//whoami", "/v1/whoami"),
    ] {
        let reply = exchange(fleet.proxy_addr, &request("GET", sent, &[])).await;
        assert_eq!(reply.worker(), Some("fake"), "GET {sent}: {reply:?}");
        assert_eq!(fake.last().target, forwarded, "GET {sent}");
    }
}

// ---------------------------------------------------------------------------
// Pipelining and half-close
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn two_pipelined_requests_are_answered_in_order() {
    let fleet = fleet_with(2, &[]).await;
    let mut conn = Conn::open(fleet.proxy_addr).await;
    conn.send(&[whoami("pipe-first"), whoami("pipe-second")].concat())
        .await;
    let first = conn.reply().await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(key_seen(&first), "pipe-first", "{first:?}");
    if first.closes() {
        // Allowed: the proxy answers the first and says it closes.
        conn.closed_after(Instant::now(), Duration::from_secs(5))
            .await;
        return;
    }
    let second = conn.reply().await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(key_seen(&second), "pipe-second", "in order: {second:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_half_closes_after_its_request_gets_the_response() {
    let fleet = fleet_with(2, &[]).await;

    let mut conn = Conn::open(fleet.proxy_addr).await;
    conn.send(&whoami("half-closed")).await;
    conn.shutdown_write().await;
    let reply = conn.reply().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(key_seen(&reply), "half-closed");

    // A write, too: it is applied and its response arrives.
    let keyed = [(KEY_HEADER, "half-writer")];
    let mut conn = Conn::open(fleet.proxy_addr).await;
    conn.send(&with_body(
        "PUT",
        "/v1/session",
        &keyed,
        b"{\"theme\":\"dark\"}",
    ))
    .await;
    conn.shutdown_write().await;
    let put = conn.reply().await;
    assert!(put.status / 100 == 2, "PUT then FIN: {put:?}");
    let read = exchange(fleet.proxy_addr, &request("GET", "/v1/session", &keyed)).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.json()["theme"], "dark", "{read:?}");
}

// ---------------------------------------------------------------------------
// Content-Length
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_or_oversized_content_lengths_never_reach_a_worker() {
    let fleet = fleet_with(1, &[]).await;
    let addr = fleet.proxy_addr;
    let seen = fleet.worker_requests("whoami").await;
    let keyed = (KEY_HEADER, "alice");

    // Two equal values declare one length, over the limit (1 MiB): 413.
    let head = request(
        "POST",
        "/v1/whoami",
        &[keyed, ("content-length", "2000000, 2000000")],
    );
    let reply = exchange(addr, &head).await;
    assert_refused(&reply, 413, "body_too_large", "2000000, 2000000");

    // Lengths that disagree, or are not lengths: 400.
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("5, 6 in one field", vec![("content-length", "5, 6")]),
        (
            "two fields, 5 and 6",
            vec![("content-length", "5"), ("content-length", "6")],
        ),
        ("not a number", vec![("content-length", "five")]),
        ("a sign", vec![("content-length", "+6")]),
    ];
    for (what, lengths) in cases {
        let mut headers = vec![keyed];
        headers.extend(lengths);
        let mut bytes = request("POST", "/v1/whoami", &headers);
        bytes.extend_from_slice(b"hello!");
        let reply = exchange_parts(addr, &[&bytes])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        assert_eq!(reply.worker(), None, "{what}: no worker answered");
    }

    assert_eq!(
        fleet.worker_requests("whoami").await,
        seen,
        "no refused request reached the worker"
    );
}

// ---------------------------------------------------------------------------
// Header count
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_header_count_limit_counts_the_fields_the_proxy_adds() {
    let config = FleetConfig::new(1)
        .trusted_hop()
        .yaml("limits: {max_headers: 100, rate: {per_s: 0}}\n");
    let fleet = TestFleet::start(config).await;
    let addr = fleet.proxy_addr;

    // 98 from the client, plus x-roost-key and x-roost-hop-token: 100.
    let passes = exchange(addr, &request_with_fields(98)).await;
    assert_eq!(passes.status, 200, "98 fields reach the worker: {passes:?}");
    assert!(passes.worker().is_some(), "{passes:?}");
    for count in [99, 100] {
        let refused = exchange(addr, &request_with_fields(count)).await;
        assert_refused(
            &refused,
            431,
            "headers_too_large",
            &format!("{count} fields: the proxy's 431, not the worker's"),
        );
    }
}

// ---------------------------------------------------------------------------
// Cookies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_cookie_does_not_hide_a_valid_one() {
    let config = FleetConfig::new(3)
        .signed_cookie("roost_id")
        .missing(Missing::Mint);
    let fleet = TestFleet::start(config).await;
    let id = "cookie-user-7";
    let signed = cookie_signer(COOKIE_SECRET).sign(id, now_s() + 600);
    let owner = fleet.route(id).await.owner.expect("an owner");

    for cookie in [
        format!("roost_id=; roost_id={signed}"),
        format!("roost_id=\"\"; roost_id={signed}"),
        format!("theme=dark; roost_id=;roost_id={signed}"),
    ] {
        let reply = exchange(
            fleet.proxy_addr,
            &request("GET", "/v1/whoami", &[("cookie", &cookie)]),
        )
        .await;
        assert_eq!(reply.status, 200, "{cookie}: {reply:?}");
        assert_eq!(key_seen(&reply), id, "{cookie}: routed by the valid id");
        assert_eq!(reply.worker(), Some(owner.as_str()), "{cookie}");
        assert_eq!(reply.header("set-cookie"), None, "{cookie}: nothing minted");
    }
}

// ---------------------------------------------------------------------------
// Connections per address
// ---------------------------------------------------------------------------

/// A connection to the proxy that got a 200 for a whoami, retried for a
/// short while: a connection the proxy has not yet seen close may still
/// hold its slot.
async fn served_connection(fleet: &TestFleet, key: &str) -> Conn {
    eventually(
        Duration::from_secs(5),
        "a connection to be served",
        || async move {
            let mut conn = Conn::try_open(fleet.proxy_addr).await.ok()?;
            conn.try_send(&whoami(key)).await.ok()?;
            let reply = conn.try_reply().await.ok()?;
            (reply.status == 200).then_some(conn)
        },
    )
    .await
}

/// Assert the proxy refuses a new connection: a 429 `too_many_connections`
/// and then the close, or the close at once.
async fn assert_connection_refused(fleet: &TestFleet, context: &str) {
    let mut conn = Conn::open(fleet.proxy_addr).await;
    let _ = conn.try_send(&whoami("one-too-many")).await;
    if let Ok(reply) = conn.try_reply().await {
        assert_refused(&reply, 429, "too_many_connections", context);
    }
    conn.closed_after(Instant::now(), Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_address_are_limited() {
    let fleet = fleet_with(1, &["max_connections_per_address: 20"]).await;
    let mut held = Vec::new();
    for i in 0..20 {
        held.push(served_connection(&fleet, &format!("held-{i}")).await);
    }
    assert_connection_refused(&fleet, "the 21st connection").await;

    // Closing five lets five new ones in, and no more.
    held.truncate(15);
    for i in 0..5 {
        held.push(served_connection(&fleet, &format!("new-{i}")).await);
    }
    assert_connection_refused(&fleet, "the 21st again").await;

    // The held ones still serve.
    for conn in &mut held {
        conn.send(&whoami("again")).await;
        assert_eq!(conn.reply().await.status, 200);
    }
}

// ---------------------------------------------------------------------------
// Early rejections reach the client
// ---------------------------------------------------------------------------

/// Send `head` and `body` 100 times on fresh connections, two ways: (a)
/// head, then body, then read (as Python's http.client does); (b) both in
/// one write. Every time the reply must be `status` with the JSON `code`.
async fn early_reply_reaches_the_client(head: Vec<u8>, body: Vec<u8>, status: u16, code: &str) {
    let fleet = fleet_with(1, &[]).await;
    let whole = [head.as_slice(), &body].concat();
    for round in 0..100 {
        let ways: [(&str, Vec<&[u8]>); 2] = [
            ("head, then body", vec![&head, &body]),
            ("one write", vec![&whole]),
        ];
        for (how, parts) in ways {
            let context = format!("round {round}, {how}");
            let reply = exchange_parts(fleet.proxy_addr, &parts)
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_refused(&reply, status, code, &context);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_413_reaches_a_client_that_sends_its_whole_body() {
    let body = vec![b'x'; 2 << 20];
    let length = body.len().to_string();
    let head = request(
        "POST",
        "/v1/whoami",
        &[(KEY_HEADER, "alice"), ("content-length", &length)],
    );
    early_reply_reaches_the_client(head, body, 413, "body_too_large").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_431_reaches_a_client_that_sends_its_whole_body() {
    let body = vec![b'x'; 64 << 10];
    let length = body.len().to_string();
    let pad = "p".repeat(20 << 10);
    let head = request(
        "POST",
        "/v1/whoami",
        &[
            (KEY_HEADER, "alice"),
            ("x-pad", &pad),
            ("content-length", &length),
        ],
    );
    early_reply_reaches_the_client(head, body, 431, "headers_too_large").await;
}
