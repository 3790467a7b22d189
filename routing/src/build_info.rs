//! What build a running proxy or worker is, for `roost_build_info` (the
//! Prometheus convention: a gauge of 1 whose labels are the facts), so a
//! dashboard can tell which version each process of a rolling upgrade runs.

/// The workspace version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit, 12 hex digits, or `unknown` when built outside a git
/// checkout.
pub const COMMIT: &str = env!("ROOST_GIT_COMMIT");

/// The metric's name, help and labels, in the order of [`LABELS`]' values.
pub const NAME: &str = "roost_build_info";
pub const HELP: &str =
    "1, labelled with the version and the git commit this process was built from.";
pub const LABELS: [&str; 2] = ["version", "commit"];
/// The label values of this build.
pub const VALUES: [&str; 2] = [VERSION, COMMIT];
