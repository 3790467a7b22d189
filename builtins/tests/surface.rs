//! What a client sees on bad input, each against SQLite and Postgres: the
//! status, the JSON `{"error", "message"}` body, the headers, and that
//! nothing changed (nor reached the store); paths in any but their normal
//! form among them. Also `Idempotency-Key` repeats and reuses, the state
//! size cap, a 413 that reaches a client still sending its body, and what
//! each listener serves.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::{encode_envelope, unique_key, Api, Reply, Store, StoreKind, Worker};

/// Small enough to exceed with a few hundred bytes.
const MAX_BODY: usize = 512;

fn config() -> String {
    format!(
        "max_body_bytes: {MAX_BODY}\nkinds: {{cart: {{settings: {{limits: {{tee: 1}}}}}}}}\nflush_interval_ms: 50\n"
    )
}

/// An error about a request that never reached an entity: no ETag, no
/// epoch, but still `x-roost-worker`.
fn assert_plain_error(reply: &Reply, status: u16, code: &str, context: &str) {
    reply.expect_error(status, code, context);
    assert_eq!(reply.worker(), Some("w1"), "{context}: x-roost-worker");
    assert_eq!(reply.header("etag"), None, "{context}: no ETag");
    assert_eq!(reply.header("x-roost-epoch"), None, "{context}: no epoch");
}

/// An error an entity answered: it carries the entity's version and epoch.
fn assert_entity_error(reply: &Reply, status: u16, code: &str, context: &str) {
    reply.expect_error(status, code, context);
    assert_eq!(reply.worker(), Some("w1"), "{context}: x-roost-worker");
    assert!(reply.version().is_some(), "{context}: ETag");
    assert!(reply.epoch().is_some(), "{context}: x-roost-epoch");
}

async fn cart_version(api: &Api, key: &str) -> (u64, Value) {
    let reply = api.get_cart(key).send().await;
    reply.expect_status(200, "GET /v1/cart");
    (reply.expect_version(), reply.json())
}

/// Send `parts` (one `write_all` each) on a fresh connection to `addr` and
/// read until the worker closes it or a whole response with
/// `content-length` arrived. A failed write or read is an `Err`: the worker
/// may answer before it has read all of a request, but it reads (and
/// discards) the rest before it closes, so the client can finish sending
/// (as a proxy forwarding the body must) and then read the reply.
fn raw_exchange(addr: SocketAddr, parts: &[&[u8]]) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    for part in parts {
        stream
            .write_all(part)
            .map_err(|e| format!("write the request: {e}"))?;
    }
    let mut response = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) => {
                let so_far = String::from_utf8_lossy(&response);
                return Err(format!("read the raw response: {e} (so far {so_far:?})"));
            }
        }
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            });
            if length.is_some_and(|length| body.len() >= length) {
                break;
            }
        }
    }
    String::from_utf8(response).map_err(|e| format!("the response is not UTF-8: {e}"))
}

async fn bad_input(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("bad");

    // --- 401: no key ---------------------------------------------------------
    let no_key = [
        (Method::GET, "/v1/cart"),
        (Method::DELETE, "/v1/cart"),
        (Method::POST, "/v1/cart/checkout"),
        (Method::GET, "/v1/session"),
        (Method::DELETE, "/v1/cart/items/mug"),
    ];
    for (method, path) in no_key {
        let reply = api.call(method.clone(), path).send().await;
        assert_plain_error(
            &reply,
            401,
            "missing_key",
            &format!("{method} {path} without a key"),
        );
    }
    let reply = api
        .call(Method::POST, "/v1/cart/items")
        .json(&json!({"sku": "mug", "qty": 1}))
        .send()
        .await;
    assert_plain_error(&reply, 401, "missing_key", "POST items without a key");
    let reply = api.get("/v1/cart").header("x-roost-key", "").send().await;
    assert_plain_error(&reply, 401, "missing_key", "an empty key");

    // A baseline the bad requests below must leave as it is.
    api.add_item(&key, "mug", 2)
        .send()
        .await
        .expect_status(200, "baseline add");
    let (version, cart) = cart_version(&api, &key).await;
    assert_eq!(version, 1);

    // --- 400: malformed JSON, wrong shapes, qty 0, names -------------------
    let post_items = |body: &str| {
        api.call(Method::POST, "/v1/cart/items")
            .key(&key)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    for body in [
        "{",
        "{\"sku\": \"mug\", \"qty\": 1",
        "not json",
        "",
        "{\"sku\": 'mug'}",
    ] {
        let reply = post_items(body).send().await;
        assert_plain_error(&reply, 400, "invalid_json", &format!("body {body:?}"));
    }
    let wrong_shapes = [
        json!({"sku": 1, "qty": 1}),
        json!({"sku": "mug"}),
        json!({"qty": 1}),
        json!({"sku": "mug", "qty": -1}),
        json!({"sku": "mug", "qty": 1.5}),
        json!({"sku": "mug", "qty": "1"}),
        json!({"sku": "mug", "qty": 1, "price": 3}),
        json!(["mug"]),
        json!(null),
        json!("mug"),
    ];
    for body in wrong_shapes {
        let reply = post_items(&body.to_string()).send().await;
        assert_plain_error(&reply, 400, "invalid_request", &format!("body {body}"));
    }
    let reply = api.add_item(&key, "mug", 0).send().await;
    assert_plain_error(&reply, 400, "invalid_qty", "qty 0");
    let reply = api.add_item(&key, "", 1).send().await;
    assert_plain_error(&reply, 400, "invalid_name", "an empty sku");
    let reply = api.add_item(&key, &"x".repeat(257), 1).send().await;
    assert_plain_error(&reply, 400, "invalid_name", "a 257-byte sku");
    let reply = api.add_item(&key, "tab\there", 1).send().await;
    assert_plain_error(
        &reply,
        400,
        "invalid_name",
        "a sku with a control character",
    );
    let reply = api.remove_item(&key, "%FF").send().await;
    assert_plain_error(
        &reply,
        400,
        "invalid_path",
        "a path segment that is not UTF-8",
    );
    let reply = api
        .put_session(&key, &json!({"a": 1}))
        .header("content-type", "application/json")
        .body("{\"a\": ")
        .send()
        .await;
    assert_plain_error(&reply, 400, "invalid_json", "a truncated session document");
    let reply = api
        .call(Method::POST, "/v1/quota/uploads/acquire")
        .key(&key)
        .json(&json!({"limit": 0, "ttl_ms": 1000}))
        .send()
        .await;
    assert_plain_error(&reply, 400, "invalid_request", "quota limit 0");

    // --- 400: bad roost-durability ------------------------------------------
    for value in ["eventually", "DURABLE", ""] {
        let reply = api.add_item(&key, "mug", 1).durability(value).send().await;
        assert_plain_error(
            &reply,
            400,
            "invalid_durability",
            &format!("roost-durability: {value:?}"),
        );
    }
    let reply = api
        .add_item(&key, "mug", 1)
        .idempotency_key(&"k".repeat(257))
        .send()
        .await;
    assert_plain_error(&reply, 400, "invalid_name", "a 257-byte Idempotency-Key");

    // --- 413: too large, declared or chunked -------------------------------
    let large = json!({"sku": "x".repeat(MAX_BODY), "qty": 1}).to_string();
    let reply = post_items(&large).send().await;
    assert_plain_error(&reply, 413, "body_too_large", "a body over max_body_bytes");
    let reply = api
        .put_session(&key, &json!({"blob": "y".repeat(4 * MAX_BODY)}))
        .send()
        .await;
    assert_plain_error(
        &reply,
        413,
        "body_too_large",
        "a session over max_body_bytes",
    );
    // Chunked, so no content-length to judge by: the limit holds while
    // reading.
    let chunk = "z".repeat(MAX_BODY);
    let chunked = format!(
        "POST /v1/cart/items HTTP/1.1\r\nhost: w\r\nx-roost-key: {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let response =
        raw_exchange(worker.addr, &[chunked.as_bytes()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "a chunked body over the limit: {response}"
    );
    assert!(response.contains("\"body_too_large\""), "{response}");
    // A body of exactly max_body_bytes is fine.
    let exact_key = unique_key("exact");
    let mut exact = json!({"sku": "mug", "qty": 1}).to_string();
    exact.push_str(&" ".repeat(MAX_BODY - exact.len()));
    let reply = api
        .call(Method::POST, "/v1/cart/items")
        .key(&exact_key)
        .header("content-type", "application/json")
        .body(exact)
        .send()
        .await;
    reply.expect_status(200, "a body of exactly max_body_bytes");
    // A body in several chunks (one frame each) is read whole.
    let chunks = [r#"{"sku": "#, r#""cup", "#, r#""qty": 2}"#];
    let mut request = format!(
        "POST /v1/cart/items HTTP/1.1\r\nhost: w\r\nx-roost-key: {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        unique_key("chunks")
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let response =
        raw_exchange(worker.addr, &[request.as_bytes()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains(r#"{"sku":"cup","qty":2}"#),
        "a body in three chunks: {response}"
    );

    // --- 400: a path not in its normal form ----------------------------------
    // Sent raw: an HTTP client would resolve the dot segments itself.
    let item = json!({"sku": "mug", "qty": 1}).to_string();
    let spellings = [
        "//v1/cart/items",
        "/v1//cart/items",
        "/v1/./cart/items",
        "/v1/x/../cart/items",
        "/%761/cart/items",
        "/v1/cart/%69tems",
        "/v1/cart/items/",
        "/v1/%2e%2e/internal/v1/inventory/x",
        "/v1/cart%2Fitems",
        "/v1/cart/items%",
        "/v1/../../cart/items",
    ];
    for path in spellings {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: w\r\nx-roost-key: {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{item}",
            item.len()
        );
        let response = raw_exchange(worker.addr, &[request.as_bytes()])
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        // `/v1/cart/items/` is normal: no route takes it.
        let expected = if path.ends_with("items/") {
            "HTTP/1.1 404"
        } else {
            "HTTP/1.1 400"
        };
        assert!(response.starts_with(expected), "POST {path}: {response}");
        if expected.ends_with("400") {
            assert!(
                response.contains("\"invalid_path\""),
                "POST {path}: {response}"
            );
        }
    }
    let (after, same_cart) = cart_version(&api, &key).await;
    assert_eq!(
        (after, &same_cart),
        (version, &cart),
        "no other spelling of a path changed the cart"
    );

    // --- 404: unknown routes ---------------------------------------------------
    for path in [
        "/",
        "/v1",
        "/v1/carts",
        "/v1/cart/items/",
        "/v2/cart",
        "/metrics",
    ] {
        let reply = api.get(path).key(&key).send().await;
        assert_plain_error(&reply, 404, "not_found", &format!("GET {path}"));
        assert_eq!(reply.header("allow"), None, "no Allow on a 404");
    }

    // --- 405: wrong method, with Allow ------------------------------------
    let wrong_methods = [
        (Method::PUT, "/v1/cart", "GET, DELETE"),
        (Method::POST, "/v1/cart", "GET, DELETE"),
        (Method::GET, "/v1/cart/items", "POST"),
        (Method::GET, "/v1/cart/checkout", "POST"),
        (Method::PUT, "/v1/cart/items/mug", "DELETE"),
        (Method::POST, "/v1/session", "GET, PUT, PATCH, DELETE"),
        (Method::GET, "/v1/quota/uploads/acquire", "POST"),
        (Method::POST, "/healthz", "GET"),
        (Method::DELETE, "/readyz", "GET"),
    ];
    for (method, path, allow) in wrong_methods {
        let reply = api.call(method.clone(), path).key(&key).send().await;
        let context = format!("{method} {path}");
        assert_plain_error(&reply, 405, "method_not_allowed", &context);
        assert_eq!(reply.header("allow"), Some(allow), "{context}: Allow");
    }

    // --- 409: limit and empty checkout; 404 not in cart -------------------
    let reply = api.add_item(&key, "tee", 2).send().await;
    assert_entity_error(&reply, 409, "limit_exceeded", "2 tee over a limit of 1");
    assert_eq!(reply.expect_version(), version, "a refusal changes nothing");
    let reply = api.remove_item(&key, "not-there").send().await;
    assert_entity_error(&reply, 404, "not_in_cart", "removing an absent SKU");
    let (after, same_cart) = cart_version(&api, &key).await;
    assert_eq!(
        (after, &same_cart),
        (version, &cart),
        "no bad request changed the cart"
    );

    let empty = unique_key("empty");
    let reply = api.checkout(&empty).send().await;
    assert_entity_error(&reply, 409, "empty_cart", "checkout of an empty cart");
    assert_eq!(reply.expect_version(), 0);
    api.add_item(&empty, "tee", 1)
        .send()
        .await
        .expect_status(200, "1 tee");
    api.checkout(&empty)
        .send()
        .await
        .expect_status(201, "checkout");
    let reply = api.add_item(&empty, "tee", 1).send().await;
    assert_entity_error(&reply, 409, "limit_exceeded", "a tee after ordering one");
    let reply = api.checkout(&empty).send().await;
    assert_entity_error(&reply, 409, "empty_cart", "checkout right after a checkout");

    // --- 412: If-Match -------------------------------------------------------
    let session = unique_key("session");
    let reply = api
        .put_session(&session, &json!({"a": 1}))
        .if_match("*")
        .send()
        .await;
    assert_entity_error(
        &reply,
        412,
        "precondition_failed",
        "If-Match * with no session",
    );
    let put = api.put_session(&session, &json!({"a": 1})).send().await;
    put.expect_status(200, "PUT session");
    let v = put.expect_version();
    for stale in [
        format!("\"{}\"", v + 1),
        "\"0\"".into(),
        "\"abc\"".into(),
        "W/\"x\"".into(),
    ] {
        let reply = api
            .patch_session(&session, &json!({"b": 2}))
            .if_match(&stale)
            .send()
            .await;
        assert_entity_error(
            &reply,
            412,
            "precondition_failed",
            &format!("If-Match {stale}"),
        );
        assert_eq!(reply.expect_version(), v);
    }
    let reply = api
        .call(Method::DELETE, "/v1/session")
        .key(&session)
        .if_match("\"99\"")
        .send()
        .await;
    assert_entity_error(
        &reply,
        412,
        "precondition_failed",
        "DELETE with a stale If-Match",
    );
    // A matching one (weak or strong) applies.
    let reply = api
        .patch_session(&session, &json!({"b": 2}))
        .if_match(&format!("W/\"{v}\""))
        .send()
        .await;
    reply.expect_status(200, "PATCH with a matching weak If-Match");
    assert_eq!(reply.json(), json!({"a": 1, "b": 2}));
    assert_eq!(reply.expect_version(), v + 1);

    // --- 429: quota --------------------------------------------------------
    let acquire = |limit: u64| {
        api.call(Method::POST, "/v1/quota/uploads/acquire")
            .key(&key)
            .json(&json!({"limit": limit, "ttl_ms": 60_000}))
    };
    for live in 1..=2 {
        let reply = acquire(2).send().await;
        reply.expect_status(200, "acquire within the limit");
        assert_eq!(reply.json()["live"], live);
    }
    let reply = acquire(2).send().await;
    reply.expect_status(429, "a third token of 2");
    let body = reply.json();
    assert_eq!(body["error"], "quota_exhausted", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["retry_in_ms"].as_u64().is_some_and(|ms| ms <= 60_000),
        "429 says when to retry: {body}"
    );
    assert!(reply.version().is_some() && reply.epoch().is_some());
    let reply = api
        .call(Method::POST, "/v1/quota/uploads/release")
        .key(&key)
        .json(&json!({"token": "no-such-token"}))
        .send()
        .await;
    assert_entity_error(&reply, 404, "unknown_token", "releasing an unknown token");

    // --- Bad input never reached the store -------------------------------
    let only_bad = unique_key("only-bad");
    let reply = api.add_item(&only_bad, "mug", 0).send().await;
    assert_plain_error(&reply, 400, "invalid_qty", "qty 0 for a new user");
    let reply = api
        .add_item(&only_bad, "mug", 1)
        .durability("maybe")
        .send()
        .await;
    assert_plain_error(
        &reply,
        400,
        "invalid_durability",
        "bad durability for a new user",
    );
    assert_eq!(
        store.peek(&format!("cart/{only_bad}")).await,
        None,
        "a rejected request claims nothing"
    );
    // And the good ones did.
    store.wait_version(&format!("cart/{key}"), 1).await;
}

both_stores!(bad_input);

// ---------------------------------------------------------------------------
// Idempotency-Key
// ---------------------------------------------------------------------------

async fn idempotency_key_repeat(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("idem");

    let first = api
        .add_item(&key, "mug", 2)
        .idempotency_key("add-mug-1")
        .send()
        .await;
    first.expect_status(200, "first add");
    assert_eq!(first.expect_version(), 1);
    for _ in 0..2 {
        // The same request again: the first reply.
        let again = api
            .add_item(&key, "mug", 2)
            .idempotency_key("add-mug-1")
            .send()
            .await;
        assert_eq!(
            (again.status, again.json()),
            (first.status, first.json()),
            "a repeat gets the first reply"
        );
        assert_eq!(again.expect_version(), 1, "and changes nothing");
    }
    let read = api.get_cart(&key).send().await;
    assert_eq!(read.expect_version(), 1);
    assert_eq!(read.json(), first.json(), "only the first add happened");

    // Another key is another request; a checkout repeat is one order.
    api.add_item(&key, "pen", 1)
        .idempotency_key("add-pen-1")
        .send()
        .await
        .expect_status(200, "second add");
    let order = api
        .checkout(&key)
        .idempotency_key("checkout-1")
        .durability("durable")
        .send()
        .await;
    order.expect_status(201, "checkout");
    let again = api
        .checkout(&key)
        .idempotency_key("checkout-1")
        .send()
        .await;
    assert_eq!((again.status, again.json()), (order.status, order.json()));
    assert_eq!(again.expect_version(), order.expect_version());
    let read = api.get_cart(&key).send().await;
    let orders = read.json()["orders"].as_array().expect("orders").len();
    assert_eq!(orders, 1, "one order, however often checkout-1 is sent");

    // The remembered replies are stored with the entity.
    let row = store
        .wait_version(
            &format!("cart/{key}"),
            i64::try_from(order.expect_version()).expect("fits"),
        )
        .await;
    let replies = row.replies();
    let remembered: Vec<&str> = replies
        .as_array()
        .expect("replies are an array")
        .iter()
        .filter_map(|entry| entry["key"].as_str())
        .collect();
    assert_eq!(remembered, ["add-mug-1", "add-pen-1", "checkout-1"]);
}

both_stores!(idempotency_key_repeat);

/// A key belongs to the request it was first sent with: the same request
/// again replays its reply (applied once); another route or another body
/// with the key gets 422 and changes nothing; a read ignores the key.
async fn a_key_belongs_to_its_first_request(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("idem-scope");
    let first = api
        .add_item(&key, "mug", 2)
        .idempotency_key("k1")
        .send()
        .await;
    first.expect_status(200, "the first add");
    let others = [
        ("DELETE /v1/cart", api.clear_cart(&key)),
        ("a checkout", api.checkout(&key)),
        ("DELETE /v1/cart/items/mug", api.remove_item(&key, "mug")),
        ("another qty", api.add_item(&key, "mug", 3)),
        ("another sku", api.add_item(&key, "pen", 2)),
    ];
    for (what, call) in others {
        let refused = call.idempotency_key("k1").send().await;
        assert_entity_error(&refused, 422, "idempotency_key_reused", what);
        assert_eq!(refused.expect_version(), 1, "{what}: at the cart's version");
    }
    let read = api.get_cart(&key).idempotency_key("k1").send().await;
    read.expect_status(200, "a GET with the key");
    let again = api
        .add_item(&key, "mug", 2)
        .idempotency_key("k1")
        .send()
        .await;
    assert_eq!(
        (again.status, again.json(), again.expect_version()),
        (200, first.json(), 1),
        "the first request again: its reply"
    );
    assert_eq!(
        cart_version(&api, &key).await,
        (1, first.json()),
        "applied once, and nothing else was"
    );
    let row = store.wait_version(&format!("cart/{key}"), 1).await;
    let replies = row.replies();
    let fingerprint = replies[0]["request"].as_str().unwrap_or_default();
    assert_eq!(
        fingerprint.len(),
        16,
        "the request's fingerprint is stored with its reply: {replies}"
    );
}

both_stores!(a_key_belongs_to_its_first_request);

/// A reply remembered before fingerprints were stored has none: it replays
/// to any request with its key, as it did.
async fn keys_stored_without_a_fingerprint_still_replay(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("idem-old");
    let document = json!({"theme": "dark"});
    let replies =
        json!([{"key": "put-old", "reply": {"status": 200, "body": document}, "version": 3}]);
    let stored = encode_envelope(&replies, &document);
    store
        .put_row(&format!("session/{key}"), 1, "gone", 3, &stored)
        .await;
    let replay = api
        .put_session(&key, &json!({"theme": "light"}))
        .idempotency_key("put-old")
        .send()
        .await;
    replay.expect_status(200, "a PUT with the old key");
    assert_eq!(
        (replay.json(), replay.expect_version()),
        (document.clone(), 3)
    );
    let read = api.get_session(&key).send().await;
    assert_eq!(
        (read.json(), read.expect_version()),
        (document, 3),
        "nothing ran"
    );
}

both_stores!(keys_stored_without_a_fingerprint_still_replay);

// ---------------------------------------------------------------------------
// max_state_bytes
// ---------------------------------------------------------------------------

/// The state cap of [`a_change_over_the_state_cap_is_refused`].
const MAX_STATE: usize = 256;

/// A change that would make an entity's state larger than
/// `max_state_bytes` gets 413 and is not applied: a PUT over the cap on an
/// empty session leaves it empty, in memory and in the store.
async fn a_change_over_the_state_cap_is_refused(store: Store) {
    let config = format!("{}max_state_bytes: {MAX_STATE}\n", config());
    let worker = Worker::start("w1", &store, Some(&config)).await;
    let api = worker.api();
    let key = unique_key("cap");
    let refused = api
        .put_session(&key, &json!({"notes": "x".repeat(MAX_STATE)}))
        .idempotency_key("big-1")
        .send()
        .await;
    assert_entity_error(&refused, 413, "state_too_large", "a PUT over the cap");
    assert_eq!(refused.expect_version(), 0);
    api.get_session(&key).send().await.expect_error(
        404,
        "not_found",
        "the session after the refused PUT",
    );
    let fits = json!({"notes": "x".repeat(MAX_STATE / 2)});
    let taken = api.put_session(&key, &fits).send().await;
    taken.expect_status(200, "a PUT under the cap");
    assert_eq!(taken.expect_version(), 1, "the refused PUT made no version");
    let row = store.wait_version(&format!("session/{key}"), 1).await;
    assert_eq!(
        row.entity_state(),
        fits,
        "the store holds the PUT under the cap"
    );
}

both_stores!(a_change_over_the_state_cap_is_refused);

/// A repeated `Idempotency-Key` replays the first reply's body, so its ETag
/// should be the version that body shows. The worker sends the entity's
/// current version instead: after another change, a client that retried a
/// PUT gets its own document with a newer version's ETag, and an
/// `If-Match` PATCH built on that pair overwrites a change it never saw.
async fn idempotent_replay_carries_the_original_version(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("idem-etag");
    let first = api
        .put_session(&key, &json!({"owner": "phone"}))
        .idempotency_key("put-1")
        .send()
        .await;
    first.expect_status(200, "first PUT");
    let v1 = first.expect_version();
    // Another device changes the session.
    let other = api
        .patch_session(&key, &json!({"owner": "laptop"}))
        .send()
        .await;
    other.expect_status(200, "the other device's PATCH");
    // The phone retries its PUT (its first reply was lost on the way).
    let replay = api
        .put_session(&key, &json!({"owner": "phone"}))
        .idempotency_key("put-1")
        .send()
        .await;
    assert_eq!(replay.json(), first.json(), "the first reply's body");
    assert_eq!(
        replay.expect_version(),
        v1,
        "the ETag names the version the replayed body shows"
    );
}

both_stores!(idempotent_replay_carries_the_original_version);

/// `POST /v1/cart/items` takes `{"sku", "qty"}`; a JSON array is the wrong
/// shape. serde's derived `Deserialize` also accepts a struct as a
/// positional array, so `["mug", 1]` adds a mug (and `[limit, ttl_ms]`
/// acquires a quota token).
async fn positional_array_bodies_are_rejected(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("array-body");
    let reply = api
        .call(Method::POST, "/v1/cart/items")
        .key(&key)
        .json(&json!(["mug", 1]))
        .send()
        .await;
    assert_plain_error(&reply, 400, "invalid_request", "an array body for an item");
    let reply = api
        .call(Method::POST, "/v1/quota/uploads/acquire")
        .key(&key)
        .json(&json!([1, 1000]))
        .send()
        .await;
    assert_plain_error(&reply, 400, "invalid_request", "an array body for a quota");
    let (version, _) = cart_version(&api, &key).await;
    assert_eq!(version, 0, "nothing was added");
}

both_stores!(positional_array_bodies_are_rejected);

/// Two different keys are two different users. The worker decodes
/// `x-roost-key` lossily, so every key that is not UTF-8 becomes U+FFFD
/// wherever its bytes differ: `\xff`, `\xfe` and the literal U+FFFD share one
/// cart. A key that is not UTF-8 should be refused (or kept byte-exact).
async fn keys_that_are_not_utf8_stay_apart(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let prefix = unique_key("bytes");
    let key = |tail: &[u8]| [prefix.as_bytes(), tail].concat();
    let add = api
        .call(Method::POST, "/v1/cart/items")
        .header_bytes("x-roost-key", &key(b"\xff"))
        .json(&json!({"sku": "mug", "qty": 1}))
        .send()
        .await;
    if add.status != 200 {
        // Refused outright: fine, as long as it says so.
        assert!(
            add.status == 400 || add.status == 401,
            "{} {}",
            add.status,
            add.body
        );
        return;
    }
    for other in [&b"\xfe"[..], "\u{fffd}".as_bytes()] {
        let read = api
            .get("/v1/cart")
            .header_bytes("x-roost-key", &key(other))
            .send()
            .await;
        assert!(
            read.status >= 400 || read.json()["items"] == json!([]),
            "key \"{}\" sees the cart of key \"{}\": {}",
            key(other).escape_ascii(),
            key(b"\xff").escape_ascii(),
            read.body
        );
    }
}

both_stores!(keys_that_are_not_utf8_stay_apart);

// ---------------------------------------------------------------------------
// An early 413
// ---------------------------------------------------------------------------

/// A body over `max_body_bytes` (the default, 1 MiB) gets its 413 even when
/// the client sends all of it before reading: (a) the head, then the body;
/// (b) head and body in one write. The worker answers as soon as it knows,
/// then reads and discards what follows (bounded) before it closes, so no
/// RST destroys the reply in flight. 100 times each on one worker.
#[test]
fn an_early_413_reaches_the_client() {
    support::run_on(StoreKind::Sqlite, |store| async move {
        let worker = Worker::start("w1", &store, None).await;
        let addr = worker.addr;
        let body = vec![b'x'; 2 << 20];
        let head = format!(
            "POST /v1/cart/items HTTP/1.1\r\nhost: w\r\nx-roost-key: {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            unique_key("large"),
            body.len()
        );
        let whole = [head.as_bytes(), &body].concat();
        let checked = tokio::task::spawn_blocking(move || {
            for round in 0..100 {
                let ways: [(&str, Vec<&[u8]>); 2] = [
                    ("head, then body", vec![head.as_bytes(), &body]),
                    ("one write", vec![&whole]),
                ];
                for (how, parts) in ways {
                    let response = raw_exchange(addr, &parts)
                        .unwrap_or_else(|e| panic!("round {round}, {how}: {e}"));
                    assert!(
                        response.starts_with("HTTP/1.1 413"),
                        "round {round}, {how}: {response}"
                    );
                    assert!(
                        response.contains("\"body_too_large\""),
                        "round {round}, {how}: {response}"
                    );
                }
            }
        });
        checked.await.expect("the raw exchanges");
    });
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

/// `/metrics` is on the admin listener only (no token needed there); the
/// probes are on both; the entity API only on the public one. The admin
/// listener drains with the public one.
#[test]
fn metrics_are_on_the_admin_listener_only() {
    support::run_on(StoreKind::Sqlite, |store| async move {
        let worker = Worker::start("w1", &store, Some(&config())).await;
        let public = worker.api();
        let admin = Api::new(&worker.admin_url(""));
        let key = unique_key("listeners");

        let reply = public.get("/metrics").send().await;
        assert_plain_error(&reply, 404, "not_found", "/metrics on the public listener");
        let reply = admin.get("/metrics").send().await;
        reply.expect_status(200, "/metrics on the admin listener");
        assert!(
            reply.body.contains("roost_worker_"),
            "roost_ metrics: {}",
            reply.body
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4")
        );
        let reply = admin.call(Method::DELETE, "/metrics").send().await;
        assert_plain_error(&reply, 405, "method_not_allowed", "DELETE /metrics");
        for probe in ["/healthz", "/readyz"] {
            for (api, listener) in [(&public, "public"), (&admin, "admin")] {
                let reply = api.get(probe).send().await;
                reply.expect_status(200, &format!("{probe} on the {listener} listener"));
            }
        }
        let reply = admin.add_item(&key, "mug", 1).send().await;
        assert_plain_error(
            &reply,
            404,
            "not_found",
            "the entity API on the admin listener",
        );
        let reply = admin.get("/v1/whoami").key(&key).send().await;
        assert_plain_error(&reply, 404, "not_found", "whoami on the admin listener");
        let reply = admin
            .call(Method::POST, "/internal/v1/inventory/mug/reserve")
            .send()
            .await;
        assert_plain_error(
            &reply,
            404,
            "not_found",
            "an internal route on the admin listener",
        );
        let (version, _) = cart_version(&public, &key).await;
        assert_eq!(version, 0, "nothing was added");

        // On SIGTERM both listeners fail readiness, then stop together (the
        // admin client's idle connection does not hold the exit up).
        let mut worker = worker;
        worker.sigterm();
        support::eventually(Duration::from_secs(3), "admin /readyz to fail", || async {
            let reply = admin.get("/readyz").try_send().await.ok()?;
            (reply.status == 503).then_some(())
        })
        .await;
        let status = worker.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "the drain finished: {status}");
        assert!(
            !roost_testkit::accepts(worker.admin),
            "the admin listener is closed"
        );
    });
}

/// The generic scheme serves every built-in kind beside its old routes,
/// on the same entity: `POST /v1/{kind}/{action}`, `GET /v1/{kind}` and
/// `GET /v1/{kind}/{read}` for per-user kinds, `/v1/{kind}/{id}` for
/// shared ones. An unknown kind or action is a JSON 404 (a call-only
/// action is unknown to a client); a body of the wrong type is a JSON 400
/// naming the field; a read is a `GET` and a change a `POST` (405
/// otherwise).
async fn the_generic_scheme_serves_every_kind(store: Store) {
    let worker = Worker::start("w1", &store, Some(&config())).await;
    let api = worker.api();
    let key = unique_key("generic");
    let post = |path: &str, body: Value| api.call(Method::POST, path).key(&key).json(&body);
    post("/v1/cart/add", json!({"sku": "mug", "qty": 2}))
        .send()
        .await
        .expect_status(200, "POST /v1/cart/add");
    let (version, cart) = cart_version(&api, &key).await;
    assert_eq!(
        cart["items"],
        json!([{"sku": "mug", "qty": 2}]),
        "the old GET sees it"
    );
    assert_eq!(version, 1);
    let reply = api.get("/v1/cart").key(&key).send().await;
    assert_eq!(reply.json(), cart, "GET /v1/cart is the generic get too");
    post("/v1/cart/remove", json!({"sku": "mug"}))
        .send()
        .await
        .expect_status(200, "POST /v1/cart/remove");
    post("/v1/cart/add", json!({"sku": "tee", "qty": 1}))
        .send()
        .await
        .expect_status(200, "add a tee");
    api.call(Method::POST, "/v1/cart/checkout")
        .key(&key)
        .send()
        .await
        .expect_status(201, "checkout");
    let orders = api.get("/v1/cart/orders").key(&key).send().await;
    orders.expect_status(200, "GET /v1/cart/orders");
    let old = api.get("/v1/orders").key(&key).send().await;
    assert_eq!(orders.json(), old.json(), "the alias and the action agree");

    let acquired = post(
        "/v1/quota/acquire",
        json!({"name": "uploads", "limit": 1, "ttl_ms": 60_000}),
    )
    .send()
    .await;
    acquired.expect_status(200, "POST /v1/quota/acquire");
    let reply = api
        .call(Method::POST, "/v1/quota/uploads/acquire")
        .key(&key)
        .json(&json!({"limit": 1, "ttl_ms": 60_000}))
        .send()
        .await;
    reply.expect_status(429, "the alias takes the same quota");
    assert_eq!(reply.json()["error"], "quota_exhausted");

    api.call(Method::PUT, "/v1/session")
        .key(&key)
        .json(&json!({"theme": "dark"}))
        .send()
        .await
        .expect_status(200, "PUT /v1/session");
    let reply = api
        .call(Method::PATCH, "/v1/session")
        .key(&key)
        .header("if-match", "\"7\"")
        .json(&json!({"theme": "light"}))
        .send()
        .await;
    assert_entity_error(&reply, 412, "precondition_failed", "If-Match on a kind");
    let reply = api.get("/v1/inventory/mug").send().await;
    reply.expect_status(200, "GET /v1/inventory/{id}");
    assert_eq!(reply.json()["sku"], "mug");

    for (method, path, status, code) in [
        (Method::GET, "/v1/ledger", 404, "not_found"),
        (Method::POST, "/v1/cart/refund", 404, "not_found"),
        (Method::POST, "/v1/inventory/mug/reserve", 404, "not_found"),
        (Method::GET, "/v1/cart/add", 405, "method_not_allowed"),
        (Method::POST, "/v1/cart/orders", 405, "method_not_allowed"),
    ] {
        let reply = api.call(method.clone(), path).key(&key).send().await;
        assert_plain_error(&reply, status, code, &format!("{method} {path}"));
    }
    let reply = post("/v1/cart/add", json!({"sku": "mug", "qty": "two"}))
        .send()
        .await;
    assert_plain_error(&reply, 400, "invalid_request", "a qty that is a string");
    assert!(
        reply.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("qty: ")),
        "the message names the field: {}",
        reply.body
    );
    let reply = post("/v1/cart/add", json!({"qty": 1})).send().await;
    assert_plain_error(&reply, 400, "invalid_request", "no sku");
    assert!(reply.body.contains("sku"), "{}", reply.body);
    let reply = post("/v1/cart/checkout", json!({"now": true})).send().await;
    assert_plain_error(&reply, 400, "invalid_request", "a body for checkout");
}
both_stores!(the_generic_scheme_serves_every_kind);
