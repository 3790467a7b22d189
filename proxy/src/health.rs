//! Worker health: rise/fall state per worker, fed by active HTTP checks and by
//! passive detection on the request path.
//!
//! A worker starts down and comes up after `rise` consecutive passing checks;
//! it goes down after `fall` consecutive failures, or at once when a
//! connection to it is refused (passive detection), after which it again
//! needs `rise` passes. The request path reads one atomic per candidate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::HealthConfig;
use crate::fleet::Fleet;

/// Health of every worker of the fleet, indexed like the fleet.
pub struct HealthBoard {
    workers: Vec<WorkerHealth>,
    rise: u32,
    fall: u32,
}

struct WorkerHealth {
    /// Read on every request without locking; written only under `state`'s
    /// lock, so it always agrees with `state.up`.
    up: AtomicBool,
    /// Streak and timestamp; a std mutex because it is held for a few
    /// instructions and never across an `.await`.
    state: Mutex<HealthState>,
}

struct HealthState {
    up: bool,
    /// When the worker last changed state (or started being tracked).
    since: SystemTime,
    /// Consecutive check results that disagree with `up`.
    streak: u32,
}

/// A health change worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl HealthBoard {
    pub fn new(workers: usize, config: &HealthConfig) -> Self {
        let now = SystemTime::now();
        HealthBoard {
            workers: (0..workers)
                .map(|_| WorkerHealth {
                    up: AtomicBool::new(false),
                    state: Mutex::new(HealthState {
                        up: false,
                        since: now,
                        streak: 0,
                    }),
                })
                .collect(),
            rise: config.rise,
            fall: config.fall,
        }
    }

    pub fn is_up(&self, worker: usize) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.up.load(Ordering::Acquire))
    }

    /// When `worker` last went up or down.
    pub fn since(&self, worker: usize) -> Option<SystemTime> {
        Some(self.workers.get(worker)?.lock().since)
    }

    /// Record one active check result; returns the transition it caused.
    pub fn observe(&self, worker: usize, passed: bool) -> Option<Transition> {
        let health = self.workers.get(worker)?;
        let mut state = health.lock();
        if state.up == passed {
            state.streak = 0;
            return None;
        }
        state.streak += 1;
        let threshold = if passed { self.rise } else { self.fall };
        (state.streak >= threshold).then(|| health.flip(&mut state, passed))
    }

    /// Passive detection: take `worker` down now. Returns whether it was up.
    pub fn mark_down(&self, worker: usize) -> bool {
        let Some(health) = self.workers.get(worker) else {
            return false;
        };
        let mut state = health.lock();
        if !state.up {
            state.streak = 0;
            return false;
        }
        health.flip(&mut state, false);
        true
    }
}

impl WorkerHealth {
    fn lock(&self) -> MutexGuard<'_, HealthState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flip(&self, state: &mut HealthState, up: bool) -> Transition {
        state.up = up;
        state.streak = 0;
        state.since = SystemTime::now();
        self.up.store(up, Ordering::Release);
        if up {
            Transition::Up
        } else {
            Transition::Down
        }
    }
}

/// The active checker: every `interval_ms`, probes every worker at once.
pub struct HealthChecker {
    fleet: Arc<Fleet>,
    probe: HttpHealthCheck,
    interval: Duration,
    timeout: Duration,
}

impl HealthChecker {
    pub fn new(fleet: Arc<Fleet>, config: &HealthConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut probe = HttpHealthCheck::new("roost-worker", false);
        let mut request = RequestHeader::build("GET", config.path.as_bytes(), None)?;
        request.insert_header("host", "roost-worker")?;
        request.insert_header("user-agent", "roost-proxy-health")?;
        probe.req = request;
        probe.peer_template.options.connection_timeout = Some(timeout);
        probe.peer_template.options.read_timeout = Some(timeout);
        probe.peer_template.options.write_timeout = Some(timeout);
        Ok(HealthChecker {
            fleet,
            probe,
            interval: Duration::from_millis(config.interval_ms),
            timeout,
        })
    }

    /// Probe every worker once, concurrently, and record the results.
    async fn check_all(&self) {
        let probes = self
            .fleet
            .backends()
            .iter()
            .map(|(index, backend)| async move {
                let passed = matches!(
                    tokio::time::timeout(self.timeout, self.probe.check(backend)).await,
                    Ok(Ok(()))
                );
                self.fleet.record_check(*index, passed);
            });
        futures::future::join_all(probes).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn board(rise: u32, fall: u32) -> HealthBoard {
        let config = HealthConfig {
            rise,
            fall,
            ..HealthConfig::default()
        };
        HealthBoard::new(1, &config)
    }

    #[test]
    fn starts_down_and_rises_after_rise_passes() {
        let board = board(2, 2);
        assert!(!board.is_up(0));
        assert_eq!(board.observe(0, true), None);
        assert_eq!(board.observe(0, true), Some(Transition::Up));
        assert!(board.is_up(0));
    }

    #[test]
    fn a_failure_breaks_the_rise_streak() {
        let board = board(2, 2);
        board.observe(0, true);
        board.observe(0, false);
        assert_eq!(board.observe(0, true), None);
        assert!(!board.is_up(0));
    }

    #[test]
    fn falls_after_fall_failures_and_passive_mark_down_is_immediate() {
        let board = board(1, 3);
        board.observe(0, true);
        assert_eq!(board.observe(0, false), None);
        assert_eq!(board.observe(0, false), None);
        assert_eq!(board.observe(0, false), Some(Transition::Down));
        board.observe(0, true);
        assert!(board.mark_down(0));
        assert!(!board.is_up(0));
        assert!(!board.mark_down(0));
    }
}
