//! Replays every input under `proxy/fuzz/seeds/<target>/` and
//! `proxy/fuzz/regressions/<target>/` (crashing inputs the fuzzer found,
//! kept after the fix) through the fuzz targets' entry points, so each
//! stays fixed without a fuzzer in CI. `deploy/local/fuzz.sh` runs the
//! fuzzer itself.

use std::path::Path;

use roost_proxy::fuzzing;
use roost_routing::fuzzing::{replay_kept_inputs, Entry};

const TARGETS: [(&str, Entry); 4] = [
    ("key_extraction", fuzzing::key_extraction),
    ("signed_cookie", fuzzing::signed_cookie),
    ("jwt", fuzzing::jwt),
    ("proxy_config", fuzzing::proxy_config),
];

#[test]
fn every_kept_input_runs_through_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let replayed = replay_kept_inputs(&fuzz, &TARGETS);
    assert!(replayed > 0, "no inputs found under {}", fuzz.display());
}
