//! Hash checks in the store: the hash is of the state right after the check entry, even when
//! the same apply holds later entries, and replica damage changes it.

use std::time::Duration;

use aspen::api::{KvHash, Put, WriteOp};
use aspen::command::{Command, Entry};
use aspen::storage::{Store, StoreOptions, StoreWrite};

use crate::util::{Kind, entry, open, small};

fn put(index: u64, key: &str, value: &str) -> Entry {
    entry(
        index,
        1_000,
        Command::Write(WriteOp::Put(Put::new(key, value))),
    )
}

fn check(index: u64, check: u64) -> Entry {
    entry(index, 1_000, Command::HashCheck { check })
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
// damaged (the fault module) hashes differently at the same point.
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
    }
}
