//! `inventory`: a shared entity per SKU (one show's tickets, one product's
//! stock), routed by its own key `inventory:{sku}`, never oversold.
//!
//! Carts reserve stock from it with entity-to-entity calls while checking
//! out, and release what they reserved when another item of the order ran
//! out. Every reservation is kept by its id, so a retried reserve or
//! release (same id, after a failover or a lost reply) applies once; a
//! released reservation stays as a tombstone, so a reserve that arrives
//! after its release is refused rather than applied.
//!
//! `stock` is the number of units left for sale. A SKU never stocked (no
//! admin `PUT`) is untracked: it sells without limit, and `sold` still
//! counts. The admin `PUT {"stock": N}` sets the units left to N.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode_json, encode_json};
use crate::entity::{
    check_name, Access, Context, Durability, Entity, ErrorBody, Outcome, Reply, Scope,
};

/// The inventory entity type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inventory;

/// One SKU's stock and reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryState {
    /// Units left for sale; `None` until stocked (untracked).
    pub stock: Option<u64>,
    /// Units held by reservations not released.
    pub sold: u64,
    /// Reservation id → what it holds.
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub qty: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// The inventory's actions: `GET /v1/inventory/{sku}`; with the admin
/// token, `PUT /v1/inventory/{sku} {"stock"}`; and, from carts only, the
/// calls `reserve` and `release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InventoryRequest {
    Get,
    /// Admin: set the units left for sale.
    Put {
        stock: u64,
    },
    /// Take `qty` units for `reservation`, or refuse (409 `out_of_stock`).
    Reserve {
        reservation: String,
        qty: u64,
    },
    /// Give back what `reservation` took (nothing if it took nothing).
    Release {
        reservation: String,
    },
}

/// The reply body: `{"sku", "stock", "sold"}`.
#[derive(Serialize)]
struct InventoryView<'a> {
    sku: &'a str,
    stock: Option<u64>,
    sold: u64,
}

/// `out_of_stock`'s extra field.
#[derive(Serialize)]
struct Left {
    stock: u64,
}

impl InventoryState {
    fn view<'a>(&self, sku: &'a str) -> InventoryView<'a> {
        InventoryView {
            sku,
            stock: self.stock,
            sold: self.sold,
        }
    }

    fn reserve(&mut self, sku: &str, reservation: String, qty: u64) -> Outcome {
        if let Some(held) = self.reservations.get(&reservation) {
            return if held.released {
                Outcome::read(Reply::error(
                    409,
                    "reservation_released",
                    format!("reservation {reservation} was released"),
                ))
            } else {
                Outcome::read(Reply::ok(self.view(sku)))
            };
        }
        if let Some(stock) = self.stock {
            if stock < qty {
                let message = format!("{qty} of {sku} wanted, {stock} left");
                let body = ErrorBody {
                    error: "out_of_stock".into(),
                    message,
                    extra: Left { stock },
                };
                return Outcome::read(Reply::with_status(409, body));
            }
            self.stock = Some(stock - qty);
        }
        self.sold = self.sold.saturating_add(qty);
        self.reservations.insert(
            reservation,
            Reservation {
                qty,
                released: false,
            },
        );
        Outcome::changed(Reply::ok(self.view(sku)))
    }

    fn release(&mut self, sku: &str, reservation: String) -> Outcome {
        let held = self.reservations.entry(reservation).or_insert(Reservation {
            qty: 0,
            released: false,
        });
        if held.released {
            return Outcome::read(Reply::ok(self.view(sku)));
        }
        held.released = true;
        let qty = std::mem::take(&mut held.qty);
        self.sold = self.sold.saturating_sub(qty);
        if let Some(stock) = self.stock.as_mut() {
            *stock = stock.saturating_add(qty);
        }
        Outcome::changed(Reply::ok(self.view(sku)))
    }
}

impl Entity for Inventory {
    type State = InventoryState;
    type Request = InventoryRequest;
    const KIND: &'static str = "inventory";
    const SCOPE: Scope = Scope::Shared;
    const DURABILITY: Durability = Durability::Durable;

    fn encode(&self, state: &InventoryState) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<InventoryState, String> {
        decode_json(bytes)
    }

    fn access(action: &str) -> Access {
        match action {
            "get" => Access::Read,
            "put" => Access::Admin,
            _ => Access::Calls,
        }
    }

    /// Stock levels are durable whatever a request asks: an acknowledged
    /// stock level is what every later reservation is checked against.
    fn always_durable(&self, _request: &InventoryRequest) -> bool {
        true
    }

    fn validate(&self, request: &InventoryRequest) -> Result<(), Reply> {
        match request {
            InventoryRequest::Reserve { qty: 0, .. } => {
                Err(Reply::error(400, "invalid_qty", "qty must be at least 1"))
            }
            InventoryRequest::Reserve { reservation, .. }
            | InventoryRequest::Release { reservation } => check_name("reservation", reservation),
            _ => Ok(()),
        }
    }

    fn handle(
        &self,
        state: &mut InventoryState,
        request: InventoryRequest,
        ctx: &Context,
    ) -> Outcome {
        let sku = ctx.id();
        match request {
            InventoryRequest::Get => Outcome::read(Reply::ok(state.view(sku))),
            InventoryRequest::Put { stock } => {
                state.stock = Some(stock);
                Outcome::changed(Reply::ok(state.view(sku)))
            }
            InventoryRequest::Reserve { reservation, qty } => state.reserve(sku, reservation, qty),
            InventoryRequest::Release { reservation } => state.release(sku, reservation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            key: "inventory/show-1".into(),
            now_ms: 0,
            version: 0,
            random: 0,
        }
    }

    fn run(state: &mut InventoryState, request: InventoryRequest) -> Option<u16> {
        Inventory.handle(state, request, &ctx()).status()
    }

    fn reserve(id: &str, qty: u64) -> InventoryRequest {
        InventoryRequest::Reserve {
            reservation: id.into(),
            qty,
        }
    }

    fn release(id: &str) -> InventoryRequest {
        InventoryRequest::Release {
            reservation: id.into(),
        }
    }

    #[test]
    fn never_sells_more_than_the_stock() {
        let mut state = InventoryState::default();
        run(&mut state, InventoryRequest::Put { stock: 2 });
        assert_eq!(run(&mut state, reserve("a", 1)), Some(200));
        assert_eq!(run(&mut state, reserve("b", 2)), Some(409));
        assert_eq!(run(&mut state, reserve("c", 1)), Some(200));
        assert_eq!(run(&mut state, reserve("d", 1)), Some(409));
        assert_eq!((state.stock, state.sold), (Some(0), 2));
    }

    #[test]
    fn a_repeated_reserve_or_release_applies_once() {
        let mut state = InventoryState::default();
        run(&mut state, InventoryRequest::Put { stock: 5 });
        assert_eq!(run(&mut state, reserve("a", 2)), Some(200));
        assert_eq!(run(&mut state, reserve("a", 2)), Some(200));
        assert_eq!((state.stock, state.sold), (Some(3), 2));
        assert_eq!(run(&mut state, release("a")), Some(200));
        assert_eq!(run(&mut state, release("a")), Some(200));
        assert_eq!((state.stock, state.sold), (Some(5), 0));
    }

    #[test]
    fn a_reserve_after_its_release_is_refused() {
        let mut state = InventoryState::default();
        run(&mut state, InventoryRequest::Put { stock: 1 });
        assert_eq!(run(&mut state, release("late")), Some(200));
        assert_eq!(run(&mut state, reserve("late", 1)), Some(409));
        assert_eq!((state.stock, state.sold), (Some(1), 0));
    }

    #[test]
    fn an_untracked_sku_sells_without_limit() {
        let mut state = InventoryState::default();
        assert_eq!(run(&mut state, reserve("a", 1_000)), Some(200));
        assert_eq!((state.stock, state.sold), (None, 1_000));
    }
}
