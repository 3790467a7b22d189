//! The ledger: one record per HTTP attempt the load makes, with what was
//! sent, when, and what came back. Every check of the suite is a question
//! asked of this list (plus the final stored state), so it is kept whole in
//! memory and written out as JSONL for anyone who wants to ask another one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Monotonic microseconds since the start of a scenario's run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant `at` after the start (for sleeping until a point of the
    /// scenario's plan).
    pub fn instant_at(&self, at: Duration) -> Instant {
        self.start + at
    }
}

/// The built-in entity types the loads exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Session,
    Cart,
    Quota,
    /// A shared entity (the ticket sale's stock), keyed by its SKU.
    Inventory,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Cart => "cart",
            Kind::Quota => "quota",
            Kind::Inventory => "inventory",
        }
    }
}

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `GET /v1/session` or `GET /v1/cart`.
    Get,
    /// `PATCH /v1/session`.
    Patch,
    /// `POST /v1/cart/items`.
    Add,
    /// `POST /v1/quota/{name}/acquire`.
    Acquire,
    /// `POST /v1/quota/{name}/release`.
    Release,
    /// `POST /v1/cart/checkout`.
    Checkout,
}

impl Op {
    pub fn is_read(self) -> bool {
        self == Op::Get
    }

    /// Whether the ledger keeps the reply body: reads (what was shown) and
    /// checkouts (the order id).
    pub fn keeps_body(self) -> bool {
        matches!(self, Op::Get | Op::Checkout)
    }
}

/// The `roost-durability` a mutation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    Durable,
    WriteBehind,
}

impl Durability {
    pub fn header_value(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::WriteBehind => "write-behind",
        }
    }
}

/// The trace a mutation leaves in the entity's state, so the final state
/// tells whether it survived. Every one is unique within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Session document field `field` set to `value`.
    SessionField { field: String, value: u64 },
    /// Cart item `sku` (quantity 1).
    CartItem { sku: String },
    /// A quota token of `name`; the token id is known once a reply names it.
    QuotaToken { name: String, token: Option<String> },
    /// The release of token `token` of `name`.
    QuotaRelease { name: String, token: String },
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::SessionField { field, value } => write!(f, "session field {field}={value}"),
            Effect::CartItem { sku } => write!(f, "cart item {sku}"),
            Effect::QuotaToken { name, token } => {
                write!(
                    f,
                    "{name} token {}",
                    token.as_deref().unwrap_or("(none granted)")
                )
            }
            Effect::QuotaRelease { name, token } => write!(f, "release of {name} token {token}"),
        }
    }
}

/// Whether a record belongs to the load under fault, to the reads made
/// after it to compare with the store, or to the requests a fault sends
/// straight to one worker to see what it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Load,
    Final,
    /// Sent to a worker around the proxy (the cut scenario's probes of the
    /// cut-off worker after the heal).
    Probe,
}

/// One HTTP attempt (through the proxy, except [`Phase::Probe`]'s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub phase: Phase,
    /// The user key, or a shared entity's id (an inventory's SKU).
    pub user: String,
    pub device: u8,
    pub entity: Kind,
    pub op: Op,
    /// Identifies the logical operation; retries share it. Mutations send it
    /// as `Idempotency-Key`.
    pub op_id: String,
    pub idempotency_key: Option<String>,
    pub durability: Option<Durability>,
    /// 1 for the first try of an operation.
    pub attempt: u32,
    pub t_send_us: u64,
    pub t_done_us: u64,
    /// HTTP status, or `None` for a transport error.
    pub status: Option<u16>,
    /// The JSON `error` code of a non-2xx reply, or the transport error.
    pub error: Option<String>,
    /// `x-roost-worker`.
    pub worker: Option<String>,
    /// `x-roost-epoch`.
    pub epoch: Option<i64>,
    /// `ETag`: the entity version after the request.
    pub version: Option<u64>,
    pub effect: Option<Effect>,
    /// For reads: the state returned; for checkouts: the reply.
    pub body: Option<Value>,
}

/// The slowest reply that still counts as "available".
pub const SLOW_US: u64 = 1_000_000;

impl Record {
    pub fn is_2xx(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A reply the load expects and is not a failure: 2xx, the 404 of a
    /// session that no write has created yet, or a cart's decided refusal.
    pub fn is_success(&self) -> bool {
        self.is_2xx()
            || (self.entity == Kind::Session
                && self.op == Op::Get
                && self.status == Some(404)
                && self.error.as_deref() == Some("not_found"))
            || self.is_refusal()
    }

    /// A cart's final "no" to an add or a checkout (409 `limit_exceeded`,
    /// `out_of_stock`, `empty_cart`): decided, nothing to retry. The fault
    /// suite sets no limits and never checks out, so it never sees one.
    pub fn is_refusal(&self) -> bool {
        self.entity == Kind::Cart
            && matches!(self.op, Op::Add | Op::Checkout)
            && self.status == Some(409)
            && matches!(
                self.error.as_deref(),
                Some("limit_exceeded" | "out_of_stock" | "empty_cart")
            )
    }

    /// A mutation the user was told succeeded.
    pub fn is_acknowledged_write(&self) -> bool {
        !self.op.is_read() && self.is_2xx()
    }

    pub fn latency_us(&self) -> u64 {
        self.t_done_us.saturating_sub(self.t_send_us)
    }

    /// Whether the proxy may send this request to another worker when
    /// its first one fails it: a read, or a mutation carrying an
    /// `Idempotency-Key` (every mutation of the load does).
    pub fn is_replay_safe(&self) -> bool {
        self.op.is_read() || self.idempotency_key.is_some()
    }

    pub fn is_slow(&self) -> bool {
        self.latency_us() > SLOW_US
    }

    /// Label of an outcome: `201`, `409 out_of_stock`, `503
    /// handoff_timeout`, `transport timeout`…
    pub fn outcome_label(&self) -> String {
        let error = self.error.as_deref();
        match (self.status, error) {
            (Some(status), Some(error)) => format!("{status} {error}"),
            (Some(status), None) => status.to_string(),
            // Transport errors read `kind (detail)`; the kind is the label.
            (None, error) => {
                let error = error.unwrap_or("-");
                format!("transport {}", error.split(" (").next().unwrap_or(error))
            }
        }
    }

    /// The entity's store key, `KIND/USER`.
    pub fn entity_key(&self) -> String {
        entity_key(self.entity, &self.user)
    }
}

#[cfg(test)]
impl Record {
    /// A 200 from w1 to u1 at epoch 1, version 1, for tests to adjust.
    pub fn sample(entity: Kind, op: Op, t_send_us: u64, t_done_us: u64) -> Record {
        Record {
            phase: Phase::Load,
            user: "u1".into(),
            device: 0,
            entity,
            op,
            op_id: format!("op{t_send_us}"),
            idempotency_key: None,
            durability: None,
            attempt: 1,
            t_send_us,
            t_done_us,
            status: Some(200),
            error: None,
            worker: Some("w1".into()),
            epoch: Some(1),
            version: Some(1),
            effect: None,
            body: None,
        }
    }
}

pub fn entity_key(kind: Kind, user: &str) -> String {
    format!("{}/{user}", kind.name())
}

/// A point of the run where the fault injector did something.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub t_us: u64,
    pub what: String,
}

/// The shared, append-only list of records and events of one run.
#[derive(Clone)]
pub struct Ledger {
    clock: Clock,
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    records: Vec<Record>,
    events: Vec<Event>,
}

impl Ledger {
    pub fn new(clock: Clock) -> Self {
        Ledger {
            clock,
            inner: Arc::default(),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // A panic while pushing cannot leave a Vec half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, record: Record) {
        self.entries().records.push(record);
    }

    /// Note a fault step now; also printed, so a run can be followed live.
    pub fn event(&self, what: impl Into<String>) {
        let event = Event {
            t_us: self.clock.now_us(),
            what: what.into(),
        };
        eprintln!("  [{:>7.3} s] {}", event.t_us as f64 / 1e6, event.what);
        self.entries().events.push(event);
    }

    /// Records answered since `since_us` (for picking a fault's victim).
    pub fn recent(&self, since_us: u64) -> Vec<Record> {
        self.entries()
            .records
            .iter()
            .filter(|r| r.t_done_us >= since_us)
            .cloned()
            .collect()
    }

    /// Everything recorded, records sorted by send time.
    pub fn snapshot(&self) -> (Vec<Record>, Vec<Event>) {
        let entries = self.entries();
        let mut records = entries.records.clone();
        records.sort_by_key(|r| (r.t_send_us, r.t_done_us));
        (records, entries.events.clone())
    }
}

/// Write `records` as one JSON object per line.
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for record in records {
        serde_json::to_writer(&mut out, record).context("serialize a ledger record")?;
        out.write_all(b"\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("write {}", path.display()))
}
