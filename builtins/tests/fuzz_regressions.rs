//! Replays every input under `builtins/fuzz/seeds/<target>/` and
//! `builtins/fuzz/regressions/<target>/` (crashing inputs the fuzzer found,
//! kept after the fix) through the fuzz targets' entry points, so each
//! stays fixed without a fuzzer in CI. `deploy/local/fuzz.sh` runs the
//! fuzzer itself.

use std::path::Path;

use roost_routing::fuzzing::{replay_kept_inputs, Entry};
const TARGETS: [(&str, Entry); 3] = [
    ("entity_request", roost_builtins::fuzzing::entity_request),
    ("worker_config", roost_worker::fuzzing::worker_config),
    ("stored_state", roost_builtins::fuzzing::stored_state),
];

#[test]
fn every_kept_input_runs_through_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let replayed = replay_kept_inputs(&fuzz, &TARGETS);
    assert!(replayed > 0, "no inputs found under {}", fuzz.display());
}
