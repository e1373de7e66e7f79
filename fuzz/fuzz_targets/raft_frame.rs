//! Fuzz target `raft_frame`: see `aspen::fuzzing::raft_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aspen::fuzzing::raft_frame(data));
