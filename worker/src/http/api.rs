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
//! | `/v1/cart/checkout` | POST |
//! | `/v1/quota/{name}/acquire` | POST `{"limit", "ttl_ms"}` |
//! | `/v1/quota/{name}/release` | POST `{"token"}` |
//! | `/v1/whoami` | any of GET, POST, PUT, PATCH, DELETE: who answered; reads and drops the body, touches no state (the benchmark ceiling) |
//! | `/healthz`, `/readyz`, `/metrics` | GET |
//!
//! Mutations accept `Idempotency-Key` and `roost-durability: durable |
//! write-behind`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response};
use percent_encoding::percent_decode_str;
use roost_routing::headers;
use serde::Deserialize;
use serde_json::json;

use super::body;
use crate::config::WorkerConfig;
use crate::engine::Engine;
use crate::entities::cart::{Cart, CartRequest};
use crate::entities::quota::{Quota, QuotaRequest};
use crate::entities::session::{IfMatch, Session, SessionRequest};
use crate::entity::{Entity, Reply};
use crate::metrics::METRICS;
use crate::runtime::{Durability, EntityReply, RuntimeError};

/// Header a request chooses its durability with.
pub const DURABILITY: &str = "roost-durability";
/// Header carrying the epoch an entity reply was served under.
pub const EPOCH: &str = "x-roost-epoch";

/// Longest SKU, quota name or idempotency key accepted.
const MAX_NAME_BYTES: usize = 256;

/// Everything a request needs.
pub struct Api {
    engine: Engine,
    config: WorkerConfig,
    worker: HeaderValue,
    /// Set on SIGTERM: `/readyz` fails from then on.
    draining: AtomicBool,
    session: Session,
    cart: Cart,
    quota: Quota,
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
    QuotaAcquire(&'p str),
    QuotaRelease(&'p str),
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
            Route::QuotaAcquire(_) => "quota_acquire",
            Route::QuotaRelease(_) => "quota_release",
        }
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => &[Method::GET],
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
            | Route::QuotaRelease(_) => &[Method::POST],
        }
    }

    /// Routes about a user's entity need the proxy's `x-roost-key`.
    fn needs_key(self) -> bool {
        !matches!(
            self,
            Route::Healthz | Route::Readyz | Route::Metrics | Route::WhoAmI
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

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Plain(reply)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    sku: String,
    qty: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Acquire {
    limit: u64,
    ttl_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    token: String,
}

impl Api {
    pub fn new(engine: Engine, config: WorkerConfig) -> Self {
        let worker = HeaderValue::from_str(engine.owner())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-id"));
        Api {
            cart: Cart::new(config.limits.clone()),
            engine,
            config,
            worker,
            draining: AtomicBool::new(false),
            session: Session,
            quota: Quota,
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
            Route::Cart | Route::CartItems | Route::CartItem(_) | Route::Checkout => {
                self.cart(&key, route, method, request).await
            }
            Route::QuotaAcquire(name) | Route::QuotaRelease(name) => {
                self.quota(&key, route, name, request).await
            }
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
            Method::PUT => SessionRequest::Put {
                document: body::json(&self.body(request).await?)?,
                if_match,
            },
            _ => SessionRequest::Patch {
                patch: body::json(&self.body(request).await?)?,
                if_match,
            },
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
            (Route::CartItem(sku), _) => CartRequest::Remove {
                sku: decode_segment(sku)?,
            },
            (Route::Checkout, _) => CartRequest::Checkout,
            _ => {
                let item: AddItem = body::json_object(&self.body(request).await?)?;
                if item.qty == 0 {
                    return Err(Reply::error(400, "invalid_qty", "qty must be at least 1").into());
                }
                CartRequest::Add {
                    sku: check_name("sku", item.sku)?,
                    qty: item.qty,
                }
            }
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
        let name = decode_segment(name)?;
        let quota_request = if let Route::QuotaAcquire(_) = route {
            let acquire: Acquire = body::json_object(&self.body(request).await?)?;
            if acquire.limit == 0 || acquire.ttl_ms == 0 {
                return Err(Reply::error(
                    400,
                    "invalid_request",
                    "limit and ttl_ms must be at least 1",
                )
                .into());
            }
            QuotaRequest::Acquire {
                name,
                limit: acquire.limit,
                ttl_ms: acquire.ttl_ms,
            }
        } else {
            let release: Release = body::json_object(&self.body(request).await?)?;
            QuotaRequest::Release {
                name,
                token: release.token,
            }
        };
        self.execute(&self.quota, key, quota_request, call).await
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
            .execute(entity, key, request, durability, idempotency_key)
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

/// A percent-decoded path segment, checked like any name.
fn decode_segment(segment: &str) -> Result<String, Answer> {
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| Reply::error(400, "invalid_path", "a path segment is not UTF-8"))?;
    check_name("path segment", decoded.into_owned())
}

/// Non-empty, at most [`MAX_NAME_BYTES`], no control characters.
fn check_name(what: &str, name: String) -> Result<String, Answer> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        let message =
            format!("{what} must be 1 to {MAX_NAME_BYTES} bytes without control characters");
        return Err(Reply::error(400, "invalid_name", message).into());
    }
    Ok(name)
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
    }
}
