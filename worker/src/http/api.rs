//! The worker's HTTP API: routes, parsing, and turning entity replies into
//! responses.
//!
//! Identity comes from `x-roost-key` (set by the proxy); every response
//! carries `x-roost-worker`, and a response about one entity also carries
//! its version (`ETag`) and the epoch it was served under (`x-roost-epoch`).
//!
//! | route | methods |
//! |---|---|
//! | `/v1/session` | GET, PUT, PATCH (JSON merge patch), DELETE; `If-Match` |
//! | `/v1/cart` | GET, DELETE |
//! | `/v1/cart/items` | POST `{"sku", "qty"}` |
//! | `/v1/cart/items/{sku}` | DELETE |
//! | `/v1/cart/checkout` | POST: reserves every item's stock, records the order, empties the cart |
//! | `/v1/orders` | GET: the user's orders |
//! | `/v1/inventory/{sku}` | GET; PUT `{"stock"}` with `Authorization: Bearer <admin_token>` (no `x-roost-key`: the SKU is the entity) |
//! | `/internal/v1/{kind}/{id}` | POST: a call from another worker's entity, with the fleet's internal token |
//! | `/v1/quota/{name}/acquire` | POST `{"limit", "ttl_ms"}` |
//! | `/v1/quota/{name}/release` | POST `{"token"}` |
//! | `/v1/whoami` | any of GET, POST, PUT, PATCH, DELETE: who answered; reads and drops the body, touches no state (the benchmark ceiling) |
//! | `/healthz`, `/readyz`, `/metrics` | GET |
//!
//! Mutations accept `Idempotency-Key` and `roost-durability: durable |
//! write-behind`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response};
use roost_routing::headers;
use serde_json::json;

use super::body;
use super::requests::{self, check_name, decode_segment};
use crate::calls::{CallError, CallSender, Caller, LocalReceiver};
use crate::config::WorkerConfig;
use crate::engine::Engine;
use crate::entities::cart::{Cart, CartRequest};
use crate::entities::inventory::{Inventory, InventoryRequest};
use crate::entities::quota::Quota;
use crate::entities::session::{IfMatch, Session, SessionRequest};
use crate::entity::{Call, Entity, Reply};
use crate::metrics::METRICS;
use crate::runtime::{Durability, EntityReply, RuntimeError};

/// Header a request chooses its durability with.
pub const DURABILITY: &str = "roost-durability";
/// Header carrying the epoch an entity reply was served under.
pub const EPOCH: &str = "x-roost-epoch";

/// Everything a request needs.
pub struct Api {
    engine: Engine,
    config: WorkerConfig,
    worker: HeaderValue,
    /// Set on SIGTERM: `/readyz` fails from then on.
    draining: AtomicBool,
    /// Sends entity-to-entity calls (`None`: the stateless baseline).
    caller: Option<Caller>,
    session: Session,
    cart: Cart,
    quota: Quota,
    inventory: Inventory,
}

/// The routes, with their path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'p> {
    Healthz,
    Readyz,
    Metrics,
    WhoAmI,
    Session,
    Cart,
    CartItems,
    CartItem(&'p str),
    Checkout,
    Orders,
    QuotaAcquire(&'p str),
    QuotaRelease(&'p str),
    Inventory(&'p str),
    Internal { kind: &'p str, id: &'p str },
}

impl<'p> Route<'p> {
    fn find(path: &'p str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["v1", "whoami"] => Route::WhoAmI,
            ["v1", "session"] => Route::Session,
            ["v1", "cart"] => Route::Cart,
            ["v1", "cart", "items"] => Route::CartItems,
            ["v1", "cart", "items", sku] if !sku.is_empty() => Route::CartItem(sku),
            ["v1", "cart", "checkout"] => Route::Checkout,
            ["v1", "orders"] => Route::Orders,
            ["v1", "inventory", sku] if !sku.is_empty() => Route::Inventory(sku),
            ["internal", "v1", kind, id] if !kind.is_empty() && !id.is_empty() => {
                Route::Internal { kind, id }
            }
            ["v1", "quota", name, "acquire"] if !name.is_empty() => Route::QuotaAcquire(name),
            ["v1", "quota", name, "release"] if !name.is_empty() => Route::QuotaRelease(name),
            _ => return None,
        })
    }

    /// Metric label.
    fn name(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::WhoAmI => "whoami",
            Route::Session => "session",
            Route::Cart => "cart",
            Route::CartItems => "cart_items",
            Route::CartItem(_) => "cart_item",
            Route::Checkout => "cart_checkout",
            Route::Orders => "orders",
            Route::QuotaAcquire(_) => "quota_acquire",
            Route::QuotaRelease(_) => "quota_release",
            Route::Inventory(_) => "inventory",
            Route::Internal { .. } => "internal",
        }
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics | Route::Orders => &[Method::GET],
            Route::Inventory(_) => &[Method::GET, Method::PUT],
            Route::WhoAmI => &[
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ],
            Route::Session => &[Method::GET, Method::PUT, Method::PATCH, Method::DELETE],
            Route::Cart => &[Method::GET, Method::DELETE],
            Route::CartItem(_) => &[Method::DELETE],
            Route::CartItems
            | Route::Checkout
            | Route::QuotaAcquire(_)
            | Route::QuotaRelease(_)
            | Route::Internal { .. } => &[Method::POST],
        }
    }

    /// Everything but the operational endpoints (health, readiness,
    /// metrics: probed by orchestrators and scraped by Prometheus directly)
    /// must come through the proxy or another worker.
    fn needs_trusted_hop(self) -> bool {
        !matches!(self, Route::Healthz | Route::Readyz | Route::Metrics)
    }

    /// Routes about a user's entity need the proxy's `x-roost-key`; shared
    /// entities are named by their path.
    fn needs_key(self) -> bool {
        !matches!(
            self,
            Route::Healthz
                | Route::Readyz
                | Route::Metrics
                | Route::WhoAmI
                | Route::Inventory(_)
                | Route::Internal { .. }
        )
    }
}

/// What a response is: a plain reply, or one about an entity.
enum Answer {
    Plain(Reply),
    Entity(EntityReply),
    Raw {
        content_type: &'static str,
        body: Bytes,
    },
}

impl Answer {
    /// The reply, as a caller entity sees it.
    fn into_reply(self) -> Reply {
        match self {
            Answer::Plain(reply) => reply,
            Answer::Entity(entity) => entity.reply,
            Answer::Raw { .. } => {
                Reply::error(500, "unexpected_reply", "a call got a non-JSON reply")
            }
        }
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Plain(reply)
    }
}

impl Api {
    /// The API over `engine`; `caller` sends entity-to-entity calls.
    pub fn new(engine: Engine, config: WorkerConfig, caller: Option<Caller>) -> Self {
        let worker = HeaderValue::from_str(engine.owner())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-id"));
        Api {
            cart: Cart::new(config.limits.clone()),
            engine,
            config,
            worker,
            draining: AtomicBool::new(false),
            caller,
            session: Session,
            quota: Quota,
            inventory: Inventory,
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Answer one request; never fails (errors become JSON replies).
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let Some(route) = Route::find(&path) else {
            let reply = Reply::error(404, "not_found", format!("no route for {path}"));
            return self.respond(Answer::Plain(reply), None);
        };
        let answer = match self.dispatch(route, request).await {
            Ok(answer) | Err(answer) => answer,
        };
        METRICS
            .request_seconds
            .with_label_values(&[route.name()])
            .observe(started.elapsed().as_secs_f64());
        let allow = route.methods();
        self.respond(answer, Some(allow))
    }

    async fn dispatch(
        &self,
        route: Route<'_>,
        request: Request<Incoming>,
    ) -> Result<Answer, Answer> {
        let method = request.method().clone();
        if !route.methods().contains(&method) {
            return Err(Reply::error(
                405,
                "method_not_allowed",
                format!("{method} is not allowed here"),
            )
            .into());
        }
        if route.needs_trusted_hop() {
            check_trusted_hop(request.headers(), self.config.internal_token.as_deref())?;
        }
        let key = user_key(request.headers())?;
        if route.needs_key() && key.is_none() {
            return Err(
                Reply::error(401, "missing_key", "the request carries no x-roost-key").into(),
            );
        }
        let key = key.unwrap_or_default();
        match route {
            Route::Healthz => Ok(Reply::ok(json!({"status": "ok"})).into()),
            Route::Readyz => Ok(self.readiness().into()),
            Route::Metrics => Ok(Answer::Raw {
                content_type: "text/plain; version=0.0.4",
                body: crate::metrics::render().into(),
            }),
            Route::WhoAmI => {
                let reply = self.whoami(request.headers());
                self.body(request).await?;
                Ok(reply.into())
            }
            Route::Session => self.session(&key, method, request).await,
            Route::Cart
            | Route::CartItems
            | Route::CartItem(_)
            | Route::Checkout
            | Route::Orders => self.cart(&key, route, method, request).await,
            Route::QuotaAcquire(name) | Route::QuotaRelease(name) => {
                self.quota(&key, route, name, request).await
            }
            Route::Inventory(sku) => self.inventory(sku, method, request).await,
            Route::Internal { kind, id } => self.internal(kind, id, request).await,
        }
    }

    fn readiness(&self) -> Reply {
        if self.draining.load(Ordering::Acquire) {
            Reply::error(503, "draining", "this worker is shutting down")
        } else if !self.engine.is_serving() {
            Reply::error(
                503,
                "lease_lost",
                "this worker cannot be sure it holds its lease",
            )
        } else {
            Reply::ok(json!({"status": "ready"}))
        }
    }

    fn whoami(&self, headers: &HeaderMap) -> Reply {
        let forwarded: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .filter(|(name, _)| headers::is_reserved(name.as_str()))
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into(),
                )
            })
            .collect();
        let key = forwarded.get(headers::KEY).cloned();
        Reply::ok(json!({"worker": self.engine.owner(), "key": key, "roost_headers": forwarded}))
    }

    async fn session(
        &self,
        key: &str,
        method: Method,
        request: Request<Incoming>,
    ) -> Result<Answer, Answer> {
        let if_match = header_str(request.headers(), hyper::header::IF_MATCH).map(IfMatch::parse);
        let call = self.call_options(request.headers(), Session::KIND)?;
        let session_request = match method {
            Method::GET => SessionRequest::Get,
            Method::DELETE => SessionRequest::Delete { if_match },
            Method::PUT => requests::session_put(&self.body(request).await?, if_match)?,
            _ => requests::session_patch(&self.body(request).await?, if_match)?,
        };
        self.execute(&self.session, key, session_request, call)
            .await
    }

    async fn cart(
        &self,
        key: &str,
        route: Route<'_>,
        method: Method,
        request: Request<Incoming>,
    ) -> Result<Answer, Answer> {
        let call = self.call_options(request.headers(), Cart::KIND)?;
        let cart_request = match (route, method) {
            (Route::Cart, Method::GET) => CartRequest::Get,
            (Route::Cart, _) => CartRequest::Clear,
            (Route::CartItem(sku), _) => requests::remove_item(sku)?,
            (Route::Checkout, _) => CartRequest::Checkout,
            (Route::Orders, _) => CartRequest::Orders,
            _ => requests::add_item(&self.body(request).await?)?,
        };
        self.execute(&self.cart, key, cart_request, call).await
    }

    async fn quota(
        &self,
        key: &str,
        route: Route<'_>,
        name: &str,
        request: Request<Incoming>,
    ) -> Result<Answer, Answer> {
        let call = self.call_options(request.headers(), Quota::KIND)?;
        let quota_request = if let Route::QuotaAcquire(_) = route {
            requests::acquire(name, &self.body(request).await?)?
        } else {
            requests::release(name, &self.body(request).await?)?
        };
        self.execute(&self.quota, key, quota_request, call).await
    }

    /// `GET` anyone may; `PUT {"stock": N}` needs the admin token.
    async fn inventory(
        &self,
        sku: &str,
        method: Method,
        request: Request<Incoming>,
    ) -> Result<Answer, Answer> {
        let sku = decode_segment(sku)?;
        let inventory_request = if method == Method::GET {
            InventoryRequest::Get
        } else {
            check_bearer(request.headers(), self.config.admin_token.as_deref())?;
            requests::set_stock(&self.body(request).await?)?
        };
        // Stock changes are always durable: an acknowledged stock level is
        // what every later reservation is checked against.
        let call = (Durability::Durable, None);
        self.execute(&self.inventory, &sku, inventory_request, call)
            .await
    }

    /// A call from another worker (its token was checked as the trusted
    /// hop): apply it here.
    async fn internal(
        &self,
        kind: &str,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Answer, Answer> {
        require_internal_calls(self.config.internal_token.as_deref())?;
        let idempotency_id = header_str(request.headers(), "idempotency-key")
            .ok_or_else(|| {
                Reply::error(
                    400,
                    "missing_idempotency_key",
                    "a call needs an Idempotency-Key",
                )
            })?
            .to_owned();
        let idempotency_id = check_name("Idempotency-Key", idempotency_id)?;
        let (kind, id) = (decode_segment(kind)?, decode_segment(id)?);
        let body = self.body(request).await?;
        Ok(self
            .receive(&kind, &id, &body, &idempotency_id)
            .await
            .into())
    }

    async fn body(&self, request: Request<Incoming>) -> Result<Bytes, Answer> {
        Ok(body::read(request, self.config.max_body_bytes).await?)
    }

    /// Durability (header or the type's default) and idempotency key.
    fn call_options(
        &self,
        headers: &HeaderMap,
        kind: &str,
    ) -> Result<(Durability, Option<String>), Answer> {
        let durability = match header_str(headers, DURABILITY) {
            None => self.config.durability_of(kind),
            Some("durable") => Durability::Durable,
            Some("write-behind") => Durability::WriteBehind,
            Some(other) => {
                let message =
                    format!("{DURABILITY} must be durable or write-behind, not {other:?}");
                return Err(Reply::error(400, "invalid_durability", message).into());
            }
        };
        let idempotency_key = header_str(headers, "idempotency-key")
            .map(|k| check_name("Idempotency-Key", k.to_owned()))
            .transpose()?;
        Ok((durability, idempotency_key))
    }

    async fn execute<E: Entity>(
        &self,
        entity: &E,
        key: &str,
        request: E::Request,
        (durability, idempotency_key): (Durability, Option<String>),
    ) -> Result<Answer, Answer> {
        self.engine
            .execute(entity, key, request, durability, idempotency_key, self)
            .await
            .map(Answer::Entity)
            .map_err(|e| runtime_error(&e).into())
    }

    fn respond(&self, answer: Answer, allow: Option<&[Method]>) -> Response<Full<Bytes>> {
        let (status, body, content_type, entity) = match answer {
            Answer::Plain(reply) => (reply.status, reply.body, "application/json", None),
            Answer::Entity(e) => (
                e.reply.status,
                e.reply.body,
                "application/json",
                Some((e.version, e.epoch)),
            ),
            Answer::Raw { content_type, body } => {
                return self.build(200, body, content_type, None, None);
            }
        };
        let bytes = body
            .map(|b| Bytes::from(Box::<str>::from(b).into_boxed_bytes()))
            .unwrap_or_default();
        let allow = allow.filter(|_| status == 405);
        self.build(status, bytes, content_type, entity, allow)
    }

    fn build(
        &self,
        status: u16,
        body: Bytes,
        content_type: &'static str,
        entity: Option<(u64, i64)>,
        allow: Option<&[Method]>,
    ) -> Response<Full<Bytes>> {
        let empty = body.is_empty();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static(headers::WORKER),
            self.worker.clone(),
        );
        if !empty {
            headers.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
        }
        if let Some((version, epoch)) = entity {
            insert_display(headers, hyper::header::ETAG, format_args!("\"{version}\""));
            insert_display(headers, HeaderName::from_static(EPOCH), epoch);
        }
        if status == 503 {
            headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(methods) = allow {
            let list = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            insert_display(headers, hyper::header::ALLOW, list);
        }
        response
    }
}

#[async_trait]
impl CallSender for Api {
    async fn send(&self, call: &Call, deadline: Instant) -> Result<Reply, CallError> {
        match &self.caller {
            Some(caller) => caller.send(call, deadline, self).await,
            None => Ok(Reply::error(
                501,
                "calls_unsupported",
                "this worker makes no calls to other entities",
            )),
        }
    }
}

#[async_trait]
impl LocalReceiver for Api {
    /// Apply a call here, durably, once per idempotency id. A draining
    /// worker takes no entities: 421, and the caller moves on.
    async fn receive(&self, kind: &str, id: &str, body: &[u8], idempotency_id: &str) -> Reply {
        if self.draining.load(Ordering::Acquire) {
            return Reply::error(421, "not_owner", "this worker is draining");
        }
        let answer = match kind {
            Inventory::KIND => match requests::inventory_call(body) {
                Ok(request) => {
                    let options = (Durability::Durable, Some(idempotency_id.to_owned()));
                    self.execute(&self.inventory, id, request, options).await
                }
                Err(reply) => Err(reply.into()),
            },
            kind => Err(Reply::error(
                404,
                "unknown_kind",
                format!("no entity type {kind:?} takes calls"),
            )
            .into()),
        };
        match answer {
            Ok(answer) | Err(answer) => answer.into_reply(),
        }
    }
}

/// The admin token as `Authorization: Bearer …`: 401 without one, 403 if
/// wrong or if no admin token is configured.
fn check_bearer(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Answer> {
    let Some(sent) = header_str(headers, hyper::header::AUTHORIZATION) else {
        return Err(Reply::error(
            401,
            "unauthorized",
            "this call needs Authorization: Bearer <admin token>",
        )
        .into());
    };
    let sent = sent.strip_prefix("Bearer ").unwrap_or_default();
    match expected {
        Some(expected) if same_secret(sent, expected) => Ok(()),
        Some(_) => Err(Reply::error(403, "forbidden", "the admin token is wrong").into()),
        None => Err(Reply::error(
            403,
            "admin_disabled",
            "this worker has no admin_token configured",
        )
        .into()),
    }
}

/// The trusted hop: with an internal token configured, a request must carry
/// it (the proxy and the other workers send it): 403 `untrusted_hop`
/// otherwise, so nobody reaches a worker around the proxy's identity
/// checks. Without one (a trusted network, tests), anything passes.
fn check_trusted_hop(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Answer> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let sent = header_str(headers, headers::INTERNAL_TOKEN).unwrap_or_default();
    if same_secret(sent, expected) {
        Ok(())
    } else {
        let message = "this worker takes requests only through the proxy or from other workers";
        Err(Reply::error(403, "untrusted_hop", message).into())
    }
}

/// Calls from other workers need an internal token configured here (the
/// trusted-hop check has verified the request carries it): 403
/// `internal_disabled` otherwise.
fn require_internal_calls(token: Option<&str>) -> Result<(), Answer> {
    match token {
        Some(_) => Ok(()),
        None => {
            let message = "this worker has no internal_token configured";
            Err(Reply::error(403, "internal_disabled", message).into())
        }
    }
}

/// Compare secrets in time independent of where they differ.
fn same_secret(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn insert_display(headers: &mut HeaderMap, name: HeaderName, value: impl std::fmt::Display) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

fn header_str<K: hyper::header::AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The proxy-set user key, if present and non-empty.
/// Not UTF-8: 400, since lossy decoding would make distinct keys collide.
fn user_key(headers: &HeaderMap) -> Result<Option<String>, Reply> {
    let Some(key) = headers.get(headers::KEY) else {
        return Ok(None);
    };
    let key = std::str::from_utf8(key.as_bytes())
        .map_err(|_| Reply::error(400, "invalid_key", "x-roost-key is not UTF-8"))?;
    Ok((!key.is_empty()).then(|| key.to_owned()))
}

fn runtime_error(error: &RuntimeError) -> Reply {
    match error {
        RuntimeError::Claim(crate::ownership::ClaimError::Corrupt { .. }) => {
            tracing::error!(%error, "entity state is unreadable");
            Reply::error(500, "corrupt_state", error.to_string())
        }
        RuntimeError::Claim(crate::ownership::ClaimError::HandoffTimeout { .. }) => {
            tracing::warn!(%error, "hand-over timed out");
            Reply::error(503, "handoff_timeout", error.to_string())
        }
        RuntimeError::Claim(_) | RuntimeError::NotDurable(_) => {
            tracing::warn!(%error, "store unavailable");
            Reply::error(503, "store_unavailable", error.to_string())
        }
        RuntimeError::Fenced => Reply::error(503, "not_owner", error.to_string()),
        RuntimeError::LeaseLost => Reply::error(503, "lease_lost", error.to_string()),
        RuntimeError::CallsUnfinished(_) => {
            METRICS.calls_unfinished.inc();
            tracing::warn!(%error, "calls to other entities unfinished");
            Reply::error(503, "calls_unfinished", error.to_string())
        }
        RuntimeError::UndeclaredCalls { .. } => {
            tracing::error!(%error, "an entity type made calls it did not declare");
            Reply::error(500, "undeclared_calls", error.to_string())
        }
    }
}
