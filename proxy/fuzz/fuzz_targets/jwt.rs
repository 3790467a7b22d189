#![no_main]
//! See `roost_proxy::fuzzing::jwt`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_proxy::fuzzing::jwt(data));
