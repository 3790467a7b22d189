//! CI hook: the whole short fault suite (`roost-faults all --short`) against
//! the `roost-proxy` and `roost-worker` of this test's own profile
//! (`target/<profile>/`, built first if missing), asserting every MUST: no
//! acknowledged durable write lost, no stale read, no overlapping owners,
//! every scenario run as planned; no failed replay-safe request for kill -9,
//! SIGSTOP, a Postgres restart, a rolling restart and a store blip; for the
//! cut, the cut worker's users served elsewhere within lease + detection
//! and nothing served from its pre-cut cache after the heal; for the blip,
//! no failed request at all from the cut worker's users. It needs PostgreSQL's `initdb`/`pg_ctl`;
//! without them it fails and says so. Takes about two minutes.
//!
//! The output goes to a temp dir, removed when the suite passes and kept
//! (its path printed) when it does not.

mod common;

use roost_loadtest::scenario::Scenario;
use roost_loadtest::suite::{self, SuiteOptions};

#[test]
fn the_short_fault_suite_keeps_every_must() {
    common::assert_musts_hold("faults", |common| async move {
        let options = SuiteOptions {
            scenarios: Scenario::ALL.to_vec(),
            common,
            think_ms: None,
        };
        suite::run(&options).await
    });
}
