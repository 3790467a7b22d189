#![no_main]
//! See `roost_worker::fuzzing::worker_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_worker::fuzzing::worker_config(data));
