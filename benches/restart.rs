//! Restart after SIGKILL: how long a node's store takes to open, validate and serve a read
//! after its process was killed mid-write, with and without redb's quick repair (DESIGN.md,
//! "Storage", item 7). Run: `cargo bench --bench restart` (`ASPEN_RESTART_KEYS=N` to size it).
//!
//! The parent loads N keys, then runs a child process (this binary again) that keeps appending
//! and applying through the store until the parent SIGKILLs it; the parent then times the
//! reopen. Prints one line per run and the median per mode.

use aspen::api::WriteOp;
use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use aspen::api::Put;
use aspen::command::{Command, Entry, LogId, Request};
use aspen::storage::StoreWrite;
use aspen::storage::{Store, StoreOptions};
use openraft::{CommittedLeaderId, EntryPayload};

const CHILD_ENV: &str = "ASPEN_RESTART_CHILD";
const RUNS: usize = 3;
const LOAD_BATCH: u64 = 1_000;

fn entry(index: u64, key: String) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request {
            now_ms: 0,
            command: Command::Write(WriteOp::Put(Put::new(key, vec![b'v'; 256]))),
        }),
    }
}

fn options(dir: &std::path::Path, quick_repair: bool) -> StoreOptions {
    let mut options = StoreOptions::file(dir);
    options.quick_repair = quick_repair;
    options
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, quick_repair) = spec.split_once('|').expect("child spec");
        return child(dir.as_ref(), quick_repair == "true");
    }
    let keys: u64 = std::env::var("ASPEN_RESTART_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for quick_repair in [true, false] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        load(dir.path(), quick_repair, keys);
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|_| crash_and_reopen(dir.path(), quick_repair))
            .collect();
        times.sort();
        let size = std::fs::metadata(dir.path().join("aspen.redb")).map_or(0, |m| m.len());
        println!(
            "restart after SIGKILL, {keys} keys, file {} MiB, quick_repair={quick_repair}: median {:?} (runs {:?})",
            size >> 20,
            times[RUNS / 2],
            times
        );
    }
}

fn load(dir: &std::path::Path, quick_repair: bool, keys: u64) {
    let store = Store::open(&options(dir, quick_repair)).expect("open");
    let mut index = 1;
    while index <= keys {
        let batch: Vec<Entry> = (index..(index + LOAD_BATCH).min(keys + 1))
            .map(|i| entry(i, format!("key/{i:010}")))
            .collect();
        store.append(&batch).expect("append");
        store
            .save_committed(Some(&batch.last().expect("batch").log_id))
            .expect("committed");
        store.apply(&batch).expect("apply");
        index += LOAD_BATCH;
    }
    store.close().expect("close");
}

fn crash_and_reopen(dir: &std::path::Path, quick_repair: bool) -> Duration {
    let mut child = Process::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, format!("{}|{quick_repair}", dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        if line.expect("child line") == "writing" {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    drop(lines);

    let start = Instant::now();
    let store = Store::open(&options(dir, quick_repair)).expect("reopen");
    store.validate().expect("validation");
    let view = store.read(0).expect("read");
    assert!(view.get(b"key/0000000001").expect("get").is_some());
    start.elapsed()
}

/// Appends and applies small batches until killed, like a node under write load.
fn child(dir: &std::path::Path, quick_repair: bool) {
    let store = Store::open(&options(dir, quick_repair)).expect("child open");
    let mut next = store
        .log_state()
        .expect("log state")
        .1
        .map_or(1, |id| id.index + 1);
    let applied = store
        .applied_state()
        .expect("applied")
        .0
        .map_or(0, |id| id.index);
    if next > applied + 1 {
        let unapplied = store.log_entries(applied + 1..next).expect("log");
        store.apply(&unapplied).expect("replay");
    }
    println!("writing");
    loop {
        let batch: Vec<Entry> = (next..next + 10)
            .map(|i| entry(i, format!("new/{i:010}")))
            .collect();
        store.append(&batch).expect("append");
        store
            .save_committed(Some(&batch[9].log_id))
            .expect("committed");
        store.apply(&batch).expect("apply");
        next += 10;
    }
}
