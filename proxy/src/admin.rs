//! The admin listener: probes, Prometheus metrics and a JSON view of the
//! fleet. Everything here is for the operator's network only.
//!
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 when the proxy should get traffic: its config is
//!   loaded, at least one worker is up, and it is not draining; else 503
//!   `draining` or `no_live_worker` (readiness, for the load balancer).
//! - `GET /metrics`: Prometheus text format.
//! - `GET /admin/workers`: `[{id, addr, weight, healthy, since}]`.
//! - `GET /admin/route?key=K`: `{owner, key_hash, candidates: [{id, addr, healthy}]}`
//!   where `owner` is the live worker a request for `K` would reach now.
//! - `POST /admin/reload`: read the config file again and apply it (as
//!   SIGHUP does, see [`crate::reload`]): 200 `{reloaded: true,
//!   restart_needed: [FIELD]}`, or 400 `invalid_config` naming the file,
//!   line and field, with nothing changed.
//!
//! Every other method on these paths is 405, every other path 404.
//!
//! Bind it to a private address: it reveals the fleet's layout.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora_prometheus::PrometheusHttpApp;
use serde_json::{json, Value};

use crate::fleet::Fleet;
use crate::lifecycle::{Lifecycle, NotReady};
use crate::reload::Reloader;
use crate::reply::ErrorReply;

/// The admin HTTP application.
pub struct AdminApp {
    fleet: Arc<Fleet>,
    lifecycle: Arc<Lifecycle>,
    reloader: Arc<Reloader>,
}

/// The paths that take `POST`; every other one takes `GET` only.
const POST_PATHS: [&str; 1] = ["/admin/reload"];
const GET_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/workers",
    "/admin/route",
];

impl AdminApp {
    pub fn new(fleet: Arc<Fleet>, lifecycle: Arc<Lifecycle>, reloader: Arc<Reloader>) -> Self {
        AdminApp {
            fleet,
            lifecycle,
            reloader,
        }
    }

    fn reload(&self) -> Result<Value, ErrorReply> {
        match self.reloader.reload() {
            Ok(reloaded) => Ok(json!({
                "reloaded": true,
                "restart_needed": reloaded.restart_needed,
            })),
            Err(e) => Err(ErrorReply::new(400, "invalid_config", e.to_string())),
        }
    }

    fn readiness(&self) -> Result<Value, ErrorReply> {
        match self.lifecycle.readiness() {
            Ok(()) => Ok(json!({"status": "ready"})),
            Err(NotReady::Draining) => Err(ErrorReply::new(
                503,
                "draining",
                "this proxy is shutting down",
            )),
            Err(NotReady::NoLiveWorker) => Err(ErrorReply::new(
                503,
                "no_live_worker",
                "no worker passes its health checks",
            )),
        }
    }

    fn workers(&self) -> Value {
        let roster = self.fleet.roster();
        let workers = roster.workers().iter().map(|w| {
            json!({
                "id": &*w.id,
                "addr": w.addr.to_string(),
                "weight": w.weight,
                "healthy": roster.is_up(w.index),
                "since": roster.since(w.index).map(|t| humantime::format_rfc3339_millis(t).to_string()),
            })
        });
        Value::Array(workers.collect())
    }

    fn route(&self, query: Option<&str>) -> Result<Value, ErrorReply> {
        let key = query
            .into_iter()
            .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
            .find_map(|(name, value)| (name == "key").then_some(value))
            .filter(|key| !key.is_empty())
            .ok_or_else(|| ErrorReply::new(400, "missing_key", "pass the key as ?key=K"))?;
        let roster = self.fleet.roster();
        let candidates = roster.route(key.as_bytes());
        let owner = candidates.iter().find(|c| c.healthy).map(|c| &*c.worker.id);
        let listed: Vec<Value> = candidates
            .iter()
            .map(|c| json!({"id": &*c.worker.id, "addr": c.worker.addr.to_string(), "healthy": c.healthy}))
            .collect();
        Ok(json!({
            "owner": owner,
            "key_hash": self.fleet.key_hash(key.as_bytes()),
            "candidates": listed,
        }))
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let (method, path, query) = (
            request.method.clone(),
            request.uri.path().to_owned(),
            request.uri.query().map(str::to_owned),
        );
        let allowed = if POST_PATHS.contains(&path.as_str()) {
            Method::POST
        } else {
            Method::GET
        };
        if method != allowed
            && (POST_PATHS.contains(&path.as_str()) || GET_PATHS.contains(&path.as_str()))
        {
            let reply = ErrorReply::new(
                405,
                "method_not_allowed",
                format!("{path} takes {allowed} only"),
            );
            let mut response = error(&reply);
            if let Ok(allow) = http::HeaderValue::from_str(allowed.as_str()) {
                response.headers_mut().insert(http::header::ALLOW, allow);
            }
            return response;
        }
        match path.as_str() {
            "/admin/reload" => match self.reload() {
                Ok(body) => ok(&body),
                Err(reply) => error(&reply),
            },
            "/healthz" => ok(&json!({"status": "ok"})),
            "/readyz" => match self.readiness() {
                Ok(body) => ok(&body),
                Err(reply) => error(&reply),
            },
            "/metrics" => PrometheusHttpApp.response(session).await,
            "/admin/workers" => ok(&self.workers()),
            "/admin/route" => match self.route(query.as_deref()) {
                Ok(body) => ok(&body),
                Err(reply) => error(&reply),
            },
            _ => error(&ErrorReply::new(
                404,
                "not_found",
                format!("no admin endpoint at {path}"),
            )),
        }
    }
}

fn ok(body: &Value) -> Response<Vec<u8>> {
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

fn error(reply: &ErrorReply) -> Response<Vec<u8>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, reply.body().to_vec())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}
