//! What a client reaches through the proxy when the trusted hop is on: the
//! entity API and nothing else. No spelling of a path under the fleet's
//! internal prefix reaches an internal route (each gets 404 `not_found` or
//! 400 `invalid_path`, is counted, and changes no stock), worker metrics
//! are not served through the proxy, a checkout that calls another worker
//! still works, and no reply — through the proxy or straight from a worker,
//! success or any error — carries the proxy's or the internal token.
//!
//! Requests whose target bytes matter are written on a raw socket.

mod support;

use std::net::SocketAddr;

use reqwest::Method;
use serde_json::{json, Value};
use support::raw::{exchange, exchange_parts, request, with_body, Reply};
use support::{FleetConfig, Served, Source, TestFleet, KEY_COOKIE, KEY_HEADER};

/// The SKU every internal-path probe tries to reserve.
const SKU: &str = "show-1";

/// Three workers with the trusted hop and an admin token, behind a proxy
/// that routes inventory requests by their SKU, then by the user header.
async fn fleet() -> TestFleet {
    let config = FleetConfig::new(3)
        .trusted_hop()
        .admin_token()
        .sources(vec![
            Source::inventory(),
            Source::Header(KEY_HEADER.into()),
            Source::Cookie(KEY_COOKIE.into()),
        ])
        .yaml("limits: {rate: {per_s: 0}}\n");
    TestFleet::start(config).await
}

/// Set a SKU's stock through the proxy with the admin token.
async fn set_stock(fleet: &TestFleet, sku: &str, stock: u64) {
    let bearer = fleet.admin_bearer();
    let served = fleet
        .send(
            Method::PUT,
            &format!("/v1/inventory/{sku}"),
            &[("authorization", &bearer)],
            Some(&json!({ "stock": stock })),
        )
        .await;
    assert_eq!(served.status, 200, "admin PUT stock: {}", served.body);
}

/// `(stock, sold)` of a SKU, read through the proxy.
async fn stock_and_sold(fleet: &TestFleet, sku: &str) -> (Value, Value) {
    let served = fleet.get(&format!("/v1/inventory/{sku}"), &[]).await;
    assert_eq!(served.status, 200, "GET inventory: {}", served.body);
    let body = served.json();
    (body["stock"].clone(), body["sold"].clone())
}

// ---------------------------------------------------------------------------
// Internal paths
// ---------------------------------------------------------------------------

/// Who must refuse a spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuser {
    /// It normalises under the internal prefix, or has no single meaning:
    /// the proxy answers 404 `not_found` or 400 `invalid_path` itself.
    Proxy,
    /// It is another path (or no valid request at all): the proxy's
    /// answers above, a worker's 404 `not_found`, or Pingora's parser's
    /// bare 400 are all fine — never an internal route.
    Anyone,
}

/// Request targets that spell (or nearly spell) the reserve call
/// `/internal/v1/inventory/show-1`.
const SPELLINGS: &[(&str, Refuser)] = &[
    ("/internal/v1/inventory/show-1", Refuser::Proxy),
    ("//internal/v1/inventory/show-1", Refuser::Proxy),
    ("/./internal/v1/inventory/show-1", Refuser::Proxy),
    ("/v1/../internal/v1/inventory/show-1", Refuser::Proxy),
    ("/%69nternal/v1/inventory/show-1", Refuser::Proxy),
    (
        "/%69%6E%74%65%72%6E%61%6C/v1/inventory/show-1",
        Refuser::Proxy,
    ),
    ("/internal/%76%31/inventory/show-1", Refuser::Proxy),
    ("/%2569nternal/v1/inventory/show-1", Refuser::Anyone),
    ("/INTERNAL/v1/inventory/show-1", Refuser::Anyone),
    ("/%49NTERNAL/v1/inventory/show-1", Refuser::Anyone),
    ("/internal//v1/inventory/show-1", Refuser::Proxy),
    ("/internal/./v1/inventory/show-1", Refuser::Proxy),
    ("/internal/v1/inventory/show-1/", Refuser::Proxy),
    ("/internal/v1/inventory/show-1?x=1", Refuser::Proxy),
    ("/internal", Refuser::Anyone),
    ("/internal/", Refuser::Proxy),
    ("/v1/%2e%2e/internal/v1/inventory/show-1", Refuser::Proxy),
    ("/v1/%2E%2E/internal/v1/inventory/show-1", Refuser::Proxy),
    ("/%2e/internal/v1/inventory/show-1", Refuser::Proxy),
    ("/.%2e/internal/v1/inventory/show-1", Refuser::Proxy),
    (
        "/v1/inventory/show-1/../../../internal/v1/inventory/show-1",
        Refuser::Proxy,
    ),
    ("/internal%2Fv1/inventory/show-1", Refuser::Proxy),
    ("/internal%2fv1/inventory/show-1", Refuser::Proxy),
    ("/internal%2f..%2fv1/inventory/show-1", Refuser::Proxy),
    ("/%2Finternal/v1/inventory/show-1", Refuser::Proxy),
    ("/%5Cinternal/v1/inventory/show-1", Refuser::Proxy),
    ("/internal%5Cv1%5Cinventory%5Cshow-1", Refuser::Proxy),
    ("/internal%09/v1/inventory/show-1", Refuser::Proxy),
    ("/internal/v1/inventory/show-1%00", Refuser::Proxy),
    ("/internal/v1;x=1/inventory/show-1", Refuser::Proxy),
    ("/internal/v1/inventory/show-1;x=1", Refuser::Proxy),
    ("/internal;x=1/v1/inventory/show-1", Refuser::Anyone),
    ("/\\internal/v1/inventory/show-1", Refuser::Anyone),
    ("/internal\\v1\\inventory\\show-1", Refuser::Anyone),
    ("/internal\t/v1/inventory/show-1", Refuser::Anyone),
    ("http://proxy/internal/v1/inventory/show-1", Refuser::Proxy),
    ("http://proxy//internal/v1/inventory/show-1", Refuser::Proxy),
    (
        "http://proxy/v1/%2e%2e/internal/v1/inventory/show-1",
        Refuser::Proxy,
    ),
];

/// A reserve call for one ticket of `SKU` to `target`, with a user key and
/// the internal token a client might have stolen (the proxy must strip it).
fn reserve(target: &str, probe: usize, internal_token: &str) -> Vec<u8> {
    let body = json!({"op": "reserve", "reservation": format!("probe-{probe}"), "qty": 1});
    let idempotency = format!("probe-{probe}/reserve");
    let headers = [
        (KEY_HEADER, "mallory"),
        ("x-roost-internal-token", internal_token),
        ("idempotency-key", idempotency.as_str()),
        ("content-type", "application/json"),
    ];
    with_body("POST", target, &headers, body.to_string().as_bytes())
}

/// Check `reply` refuses the spelling as `refuser` allows; the refusal it
/// counts as (`internal_path` or `invalid_path`), if the proxy's.
fn refusal(reply: &Reply, refuser: Refuser, context: &str) -> Option<&'static str> {
    let code = reply.error_code();
    let by_proxy = reply.worker().is_none();
    match (reply.status, code.as_deref()) {
        (404, Some("not_found")) if by_proxy => Some("internal_path"),
        (400, Some("invalid_path")) if by_proxy => Some("invalid_path"),
        (404, Some("not_found")) if refuser == Refuser::Anyone => None,
        (400, None) if by_proxy && reply.body.is_empty() && refuser == Refuser::Anyone => None,
        _ => panic!("{context}: expected a 404 not_found or 400 invalid_path, got {reply:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_spelling_of_an_internal_path_reaches_an_internal_route() {
    let fleet = fleet().await;
    let internal_token = fleet.hop().internal_token.clone();
    set_stock(&fleet, SKU, 5).await;
    let internal_before = fleet.limit_rejections("internal_path").await;
    let invalid_before = fleet.limit_rejections("invalid_path").await;

    let (mut internal, mut invalid) = (0.0, 0.0);
    for (probe, (target, refuser)) in SPELLINGS.iter().enumerate() {
        let reply = exchange(fleet.proxy_addr, &reserve(target, probe, &internal_token)).await;
        match refusal(&reply, *refuser, &format!("POST {target:?}")) {
            Some("internal_path") => internal += 1.0,
            Some(_) => invalid += 1.0,
            None => {}
        }
    }

    assert_eq!(
        stock_and_sold(&fleet, SKU).await,
        (json!(5), json!(0)),
        "no probe reserved a ticket"
    );
    assert_eq!(
        fleet.worker_requests("internal").await,
        0,
        "no worker saw a request for an internal route"
    );
    assert!(internal >= 1.0 && invalid >= 1.0, "{internal} {invalid}");
    assert_eq!(
        fleet.limit_rejections("internal_path").await - internal_before,
        internal,
        "every internal path the proxy refused is counted"
    );
    assert_eq!(
        fleet.limit_rejections("invalid_path").await - invalid_before,
        invalid,
        "every invalid path the proxy refused is counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_metrics_are_not_served_through_the_proxy() {
    let fleet = fleet().await;
    for target in ["/metrics", "//metrics", "/./metrics", "/%6detrics"] {
        let reply = exchange(
            fleet.proxy_addr,
            &request("GET", target, &[(KEY_HEADER, "alice")]),
        )
        .await;
        assert_eq!(
            reply.status, 404,
            "GET {target} through the proxy: {reply:?}"
        );
        assert!(
            !reply.body.contains("roost_worker_"),
            "GET {target}: worker metrics through the proxy: {}",
            reply.body
        );
    }
    // On a worker's public port /metrics is not found; on its admin
    // listener it is there.
    let hop = fleet.hop();
    for id in fleet.worker_ids() {
        let public = exchange(
            fleet.worker_addr(&id),
            &request("GET", "/metrics", &hop.as_proxy("alice")),
        )
        .await;
        assert_eq!(public.status, 404, "{id} public /metrics: {public:?}");
        assert!(!public.body.contains("roost_worker_"), "{id}: {public:?}");
        let admin = fleet.worker_metrics(&id).await;
        assert!(admin.contains("roost_worker_"), "{id} admin /metrics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_reserving_stock_on_another_worker_works_through_the_proxy() {
    let fleet = fleet().await;
    let user = "buyer-1";
    let user_worker = fleet.route(user).await.owner.expect("an owner");
    let mut sku = None;
    for i in 0..100 {
        let candidate = format!("tee-{i}");
        let owner = fleet.route(&format!("inventory:{candidate}")).await.owner;
        if owner.as_deref() != Some(user_worker.as_str()) {
            sku = Some(candidate);
            break;
        }
    }
    let sku = sku.expect("some SKU lives on another worker than the user");
    set_stock(&fleet, &sku, 3).await;

    let keyed = [(KEY_HEADER, user)];
    let add = fleet
        .send(
            Method::POST,
            "/v1/cart/items",
            &keyed,
            Some(&json!({"sku": sku, "qty": 2})),
        )
        .await;
    assert_eq!(add.status, 200, "add to cart: {}", add.body);
    let checkout = checkout(&fleet, user).await;
    assert_eq!(checkout.status, 201, "checkout: {}", checkout.body);
    assert_eq!(checkout.worker.as_deref(), Some(user_worker.as_str()));
    assert_eq!(
        stock_and_sold(&fleet, &sku).await,
        (json!(1), json!(2)),
        "the checkout reserved two of three"
    );
    let calls = support::metric_value(
        &fleet.worker_metrics(&user_worker).await,
        "roost_worker_call_attempts_total",
        &[("result", "decided")],
    );
    assert!(
        calls >= Some(1.0),
        "the reserve went to the inventory's worker over HTTP: {calls:?}"
    );
}

/// `POST /v1/cart/checkout`, retried with the same `Idempotency-Key` while
/// the calls are undecided (503), a bounded number of times.
async fn checkout(fleet: &TestFleet, user: &str) -> Served {
    let headers = [(KEY_HEADER, user), ("idempotency-key", "checkout-1")];
    for _ in 0..20 {
        let served = fleet
            .send(Method::POST, "/v1/cart/checkout", &headers, None)
            .await;
        if served.status != 503 {
            return served;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the checkout was still 503 after 20 attempts");
}

// ---------------------------------------------------------------------------
// Tokens never leave
// ---------------------------------------------------------------------------

/// Assert no secret appears in `reply`'s header names, values or body.
fn assert_no_secret(reply: &Reply, secrets: &[&str], context: &str) {
    for secret in secrets {
        let in_headers = reply
            .headers
            .iter()
            .any(|(name, value)| name.contains(secret) || value.contains(secret));
        assert!(!in_headers, "{context}: a token in a header: {reply:?}");
        assert!(
            !reply.body.contains(secret),
            "{context}: a token in the body: {reply:?}"
        );
    }
}

/// `GET /v1/whoami` with `headers` and 120 more fields.
fn with_120_fields(headers: &[(&str, &str)]) -> Vec<u8> {
    let names: Vec<String> = (0..120).map(|i| format!("x-field-{i}")).collect();
    let mut all = headers.to_vec();
    all.extend(names.iter().map(|name| (name.as_str(), "1")));
    request("GET", "/v1/whoami", &all)
}

/// A `PUT /v1/session` head declaring a 2 MiB body, and that body.
fn large_put(headers: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let body = vec![b'x'; 2 << 20];
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("content-length", &length));
    vec![request("PUT", "/v1/session", &all), body]
}

#[tokio::test(flavor = "multi_thread")]
async fn no_reply_through_the_proxy_or_from_a_worker_carries_a_token() {
    let fleet = fleet().await;
    let hop = fleet.hop().clone();
    let bearer = fleet.admin_bearer();
    let secrets = [
        hop.proxy_token.as_str(),
        hop.internal_token.as_str(),
        &bearer["Bearer ".len()..],
    ];
    let (proxy, worker) = (fleet.proxy_addr, fleet.worker_addr("w1"));
    // As a client sends it, and as the proxy forwards it.
    let keyed = [(KEY_HEADER, "alice")];
    let forwarded = hop.as_proxy("alice");
    let hop_only = [("x-roost-hop-token", hop.proxy_token.as_str())];
    let wrong_hop = [
        ("x-roost-key", "alice"),
        ("x-roost-hop-token", "wrong-wrong-wrong-wrong"),
    ];
    let reserve = json!({"op": "reserve", "reservation": "r", "qty": 1}).to_string();
    let internal_call = [forwarded.as_slice(), &[("idempotency-key", "r/reserve")]].concat();
    let stock = b"{\"stock\":1}".as_slice();
    let wrong_admin = [("authorization", "Bearer not-the-admin-token-0000")];

    // (what, where, the request in writes, the status expected)
    let cases: Vec<(&str, SocketAddr, Vec<Vec<u8>>, u16)> = vec![
        (
            "whoami",
            proxy,
            vec![request("GET", "/v1/whoami", &keyed)],
            200,
        ),
        (
            "whoami",
            worker,
            vec![request("GET", "/v1/whoami", &forwarded)],
            200,
        ),
        (
            "keyless",
            proxy,
            vec![request("GET", "/v1/whoami", &[])],
            401,
        ),
        (
            "no admin token",
            proxy,
            vec![with_body("PUT", "/v1/inventory/x", &[], stock)],
            401,
        ),
        (
            "no x-roost-key",
            worker,
            vec![request("GET", "/v1/session", &hop_only)],
            401,
        ),
        (
            "a wrong admin token",
            proxy,
            vec![with_body("PUT", "/v1/inventory/x", &wrong_admin, stock)],
            403,
        ),
        (
            "no hop token",
            worker,
            vec![request("GET", "/v1/whoami", &[("x-roost-key", "alice")])],
            403,
        ),
        (
            "a wrong hop token",
            worker,
            vec![request("GET", "/v1/whoami", &wrong_hop)],
            403,
        ),
        (
            "an internal call with the proxy's token",
            worker,
            vec![with_body(
                "POST",
                "/internal/v1/inventory/x",
                &internal_call,
                reserve.as_bytes(),
            )],
            403,
        ),
        (
            "an unknown route",
            proxy,
            vec![request("GET", "/v1/nope", &keyed)],
            404,
        ),
        (
            "an unknown route",
            worker,
            vec![request("GET", "/v1/nope", &forwarded)],
            404,
        ),
        (
            "an internal path",
            proxy,
            vec![with_body(
                "POST",
                "/internal/v1/inventory/x",
                &keyed,
                reserve.as_bytes(),
            )],
            404,
        ),
        (
            "a wrong method",
            proxy,
            vec![request("GET", "/v1/cart/checkout", &keyed)],
            405,
        ),
        (
            "a wrong method",
            worker,
            vec![request("GET", "/v1/cart/checkout", &forwarded)],
            405,
        ),
        ("a 2 MiB body", proxy, large_put(&keyed), 413),
        ("a 2 MiB body", worker, large_put(&forwarded), 413),
        (
            "120 header fields",
            proxy,
            vec![with_120_fields(&keyed)],
            431,
        ),
        (
            "120 header fields",
            worker,
            vec![with_120_fields(&forwarded)],
            431,
        ),
        (
            "an invalid path",
            proxy,
            vec![request("GET", "/internal%2Fv1/inventory/x", &keyed)],
            400,
        ),
        (
            "an invalid key",
            proxy,
            vec![request("GET", "/v1/inventory/show%201", &keyed)],
            400,
        ),
        (
            "invalid JSON",
            worker,
            vec![with_body("PUT", "/v1/session", &forwarded, b"{not json")],
            400,
        ),
    ];
    for (what, addr, parts, status) in &cases {
        let place = if *addr == proxy {
            "through the proxy"
        } else {
            "straight to w1"
        };
        let context = format!("{what} {place}");
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let reply = exchange_parts(*addr, &parts)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(reply.status, *status, "{context}: {reply:?}");
        assert_no_secret(&reply, &secrets, &context);
    }
    let log = fleet.proxy_log();
    for secret in secrets {
        assert!(!log.contains(secret), "a token in the proxy's log");
    }
}
