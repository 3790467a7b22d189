//! The generic path: Roost's [`ProxyHttp`] implementation, hooks in the
//! order Pingora calls them. It carries every connection the lean path
//! ([`crate::lean`]) hands it: HTTP/2, HTTP/1.0, streamed (chunked or
//! large) bodies, `Expect: 100-continue`, anything malformed or
//! ambiguous. Both apply the same [`Policy`]; this module maps it onto
//! Pingora's phases.
//!
//! 0. `early_request_filter`: the header is in: stop the connection's
//!    header clock, set the body and write timeouts ([`crate::timeouts`]);
//!    answer pipelined requests in order, and a client that half-closed
//!    after its request still gets its response.
//! 1. `request_filter` ([`Policy::admit`]): refuse a request over the header or declared body
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
//!    they were ([`policy::failure_reply`]); Pingora's own error line is
//!    suppressed.
//! 9. `logging`: metrics and the access-log line.
//!
//! A request that already reached a worker over a reused connection follows
//! Pingora's default (and nginx's) policy: it is retried only when idempotent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use roost_routing::headers;

use crate::limits;
use crate::linger;
use crate::metrics::InFlight;
use crate::policy::{self, Admitted, Client, Finished, Policy, Route, SharedPolicy};
use crate::reply::ErrorReply;

/// How long to wait for a worker to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an idle upstream connection stays in the pool.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A declared body up to this size is read whole before a worker is
/// chosen (as nginx buffers request bodies): Pingora's retry buffer holds
/// it for a replay on the next candidate. Larger and chunked bodies stream.
pub const PREREAD_MAX_BYTES: u64 = 64 * 1024;

/// Roost's sticky proxy on Pingora's generic path.
pub struct RoostProxy {
    policy: SharedPolicy,
}

/// Per-request state.
pub struct RequestCtx {
    /// The policy this request started with, whatever a reload does.
    policy: Arc<Policy>,
    /// The routing key, a minted id's cookie (taken by `response_filter`)
    /// and the declared body length, from `request_filter`.
    admitted: Admitted,
    /// The workers this request tried and is trying.
    route: Route,
    started: Instant,
    /// Request body bytes received so far (against `max_body_bytes`).
    body_bytes: u64,
    /// Set by `upstream_response_filter` when the worker answered that it
    /// cannot serve this key now and the request moves on.
    unavailable: bool,
    /// In `roost_proxy_requests_in_flight` until the context is dropped.
    _in_flight: InFlight,
}

impl RoostProxy {
    pub fn new(policy: SharedPolicy) -> Self {
        RoostProxy { policy }
    }
}

/// Every check a request passes before a worker is chosen
/// ([`Policy::admit`]).
fn admit(policy: &Policy, session: &mut Session) -> Result<Admitted, ErrorReply> {
    let header_bytes = header_bytes(session);
    let client = Client {
        ip: client_ip(session),
        tls: client_tls(session),
    };
    policy.admit(session.req_header_mut(), header_bytes, client)
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
            policy: self.policy.load_full(),
            admitted: Admitted::default(),
            route: Route::default(),
            started: Instant::now(),
            body_bytes: 0,
            unavailable: false,
            _in_flight: InFlight::start(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.policy.limits().timeouts().request_started(session);
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
        let refusal = match admit(&ctx.policy, session) {
            Ok(admitted) => {
                ctx.admitted = admitted;
                preread_small_body(session, ctx.admitted.declared_body).await?;
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
        let key = ctx.admitted.key.as_deref();
        let Some(addr) = ctx.route.next_worker(ctx.policy.fleet(), key) else {
            return Err(policy::no_live_worker());
        };
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        peer.options.read_timeout = Some(ctx.policy.upstream_timeout());
        peer.options.write_timeout = Some(ctx.policy.upstream_timeout());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.route.abandon_worker();
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
            ctx.route.move_on();
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
            ctx.route.abandon_worker();
            e.set_retry(replayable);
        } else if replayable && policy::is_connection_lost(&e) {
            // The worker closed or reset the connection mid-request: it may
            // have been killed. A reused connection may just have been
            // closed as idle, so try the worker again; a fresh one means the
            // worker is likely gone, so try the next candidate (connecting
            // to a dead worker would fail and take it down anyway).
            if !client_reused {
                ctx.route.skip_worker();
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
        if let Some(key) = &ctx.admitted.key {
            upstream.insert_header(headers::KEY, key.as_slice())?;
        }
        if let Some(token) = ctx.policy.hop_token() {
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
        ctx.route.answered();
        let status = upstream_response.status.as_u16();
        if !policy::is_unavailable(status, &upstream_response.headers) {
            return Ok(());
        }
        ctx.route.worker_unavailable();
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
        let limits = ctx.policy.limits();
        limits.count_body(&mut ctx.body_bytes, body.as_ref())
    }

    /// Hands a minted id to the client with the worker's answer.
    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(cookie) = ctx.admitted.set_cookie.take() {
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let path = session.req_header().uri.path().to_owned();
        let reply = policy::failure_reply(ctx.policy.limits(), e, &path);
        let status = reply.as_ref().map_or(0, |reply| reply.status);
        if let Some(reply) = reply {
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

    /// `fail_to_proxy` has logged the failure at its level
    /// ([`policy::failure_reply`]).
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.policy.limits().timeouts().request_finished(session);
        let request = session.req_header();
        ctx.policy.finish(&Finished {
            method: &request.method,
            path: request.uri.path(),
            key: ctx.admitted.key.as_deref(),
            route: &ctx.route,
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            started: ctx.started,
        });
    }
}

/// Whether the request may be sent again after a worker may have seen it
/// ([`policy::is_replay_safe`]), with the whole body still buffered for
/// the replay.
fn is_replay_safe(session: &Session) -> bool {
    policy::is_replay_safe(session.req_header()) && !session.as_ref().retry_buffer_truncated()
}

/// The request line and header fields as the client sent them (HTTP/1,
/// the only protocol the proxy serves); for any other session, the parsed
/// fields' sizes.
fn header_bytes(session: &Session) -> usize {
    if let Some(h1) = session.as_downstream().as_http1() {
        return h1.get_headers_raw_bytes().len();
    }
    let request = session.req_header();
    let fields: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    fields + request.raw_path().len()
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

/// The client's IP address, when it connected over IP.
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    Some(session.client_addr()?.as_inet()?.ip())
}

/// Whether the client connection is TLS (a minted cookie is then `Secure`).
fn client_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
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

async fn write_reply(session: &mut Session, reply: &ErrorReply) -> Result<()> {
    let body = reply.body();
    let header = reply.header(body.len())?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
