//! [`StoreWrite`]: every write the store accepts, in one trait. The methods behind it are
//! private to `storage`; outside it, writing means importing this trait, and
//! `tests/architecture.rs` lists the only files that may: the StorageActor (every write Raft
//! drives), the node (`/admin/defrag`), the supervisor (the closing commit) and the test
//! harness. Everyone else reads: `Store::read` and the log and meta readers.

use std::fs::File;
use std::time::Duration;

use redb::{Durability, WriteTransaction};

use crate::command::{Entry, LogId, Response, SnapshotMeta, Vote};
use crate::storage::error::Result;
use crate::storage::types::MergedStep;
use crate::storage::{Compaction, SnapshotSummary, Store};

/// The store's writes (durability of each: `crate::storage::store`).
pub trait StoreWrite {
    /// Appends Raft log entries in one transaction committed with fsync.
    fn append(&self, entries: &[Entry]) -> Result<()>;
    /// Applies committed entries in one transaction committed without fsync.
    fn apply(&self, entries: &[Entry]) -> Result<Vec<Response>>;
    /// Appends and applies in order in one transaction (one more after each hash check
    /// entry: `Store::write_merged`), fsync'd when it holds an append; one output per step
    /// (the responses of each apply).
    fn write_merged(&self, steps: &[MergedStep<'_>]) -> Result<Vec<Option<Vec<Response>>>>;
    /// Makes a leader's entries readable before their append commits (`published.rs`); the
    /// append then goes as `MergedStep::AppendPublished`.
    fn publish(&self, entries: &[Entry]) -> Result<()>;
    /// Published entries whose append will never run are lost (`published.rs`).
    fn lose_published(&self, why: &str);
    fn save_vote(&self, vote: &Vote) -> Result<()>;
    fn save_committed(&self, committed: Option<&LogId>) -> Result<()>;
    /// Deletes the log from `index` on.
    fn truncate(&self, index: u64) -> Result<()>;
    /// Deletes the log up to and including `log_id`.
    fn purge(&self, log_id: &LogId) -> Result<()>;
    /// Replaces the state machine with the snapshot in `file`.
    fn install_snapshot(&self, meta: &SnapshotMeta, file: &mut File) -> Result<SnapshotSummary>;
    /// Reclaims the free space of the file.
    fn compact(&self, wait_for_open: Duration) -> Result<Compaction>;
    /// The clean stop's one fsync'd commit.
    fn close(&self) -> Result<()>;
    /// Opens the database file again after an I/O error (`Store::io_failed`).
    fn reopen(&self) -> Result<()>;
    /// A raw write transaction (tests that write around the rules, as a foreign process
    /// would).
    fn begin_write(&self, durability: Durability) -> Result<WriteTransaction>;
}

/// Each write that can change the file's size refreshes the size the quota reads
/// (`Store::file_size`), so requests never `stat()` the file; every write's I/O error is noted
/// (`Store::io_failed`).
impl StoreWrite for Store {
    fn append(&self, entries: &[Entry]) -> Result<()> {
        self.sized(Store::append(self, entries))
    }

    fn apply(&self, entries: &[Entry]) -> Result<Vec<Response>> {
        self.sized(Store::apply(self, entries))
    }

    fn write_merged(&self, steps: &[MergedStep<'_>]) -> Result<Vec<Option<Vec<Response>>>> {
        self.sized(Store::write_merged(self, steps))
    }

    fn publish(&self, entries: &[Entry]) -> Result<()> {
        Store::publish(self, entries)
    }

    fn lose_published(&self, why: &str) {
        Store::lose_published(self, why)
    }

    fn save_vote(&self, vote: &Vote) -> Result<()> {
        self.noted(Store::save_vote(self, vote))
    }

    fn save_committed(&self, committed: Option<&LogId>) -> Result<()> {
        Store::save_committed(self, committed)
    }

    fn truncate(&self, index: u64) -> Result<()> {
        self.sized(Store::truncate(self, index))
    }

    fn purge(&self, log_id: &LogId) -> Result<()> {
        self.sized(Store::purge(self, log_id))
    }

    fn install_snapshot(&self, meta: &SnapshotMeta, file: &mut File) -> Result<SnapshotSummary> {
        self.sized(Store::install_snapshot(self, meta, file))
    }

    fn compact(&self, wait_for_open: Duration) -> Result<Compaction> {
        self.sized(Store::compact(self, wait_for_open))
    }

    fn close(&self) -> Result<()> {
        self.sized(Store::close(self))
    }

    fn reopen(&self) -> Result<()> {
        Store::reopen(self)
    }

    fn begin_write(&self, durability: Durability) -> Result<WriteTransaction> {
        Store::begin_write(self, durability)
    }
}
