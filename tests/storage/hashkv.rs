//! Hash checks in the store: the hash is of the state right after the check entry, even when
//! the same apply holds later entries, and replica damage changes it.

use std::time::Duration;

use aspen::api::{KvHash, Put, WriteOp};
use aspen::command::{Command, Entry};
use aspen::storage::{MergedStep, Store, StoreOptions, StoreWrite};

use crate::util::{Kind, entry, open, small};

// Stamped now: a check applied long after it was proposed is not hashed.
fn put(index: u64, key: &str, value: &str) -> Entry {
    let put = Command::Write(WriteOp::Put(Put::new(key, value)));
    entry(index, aspen::clock::now_ms(), put)
}

fn check(index: u64, check: u64) -> Entry {
    entry(index, aspen::clock::now_ms(), Command::HashCheck { check })
}

/// Appends, commits and applies `entries` in one apply call, as openraft hands a run over.
fn apply_together(store: &Store, entries: &[Entry]) -> usize {
    store.append(entries).expect("append");
    let last = entries.last().map(|e| e.log_id);
    store.save_committed(last.as_ref()).expect("committed");
    store.apply(entries).expect("apply").len()
}

fn hash_of(store: &Store, check: u64) -> KvHash {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime
        .block_on(store.hash_checks().wait(check, Duration::from_secs(10)))
        .expect("hash")
}

// Proves a check in the middle of an apply hashes the state as of its own entry: the same
// hash as a store that applied only the entries before it, though the later put committed in
// the same apply call (and was answered: one response per entry). A store whose value was
// damaged (the fault module) hashes differently at the same point, and a check applied long
// after it was proposed (a node catching up) is answered "not hashed".
#[test]
fn a_check_hashes_the_state_at_its_entry() {
    for kind in [Kind::File, Kind::InMemory] {
        let whole = open(kind);
        let responses = apply_together(
            &whole.store,
            &[
                put(1, "a", "1"),
                put(2, "b", "2"),
                check(3, 7),
                put(4, "c", "3"),
            ],
        );
        assert_eq!(responses, 4);

        let before = open(kind);
        apply_together(
            &before.store,
            &[put(1, "a", "1"), put(2, "b", "2"), check(3, 9)],
        );

        let (at_whole, at_before) = (hash_of(&whole.store, 7), hash_of(&before.store, 9));
        assert_eq!(at_whole, at_before, "{kind:?}");
        assert_eq!(
            (at_whole.keys, at_whole.revision, at_whole.applied_index),
            (2, 2, 3)
        );

        let faults = aspen::fault::StorageFaults::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = match kind {
            Kind::File => StoreOptions::file(dir.path()),
            Kind::InMemory => StoreOptions::in_memory(),
        };
        options.faults = faults.clone();
        let damaged = Store::open(&small(options)).expect("open");
        faults.damage_value("a");
        apply_together(&damaged, &[put(1, "a", "1"), put(2, "b", "2"), check(3, 9)]);
        let at_damaged = hash_of(&damaged, 9);
        assert_eq!(at_damaged.keys, at_before.keys);
        assert_ne!(at_damaged.hash, at_before.hash, "{kind:?}");

        let late = entry(4, 1_000, Command::HashCheck { check: 11 });
        apply_together(&before.store, &[late]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let answer = runtime.block_on(before.store.hash_checks().wait(11, Duration::from_secs(10)));
        assert!(
            matches!(&answer, Err(aspen::api::HashKvError::Failed(m)) if m.contains("not hashed")),
            "{answer:?}"
        );
    }
}

// Proves a check inside a merged write (the apply of entries 1..=3 holding a check, merged
// with the append of entry 4, as the StorageActor merges queued jobs) loses nothing: every
// apply is answered, entry 4 is in the log (the in-memory tail and the file alike), the
// durable state passes validation after a reopen, and the hash is of the state at the check.
#[test]
fn a_check_inside_a_merged_write_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&small(StoreOptions::file(dir.path()))).expect("open");
    let first = [put(1, "a", "1"), check(2, 7), put(3, "b", "2")];
    store.append(&first).expect("append");
    store
        .save_committed(Some(&first[2].log_id))
        .expect("committed");
    let next = [put(4, "c", "3")];
    let outputs = store
        .write_merged(&[MergedStep::Apply(&first), MergedStep::Append(&next)])
        .expect("merged write");
    assert_eq!(outputs[0].as_ref().map(Vec::len), Some(3));
    assert!(outputs[1].is_none());
    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(
        indexes(store.log_entries(1..).expect("log")),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        indexes(store.log_entries_in_file(1..).expect("file")),
        vec![1, 2, 3, 4]
    );
    let at_check = hash_of(&store, 7);
    assert_eq!((at_check.keys, at_check.applied_index), (1, 2));
    drop(store);

    let store = Store::open(&small(StoreOptions::file(dir.path()))).expect("reopen");
    let meta = store.validate().expect("validation");
    assert_eq!((meta.last_applied, meta.last_log_index), (Some(3), Some(4)));
}
