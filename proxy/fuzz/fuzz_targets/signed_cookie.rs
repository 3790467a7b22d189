#![no_main]
//! See `roost_proxy::fuzzing::signed_cookie`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_proxy::fuzzing::signed_cookie(data));
