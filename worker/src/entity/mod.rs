//! The entity trait: how every entity type, built-in or written by a user, is
//! defined.
//!
//! An entity is state with a key (one user's cart, one chat room). The
//! runtime keeps the state in memory, runs one request at a time against it,
//! and flushes it to the store when the handler says it changed. An entity
//! type supplies the state type, its encoding, a request enum (its actions)
//! and a handler; registered in a [`crate::kinds::Kinds`], it is served
//! over HTTP with no route code ([`crate::http`] has the scheme):
//!
//! ```
//! use roost_worker::entity::{Context, Entity, Outcome, Reply};
//! use serde::Deserialize;
//!
//! /// A per-user counter: `GET /v1/counter` reads it,
//! /// `POST /v1/counter/add {"by": 2}` adds to it.
//! struct Counter;
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "snake_case", deny_unknown_fields)]
//! enum CounterRequest {
//!     Get,
//!     Add { by: u64 },
//! }
//!
//! impl Entity for Counter {
//!     type State = u64;
//!     type Request = CounterRequest;
//!     const KIND: &'static str = "counter";
//!
//!     fn encode(&self, state: &u64) -> Vec<u8> {
//!         state.to_le_bytes().to_vec()
//!     }
//!
//!     fn decode(&self, bytes: &[u8]) -> Result<u64, String> {
//!         let bytes: [u8; 8] = bytes.try_into().map_err(|_| "expected 8 bytes".to_string())?;
//!         Ok(u64::from_le_bytes(bytes))
//!     }
//!
//!     fn handle(&self, state: &mut u64, request: CounterRequest, _ctx: &Context) -> Outcome {
//!         match request {
//!             CounterRequest::Get => Outcome::read(Reply::ok(serde_json::json!({"count": *state}))),
//!             CounterRequest::Add { by } => {
//!                 *state = state.saturating_add(by);
//!                 Outcome::changed(Reply::ok(serde_json::json!({"count": *state})))
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! Handlers are synchronous and must not block: they run while the entity is
//! locked. Anything that varies between runs (time, randomness) comes from
//! the [`Context`], so a handler is a pure function of its inputs.
//!
//! # Calling other entities
//!
//! A handler that needs another entity (a checkout reserving stock from a
//! shared inventory) returns [`Outcome::calls`] instead of a reply. The
//! runtime commits the state first (a call is an output, and the output gate
//! holds outputs until what they depend on is durable), sends the calls to
//! their owners, and gives the replies to [`Entity::on_replies`], which
//! returns the reply or further calls. The entity stays locked meanwhile,
//! so requests to it still run one at a time. Each call carries an
//! idempotency id the handler chooses; if the worker dies mid-way, the next
//! owner finds the calls in the stored state and sends them again, and the
//! receiver applies each id once. Calls must not form cycles (A calls B
//! while B calls A): like non-reentrant actors, they would wait on each
//! other until the call deadline.

pub mod action;
pub mod alarm;

pub use alarm::{Alarm, AlarmChange};
/// The HTTP method an [`Alias`] takes.
pub use hyper::Method;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

/// How a change is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Acknowledged at once; flushed within the flush interval.
    WriteBehind,
    /// Acknowledged after the batch holding the change has committed.
    Durable,
}

/// Whose entity a type's entities are, which decides how they are
/// addressed and routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One per user, keyed by the user's routing key (`x-roost-key`): all
    /// of a user's entities live on one worker. `GET /v1/{kind}`.
    PerUser,
    /// Named by an id in the path and routed by `{kind}:{id}` (one
    /// inventory per SKU, one chat room): `GET /v1/{kind}/{id}`.
    Shared,
}

/// How an action is asked for, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read: `GET` by clients (and other entities' calls). The handler
    /// must leave the state as it was: a proxy may send a `GET` twice.
    Read,
    /// A change: `POST` (or the method action `PUT`, `PATCH`, `DELETE`)
    /// by clients, and other entities' calls.
    Write,
    /// A change only requests with `Authorization: Bearer <admin_token>`
    /// may make; never another entity's call.
    Admin,
    /// Only other entities' calls (the internal route): to a client the
    /// action does not exist.
    Calls,
}

/// An extra HTTP route for one of a type's actions, besides the generic
/// scheme: the way an existing API keeps its paths. `{name}` segments of
/// `path` become fields of the action's body; for a shared type, `{id}` is
/// the entity's id.
#[derive(Debug, Clone)]
pub struct Alias {
    pub method: Method,
    pub path: &'static str,
    pub action: &'static str,
}

impl Alias {
    pub fn new(method: Method, path: &'static str, action: &'static str) -> Self {
        Alias {
            method,
            path,
            action,
        }
    }
}

/// One entity type.
pub trait Entity: Send + Sync + 'static {
    /// The in-memory state. `Default` is the state of a key never seen;
    /// `Clone` lets the runtime undo a durable change whose flush failed.
    type State: Default + Clone + Send + 'static;
    /// The type's actions: an enum, deserialized from an action name and
    /// a JSON body ([`action`]).
    type Request: DeserializeOwned + Send + 'static;
    /// Short, stable name: part of the store key, of the HTTP paths and of
    /// metric labels (lower case letters, digits, `-` and `_`).
    const KIND: &'static str;
    /// Per user or shared.
    const SCOPE: Scope = Scope::PerUser;
    /// How a change is acknowledged when neither the request
    /// (`roost-durability`) nor the config (`kinds.{KIND}.durability`)
    /// says.
    const DURABILITY: Durability = Durability::WriteBehind;

    /// The bytes the store keeps for `state`.
    fn encode(&self, state: &Self::State) -> Vec<u8>;

    /// Rebuild the state from [`Entity::encode`]'s bytes.
    fn decode(&self, bytes: &[u8]) -> Result<Self::State, String>;

    /// Apply one request. Returns the reply (or calls) and whether `state`
    /// changed.
    fn handle(&self, state: &mut Self::State, request: Self::Request, ctx: &Context) -> Outcome;

    /// The key the proxy and the workers route entity `id` by (HRW over
    /// it): the user's key for a per-user type, so all of a user's
    /// entities live on one worker; `{kind}:{id}` for a shared one.
    fn routing_key(id: &str) -> String {
        match Self::SCOPE {
            Scope::PerUser => id.to_owned(),
            Scope::Shared => format!("{}:{id}", Self::KIND),
        }
    }

    /// How `action` is asked for: by default `get` is a read and every
    /// other action a write.
    fn access(action: &str) -> Access {
        if action == "get" {
            Access::Read
        } else {
            Access::Write
        }
    }

    /// Checks on a parsed request beyond its type (a quantity of at least
    /// one, a name's length), made before the entity is touched: an error
    /// is the reply, and nothing runs.
    fn validate(&self, _request: &Self::Request) -> Result<(), Reply> {
        Ok(())
    }

    /// Whether `state` is something `If-Match: *` matches (default: any
    /// entity that has been written to).
    fn exists(&self, _state: &Self::State) -> bool {
        true
    }

    /// Routes of the type's own besides the generic scheme.
    fn aliases() -> Vec<Alias> {
        Vec::new()
    }

    /// Whether `request` is acknowledged only once durable, whatever the
    /// client asked (a stock level every later sale is checked against).
    fn always_durable(&self, _request: &Self::Request) -> bool {
        false
    }

    /// Whether `request` may make calls to other entities. Such requests
    /// run durable whatever the client asked: the state that records the
    /// calls must be committed before any call goes out, so the next owner
    /// can finish them after a crash.
    fn makes_calls(&self, _request: &Self::Request) -> bool {
        false
    }

    /// An alarm the entity set is due ([`alarm`]): act on it. The outcome's
    /// reply goes nowhere; its change, alarms and calls are kept, and the
    /// change is durable. Runs at least once per alarm: make its effect
    /// idempotent for `alarm.id`. By default nothing happens.
    fn on_alarm(&self, _state: &mut Self::State, _alarm: &Alarm, _ctx: &Context) -> Outcome {
        Outcome::read(Reply::no_content())
    }

    /// The replies to the calls the last outcome made, in the same order.
    /// Returns the reply to the request, or further calls.
    fn on_replies(
        &self,
        _state: &mut Self::State,
        _replies: Vec<Reply>,
        _ctx: &Context,
    ) -> Outcome {
        Outcome::read(Reply::error(
            500,
            "unexpected_replies",
            format!("{} makes no calls", Self::KIND),
        ))
    }
}

/// What a handler may know besides the state and the request.
#[derive(Debug, Clone)]
pub struct Context {
    /// The entity's store key, `kind/id`.
    pub key: Arc<str>,
    /// Wall-clock time in milliseconds since the Unix epoch (for expiry).
    pub now_ms: u64,
    /// The entity's version before this request (for `If-Match`).
    pub version: u64,
    /// A fresh random number (for tokens and ids).
    pub random: u64,
}

impl Context {
    /// The entity's id (its key without the `kind/` prefix).
    pub fn id(&self) -> &str {
        self.key.split_once('/').map_or(&self.key, |(_, id)| id)
    }
}

/// A handler's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub next: Next,
    /// Whether the state changed (bumps the version, marks it dirty).
    pub changed: bool,
    /// Alarms set or cancelled ([`Outcome::set_alarm`]).
    pub alarms: Vec<AlarmChange>,
}

/// What a handler wants done after it ran.
#[derive(Debug, Clone)]
pub enum Next {
    /// Answer the request.
    Reply(Reply),
    /// Send these calls and hand their replies to [`Entity::on_replies`].
    Calls(Vec<Call>),
}

impl Outcome {
    /// A reply that left the state as it was.
    pub fn read(reply: Reply) -> Self {
        Outcome {
            next: Next::Reply(reply),
            changed: false,
            alarms: Vec::new(),
        }
    }

    /// A reply after changing the state.
    pub fn changed(reply: Reply) -> Self {
        Outcome {
            next: Next::Reply(reply),
            changed: true,
            alarms: Vec::new(),
        }
    }

    /// Calls to other entities (the state changed first when `changed`).
    pub fn calls(calls: Vec<Call>, changed: bool) -> Self {
        Outcome {
            next: Next::Calls(calls),
            changed,
            alarms: Vec::new(),
        }
    }

    /// An answer, changing the state or not.
    pub fn answer(reply: Reply, changed: bool) -> Self {
        Outcome {
            next: Next::Reply(reply),
            changed,
            alarms: Vec::new(),
        }
    }

    /// Also wake the entity at `at_ms` (wall-clock milliseconds) with
    /// alarm `id`, moving it if it is set already. A change: the alarm is
    /// stored with the state.
    #[must_use]
    pub fn set_alarm(mut self, id: impl Into<String>, at_ms: u64) -> Self {
        self.alarms.push(AlarmChange::Set(Alarm {
            id: id.into(),
            at_ms,
        }));
        self.changed = true;
        self
    }

    /// Also cancel alarm `id` if it is pending. A change.
    #[must_use]
    pub fn cancel_alarm(mut self, id: impl Into<String>) -> Self {
        self.alarms.push(AlarmChange::Cancel(id.into()));
        self.changed = true;
        self
    }

    /// The reply, unless the outcome makes calls.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.next {
            Next::Reply(reply) => Some(reply),
            Next::Calls(_) => None,
        }
    }

    /// The reply's status, unless the outcome makes calls.
    pub fn status(&self) -> Option<u16> {
        self.reply().map(|reply| reply.status)
    }
}

/// A request from one entity to another, by the receiver's type and id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Call {
    /// The receiving entity type ([`Entity::KIND`]).
    pub kind: String,
    /// The receiving entity's id.
    pub id: String,
    /// What HRW routes the call by ([`Entity::routing_key`]).
    pub routing_key: String,
    /// The receiving type's action. (Empty in a call stored by a worker
    /// from before actions: the receiver refuses it with 404, a decided
    /// reply, so the caller's round ends instead of the whole state
    /// failing to decode.)
    #[serde(default)]
    pub action: String,
    /// The action's body (JSON; `null` for an action without one).
    pub body: Box<RawValue>,
    /// The same id on every attempt: the receiver applies it once.
    pub idempotency_id: String,
}

impl PartialEq for Call {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.id == other.id
            && self.routing_key == other.routing_key
            && self.action == other.action
            && self.body.get() == other.body.get()
            && self.idempotency_id == other.idempotency_id
    }
}

impl Call {
    /// A call to entity `id` of type `E`: `request` is one of `E`'s
    /// actions, sent as its name and body. A request that does not
    /// serialize to one action is a bug in the caller; it goes out as
    /// action `""`, which the receiver refuses with 404.
    pub fn to<E: Entity>(id: &str, request: &E::Request, idempotency_id: String) -> Self
    where
        E::Request: Serialize,
    {
        let (action, body) = action::split(request).unwrap_or_default();
        Call {
            kind: E::KIND.to_owned(),
            id: id.to_owned(),
            routing_key: E::routing_key(id),
            action,
            body: body.unwrap_or_default(),
            idempotency_id,
        }
    }
}

/// An HTTP-shaped reply: status and a JSON body (`None`: no body, e.g.
/// 204). The body is serialized when the reply is made, so the runtime and
/// the HTTP layer move bytes and never walk a JSON tree.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Box<RawValue>>,
}

impl PartialEq for Reply {
    fn eq(&self, other: &Self) -> bool {
        self.status == other.status && self.body_text() == other.body_text()
    }
}

impl Reply {
    /// 200 with `body` as JSON.
    pub fn ok(body: impl Serialize) -> Self {
        Reply::with_status(200, body)
    }

    /// `status` with `body` as JSON. A body that cannot be serialized (a
    /// map with non-string keys, say) becomes a 500 error reply.
    pub fn with_status(status: u16, body: impl Serialize) -> Self {
        match serde_json::value::to_raw_value(&body) {
            Ok(raw) => Reply {
                status,
                body: Some(raw),
            },
            Err(e) => Reply::error(500, "unserializable_reply", e.to_string()),
        }
    }

    pub fn no_content() -> Self {
        Reply {
            status: 204,
            body: None,
        }
    }

    /// The JSON error shape every API error uses.
    pub fn error(status: u16, error: &str, message: impl Into<String>) -> Self {
        Reply::with_status(status, ErrorBody::new(error, message.into()))
    }

    /// The body's JSON text (empty without a body).
    pub fn body_text(&self) -> &str {
        self.body.as_deref().map_or("", RawValue::get)
    }
}

/// `{"error": ..., "message": ...}`, plus any fields an entity adds (such as
/// quota's `retry_in_ms`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorBody<Extra: Serialize = ()> {
    pub error: String,
    pub message: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ErrorBody {
    pub fn new(error: &str, message: String) -> Self {
        ErrorBody {
            error: error.to_owned(),
            message,
            extra: (),
        }
    }
}

/// Longest name (SKU, quota name, reservation, idempotency key) accepted
/// by [`check_name`].
pub const MAX_NAME_BYTES: usize = 256;

/// A name a client sent: non-empty, at most [`MAX_NAME_BYTES`], no
/// control characters; otherwise 400 `invalid_name` saying `what` it is.
pub fn check_name(what: &str, name: &str) -> Result<(), Reply> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        let message =
            format!("{what} must be 1 to {MAX_NAME_BYTES} bytes without control characters");
        return Err(Reply::error(400, "invalid_name", message));
    }
    Ok(())
}

/// The state as JSON: the encoding most types want ([`Entity::encode`]),
/// and the one that keeps the store readable with `psql`. A state that
/// does not serialize (a map with non-string keys) is a bug in the type;
/// it is stored as nothing, which [`decode_json`] then refuses.
pub fn encode_json<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// [`encode_json`]'s state back ([`Entity::decode`]).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}
