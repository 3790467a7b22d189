#![no_main]
//! See `roost_worker::fuzzing::entity_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_worker::fuzzing::entity_request(data));
