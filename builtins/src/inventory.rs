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
//! A reservation is settled when it is released, or confirmed by its
//! maker (a sale that went through: the stock stays sold). A settled
//! reservation is forgotten `forget_after_ms` later (default 10 minutes,
//! far longer than any retry of a call lasts), by an alarm, so an
//! inventory does not grow with every sale it ever made.
//!
//! `stock` is the number of units left for sale. A SKU never stocked (no
//! admin `PUT`) is untracked: it sells without limit, and `sold` still
//! counts. The admin `PUT {"stock": N}` sets the units left to N.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use roost_worker::entity::{
    check_name, decode_json, encode_json, Access, Alarm, Context, Durability, Entity, ErrorBody,
    Outcome, Reply, Scope,
};

/// The inventory entity type, with how long settled reservations are kept.
#[derive(Debug, Clone, Copy)]
pub struct Inventory {
    forget_after_ms: u64,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::from(InventorySettings::default())
    }
}

/// `kinds.inventory.settings` in the worker's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySettings {
    /// How long a released or confirmed reservation is kept (default
    /// 600000: 10 minutes).
    pub forget_after_ms: Option<u64>,
}

impl From<InventorySettings> for Inventory {
    fn from(settings: InventorySettings) -> Self {
        Inventory {
            forget_after_ms: settings.forget_after_ms.unwrap_or(600_000),
        }
    }
}

/// The alarm that forgets settled reservations.
const FORGET: &str = "forget";

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
    /// Its maker confirmed the sale.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
    /// When it was released or confirmed (wall-clock ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at_ms: Option<u64>,
}

/// The inventory's actions: `GET /v1/inventory/{sku}`; with the admin
/// token, `PUT /v1/inventory/{sku} {"stock"}`; and, from other entities
/// only, the calls `reserve`, `release` and `confirm`.
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
    /// The sale `reservation` held went through: keep the stock sold and
    /// forget the reservation later.
    Confirm {
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
                confirmed: false,
                settled_at_ms: None,
            },
        );
        Outcome::changed(Reply::ok(self.view(sku)))
    }

    fn release(&mut self, sku: &str, reservation: String, now_ms: u64) -> Outcome {
        let held = self.reservations.entry(reservation).or_insert(Reservation {
            qty: 0,
            released: false,
            confirmed: false,
            settled_at_ms: None,
        });
        if held.released {
            return Outcome::read(Reply::ok(self.view(sku)));
        }
        if held.confirmed {
            let message = "a confirmed sale cannot be released";
            return Outcome::read(Reply::error(409, "reservation_confirmed", message));
        }
        held.released = true;
        held.settled_at_ms = Some(now_ms);
        let qty = std::mem::take(&mut held.qty);
        self.sold = self.sold.saturating_sub(qty);
        if let Some(stock) = self.stock.as_mut() {
            *stock = stock.saturating_add(qty);
        }
        Outcome::changed(Reply::ok(self.view(sku)))
    }

    fn confirm(&mut self, sku: &str, reservation: &str, now_ms: u64) -> Outcome {
        let Some(held) = self.reservations.get_mut(reservation) else {
            let message = format!("no reservation {reservation} is held");
            return Outcome::read(Reply::error(404, "unknown_reservation", message));
        };
        if held.released {
            let message = format!("reservation {reservation} was released");
            return Outcome::read(Reply::error(409, "reservation_released", message));
        }
        if held.confirmed {
            return Outcome::read(Reply::ok(self.view(sku)));
        }
        held.confirmed = true;
        held.settled_at_ms = Some(now_ms);
        Outcome::changed(Reply::ok(self.view(sku)))
    }

    /// Forget the reservations settled `forget_after_ms` before `now_ms`.
    fn forget_settled(&mut self, forget_after_ms: u64, now_ms: u64) {
        self.reservations.retain(|_, held| {
            held.settled_at_ms
                .is_none_or(|settled| settled.saturating_add(forget_after_ms) > now_ms)
        });
    }

    /// When the next settled reservation is to be forgotten.
    fn next_forget_ms(&self, forget_after_ms: u64) -> Option<u64> {
        self.reservations
            .values()
            .filter_map(|held| held.settled_at_ms)
            .min()
            .map(|settled| settled.saturating_add(forget_after_ms))
    }
}

impl Inventory {
    /// `outcome`, with the forget alarm moved to the next settled
    /// reservation's time (or cancelled) when it changed the state.
    fn with_forget_alarm(&self, state: &InventoryState, outcome: Outcome) -> Outcome {
        if !outcome.changed {
            return outcome;
        }
        match state.next_forget_ms(self.forget_after_ms) {
            Some(at_ms) => outcome.set_alarm(FORGET, at_ms),
            None => outcome.cancel_alarm(FORGET),
        }
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
            | InventoryRequest::Release { reservation }
            | InventoryRequest::Confirm { reservation } => check_name("reservation", reservation),
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
        let outcome = match request {
            InventoryRequest::Get => return Outcome::read(Reply::ok(state.view(sku))),
            InventoryRequest::Put { stock } => {
                state.stock = Some(stock);
                return Outcome::changed(Reply::ok(state.view(sku)));
            }
            InventoryRequest::Reserve { reservation, qty } => {
                return state.reserve(sku, reservation, qty);
            }
            InventoryRequest::Release { reservation } => {
                state.release(sku, reservation, ctx.now_ms)
            }
            InventoryRequest::Confirm { reservation } => {
                state.confirm(sku, &reservation, ctx.now_ms)
            }
        };
        self.with_forget_alarm(state, outcome)
    }

    /// Forget what was settled long enough ago.
    fn on_alarm(&self, state: &mut InventoryState, _alarm: &Alarm, ctx: &Context) -> Outcome {
        state.forget_settled(self.forget_after_ms, ctx.now_ms);
        self.with_forget_alarm(state, Outcome::changed(Reply::no_content()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_worker::entity::AlarmChange;

    fn ctx() -> Context {
        Context {
            key: "inventory/show-1".into(),
            now_ms: 0,
            version: 0,
            random: 0,
        }
    }

    fn run(state: &mut InventoryState, request: InventoryRequest) -> Option<u16> {
        Inventory::default().handle(state, request, &ctx()).status()
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

    #[test]
    fn settled_reservations_are_forgotten_by_alarm_and_a_sale_stays_sold() {
        let inventory = Inventory::from(InventorySettings {
            forget_after_ms: Some(100),
        });
        let at = |now_ms| Context { now_ms, ..ctx() };
        let mut state = InventoryState::default();
        let put = InventoryRequest::Put { stock: 3 };
        inventory.handle(&mut state, put, &at(0));
        inventory.handle(&mut state, reserve("a", 1), &at(0));
        inventory.handle(&mut state, reserve("b", 1), &at(0));
        let confirm = InventoryRequest::Confirm {
            reservation: "a".into(),
        };
        let confirmed = inventory.handle(&mut state, confirm.clone(), &at(10));
        assert_eq!(confirmed.status(), Some(200));
        assert_eq!(
            confirmed.alarms,
            [AlarmChange::Set(Alarm {
                id: FORGET.into(),
                at_ms: 110
            })]
        );
        let released = inventory.handle(&mut state, release("b"), &at(50));
        assert!(released.alarms.contains(&AlarmChange::Set(Alarm {
            id: FORGET.into(),
            at_ms: 110
        })));
        let release_confirmed = inventory.handle(&mut state, release("a"), &at(60));
        assert_eq!(release_confirmed.status(), Some(409));
        let alarm = Alarm {
            id: FORGET.into(),
            at_ms: 110,
        };
        let woken = inventory.on_alarm(&mut state, &alarm, &at(110));
        assert_eq!(state.reservations.keys().collect::<Vec<_>>(), ["b"]);
        assert!(woken.alarms.contains(&AlarmChange::Set(Alarm {
            id: FORGET.into(),
            at_ms: 150
        })));
        inventory.on_alarm(&mut state, &alarm, &at(150));
        assert!(state.reservations.is_empty());
        assert_eq!((state.stock, state.sold), (Some(2), 1), "a's sale stays");
        let unknown = inventory.handle(&mut state, confirm, &at(160));
        assert_eq!(unknown.status(), Some(404));
    }
}
