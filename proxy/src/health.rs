//! Worker health: rise/fall state per worker, fed by active HTTP checks
//! ([`crate::checker`]) and by passive detection on the request path.
//!
//! A worker starts down and comes up after `rise` consecutive passing checks;
//! it goes down after `fall` consecutive failures, or at once when a
//! connection to it is refused (passive detection), after which it again
//! needs `rise` passes. The request path reads one atomic per candidate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::config::HealthConfig;

/// Rise and fall thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Consecutive passes that bring a worker up.
    pub rise: u32,
    /// Consecutive failures that take a worker down.
    pub fall: u32,
}

impl From<&HealthConfig> for Thresholds {
    fn from(config: &HealthConfig) -> Self {
        Thresholds {
            rise: config.rise,
            fall: config.fall,
        }
    }
}

/// One worker's health.
pub struct WorkerHealth {
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

impl WorkerHealth {
    /// A worker not yet checked: down.
    pub fn down() -> Self {
        WorkerHealth {
            up: AtomicBool::new(false),
            state: Mutex::new(HealthState {
                up: false,
                since: SystemTime::now(),
                streak: 0,
            }),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// When it last went up or down.
    pub fn since(&self) -> SystemTime {
        self.lock().since
    }

    /// Record one active check result; returns the transition it caused.
    pub fn observe(&self, passed: bool, thresholds: Thresholds) -> Option<Transition> {
        let mut state = self.lock();
        if state.up == passed {
            state.streak = 0;
            return None;
        }
        state.streak += 1;
        let threshold = if passed {
            thresholds.rise
        } else {
            thresholds.fall
        };
        (state.streak >= threshold).then(|| self.flip(&mut state, passed))
    }

    /// The first check, before the proxy takes traffic: a pass brings the
    /// worker up at once (it answers now; `rise` guards against a worker
    /// that flaps, which a proxy has not yet seen). Returns the transition.
    pub fn observe_first(&self, passed: bool) -> Option<Transition> {
        let mut state = self.lock();
        (passed && !state.up).then(|| self.flip(&mut state, true))
    }

    /// Passive detection: down now. Returns whether it was up.
    pub fn mark_down(&self) -> bool {
        let mut state = self.lock();
        if !state.up {
            state.streak = 0;
            return false;
        }
        self.flip(&mut state, false);
        true
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(rise: u32, fall: u32) -> Thresholds {
        Thresholds { rise, fall }
    }

    #[test]
    fn starts_down_and_rises_after_rise_passes() {
        let (health, t) = (WorkerHealth::down(), thresholds(2, 2));
        assert!(!health.is_up());
        assert_eq!(health.observe(true, t), None);
        assert_eq!(health.observe(true, t), Some(Transition::Up));
        assert!(health.is_up());
    }

    #[test]
    fn a_failure_breaks_the_rise_streak() {
        let (health, t) = (WorkerHealth::down(), thresholds(2, 2));
        health.observe(true, t);
        health.observe(false, t);
        assert_eq!(health.observe(true, t), None);
        assert!(!health.is_up());
    }

    #[test]
    fn falls_after_fall_failures_and_passive_mark_down_is_immediate() {
        let (health, t) = (WorkerHealth::down(), thresholds(1, 3));
        health.observe(true, t);
        assert_eq!(health.observe(false, t), None);
        assert_eq!(health.observe(false, t), None);
        assert_eq!(health.observe(false, t), Some(Transition::Down));
        health.observe(true, t);
        assert!(health.mark_down());
        assert!(!health.is_up());
        assert!(!health.mark_down());
    }
}
