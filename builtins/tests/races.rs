//! Concurrency on one entity, and fencing between two workers, each against
//! SQLite and Postgres:
//!
//! - two devices race 1,000 cart mutations each; the acknowledged replies,
//!   ordered by their ETag versions, replay exactly against a model cart;
//! - a session counter under compare-and-set (`If-Match`) and merge patches;
//! - a frozen worker's unflushed write is fenced by the newer owner's epoch,
//!   and it never serves under its old epoch again.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::{cart_of, unique_key, Api, Reply, Store, Worker};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------
// 1. Two devices race on one cart
// ---------------------------------------------------------------------------

/// The SKU with a per-customer limit, and the limit.
const LIMITED: &str = "limited";
const LIMIT: u64 = 2;
const SKUS: [&str; 5] = ["apple", "bread", "cheese", "dates", LIMITED];
const DEVICES: usize = 2;
const OPS_PER_DEVICE: usize = 1000;
/// Requests each device keeps in flight.
const LANES_PER_DEVICE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum CartOp {
    Add { sku: String, qty: u64 },
    Remove { sku: String },
    Clear,
    Checkout,
}

/// One acknowledged mutation.
#[derive(Debug, Clone)]
struct Acked {
    /// Which device sent it, and its index there (for failure messages).
    device: usize,
    index: usize,
    op: CartOp,
    durable: bool,
    status: u16,
    body: Value,
    version: u64,
    epoch: i64,
}

/// The cart as the worker should have it, applying requests one at a time.
#[derive(Debug, Clone, Default)]
struct CartModel {
    items: BTreeMap<String, u64>,
    orders: Vec<BTreeMap<String, u64>>,
    /// Per SKU, the quantity taken out by removes and by clears (not part
    /// of the cart; kept to account for every item ever added).
    removed: BTreeMap<String, u64>,
    cleared: BTreeMap<String, u64>,
}

/// What the model answers: status, body (error bodies reduced to their
/// code), and whether the state changed.
#[derive(Debug, Clone, PartialEq)]
struct ModelReply {
    status: u16,
    body: Value,
    changed: bool,
}

fn items_view(items: &BTreeMap<String, u64>) -> Value {
    items
        .iter()
        .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
        .collect()
}

fn order_id(n: usize) -> String {
    format!("order-{n}")
}

impl CartModel {
    fn view(&self) -> Value {
        let orders: Vec<Value> = self
            .orders
            .iter()
            .enumerate()
            .map(|(i, items)| json!({"id": order_id(i + 1), "items": items_view(items)}))
            .collect();
        json!({"items": items_view(&self.items), "orders": orders})
    }

    /// The state as the store keeps it (the cart entity's JSON).
    fn stored(&self) -> Value {
        let orders: Vec<Value> = self
            .orders
            .iter()
            .enumerate()
            .map(|(i, items)| json!({"id": order_id(i + 1), "items": items}))
            .collect();
        json!({"items": self.items, "orders": orders})
    }

    fn held(&self, sku: &str) -> u64 {
        self.items.get(sku).copied().unwrap_or(0)
            + self.orders.iter().filter_map(|o| o.get(sku)).sum::<u64>()
    }

    fn apply(&mut self, op: &CartOp) -> ModelReply {
        let error = |status, code: &str| ModelReply {
            status,
            body: json!({"error": code}),
            changed: false,
        };
        match op {
            CartOp::Add { sku, qty } => {
                if sku == LIMITED && self.held(sku) + qty > LIMIT {
                    return error(409, "limit_exceeded");
                }
                *self.items.entry(sku.clone()).or_insert(0) += qty;
                self.ok(200, true)
            }
            CartOp::Remove { sku } => match self.items.remove(sku) {
                Some(qty) => {
                    *self.removed.entry(sku.clone()).or_insert(0) += qty;
                    self.ok(200, true)
                }
                None => error(404, "not_in_cart"),
            },
            CartOp::Clear => {
                let changed = !self.items.is_empty();
                for (sku, qty) in std::mem::take(&mut self.items) {
                    *self.cleared.entry(sku).or_insert(0) += qty;
                }
                self.ok(200, changed)
            }
            CartOp::Checkout => {
                if self.items.is_empty() {
                    return error(409, "empty_cart");
                }
                let items = std::mem::take(&mut self.items);
                let body =
                    json!({"id": order_id(self.orders.len() + 1), "items": items_view(&items)});
                self.orders.push(items);
                ModelReply {
                    status: 201,
                    body,
                    changed: true,
                }
            }
        }
    }

    fn ok(&self, status: u16, changed: bool) -> ModelReply {
        ModelReply {
            status,
            body: self.view(),
            changed,
        }
    }
}

/// The worker's reply as the model states it: error bodies reduced to
/// their code (messages are prose).
fn observed(acked: &Acked) -> (u16, Value) {
    if acked.status >= 400 {
        (acked.status, json!({"error": acked.body["error"]}))
    } else {
        (acked.status, acked.body.clone())
    }
}

fn random_op(rng: &mut StdRng) -> CartOp {
    let sku = SKUS[rng.gen_range(0..SKUS.len())].to_owned();
    match rng.gen_range(0..100) {
        0..=63 => {
            let qty = if sku == LIMITED {
                1
            } else {
                rng.gen_range(1..=3)
            };
            CartOp::Add { sku, qty }
        }
        64..=81 => CartOp::Remove { sku },
        82..=92 => CartOp::Clear,
        _ => CartOp::Checkout,
    }
}

async fn send_cart_op(api: &Api, key: &str, op: &CartOp, durable: bool) -> Reply {
    let call = match op {
        CartOp::Add { sku, qty } => api.add_item(key, sku, *qty),
        CartOp::Remove { sku } => api.remove_item(key, sku),
        CartOp::Clear => api.clear_cart(key),
        CartOp::Checkout => api.checkout(key),
    };
    let call = if durable {
        call.durability("durable")
    } else {
        call
    };
    call.send().await
}

/// Independent of the model: no reply shows more of the limited SKU than
/// the limit, counting the cart and every order.
fn assert_limit_respected(acked: &Acked) {
    if acked.status >= 400 {
        return;
    }
    let held = if acked.op == CartOp::Checkout {
        let order = support::items_of(&acked.body["items"]);
        order.get(LIMITED).copied().unwrap_or(0)
    } else {
        let (items, orders) = cart_of(&acked.body);
        items.get(LIMITED).copied().unwrap_or(0)
            + orders
                .iter()
                .filter_map(|(_, o)| o.get(LIMITED))
                .sum::<u64>()
    };
    assert!(
        held <= LIMIT,
        "device {} op {}: a reply shows {held} of {LIMITED} (limit {LIMIT}): {acked:?}",
        acked.device,
        acked.index
    );
}

/// Order the acknowledged replies by version and replay them: for each
/// version v ≥ 1 exactly one reply is the change that made v (applied to
/// the state at v−1 it changes it and gives exactly that reply), and every
/// other reply tagged v saw state v and changed nothing. When several
/// replies could be the change (a clear and a remove that both empty the
/// same cart), the one that leaves every other reply explained is taken;
/// the resulting state is the same for any such choice, since a cart reply
/// shows the whole cart. Returns the model after the last version and the
/// changes in version order.
///
/// A checkout makes two versions: the pending order, which no reply can
/// see (the cart stays locked until the order is decided), then the order.
/// So a version with no reply must be followed by a checkout's.
fn replay(acked: &[Acked]) -> (CartModel, Vec<&Acked>) {
    let mut by_version: BTreeMap<u64, Vec<&Acked>> = BTreeMap::new();
    for a in acked {
        by_version.entry(a.version).or_default().push(a);
    }
    let last = by_version.keys().next_back().copied().unwrap_or(0);
    let mut model = CartModel::default();
    let mut changes = Vec::new();
    let mut pending_checkout = false;
    for version in 0..=last {
        let group = by_version.remove(&version).unwrap_or_default();
        if version == 0 {
            explain_unchanged(&mut model, &group).unwrap_or_else(|e| panic!("version 0: {e}"));
            continue;
        }
        if group.is_empty() && !pending_checkout {
            pending_checkout = true;
            continue;
        }
        let mut why_not = Vec::new();
        let explained = (0..group.len()).find_map(|changer| {
            let mut next = model.clone();
            let reply = next.apply(&group[changer].op);
            if !reply.changed || (reply.status, reply.body) != observed(group[changer]) {
                return None;
            }
            let others: Vec<&Acked> = group
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != changer)
                .map(|(_, a)| *a)
                .collect();
            match explain_unchanged(&mut next, &others) {
                Ok(()) => Some((next, group[changer])),
                Err(e) => {
                    why_not.push(e);
                    None
                }
            }
        });
        let (next, change) = explained.unwrap_or_else(|| {
            panic!(
                "no serial order explains the replies tagged version {version}: \
                 state at {}: {}\nreplies: {group:#?}\n{why_not:#?}",
                version - 1,
                model.view()
            )
        });
        assert!(
            !pending_checkout || matches!(change.op, CartOp::Checkout),
            "version {} has no reply, and version {version} is not a checkout: {change:?}",
            version - 1
        );
        pending_checkout = false;
        model = next;
        changes.push(change);
    }
    (model, changes)
}

/// Every reply in `group` must be what `model` answers without changing.
fn explain_unchanged(model: &mut CartModel, group: &[&Acked]) -> Result<(), String> {
    for a in group {
        let before = model.view();
        let reply = model.apply(&a.op);
        if reply.changed {
            return Err(format!("{a:?} would change {before} too"));
        }
        if (reply.status, &reply.body) != (observed(a).0, &observed(a).1) {
            return Err(format!(
                "{a:?} does not match the state {before}: the model answers {reply:?}"
            ));
        }
    }
    Ok(())
}

async fn cart_race(store: Store) {
    race_on_one_cart(store, "").await;
}

/// The same race on a worker with one thread (the current-thread runtime a
/// worker pinned to one CPU runs): requests, flushes and the lease share
/// it, and SQLite's blocking calls still wake it.
async fn cart_race_on_one_thread(store: Store) {
    race_on_one_cart(store, "threads: 1\n").await;
}

async fn race_on_one_cart(store: Store, extra_config: &str) {
    let config = format!(
        "flush_interval_ms: 50\nkinds: {{cart: {{settings: {{limits: {{{LIMITED}: {LIMIT}}}}}}}}}\n{extra_config}"
    );
    let worker = Worker::start("w1", &store, Some(&config)).await;
    if !extra_config.is_empty() {
        assert!(
            worker.log().contains("threads=1"),
            "{}",
            worker.log_tail(20)
        );
    }
    let key = unique_key("race-cart");
    let seed: u64 = rand::random();
    eprintln!("cart race seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let started = Instant::now();
    let mut lanes = JoinSet::new();
    for device in 0..DEVICES {
        // One connection pool per device.
        let api = worker.api();
        let ops: Vec<(usize, CartOp, bool)> = (0..OPS_PER_DEVICE)
            .map(|index| (index, random_op(&mut rng), rng.gen_bool(0.1)))
            .collect();
        for lane in 0..LANES_PER_DEVICE {
            let api = api.clone();
            let key = key.clone();
            let mine: Vec<(usize, CartOp, bool)> = ops
                .iter()
                .filter(|(index, _, _)| index % LANES_PER_DEVICE == lane)
                .cloned()
                .collect();
            lanes.spawn(async move {
                let mut acked = Vec::with_capacity(mine.len());
                for (index, op, durable) in mine {
                    let reply = send_cart_op(&api, &key, &op, durable).await;
                    let context = format!("device {device} op {index} {op:?}");
                    let allowed: &[u16] = match op {
                        CartOp::Add { .. } => &[200, 409],
                        CartOp::Remove { .. } => &[200, 404],
                        CartOp::Clear => &[200],
                        CartOp::Checkout => &[201, 409],
                    };
                    assert!(
                        allowed.contains(&reply.status),
                        "{context}: unexpected status {} {}",
                        reply.status,
                        reply.body
                    );
                    assert_eq!(reply.worker(), Some("w1"), "{context}: x-roost-worker");
                    acked.push(Acked {
                        device,
                        index,
                        op,
                        durable,
                        status: reply.status,
                        body: reply.json(),
                        version: reply.expect_version(),
                        epoch: reply.expect_epoch(),
                    });
                }
                acked
            });
        }
    }
    let mut acked = Vec::new();
    while let Some(lane) = lanes.join_next().await {
        acked.extend(lane.expect("a device lane panicked"));
    }
    let elapsed = started.elapsed();
    assert_eq!(acked.len(), DEVICES * OPS_PER_DEVICE);

    // One claim served everything.
    let epoch = acked[0].epoch;
    assert!(
        acked.iter().all(|a| a.epoch == epoch),
        "all replies carry the epoch of the one claim"
    );
    for a in &acked {
        assert_limit_respected(a);
    }

    let (model, in_order) = replay(&acked);
    let changes = acked
        .iter()
        .map(|a| a.version)
        .max()
        .expect("at least one reply");
    let checkouts = in_order
        .iter()
        .filter(|a| matches!(a.op, CartOp::Checkout))
        .count();
    assert_eq!(
        (in_order.len() + checkouts) as u64,
        changes,
        "one change per version, two per checkout (the pending order, then the order)"
    );

    // The final state is the model's: read it back, then from the store.
    let read = worker.api().get_cart(&key).send().await;
    read.expect_status(200, "final GET /v1/cart");
    assert_eq!(
        read.expect_version(),
        changes,
        "the final version is the last acknowledged change"
    );
    assert_eq!(
        read.json(),
        model.view(),
        "the final cart is the serial replay of every acknowledged operation"
    );
    let (items, orders) = cart_of(&read.json());
    assert!(
        items.get(LIMITED).copied().unwrap_or(0)
            + orders
                .iter()
                .filter_map(|(_, o)| o.get(LIMITED))
                .sum::<u64>()
            <= LIMIT,
        "the final state holds at most {LIMIT} of {LIMITED}"
    );
    // Every item ever added (acknowledged adds, counted from the replies) is
    // in the final cart, in an order, or was taken out by an acknowledged
    // remove or clear that the version order places before any checkout
    // that could have taken it.
    for sku in SKUS {
        let added: u64 = acked
            .iter()
            .filter(|a| a.status == 200)
            .filter_map(|a| match &a.op {
                CartOp::Add { sku: s, qty } if s == sku => Some(*qty),
                _ => None,
            })
            .sum();
        let in_cart = items.get(sku).copied().unwrap_or(0);
        let ordered: u64 = orders.iter().filter_map(|(_, o)| o.get(sku)).sum();
        let removed = model.removed.get(sku).copied().unwrap_or(0);
        let cleared = model.cleared.get(sku).copied().unwrap_or(0);
        assert_eq!(
            added,
            in_cart + ordered + removed + cleared,
            "{sku}: added = in cart {in_cart} + ordered {ordered} + removed {removed} + cleared {cleared}"
        );
    }
    // How often a checkout and a clear from different devices raced: one
    // emptied the cart, and the other, served right after it (same
    // version), found nothing to take.
    let empties = |op: &CartOp| matches!(op, CartOp::Checkout | CartOp::Clear);
    let raced = in_order
        .iter()
        .copied()
        .filter(|change| empties(&change.op))
        .filter(|change| {
            acked.iter().any(|other| {
                other.version == change.version
                    && other.device != change.device
                    && empties(&other.op)
                    && !std::ptr::eq(other, *change)
            })
        })
        .count();

    let row = store
        .wait_version(
            &format!("cart/{key}"),
            i64::try_from(changes).expect("fits"),
        )
        .await;
    assert_eq!(row.epoch, epoch, "the stored epoch is the claim's");
    assert_eq!(row.owner, "w1");
    assert_eq!(
        row.entity_state(),
        model.stored(),
        "the stored cart is the model's"
    );

    let count = |f: fn(&Acked) -> bool| acked.iter().filter(|a| f(a)).count();
    eprintln!(
        "cart race ({}): {} mutations in {elapsed:?}; {changes} changes, {} orders, \
         {} limit refusals, {} empty checkouts, {} durable, {raced} checkout/clear \
         races between the devices",
        store.url(),
        acked.len(),
        model.orders.len(),
        count(|a| a.status == 409 && matches!(a.op, CartOp::Add { .. })),
        count(|a| a.status == 409 && a.op == CartOp::Checkout),
        count(|a| a.durable),
    );
    assert!(
        model.orders.len() >= 10,
        "the mix should produce real checkouts"
    );
    assert!(
        raced >= 1,
        "the mix should make checkouts and clears from both devices race"
    );
}

both_stores!(cart_race);
both_stores!(cart_race_on_one_thread);

// ---------------------------------------------------------------------------
// Session: compare-and-set with If-Match, plus merge patches
// ---------------------------------------------------------------------------

const SESSION_LANES_PER_DEVICE: usize = 3;
const INCREMENTS_PER_LANE: u64 = 25;

/// A successful compare-and-set.
#[derive(Debug, Clone)]
struct Cas {
    read_version: u64,
    written_version: u64,
    counter: u64,
}

async fn session_race(store: Store) {
    let worker = Worker::start("w1", &store, Some("flush_interval_ms: 50\n")).await;
    let key = unique_key("race-session");
    let put = worker
        .api()
        .put_session(&key, &json!({"counter": 0, "lanes": {}}))
        .send()
        .await;
    put.expect_status(200, "PUT the initial session");
    let initial = put.expect_version();

    let mut lanes = JoinSet::new();
    for device in 0..DEVICES {
        let api = worker.api();
        for lane in 0..SESSION_LANES_PER_DEVICE {
            let (api, key) = (api.clone(), key.clone());
            let name = format!("d{device}l{lane}");
            lanes.spawn(async move {
                let mut cas = Vec::new();
                let mut conflicts = 0_u64;
                while (cas.len() as u64) < INCREMENTS_PER_LANE {
                    let read = api.get_session(&key).send().await;
                    read.expect_status(200, "GET session");
                    let version = read.expect_version();
                    let counter = read.json()["counter"]
                        .as_u64()
                        .expect("counter is a number");
                    let patch = api
                        .patch_session(&key, &json!({"counter": counter + 1}))
                        .if_match(&format!("\"{version}\""))
                        .send()
                        .await;
                    match patch.status {
                        200 => {
                            let written = patch.expect_version();
                            assert_eq!(
                                patch.json()["counter"],
                                counter + 1,
                                "the PATCH reply shows the new counter"
                            );
                            cas.push(Cas {
                                read_version: version,
                                written_version: written,
                                counter: counter + 1,
                            });
                            // A plain merge patch of this lane's own field.
                            let done = cas.len();
                            let merge = api
                                .patch_session(&key, &json!({"lanes": {name.clone(): done}}))
                                .send()
                                .await;
                            merge.expect_status(200, "merge PATCH");
                            assert_eq!(merge.json()["lanes"][&name], done, "{}", merge.body);
                        }
                        412 => {
                            patch.expect_error(412, "precondition_failed", "stale If-Match");
                            assert_ne!(
                                patch.expect_version(),
                                version,
                                "a 412 is only for a version that moved on"
                            );
                            conflicts += 1;
                        }
                        other => panic!("PATCH with If-Match: unexpected {other} {}", patch.body),
                    }
                }
                (cas, conflicts)
            });
        }
    }
    let mut all = Vec::new();
    let mut conflicts = 0;
    while let Some(lane) = lanes.join_next().await {
        let (cas, c) = lane.expect("a session lane panicked");
        all.extend(cas);
        conflicts += c;
    }
    let lanes_total = (DEVICES * SESSION_LANES_PER_DEVICE) as u64;
    let total = lanes_total * INCREMENTS_PER_LANE;

    // Each compare-and-set wrote the version right after the one it read,
    // and the counters are exactly 1..=total: no increment was lost.
    for c in &all {
        assert_eq!(
            c.written_version,
            c.read_version + 1,
            "a CAS applies on top of what it read: {c:?}"
        );
    }
    let mut versions: Vec<u64> = all.iter().map(|c| c.written_version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len() as u64, total, "distinct versions per CAS");
    let mut counters: Vec<u64> = all.iter().map(|c| c.counter).collect();
    counters.sort_unstable();
    assert_eq!(counters, (1..=total).collect::<Vec<_>>(), "counters");

    let read = worker.api().get_session(&key).send().await;
    let document = read.json();
    assert_eq!(document["counter"], total, "final counter: {document}");
    let expected_lanes: serde_json::Map<String, Value> = (0..DEVICES)
        .flat_map(|d| (0..SESSION_LANES_PER_DEVICE).map(move |l| format!("d{d}l{l}")))
        .map(|name| (name, json!(INCREMENTS_PER_LANE)))
        .collect();
    assert_eq!(
        document["lanes"],
        Value::Object(expected_lanes),
        "every lane's merge patch survived"
    );
    let last = initial + 2 * total;
    assert_eq!(read.expect_version(), last, "one version per change");
    let row = store
        .wait_version(
            &format!("session/{key}"),
            i64::try_from(last).expect("fits"),
        )
        .await;
    assert_eq!(row.entity_state(), document, "the stored session");
    eprintln!(
        "session race ({}): {total} increments, {conflicts} If-Match conflicts",
        store.url()
    );
}

both_stores!(session_race);

// ---------------------------------------------------------------------------
// 2. Fencing across two workers on one store
// ---------------------------------------------------------------------------

const FENCED: &str = "roost_worker_fenced_writes_total";
const REVALIDATION_DROPS: &str = "roost_worker_revalidation_drops_total";

/// A short lease, so a frozen worker's entities are claimed within the
/// test. A flushes rarely, so a write it acknowledges stays unwritten while
/// it is frozen.
const LEASE: &str = "lease_ms: 600\nheartbeat_ms: 150\n";

/// Worker A acknowledges a write-behind write and freezes (SIGSTOP) before
/// flushing it. Once A's lease has run out, B claims the user (bumping the
/// epoch) and writes. When A wakes it must not write its stale row, must
/// drop the entity (its flush fenced, or its revalidation after the lapse),
/// and must never again serve under its old epoch; the store and reads
/// through B show B's state.
async fn fencing(store: Store) {
    let a = Worker::start(
        "wa",
        &store,
        Some(&format!("flush_interval_ms: 3000\n{LEASE}")),
    )
    .await;
    let b = Worker::start(
        "wb",
        &store,
        Some(&format!("flush_interval_ms: 50\n{LEASE}")),
    )
    .await;
    let (api_a, api_b) = (a.api(), b.api());

    let key = unique_key("fence");
    let store_key = format!("cart/{key}");
    let first = api_a
        .add_item(&key, "from-a", 1)
        .durability("durable")
        .send()
        .await;
    first.expect_status(200, "A's first (durable) write");
    let epoch_a = first.expect_epoch();
    let row = store.peek(&store_key).await.expect("A's write is stored");
    assert_eq!(
        (row.epoch, row.owner.as_str(), row.version),
        (epoch_a, "wa", 1)
    );
    let late = api_a
        .add_item(&key, "late-from-a", 1)
        .durability("write-behind")
        .send()
        .await;
    late.expect_status(200, "A's write-behind write is acknowledged");
    let dropped_before = a.metric(FENCED).await + a.metric(REVALIDATION_DROPS).await;
    a.sigstop();

    // B's claim waits for A's lease to run out, then bumps the epoch.
    let asked = Instant::now();
    let read_b = api_b.get_cart(&key).send().await;
    read_b.expect_status(200, "B's first read, once A's lease ran out");
    eprintln!(
        "fencing ({}): B served A's user after {:?}",
        store.url(),
        asked.elapsed()
    );
    assert_eq!(read_b.worker(), Some("wb"));
    let epoch_b = read_b.expect_epoch();
    assert_eq!(epoch_b, epoch_a + 1, "B's claim bumps the epoch");
    assert_eq!(
        cart_of(&read_b.json()).0,
        BTreeMap::from([("from-a".into(), 1)]),
        "B starts from the last flush; A's unflushed write is not in it"
    );
    let b_write = api_b
        .add_item(&key, "from-b", 1)
        .durability("durable")
        .send()
        .await;
    b_write.expect_status(200, "B's durable write");
    assert_eq!(b_write.expect_version(), 2);
    let b_state = b_write.json();

    // A wakes: it drops the entity without writing it.
    a.sigcont();
    let dropped = || async { a.metric(FENCED).await + a.metric(REVALIDATION_DROPS).await };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while dropped().await < dropped_before + 1.0 {
        assert!(
            Instant::now() < deadline,
            "A never dropped the entity it lost; log:\n{}",
            a.log_tail(20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let row = store.peek(&store_key).await.expect("row");
    assert_eq!(
        (row.epoch, row.owner.as_str(), row.version),
        (epoch_b, "wb", 2),
        "A's stale row changed nothing"
    );
    let stored_items: BTreeMap<String, u64> =
        serde_json::from_value(row.entity_state()["items"].clone())
            .expect("stored items are a map");
    assert_eq!(
        stored_items,
        BTreeMap::from([("from-a".into(), 1), ("from-b".into(), 1)]),
        "the store holds B's state, not A's late write"
    );
    let read_b = api_b.get_cart(&key).send().await;
    assert_eq!(read_b.json(), b_state, "B's state, without A's late write");
    assert_eq!(read_b.expect_epoch(), epoch_b);

    // Asked again, A serves only under a new claim (B hands the user over),
    // from B's state.
    let again = api_a.get_cart(&key).send().await;
    again.expect_status(200, "A, asked again after B's hand-over");
    assert!(
        again.expect_epoch() > epoch_b,
        "A never serves under its old epoch again"
    );
    assert_eq!(again.json(), b_state, "A re-reads B's state from the store");
}

both_stores!(fencing);
