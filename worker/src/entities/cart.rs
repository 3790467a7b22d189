//! `cart`: items with per-user purchase limits, and an atomic checkout that
//! records an order and empties the cart in one step, whatever other devices
//! of the user are doing (requests to one cart run one at a time).
//!
//! A per-SKU limit ("one per customer") counts what is in the cart plus
//! what the user already ordered.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{decode_json, encode_json};
use crate::entity::{Context, Entity, Outcome, Reply};

/// The cart entity type, with the per-SKU limits from config.
#[derive(Debug, Clone, Default)]
pub struct Cart {
    limits: HashMap<String, u64>,
}

impl Cart {
    pub fn new(limits: HashMap<String, u64>) -> Self {
        Cart { limits }
    }
}

/// One user's cart and order history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CartState {
    /// SKU → quantity (always ≥ 1).
    pub items: BTreeMap<String, u64>,
    pub orders: Vec<Order>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub items: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
pub enum CartRequest {
    Get,
    /// Add `qty` (≥ 1, checked by the API) of `sku`.
    Add {
        sku: String,
        qty: u64,
    },
    Remove {
        sku: String,
    },
    Clear,
    Checkout,
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

    fn handle(&self, cart: &mut CartState, request: CartRequest, _ctx: &Context) -> Outcome {
        match request {
            CartRequest::Get => Outcome::read(Reply::ok(cart.view())),
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
                Outcome {
                    reply: Reply::ok(cart.view()),
                    changed,
                }
            }
            CartRequest::Checkout => checkout(cart),
        }
    }
}

impl Cart {
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

/// Record the cart as an order and empty it, in one step.
fn checkout(cart: &mut CartState) -> Outcome {
    if cart.items.is_empty() {
        return Outcome::read(Reply::error(
            409,
            "empty_cart",
            "there is nothing to check out",
        ));
    }
    let order = Order {
        id: format!("order-{}", cart.orders.len() + 1),
        items: std::mem::take(&mut cart.items),
    };
    let reply = Reply::with_status(201, order.view());
    cart.orders.push(order);
    Outcome::changed(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            now_ms: 0,
            version: 0,
            random: 0,
        }
    }

    fn add(cart: &Cart, state: &mut CartState, sku: &str, qty: u64) -> u16 {
        let request = CartRequest::Add {
            sku: sku.into(),
            qty,
        };
        cart.handle(state, request, &ctx()).reply.status
    }

    #[test]
    fn limit_counts_cart_and_past_orders() {
        let cart = Cart::new(HashMap::from([("tee-limited".to_string(), 1)]));
        let mut state = CartState::default();
        assert_eq!(add(&cart, &mut state, "tee-limited", 2), 409);
        assert_eq!(add(&cart, &mut state, "tee-limited", 1), 200);
        assert_eq!(add(&cart, &mut state, "tee-limited", 1), 409);
        assert_eq!(
            cart.handle(&mut state, CartRequest::Checkout, &ctx())
                .reply
                .status,
            201
        );
        assert_eq!(add(&cart, &mut state, "tee-limited", 1), 409);
        assert_eq!(add(&cart, &mut state, "mug", 5), 200);
    }

    #[test]
    fn checkout_moves_items_into_an_order_and_an_empty_cart_is_refused() {
        let cart = Cart::default();
        let mut state = CartState::default();
        assert_eq!(
            cart.handle(&mut state, CartRequest::Checkout, &ctx())
                .reply
                .status,
            409
        );
        add(&cart, &mut state, "mug", 2);
        let outcome = cart.handle(&mut state, CartRequest::Checkout, &ctx());
        assert!(outcome.changed);
        assert!(state.items.is_empty());
        assert_eq!(state.orders.len(), 1);
        assert_eq!(state.orders[0].items.get("mug"), Some(&2));
    }
}
