//! Fuzz target `client_frame`: see `aspen::fuzzing::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aspen::fuzzing::client_frame(data));
