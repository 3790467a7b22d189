//! What a sale's ledger and final state say: how many tickets were sold
//! (read through the proxy, read from the store, seen while selling), who
//! holds them (every user's orders, read back and stored), which orders
//! were acknowledged to a client, what was never decided, and how fast and
//! how smoothly it went. The MUSTs are verdicts over these figures
//! ([`super::report`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::plan::{SalePlan, SKU};
use super::stock::{Inventory, Sample};
use crate::check::availability::Availability;
use crate::check::traffic::LatencySummary;
use crate::check::{describe, Examples};
use crate::ledger::{entity_key, Kind, Op, Phase, Record};
use crate::stored::StoredEntity;

/// Everything a sale's checks found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SaleFindings {
    /// Users at least one of whose adds was acknowledged.
    pub demand: usize,
    /// `min(stock, demand)`: what must be sold.
    pub expected_sold: u64,
    /// The stock put on sale.
    pub stock: u64,
    /// The inventory read through the proxy once the fleet was quiet.
    pub inventory_read: Option<Inventory>,
    /// The inventory's row in the store.
    pub inventory_stored: Option<Inventory>,
    /// The watcher's samples during the load: how many, the most sold any
    /// showed; when the first ticket and the last one were known sold (by
    /// a sample, or by the acknowledged orders, whichever showed it first).
    pub samples: usize,
    pub max_sold_seen: u64,
    pub first_sale_s: Option<f64>,
    pub sold_out_s: Option<f64>,
    /// Every user's orders as read back through the proxy, and as stored.
    pub read: Holdings,
    pub stored: Holdings,
    /// Checkouts answered 201 with an order id.
    pub acked_orders: usize,
    /// Users whose orders read-back never got an answer.
    pub readback_unanswered: usize,
    /// Users whose read-back orders differ from their stored ones.
    pub readback_differs: usize,
    /// Operations given up undecided (no reply below 500).
    pub unresolved_adds: usize,
    pub unresolved_checkouts: usize,
    /// `checkout 201`, `add 409 limit_exceeded`, `watch 200`… → attempts.
    pub statuses: BTreeMap<String, usize>,
    pub throughput: Throughput,
    /// Decided checkouts: first attempt sent → deciding reply.
    pub checkout_ms: LatencySummary,
    pub errors: ErrorWindow,
    /// Per user: from the first failed or slow request to the next success.
    pub availability: Availability,
    pub examples: Examples,
}

/// Who holds tickets, by one source of every user's orders.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Holdings {
    /// Show tickets in orders, in total.
    pub tickets: u64,
    /// Orders that contain the show.
    pub orders: usize,
    /// Users holding more than one ticket.
    pub users_with_two: usize,
    /// Acknowledged orders this source does not show.
    pub missing_acked: usize,
}

/// The buyers' requests over the load phase (first sent → last answered),
/// and over the crowd alone (from the end of the trickle, when everyone
/// else arrives at once, to the last answer): the rate the fleet sustains.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    pub load_s: f64,
    pub requests: usize,
    pub requests_per_s: f64,
    pub checkouts_decided: usize,
    pub checkouts_decided_per_s: f64,
    pub crowd_s: f64,
    pub crowd_requests_per_s: f64,
    pub crowd_checkouts_decided_per_s: f64,
}

/// Failed requests of the load (transport errors, 5xx, unexpected 4xx).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorWindow {
    pub count: usize,
    /// First failed request sent, last one answered (run seconds).
    pub first_s: Option<f64>,
    pub last_s: Option<f64>,
}

impl ErrorWindow {
    /// From the first failed request sent to the last one answered.
    pub fn span_ms(&self) -> f64 {
        match (self.first_s, self.last_s) {
            (Some(first), Some(last)) => (last - first) * 1000.0,
            _ => 0.0,
        }
    }
}

/// A user's orders: id → show tickets in it.
type Orders = BTreeMap<String, u64>;

/// What the checks are asked of.
pub struct SaleFacts<'a> {
    pub plan: &'a SalePlan,
    pub records: &'a [Record],
    pub stored: &'a HashMap<String, StoredEntity>,
    pub inventory_read: Option<Inventory>,
    pub samples: &'a [Sample],
    /// When the crowd (everyone after the trickle) arrived, run µs.
    pub crowd_from_us: u64,
}

impl SaleFindings {
    pub fn examine(facts: &SaleFacts<'_>) -> SaleFindings {
        let records = facts.records;
        let load: Vec<&Record> = records.iter().filter(|r| r.phase == Phase::Load).collect();
        let buyers: Vec<&Record> = load
            .iter()
            .copied()
            .filter(|r| r.entity == Kind::Cart)
            .collect();
        let demand = buyers
            .iter()
            .filter(|r| r.op == Op::Add && r.is_2xx())
            .map(|r| r.user.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        let stock = facts.plan.stock;
        let expected_sold = stock.min(demand as u64);
        let acked = acked_orders(&buyers);
        let (read_orders, readback_unanswered) = read_back_orders(records);
        let stored_orders = stored_orders(facts.stored);
        let mut findings = SaleFindings {
            demand,
            expected_sold,
            stock,
            inventory_read: facts.inventory_read,
            inventory_stored: facts
                .stored
                .get(&entity_key(Kind::Inventory, SKU))
                .and_then(|row| Inventory::of(&row.state)),
            samples: facts.samples.len(),
            max_sold_seen: facts.samples.iter().map(|s| s.sold).max().unwrap_or(0),
            first_sale_s: known_sold_at(facts.samples, &acked, 1),
            sold_out_s: known_sold_at(facts.samples, &acked, expected_sold.max(1)),
            acked_orders: acked.len(),
            readback_unanswered,
            unresolved_adds: unresolved(&buyers, Op::Add),
            unresolved_checkouts: unresolved(&buyers, Op::Checkout),
            statuses: statuses(&load),
            throughput: throughput(&buyers, facts.crowd_from_us),
            checkout_ms: LatencySummary::of(decided_checkouts(&buyers).into_values()),
            errors: error_window(&load),
            availability: Availability::of(records, load_end_us(&load)),
            ..SaleFindings::default()
        };
        findings.read = findings.holdings("read back", &read_orders, &acked);
        findings.stored = findings.holdings("stored", &stored_orders, &acked);
        findings.readback_differs = findings.differences(&read_orders, &stored_orders);
        findings
    }

    /// Holdings by `orders`, with examples of what is wrong.
    fn holdings(
        &mut self,
        source: &str,
        orders: &BTreeMap<String, Orders>,
        acked: &BTreeMap<(String, String), &Record>,
    ) -> Holdings {
        let mut holdings = Holdings::default();
        for (user, orders) in orders {
            let tickets: u64 = orders.values().sum();
            holdings.tickets += tickets;
            holdings.orders += orders.values().filter(|t| **t > 0).count();
            if tickets > 1 {
                holdings.users_with_two += 1;
                self.examples
                    .note(|| format!("{source}: {user} holds {tickets} tickets: {orders:?}"));
            }
        }
        for ((user, id), record) in acked {
            let shown = orders.get(user).is_some_and(|o| o.contains_key(id));
            if !shown {
                holdings.missing_acked += 1;
                self.examples.note(|| {
                    format!(
                        "{source}: acknowledged order {id} missing: {}",
                        describe(record)
                    )
                });
            }
        }
        holdings
    }

    /// Users whose read-back orders are not their stored ones.
    fn differences(
        &mut self,
        read: &BTreeMap<String, Orders>,
        stored: &BTreeMap<String, Orders>,
    ) -> usize {
        let none = Orders::new();
        let mut differ = 0;
        for (user, shown) in read {
            let kept = stored.get(user).unwrap_or(&none);
            if shown != kept {
                differ += 1;
                self.examples
                    .note(|| format!("{user}: read back {shown:?}, stored {kept:?}"));
            }
        }
        differ
    }
}

/// `(user, order id)` → the 201 that acknowledged it.
fn acked_orders<'r>(buyers: &[&'r Record]) -> BTreeMap<(String, String), &'r Record> {
    buyers
        .iter()
        .filter(|r| r.op == Op::Checkout && r.status == Some(201))
        .filter_map(|r| {
            let id = r.body.as_ref()?.get("id")?.as_str()?;
            Some(((r.user.clone(), id.to_owned()), *r))
        })
        .collect()
}

/// Every user's orders from the last successful `GET /v1/orders` of the
/// read-back, and how many users got none.
fn read_back_orders(records: &[Record]) -> (BTreeMap<String, Orders>, usize) {
    let mut answered: BTreeMap<&str, Option<Orders>> = BTreeMap::new();
    for read in records
        .iter()
        .filter(|r| r.phase == Phase::Final && r.entity == Kind::Cart)
    {
        let entry = answered.entry(&read.user).or_default();
        if read.is_2xx() {
            if let Some(body) = &read.body {
                *entry = Some(orders_of(body));
            }
        }
    }
    let unanswered = answered.values().filter(|o| o.is_none()).count();
    let orders = answered
        .into_iter()
        .filter_map(|(user, orders)| Some((user.to_owned(), orders?)))
        .collect();
    (orders, unanswered)
}

/// Every stored cart's orders, by user.
fn stored_orders(stored: &HashMap<String, StoredEntity>) -> BTreeMap<String, Orders> {
    let prefix = format!("{}/", Kind::Cart.name());
    stored
        .iter()
        .filter_map(|(key, row)| {
            Some((key.strip_prefix(&prefix)?.to_owned(), orders_of(&row.state)))
        })
        .filter(|(_, orders)| !orders.is_empty())
        .collect()
}

/// `{"orders": [{"id", "items"}]}` → id → show tickets. Items are a list
/// of `{"sku", "qty"}` in replies and a map `{sku: qty}` in the store.
pub fn orders_of(json: &Value) -> Orders {
    json.get("orders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|order| {
            let id = order.get("id")?.as_str()?.to_owned();
            Some((id, show_tickets(order.get("items")?)))
        })
        .collect()
}

fn show_tickets(items: &Value) -> u64 {
    match items {
        Value::Object(map) => map.get(SKU).and_then(Value::as_u64).unwrap_or(0),
        Value::Array(list) => list
            .iter()
            .filter(|item| item.get("sku").and_then(Value::as_str) == Some(SKU))
            .filter_map(|item| item.get("qty").and_then(Value::as_u64))
            .sum(),
        _ => 0,
    }
}

/// Operations `op` whose every attempt failed undecided (transport or 5xx).
fn unresolved(buyers: &[&Record], op: Op) -> usize {
    let mut decided: HashMap<&str, bool> = HashMap::new();
    for record in buyers.iter().filter(|r| r.op == op) {
        *decided.entry(&record.op_id).or_default() |= record.status.is_some_and(|s| s < 500);
    }
    decided.values().filter(|d| !**d).count()
}

/// Decided checkout operations → first attempt sent to deciding reply, µs.
fn decided_checkouts(buyers: &[&Record]) -> HashMap<String, u64> {
    let mut first_sent: HashMap<&str, u64> = HashMap::new();
    let mut decided: HashMap<String, u64> = HashMap::new();
    for record in buyers.iter().filter(|r| r.op == Op::Checkout) {
        let sent = first_sent.entry(&record.op_id).or_insert(record.t_send_us);
        *sent = (*sent).min(record.t_send_us);
        if record.status.is_some_and(|s| s < 500) {
            decided.insert(record.op_id.clone(), record.t_done_us);
        }
    }
    decided
        .into_iter()
        .map(|(op, done)| {
            let sent = first_sent.get(op.as_str()).copied().unwrap_or(done);
            (op, done.saturating_sub(sent))
        })
        .collect()
}

fn statuses(load: &[&Record]) -> BTreeMap<String, usize> {
    let mut statuses = BTreeMap::new();
    for record in load {
        let what = match (record.entity, record.op) {
            (Kind::Cart, Op::Add) => "add".to_owned(),
            (Kind::Cart, Op::Checkout) => "checkout".to_owned(),
            (Kind::Inventory, Op::Get) => "watch".to_owned(),
            (kind, op) => format!("{} {op:?}", kind.name()),
        };
        *statuses
            .entry(format!("{what} {}", record.outcome_label()))
            .or_default() += 1;
    }
    statuses
}

fn throughput(buyers: &[&Record], crowd_from_us: u64) -> Throughput {
    let start = buyers.iter().map(|r| r.t_send_us).min().unwrap_or(0);
    let end = buyers.iter().map(|r| r.t_done_us).max().unwrap_or(start);
    let span_s = |from: u64| end.saturating_sub(from) as f64 / 1e6;
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let (load_s, crowd_s) = (span_s(start), span_s(crowd_from_us));
    let crowd: Vec<&Record> = buyers
        .iter()
        .copied()
        .filter(|r| r.t_send_us >= crowd_from_us)
        .collect();
    let checkouts_decided = decided_checkouts(buyers).len();
    Throughput {
        load_s,
        requests: buyers.len(),
        requests_per_s: rate(buyers.len(), load_s),
        checkouts_decided,
        checkouts_decided_per_s: rate(checkouts_decided, load_s),
        crowd_s,
        crowd_requests_per_s: rate(crowd.len(), crowd_s),
        crowd_checkouts_decided_per_s: rate(decided_checkouts(&crowd).len(), crowd_s),
    }
}

fn error_window(load: &[&Record]) -> ErrorWindow {
    let failed: Vec<&&Record> = load.iter().filter(|r| !r.is_success()).collect();
    ErrorWindow {
        count: failed.len(),
        first_s: failed.iter().map(|r| r.t_send_us).min().map(secs),
        last_s: failed.iter().map(|r| r.t_done_us).max().map(secs),
    }
}

fn load_end_us(load: &[&Record]) -> u64 {
    load.iter().map(|r| r.t_done_us).max().unwrap_or(0)
}

/// When at least `sold` were first known sold (run seconds): a sample
/// showed it, or the `sold`-th order was acknowledged.
fn known_sold_at(
    samples: &[Sample],
    acked: &BTreeMap<(String, String), &Record>,
    sold: u64,
) -> Option<f64> {
    let shown = samples.iter().find(|s| s.sold >= sold).map(|s| s.t_us);
    let mut acked_at: Vec<u64> = acked.values().map(|r| r.t_done_us).collect();
    acked_at.sort_unstable();
    let nth = usize::try_from(sold)
        .ok()
        .and_then(|n| acked_at.get(n.checked_sub(1)?).copied());
    shown.into_iter().chain(nth).min().map(secs)
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stored::StoredEntity;

    fn reply(user: &str, device: u8, op: Op, status: u16, body: Option<Value>) -> Record {
        let mut record = Record::sample(Kind::Cart, op, 10, 20);
        record.user = user.into();
        record.device = device;
        record.op_id = format!("{user}-d{device}-{op:?}");
        record.status = Some(status);
        record.error = match status {
            409 => Some("empty_cart".into()),
            s if s >= 500 => Some("not_owner".into()),
            _ => None,
        };
        record.body = body;
        record
    }

    fn orders_read(user: &str, ids: &[&str]) -> Record {
        let orders: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "items": [{"sku": SKU, "qty": 1}]}))
            .collect();
        let mut record = reply(user, 255, Op::Get, 200, Some(json!({ "orders": orders })));
        record.phase = Phase::Final;
        record
    }

    fn row(state: Value) -> StoredEntity {
        StoredEntity {
            epoch: 1,
            owner: "w1".into(),
            version: 1,
            state,
        }
    }

    fn examine(records: &[Record], stored: &HashMap<String, StoredEntity>) -> SaleFindings {
        let plan = SalePlan::new(true);
        SaleFindings::examine(&SaleFacts {
            plan: &plan,
            records,
            stored,
            inventory_read: Some(Inventory {
                stock: Some(99),
                sold: 1,
            }),
            samples: &[],
            crowd_from_us: 0,
        })
    }

    #[test]
    fn a_missing_acknowledged_order_and_a_second_ticket_are_found() {
        let records = [
            reply("u1", 0, Op::Add, 200, None),
            reply("u1", 0, Op::Checkout, 201, Some(json!({"id": "order-1"}))),
            reply("u1", 1, Op::Checkout, 409, None),
            reply("u2", 0, Op::Add, 200, None),
            reply("u2", 0, Op::Checkout, 201, Some(json!({"id": "order-9"}))),
            reply("u3", 0, Op::Checkout, 503, None),
            orders_read("u1", &["order-1", "order-2"]),
            orders_read("u2", &[]),
        ];
        let stored = HashMap::from([
            (
                "cart/u1".to_owned(),
                row(json!({"items": {}, "orders": [{"id": "order-1", "items": {"show-1": 1}}]})),
            ),
            (
                "inventory/show-1".to_owned(),
                row(json!({"stock": 99, "sold": 1})),
            ),
        ]);
        let found = examine(&records, &stored);
        assert_eq!(found.demand, 2);
        assert_eq!(found.expected_sold, 2);
        assert_eq!(found.acked_orders, 2);
        assert_eq!(found.read.users_with_two, 1);
        assert_eq!(found.read.missing_acked, 1, "order-9 of u2");
        assert_eq!(found.stored.missing_acked, 1);
        assert_eq!(found.stored.tickets, 1);
        assert_eq!(found.read.tickets, 2);
        assert_eq!(found.readback_differs, 1, "u1 read back two orders");
        assert_eq!(found.unresolved_checkouts, 1, "u3's only reply was a 503");
        assert_eq!(
            found.inventory_stored,
            Some(Inventory {
                stock: Some(99),
                sold: 1
            })
        );
        assert_eq!(found.statuses.get("checkout 201"), Some(&2));
        assert_eq!(found.errors.count, 1);
    }

    #[test]
    fn a_sale_is_known_from_samples_or_acknowledged_orders() {
        let samples = [Sample {
            t_us: 3_000_000,
            stock: Some(0),
            sold: 2,
        }];
        let first = reply("u1", 0, Op::Checkout, 201, Some(json!({"id": "a"})));
        let acked = acked_orders(&[&first]);
        assert_eq!(known_sold_at(&samples, &acked, 1), Some(20e-6));
        assert_eq!(known_sold_at(&samples, &acked, 2), Some(3.0));
        assert_eq!(known_sold_at(&samples, &acked, 3), None);
    }

    #[test]
    fn order_items_count_as_a_list_or_a_map() {
        let reply = json!({"orders": [{"id": "a", "items": [{"sku": "show-1", "qty": 1}, {"sku": "x", "qty": 3}]}]});
        let state = json!({"orders": [{"id": "a", "items": {"show-1": 1, "x": 3}}], "extra": true});
        assert_eq!(orders_of(&reply), orders_of(&state));
        assert_eq!(orders_of(&state).get("a"), Some(&1));
        assert!(orders_of(&json!(null)).is_empty());
    }
}
