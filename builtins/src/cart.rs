//! `cart`: items with per-user purchase limits, and a checkout that reserves
//! every item's stock from its [`inventory`](super::inventory) entity, all
//! or nothing, then records the order and empties the cart, whatever other
//! devices of the user are doing (requests to one cart run one at a time,
//! and a checkout holds the cart until it is decided).
//!
//! A per-SKU limit ("one per customer") counts what is in the cart plus
//! what the user already ordered.
//!
//! # Checkout
//!
//! 1. The order is written down as pending (with a reservation id unique to
//!    this attempt) and one `reserve` call goes to each item's inventory.
//! 2. All reserved: the order is recorded, the cart emptied: 201.
//! 3. Some refused: the reservations made are released (a second round of
//!    calls), the pending order dropped, the cart kept: 409 `out_of_stock`
//!    with the SKUs that ran out.
//!
//! The pending order is committed before the calls go out, so if the worker
//! dies mid-way the next owner of the cart finishes the same attempt with
//! the same reservation ids (the runtime does it before the cart's next
//! request), and the inventories apply each id once.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use roost_worker::entity::Method;
use serde::{Deserialize, Serialize};

use super::inventory::{Inventory, InventoryRequest};
use roost_worker::entity::{
    check_name, decode_json, encode_json, Access, Alarm, Alias, Call, Context, Entity, ErrorBody,
    Outcome, Reply,
};

/// The cart entity type, with the per-SKU limits and the abandonment
/// timer from config.
#[derive(Debug, Clone, Default)]
pub struct Cart {
    limits: HashMap<String, u64>,
    /// Empty a cart left untouched this long (`None`: never).
    abandon_after_ms: Option<u64>,
}

impl Cart {
    pub fn new(limits: HashMap<String, u64>) -> Self {
        Cart {
            limits,
            abandon_after_ms: None,
        }
    }
}

/// The alarm that empties an abandoned cart.
const ABANDON: &str = "abandon";

/// `kinds.cart.settings` in the worker's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartSettings {
    /// Per-SKU, per-user purchase limits: `{tee-limited: 1}`.
    #[serde(default)]
    pub limits: HashMap<String, NonZeroU64>,
    /// Empty a cart whose items nobody touched for this long (an alarm
    /// set at every change; default: never).
    pub abandon_after_ms: Option<NonZeroU64>,
}

impl From<CartSettings> for Cart {
    fn from(settings: CartSettings) -> Self {
        let limits = settings
            .limits
            .into_iter()
            .map(|(sku, limit)| (sku, limit.get()))
            .collect();
        Cart {
            limits,
            abandon_after_ms: settings.abandon_after_ms.map(NonZeroU64::get),
        }
    }
}

/// One user's cart and order history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CartState {
    /// SKU → quantity (always ≥ 1).
    pub items: BTreeMap<String, u64>,
    pub orders: Vec<Order>,
    /// The checkout in progress, if its calls are not all answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<PendingCheckout>,
}

/// A checkout between its first call and its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCheckout {
    pub order: Order,
    /// The id every inventory knows this attempt's reservations by.
    pub reservation: String,
    /// SKUs that ran out; once set, the reservations made are being released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub items: BTreeMap<String, u64>,
}

/// The cart's actions: `GET /v1/cart`, `POST /v1/cart/add {"sku", "qty"}`,
/// `POST /v1/cart/remove {"sku"}`, `POST /v1/cart/clear`,
/// `POST /v1/cart/checkout`, `GET /v1/cart/orders`, and the routes the cart
/// had before the generic scheme ([`Cart::aliases`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CartRequest {
    Get,
    /// Add `qty` (≥ 1) of `sku`.
    Add {
        sku: String,
        qty: u64,
    },
    Remove {
        sku: String,
    },
    Clear,
    Checkout,
    /// The user's orders.
    Orders,
}

impl CartState {
    /// The reply body: `{"items": [{"sku", "qty"}...], "orders": [...]}`.
    fn view(&self) -> CartView<'_> {
        CartView {
            items: ItemsView(&self.items),
            orders: self.orders.iter().map(Order::view).collect(),
        }
    }

    fn ordered(&self, sku: &str) -> u64 {
        self.orders.iter().filter_map(|o| o.items.get(sku)).sum()
    }
}

impl Order {
    fn view(&self) -> OrderView<'_> {
        OrderView {
            id: &self.id,
            items: ItemsView(&self.items),
        }
    }
}

/// Reply bodies, serialized straight from the state they borrow.
#[derive(Serialize)]
struct CartView<'a> {
    items: ItemsView<'a>,
    orders: Vec<OrderView<'a>>,
}

#[derive(Serialize)]
struct OrdersView<'a> {
    orders: Vec<OrderView<'a>>,
}

/// `out_of_stock`'s extra field.
#[derive(Serialize)]
struct RanOut<'a> {
    skus: &'a [String],
}

#[derive(Serialize)]
struct OrderView<'a> {
    id: &'a str,
    items: ItemsView<'a>,
}

/// SKU → quantity as a list of `{"sku", "qty"}`.
struct ItemsView<'a>(&'a BTreeMap<String, u64>);

impl Serialize for ItemsView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Item<'a> {
            sku: &'a str,
            qty: u64,
        }
        serializer.collect_seq(self.0.iter().map(|(sku, &qty)| Item { sku, qty }))
    }
}

impl Entity for Cart {
    type State = CartState;
    type Request = CartRequest;
    const KIND: &'static str = "cart";

    fn encode(&self, state: &CartState) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<CartState, String> {
        decode_json(bytes)
    }

    fn access(action: &str) -> Access {
        match action {
            "get" | "orders" => Access::Read,
            _ => Access::Write,
        }
    }

    fn validate(&self, request: &CartRequest) -> Result<(), Reply> {
        match request {
            CartRequest::Add { qty: 0, .. } => {
                Err(Reply::error(400, "invalid_qty", "qty must be at least 1"))
            }
            CartRequest::Add { sku, .. } | CartRequest::Remove { sku } => check_name("sku", sku),
            _ => Ok(()),
        }
    }

    /// The cart's routes from before the generic scheme.
    fn aliases() -> Vec<Alias> {
        vec![
            Alias::new(Method::POST, "/v1/cart/items", "add"),
            Alias::new(Method::DELETE, "/v1/cart/items/{sku}", "remove"),
            Alias::new(Method::DELETE, "/v1/cart", "clear"),
            Alias::new(Method::GET, "/v1/orders", "orders"),
        ]
    }

    fn makes_calls(&self, request: &CartRequest) -> bool {
        matches!(request, CartRequest::Checkout)
    }

    fn handle(&self, cart: &mut CartState, request: CartRequest, ctx: &Context) -> Outcome {
        let outcome = match request {
            CartRequest::Get => Outcome::read(Reply::ok(cart.view())),
            CartRequest::Orders => Outcome::read(Reply::ok(OrdersView {
                orders: cart.orders.iter().map(Order::view).collect(),
            })),
            CartRequest::Add { sku, qty } => self.add(cart, sku, qty),
            CartRequest::Remove { sku } => match cart.items.remove(&sku) {
                Some(_) => Outcome::changed(Reply::ok(cart.view())),
                None => Outcome::read(Reply::error(
                    404,
                    "not_in_cart",
                    format!("{sku} is not in the cart"),
                )),
            },
            CartRequest::Clear => {
                let changed = !cart.items.is_empty();
                cart.items.clear();
                Outcome::answer(Reply::ok(cart.view()), changed)
            }
            CartRequest::Checkout => start_checkout(cart, ctx),
        };
        self.with_abandon_alarm(cart, outcome, ctx.now_ms)
    }

    /// The cart was left untouched for `abandon_after_ms`: empty it
    /// (unless a checkout is deciding it).
    fn on_alarm(&self, cart: &mut CartState, _alarm: &Alarm, _ctx: &Context) -> Outcome {
        if cart.checkout.is_none() {
            cart.items.clear();
        }
        Outcome::changed(Reply::no_content())
    }

    fn on_replies(&self, cart: &mut CartState, replies: Vec<Reply>, ctx: &Context) -> Outcome {
        let outcome = self.replied(cart, replies);
        self.with_abandon_alarm(cart, outcome, ctx.now_ms)
    }
}

impl Cart {
    /// `outcome`, with the abandonment alarm set again after a change to a
    /// cart with items, or cancelled when it is empty.
    fn with_abandon_alarm(&self, cart: &CartState, outcome: Outcome, now_ms: u64) -> Outcome {
        match self.abandon_after_ms {
            Some(_) if !outcome.changed => outcome,
            Some(_) if cart.items.is_empty() => outcome.cancel_alarm(ABANDON),
            Some(after) => outcome.set_alarm(ABANDON, now_ms.saturating_add(after)),
            None => outcome,
        }
    }

    /// The replies to a checkout's calls: the next round, or the reply.
    fn replied(&self, cart: &mut CartState, replies: Vec<Reply>) -> Outcome {
        let Some(pending) = cart.checkout.as_mut() else {
            let message = "replies arrived for a checkout that is not pending";
            return Outcome::read(Reply::error(500, "no_checkout", message));
        };
        if !pending.refused.is_empty() {
            // The releases are answered: the attempt is over.
            return refuse_checkout(cart);
        }
        let (mut reserved, mut refused) = (Vec::new(), Vec::new());
        for (sku, reply) in pending.order.items.keys().zip(&replies) {
            if (200..300).contains(&reply.status) {
                reserved.push(sku.clone());
            } else {
                refused.push(sku.clone());
            }
        }
        if refused.is_empty() {
            return finish_checkout(cart);
        }
        pending.refused = refused;
        if reserved.is_empty() {
            return refuse_checkout(cart);
        }
        let release = InventoryRequest::Release {
            reservation: pending.reservation.clone(),
        };
        let id = format!("{}/release", pending.reservation);
        let calls = reserved
            .iter()
            .map(|sku| Call::to::<Inventory>(sku, &release, id.clone()))
            .collect();
        Outcome::calls(calls, true)
    }

    fn add(&self, cart: &mut CartState, sku: String, qty: u64) -> Outcome {
        let in_cart = cart.items.get(&sku).copied().unwrap_or(0);
        if let Some(&limit) = self.limits.get(&sku) {
            let held = in_cart + cart.ordered(&sku);
            if held.saturating_add(qty) > limit {
                let message = format!("at most {limit} of {sku} per customer; you hold {held}");
                return Outcome::read(Reply::error(409, "limit_exceeded", message));
            }
        }
        cart.items.insert(sku, in_cart.saturating_add(qty));
        Outcome::changed(Reply::ok(cart.view()))
    }
}

/// Write the order down as pending and ask every item's inventory to
/// reserve it.
fn start_checkout(cart: &mut CartState, ctx: &Context) -> Outcome {
    if cart.items.is_empty() {
        return Outcome::read(Reply::error(
            409,
            "empty_cart",
            "there is nothing to check out",
        ));
    }
    let order = Order {
        id: format!("order-{}", cart.orders.len() + 1),
        items: cart.items.clone(),
    };
    // Unique per attempt: a refused attempt's released reservations must not
    // answer the next attempt's reserves.
    let reservation = format!("{}/{}@{}", ctx.id(), order.id, ctx.version);
    let id = format!("{reservation}/reserve");
    let calls = order
        .items
        .iter()
        .map(|(sku, &qty)| {
            let reserve = InventoryRequest::Reserve {
                reservation: reservation.clone(),
                qty,
            };
            Call::to::<Inventory>(sku, &reserve, id.clone())
        })
        .collect();
    cart.checkout = Some(PendingCheckout {
        order,
        reservation,
        refused: Vec::new(),
    });
    Outcome::calls(calls, true)
}

/// Every item is reserved: record the order and empty the cart.
fn finish_checkout(cart: &mut CartState) -> Outcome {
    let Some(PendingCheckout { order, .. }) = cart.checkout.take() else {
        return Outcome::read(Reply::error(500, "no_checkout", "no checkout is pending"));
    };
    for sku in order.items.keys() {
        cart.items.remove(sku);
    }
    let reply = Reply::with_status(201, order.view());
    cart.orders.push(order);
    Outcome::changed(reply)
}

/// Some item ran out and what was reserved is released: drop the pending
/// order, keep the cart.
fn refuse_checkout(cart: &mut CartState) -> Outcome {
    let refused = cart
        .checkout
        .take()
        .map(|pending| pending.refused)
        .unwrap_or_default();
    let body = ErrorBody {
        error: "out_of_stock".into(),
        message: format!("not enough stock of {}", refused.join(", ")),
        extra: RanOut { skus: &refused },
    };
    Outcome::changed(Reply::with_status(409, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_worker::entity::Next;

    fn ctx() -> Context {
        Context {
            key: "cart/alice".into(),
            now_ms: 0,
            version: 7,
            random: 0,
        }
    }

    fn add(cart: &Cart, state: &mut CartState, sku: &str, qty: u64) -> Option<u16> {
        let request = CartRequest::Add {
            sku: sku.into(),
            qty,
        };
        cart.handle(state, request, &ctx()).status()
    }

    fn calls(outcome: Outcome) -> Vec<Call> {
        match outcome.next {
            Next::Calls(calls) => calls,
            Next::Reply(reply) => panic!("expected calls, got {reply:?}"),
        }
    }

    fn replies(statuses: &[u16]) -> Vec<Reply> {
        statuses
            .iter()
            .map(|&status| Reply::with_status(status, serde_json::json!({})))
            .collect()
    }

    /// Check out, answering the reserves with `statuses`.
    fn checkout(cart: &Cart, state: &mut CartState, statuses: &[u16]) -> Outcome {
        let reserves = calls(cart.handle(state, CartRequest::Checkout, &ctx()));
        assert_eq!(reserves.len(), statuses.len());
        cart.on_replies(state, replies(statuses), &ctx())
    }

    #[test]
    fn limit_counts_cart_and_past_orders() {
        let cart = Cart::new(HashMap::from([("tee-limited".to_string(), 1)]));
        let mut state = CartState::default();
        assert_eq!(add(&cart, &mut state, "tee-limited", 2), Some(409));
        assert_eq!(add(&cart, &mut state, "tee-limited", 1), Some(200));
        assert_eq!(add(&cart, &mut state, "tee-limited", 1), Some(409));
        assert_eq!(checkout(&cart, &mut state, &[200]).status(), Some(201));
        assert_eq!(add(&cart, &mut state, "tee-limited", 1), Some(409));
        assert_eq!(add(&cart, &mut state, "mug", 5), Some(200));
    }

    #[test]
    fn checkout_reserves_each_item_then_records_the_order() {
        let cart = Cart::default();
        let mut state = CartState::default();
        add(&cart, &mut state, "mug", 2);
        add(&cart, &mut state, "tee", 1);
        let reserves = calls(cart.handle(&mut state, CartRequest::Checkout, &ctx()));
        let routed: Vec<&str> = reserves.iter().map(|c| c.routing_key.as_str()).collect();
        assert_eq!(routed, ["inventory:mug", "inventory:tee"]);
        assert_eq!(
            reserves[0].body.get(),
            r#"{"reservation":"alice/order-1@7","qty":2}"#
        );
        assert_eq!(reserves[0].idempotency_id, "alice/order-1@7/reserve");
        assert!(
            state.checkout.is_some(),
            "the attempt is written down first"
        );
        let outcome = cart.on_replies(&mut state, replies(&[200, 200]), &ctx());
        assert_eq!(outcome.status(), Some(201));
        assert!(state.items.is_empty() && state.checkout.is_none());
        assert_eq!(state.orders.len(), 1);
        assert_eq!(state.orders[0].items.get("mug"), Some(&2));
    }

    #[test]
    fn a_refused_item_releases_the_others_and_keeps_the_cart() {
        let cart = Cart::default();
        let mut state = CartState::default();
        add(&cart, &mut state, "mug", 1);
        add(&cart, &mut state, "tee", 1);
        let releases = calls(checkout(&cart, &mut state, &[200, 409]));
        assert_eq!(releases.len(), 1);
        assert_eq!(releases[0].routing_key, "inventory:mug");
        assert_eq!(
            releases[0].body.get(),
            r#"{"reservation":"alice/order-1@7"}"#
        );
        let outcome = cart.on_replies(&mut state, replies(&[200]), &ctx());
        assert_eq!(outcome.status(), Some(409));
        let body = outcome.reply().map(Reply::body_text).unwrap_or_default();
        assert!(body.contains(r#""skus":["tee"]"#), "{body}");
        assert_eq!(state.items.len(), 2);
        assert!(state.orders.is_empty() && state.checkout.is_none());
    }

    #[test]
    fn an_empty_cart_is_refused_without_calls() {
        let cart = Cart::default();
        let mut state = CartState::default();
        let outcome = cart.handle(&mut state, CartRequest::Checkout, &ctx());
        assert_eq!(outcome.status(), Some(409));
        assert!(!outcome.changed);
    }

    #[test]
    fn an_untouched_cart_is_emptied_by_its_abandonment_alarm() {
        let cart = Cart::from(CartSettings {
            abandon_after_ms: std::num::NonZeroU64::new(1000),
            ..CartSettings::default()
        });
        let mut state = CartState::default();
        let add = CartRequest::Add {
            sku: "mug".into(),
            qty: 1,
        };
        let added = cart.handle(&mut state, add, &ctx());
        let due = roost_worker::entity::AlarmChange::Set(Alarm {
            id: ABANDON.into(),
            at_ms: 1000,
        });
        assert_eq!(added.alarms, [due]);
        let read = cart.handle(&mut state, CartRequest::Get, &ctx());
        assert!(read.alarms.is_empty(), "a read moves no alarm");
        let alarm = Alarm {
            id: ABANDON.into(),
            at_ms: 1000,
        };
        cart.on_alarm(&mut state, &alarm, &ctx());
        assert!(state.items.is_empty());
        let cleared = cart.handle(&mut state, CartRequest::Clear, &ctx());
        assert!(cleared.alarms.is_empty(), "nothing changed");
        let without = Cart::default().handle(
            &mut state,
            CartRequest::Add {
                sku: "mug".into(),
                qty: 1,
            },
            &ctx(),
        );
        assert!(without.alarms.is_empty(), "no timer unless configured");
    }
}
