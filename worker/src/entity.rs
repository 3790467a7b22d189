//! The entity trait: how every entity type, built-in or written by a user, is
//! defined.
//!
//! An entity is state with a key (one user's cart, one user's session). The
//! runtime keeps the state in memory, runs one request at a time against it,
//! and flushes it to the store when the handler says it changed. An entity
//! type supplies the state type, its encoding, and a handler:
//!
//! ```
//! use roost_worker::entity::{Context, Entity, Outcome, Reply};
//!
//! /// A per-user counter: `POST` adds one, `GET` reads it.
//! struct Counter;
//!
//! enum CounterRequest { Get, Increment }
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
//!             CounterRequest::Increment => {
//!                 *state += 1;
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

use serde::Serialize;
use serde_json::value::RawValue;

/// One entity type.
pub trait Entity: Send + Sync + 'static {
    /// The in-memory state. `Default` is the state of a key never seen;
    /// `Clone` lets the runtime undo a durable change whose flush failed.
    type State: Default + Clone + Send + 'static;
    /// A parsed request for this entity type.
    type Request: Send + 'static;
    /// Short, stable name: part of the store key and of metric labels.
    const KIND: &'static str;

    /// The bytes the store keeps for `state`.
    fn encode(&self, state: &Self::State) -> Vec<u8>;

    /// Rebuild the state from [`Entity::encode`]'s bytes.
    fn decode(&self, bytes: &[u8]) -> Result<Self::State, String>;

    /// Apply one request. Returns the reply and whether `state` changed.
    fn handle(&self, state: &mut Self::State, request: Self::Request, ctx: &Context) -> Outcome;
}

/// What a handler may know besides the state and the request.
#[derive(Debug, Clone)]
pub struct Context {
    /// Wall-clock time in milliseconds since the Unix epoch (for expiry).
    pub now_ms: u64,
    /// The entity's version before this request (for `If-Match`).
    pub version: u64,
    /// A fresh random number (for tokens and ids).
    pub random: u64,
}

/// A handler's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    /// Whether the state changed (bumps the version, marks it dirty).
    pub changed: bool,
}

impl Outcome {
    /// A reply that left the state as it was.
    pub fn read(reply: Reply) -> Self {
        Outcome {
            reply,
            changed: false,
        }
    }

    /// A reply after changing the state.
    pub fn changed(reply: Reply) -> Self {
        Outcome {
            reply,
            changed: true,
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
