//! Replays every input under `worker/fuzz/seeds/<target>/` and
//! `worker/fuzz/regressions/<target>/` (crashing inputs the fuzzer found,
//! kept after the fix) through the fuzz targets' entry points, so each
//! stays fixed without a fuzzer in CI. `deploy/local/fuzz.sh` runs the
//! fuzzer itself.

use std::path::Path;

use roost_routing::fuzzing::{replay_kept_inputs, Entry};
use roost_worker::fuzzing;

const TARGETS: [(&str, Entry); 3] = [
    ("entity_request", fuzzing::entity_request),
    ("worker_config", fuzzing::worker_config),
    ("stored_state", fuzzing::stored_state),
];

#[test]
fn every_kept_input_runs_through_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let replayed = replay_kept_inputs(&fuzz, &TARGETS);
    assert!(replayed > 0, "no inputs found under {}", fuzz.display());
}
