//! The seven faults the suite injects, the fleet each runs on, and the plan
//! of each run: how many users, how long the load runs, when the fault
//! comes. `--short` is the CI version: every scenario in well under 40 s,
//! so `all --short` fits in four minutes on two CPUs.
//!
//! The cut and the blip are one fault at two lengths: a worker's way to
//! the store stops forwarding while every socket stays open. The cut (5 s)
//! outlasts the worker's lease, so its users must move to other workers;
//! the blip (1 s) does not, nor the workers' `store_grace_ms` (2 s by
//! default), so the worker must hold its users' requests and serve them
//! once the store answers again (issue 15).
//!
//! Think times are chosen so the load does not saturate two CPUs (it shares
//! them with the proxy, three or four workers and Postgres): 200 users × 2
//! devices at 5–20 ms kept both CPUs 99% busy (4.2k requests/s, the load
//! generator alone over one CPU); at 100–300 ms they are about 60% busy
//! (2k requests/s) with a 1.3 ms median. The short plan's 60 users at
//! 30–90 ms make a similar rate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Result;

use crate::load::LoadPlan;
use crate::suite::RunKind;
use roost_testkit::fleet::FleetConfig;

/// One fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// SIGKILL the busiest worker, restart it 2 s later.
    Kill9,
    /// SIGSTOP the busiest worker for 5 s, then SIGCONT.
    Sigstop,
    /// `pg_ctl restart -m fast` of the store.
    PgRestart,
    /// SIGTERM (drain) and restart every worker in turn.
    Rolling,
    /// Start a fourth worker, then SIGTERM it.
    Scale,
    /// Cut the busiest worker off the store for 5 s (its relay stops
    /// forwarding; every socket stays open), then heal it.
    Cut,
    /// The same for 1 s: a store blip, within the lease.
    Blip,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Kill9,
        Scenario::Sigstop,
        Scenario::PgRestart,
        Scenario::Rolling,
        Scenario::Scale,
        Scenario::Cut,
        Scenario::Blip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill9 => "kill9",
            Scenario::Sigstop => "sigstop",
            Scenario::PgRestart => "pg-restart",
            Scenario::Rolling => "rolling",
            Scenario::Scale => "scale",
            Scenario::Cut => "cut",
            Scenario::Blip => "blip",
        }
    }

    /// The fleet it runs on: the suite's ([`FleetConfig::faults`]); the cut
    /// and the blip put a relay between every worker and the store, and
    /// leave the proxy's health checks at their defaults (`/readyz` every
    /// 250 ms, down after 2 failures), so what they measure is what a
    /// default deployment gets: the cut's movement bound, and whether a
    /// blip stays invisible. The blip shares the cut's fleet so that the two
    /// differ only in the cut's length; the suite's fast checks (down after
    /// one failed 100 ms probe) would only make the proxy quicker to send
    /// users away from a worker that is holding their requests.
    pub fn fleet_config(self) -> FleetConfig {
        match self {
            Scenario::Cut | Scenario::Blip => FleetConfig::faults().store_relays().default_health(),
            _ => FleetConfig::faults(),
        }
    }

    /// Workers the proxy lists (the scale scenario's fourth starts later).
    pub fn listed_workers(self) -> usize {
        match self {
            Scenario::Scale => 4,
            _ => 3,
        }
    }

    /// Workers running when the load starts.
    pub fn initial_workers(self) -> usize {
        3
    }

    pub fn plan(self, short: bool) -> Plan {
        let (users, think_ms, duration, fault_at) = if short {
            (60, 30..=90, Duration::from_secs(9), Duration::from_secs(3))
        } else {
            (
                200,
                100..=300,
                Duration::from_secs(20),
                Duration::from_secs(7),
            )
        };
        Plan {
            load: LoadPlan {
                users,
                devices: 2,
                think_ms,
            },
            duration,
            fault_at,
            settle_after_fault: Duration::from_secs(if short { 2 } else { 4 }),
            scale_hold: Duration::from_secs(if short { 3 } else { 6 }),
            // Short runs (CI, often with debug binaries) keep it small: the
            // movement bound is reported there, not asserted.
            bystanders: if short { 2_000 } else { 20_000 },
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        Scenario::named(text)
    }
}

/// The timing of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub load: LoadPlan,
    /// The load runs at least this long…
    pub duration: Duration,
    /// …the fault starts this long after the load…
    pub fault_at: Duration,
    /// …and the load goes on at least this long after the fault's last step.
    pub settle_after_fault: Duration,
    /// Scale: how long the fourth worker serves before it is told to leave.
    pub scale_hold: Duration,
    /// Scale: users who ask once before and once after the scale-out, so
    /// the moved fraction is measured over many entities.
    pub bystanders: usize,
}
