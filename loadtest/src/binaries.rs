//! Where the `roost-proxy` and `roost-worker` executables under test are:
//! next to the running executable (`target/<profile>/`, or its parent when
//! the runner is a test in `target/<profile>/deps/`), unless given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub const PROXY: &str = "roost-proxy";
pub const WORKER: &str = "roost-worker";

/// The two executables a scenario starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub proxy: PathBuf,
    pub worker: PathBuf,
}

impl Binaries {
    /// Both executables in `dir`; an error naming what is missing.
    pub fn in_dir(dir: &Path) -> Result<Binaries> {
        let binaries = Binaries {
            proxy: dir.join(PROXY),
            worker: dir.join(WORKER),
        };
        for path in [&binaries.proxy, &binaries.worker] {
            if !path.is_file() {
                bail!(
                    "{} not found (build it: cargo build --release -p roost-proxy -p roost-worker)",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// The executables next to the running one.
    pub fn beside_current_exe() -> Result<Binaries> {
        Binaries::in_dir(&profile_dir()?)
    }
}

/// `target/<profile>/` of the running executable.
pub fn profile_dir() -> Result<PathBuf> {
    roost_testkit::bins::profile_dir()
}

/// Build the proxy and the worker into `profile_dir` with cargo if either
/// is missing there (`release` when the dir is `target/release`).
pub fn build_if_missing(profile_dir: &Path) -> Result<Binaries> {
    if let Ok(binaries) = Binaries::in_dir(profile_dir) {
        return Ok(binaries);
    }
    eprintln!(
        "building the proxy and the worker into {}",
        profile_dir.display()
    );
    roost_testkit::bins::build(&[PROXY, WORKER], profile_dir)?;
    Binaries::in_dir(profile_dir)
}
