//! The in-memory tail of the Raft log against the file: what the live store answers (from
//! its tail where it can) equals what the file alone holds once reopened.

use aspen::api::{Put, WriteOp};
use aspen::command::{Command, Entry, LogId};
use aspen::storage::{Store, StoreWrite};
use openraft::{CommittedLeaderId, EntryPayload};

use crate::util::{Kind, entry, open, small};

fn put(index: u64, term: u64) -> Entry {
    let mut e = entry(
        index,
        0,
        Command::Write(WriteOp::Put(Put::new(
            format!("k{index}"),
            format!("t{term}"),
        ))),
    );
    e.log_id = LogId::new(CommittedLeaderId::new(term, 0), index);
    e
}

fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn payloads(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(request) => format!("{:?}", request.command),
            other => format!("{other:?}"),
        })
        .collect()
}

// Proves the tail never answers what the file does not hold: after appends, a conflicting
// suffix truncated and replaced by a newer term's entries, an append over a held index and a
// purge, every range read from the live store (tail first) equals the same range read from
// the file by a freshly opened store (empty tail), entry by entry, purged indexes included.
#[test]
fn the_tail_answers_what_the_file_holds() {
    let test = open(Kind::File);
    let store = &test.store;
    store
        .append(&(1..=8).map(|i| put(i, 1)).collect::<Vec<_>>())
        .unwrap();
    store.truncate(6).unwrap();
    store.append(&[put(6, 2), put(7, 2)]).unwrap();
    store.append(&[put(7, 3), put(8, 3)]).unwrap();
    store
        .purge(&LogId::new(CommittedLeaderId::new(1, 0), 2))
        .unwrap();

    let live: Vec<_> = (1..=9)
        .flat_map(|start| (start..=9).map(move |end| (start, end)))
        .map(|(start, end)| store.log_entries(start..end).unwrap())
        .collect();
    assert_eq!(
        ids(&store.log_entries(3..9).unwrap()),
        vec![(1, 3), (1, 4), (1, 5), (2, 6), (3, 7), (3, 8)]
    );
    store.close().unwrap();
    let dir = test.dir.as_ref().unwrap().path();
    drop(test.store);
    let reopened = Store::open(&small(aspen::storage::StoreOptions::file(dir))).unwrap();
    let from_file: Vec<_> = (1..=9)
        .flat_map(|start| (start..=9).map(move |end| (start, end)))
        .map(|(start, end)| reopened.log_entries(start..end).unwrap())
        .collect();
    for (live, file) in live.iter().zip(&from_file) {
        assert_eq!(ids(live), ids(file));
        assert_eq!(payloads(live), payloads(file));
    }
}
