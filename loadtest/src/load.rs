//! The simulated users: each has two devices (two tasks, two connection
//! pools) sending a mixed load through the proxy with a little think time,
//! until told to stop. Every mutation leaves a unique trace (a session
//! field, a cart SKU, a quota token) so the final state tells which
//! acknowledged writes survived; the mix covers durable and write-behind
//! writes and reads of both entity kinds that have one.
//!
//! After the load, [`read_back`] reads every user's session and cart once
//! more through the proxy, to compare with the store (the ticket sale
//! reads every buyer's orders with it).

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{http_client, Call, Client};
use crate::ledger::{Durability, Effect, Kind, Ledger, Op, Phase};

/// The one quota every user acquires and releases tokens of.
const QUOTA: &str = "uploads";
/// High enough that the load never meets it (a 429 is not what is tested).
const QUOTA_LIMIT: u64 = 1000;
/// Longer than any run, so no token expires before the final check.
const QUOTA_TTL_MS: u64 = 3_600_000;
/// One session write in this many asks for `durable`; the rest write-behind.
const DURABLE_SESSION_EVERY: u32 = 4;
/// The device number of the read-back after the load.
pub const READ_BACK_DEVICE: u8 = 255;
/// Read-backs in flight at once.
const READ_BACK_CONCURRENCY: usize = 32;

/// How many users, and how fast they go.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub users: usize,
    pub devices: u8,
    /// Pause between a device's operations, drawn uniformly.
    pub think_ms: RangeInclusive<u64>,
}

/// The user key of user `n`.
pub fn user_name(n: usize) -> String {
    format!("u{n}")
}

/// The running load.
pub struct Load {
    tasks: JoinSet<()>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Start every device of every user against the proxy at `base`.
    pub fn start(plan: &LoadPlan, base: &str, ledger: &Ledger) -> Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let run = format!("{:08x}", rand::random::<u32>());
        let mut tasks = JoinSet::new();
        for n in 0..plan.users {
            let user = user_name(n);
            for device in 0..plan.devices {
                let client = Client::new(base, &user, device, Phase::Load, ledger.clone())?;
                let device = Device {
                    client,
                    device,
                    op_prefix: format!("{run}-{user}-d{device}"),
                    seq: 0,
                    held_token: None,
                    rng: StdRng::from_entropy(),
                    think_ms: plan.think_ms.clone(),
                    stop: Arc::clone(&stop),
                };
                tasks.spawn(device.run());
            }
        }
        Ok(Load { tasks, stop })
    }

    /// Ask every device to stop after its current operation (a retry in
    /// progress is not repeated).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Wait until every device has stopped.
    pub async fn join(self) -> Result<()> {
        join_all(self.tasks, "a device task").await.map(drop)
    }
}

/// One device of one user.
struct Device {
    client: Client,
    device: u8,
    op_prefix: String,
    seq: u64,
    /// The quota token this device holds, to release next.
    held_token: Option<String>,
    rng: StdRng,
    think_ms: RangeInclusive<u64>,
    stop: Arc<AtomicBool>,
}

impl Device {
    async fn run(mut self) {
        // Spread the first requests over one think time.
        let start = self.rng.gen_range(0..=*self.think_ms.end());
        tokio::time::sleep(Duration::from_millis(start)).await;
        while !self.stop.load(Ordering::Relaxed) {
            let call = self.next_call();
            let stop = Arc::clone(&self.stop);
            let last = self
                .client
                .perform(&call, || !stop.load(Ordering::Relaxed))
                .await;
            if let (true, Some(Effect::QuotaToken { token, .. })) = (last.is_2xx(), &last.effect) {
                self.held_token.clone_from(token);
            }
            let think = self.rng.gen_range(self.think_ms.clone());
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    /// The next operation: 25% session write, 20% session read, 20% cart
    /// add, 15% cart read, 20% quota (release the held token, or acquire).
    fn next_call(&mut self) -> Call {
        self.seq += 1;
        let seq = self.seq;
        let op_id = format!("{}-{seq}", self.op_prefix);
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=24 => self.session_write(op_id, seq),
            25..=44 => read(Kind::Session, "/v1/session", op_id),
            45..=64 => self.cart_add(op_id, seq),
            65..=79 => read(Kind::Cart, "/v1/cart", op_id),
            _ => match self.held_token.take() {
                Some(token) => quota_release(op_id, token),
                None => quota_acquire(op_id),
            },
        }
    }

    fn session_write(&mut self, op_id: String, seq: u64) -> Call {
        let field = format!("d{}_s{seq}", self.device);
        let durability = if self.rng.gen_ratio(1, DURABLE_SESSION_EVERY) {
            Durability::Durable
        } else {
            Durability::WriteBehind
        };
        Call {
            entity: Kind::Session,
            op: Op::Patch,
            path: "/v1/session".into(),
            body: Some(json!({ field.clone(): seq })),
            durability: Some(durability),
            op_id,
            effect: Some(Effect::SessionField { field, value: seq }),
        }
    }

    fn cart_add(&self, op_id: String, seq: u64) -> Call {
        let sku = format!("d{}-c{seq}", self.device);
        Call {
            entity: Kind::Cart,
            op: Op::Add,
            path: "/v1/cart/items".into(),
            body: Some(json!({"sku": sku, "qty": 1})),
            durability: Some(Durability::Durable),
            op_id,
            effect: Some(Effect::CartItem { sku }),
        }
    }
}

/// A `GET` of `path`.
pub fn read(entity: Kind, path: &str, op_id: String) -> Call {
    Call::new(entity, Op::Get, path, op_id)
}

fn quota_acquire(op_id: String) -> Call {
    Call {
        entity: Kind::Quota,
        op: Op::Acquire,
        path: format!("/v1/quota/{QUOTA}/acquire"),
        body: Some(json!({"limit": QUOTA_LIMIT, "ttl_ms": QUOTA_TTL_MS})),
        durability: Some(Durability::Durable),
        op_id,
        effect: Some(Effect::QuotaToken {
            name: QUOTA.into(),
            token: None,
        }),
    }
}

fn quota_release(op_id: String, token: String) -> Call {
    Call {
        entity: Kind::Quota,
        op: Op::Release,
        path: format!("/v1/quota/{QUOTA}/release"),
        body: Some(json!({ "token": token })),
        durability: Some(Durability::Durable),
        op_id,
        effect: Some(Effect::QuotaRelease {
            name: QUOTA.into(),
            token,
        }),
    }
}

/// What the fault suite reads back: every user's session and cart.
pub const SESSION_AND_CART: &[(Kind, &str)] =
    &[(Kind::Session, "/v1/session"), (Kind::Cart, "/v1/cart")];

/// `GET` each of `reads` (entity kind, path) once for every user through
/// the proxy (phase `Final` in the ledger), retrying like the load does,
/// over one shared pool of keep-alive connections.
pub async fn read_back(
    users: &[String],
    reads: &'static [(Kind, &'static str)],
    base: &str,
    ledger: &Ledger,
) -> Result<()> {
    let http = http_client(READ_BACK_CONCURRENCY)?;
    let permits = Arc::new(Semaphore::new(READ_BACK_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for user in users {
        let client = Client::with_http(
            http.clone(),
            base,
            user,
            READ_BACK_DEVICE,
            Phase::Final,
            ledger.clone(),
        );
        let permits = Arc::clone(&permits);
        let user = user.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire().await;
            for &(kind, path) in reads {
                let call = read(kind, path, format!("read-back-{user}-{}", kind.name()));
                client.perform(&call, || true).await;
            }
        });
    }
    join_all(tasks, "a read-back task").await.map(drop)
}

/// Wait for every task of `tasks`; their results, or an error naming
/// `what` failed (a panic).
pub async fn join_all<T: 'static>(mut tasks: JoinSet<T>, what: &str) -> Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        results.push(done.with_context(|| format!("{what} failed"))?);
    }
    Ok(results)
}
