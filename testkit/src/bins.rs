//! The workspace's executables under test, where cargo put the running
//! one: `target/<profile>/` (its parent when the runner is a test binary
//! in `target/<profile>/deps/`), built there with the same cargo and
//! profile when a test needs another package's binary; and the pair a
//! fleet runs ([`Binaries`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::run_checked;

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

/// The workspace package that builds binary `bin`: `roost-worker` is the
/// built-in kinds' (`roost-builtins`); every other binary is its package's
/// namesake (`roost-proxy`, an example's worker such as `roost-chat`).
pub fn package_of(bin: &str) -> &str {
    if bin == WORKER {
        "roost-builtins"
    } else {
        bin
    }
}

/// Build the binaries `bins` (see [`package_of`]) into `profile_dir`:
/// `--release` when it is `target/release`, that target dir, the cargo
/// running the tests. Cargo does nothing when they are fresh.
pub fn build(bins: &[&str], profile_dir: &Path) -> Result<()> {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["build", "--quiet"]);
    for bin in bins {
        cargo.args(["-p", package_of(bin), "--bin", bin]);
    }
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
    run_checked(cargo, &format!("cargo build of {}", bins.join(", ")))
}

/// Binary `bin` beside the running test, built first (once per process;
/// fresh builds cost cargo's check only). Panics with cargo's output if it
/// cannot be built.
pub fn built(bin: &'static str) -> PathBuf {
    let dir = profile_dir().unwrap_or_else(|e| panic!("{e:#}"));
    build(&[bin], &dir).unwrap_or_else(|e| panic!("the tests need {bin}: {e:#}"));
    let path = dir.join(bin);
    assert!(
        path.is_file(),
        "cargo built {bin} but {} does not exist",
        path.display()
    );
    path
}

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
                    "{} not found (build it: cargo build --release -p roost-proxy -p roost-builtins)",
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

    /// The proxy and the worker beside the running test, built first
    /// ([`built`]); `worker` names another package whose binary is a
    /// worker (an application's, serving its own entity types).
    pub fn built(worker: &'static str) -> Binaries {
        Binaries {
            proxy: built(PROXY),
            worker: built(worker),
        }
    }
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
    build(&[PROXY, WORKER], profile_dir)?;
    Binaries::in_dir(profile_dir)
}
