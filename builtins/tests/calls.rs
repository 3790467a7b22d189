//! Shared entities and entity-to-entity calls, against real workers and a
//! real store: a checkout reserves stock from the inventory's owner on
//! another worker, the booth never oversells when many users with two
//! devices each race for few tickets, a retried call applies once, a
//! checkout a crash interrupted is finished by the next owner, and each
//! credential (the proxy's, the fleet's internal one, the admin token)
//! opens only its own routes and never shows in a reply.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use roost_routing::hrw::{Member, Ring, Seed};
use serde_json::{json, Value};
use support::{encode_envelope, unique_key, Api, Reply, Store, StoreKind, Worker};

const HASH_SEED: &str = "calls-test-seed";
const PROXY_TOKEN: &str = "proxy-token-for-tests";
const INTERNAL_TOKEN: &str = "internal-token-for-tests";
const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// A fleet config with the tokens, and a limit of one for `limited`.
fn config(limited: &str) -> String {
    format!(
        "hash_seed: {HASH_SEED}\nproxy_token: {PROXY_TOKEN}\ninternal_token: {INTERNAL_TOKEN}\n\
         admin_token: {ADMIN_TOKEN}\nflush_interval_ms: 20\nkinds: {{cart: {{settings: {{limits: {{{limited}: 1}}}}}}}}\n"
    )
}

async fn fleet(store: &Store, ids: &[&str], limited: &str) -> Vec<Worker> {
    let config = config(limited);
    let mut workers = Vec::new();
    for id in ids {
        workers.push(Worker::start(id, store, Some(&config)).await);
    }
    workers
}

/// The worker HRW picks for `key` among `workers` (as the proxy and the
/// workers' calls do).
fn owner<'w>(workers: &'w [Worker], key: &str) -> &'w Worker {
    let ring = Ring::new(
        Seed::from_phrase(HASH_SEED),
        workers.iter().enumerate().map(|(i, w)| Member {
            id: Arc::from(w.id.as_str()),
            weight: 1.0,
            value: i,
        }),
    )
    .expect("a valid ring");
    let index = ring.owner(key.as_bytes()).expect("a non-empty ring").value;
    &workers[index]
}

/// Requests to `worker` as the proxy sends them: with the proxy's token.
fn trusted(worker: &Worker) -> Api {
    worker.api().with_header("x-roost-hop-token", PROXY_TOKEN)
}

/// Requests to `worker` as another worker sends its calls.
fn from_worker(worker: &Worker) -> Api {
    worker
        .api()
        .with_header("x-roost-internal-token", INTERNAL_TOKEN)
}

/// `POST /internal/v1/inventory/{sku}/reserve`: reserve one under
/// `reservation`.
fn reserve_call(api: &Api, sku: &str, reservation: &str) -> support::Call {
    api.call(
        Method::POST,
        &format!("/internal/v1/inventory/{sku}/reserve"),
    )
    .idempotency_key(&format!("{reservation}/reserve"))
    .json(&json!({"reservation": reservation, "qty": 1}))
}

async fn set_stock(api: &Api, sku: &str, stock: u64) {
    api.call(Method::PUT, &format!("/v1/inventory/{sku}"))
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .json(&json!({"stock": stock}))
        .send()
        .await
        .expect_status(200, "admin PUT stock");
}

async fn inventory(api: &Api, sku: &str) -> Value {
    let reply = api.get(&format!("/v1/inventory/{sku}")).send().await;
    reply.expect_status(200, "GET inventory");
    reply.json()
}

async fn orders(api: &Api, user: &str) -> Vec<Value> {
    let reply = api.get("/v1/orders").key(user).send().await;
    reply.expect_status(200, "GET /v1/orders");
    reply.json()["orders"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A user that HRW places on `worker` and a SKU whose inventory it does not.
fn user_and_sku_apart(workers: &[Worker], worker: usize) -> (String, String) {
    let user = (0..)
        .map(|i| unique_key(&format!("user{i}")))
        .find(|u| owner(workers, u).id == workers[worker].id)
        .expect("some user lands on the worker");
    let sku = (0..)
        .map(|i| unique_key(&format!("sku{i}")))
        .find(|s| owner(workers, &format!("inventory:{s}")).id != workers[worker].id)
        .expect("some SKU lands elsewhere");
    (user, sku)
}

both_stores!(checkout_reserves_stock_on_the_inventorys_owner);
async fn checkout_reserves_stock_on_the_inventorys_owner(store: Store) {
    let workers = fleet(&store, &["c1", "c2", "c3"], "none").await;
    let (user, sku) = user_and_sku_apart(&workers, 0);
    let inventory_owner = owner(&workers, &format!("inventory:{sku}"));
    set_stock(&trusted(inventory_owner), &sku, 3).await;

    let api = trusted(&workers[0]);
    api.add_item(&user, &sku, 2)
        .send()
        .await
        .expect_status(200, "add");
    let reply = api.checkout(&user).send().await;
    reply.expect_status(201, "checkout");
    assert_eq!(reply.json()["items"][0]["qty"], 2, "{}", reply.body);

    let after = inventory(&trusted(inventory_owner), &sku).await;
    assert_eq!(
        (after["stock"].clone(), after["sold"].clone()),
        (json!(1), json!(2))
    );
    let placed = orders(&api, &user).await;
    assert_eq!(placed.len(), 1, "{placed:?}");
    let remote = support::metric_value(
        &workers[0].metrics().await,
        "roost_worker_call_attempts_total",
        &[("result", "decided")],
    );
    assert!(
        remote >= Some(1.0),
        "the reserve went to another worker over HTTP"
    );

    // Two more than are left: refused, nothing sold, the cart kept.
    api.add_item(&user, &sku, 2)
        .send()
        .await
        .expect_status(200, "add again");
    let reply = api.checkout(&user).send().await;
    reply.expect_status(409, "checkout beyond the stock");
    assert_eq!(reply.json()["error"], "out_of_stock", "{}", reply.body);
    assert_eq!(reply.json()["skus"], json!([sku]), "{}", reply.body);
    assert_eq!(inventory(&trusted(inventory_owner), &sku).await["sold"], 2);
    assert_eq!(orders(&api, &user).await.len(), 1);
    let cart = api.get_cart(&user).send().await;
    assert_eq!(support::cart_of(&cart.json()).0.get(&sku), Some(&2));
}

both_stores!(a_refused_item_releases_the_reserved_ones);
async fn a_refused_item_releases_the_reserved_ones(store: Store) {
    let workers = fleet(&store, &["r1", "r2"], "none").await;
    let user = unique_key("user");
    let (plenty, scarce) = (unique_key("plenty"), unique_key("scarce"));
    set_stock(&trusted(&workers[0]), &plenty, 10).await;
    set_stock(&trusted(&workers[1]), &scarce, 0).await;
    let api = trusted(owner(&workers, &user));
    api.add_item(&user, &plenty, 1).send().await;
    api.add_item(&user, &scarce, 1).send().await;
    let reply = api.checkout(&user).send().await;
    reply.expect_status(409, "checkout with one item out of stock");
    assert_eq!(reply.json()["skus"], json!([scarce]), "{}", reply.body);
    let plenty_now = inventory(&trusted(&workers[0]), &plenty).await;
    assert_eq!(
        (plenty_now["stock"].clone(), plenty_now["sold"].clone()),
        (json!(10), json!(0)),
        "the reservation made was released"
    );
    assert!(orders(&api, &user).await.is_empty());
}

both_stores!(the_booth_never_oversells);
/// 20 tickets, 60 users with two devices each, all at once, against three
/// workers; each device adds the ticket (limit one per user) and checks out.
async fn the_booth_never_oversells(store: Store) {
    const TICKETS: u64 = 20;
    const USERS: usize = 60;
    let show = unique_key("show");
    let workers = fleet(&store, &["b1", "b2", "b3"], &show).await;
    set_stock(&trusted(&workers[0]), &show, TICKETS).await;

    let users: Vec<String> = (0..USERS).map(|i| unique_key(&format!("fan{i}"))).collect();
    let mut devices = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        for device in 0..2 {
            // Each user's devices go to the user's worker, as the proxy
            // sends them; every third user's second device goes elsewhere.
            let target = if device == 1 && i % 3 == 0 {
                &workers[i % workers.len()]
            } else {
                owner(&workers, user)
            };
            let (api, user, show) = (trusted(target), user.clone(), show.clone());
            devices.spawn(async move {
                api.add_item(&user, &show, 1).send().await;
                let key = format!("{user}-device{device}");
                let reply = checkout_until_decided(&api, &user, &key).await;
                (user, reply)
            });
        }
    }
    let mut acknowledged: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    while let Some(joined) = devices.join_next().await {
        let (user, reply): (String, Reply) = joined.expect("a device task");
        match reply.status {
            201 => acknowledged.entry(user).or_default().push(reply.json()),
            409 => {}
            status => panic!("checkout for {user}: {status} {}", reply.body),
        }
    }
    let sold: usize = acknowledged.values().map(Vec::len).sum();
    assert_eq!(
        sold as u64, TICKETS,
        "tickets acknowledged: {acknowledged:?}"
    );
    let mut ordered = 0;
    for user in &users {
        let held = orders(&trusted(owner(&workers, user)), user).await;
        assert!(held.len() <= 1, "{user} holds {}: {held:?}", held.len());
        if let Some(acked) = acknowledged.get(user) {
            assert_eq!(acked.len(), 1, "{user} was acknowledged twice");
            assert_eq!(
                held.first(),
                acked.first(),
                "{user}'s acknowledged order exists"
            );
        }
        ordered += held.len();
    }
    assert_eq!(ordered as u64, TICKETS);
    let booth = inventory(&trusted(&workers[0]), &show).await;
    assert_eq!(
        (booth["stock"].clone(), booth["sold"].clone()),
        (json!(0), json!(TICKETS))
    );
}

/// Check out as a client does: a 503 (the cart was being handed over, or
/// its calls were undecided) is retried with the same `Idempotency-Key`,
/// a bounded number of times.
async fn checkout_until_decided(api: &Api, user: &str, key: &str) -> Reply {
    for _ in 0..20 {
        let reply = api.checkout(user).idempotency_key(key).send().await;
        if reply.status != 503 {
            return reply;
        }
        eprintln!("{user} {key}: 503, retrying: {}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{user} {key}: still 503 after 20 attempts");
}

both_stores!(a_retried_call_applies_once);
async fn a_retried_call_applies_once(store: Store) {
    let workers = fleet(&store, &["i1"], "none").await;
    let sku = unique_key("sku");
    let api = trusted(&workers[0]);
    set_stock(&api, &sku, 5).await;
    // As another worker sends them (or someone without the token).
    let raw = workers[0].api();
    let call = |reservation: &str, key: &str, token: &str| {
        raw.call(
            Method::POST,
            &format!("/internal/v1/inventory/{sku}/reserve"),
        )
        .header("x-roost-internal-token", token)
        .idempotency_key(key)
        .json(&json!({"reservation": reservation, "qty": 2}))
    };
    for attempt in 0..3 {
        call("r1", "r1/reserve", INTERNAL_TOKEN)
            .send()
            .await
            .expect_status(200, &format!("reserve attempt {attempt}"));
    }
    // The same reservation under another idempotency id: still once.
    call("r1", "other-id", INTERNAL_TOKEN)
        .send()
        .await
        .expect_status(200, "the same reservation again");
    // Another call under a used id: refused, not applied.
    call("r9", "r1/reserve", INTERNAL_TOKEN)
        .send()
        .await
        .expect_error(422, "idempotency_key_reused", "another call under r1's id");
    let after = inventory(&api, &sku).await;
    assert_eq!(
        (after["stock"].clone(), after["sold"].clone()),
        (json!(3), json!(2))
    );

    call("r2", "r2/reserve", "wrong-token-wrong-token")
        .send()
        .await
        .expect_error(403, "untrusted_hop", "a wrong internal token");
    raw.call(
        Method::POST,
        &format!("/internal/v1/inventory/{sku}/reserve"),
    )
    .idempotency_key("r3/reserve")
    .json(&json!({"reservation": "r3", "qty": 1}))
    .send()
    .await
    .expect_error(403, "untrusted_hop", "no internal token");
    call("r4", "r4/reserve", INTERNAL_TOKEN)
        .json(&json!({"reservation": "r4", "qty": 0}))
        .send()
        .await
        .expect_error(400, "invalid_qty", "qty 0");
    assert_eq!(
        inventory(&api, &sku).await["sold"],
        2,
        "refused calls changed nothing"
    );
}

both_stores!(admin_calls_need_the_admin_token);
async fn admin_calls_need_the_admin_token(store: Store) {
    let workers = fleet(&store, &["a1"], "none").await;
    let sku = unique_key("sku");
    let api = trusted(&workers[0]);
    let put = |auth: Option<&str>| {
        let call = api
            .call(Method::PUT, &format!("/v1/inventory/{sku}"))
            .json(&json!({"stock": 7}));
        match auth {
            Some(value) => call.header("authorization", value),
            None => call,
        }
    };
    put(None)
        .send()
        .await
        .expect_error(401, "unauthorized", "no token");
    put(Some("Bearer not-the-admin-token"))
        .send()
        .await
        .expect_error(403, "forbidden", "a wrong token");
    assert_eq!(
        inventory(&api, &sku).await["stock"],
        Value::Null,
        "untouched"
    );
    put(Some(&format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .expect_status(200, "the admin token");
    assert_eq!(inventory(&api, &sku).await["stock"], 7);
}

both_stores!(calls_are_not_capped_by_max_state_bytes);
/// `max_state_bytes` caps what clients send, not the calls between
/// entities: a reservation's release must apply whatever the size, or its
/// units stay held. An inventory grows past the cap by reserves, and every
/// release still applies.
async fn calls_are_not_capped_by_max_state_bytes(store: Store) {
    let config = format!("{}max_state_bytes: 256\n", config("none"));
    let worker = Worker::start("s1", &store, Some(&config)).await;
    let sku = unique_key("sku");
    set_stock(&trusted(&worker), &sku, 100).await;
    let api = from_worker(&worker);
    let reservations: Vec<String> = (0..10)
        .map(|i| format!("reservation-{i}-of-ten-past-the-cap"))
        .collect();
    for reservation in &reservations {
        reserve_call(&api, &sku, reservation)
            .send()
            .await
            .expect_status(200, "a reserve past the cap");
    }
    for reservation in &reservations {
        api.call(
            Method::POST,
            &format!("/internal/v1/inventory/{sku}/release"),
        )
        .idempotency_key(&format!("{reservation}/release"))
        .json(&json!({"reservation": reservation}))
        .send()
        .await
        .expect_status(200, "a release past the cap");
    }
    let after = inventory(&trusted(&worker), &sku).await;
    assert_eq!(
        (after["stock"].clone(), after["sold"].clone()),
        (json!(100), json!(0)),
        "every release applied"
    );
    let row = store.wait_version(&format!("inventory/{sku}"), 21).await;
    let state = serde_json::to_vec(&row.entity_state()).expect("serializes");
    assert!(
        state.len() > 256,
        "the inventory is past the cap: {} bytes",
        state.len()
    );
}

both_stores!(a_checkout_a_crash_interrupted_is_finished_by_the_next_owner);
/// The worker that made the pending order durable and sent the reserve
/// died before the reply: the row it left says so. The next owner finishes
/// the same attempt before the cart's next request (the inventory applies
/// the reservation once, even if the dead worker's reserve got through),
/// and a retry of the checkout gets the order.
async fn a_checkout_a_crash_interrupted_is_finished_by_the_next_owner(store: Store) {
    let workers = fleet(&store, &["n1"], "none").await;
    let api = trusted(&workers[0]);
    for reserve_got_through in [false, true] {
        let (user, sku) = (unique_key("user"), unique_key("sku"));
        set_stock(&api, &sku, 1).await;
        let reservation = format!("{user}/order-1@3");
        let reserve = json!({"reservation": reservation, "qty": 1});
        if reserve_got_through {
            workers[0]
                .api()
                .call(
                    Method::POST,
                    &format!("/internal/v1/inventory/{sku}/reserve"),
                )
                .header("x-roost-internal-token", INTERNAL_TOKEN)
                .idempotency_key(&format!("{reservation}/reserve"))
                .json(&reserve)
                .send()
                .await
                .expect_status(200, "the dead worker's reserve");
        }
        let items = json!({ sku.as_str(): 1 });
        let meta = json!({"replies": [], "awaiting": {
            "idempotency_key": "checkout-1",
            "calls": [{
                "kind": "inventory", "id": sku, "routing_key": format!("inventory:{sku}"),
                "action": "reserve", "body": reserve, "idempotency_id": format!("{reservation}/reserve"),
            }],
        }});
        let cart = json!({"items": items, "orders": [], "checkout": {
            "order": {"id": "order-1", "items": items}, "reservation": reservation,
        }});
        store
            .put_row(
                &format!("cart/{user}"),
                1,
                "gone",
                4,
                &encode_envelope(&meta, &cart),
            )
            .await;

        let placed = orders(&api, &user).await;
        assert_eq!(placed.len(), 1, "the order was finished: {placed:?}");
        let booth = inventory(&api, &sku).await;
        assert_eq!(
            (booth["stock"].clone(), booth["sold"].clone()),
            (json!(0), json!(1))
        );
        let retry = api
            .checkout(&user)
            .idempotency_key("checkout-1")
            .send()
            .await;
        retry.expect_status(201, "the client's retry of the interrupted checkout");
        assert_eq!(retry.json()["id"], "order-1", "{}", retry.body);
    }
}

/// The proxy's token opens the entity API and nothing else; the fleet's
/// internal token opens the internal routes and nothing else; a request a
/// proxy forwarded (it carries `x-roost-hop-token`) never reaches an
/// internal route, whatever else it carries. The probes need neither.
/// Nothing refused changes anything. (The store plays no part: SQLite.)
#[test]
fn each_credential_opens_only_its_own_routes() {
    support::run_on(StoreKind::Sqlite, |store| async move {
        let workers = fleet(&store, &["h1"], "none").await;
        let worker = &workers[0];
        let (user, sku) = (unique_key("user"), unique_key("sku"));
        let stock = |api: &Api| {
            api.call(Method::PUT, &format!("/v1/inventory/{sku}"))
                .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
                .json(&json!({"stock": 1}))
        };
        let wrong_proxy_token = worker
            .api()
            .with_header("x-roost-hop-token", "not-the-proxy-token");
        let entity_api_refused = [
            (worker.api(), "no credential"),
            (from_worker(worker), "the internal token"),
            (wrong_proxy_token, "a wrong proxy token"),
        ];
        for (api, who) in &entity_api_refused {
            let refused = |reply: Reply, what: &str| {
                reply.expect_error(403, "untrusted_hop", &format!("{what} with {who}"));
            };
            refused(api.add_item(&user, &sku, 1).send().await, "add an item");
            refused(api.get_cart(&user).send().await, "read the cart");
            refused(api.get("/v1/whoami").send().await, "whoami");
            refused(stock(api).send().await, "an admin call");
        }

        let forwarded = [
            (trusted(worker), "the proxy's token"),
            (
                trusted(worker).with_header("x-roost-internal-token", INTERNAL_TOKEN),
                "both tokens",
            ),
            (
                from_worker(worker).with_header("x-roost-hop-token", ""),
                "the internal token and an empty hop header",
            ),
        ];
        for (api, who) in &forwarded {
            reserve_call(api, &sku, "forwarded")
                .send()
                .await
                .expect_error(
                    403,
                    "forwarded_internal",
                    &format!("an internal call with {who}"),
                );
        }
        reserve_call(&worker.api(), &sku, "bare")
            .send()
            .await
            .expect_error(403, "untrusted_hop", "an internal call without a token");
        for open in ["/healthz", "/readyz"] {
            worker.api().get(open).send().await.expect_status(200, open);
        }

        let api = trusted(worker);
        let cart = api.get_cart(&user).send().await;
        assert!(
            support::cart_of(&cart.json()).0.is_empty(),
            "nothing was added"
        );
        let booth = inventory(&api, &sku).await;
        assert_eq!(
            (booth["stock"].clone(), booth["sold"].clone()),
            (Value::Null, json!(0)),
            "nothing was stocked or reserved"
        );
        // Each credential at its own door.
        stock(&api)
            .send()
            .await
            .expect_status(200, "stock with the proxy's token");
        reserve_call(&from_worker(worker), &sku, "worker")
            .send()
            .await
            .expect_status(200, "a reserve with the internal token");
        assert_eq!(inventory(&api, &sku).await["sold"], 1);
    });
}

/// `whoami` shows a client only who answered and its own key, and no reply
/// (success or error) shows a token, in its body or its headers, although
/// each request carries the proxy's and the fleet's tokens (and the admin
/// token where it is asked for).
#[test]
fn no_reply_shows_a_token() {
    support::run_on(StoreKind::Sqlite, |store| async move {
        let workers = fleet(&store, &["t1"], "none").await;
        let worker = &workers[0];
        let user = unique_key("user");
        let api = trusted(worker);
        let both = trusted(worker).with_header("x-roost-internal-token", INTERNAL_TOKEN);

        let whoami = both.get("/v1/whoami").key(&user).send().await;
        whoami.expect_status(200, "whoami");
        assert_eq!(whoami.json(), json!({"worker": "t1", "key": user}));
        let anonymous = api.call(Method::POST, "/v1/whoami").body("{}").send().await;
        assert_eq!(anonymous.json(), json!({"worker": "t1", "key": null}));

        let oversized = "x".repeat((1 << 20) + 1);
        let replies = [
            (whoami, 200, "whoami"),
            (anonymous, 200, "whoami without a key"),
            (
                worker.api().add_item(&user, "mug", 1).send().await,
                403,
                "untrusted_hop",
            ),
            (
                reserve_call(&both, "mug", "r").send().await,
                403,
                "forwarded_internal",
            ),
            (
                both.call(Method::PUT, "/v1/inventory/mug")
                    .header("authorization", "Bearer not-the-admin-token")
                    .json(&json!({"stock": 1}))
                    .send()
                    .await,
                403,
                "forbidden",
            ),
            (
                both.get("/v1/nothing").key(&user).send().await,
                404,
                "not_found",
            ),
            (
                both.call(Method::PUT, "/v1/cart").key(&user).send().await,
                405,
                "method_not_allowed",
            ),
            (
                both.call(Method::POST, "/v1/cart/items")
                    .key(&user)
                    .body("{")
                    .send()
                    .await,
                400,
                "invalid_json",
            ),
            (
                both.remove_item(&user, "%ff").send().await,
                400,
                "invalid_path",
            ),
            (both.get("/v1/cart").send().await, 401, "missing_key"),
            (
                both.call(Method::POST, "/v1/cart/items")
                    .key(&user)
                    .body(oversized)
                    .send()
                    .await,
                413,
                "body_too_large",
            ),
        ];
        for (reply, status, what) in &replies {
            reply.expect_status(*status, what);
            for token in [PROXY_TOKEN, INTERNAL_TOKEN, ADMIN_TOKEN] {
                assert!(
                    !reply.body.contains(token),
                    "{what}: the body shows a token"
                );
                for (name, value) in &reply.headers {
                    let value = String::from_utf8_lossy(value.as_bytes());
                    assert!(
                        !value.contains(token),
                        "{what}: header {name} shows a token"
                    );
                }
            }
        }
    });
}

/// Tokens the environment sets are checked like the file's: a worker with
/// the internal token but no proxy token, or the same value for both, does
/// not start, and says which variable is wrong without showing its value.
#[test]
fn a_worker_with_unusable_tokens_from_the_environment_does_not_start() {
    let dir = support::TempDir::new("tokens");
    let store = format!("sqlite://{}", dir.path().join("roost.db").display());
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("ROOST_INTERNAL_TOKEN", INTERNAL_TOKEN)],
            "ROOST_PROXY_TOKEN",
        ),
        (
            &[
                ("ROOST_INTERNAL_TOKEN", INTERNAL_TOKEN),
                ("ROOST_PROXY_TOKEN", INTERNAL_TOKEN),
            ],
            "ROOST_PROXY_TOKEN",
        ),
        (&[("ROOST_PROXY_TOKEN", "short")], "ROOST_PROXY_TOKEN"),
    ];
    for (env, named) in cases {
        let mut command = std::process::Command::new(Worker::bin());
        command
            .args(["--id", "bad", "--listen", "127.0.0.1:0", "--store", &store])
            .env_remove("ROOST_PROXY_TOKEN")
            .env_remove("ROOST_INTERNAL_TOKEN")
            .env_remove("ROOST_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("spawn roost-worker");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().expect("poll roost-worker").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{env:?}: the worker started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("the worker's output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?}: {stderr}");
        assert!(stderr.contains(named), "{env:?} names {named}: {stderr}");
        for (_, value) in env {
            assert!(!stderr.contains(value), "{env:?}: the error shows a token");
        }
    }
}

/// On Postgres a worker that goes live announces it (NOTIFY), so the
/// others route calls to it at once, not at their next periodic read of
/// the workers table (set to a minute here).
#[test]
fn calls_reach_a_worker_that_just_joined() {
    support::run_on(support::StoreKind::Postgres, |store| async move {
        let sku_owned_by = |workers: &[Worker], id: &str| {
            (0..)
                .map(|i| unique_key(&format!("sku{i}")))
                .find(|s| owner(workers, &format!("inventory:{s}")).id == id)
                .expect("some SKU lands on the worker")
        };
        let config = format!("{}peers_refresh_ms: 60000\n", config("none"));
        let first = Worker::start("j1", &store, Some(&config)).await;
        let second = Worker::start("j2", &store, Some(&config)).await;
        let workers = [first, second];
        let sku = sku_owned_by(&workers, "j2");
        let user = unique_key("user");
        let api = trusted(&workers[0]);
        // A call j1 routes to itself claims the inventory for j1; one it
        // routes to j2 makes j2 claim it.
        support::eventually(
            std::time::Duration::from_secs(5),
            "j1 to call j2",
            || async {
                api.add_item(&user, &sku, 1).send().await;
                let reply = api.checkout(&user).send().await;
                let row = store.peek(&format!("inventory/{sku}")).await;
                let holder = row.as_ref().map(|row| row.owner.clone());
                eprintln!("checkout {}: inventory held by {holder:?}", reply.status);
                row.filter(|row| row.owner == "j2")
            },
        )
        .await;
    });
}
