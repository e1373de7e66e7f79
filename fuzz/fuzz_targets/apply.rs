//! Fuzz target `apply`: the bytes are read as a command sequence (tests/storage/reference.rs)
//! and applied to an in-memory store and to the `BTreeMap` model; any difference in a
//! response or in the state after a command is a crash.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/storage/util.rs"]
mod util;

#[path = "../../tests/storage/reference.rs"]
mod reference;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let steps = reference::steps_from_bytes(data);
    if let Err(difference) = reference::check_steps(&steps) {
        panic!("store and model differ: {difference}");
    }
});
