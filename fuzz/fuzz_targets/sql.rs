//! Fuzz target `sql`: see `aspen::fuzzing::sql`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aspen::fuzzing::sql::run(data));
