//! What executes entity requests for the API: Roost's in-memory runtime, or
//! the stateless Postgres-per-request baseline that benchmarks compare it to.

use std::sync::Arc;

use crate::calls::CallSender;
use crate::entity::Entity;
use crate::runtime::{EntityReply, Options, Runtime, RuntimeError};
use crate::stateless::StatelessEngine;

/// The executor behind the HTTP API.
#[derive(Clone)]
pub enum Engine {
    /// Entities in memory, flushed in fenced batches.
    Memory(Arc<Runtime>),
    /// Nothing in memory: one Postgres transaction per request.
    Stateless(Arc<StatelessEngine>),
}

impl Engine {
    pub fn owner(&self) -> &str {
        match self {
            Engine::Memory(runtime) => runtime.owner(),
            Engine::Stateless(engine) => engine.owner(),
        }
    }

    /// Whether requests may be sent here now (the runtime's lease holds,
    /// or may come back within the store grace).
    pub fn is_ready(&self) -> bool {
        match self {
            Engine::Memory(runtime) => runtime.is_ready(),
            Engine::Stateless(_) => true,
        }
    }

    /// Apply `request` to entity `id` of type `E`; its calls to other
    /// entities go through `calls`. The stateless engine is always durable
    /// (it commits before it answers), makes no calls and enforces no size
    /// limit.
    pub async fn execute<E: Entity>(
        &self,
        entity: &E,
        id: &str,
        request: E::Request,
        options: Options,
        calls: &dyn CallSender,
    ) -> Result<EntityReply, RuntimeError> {
        match self {
            Engine::Memory(runtime) => runtime.execute(entity, id, request, options, calls).await,
            // Boxed: a stateless request's future holds a whole Postgres
            // transaction, and would otherwise make every request's future
            // (moved into `Kind::run`'s box) that large.
            Engine::Stateless(engine) => {
                Box::pin(engine.execute(entity, id, request, options)).await
            }
        }
    }

    /// Run entity `id`'s due alarms (the stateless baseline keeps none).
    pub async fn wake<E: Entity>(
        &self,
        entity: &E,
        id: &str,
        calls: &dyn CallSender,
    ) -> Result<usize, RuntimeError> {
        match self {
            Engine::Memory(runtime) => runtime.wake(entity, id, calls).await,
            Engine::Stateless(_) => Ok(0),
        }
    }
}
