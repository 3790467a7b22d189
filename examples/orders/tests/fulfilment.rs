//! The order example through the proxy, on three `roost-orders` workers
//! and Postgres: an order reserved, paid and confirmed; one left unpaid
//! until its deadline alarm releases the stock; one refused for want of
//! stock; two devices paying (and placing) at once; and orders placed
//! while the inventory's owner is killed (ledger check: every
//! acknowledged order holds its stock, and no stock is held twice).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Method;
use roost_testkit::app::{Answer, AppFleet};
use serde_json::{json, Value};

/// The proxy routes orders and inventories by their paths.
const KEYS: &str = "[{path: \"/v1/{kind}/{key}\", kinds: [order, inventory]}]";
const ADMIN_TOKEN: &str = "orders-admin-token-for-tests";

async fn orders() -> AppFleet {
    let yaml = format!(
        "admin_token: \"{ADMIN_TOKEN}\"\nalarm_poll_ms: 100\n\
         kinds: {{inventory: {{settings: {{forget_after_ms: 200}}}}}}\n"
    );
    AppFleet::start("roost-orders", &yaml, KEYS).await
}

async fn stock(app: &AppFleet, sku: &str, units: u64) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let body = json!({ "stock": units });
    let path = format!("/v1/inventory/{sku}");
    let answer = app
        .send(
            Method::PUT,
            &path,
            Some(&body),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

fn place(sku: &str, qty: u64, pay_within_ms: u64) -> Value {
    json!({ "sku": sku, "qty": qty, "pay_within_ms": pay_within_ms })
}

fn payment() -> Value {
    json!({ "payment": "card-1" })
}

/// `(stock, sold)` of `sku`.
async fn held(app: &AppFleet, sku: &str) -> (u64, u64) {
    let inventory = app.get(&format!("/v1/inventory/{sku}")).await;
    let field = |name: &str| inventory.body[name].as_u64().unwrap_or(u64::MAX);
    (field("stock"), field("sold"))
}

fn status(order: &Answer) -> &str {
    order.body["status"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_is_reserved_then_confirmed_or_released_at_its_deadline() {
    let app = orders().await;
    stock(&app, "mug", 5).await;
    paid_orders_are_confirmed(&app).await;
    unpaid_orders_expire_and_give_the_stock_back(&app).await;
    two_devices_place_and_pay_once(&app).await;
    refusals_are_json(&app).await;
}

/// Reserved, paid, confirmed: the stock stays sold.
async fn paid_orders_are_confirmed(app: &AppFleet) {
    let placed = app
        .post("/v1/order/o1/place", &place("mug", 2, 60_000))
        .await;
    assert_eq!(
        (placed.status, status(&placed)),
        (201, "awaiting_payment"),
        "{placed:?}"
    );
    let paid = app.post("/v1/order/o1/pay", &payment()).await;
    assert_eq!((paid.status, status(&paid)), (200, "confirmed"), "{paid:?}");
    assert_eq!(held(app, "mug").await, (3, 2));
}

/// Never paid: the deadline alarm releases the stock; more than there is:
/// refused, nothing held.
async fn unpaid_orders_expire_and_give_the_stock_back(app: &AppFleet) {
    let placed = app.post("/v1/order/o2/place", &place("mug", 1, 300)).await;
    assert_eq!(placed.status, 201, "{placed:?}");
    assert_eq!(held(app, "mug").await, (2, 3));
    let expired = app
        .wait_until("/v1/order/o2", Duration::from_secs(5), |a| {
            status(a) == "expired"
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(expired.body["sku"], "mug");
    assert_eq!(held(app, "mug").await, (3, 2), "the stock came back");
    let late = app.post("/v1/order/o2/pay", &payment()).await;
    assert_eq!((late.status, late.error()), (409, Some("payment_too_late")));

    // More than there is: refused, nothing held.
    let refused = app
        .post("/v1/order/o3/place", &place("mug", 10, 60_000))
        .await;
    assert_eq!(
        (refused.status, refused.error()),
        (409, Some("out_of_stock"))
    );
    assert_eq!(status(&app.get("/v1/order/o3").await), "rejected");
    assert_eq!(held(app, "mug").await, (3, 2));
}

/// Two devices place and pay the same order at once: one reservation, one
/// confirmation.
async fn two_devices_place_and_pay_once(app: &AppFleet) {
    let one_mug = place("mug", 1, 60_000);
    let placing = (0..10).map(|_| app.post("/v1/order/o4/place", &one_mug));
    for answer in join_all(placing).await {
        assert!(matches!(answer.status, 200 | 201), "{answer:?}");
    }
    let body = payment();
    let paying = (0..10).map(|_| app.post("/v1/order/o4/pay", &body));
    for answer in join_all(paying).await {
        assert_eq!(
            (answer.status, status(&answer)),
            (200, "confirmed"),
            "{answer:?}"
        );
    }
    assert_eq!(held(app, "mug").await, (2, 3));
}

/// Refusals are JSON.
async fn refusals_are_json(app: &AppFleet) {
    let other = app
        .post("/v1/order/o4/place", &place("tee", 1, 60_000))
        .await;
    assert_eq!((other.status, other.error()), (409, Some("already_placed")));
    let untyped = app
        .post("/v1/order/o5/place", &json!({"sku": "mug", "qty": "1"}))
        .await;
    assert_eq!(untyped.status, 400, "{untyped:?}");
    let internal = app
        .post("/v1/inventory/mug/release", &json!({"reservation": "o1"}))
        .await;
    assert_eq!(
        (internal.status, internal.error()),
        (404, Some("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_inventory_s_owner_loses_no_acknowledged_order() {
    let app = orders().await;
    stock(&app, "ticket", 1_000).await;
    let app_ref = &app;
    let client = |n: u64| async move {
        let mut acked = Vec::new();
        for i in 0..10 {
            let order = format!("c{n}-{i}");
            let answer = place_until_acked(app_ref, &order).await;
            assert_eq!(status(&answer), "awaiting_payment", "{answer:?}");
            acked.push(order);
        }
        acked
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let route = app_ref
            .fleet
            .route("inventory:ticket")
            .await
            .expect("route");
        let victim = route.owner.expect("the inventory has an owner");
        app_ref.fleet.kill9_now(&victim).expect("kill -9");
    };
    let (a, b, c, d, ()) = tokio::join!(client(1), client(2), client(3), client(4), killer);
    let acked: Vec<String> = [a, b, c, d].into_iter().flatten().collect();
    assert_eq!(acked.len(), 40);
    for order in &acked {
        let stored = app.get(&format!("/v1/order/{order}")).await;
        assert_eq!(status(&stored), "awaiting_payment", "{order}: {stored:?}");
    }
    assert_eq!(
        held(&app, "ticket").await,
        (960, 40),
        "each acknowledged order holds one ticket, none twice"
    );
}

/// Place order `order` for one ticket until it is acknowledged (placing
/// again answers with the order as it is).
async fn place_until_acked(app: &AppFleet, order: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = format!("/v1/order/{order}/place");
    let body = place("ticket", 1, 600_000);
    loop {
        let sent = app.try_send(Method::POST, &path, Some(&body), &[]).await;
        match sent {
            Ok(answer) if matches!(answer.status, 200 | 201) => return answer,
            Ok(answer) if answer.status < 500 => panic!("{order} refused: {answer:?}"),
            _ if Instant::now() > deadline => panic!("{order} never acknowledged: {sent:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
