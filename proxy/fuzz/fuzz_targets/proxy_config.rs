#![no_main]
//! See `roost_proxy::fuzzing::proxy_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roost_proxy::fuzzing::proxy_config(data));
