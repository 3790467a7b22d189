//! Client timeouts, so a slow or idle client (slowloris) cannot hold a
//! connection forever.
//!
//! | timeout | enforced by | what the client gets |
//! |---|---|---|
//! | `header_read_ms`: accept (or the next request's first byte) → end of header | [`ClockedStream`], here | the connection is closed, no response |
//! | `keepalive_idle_ms`: kept-alive connection waiting for its next request | [`ClockedStream`], here | the connection is closed (normal keep-alive end) |
//! | `body_idle_ms`: wait for the next piece of a request body | Pingora's downstream read timeout | 408 `request_timeout`, then close |
//! | `write_ms`: one write to the client | Pingora's downstream write timeout | the connection is closed |
//!
//! Why a clock of our own: Pingora 0.9 times each *read* of a request
//! header (with the keep-alive timeout, else the read timeout; see
//! `HttpSession::read_request_buf` in pingora-core
//! `src/protocols/http/v1/server.rs`), not the whole header, so a client
//! sending one byte just inside every timeout keeps its connection forever.
//! Its keep-alive timeout is also in whole seconds. So every accepted
//! connection is wrapped in a [`ClockedStream`] (by [`crate::lean::LeanPath`],
//! the server app in front of Pingora's proxy) whose reads fail once the
//! header deadline or the idle deadline passes. The request path tells the
//! stream where a request starts and ends (the lean path directly; the
//! generic one with [`ClientTimeouts::request_started`] in
//! `early_request_filter` and [`ClientTimeouts::request_finished`] in
//! `logging`); in between, reads are not timed here.
//!
//! Two Pingora bounds stay as they are: a TLS handshake may take 60 s
//! (`services/listening.rs`), and while a new connection's first request
//! header is read, Pingora itself waits at most 60 s for each read.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::TimeoutsConfig;
use crate::metrics::{self, Limit};

/// The client timeouts, from `timeouts:`.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    header_read: Duration,
    body_idle: Duration,
    keepalive_idle: Duration,
    write: Duration,
}

impl ClientTimeouts {
    pub fn new(config: &TimeoutsConfig) -> Self {
        let ms = |value: &serde_saphyr::Spanned<u64>| Duration::from_millis(value.value);
        ClientTimeouts {
            header_read: ms(&config.header_read_ms),
            body_idle: ms(&config.body_idle_ms),
            keepalive_idle: ms(&config.keepalive_idle_ms),
            write: ms(&config.write_ms),
        }
    }

    /// The request header is in (`early_request_filter`): stop the header
    /// clock, and give the rest of the request Pingora's per-read body and
    /// per-write timeouts.
    pub fn request_started(&self, session: &mut Session) {
        if let Some(stream) = clocked(session) {
            stream.started();
        }
        session.set_read_timeout(Some(self.body_idle));
        session.set_write_timeout(Some(self.write));
        // Pingora times each read of the next request with its keep-alive
        // timeout (60 s by default); keep it behind our own clock, and do
        // not turn keep-alive on where Pingora turned it off.
        if session.get_keepalive().is_some() {
            let longest = self.keepalive_idle.max(self.header_read);
            session.set_keepalive(Some(longest.as_secs() + 2));
        }
    }

    /// The request is done (`logging`): the connection's idle clock starts
    /// with its next read.
    pub fn request_finished(&self, session: &Session) {
        if let Some(stream) = clocked(session) {
            stream.finished();
        }
    }

    /// How long a request body may pause between two reads.
    pub fn body_idle(&self) -> Duration {
        self.body_idle
    }

    /// How long one write to the client may take.
    pub fn write(&self) -> Duration {
        self.write
    }
}

/// The request's connection as [`crate::lean::LeanPath`] wrapped it.
fn clocked(session: &Session) -> Option<&ClockedStream> {
    let stream: &dyn IO = session.as_downstream().stream()?.as_ref();
    stream.as_any().downcast_ref::<ClockedStream>()
}

// Phases of a connection. The hooks store REQUEST and FINISHED; the
// stream moves on from those itself, on its next read.
/// Reading a request header: reads are timed by `header_read`.
const HEADER: u8 = 0;
/// The header is in; the request is in progress: not timed here.
const REQUEST: u8 = 1;
/// The request is done: the next read starts the idle clock.
const FINISHED: u8 = 2;
/// Waiting for the next request's first byte: timed by `keepalive_idle`.
const IDLE: u8 = 3;
/// A deadline passed: every read fails.
const EXPIRED: u8 = 4;

/// A client connection whose reads fail with `TimedOut` once its request
/// header is late or it has been idle too long (see the module doc).
pub struct ClockedStream {
    inner: Stream,
    /// Where the request path says the connection is: written by the hooks
    /// (through a shared reference to the session's stream, hence an
    /// atomic; hooks and reads never run at once, they share a task).
    hooked: AtomicU8,
    /// The phase the stream acts on; follows `hooked` on each read.
    phase: u8,
    /// When reads start failing; `None` while a request is in progress.
    deadline: Option<Instant>,
    /// Wakes a pending read at `deadline`.
    timer: Pin<Box<Sleep>>,
    header_read: Duration,
    keepalive_idle: Duration,
    /// Bytes read before and handed back ([`Self::replay`]), read first.
    replay: Bytes,
}

impl ClockedStream {
    /// A new connection: its first request header is due `header_read`
    /// from now.
    pub fn new(inner: Stream, timeouts: &ClientTimeouts) -> Self {
        let deadline = Instant::now() + timeouts.header_read;
        ClockedStream {
            inner,
            hooked: AtomicU8::new(HEADER),
            phase: HEADER,
            deadline: Some(deadline),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            header_read: timeouts.header_read,
            keepalive_idle: timeouts.keepalive_idle,
            replay: Bytes::new(),
        }
    }

    /// The request header is in: reads are not timed here until
    /// [`Self::finished`].
    pub fn started(&self) {
        self.hooked.store(REQUEST, Ordering::Relaxed);
    }

    /// The request is done: the next read starts the idle clock.
    pub fn finished(&self) {
        self.hooked.store(FINISHED, Ordering::Relaxed);
    }

    /// Give these bytes, already read from the connection, to the next
    /// reads again: the lean path read a request head that it hands, with
    /// the connection, to Pingora's generic path.
    pub fn replay(&mut self, bytes: Bytes) {
        self.replay = bytes;
    }

    fn enter(&mut self, phase: u8) {
        self.phase = phase;
        self.hooked.store(phase, Ordering::Relaxed);
        self.deadline = match phase {
            HEADER => Some(Instant::now() + self.header_read),
            IDLE => Some(Instant::now() + self.keepalive_idle),
            _ => None,
        };
    }

    /// Take up what the hooks said since the last read.
    fn follow_hooks(&mut self) {
        let hooked = self.hooked.load(Ordering::Relaxed);
        if hooked == self.phase {
            return;
        }
        match hooked {
            FINISHED => self.enter(IDLE),
            other => self.enter(other),
        }
    }

    /// `Ready` once the deadline has passed (registering a wake-up for it
    /// otherwise).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx)
    }

    /// The error every read returns from now on; counts a late header once.
    fn expire(&mut self) -> io::Error {
        let message = match self.phase {
            HEADER => {
                metrics::count_rejection(Limit::HeaderTimeout);
                format!("no complete request header within {:?}", self.header_read)
            }
            IDLE => format!("idle for {:?} between requests", self.keepalive_idle),
            _ => "the connection timed out".to_owned(),
        };
        self.enter(EXPIRED);
        io::Error::new(io::ErrorKind::TimedOut, message)
    }
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.follow_hooks();
        if this.phase == EXPIRED {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)));
        }
        // Checked before reading, so a client trickling bytes is cut off too.
        if this.poll_deadline(cx).is_ready() {
            return Poll::Ready(Err(this.expire()));
        }
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let filled = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.phase == IDLE && buf.filled().len() > filled {
            // The next request's first bytes: its header is due in time.
            this.enter(HEADER);
        }
        read
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// Everything else Pingora asks of a connection is the wrapped one's.

#[async_trait]
impl Shutdown for ClockedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for ClockedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClockedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClockedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClockedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for ClockedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for ClockedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for ClockedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
