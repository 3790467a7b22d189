//! Where the `roost-proxy` and `roost-worker` executables under test are:
//! next to the running executable (`target/<profile>/`, or its parent when
//! the runner is a test in `target/<profile>/deps/`), unless given.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use roost_testkit::process::run_checked;

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
    let exe = std::env::current_exe().context("path of the running executable")?;
    let mut dir = exe
        .parent()
        .context("the running executable has no parent dir")?
        .to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Build the proxy and the worker into `profile_dir` with cargo if either
/// is missing there (`release` when the dir is `target/release`).
pub fn build_if_missing(profile_dir: &Path) -> Result<Binaries> {
    if let Ok(binaries) = Binaries::in_dir(profile_dir) {
        return Ok(binaries);
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["build", "-p", PROXY, "-p", WORKER]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cargo.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cargo.arg("--target-dir").arg(target);
    }
    cargo.current_dir(env!("CARGO_MANIFEST_DIR"));
    eprintln!("building the proxy and the worker: {cargo:?}");
    run_checked(cargo, "cargo build of roost-proxy and roost-worker")?;
    Binaries::in_dir(profile_dir)
}
