//! The worker's HTTP API: routes, who may reach each, parsing, and turning
//! entity replies into responses.
//!
//! Identity comes from `x-roost-key` (set by the proxy); every response
//! carries `x-roost-worker`, and a response about one entity also carries
//! its version (`ETag`) and the epoch it was served under (`x-roost-epoch`).
//!
//! Three kinds of caller reach a worker, each with its own credential (see
//! `Access`), so none can use another's way in:
//!
//! - *client*: a client's request, forwarded by a proxy with the proxy's
//!   token in `x-roost-hop-token` (when the worker has a `proxy_token`);
//! - *worker*: another worker's call, with the fleet's `internal_token` in
//!   `x-roost-internal-token`, never forwarded by a proxy;
//! - *operator*: orchestrator probes (no credential) and, on the admin
//!   listener only ([`Surface::Admin`]), Prometheus.
//!
//! | route | methods | who |
//! |---|---|---|
//! | the entity routes of every registered kind ([`super::routes`]: `/v1/{kind}…` and the kinds' aliases) | per action | client; an admin action also needs `Authorization: Bearer <admin_token>` |
//! | `/v1/whoami` | any of GET, POST, PUT, PATCH, DELETE: `{"worker", "key"}`; reads and drops the body, touches no state (the benchmark ceiling) | client |
//! | `/internal/v1/{kind}/{id}/{action}` | POST: a call from another worker's entity | worker |
//! | `/healthz`, `/readyz` | GET | operator, on either listener |
//! | `/metrics` | GET | operator, on the admin listener only |
//!
//! The built-in kinds' routes, generic and aliases: `/v1/session` (GET,
//! PUT, PATCH as a JSON merge patch, DELETE); `/v1/cart` (GET, DELETE),
//! `/v1/cart/items` (POST `{"sku", "qty"}`), `/v1/cart/items/{sku}`
//! (DELETE), `/v1/cart/checkout` (POST), `/v1/orders` (GET);
//! `/v1/quota/{name}/acquire` (POST `{"limit", "ttl_ms"}`),
//! `/v1/quota/{name}/release` (POST `{"token"}`); `/v1/inventory/{sku}`
//! (GET; PUT `{"stock"}` with the admin token; no `x-roost-key`: the SKU
//! is the entity).
//!
//! A path must already be in its normal form (`roost_routing::path`): the
//! proxy forwards only normal paths, so another spelling came around it and
//! gets 400 `invalid_path` rather than a chance to slip past a path rule.
//!
//! Mutations accept `Idempotency-Key`, `If-Match` and `roost-durability:
//! durable | write-behind`. A key belongs to the request it was first sent with:
//! the same method, path and body again replays the first reply; anything
//! else with that key gets 422 `idempotency_key_reused`
//! ([`crate::runtime::idempotency`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response};
use roost_routing::{headers, path};
use serde_json::json;

use super::body;
use super::routes::{decode_segment, AliasBody, EntityRoute, InternalCall, Miss, Route, Routes};
use crate::calls::{CallError, CallSender, Caller, LocalReceiver, Received};
use crate::config::WorkerConfig;
use crate::engine::Engine;
use crate::entity::action::Content;
use crate::entity::{check_name, Access, Call, Reply, Scope};
use crate::kinds::{Catalog, Invocation, Kind, Refusal};
use crate::metrics::METRICS;
use crate::runtime::idempotency::{Fingerprint, Idempotency};
use crate::runtime::precondition::IfMatch;
use crate::runtime::{Durability, EntityReply, Options, Origin, RuntimeError};

/// Header a request chooses its durability with.
pub const DURABILITY: &str = "roost-durability";
/// Header carrying the epoch an entity reply was served under.
pub const EPOCH: &str = "x-roost-epoch";

// Header names, parsed at compile time rather than per request.
const WORKER: HeaderName = HeaderName::from_static(headers::WORKER);
const EPOCH_HEADER: HeaderName = HeaderName::from_static(EPOCH);
const KEY: HeaderName = HeaderName::from_static(headers::KEY);
const HOP_TOKEN: HeaderName = HeaderName::from_static(headers::HOP_TOKEN);
const INTERNAL_TOKEN: HeaderName = HeaderName::from_static(headers::INTERNAL_TOKEN);
const DURABILITY_HEADER: HeaderName = HeaderName::from_static(DURABILITY);
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Which listener a request came in on: what it may reach there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `--listen`: the entity API and the internal routes (each behind its
    /// credential) and the probes; what proxies and other workers reach.
    Public,
    /// `--admin-listen`: metrics and the probes, no credential; only the
    /// operator's network should reach it.
    Admin,
}

/// The credential a route asks for: which caller it is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// Probes and metrics: none (what serves them is the listener's choice).
    Open,
    /// The entity API: a client's request through a proxy, with the
    /// proxy's token when one is configured.
    Client,
    /// The internal routes: another worker's call, with the internal token,
    /// never forwarded by a proxy.
    Worker,
}

/// Everything a request needs.
pub struct Api {
    engine: Engine,
    config: WorkerConfig,
    catalog: Arc<Catalog>,
    routes: Routes,
    worker: HeaderValue,
    /// Set on SIGTERM: `/readyz` fails from then on.
    draining: AtomicBool,
    /// Sends entity-to-entity calls (`None`: the stateless baseline).
    caller: Option<Caller>,
}

impl Route<'_, '_> {
    /// Who the route is for (the table in the module doc).
    fn credential(&self) -> Credential {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => Credential::Open,
            Route::Internal(_) => Credential::Worker,
            Route::WhoAmI | Route::Entity(_) => Credential::Client,
        }
    }

    /// Probes answer on both listeners; metrics only on the admin one,
    /// everything else only on the public one.
    fn served_on(&self, surface: Surface) -> bool {
        match self {
            Route::Healthz | Route::Readyz => true,
            Route::Metrics => surface == Surface::Admin,
            _ => surface == Surface::Public,
        }
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

impl From<Refusal> for Answer {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(reply) => Answer::Plain(reply),
            Refusal::Runtime(error) => Answer::Plain(runtime_error(&error)),
        }
    }
}

impl Api {
    /// The API over `engine` for the kinds in `catalog`; `caller` sends
    /// entity-to-entity calls.
    pub fn new(
        engine: Engine,
        config: WorkerConfig,
        catalog: Arc<Catalog>,
        caller: Option<Caller>,
    ) -> Self {
        let worker = HeaderValue::from_str(engine.owner())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-id"));
        Api {
            routes: Routes::new(&catalog),
            catalog,
            engine,
            config,
            worker,
            draining: AtomicBool::new(false),
            caller,
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The kinds this API serves.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Run the due alarms of entity `id` of `kind` here (its calls go out
    /// as a request's do).
    pub async fn wake(&self, kind: &dyn Kind, id: &str) -> Result<usize, RuntimeError> {
        kind.wake(&self.engine, id, self).await
    }

    /// Answer one request that came in on `surface`; never fails (errors
    /// become JSON replies). Counted in its route's series.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        surface: Surface,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        // Everything below borrows the head; only the body is consumed.
        let (head, body) = request.into_parts();
        let (metrics, response) = match self.route(&head, surface) {
            Ok(route) => {
                let metrics = self.routes.metrics(&route);
                let answer = match self.dispatch(route, &head, body).await {
                    Ok(answer) | Err(answer) => answer,
                };
                (metrics, self.respond(answer, None))
            }
            Err((reply, allow)) => {
                let response = self.respond(Answer::Plain(reply), allow.as_deref());
                (self.routes.unmatched(), response)
            }
        };
        metrics.observe(response.status().as_u16(), started.elapsed());
        response
    }

    /// The route of a request that came in on `surface`; or the reply to a
    /// path not in its normal form (400), with no route (404), or without
    /// the method (405, with the methods it has).
    fn route<'a, 'p>(
        &'a self,
        head: &'p Parts,
        surface: Surface,
    ) -> Result<Route<'a, 'p>, (Reply, Option<Vec<Method>>)> {
        let path = head.uri.path();
        check_normal(path).map_err(|reply| (reply, None))?;
        match self.routes.find(&head.method, path) {
            Ok(route) if route.served_on(surface) => Ok(route),
            Ok(_) | Err(Miss::NotFound) => {
                let reply = Reply::error(404, "not_found", format!("no route for {path}"));
                Err((reply, None))
            }
            Err(Miss::MethodNotAllowed(allow)) => {
                let method = &head.method;
                let message = format!("{method} is not allowed here");
                let reply = Reply::error(405, "method_not_allowed", message);
                Err((reply, Some(allow)))
            }
        }
    }

    async fn dispatch(
        &self,
        route: Route<'_, '_>,
        head: &Parts,
        body: Incoming,
    ) -> Result<Answer, Answer> {
        self.check_credential(route.credential(), &head.headers)?;
        match route {
            Route::Healthz => Ok(Reply::ok(json!({"status": "ok"})).into()),
            Route::Readyz => Ok(self.readiness().into()),
            Route::Metrics => Ok(Answer::Raw {
                content_type: "text/plain; version=0.0.4",
                body: crate::metrics::render().into(),
            }),
            Route::WhoAmI => {
                let reply = self.whoami(user_key(&head.headers)?);
                self.body(head, body).await?;
                Ok(reply.into())
            }
            Route::Entity(entity) => self.entity(entity, head, body).await,
            Route::Internal(Some(call)) => self.internal(call, head, body).await,
            Route::Internal(None) => {
                let path = head.uri.path();
                Err(Reply::error(404, "not_found", format!("no route for {path}")).into())
            }
        }
    }

    fn readiness(&self) -> Reply {
        if self.draining.load(Ordering::Acquire) {
            Reply::error(503, "draining", "this worker is shutting down")
        } else if !self.engine.is_ready() {
            Reply::error(
                503,
                "lease_lost",
                "this worker cannot be sure it holds its lease",
            )
        } else {
            Reply::ok(json!({"status": "ready"}))
        }
    }

    /// Who answered, and for which user key: what a client may know (no
    /// other header it did not send itself, never a credential).
    fn whoami(&self, key: Option<&str>) -> Reply {
        Reply::ok(json!({"worker": self.engine.owner(), "key": key}))
    }

    /// A client's request for an entity's action: the admin token if the
    /// action asks for it, the entity's id (the user's key, or the path's
    /// id for a shared kind), the request's options and body, then the
    /// kind runs it.
    async fn entity(
        &self,
        route: EntityRoute<'_, '_>,
        head: &Parts,
        body: Incoming,
    ) -> Result<Answer, Answer> {
        if route.action.access == Access::Admin {
            check_bearer(&head.headers, self.config.admin_token.as_deref())?;
        }
        let shared;
        let id = match (route.kind.scope(), route.id) {
            (Scope::Shared, Some(id)) => {
                shared = decode_segment(id)?;
                shared.as_str()
            }
            _ => user_key(&head.headers)?.ok_or_else(|| {
                Reply::error(401, "missing_key", "the request carries no x-roost-key")
            })?,
        };
        let read = route.action.access == Access::Read;
        let (options, body) = self.read(head, body, route.kind, read).await?;
        let alias;
        let content = if route.fields.is_empty() {
            Content::Json(&body)
        } else {
            alias = AliasBody::new(&body, &route.fields)?;
            alias.content()
        };
        let invocation = Invocation {
            id,
            action: route.action.name,
            content,
            options,
        };
        let reply = route.kind.run(&self.engine, invocation, self).await?;
        Ok(Answer::Entity(reply))
    }

    /// A call from another worker (its credential is checked): apply it
    /// here.
    async fn internal(
        &self,
        call: InternalCall<'_>,
        head: &Parts,
        body: Incoming,
    ) -> Result<Answer, Answer> {
        let idempotency_id = header_str(&head.headers, &IDEMPOTENCY_KEY).ok_or_else(|| {
            Reply::error(
                400,
                "missing_idempotency_key",
                "a call needs an Idempotency-Key",
            )
        })?;
        check_name("Idempotency-Key", idempotency_id)?;
        let idempotency_id = idempotency_id.to_owned();
        let (kind, id, action) = (
            decode_segment(call.kind)?,
            decode_segment(call.id)?,
            decode_segment(call.action)?,
        );
        let body = self.body(head, body).await?;
        let call = Received {
            kind: &kind,
            id: &id,
            action: &action,
            body: &body,
            idempotency_id: &idempotency_id,
        };
        Ok(self.receive(call).await.into())
    }

    /// The credential a route asks for, from `headers`: 403 without it.
    fn check_credential(&self, credential: Credential, headers: &HeaderMap) -> Result<(), Answer> {
        match credential {
            Credential::Open => Ok(()),
            Credential::Client => check_hop(headers, self.config.proxy_token.as_deref()),
            Credential::Worker => check_internal(headers, self.config.internal_token.as_deref()),
        }
    }

    async fn body(&self, head: &Parts, body: Incoming) -> Result<Bytes, Answer> {
        Ok(body::read(&head.headers, body, self.config.max_body_bytes).await?)
    }

    /// A client's request to an entity of `kind`, besides its route: its
    /// durability (header or the kind's default), its `If-Match` (not on a
    /// read), its body (read for `POST`, `PUT` and `PATCH`; a body the
    /// method does not carry is no part of the request), and its
    /// `Idempotency-Key` scoped to the request: its method, path and body
    /// ([`Fingerprint`]). A read drops the key: it has nothing to apply
    /// once.
    async fn read(
        &self,
        head: &Parts,
        body: Incoming,
        kind: &dyn Kind,
        read: bool,
    ) -> Result<(Options, Bytes), Answer> {
        let headers = &head.headers;
        let durability = match header_str(headers, &DURABILITY_HEADER) {
            None => kind.durability(),
            Some("durable") => Durability::Durable,
            Some("write-behind") => Durability::WriteBehind,
            Some(other) => {
                let message =
                    format!("{DURABILITY} must be durable or write-behind, not {other:?}");
                return Err(Reply::error(400, "invalid_durability", message).into());
            }
        };
        let idempotency_key = header_str(headers, &IDEMPOTENCY_KEY)
            .map(|key| check_name("Idempotency-Key", key).map(|()| key.to_owned()))
            .transpose()?;
        let if_match = header_str(headers, &hyper::header::IF_MATCH)
            .filter(|_| !read)
            .map(IfMatch::parse);
        let method = &head.method;
        let body = if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            self.body(head, body).await?
        } else {
            Bytes::new()
        };
        let idempotency = idempotency_key.filter(|_| !read).map(|key| {
            let request = Fingerprint::of(method.as_str(), head.uri.path(), &body);
            Idempotency::new(key, request)
        });
        let options = Options {
            durability,
            idempotency,
            origin: Origin::Client,
            if_match,
            read,
        };
        Ok((options, body))
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
        let unavailable = if status == 503 {
            unavailable_code(&body)
        } else {
            None
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(WORKER, self.worker.clone());
        if !empty {
            headers.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
        }
        if let Some((version, epoch)) = entity {
            headers.insert(hyper::header::ETAG, etag(version));
            headers.insert(EPOCH_HEADER, HeaderValue::from(epoch));
        }
        if status == 503 {
            headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            if let Some(code) = unavailable {
                headers.insert(
                    HeaderName::from_static(headers::UNAVAILABLE),
                    HeaderValue::from_static(code),
                );
            }
        }
        if status == 413 {
            // The rest of the body is read and dropped, then the connection
            // closes (see `body`).
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
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
    /// Apply a call here, durably, once per idempotency id (the call is
    /// fingerprinted as the `POST` to its internal route, however it came,
    /// so a retry replays and another call under the id gets 422). Any
    /// action but an admin one may be called. A draining worker takes no
    /// entities: 421, and the caller moves on.
    async fn receive(&self, call: Received<'_>) -> Reply {
        if self.draining.load(Ordering::Acquire) {
            return Reply::error(421, "not_owner", "this worker is draining");
        }
        let Received {
            kind,
            id,
            action,
            body,
            idempotency_id,
        } = call;
        let Some(kind) = self.catalog.get(kind) else {
            let message = format!("no entity type {kind:?} takes calls");
            return Reply::error(404, "unknown_kind", message);
        };
        if kind.access(action) == Access::Admin {
            let message = format!("{action} is an admin action; entities cannot call it");
            return Reply::error(403, "admin_action", message);
        }
        let path = format!("/internal/v1/{}/{id}/{action}", kind.name());
        let fingerprint = Fingerprint::of("POST", &path, body);
        let options = Options {
            idempotency: Some(Idempotency::new(idempotency_id.to_owned(), fingerprint)),
            origin: Origin::Entity,
            ..Options::client(Durability::Durable)
        };
        let invocation = Invocation {
            id,
            action,
            content: Content::Json(body),
            options,
        };
        match kind.run(&self.engine, invocation, self).await {
            Ok(reply) => reply.reply,
            Err(refusal) => Answer::from(refusal).into_reply(),
        }
    }
}

/// The admin token as `Authorization: Bearer …`: 401 without one, 403 if
/// wrong or if no admin token is configured.
fn check_bearer(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Answer> {
    let Some(sent) = header_str(headers, &hyper::header::AUTHORIZATION) else {
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

/// A client's request: with a proxy token configured, it must carry it in
/// `x-roost-hop-token` (every proxy sends it, and strips any a client sent):
/// 403 `untrusted_hop` otherwise, so nobody reaches the entity API around
/// the proxy's identity checks. The internal token does not open it: a
/// worker calls only the internal routes. Without a proxy token (a trusted
/// network, tests), anything passes.
fn check_hop(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Answer> {
    match expected {
        Some(expected) if !carries(headers, &HOP_TOKEN, expected) => {
            let message = "this worker takes client requests only through a proxy";
            Err(Reply::error(403, "untrusted_hop", message).into())
        }
        _ => Ok(()),
    }
}

/// Another worker's call: 403 `forwarded_internal` if it carries
/// `x-roost-hop-token` at all (a proxy forwarded it, which it must never
/// do, whatever else the request carries); 403 `internal_disabled` when no
/// internal token is configured; 403 `untrusted_hop` without the internal
/// token in `x-roost-internal-token`. The proxy's token never opens it.
fn check_internal(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Answer> {
    if headers.contains_key(&HOP_TOKEN) {
        let message = "the internal routes take calls from other workers, never through a proxy";
        return Err(Reply::error(403, "forwarded_internal", message).into());
    }
    let Some(expected) = expected else {
        let message = "this worker has no internal_token configured";
        return Err(Reply::error(403, "internal_disabled", message).into());
    };
    if carries(headers, &INTERNAL_TOKEN, expected) {
        Ok(())
    } else {
        let message = "the internal routes take only calls from this fleet's workers";
        Err(Reply::error(403, "untrusted_hop", message).into())
    }
}

/// Whether header `name` holds the secret `expected`.
fn carries(headers: &HeaderMap, name: &HeaderName, expected: &str) -> bool {
    header_str(headers, name).is_some_and(|sent| same_secret(sent, expected))
}

/// A path must already be in its normal form: 400 `invalid_path` saying why
/// not. (Compared, not judged by the `Cow`: a path with escapes that are
/// kept comes back rebuilt but unchanged.)
fn check_normal(raw: &str) -> Result<(), Reply> {
    match path::normalize(raw) {
        Ok(normal) if normal == raw => Ok(()),
        Ok(normal) => Err(Reply::error(
            400,
            "invalid_path",
            format!(
                "the path is not in its normal form, {normal} (no empty, '.' or '..' \
                 segments; letters, digits and -._~ unescaped; escapes in upper case)"
            ),
        )),
        Err(e) => Err(Reply::error(
            400,
            "invalid_path",
            format!("invalid path: {e}"),
        )),
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

/// The error code of a 503 that is about this worker rather than the
/// request (it cannot serve this key now), which a proxy answers by trying
/// the key's next candidate: `lease_lost`, `draining`, `handoff_timeout`.
fn unavailable_code(body: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Code<'a> {
        #[serde(borrow)]
        error: &'a str,
    }
    let code: Code<'_> = serde_json::from_slice(body).ok()?;
    ["lease_lost", "draining", "handoff_timeout"]
        .into_iter()
        .find(|known| *known == code.error)
}

/// `"{version}"`, without a trip through `fmt`.
fn etag(version: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut quoted = [b'"'; 22];
    quoted[1..=digits.len()].copy_from_slice(digits);
    HeaderValue::from_bytes(&quoted[..digits.len() + 2])
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn insert_display(headers: &mut HeaderMap, name: HeaderName, value: impl std::fmt::Display) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The proxy-set user key, if present and non-empty.
/// Not UTF-8: 400, since lossy decoding would make distinct keys collide.
fn user_key(headers: &HeaderMap) -> Result<Option<&str>, Reply> {
    let Some(key) = headers.get(&KEY) else {
        return Ok(None);
    };
    let key = std::str::from_utf8(key.as_bytes())
        .map_err(|_| Reply::error(400, "invalid_key", "x-roost-key is not UTF-8"))?;
    Ok((!key.is_empty()).then_some(key))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_worker_side_503s_are_marked_unavailable() {
        for code in ["lease_lost", "draining", "handoff_timeout"] {
            let reply = Reply::error(503, code, "m");
            assert_eq!(unavailable_code(reply.body_text().as_bytes()), Some(code));
        }
        for code in ["store_unavailable", "not_owner", "calls_unfinished"] {
            let reply = Reply::error(503, code, "m");
            assert_eq!(
                unavailable_code(reply.body_text().as_bytes()),
                None,
                "{code}"
            );
        }
        assert_eq!(unavailable_code(b"not json"), None);
    }
}
