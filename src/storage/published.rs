//! A leader's published appends: log entries openraft is told are flushed when they are queued,
//! so it replicates them while the leader's own fsync of them runs (openraft 0.9 sends nothing
//! before the flush callback; 0.10 calls this "submitted"). The leader's fsync and its
//! followers' then overlap instead of following each other.
//!
//! Safe because nothing acts on such an entry's commit before this node's commit of it returns:
//! - its apply is queued behind its append on the StorageActor, so no client hears of it and
//!   no read sees it before it is durable here;
//! - the Raft transport never tells a follower it is committed while it is not durable here
//!   (`FlushMark`), so no follower applies it either;
//! - `committed` is written only up to what the file holds (`Store::write_committed`).
//!
//! If this node stops before the commit, the entry was acknowledged to no one, and its loss is
//! a loss of an uncommitted entry. If the commit fails (or the StorageActor ends before it runs),
//! the entries are lost while openraft believes them durable: appends and applies are refused
//! from then on, so openraft's next write fails and its core stops; the RaftActor fails, and the
//! next core starts from the file (`Store::restart_published`).

use crate::command::Entry;
use crate::storage::error::{Error, Result};
use crate::storage::store::{LostAppend, Store};
use crate::sync::lock;

impl Store {
    /// Makes a leader's appended entries readable before their commit: they join the log tail,
    /// pinned until the commit (`published_committed`), and the flush mark stops at them.
    /// Refused while an earlier published append is lost.
    pub(in crate::storage) fn publish(&self, entries: &[Entry]) -> Result<()> {
        self.refuse_if_published_lost()?;
        lock(&self.tail).publish(entries);
        self.refresh_flush_mark();
        Ok(())
    }

    /// The oldest `count` published entries were committed with fsync.
    pub(in crate::storage) fn published_committed(&self, count: usize) {
        lock(&self.tail).unpin(count);
        self.refresh_flush_mark();
        self.published_settled.notify_waiters();
    }

    /// Published entries not committed yet (the pinned tail) are lost: a write holding them
    /// failed, or the StorageActor that held them ended.
    pub(in crate::storage) fn lose_published(&self, why: &str) {
        let Some(first) = lock(&self.tail).first_pinned() else {
            return;
        };
        tracing::error!(
            first,
            why,
            "storage: a published log append was lost before its commit; Raft must restart"
        );
        lock(&self.published_lost).get_or_insert(LostAppend {
            why: why.to_string(),
            first,
        });
        lock(&self.tail).unpin(usize::MAX);
        self.refresh_flush_mark();
        self.published_settled.notify_waiters();
    }

    /// An error naming the lost append, while one is lost: appends and applies are refused.
    pub fn refuse_if_published_lost(&self) -> Result<()> {
        match &*lock(&self.published_lost) {
            None => Ok(()),
            Some(lost) => Err(Error::Refused(format!(
                "log entries from index {} were handed to Raft before their commit, which failed \
                 ({}); Raft must restart from the file before this node writes again",
                lost.first, lost.why
            ))),
        }
    }

    /// The first log index that may not be durable on this node (`None`: all are).
    pub fn first_unflushed(&self) -> Option<u64> {
        self.flush_mark.first_unflushed()
    }

    /// The shared flush mark the Raft transport reads.
    pub fn flush_mark(&self) -> crate::sync::FlushMark {
        self.flush_mark.clone()
    }

    /// Called before a Raft core starts on this store, once the old core stopped: waits (at
    /// most `wait`) for published appends still queued to commit, since the new core reads
    /// the log from the file; what does not commit in time counts as lost. Then a lost
    /// published append is forgotten, its entries leave the tail, and `committed` is read
    /// again from the file (the old core may have saved one past the entries the file holds).
    pub async fn restart_published(&self, wait: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let settled = self.published_settled.notified();
            if lock(&self.tail).first_pinned().is_none() {
                break;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                self.lose_published("they were still queued when Raft restarted");
                break;
            }
        }
        let Some(lost) = lock(&self.published_lost).take() else {
            return Ok(());
        };
        lock(&self.tail).truncate(lost.first);
        let txn = self.begin_read()?;
        *lock(&self.committed) =
            crate::storage::codec::read_meta(&txn, crate::storage::schema::COMMITTED)?;
        self.refresh_flush_mark();
        tracing::info!(
            first = lost.first,
            "storage: Raft restarts without the lost published entries"
        );
        Ok(())
    }

    fn refresh_flush_mark(&self) {
        let pinned = lock(&self.tail).first_pinned();
        let lost = lock(&self.published_lost).as_ref().map(|lost| lost.first);
        let first = match (pinned, lost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.flush_mark.set(first);
    }
}
