//! Records the git commit the binaries are built from
//! (`roost_routing::build_info::COMMIT`, exported as `roost_build_info`);
//! `unknown` outside a git checkout (a source tarball, a container build
//! without `.git`).

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ROOST_GIT_COMMIT={commit}");
    // Run again when HEAD moves; only paths that exist (a missing one would
    // make cargo run this, and rebuild everything after it, every time).
    for watched in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if Path::new(watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
}
