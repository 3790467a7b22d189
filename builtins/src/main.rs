//! `roost-worker`: a worker serving the built-in entity types (session,
//! cart, quota, inventory). See `roost_worker::cli` for the command line;
//! an application's worker binary is the same few lines with its own kinds.

use std::process::ExitCode;

/// mimalloc: every request allocates and frees small buffers (parsed JSON,
/// replies, encoded rows); glibc's malloc (`malloc_consolidate`,
/// `unlink_chunk`) took about 5 µs of a cart update in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    roost_worker::cli::main(roost_builtins::builtins())
}
