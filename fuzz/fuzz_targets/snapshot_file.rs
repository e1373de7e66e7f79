//! Fuzz target `snapshot_file`: see `aspen::fuzzing::snapshot_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aspen::fuzzing::snapshot_file(data));
