//! The lean forward path: plain HTTP/1.1 keep-alive requests carried from
//! client to worker and back with as little work as the job needs.
//!
//! Why: Pingora's generic proxy path is built for every case (HTTP/2,
//! upgrades, caching, modules), and on Roost's one case, a small request
//! and a small response, its per-request work (a channel and a task per
//! request body, header maps rebuilt for the upstream, pool
//! bookkeeping) cost the proxy about twice nginx's CPU per request.
//! Here, a request is read into one buffer, checked by the same
//! [`Policy`] as the generic path, written to a pooled worker connection
//! in one write, and the response is relayed as it arrives, its body
//! untouched (chunked stays chunked, server-sent events flow).
//!
//! What it takes is decided per connection, by `head::parse`: plain
//! requests stay here; the first request that is not plain (HTTP/1.0,
//! chunked or large bodies, `Expect`, upgrades, anything malformed or
//! ambiguous), and any HTTP/2 connection, hands the connection, with the
//! bytes read so far, to Pingora's generic path for the rest of its life.
//!
//! The connection's timeouts are the [`ClockedStream`]'s (header,
//! keep-alive idle), and per read and write here (body, worker); the
//! retry rules are [`Policy`]'s and the generic path's:
//!
//! | the worker... | replay-safe request | other request |
//! |---|---|---|
//! | refused the connection | next candidate, worker marked down | same |
//! | answered 503 `x-roost-unavailable` | next candidate | the 503 is relayed |
//! | went silent for `suspect_after_ms`, and then its `/healthz` too | worker marked down, next candidate | waited for |
//! | went silent past `upstream_timeout_ms` | worker marked down, next candidate | 504 |
//! | closed a reused connection | again on a fresh connection | 502 |
//! | closed a fresh connection | next candidate | 502 |

mod framing;
mod head;
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora::apps::ServerApp;
use pingora::protocols::{Ssl, ALPN};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use self::framing::Framing;
use self::head::{Head, Parsed};
use self::upstream::{ResponseHead, Upstream};
use crate::connections::client_address;
use crate::linger;
use crate::metrics::InFlight;
use crate::policy::{self, Admitted, Client, Finished, Policy, Route, SharedPolicy};
use crate::reply::ErrorReply;
use crate::timeouts::ClockedStream;
use pingora::protocols::Stream;

/// A request head longer than this goes to the generic path (which
/// answers it: most likely 431).
const MAX_LEAN_HEAD: usize = 16 * 1024;
/// The most attempts one request makes (Pingora's own retry bound).
const MAX_ATTEMPTS: usize = 16;
/// When a drain closes the listeners, how long an idle connection is
/// still read for a request its client had already sent.
const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(100);

/// The client-facing app: every connection wrapped in its
/// [`ClockedStream`], served here while its requests are plain, then by
/// `generic` (Pingora's proxy).
pub struct LeanPath<A> {
    generic: Arc<A>,
    policy: SharedPolicy,
    /// True once a drain has closed the listeners
    /// ([`crate::lifecycle::Lifecycle::listeners_closed`]).
    closed: watch::Receiver<bool>,
}

impl<A> LeanPath<A> {
    pub fn new(generic: A, policy: SharedPolicy, closed: watch::Receiver<bool>) -> Self {
        LeanPath {
            generic: Arc::new(generic),
            policy,
            closed,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for LeanPath<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A reload's timeouts apply from the next connection on.
        let stream = ClockedStream::new(stream, self.policy.load().limits().timeouts());
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.generic.process_new(Box::new(stream), shutdown).await;
        }
        let mut client = Downstream::new(stream);
        let mut closed = self.closed.clone();
        loop {
            match client.read_head_unless_closed(&mut closed).await {
                Some(Parsed::Lean(head)) => {
                    if !self.serve(&mut client, *head, &closed).await {
                        break;
                    }
                }
                Some(_) => return self.hand_over(client, shutdown).await,
                None => break,
            }
        }
        let _ = client.stream.shutdown().await;
        None
    }

    async fn cleanup(&self) {
        self.generic.cleanup().await;
    }
}

impl<A: ServerApp + Send + Sync + 'static> LeanPath<A> {
    /// The rest of the connection goes to the generic path, starting with
    /// the bytes already read.
    async fn hand_over(&self, client: Downstream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Downstream {
            mut stream, buf, ..
        } = client;
        stream.replay(buf.freeze());
        self.generic.process_new(Box::new(stream), shutdown).await
    }

    /// One request, from its head to the end of its response. Returns
    /// whether the connection stays open for the next one: not when the
    /// client asked to close, nor once a drain has closed the listeners
    /// (looked at when the response starts, so a request in flight then is
    /// answered with `Connection: close`).
    async fn serve(
        &self,
        client: &mut Downstream,
        head: Head,
        closed: &watch::Receiver<bool>,
    ) -> bool {
        let started = Instant::now();
        let _in_flight = InFlight::start();
        let Head {
            mut request,
            len,
            body_len,
            close,
        } = head;
        client.buf.advance(len);
        client.stream.started();
        let mut route = Route::default();
        // The policy this request started with, whatever a reload does.
        let policy = self.policy.load_full();
        let serving = Serving { policy: &policy };
        let (admitted, outcome) = match policy.admit(&mut request, len, client.who) {
            Ok(admitted) => {
                let keep_alive = || !close && !*closed.borrow();
                let outcome = serving
                    .read_and_forward(
                        client, &request, &admitted, &mut route, body_len, keep_alive,
                    )
                    .await;
                (admitted, outcome)
            }
            Err(refusal) => {
                let write_timeout = policy.limits().timeouts().write();
                (
                    Admitted::default(),
                    client.refuse(&refusal, write_timeout).await,
                )
            }
        };
        policy.finish(&Finished {
            method: &request.method,
            path: request.uri.path(),
            key: admitted.key.as_deref(),
            route: &route,
            status: outcome.status,
            started,
        });
        client.stream.finished();
        outcome.keep_alive
    }
}

/// One request on the lean path, with the policy it started with.
struct Serving<'p> {
    policy: &'p Policy,
}

impl Serving<'_> {
    async fn read_and_forward(
        &self,
        client: &mut Downstream,
        request: &pingora::http::RequestHeader,
        admitted: &Admitted,
        route: &mut Route,
        body_len: usize,
        keep_alive: impl Fn() -> bool,
    ) -> Outcome {
        let timeouts = self.policy.limits().timeouts();
        let body = match client.read_body(body_len, timeouts.body_idle()).await {
            Ok(body) => body,
            Err(e) => return self.fail(client, &e, request.uri.path()).await,
        };
        let wire = head::upstream_request(
            request,
            admitted.key.as_deref(),
            self.policy.hop_token(),
            &body,
        );
        let attempt = Attempt {
            wire: &wire,
            key: admitted.key.as_deref(),
            replay_safe: policy::is_replay_safe(request),
            head_request: request.method == http::Method::HEAD,
        };
        match self.reach_worker(&attempt, route).await {
            Ok((upstream, response)) => {
                let cookie = admitted.set_cookie.as_deref();
                self.relay(client, upstream, response, cookie, keep_alive())
                    .await
            }
            Err(e) => self.fail(client, &e, request.uri.path()).await,
        }
    }

    /// Send the request to the key's workers in candidate order until one
    /// answers it, by the rules in the module doc.
    async fn reach_worker(
        &self,
        attempt: &Attempt<'_>,
        route: &mut Route,
    ) -> Result<(Upstream, ResponseHead), Box<Error>> {
        let timeout = self.policy.upstream_timeout();
        let mut fresh = false;
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let Some(addr) = route.next_worker(self.policy.fleet(), attempt.key) else {
                return Err(policy::no_live_worker());
            };
            let mut upstream = match Upstream::take(addr, std::mem::take(&mut fresh)).await {
                Ok(upstream) => upstream,
                Err(e) => {
                    route.abandon_worker();
                    last = Some(e);
                    continue;
                }
            };
            let exchange = upstream.exchange(attempt.wire, attempt.head_request, timeout);
            let answer = if attempt.replay_safe {
                self.unless_frozen(exchange, route).await
            } else {
                exchange.await
            };
            let e = match answer {
                Ok(response) if response.unavailable && attempt.replay_safe => {
                    route.answered();
                    route.worker_unavailable();
                    route.move_on();
                    continue;
                }
                Ok(response) => {
                    route.answered();
                    if response.unavailable {
                        route.worker_unavailable();
                    }
                    return Ok((upstream, response));
                }
                Err(e) => e,
            };
            let timed_out = matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            );
            if timed_out {
                route.abandon_worker();
            } else if policy::is_connection_lost(&e) && attempt.replay_safe {
                // A reused connection may just have been closed as idle:
                // the same worker again, on a fresh one. A fresh one means
                // the worker is likely gone.
                if upstream.reused {
                    fresh = true;
                } else {
                    route.skip_worker();
                }
            }
            if !attempt.replay_safe || !(timed_out || policy::is_connection_lost(&e)) {
                return Err(e);
            }
            last = Some(e);
        }
        Err(last.unwrap_or_else(policy::no_live_worker))
    }

    /// `exchange`, unless its worker is frozen: silent for
    /// `suspect_after`, and then not answering its `/healthz` either. A
    /// frozen worker's exchange ends as timed out (so the worker is taken
    /// down and the request moves on) long before `upstream_timeout_ms`;
    /// a live one is waited for as before.
    async fn unless_frozen(
        &self,
        exchange: impl Future<Output = Result<ResponseHead, Box<Error>>>,
        route: &Route,
    ) -> Result<ResponseHead, Box<Error>> {
        let suspect_after = self.policy.suspect_after();
        tokio::pin!(exchange);
        if let Ok(answer) = tokio::time::timeout(suspect_after, &mut exchange).await {
            return answer;
        }
        tokio::select! {
            answer = &mut exchange => answer,
            frozen = self.policy.is_frozen(route) => {
                if !frozen {
                    return exchange.await;
                }
                let why = format!(
                    "the worker sent nothing for {suspect_after:?} and its /healthz did not answer either"
                );
                Err(Error::explain(ErrorType::ReadTimedout, why).into_up())
            }
        }
    }

    /// The worker's response to the client: its head (with a minted id's
    /// cookie, and `Connection: close` when the connection ends after it),
    /// then its body as it arrives.
    async fn relay(
        &self,
        client: &mut Downstream,
        mut upstream: Upstream,
        response: ResponseHead,
        set_cookie: Option<&str>,
        keep_alive: bool,
    ) -> Outcome {
        let ResponseHead {
            status,
            mut wire,
            mut framing,
            close,
            ..
        } = response;
        let keep_alive = keep_alive && framing != Framing::UntilClose;
        if let Some(cookie) = set_cookie {
            head::push_field(&mut wire, b"set-cookie", cookie.as_bytes());
        }
        if !keep_alive {
            wire.extend_from_slice(b"connection: close\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        let timeouts = self.policy.limits().timeouts();
        let ended = async {
            let body = upstream.take_body(&mut framing)?;
            wire.extend_from_slice(&body);
            client.write(&wire, timeouts.write()).await?;
            while !framing.is_done() {
                if upstream.read_more(self.policy.upstream_timeout()).await? == 0 {
                    return match framing {
                        Framing::UntilClose => Ok(()),
                        _ => Err(Error::explain(
                            ErrorType::ConnectionClosed,
                            "the worker closed the connection mid-body",
                        )
                        .into_up()),
                    };
                }
                let body = upstream.take_body(&mut framing)?;
                client.write(&body, timeouts.write()).await?;
            }
            Ok::<(), Box<Error>>(())
        }
        .await;
        match ended {
            Ok(()) => {
                upstream.release(&framing, close);
                Outcome { status, keep_alive }
            }
            Err(e) => {
                // The head is out: the client can only be told by a close.
                policy::failure_reply(self.policy.limits(), &e, "-");
                Outcome {
                    status,
                    keep_alive: false,
                }
            }
        }
    }

    /// Answer a request that failed (no worker could take it, the body
    /// stalled, the client left); the connection closes after it.
    async fn fail(&self, client: &mut Downstream, e: &Error, path: &str) -> Outcome {
        let status = match policy::failure_reply(self.policy.limits(), e, path) {
            Some(reply) => {
                let _ = client
                    .write(&reply.to_http1(), self.policy.limits().timeouts().write())
                    .await;
                reply.status
            }
            None => 0,
        };
        Outcome {
            status,
            keep_alive: false,
        }
    }
}

/// Which way an [`timed`] operation moves bytes.
#[derive(Debug, Clone, Copy)]
enum Io {
    Connect,
    Read,
    Write,
}

/// `io` within `timeout`; its failure or lateness as the Pingora error
/// Pingora's own I/O would give (the caller says whose side it was).
async fn timed<T>(
    timeout: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
    way: Io,
    context: &'static str,
) -> Result<T, Box<Error>> {
    let (failed, late) = match way {
        Io::Connect => (ErrorType::ConnectError, ErrorType::ConnectTimedout),
        Io::Read => (ErrorType::ReadError, ErrorType::ReadTimedout),
        Io::Write => (ErrorType::WriteError, ErrorType::WriteTimedout),
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::because(failed, context, e)),
        Err(_) => Err(Error::explain(
            late,
            format!("{context}: timed out after {timeout:?}"),
        )),
    }
}

/// One request as every attempt sends it.
struct Attempt<'a> {
    /// The whole request as the worker gets it.
    wire: &'a [u8],
    key: Option<&'a [u8]>,
    replay_safe: bool,
    /// A `HEAD` request: the response has no body, whatever it declares.
    head_request: bool,
}

/// How a request ended.
struct Outcome {
    /// The status sent; 0 when the client got none.
    status: u16,
    keep_alive: bool,
}

/// The client's connection and what has been read from it.
struct Downstream {
    stream: ClockedStream,
    buf: BytesMut,
    who: Client,
}

impl Downstream {
    fn new(stream: ClockedStream) -> Self {
        let who = Client {
            ip: client_address(&stream),
            tls: stream.get_ssl_digest().is_some(),
        };
        Downstream {
            stream,
            buf: BytesMut::with_capacity(4096),
            who,
        }
    }

    /// The next request head: lean, or not (the generic path takes over);
    /// `None` when the connection ended (closed, or a header or idle
    /// timeout of the [`ClockedStream`]).
    /// [`Downstream::read_head`], unless a drain closes the listeners
    /// while the connection waits idle: then a request already on its way
    /// within [`IDLE_CLOSE_GRACE`] is still read (and answered with
    /// `Connection: close`); silence closes the connection.
    async fn read_head_unless_closed(
        &mut self,
        closed: &mut watch::Receiver<bool>,
    ) -> Option<Parsed> {
        tokio::select! {
            biased;
            head = self.read_head() => return head,
            _ = closed.wait_for(|closed| *closed) => {}
        }
        tokio::time::timeout(IDLE_CLOSE_GRACE, self.read_head())
            .await
            .ok()
            .flatten()
    }

    async fn read_head(&mut self) -> Option<Parsed> {
        loop {
            if !self.buf.is_empty() {
                match head::parse(&self.buf) {
                    Parsed::Partial if self.buf.len() < MAX_LEAN_HEAD => {}
                    Parsed::Partial => return Some(Parsed::Generic),
                    parsed => return Some(parsed),
                }
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if self.buf.is_empty() => return None,
                // A partial head, then the end: the generic path answers
                // it as it always has.
                Ok(0) => return Some(Parsed::Generic),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The request body, `len` bytes, each read within `idle`.
    async fn read_body(&mut self, len: usize, idle: Duration) -> Result<Bytes, Box<Error>> {
        while self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            match tokio::time::timeout(idle, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => {
                    let e = Error::explain(ErrorType::ConnectionClosed, "the client left mid-body");
                    return Err(e.into_down());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(
                        Error::because(ErrorType::ReadError, "reading the body", e).into_down()
                    )
                }
                Err(_) => {
                    let e = Error::explain(ErrorType::ReadTimedout, "the body stopped arriving");
                    return Err(e.into_down());
                }
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Write `bytes` whole within `timeout`.
    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Box<Error>> {
        let written = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                Err(Error::because(ErrorType::WriteError, "writing to the client", e).into_down())
            }
            Err(_) => Err(Error::explain(
                ErrorType::WriteTimedout,
                "the client read nothing in time",
            )
            .into_down()),
        }
    }

    /// Refuse the request before reading its body: the reply, then a
    /// lingering close ([`crate::linger`]).
    async fn refuse(&mut self, refusal: &ErrorReply, write_timeout: Duration) -> Outcome {
        let status = match self.write(&refusal.to_http1(), write_timeout).await {
            Ok(()) => {
                linger::close_politely(&mut self.stream).await;
                refusal.status
            }
            Err(_) => 0,
        };
        Outcome {
            status,
            keep_alive: false,
        }
    }
}
