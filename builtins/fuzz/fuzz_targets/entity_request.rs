#![no_main]
//! See `roost_builtins::fuzzing::entity_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_builtins::fuzzing::entity_request(data));
