//! A leader's published appends in the store (`storage::published`): readable before their
//! commit, never counted in the `committed` the file records before the file holds them, and,
//! once lost, refusing every write until Raft restarts.

use aspen::api::{Put, WriteOp};
use aspen::command::{Command, Entry};
use aspen::storage::{MergedStep, Store, StoreWrite};

use crate::util::{Kind, entry, open};

fn put(index: u64) -> Entry {
    let put = Command::Write(WriteOp::Put(Put::new(format!("k{index}"), "v")));
    entry(index, 1_000, put)
}

fn indexes(entries: Vec<Entry>) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn published_lifecycle(store: &Store) {
    let first: Vec<Entry> = (1..=3).map(put).collect();
    store.append(&first).expect("append");
    let next: Vec<Entry> = (4..=5).map(put).collect();
    store.publish(&next).expect("publish");
    assert_eq!(store.first_unflushed(), Some(4));
    assert_eq!(
        indexes(store.log_entries(1..=5).unwrap()),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        indexes(store.log_entries_in_file(2..).unwrap()),
        vec![2, 3, 4, 5],
        "a read of the file is completed with the published entries"
    );

    // openraft commits 5 (the leader counted itself): the file records no more than it holds.
    store.save_committed(Some(&next[1].log_id)).unwrap();
    store.apply(&first).expect("apply");
    let meta = store.durable_meta().unwrap();
    assert_eq!((meta.committed, meta.last_log_index), (Some(3), Some(3)));

    store
        .write_merged(&[MergedStep::AppendPublished(&next), MergedStep::Apply(&next)])
        .expect("merged");
    assert_eq!(store.first_unflushed(), None);
    let meta = store.durable_meta().unwrap();
    assert_eq!((meta.committed, meta.last_applied), (Some(5), Some(5)));
    aspen::storage::validate(&meta).expect("valid");
}

fn lost_publish_refuses_writes(store: &Store) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let lost = [put(6)];
    store.publish(&lost).expect("publish");
    store.save_committed(Some(&lost[0].log_id)).unwrap();
    // Still queued (nobody lost it): a new Raft core may not start yet.
    let early = runtime
        .block_on(store.restart_published(std::time::Duration::from_millis(20)))
        .expect_err("a restart while a published append waits");
    assert!(early.to_string().contains("from index 6"), "{early}");
    // What the StorageActor does after an I/O error: the append never commits.
    store.reopen().expect("reopen");
    assert_eq!(store.first_unflushed(), Some(6), "commits stay withheld");
    let refused = store.apply(&lost).expect_err("an apply after the loss");
    assert!(refused.to_string().contains("from index 6"), "{refused}");
    assert!(store.append(&[put(7)]).is_err());

    runtime
        .block_on(store.restart_published(std::time::Duration::from_secs(1)))
        .expect("restart");
    assert_eq!(store.first_unflushed(), None);
    assert_eq!(store.read_committed().unwrap().map(|id| id.index), Some(5));
    assert!(store.log_entries(6..=6).unwrap().is_empty());
    store
        .append(&[put(6)])
        .expect("an append after the restart");
}

// Proves, on both stores, that published entries are readable before their commit (from the
// tail, and completing a read of the file), that the committed id written meanwhile stops
// before them, and that their commit lifts the mark and writes the whole committed id.
#[test]
fn published_entries_are_readable_and_never_counted_before_their_commit() {
    for kind in [Kind::File, Kind::InMemory] {
        published_lifecycle(&open(kind).store);
    }
}

// Proves a new Raft core may not start while a published append still waits for its commit,
// and that one that never commits (the database opened again after an I/O error) refuses
// appends and applies, naming the first lost index, and keeps commits withheld, until a Raft
// restart forgets it: the entry leaves the tail, `committed` is read
// again from the file, and writes go on.
#[test]
fn a_lost_published_append_refuses_writes_until_raft_restarts() {
    for kind in [Kind::File, Kind::InMemory] {
        let test = open(kind);
        published_lifecycle(&test.store);
        lost_publish_refuses_writes(&test.store);
    }
}
