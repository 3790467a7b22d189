#![no_main]
//! See `roost_builtins::fuzzing::stored_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_builtins::fuzzing::stored_state(data));
