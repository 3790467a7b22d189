//! Entity-to-entity calls: how a handler's [`Call`] reaches the entity it is
//! for, wherever that entity lives.
//!
//! A call is routed like a client request: by HRW over the receiver's
//! routing key ([`crate::entity::Entity::routing_key`]), among the live
//! workers this worker knows ([`peers::Peers`], read from the workers
//! table the proxy discovers them from, with the proxy's `hash_seed`). When
//! that is this worker, the call runs in-process; otherwise it goes over
//! HTTP ([`http::HttpCalls`]) to the receiver's
//! `/internal/v1/{kind}/{id}/{action}`
//! with the fleet's internal token.
//!
//! Until the deadline, every attempt that did not get a decided reply is
//! retried with the same idempotency id, after refreshing the view of the
//! fleet: a refused or broken connection or a timeout (the worker died or
//! froze: it is skipped for a while), `421 not_owner` (it is draining),
//! and any 5xx (it could not serve the entity yet). A decided reply is any
//! other status; the receiver's entity applies an idempotency id once, so
//! a retried call never applies twice.

pub mod http;
pub mod peers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use self::http::HttpCalls;
use self::peers::Peers;
use crate::entity::{Call, Reply};
use crate::metrics::METRICS;

/// Sends calls on behalf of the runtime.
#[async_trait]
pub trait CallSender: Send + Sync {
    /// Send `call` until it has a decided reply or `deadline` passes.
    async fn send(&self, call: &Call, deadline: Instant) -> Result<Reply, CallError>;
}

/// Applies a call in this worker (the receiving side, shared by the
/// in-process path and the internal HTTP route).
#[async_trait]
pub trait LocalReceiver: Send + Sync {
    async fn receive(&self, call: Received<'_>) -> Reply;
}

/// A call as its receiver sees it: entity `kind`/`id`, its `action` and
/// JSON `body`, applied once per `idempotency_id`.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub action: &'a str,
    pub body: &'a [u8],
    pub idempotency_id: &'a str,
}

impl<'a> From<&'a Call> for Received<'a> {
    fn from(call: &'a Call) -> Self {
        Received {
            kind: &call.kind,
            id: &call.id,
            action: &call.action,
            body: call.body.get().as_bytes(),
            idempotency_id: &call.idempotency_id,
        }
    }
}

/// Why a call has no decided reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("call to {kind} {id} undecided at its deadline; last attempt: {last}")]
    Deadline {
        kind: String,
        id: String,
        last: String,
    },
}

/// First pause between attempts; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_millis(200);

/// Routes calls to their owners and retries them.
pub struct Caller {
    peers: Arc<Peers>,
    http: HttpCalls,
}

/// One attempt's result: a decided reply, or why to try again.
enum Attempt {
    Decided(Reply),
    Retry(String),
}

impl Caller {
    pub fn new(peers: Arc<Peers>, http: HttpCalls) -> Self {
        Caller { peers, http }
    }

    /// The view of the live workers calls are routed over.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Send `call` to its owner (this worker: `local`), retrying until a
    /// decided reply or `deadline`.
    pub async fn send(
        &self,
        call: &Call,
        deadline: Instant,
        local: &dyn LocalReceiver,
    ) -> Result<Reply, CallError> {
        let mut pause = RETRY_MIN;
        loop {
            let attempt = self.attempt(call, deadline, local).await;
            METRICS
                .call_attempts
                .with_label_values(&[attempt.label()])
                .inc();
            let last = match attempt {
                Attempt::Decided(reply) => return Ok(reply),
                Attempt::Retry(why) => why,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Deadline {
                    kind: call.kind.clone(),
                    id: call.id.clone(),
                    last,
                });
            }
            tracing::debug!(kind = %call.kind, id = %call.id, %last, "call attempt failed; retrying");
            self.peers.refresh_soon().await;
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// One attempt at the owner by this worker's current view.
    async fn attempt(&self, call: &Call, deadline: Instant, local: &dyn LocalReceiver) -> Attempt {
        let Some(peer) = self.peers.owner_of(&call.routing_key) else {
            return Attempt::Retry("no live worker known".into());
        };
        let reply = if *peer.id == *self.peers.me() {
            local.receive(call.into()).await
        } else {
            match self.http.post(&peer.addr, call, deadline).await {
                Ok(reply) => reply,
                Err(e) => {
                    self.peers.suspect(&peer.id);
                    return Attempt::Retry(format!("{}: {e}", peer.id));
                }
            }
        };
        if is_decided(reply.status) {
            Attempt::Decided(reply)
        } else {
            if reply.status == 421 {
                self.peers.suspect(&peer.id);
            }
            Attempt::Retry(format!("{} answered {}", peer.id, reply.status))
        }
    }
}

impl Attempt {
    fn label(&self) -> &'static str {
        match self {
            Attempt::Decided(_) => "decided",
            Attempt::Retry(_) => "retried",
        }
    }
}

/// A reply the caller acts on: success or a refusal by the entity. Not:
/// 421 (the worker is not taking the entity), 408, 429, or any 5xx.
pub fn is_decided(status: u16) -> bool {
    status < 500 && !matches!(status, 408 | 421 | 429)
}
