//! The proxy's life between start and exit as an operator drives it:
//! readiness, and the drain a SIGTERM starts.
//!
//! | signal | what the proxy does |
//! |---|---|
//! | SIGTERM | `/readyz` fails at once; requests are served as before for `drain_delay_ms` (the load balancer in front stops sending); then the listeners close, requests in flight finish (each answered with `Connection: close`), idle keep-alive connections are closed, and the process exits 0 once no client connection is left, or after `drain_timeout_ms` at the latest |
//! | SIGINT | exits at once (0) |
//! | SIGQUIT | Pingora's graceful upgrade: the listening sockets go to the proxy started with `--upgrade` (which accepts on them at once), this one stops accepting 5 s later and drains as after SIGTERM's delay; `/readyz` keeps passing (both processes answer on the same sockets) |
//!
//! Why the end of the drain is ours, not Pingora's:
//!
//! - Pingora tells every connection it is stopping at the same instant it
//!   tells its accept loops to stop. A response that says `Connection:
//!   close` can then reach its client before the listener is closed, and
//!   the client's next connection lands in the listen backlog, to be reset
//!   when the listener closes. So connections learn it from
//!   [`Lifecycle::listeners_closed`], which [`DrainWatch`] sets only once
//!   the listeners refuse connections.
//! - After it stops the listeners, Pingora sleeps a fixed grace period (in
//!   whole seconds) before it shuts its runtimes down, however soon the
//!   last connection closed. [`DrainWatch`] ends the process as soon as the
//!   drain is done; Pingora's grace period only backs it up.
//! - On SIGINT, Pingora 0.9 shuts its runtimes down with no timeout, and an
//!   accept loop that meets the runtime shutting down can spin on the
//!   error without yielding, so the process never ends. SIGINT is meant to
//!   be immediate: the process exits here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::fleet::Fleet;
use crate::metrics::PROXY;

/// How often the drain looks at the open connections and the listeners.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// The longest the drain waits for the listeners to refuse connections.
const LISTENERS_CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// What `/readyz` reports, shared by the admin listener and the signals.
pub struct Lifecycle {
    fleet: Arc<Fleet>,
    draining: AtomicBool,
    /// Turns true once a drain has closed the listeners.
    closed: watch::Sender<bool>,
    /// The listening sockets went to an upgraded proxy, which keeps them.
    handed_over: AtomicBool,
}

/// Why the proxy is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// A SIGTERM or SIGQUIT came: the proxy is on its way out.
    Draining,
    /// No worker passes its health checks: every request would fail.
    NoLiveWorker,
}

impl Lifecycle {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        Lifecycle {
            fleet,
            draining: AtomicBool::new(false),
            closed: watch::Sender::new(false),
            handed_over: AtomicBool::new(false),
        }
    }

    /// Turns true once a drain has closed the listeners: from then on a
    /// connection answers with `Connection: close` and an idle one closes.
    pub fn listeners_closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Ready: the config is loaded (it is, once this exists), at least one
    /// worker is up, and no drain has started.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Acquire) {
            Err(NotReady::Draining)
        } else if !self.fleet.roster().any_up() {
            Err(NotReady::NoLiveWorker)
        } else {
            Ok(())
        }
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// The signals, as Pingora's shutdown watch: SIGTERM fails readiness at
/// once and lets Pingora stop the listeners only `delay` later.
pub struct DrainSignal {
    lifecycle: Arc<Lifecycle>,
    delay: Duration,
}

impl DrainSignal {
    pub fn new(lifecycle: Arc<Lifecycle>, delay: Duration) -> Self {
        DrainSignal { lifecycle, delay }
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Some(mut term), Some(mut int), Some(mut quit)) = (
            listen_for(SignalKind::terminate()),
            listen_for(SignalKind::interrupt()),
            listen_for(SignalKind::quit()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => exit_at_once(),
            _ = quit.recv() => {
                self.lifecycle.handed_over.store(true, Ordering::Release);
                tracing::info!("SIGQUIT: handing the listening sockets over to the upgraded proxy");
                return ShutdownSignal::GracefulUpgrade;
            }
            _ = term.recv() => {}
        }
        self.lifecycle.start_draining();
        tracing::info!(
            delay_ms = self.delay.as_millis(),
            "SIGTERM: readiness fails; serving on until the delay is over"
        );
        tokio::select! {
            () = tokio::time::sleep(self.delay) => {}
            _ = int.recv() => exit_at_once(),
        }
        tracing::info!("drain: the listeners close; requests in flight finish");
        ShutdownSignal::GracefulTerminate
    }
}

fn exit_at_once() -> ! {
    tracing::info!("SIGINT: exiting at once");
    std::process::exit(0)
}

fn listen_for(kind: SignalKind) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::error!(error = %e, ?kind, "cannot listen for a signal"))
        .ok()
}

/// Once Pingora stops its listeners: waits until `listeners` refuse
/// connections, tells the connections ([`Lifecycle::listeners_closed`]),
/// and ends the process once the last client connection is gone, or
/// `timeout` after the listeners closed.
pub struct DrainWatch {
    lifecycle: Arc<Lifecycle>,
    listeners: Vec<SocketAddr>,
    timeout: Duration,
}

impl DrainWatch {
    pub fn new(lifecycle: Arc<Lifecycle>, listeners: Vec<SocketAddr>, timeout: Duration) -> Self {
        DrainWatch {
            lifecycle,
            listeners,
            timeout,
        }
    }

    /// Until every listener refuses a connection (or the limit passes).
    async fn wait_listeners_closed(&self) {
        let started = Instant::now();
        for &listener in &self.listeners {
            let probe = reachable(listener);
            while TcpStream::connect(probe).await.is_ok() {
                if started.elapsed() > LISTENERS_CLOSE_LIMIT {
                    tracing::warn!(%listener, "drain: the listener still accepts; going on");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Where this host reaches `listener` (an unspecified address is reached
/// on loopback).
fn reachable(listener: SocketAddr) -> SocketAddr {
    let ip = match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listener.port())
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|stopping| *stopping).await.is_err() {
            return;
        }
        // Handed over, the sockets stay open in the new proxy, which
        // accepts what would otherwise wait in the backlog: nothing to
        // wait for.
        if !self.lifecycle.handed_over.load(Ordering::Acquire) {
            self.wait_listeners_closed().await;
        }
        self.lifecycle.closed.send_replace(true);
        let started = Instant::now();
        while PROXY.client_connections.get() > 0 && started.elapsed() < self.timeout {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let left = PROXY.client_connections.get();
        if left > 0 {
            tracing::warn!(
                connections = left,
                timeout_ms = self.timeout.as_millis(),
                "drain timed out; closing what is left"
            );
        } else {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis(),
                "drained: no client connection left"
            );
        }
        std::process::exit(0);
    }
}
