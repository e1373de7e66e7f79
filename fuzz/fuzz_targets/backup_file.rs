//! Fuzz target `backup_file`: see `aspen::fuzzing::backup_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aspen::fuzzing::backup_file(data));
