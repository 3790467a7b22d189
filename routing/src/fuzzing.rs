//! Replaying kept fuzz inputs: the proxy's and the worker's
//! `fuzz_regressions` tests run every seed and every crashing input the
//! fuzzer found (kept after the fix) through the fuzz targets' entry
//! points, so each stays fixed with no fuzzer in CI.

use std::path::Path;

/// A fuzz target's entry point: any bytes in, no panic out.
pub type Entry = fn(&[u8]);

/// Run every file under `fuzz_dir/{seeds,regressions}/<target>/` through
/// its target's entry. Returns how many inputs ran; panics (with the file
/// named) if one cannot be read, and whatever the entry panics with.
pub fn replay_kept_inputs(fuzz_dir: &Path, targets: &[(&str, Entry)]) -> usize {
    let mut replayed = 0;
    for (target, entry) in targets {
        for kind in ["seeds", "regressions"] {
            let Ok(files) = std::fs::read_dir(fuzz_dir.join(kind).join(target)) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let input = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                eprintln!("{target}: {}", path.display());
                entry(&input);
                replayed += 1;
            }
        }
    }
    replayed
}
