//! The request path: Roost's [`ProxyHttp`] implementation, hooks in the order
//! Pingora calls them.
//!
//! 0. `early_request_filter`: the header is in: stop the connection's
//!    header clock, set the body and write timeouts ([`crate::timeouts`]);
//!    answer pipelined requests in order, and a client that half-closed
//!    after its request still gets its response.
//! 1. `request_filter`: refuse a request over the header or declared body
//!    limits (431, 413, 400; [`crate::limits`]); normalise the path once
//!    ([`roost_routing::path`]: 400 when it has no single meaning, 404
//!    under the fleet's internal prefix), so the key, the limits and the
//!    worker all see the same path; extract the key once, into the
//!    context; refuse a forged, expired or malformed identity (401
//!    `invalid_identity`), a key over its length, charset (400) or rate
//!    (429; keyless and minted requests by client address); reject a
//!    keyless request (401) or mint it an id, as the config says. Then
//!    read a small body whole ([`PREREAD_MAX_BYTES`]) before any worker is
//!    chosen, so a client that stalls is answered 408 with no worker
//!    waiting on it. Every early reply lingers ([`crate::linger`]).
//! 2. `upstream_peer`: the key's first live, untried HRW candidate; 503 with
//!    `Retry-After` when there is none.
//! 3. `fail_to_connect`: the worker refused the connection, so nothing was
//!    sent: mark it down at once and retry on the next candidate.
//! 4. `upstream_request_filter`: strip client-sent `x-roost-*`, forward
//!    `x-roost-key` and the trusted-hop token; then `request_body_filter`
//!    counts the body as it streams and cuts it off past the limit (413).
//! 5. `upstream_response_filter`: upstream latency; a worker's 503 marked
//!    `x-roost-unavailable` (it cannot serve this key now: lease lost,
//!    draining, hand-over timed out) counts as a failed health check, and a
//!    replay-safe request moves to the key's next candidate at once.
//! 6. `response_filter`: set a minted id's cookie.
//! 7. `error_while_proxy`: whose failure it was. A worker silent while the
//!    client's body is still incomplete is waiting for the client: 408, the
//!    worker's health untouched. A worker silent after the whole request
//!    was sent is taken down.
//! 8. `fail_to_proxy`: errors as JSON, logged at the level of whose fault
//!    they were ([`log_failure`]); Pingora's own error line is suppressed.
//! 9. `logging`: metrics and the access-log line.
//!
//! A request that already reached a worker over a reused connection follows
//! Pingora's default (and nginx's) policy: it is retried only when idempotent.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use roost_routing::headers;
use std::sync::Arc;

use crate::config::MissingKey;
use crate::fleet::{Fleet, Pick, Roster};
use crate::identity::{self, Minted};
use crate::key::KeyExtractor;
use crate::limits::{self, Limits};
use crate::linger;
use crate::metrics::{Benign, RequestCounters, NO_WORKER};
use crate::reply::ErrorReply;

/// How long to wait for a worker to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an idle upstream connection stays in the pool.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The header that makes a non-idempotent request safe to replay: the
/// worker keeps each key's first reply with the entity's state, so a replay
/// on the entity's next owner applies the change at most once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// A declared body up to this size is read whole before a worker is
/// chosen (as nginx buffers request bodies): Pingora's retry buffer holds
/// it for a replay on the next candidate. Larger and chunked bodies stream.
pub const PREREAD_MAX_BYTES: u64 = 64 * 1024;

/// Roost's sticky proxy.
pub struct RoostProxy {
    fleet: Arc<Fleet>,
    keys: KeyExtractor,
    missing: MissingKey,
    access_log: bool,
    upstream_timeout: Duration,
    /// Request limits, the per-key rate and the client timeouts.
    limits: Limits,
    /// The trusted-hop token sent to the workers (`trusted_hop`).
    hop_token: Option<http::HeaderValue>,
    /// Requests that never reached a worker (rejected, or no live worker).
    unrouted: RequestCounters,
}

/// Per-request state.
pub struct RequestCtx {
    /// The routing key, extracted once in `request_filter`.
    key: Option<Vec<u8>>,
    /// `Set-Cookie` for an id minted in `request_filter`, sent with the
    /// response (taken by `response_filter`).
    set_cookie: Option<String>,
    /// The roster this request routes by, across its retries.
    roster: Option<Arc<Roster>>,
    /// Roster index of the worker of the current attempt.
    worker: Option<usize>,
    /// Workers whose connection failed during this request.
    tried: Vec<usize>,
    /// When the current upstream attempt chose its worker.
    upstream_started: Option<Instant>,
    upstream_latency: Option<Duration>,
    started: Instant,
    /// Request body bytes received so far (against `max_body_bytes`).
    body_bytes: u64,
    /// The body length the request declares (`Content-Length`, checked
    /// once in `request_filter`); `None` when chunked or bodiless.
    declared_body: Option<u64>,
    /// Set by `upstream_response_filter` when the worker answered that it
    /// cannot serve this key now and the request moves on.
    unavailable: bool,
}

impl RequestCtx {
    /// The current attempt's worker failed: take it down, count the retry,
    /// and do not try it again for this request.
    fn abandon_worker(&mut self) {
        if let (Some(worker), Some(roster)) = (self.worker, &self.roster) {
            roster.mark_down(worker);
        }
        self.move_on();
    }

    /// Count a retry of the current attempt's worker and do not try it
    /// again for this request.
    fn move_on(&mut self) {
        if let (Some(worker), Some(roster)) = (self.worker.take(), &self.roster) {
            if let Some(metrics) = roster.metrics(worker) {
                metrics.retries.inc();
            }
            self.tried.push(worker);
        }
    }
}

impl RoostProxy {
    pub fn new(
        fleet: Arc<Fleet>,
        keys: KeyExtractor,
        missing: MissingKey,
        access_log: bool,
        upstream_timeout: Duration,
        limits: Limits,
        hop_token: Option<http::HeaderValue>,
    ) -> Self {
        RoostProxy {
            fleet,
            keys,
            missing,
            access_log,
            upstream_timeout,
            limits,
            hop_token,
            unrouted: RequestCounters::for_worker(NO_WORKER),
        }
    }

    /// Every check a request passes before a worker is chosen, in order;
    /// the reply refusing it otherwise. Leaves the routing key (and a
    /// minted id's cookie) in `ctx`.
    fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ErrorReply> {
        ctx.declared_body = self.limits.check_request(session)?;
        if let Some(normal) = self.limits.check_path(session.req_header().uri.path())? {
            set_path(session.req_header_mut(), &normal)?;
        }
        let now = identity::unix_now();
        match self.keys.extract(session.req_header(), now) {
            Ok(Some(key)) => {
                if let Some(refusal) = self.limits.check_key(&key) {
                    return Err(refusal);
                }
                ctx.key = Some(key);
                Ok(())
            }
            Err(rejection) => {
                rejection.count();
                Err(ErrorReply::new(
                    401,
                    "invalid_identity",
                    rejection.to_string(),
                ))
            }
            Ok(None) => self.admit_keyless(session, ctx, now),
        }
    }

    /// A request without a key: rejected, sent anywhere or minted an id, as
    /// `key.missing` says; limited by its client address.
    fn admit_keyless(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        now: u64,
    ) -> Result<(), ErrorReply> {
        let minter = match (self.missing, self.keys.minter()) {
            (MissingKey::Any, _) => None,
            (MissingKey::Mint, Some(cookie)) => Some(cookie),
            _ => {
                let message = "the request carries no user key";
                return Err(ErrorReply::new(401, "missing_key", message));
            }
        };
        if let Some(refusal) = self.limits.check_keyless(client_ip(session)) {
            return Err(refusal);
        }
        if let Some(cookie) = minter {
            let minted = Minted::new(cookie, now, client_tls(session)).map_err(|e| {
                tracing::error!(error = %e, "cannot mint an id: the OS gave no randomness");
                ErrorReply::new(500, "mint_failed", "the proxy could not mint an id")
            })?;
            ctx.key = Some(minted.id.into_bytes());
            ctx.set_cookie = Some(minted.set_cookie);
        }
        Ok(())
    }

    fn pick<'r>(&self, roster: &'r Roster, ctx: &RequestCtx) -> Option<Pick<'r>> {
        match &ctx.key {
            Some(key) => roster.pick(key, &ctx.tried),
            None => self.fleet.pick_any(roster, &ctx.tried),
        }
    }
}

#[async_trait]
impl ProxyHttp for RoostProxy {
    type CTX = RequestCtx;

    /// No downstream modules: Roost passes bodies through untouched (the
    /// default adds a disabled compression module, whose per-request context
    /// costs time for nothing).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            key: None,
            set_cookie: None,
            roster: None,
            worker: None,
            tried: Vec::new(),
            upstream_started: None,
            upstream_latency: None,
            started: Instant::now(),
            body_bytes: 0,
            declared_body: None,
            unavailable: false,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.limits.timeouts().request_started(session);
        let downstream = session.as_downstream_mut();
        // Requests pipelined on one connection are answered in order
        // (RFC 9112 §9.3.2) rather than the first alone.
        downstream.set_pipelining_enabled(true);
        // A client that sends its request and half-closes still gets the
        // response (RFC 9112 §9.6); a real disconnect shows when writing.
        downstream.set_abort_on_close(false);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let refusal = match self.admit(session, ctx) {
            Ok(()) => {
                preread_small_body(session, ctx.declared_body).await?;
                return Ok(false);
            }
            Err(refusal) => refusal,
        };
        write_reply(session, &refusal).await?;
        linger::drain_request(session).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let roster = Arc::clone(ctx.roster.get_or_insert_with(|| self.fleet.roster()));
        let Some(pick) = self.pick(&roster, ctx) else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no live worker for the request",
            ));
        };
        if let Some(owner) = pick.failed_over_from {
            if let Some(metrics) = roster.metrics(owner.index) {
                metrics.failovers.inc();
            }
        }
        ctx.worker = Some(pick.worker.index);
        ctx.upstream_started = Some(Instant::now());
        let mut peer = HttpPeer::new(pick.worker.addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        peer.options.read_timeout = Some(self.upstream_timeout);
        peer.options.write_timeout = Some(self.upstream_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.abandon_worker();
        // Nothing reached the worker, so any method may go to the next candidate.
        e.set_retry(true);
        e
    }

    /// After the request reached a worker. An error of the client's (its
    /// body stalled, it left) is not held against the worker. A timeout
    /// while the client's body is still incomplete is the client's too: the
    /// worker waits for it. Any other timeout means the worker went quiet
    /// (frozen, cut off): take it down and, when a replay is safe,
    /// retry on the key's next candidate. A lost connection retries a
    /// replay-safe request too. Otherwise Pingora's rule holds (a
    /// replay-safe request is retried on a reused connection that closed
    /// under it). An `Idempotency-Key` counts as replay-safe.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if std::mem::take(&mut ctx.unavailable) {
            // `upstream_response_filter` checked that a replay is safe.
            ctx.move_on();
            e.set_retry(true);
            return e;
        }
        if *e.esource() == ErrorSource::Downstream {
            // The client stalled, left or stopped reading: nothing to hold
            // against the worker, nothing to retry.
            e.set_retry(false);
            return e;
        }
        let replayable = is_replay_safe(session);
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        if timed_out && !session.is_body_done() {
            // The worker waits for the rest of a body the client stopped
            // sending: the client's fault, not the worker's.
            return limits::body_stalled(e);
        }
        if timed_out {
            ctx.abandon_worker();
            e.set_retry(replayable);
        } else if replayable && is_connection_lost(&e) {
            // The worker closed or reset the connection mid-request: it may
            // have been killed. A reused connection may just have been
            // closed as idle, so try the worker again; a fresh one means the
            // worker is likely gone, so try the next candidate (connecting
            // to a dead worker would fail and take it down anyway).
            if !client_reused {
                if let Some(worker) = ctx.worker.take() {
                    ctx.tried.push(worker);
                }
            }
            e.set_retry(true);
        } else if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        strip_reserved_headers(upstream);
        if let Some(key) = &ctx.key {
            upstream.insert_header(headers::KEY, key.as_slice())?;
        }
        if let Some(token) = &self.hop_token {
            upstream.insert_header(headers::HOP_TOKEN, token.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_latency = ctx.upstream_started.map(|t| t.elapsed());
        if !is_unavailable(upstream_response) {
            return Ok(());
        }
        if let (Some(worker), Some(roster)) = (ctx.worker, &ctx.roster) {
            roster.record_check(worker, false);
        }
        if !is_replay_safe(session) {
            return Ok(());
        }
        ctx.unavailable = true;
        Error::e_explain(
            ErrorType::HTTPStatus(503),
            "the worker cannot serve this key now; trying the next candidate",
        )
    }

    /// Counts the body against `max_body_bytes` as it streams (a declared
    /// `Content-Length` was checked in `request_filter`).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.limits.count_body(&mut ctx.body_bytes, body.as_ref())
    }

    /// Hands a minted id to the client with the worker's answer.
    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(cookie) = ctx.set_cookie.take() {
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let limited = self.limits.reply_to(e);
        let status = limited
            .as_ref()
            .map_or_else(|| error_status(e), |reply| reply.status);
        log_failure(e, status, session);
        if status > 0 {
            let mut reply = limited.unwrap_or_else(|| ErrorReply::for_status(status));
            if status == 503 {
                reply = reply.retry_after(1);
            }
            match write_reply(session, &reply).await {
                // A stalled client sends nothing more to linger for.
                Ok(()) if status != 408 => linger::drain_request(session).await,
                Ok(()) => {}
                Err(write_error) => {
                    tracing::debug!(error = %write_error, "could not send the error response");
                }
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// `fail_to_proxy` has logged the failure at its level ([`log_failure`]).
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.limits.timeouts().request_finished(session);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let roster = ctx.roster.as_deref();
        let worker = ctx
            .worker
            .and_then(|i| roster.and_then(|r| r.workers().get(i)));
        match worker.and_then(|w| roster.and_then(|r| r.metrics(w.index))) {
            Some(metrics) => {
                metrics.requests.count(status);
                if let Some(latency) = ctx.upstream_latency {
                    metrics.upstream_latency.observe(latency.as_secs_f64());
                }
            }
            None => self.unrouted.count(status),
        }
        if self.access_log {
            let request = session.req_header();
            tracing::info!(
                target: "roost::access",
                method = %request.method,
                path = %request.uri.path(),
                key = %ctx.key.as_deref().map_or_else(|| "-".to_owned(), |k| self.fleet.key_hash(k)),
                worker = worker.map_or(NO_WORKER, |w| &*w.id),
                status,
                latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
                retries = ctx.tried.len(),
            );
        }
    }
}

/// Whether the request may be sent again after a worker may have seen it:
/// an idempotent method, or an `Idempotency-Key`, with the whole body still
/// buffered for the replay.
fn is_replay_safe(session: &Session) -> bool {
    let request = session.req_header();
    (request.method.is_idempotent() || request.headers.contains_key(IDEMPOTENCY_KEY))
        && !session.as_ref().retry_buffer_truncated()
}

/// A worker's 503 that says it cannot serve this key now (lease lost,
/// draining, hand-over timed out), rather than that the request failed.
fn is_unavailable(response: &ResponseHeader) -> bool {
    response.status == http::StatusCode::SERVICE_UNAVAILABLE
        && response.headers.contains_key(headers::UNAVAILABLE)
}

/// Read a small declared body whole into Pingora's retry buffer (see
/// [`PREREAD_MAX_BYTES`]), so the request reaches a worker complete. A
/// client that stalls meets its body timeout here (408), with no worker
/// waiting. A client that expects `100 Continue` streams instead: it
/// waits for the worker's word before it sends.
async fn preread_small_body(session: &mut Session, declared: Option<u64>) -> Result<()> {
    let small = declared.is_some_and(|length| length <= PREREAD_MAX_BYTES);
    let expects_continue = session
        .req_header()
        .headers
        .contains_key(http::header::EXPECT);
    if !small || expects_continue || session.is_body_done() {
        return Ok(());
    }
    session.as_mut().enable_retry_buffering();
    while session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
        .is_some()
    {}
    Ok(())
}

/// Replace the request's path (keeping its query) with its normal form.
fn set_path(request: &mut RequestHeader, normal: &str) -> Result<(), ErrorReply> {
    let target = match request.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal.to_owned(),
    };
    request.set_raw_path(target.as_bytes()).map_err(|e| {
        ErrorReply::new(
            400,
            "invalid_path",
            format!("the path cannot be forwarded: {e}"),
        )
    })
}

/// The client's IP address, when it connected over IP.
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    Some(session.client_addr()?.as_inet()?.ip())
}

/// Log a failed request at the level of whose fault it was: the client's
/// (gone, stalled, malformed) at debug and counted; a worker's at warn (the
/// health checks and retries act on it); the proxy's own at error, the
/// one level an operator must act on.
fn log_failure(e: &Error, status: u16, session: &Session) {
    let path = session.req_header().uri.path();
    match e.esource() {
        ErrorSource::Downstream => {
            if status == 0 {
                crate::metrics::count(Benign::ClientDisconnect);
            }
            tracing::debug!(error = %e, status, path, "client failed the request");
        }
        ErrorSource::Upstream => {
            tracing::warn!(error = %e, status, path, "worker failed the request")
        }
        ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
            ErrorType::HTTPStatus(code) if *code < 500 => {
                tracing::debug!(error = %e, status, path, "request refused");
            }
            ErrorType::HTTPStatus(_) => {
                tracing::warn!(error = %e, status, path, "no worker could take the request")
            }
            _ => tracing::error!(error = %e, status, path, "the proxy failed the request"),
        },
    }
}

/// Whether the client connection is TLS (a minted cookie is then `Secure`).
fn client_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

/// The connection to the worker broke (closed, reset) rather than the
/// worker answering badly.
fn is_connection_lost(e: &Error) -> bool {
    *e.esource() == ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
        )
}

/// Remove every client-sent `x-roost-*` header: only the proxy sets those.
fn strip_reserved_headers(request: &mut RequestHeader) {
    let reserved: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| headers::is_reserved(name.as_str()))
        .cloned()
        .collect();
    for name in reserved {
        request.remove_header(&name);
    }
}

/// The status to answer an error with; 0 when the client is already gone.
fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if *e.esource() == ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

async fn write_reply(session: &mut Session, reply: &ErrorReply) -> Result<()> {
    let body = reply.body();
    let header = reply.header(body.len())?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
