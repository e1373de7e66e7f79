//! Fuzz target `tuple`: see `aspen::fuzzing::tuple`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aspen::fuzzing::tuple(data));
