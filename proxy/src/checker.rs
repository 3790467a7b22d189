//! The active health checker: every `interval_ms`, one HTTP probe of every
//! worker of the current roster, at once, its result fed to the worker's
//! [`crate::health`] state. It probes the roster of the moment (see
//! [`crate::fleet`]), so discovered workers are checked from the next round.
//! The same [`Probe`] is asked once about a worker that went silent on a
//! request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::HealthConfig;
use crate::fleet::{Fleet, Roster};

/// The active checker: every `interval_ms`, probes every worker at once.
pub struct HealthChecker {
    fleet: Arc<Fleet>,
    probe: Probe,
    interval: Duration,
}

impl HealthChecker {
    pub fn new(fleet: Arc<Fleet>, config: &HealthConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.timeout_ms);
        Ok(HealthChecker {
            fleet,
            probe: Probe::new(&config.path, timeout)?,
            interval: Duration::from_millis(config.interval_ms),
        })
    }

    /// Probe every worker of the current roster once, concurrently, and
    /// record the results.
    async fn check_all(&self) {
        self.probe_all(|roster, index, passed| roster.record_check(index, passed))
            .await;
    }

    /// The round before the proxy takes traffic (a fresh start, or an
    /// upgrade taking over a running proxy's sockets): workers that pass
    /// are up from the first request, instead of `rise` intervals later.
    /// Runs on a runtime of its own, before Pingora's start.
    pub fn first_round(&self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.probe_all(|roster, index, passed| {
            roster.record_first_check(index, passed);
        }));
        Ok(())
    }

    async fn probe_all(&self, record: impl Fn(&Roster, usize, bool)) {
        let roster = self.fleet.roster();
        let probes = roster.backends().iter().map(|(index, backend)| {
            let (roster, record) = (&roster, &record);
            async move { record(roster, *index, self.probe.passes(backend).await) }
        });
        futures::future::join_all(probes).await;
    }
}

/// One HTTP probe of a worker: `GET PATH`, passed by a 200 within
/// `timeout`. The checker probes `health.path`; the request path probes
/// `/healthz` of a worker that went silent on a request, which a live
/// worker answers whatever it is waiting on, and a frozen one (SIGSTOP, a
/// stalled host, a cut link) does not.
pub struct Probe {
    check: HttpHealthCheck,
    timeout: Duration,
}

impl Probe {
    pub fn new(path: &str, timeout: Duration) -> pingora::Result<Self> {
        let mut check = HttpHealthCheck::new("roost-worker", false);
        let mut request = RequestHeader::build("GET", path.as_bytes(), None)?;
        request.insert_header("host", "roost-worker")?;
        request.insert_header("user-agent", "roost-proxy-health")?;
        check.req = request;
        check.peer_template.options.connection_timeout = Some(timeout);
        check.peer_template.options.read_timeout = Some(timeout);
        check.peer_template.options.write_timeout = Some(timeout);
        Ok(Probe { check, timeout })
    }

    /// Whether the worker at `backend` passes.
    pub async fn passes(&self, backend: &Backend) -> bool {
        let check = tokio::time::timeout(self.timeout, self.check.check(backend));
        matches!(check.await, Ok(Ok(())))
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.check_all().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
