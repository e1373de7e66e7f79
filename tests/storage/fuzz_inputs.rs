//! The fuzz targets (`fuzz/`) run as ordinary tests on every saved input: the crashes the
//! fuzzers found (`fuzz/regressions/TARGET/`, each fixed since) and the hand-made seeds
//! (`fuzz/seeds/TARGET/`).

use std::path::Path;

use crate::reference::{check_steps, steps_from_bytes};

/// Every saved input of `target`, with its file name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            inputs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        !inputs.is_empty(),
        "no saved inputs for fuzz target {target}"
    );
    inputs
}

fn run(target: &str, body: impl Fn(&[u8])) {
    for (name, data) in inputs(target) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data)));
        assert!(result.is_ok(), "fuzz target {target} fails on {name}");
    }
}

// Proves the snapshot reader refuses every saved input or installs what it checked, without
// a panic.
#[test]
fn snapshot_file_inputs() {
    run("snapshot_file", aspen::fuzzing::snapshot_file);
}

// Proves the backup reader refuses every saved input or restores what it checked, without a
// panic.
#[test]
fn backup_file_inputs() {
    run("backup_file", aspen::fuzzing::backup_file);
}

// Proves the client frame decoder refuses or round-trips every saved input without a panic.
#[test]
fn client_frame_inputs() {
    run("client_frame", aspen::fuzzing::client_frame);
}

// Proves the Raft frame decoder refuses or round-trips every saved input without a panic.
#[test]
fn raft_frame_inputs() {
    run("raft_frame", aspen::fuzzing::raft_frame);
}

// Proves tuple unpacking refuses or round-trips every saved input without a panic.
#[test]
fn tuple_inputs() {
    run("tuple", aspen::fuzzing::tuple);
}

// Proves every saved SQL input, run on a node's SQL engine, gets an answer or one `sql:`
// error line: no panic, no stack overflow (which would abort this test binary).
#[test]
fn sql_inputs() {
    run("sql", aspen::fuzzing::sql::run);
}

// Proves the store and the model agree on the command sequence of every saved input.
#[test]
fn apply_inputs() {
    for (name, data) in inputs("apply") {
        let steps = steps_from_bytes(&data);
        assert!(!steps.is_empty(), "{name} holds no command");
        if let Err(difference) = check_steps(&steps) {
            panic!("fuzz target apply fails on {name}: {difference}");
        }
    }
}
