//! Order fulfilment on Roost: a workflow entity that coordinates others
//! with calls and alarms.
//!
//! One `order` entity per order is the business process "get this order
//! paid and its stock sold", not a user's bag of data. It reserves the
//! stock from the SKU's `inventory` (a call), waits for the payment with a
//! deadline (an alarm), and then either confirms the sale (a call: the
//! inventory keeps the stock sold and forgets the reservation later) or,
//! when the deadline passes first, releases the stock (a call, from the
//! alarm). Each step is recorded before its call goes out, so a worker
//! that dies mid-way leaves the next owner the same step to finish, and
//! the inventory applies each call once.
//!
//! | request | action |
//! |---|---|
//! | `GET /v1/order/{id}` | the order: `status`, `sku`, `qty`, `deadline_ms` |
//! | `POST /v1/order/{id}/place {"sku", "qty", "pay_within_ms"}` | reserve: 201 `awaiting_payment`, or 409 `out_of_stock` (status `rejected`) |
//! | `POST /v1/order/{id}/pay {"payment"}` | confirm: 200 `confirmed`; 409 `payment_too_late` once expired |
//! | `GET /v1/inventory/{sku}`, `PUT /v1/inventory/{sku} {"stock"}` (admin) | the built-in inventory |
//!
//! Statuses: `new` → `reserving` → `awaiting_payment` → `confirming` →
//! `confirmed`; or `rejected` (no stock); or, at the deadline,
//! `releasing` → `expired`.

use roost_builtins::inventory::{Inventory, InventoryRequest, InventorySettings};
use roost_worker::entity::{
    check_name, decode_json, encode_json, Alarm, Call, Context, Durability, Entity, Outcome, Reply,
    Scope,
};
use roost_worker::kinds::Kinds;
use serde::{Deserialize, Serialize};

/// The kinds `roost-orders` serves: orders and inventories.
pub fn kinds() -> Kinds {
    Kinds::new()
        .register(Fulfilment)
        .register_with(|settings: InventorySettings| Inventory::from(settings))
}

/// The order entity type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fulfilment;

/// The alarm of the payment deadline.
const PAYMENT: &str = "payment";

/// Where an order is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    New,
    Reserving,
    AwaitingPayment,
    Confirming,
    Confirmed,
    Rejected,
    Releasing,
    Expired,
}

/// One order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrderState {
    pub status: Status,
    pub sku: String,
    pub qty: u64,
    /// How long the payment may take, from the reservation.
    pub pay_within_ms: u64,
    /// When the payment deadline is (once reserved).
    pub deadline_ms: Option<u64>,
}

/// An order's actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OrderRequest {
    Get,
    Place {
        sku: String,
        qty: u64,
        pay_within_ms: u64,
    },
    Pay {
        payment: String,
    },
}

impl Entity for Fulfilment {
    type State = OrderState;
    type Request = OrderRequest;
    const KIND: &'static str = "order";
    const SCOPE: Scope = Scope::Shared;
    /// An order is money: acknowledged once durable.
    const DURABILITY: Durability = Durability::Durable;

    fn encode(&self, state: &OrderState) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<OrderState, String> {
        decode_json(bytes)
    }

    fn validate(&self, request: &OrderRequest) -> Result<(), Reply> {
        match request {
            OrderRequest::Place { qty: 0, .. }
            | OrderRequest::Place {
                pay_within_ms: 0, ..
            } => {
                let message = "qty and pay_within_ms must be at least 1";
                Err(Reply::error(400, "invalid_request", message))
            }
            OrderRequest::Place { sku, .. } => check_name("sku", sku),
            OrderRequest::Pay { payment } => check_name("payment", payment),
            OrderRequest::Get => Ok(()),
        }
    }

    fn makes_calls(&self, request: &OrderRequest) -> bool {
        !matches!(request, OrderRequest::Get)
    }

    fn handle(&self, order: &mut OrderState, request: OrderRequest, ctx: &Context) -> Outcome {
        match request {
            OrderRequest::Get => Outcome::read(Reply::ok(&*order)),
            OrderRequest::Place {
                sku,
                qty,
                pay_within_ms,
            } => place(order, sku, qty, pay_within_ms, ctx),
            OrderRequest::Pay { .. } => pay(order, ctx),
        }
    }

    fn on_replies(&self, order: &mut OrderState, replies: Vec<Reply>, ctx: &Context) -> Outcome {
        let done = replies
            .first()
            .is_some_and(|r| (200..300).contains(&r.status));
        match (order.status, done) {
            (Status::Reserving, true) => {
                let deadline = ctx.now_ms.saturating_add(order.pay_within_ms);
                order.status = Status::AwaitingPayment;
                order.deadline_ms = Some(deadline);
                Outcome::changed(Reply::with_status(201, &*order)).set_alarm(PAYMENT, deadline)
            }
            (Status::Reserving, false) => {
                order.status = Status::Rejected;
                let message = format!("not enough {} in stock", order.sku);
                Outcome::changed(Reply::error(409, "out_of_stock", message))
            }
            (Status::Confirming, _) => {
                // The reservation is held until the deadline, which only
                // this order's own alarm acts on: a confirm is decided.
                order.status = Status::Confirmed;
                Outcome::changed(Reply::ok(&*order)).cancel_alarm(PAYMENT)
            }
            (Status::Releasing, _) => {
                order.status = Status::Expired;
                Outcome::changed(Reply::no_content())
            }
            (status, _) => {
                let message = format!("replies arrived for an order that is {status:?}");
                Outcome::read(Reply::error(500, "unexpected_replies", message))
            }
        }
    }

    /// The payment deadline passed: release the stock.
    fn on_alarm(&self, order: &mut OrderState, _alarm: &Alarm, ctx: &Context) -> Outcome {
        if order.status != Status::AwaitingPayment {
            return Outcome::changed(Reply::no_content());
        }
        order.status = Status::Releasing;
        let release = InventoryRequest::Release {
            reservation: ctx.id().to_owned(),
        };
        let call = Call::to::<Inventory>(&order.sku, &release, format!("{}/release", ctx.id()));
        Outcome::calls(vec![call], true)
    }
}

/// Reserve the stock, once: placing the same order again answers with
/// where it is.
fn place(
    order: &mut OrderState,
    sku: String,
    qty: u64,
    pay_within_ms: u64,
    ctx: &Context,
) -> Outcome {
    if order.status != Status::New {
        if order.sku == sku && order.qty == qty {
            return Outcome::read(Reply::ok(&*order));
        }
        let message = "this order was placed for another item";
        return Outcome::read(Reply::error(409, "already_placed", message));
    }
    *order = OrderState {
        status: Status::Reserving,
        sku,
        qty,
        pay_within_ms,
        deadline_ms: None,
    };
    let reserve = InventoryRequest::Reserve {
        reservation: ctx.id().to_owned(),
        qty,
    };
    let call = Call::to::<Inventory>(&order.sku, &reserve, format!("{}/reserve", ctx.id()));
    Outcome::calls(vec![call], true)
}

/// Confirm the sale while the deadline has not passed.
fn pay(order: &mut OrderState, ctx: &Context) -> Outcome {
    match order.status {
        Status::AwaitingPayment => {
            order.status = Status::Confirming;
            let confirm = InventoryRequest::Confirm {
                reservation: ctx.id().to_owned(),
            };
            let id = format!("{}/confirm", ctx.id());
            Outcome::calls(vec![Call::to::<Inventory>(&order.sku, &confirm, id)], true)
        }
        Status::Confirmed => Outcome::read(Reply::ok(&*order)),
        Status::Expired | Status::Releasing => Outcome::read(Reply::error(
            409,
            "payment_too_late",
            "the payment deadline passed and the stock was released",
        )),
        _ => Outcome::read(Reply::error(
            409,
            "not_awaiting_payment",
            "this order is not waiting for a payment",
        )),
    }
}
