//! Entry point of the worker config's fuzz target (`builtins/fuzz/`) and
//! of its regression test: it takes any bytes and must return, whatever
//! they are — no panic, no hang. The fuzz targets of the built-in kinds'
//! requests and stored state are `roost_builtins::fuzzing`.

use std::path::Path;

use roost_routing::config_file;

use crate::config::WorkerConfig;

/// The worker's config file parser and validation on any text.
pub fn worker_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config_file::parse::<WorkerConfig>(Path::new("fuzz.yaml"), text);
    }
}
