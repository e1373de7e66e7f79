//! Shared setup: stores of both kinds, and a driver that feeds commands through the log and
//! the state machine the way openraft does (append, save committed, apply).

use std::sync::Arc;

use aspen::api::{KeyRange, KeyValue};
use aspen::command::{Command, Entry, LogId, Request, Response};
use aspen::storage::StoreWrite;
use aspen::storage::{ScanOptions, Store, StoreOptions};
use openraft::{CommittedLeaderId, EntryPayload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    InMemory,
}

/// A store and the temporary directory that holds its file (if any).
pub struct TestStore {
    pub store: Arc<Store>,
    pub dir: Option<tempfile::TempDir>,
}

pub fn open(kind: Kind) -> TestStore {
    match kind {
        Kind::File => {
            let dir = tempfile::tempdir().expect("tempdir");
            TestStore {
                store: Arc::new(Store::open(&small(StoreOptions::file(dir.path()))).expect("open")),
                dir: Some(dir),
            }
        }
        Kind::InMemory => TestStore {
            store: Arc::new(Store::open(&small(StoreOptions::in_memory())).expect("open")),
            dir: None,
        },
    }
}

/// Tests keep redb's cache small: many stores live in one process.
pub fn small(mut options: StoreOptions) -> StoreOptions {
    options.cache_bytes = 4 * 1024 * 1024;
    options
}

pub fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

pub fn entry(index: u64, now_ms: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request { now_ms, command }),
    }
}

/// Drives a store as openraft would: each command is appended (fsync), committed, applied.
pub struct Driver {
    pub store: Arc<Store>,
    next_index: u64,
}

impl Driver {
    pub fn new(store: Arc<Store>) -> Self {
        let next_index = store
            .log_state()
            .expect("log state")
            .1
            .map_or(1, |id| id.index + 1);
        Driver { store, next_index }
    }

    pub fn run(&mut self, now_ms: u64, command: Command) -> Response {
        let entry = entry(self.next_index, now_ms, command);
        self.next_index += 1;
        self.store
            .append(std::slice::from_ref(&entry))
            .expect("append");
        self.store
            .save_committed(Some(&entry.log_id))
            .expect("save committed");
        let mut responses = self.store.apply(&[entry]).expect("apply");
        assert_eq!(responses.len(), 1);
        responses.remove(0)
    }
}

/// Every live key at `now_ms`, paging through the whole keyspace.
pub fn all_keys(store: &Store, now_ms: u64) -> Vec<KeyValue> {
    let view = store.read_at(now_ms).expect("read");
    let mut range = KeyRange::prefix(b"");
    let mut out = Vec::new();
    loop {
        let page = view.range(&range, ScanOptions::default()).expect("range");
        out.extend(page.kvs);
        match page.continuation {
            Some(next) => range.start = next,
            None => return out,
        }
    }
}
