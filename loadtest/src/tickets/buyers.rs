//! The buyers: every user has two devices, and each device, once its user
//! arrives, puts the show in the cart (`409 limit_exceeded` is fine: the
//! other device was first, or the user already bought it) and checks out
//! with its own `Idempotency-Key`. A 5xx or a transport error leaves the
//! outcome unknown, so the device retries the same key, with a small
//! backoff, until the reply is decided or [`SalePlan::give_up`] has passed
//! (then the attempt is unresolved: counted, never acknowledged).
//!
//! At most [`SalePlan::concurrency`] devices are busy at once, over one
//! pool of keep-alive connections to the proxy; every attempt goes to the
//! ledger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::plan::{SalePlan, SKU};
use super::stock::SoldGauge;
use crate::client::{http_client, Call, Client};
use crate::ledger::{Kind, Ledger, Op, Phase, Record};
use crate::load::{join_all, user_name};

/// Every device of every user, running.
pub struct Buyers {
    tasks: JoinSet<()>,
}

impl Buyers {
    /// Start every device against the proxy at `base`; user `n` arrives at
    /// [`SalePlan::arrival`]`(n)` from now.
    /// Each acknowledged order is counted in `gauge`.
    pub fn start(
        plan: &SalePlan,
        base: &str,
        ledger: &Ledger,
        gauge: &SoldGauge,
    ) -> Result<Buyers> {
        let start = Instant::now();
        let http = http_client(plan.concurrency)?;
        let permits = Arc::new(Semaphore::new(plan.concurrency));
        let run = format!("{:08x}", rand::random::<u32>());
        let mut tasks = JoinSet::new();
        for n in 0..plan.users {
            let user = user_name(n);
            let arrives = start + plan.arrival(n);
            for device in 0..plan.devices {
                let client = Client::with_http(
                    http.clone(),
                    base,
                    &user,
                    device,
                    Phase::Load,
                    ledger.clone(),
                );
                let buyer = Buyer {
                    client,
                    op_prefix: format!("{run}-{user}-d{device}"),
                    give_up: plan.give_up,
                    gauge: gauge.clone(),
                };
                let permits = Arc::clone(&permits);
                tasks.spawn(async move {
                    tokio::time::sleep_until(arrives.into()).await;
                    let Ok(_permit) = permits.acquire().await else {
                        return;
                    };
                    buyer.buy().await;
                });
            }
        }
        Ok(Buyers { tasks })
    }

    /// Wait until every device is done.
    pub async fn join(self) -> Result<()> {
        join_all(self.tasks, "a buyer task").await.map(drop)
    }
}

/// One device of one user.
struct Buyer {
    client: Client,
    op_prefix: String,
    give_up: Duration,
    gauge: SoldGauge,
}

impl Buyer {
    async fn buy(&self) {
        self.decide(add(format!("{}-add", self.op_prefix))).await;
        let last = self
            .decide(checkout(format!("{}-checkout", self.op_prefix)))
            .await;
        if last.status == Some(201) {
            self.gauge.acked();
        }
    }

    /// Try `call` (same `Idempotency-Key` every time) until decided, or
    /// until `give_up` has passed; the last attempt.
    async fn decide(&self, call: Call) -> Record {
        let deadline = Instant::now() + self.give_up;
        self.client
            .perform(&call, || Instant::now() < deadline)
            .await
    }
}

/// `POST /v1/cart/items {"sku": show, "qty": 1}`.
fn add(op_id: String) -> Call {
    Call::new(Kind::Cart, Op::Add, "/v1/cart/items", op_id).with_body(json!({"sku": SKU, "qty": 1}))
}

/// `POST /v1/cart/checkout` (the op id is its `Idempotency-Key`).
fn checkout(op_id: String) -> Call {
    Call::new(Kind::Cart, Op::Checkout, "/v1/cart/checkout", op_id)
}
