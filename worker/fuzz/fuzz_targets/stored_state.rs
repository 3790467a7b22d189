#![no_main]
//! See `roost_worker::fuzzing::stored_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_worker::fuzzing::stored_state(data));
