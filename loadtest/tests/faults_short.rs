//! CI hook: the whole short fault suite (`roost-faults all --short`) against
//! the `roost-proxy` and `roost-worker` of this test's own profile
//! (`target/<profile>/`, built first if missing), asserting every MUST: no
//! acknowledged durable write lost, no stale read, no overlapping owners,
//! every scenario run as planned. It needs PostgreSQL's `initdb`/`pg_ctl`;
//! without them it fails and says so. Takes about a minute.
//!
//! The output goes to a temp dir, removed when the suite passes and kept
//! (its path printed) when it does not.

use std::path::PathBuf;

use roost_loadtest::binaries::{build_if_missing, profile_dir};
use roost_loadtest::scenario::Scenario;
use roost_loadtest::suite::{self, SuiteOptions};

#[test]
fn the_short_fault_suite_keeps_every_must() {
    let profile = profile_dir().expect("find target/<profile>/ from the test executable");
    let binaries = build_if_missing(&profile).expect("build roost-proxy and roost-worker");
    let out = output_dir();
    let options = SuiteOptions {
        scenarios: Scenario::ALL.to_vec(),
        short: true,
        out: Some(out.clone()),
        binaries,
        users: None,
        think_ms: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let result = runtime
        .block_on(suite::run(&options))
        .expect("the fault suite could not write its results");
    eprintln!("{}", result.table);
    assert!(
        result.musts_hold(),
        "MUSTs broken:\n{}\n\nsummary and ledgers kept in {}",
        result.broken_musts().join("\n"),
        out.display()
    );
    if let Err(e) = std::fs::remove_dir_all(&out) {
        eprintln!("cannot remove {}: {e}", out.display());
    }
}

fn output_dir() -> PathBuf {
    std::env::temp_dir().join(format!("roost-faults-test-{}", std::process::id()))
}
