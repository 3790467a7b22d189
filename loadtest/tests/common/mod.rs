//! What the short-suite tests share: the `roost-proxy` and `roost-worker`
//! of the test's own profile (`target/<profile>/`, built first if
//! missing), an output dir in the temp dir — removed when every MUST held,
//! kept (its path printed) when one did not — and the assertion.

use anyhow::Result;
use roost_loadtest::report::RunReport;
use roost_loadtest::suite::{RunOptions, SuiteResult};
use roost_testkit::bins::{build_if_missing, profile_dir};
use std::future::Future;

/// Run `suite` short (given the binaries and its output dir) and assert
/// that it ran and every MUST held.
pub fn assert_musts_hold<R, F, Fut>(name: &str, suite: F)
where
    R: RunReport,
    F: FnOnce(RunOptions) -> Fut,
    Fut: Future<Output = Result<SuiteResult<R>>>,
{
    let profile = profile_dir().expect("find target/<profile>/ from the test executable");
    let binaries = build_if_missing(&profile).expect("build roost-proxy and roost-worker");
    let out = std::env::temp_dir().join(format!("roost-{name}-test-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let result = runtime
        .block_on(suite(RunOptions {
            short: true,
            out: Some(out.clone()),
            binaries,
            users: None,
        }))
        .unwrap_or_else(|e| panic!("{name} could not write its results: {e:#}"));
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
