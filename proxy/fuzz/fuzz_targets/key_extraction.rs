#![no_main]
//! See `roost_proxy::fuzzing::key_extraction`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_proxy::fuzzing::key_extraction(data));
