//! What every request goes through, whichever HTTP engine carries it
//! ([`crate::lean`] for plain HTTP/1.1 keep-alive requests, Pingora's
//! generic proxy in [`crate::proxy`] for everything else): admission (the
//! limits, the identity, the routing key), the choice of worker and what
//! a failed attempt means for the next one ([`Route`]), which failures may
//! be replayed, how an error is answered and logged, and what is counted
//! and logged once a request is done.
//!
//! Keeping it here, and out of either engine, is what lets the two engines
//! give a client the same answers: the conformance suite
//! (`proxy/tests/conformance.rs`) holds both to it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::http::RequestHeader;
use pingora::lb::Backend;
use pingora::{Error, ErrorSource, ErrorType};

use crate::checker::Probe;
use crate::config::{Loaded, MissingKey};
use crate::fleet::{Fleet, Roster};
use crate::identity::{self, Minted};
use crate::key::KeyExtractor;
use crate::limits::Limits;
use crate::metrics::{Benign, RequestCounters, NO_WORKER, PROXY};
use crate::reply::ErrorReply;
use crate::timeouts::ClientTimeouts;

/// The header that makes a non-idempotent request safe to replay: the
/// worker keeps each key's first reply with the entity's state, so a replay
/// on the entity's next owner applies the change at most once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What a worker answers while its process runs, whatever it waits on.
const LIVENESS_PATH: &str = "/healthz";

/// The policy requests start with: a reload swaps it whole, so a request
/// keeps the policy it started with while the next takes the new one.
pub type SharedPolicy = Arc<ArcSwap<Policy>>;

/// The request-path settings both engines share.
pub struct Policy {
    fleet: Arc<Fleet>,
    keys: KeyExtractor,
    missing: MissingKey,
    access_log: bool,
    upstream_timeout: Duration,
    /// How long a worker may stay silent on a replay-safe request before
    /// it is probed ([`Policy::is_frozen`]).
    suspect_after: Duration,
    /// `/healthz`, given `suspect_after` to answer.
    liveness: Probe,
    /// Request limits, the per-key rate and the client timeouts.
    limits: Limits,
    /// The trusted-hop token sent to the workers (`trusted_hop`).
    hop_token: Option<http::HeaderValue>,
    /// Requests that never reached a worker (rejected, or no live worker).
    unrouted: RequestCounters,
}

/// Who sent a request, as far as admission cares.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: Option<IpAddr>,
    /// Over TLS: a minted cookie is then `Secure`.
    pub tls: bool,
}

/// What admission learnt about a request it let through.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The routing key; `None` for a keyless request under `missing: any`.
    pub key: Option<Vec<u8>>,
    /// `Set-Cookie` for an id minted for this request, sent with its
    /// response.
    pub set_cookie: Option<String>,
    /// The body length the request declares (`Content-Length`); `None`
    /// when chunked or bodiless.
    pub declared_body: Option<u64>,
}

impl Policy {
    /// The policy a loaded config describes, for `fleet`. `previous` is
    /// the policy it replaces on a reload: its rate buckets carry over
    /// when the rate did not change.
    pub fn new(fleet: Arc<Fleet>, loaded: Loaded, previous: Option<&Policy>) -> Self {
        let Loaded { config, built } = loaded;
        let timeouts = ClientTimeouts::new(&config.timeouts);
        let previous_rate = previous.and_then(|policy| policy.limits.rate());
        let suspect_after = Duration::from_millis(config.suspect_after_ms);
        Policy {
            fleet,
            keys: KeyExtractor::new(built.sources),
            missing: config.key.missing,
            access_log: config.access_log,
            upstream_timeout: Duration::from_millis(config.upstream_timeout_ms),
            suspect_after,
            liveness: Probe::new(LIVENESS_PATH, suspect_after)
                .expect("GET /healthz is a valid request"),
            limits: Limits::new(&config.limits, timeouts, &config.hash_seed, previous_rate),
            hop_token: built.hop_token,
            unrouted: RequestCounters::for_worker(NO_WORKER),
        }
    }

    /// This policy, as the one requests start with.
    pub fn shared(self) -> SharedPolicy {
        Arc::new(ArcSwap::from_pointee(self))
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The longest a worker may stay silent on one read or write.
    pub fn upstream_timeout(&self) -> Duration {
        self.upstream_timeout
    }

    /// How long a worker may stay silent on a replay-safe request before
    /// it is suspected of being frozen.
    pub fn suspect_after(&self) -> Duration {
        self.suspect_after
    }

    /// Whether the worker of `route`'s current attempt, silent for
    /// `suspect_after`, is frozen: its `/healthz` does not answer within
    /// as long again.
    pub async fn is_frozen(&self, route: &Route) -> bool {
        match route.backend() {
            Some(backend) => !self.liveness.passes(backend).await,
            None => false,
        }
    }

    /// The trusted-hop token every forwarded request carries.
    pub fn hop_token(&self) -> Option<&http::HeaderValue> {
        self.hop_token.as_ref()
    }

    /// Every check a request passes before a worker is chosen, in order
    /// (header and declared body limits, path, identity and key, rate);
    /// the reply refusing it otherwise. `header_bytes` is the size of the
    /// request line and header as sent. The path is replaced by its normal
    /// form, so the key, the limits and the worker all see the same path.
    pub fn admit(
        &self,
        request: &mut RequestHeader,
        header_bytes: usize,
        client: Client,
    ) -> Result<Admitted, ErrorReply> {
        let declared_body = self.limits.check_request(request, header_bytes)?;
        if let Some(normal) = self.limits.check_path(request.uri.path())? {
            set_path(request, &normal)?;
        }
        let now = identity::unix_now();
        let mut admitted = match self.keys.extract(request, now) {
            Ok(Some(key)) => {
                if let Some(refusal) = self.limits.check_key(&key) {
                    return Err(refusal);
                }
                Admitted {
                    key: Some(key),
                    ..Admitted::default()
                }
            }
            Err(rejection) => {
                rejection.count();
                let message = rejection.to_string();
                return Err(ErrorReply::new(401, "invalid_identity", message));
            }
            Ok(None) => self.admit_keyless(client, now)?,
        };
        admitted.declared_body = declared_body;
        Ok(admitted)
    }

    /// A request without a key: rejected, sent anywhere or minted an id, as
    /// `key.missing` says; limited by its client address.
    fn admit_keyless(&self, client: Client, now: u64) -> Result<Admitted, ErrorReply> {
        let minter = match (self.missing, self.keys.minter()) {
            (MissingKey::Any, _) => None,
            (MissingKey::Mint, Some(cookie)) => Some(cookie),
            _ => {
                let message = "the request carries no user key";
                return Err(ErrorReply::new(401, "missing_key", message));
            }
        };
        if let Some(refusal) = self.limits.check_keyless(client.ip) {
            return Err(refusal);
        }
        let Some(cookie) = minter else {
            return Ok(Admitted::default());
        };
        let minted = Minted::new(cookie, now, client.tls).map_err(|e| {
            tracing::error!(error = %e, "cannot mint an id: the OS gave no randomness");
            ErrorReply::new(500, "mint_failed", "the proxy could not mint an id")
        })?;
        Ok(Admitted {
            key: Some(minted.id.into_bytes()),
            set_cookie: Some(minted.set_cookie),
            declared_body: None,
        })
    }

    /// Count a finished request and write its access-log line.
    pub fn finish(&self, done: &Finished<'_>) {
        let elapsed = done.started.elapsed();
        PROXY.observe_request(done.status, elapsed.as_secs_f64());
        let worker = done.route.worker_tag();
        match done.route.worker_metrics() {
            Some(metrics) => {
                metrics.requests.count(done.status);
                if let Some(latency) = done.route.upstream_latency {
                    metrics.upstream_latency.observe(latency.as_secs_f64());
                }
            }
            None => self.unrouted.count(done.status),
        }
        if self.access_log {
            tracing::info!(
                target: "roost::access",
                method = %done.method,
                path = %done.path,
                key = %done.key.map_or_else(|| "-".to_owned(), |k| self.fleet.key_hash(k)),
                worker = worker.map_or(NO_WORKER, |w| &*w.id),
                status = done.status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                retries = done.route.retries(),
            );
        }
    }
}

/// A finished request, as [`Policy::finish`] counts and logs it.
pub struct Finished<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub key: Option<&'a [u8]>,
    pub route: &'a Route,
    /// The status sent; 0 when the client got none.
    pub status: u16,
    pub started: Instant,
}

/// One request's way through the fleet: the roster it routes by (fixed
/// for all its attempts), the worker of the current attempt, the workers
/// it gave up on.
#[derive(Default)]
pub struct Route {
    roster: Option<Arc<Roster>>,
    /// Roster index of the worker of the current attempt.
    worker: Option<usize>,
    /// Workers this request will not try again.
    tried: Vec<usize>,
    /// When the current attempt chose its worker.
    upstream_started: Option<Instant>,
    /// From choosing the worker to its response header.
    pub upstream_latency: Option<Duration>,
}

impl Route {
    /// The key's first live, untried candidate (any live worker for a
    /// keyless request), now the current attempt's; `None` when there is
    /// none. Counts a failover when the key's owner was passed over.
    pub fn next_worker(&mut self, fleet: &Fleet, key: Option<&[u8]>) -> Option<SocketAddr> {
        let roster = Arc::clone(self.roster.get_or_insert_with(|| fleet.roster()));
        let pick = match key {
            Some(key) => roster.pick(key, &self.tried),
            None => fleet.pick_any(&roster, &self.tried),
        }?;
        if let Some(owner) = pick.failed_over_from {
            if let Some(metrics) = roster.metrics(owner.index) {
                metrics.failovers.inc();
            }
        }
        self.worker = Some(pick.worker.index);
        self.upstream_started = Some(Instant::now());
        Some(pick.worker.addr)
    }

    /// The current attempt's worker, as Pingora's balancer knows it.
    fn backend(&self) -> Option<&Backend> {
        self.roster.as_ref()?.backend(self.worker?)
    }

    /// The current attempt's worker answered with its response header.
    pub fn answered(&mut self) {
        self.upstream_latency = self.upstream_started.map(|t| t.elapsed());
    }

    /// The current attempt's worker failed: take it down, count the retry,
    /// and do not try it again for this request.
    pub fn abandon_worker(&mut self) {
        if let (Some(worker), Some(roster)) = (self.worker, &self.roster) {
            roster.mark_down(worker);
        }
        self.move_on();
    }

    /// Count a retry of the current attempt's worker and do not try it
    /// again for this request.
    pub fn move_on(&mut self) {
        if let (Some(worker), Some(roster)) = (self.worker.take(), &self.roster) {
            if let Some(metrics) = roster.metrics(worker) {
                metrics.retries.inc();
            }
            self.tried.push(worker);
        }
    }

    /// Do not try the current attempt's worker again (its connection broke
    /// under a fresh request: it is likely gone), without counting a retry.
    pub fn skip_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.tried.push(worker);
        }
    }

    /// The worker answered that it cannot serve this key now: a failed
    /// health check.
    pub fn worker_unavailable(&self) {
        if let (Some(worker), Some(roster)) = (self.worker, &self.roster) {
            roster.record_check(worker, false);
        }
    }

    /// Workers given up on so far.
    pub fn retries(&self) -> usize {
        self.tried.len()
    }

    fn worker_tag(&self) -> Option<&crate::select::WorkerTag> {
        self.roster.as_deref()?.workers().get(self.worker?)
    }

    fn worker_metrics(&self) -> Option<&crate::metrics::WorkerMetrics> {
        self.roster.as_deref()?.metrics(self.worker?)
    }
}

/// Whether a request may be sent again after a worker may have seen it:
/// an idempotent method, or an `Idempotency-Key` (the caller checks that
/// the whole body is still at hand for the replay).
pub fn is_replay_safe(request: &RequestHeader) -> bool {
    request.method.is_idempotent() || request.headers.contains_key(IDEMPOTENCY_KEY)
}

/// A worker's 503 that says it cannot serve this key now (lease lost,
/// draining, hand-over timed out), rather than that the request failed.
pub fn is_unavailable(status: u16, headers: &http::HeaderMap) -> bool {
    status == 503 && headers.contains_key(roost_routing::headers::UNAVAILABLE)
}

/// The connection to the worker broke (closed, reset) rather than the
/// worker answering badly.
pub fn is_connection_lost(e: &Error) -> bool {
    *e.esource() == ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
        )
}

/// The status to answer an error with; 0 when the client is already gone.
pub fn error_status(e: &Error) -> u16 {
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

/// The reply for a failed request, when its client can still get one:
/// the limit's own reply, else the standard one for its status (503 with
/// `Retry-After`). Logs the failure at the level of whose fault it was.
pub fn failure_reply(limits: &Limits, e: &Error, path: &str) -> Option<ErrorReply> {
    let limited = limits.reply_to(e);
    let status = limited
        .as_ref()
        .map_or_else(|| error_status(e), |reply| reply.status);
    log_failure(e, status, path);
    if status == 0 {
        return None;
    }
    let reply = limited.unwrap_or_else(|| ErrorReply::for_status(status));
    Some(if status == 503 {
        reply.retry_after(1)
    } else {
        reply
    })
}

/// Log a failed request at the level of whose fault it was: the client's
/// (gone, stalled, malformed) at debug and counted; a worker's at warn (the
/// health checks and retries act on it); the proxy's own at error, the
/// one level an operator must act on.
fn log_failure(e: &Error, status: u16, path: &str) {
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

/// The error for a request no worker can take now.
pub fn no_live_worker() -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(503), "no live worker for the request")
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
