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
        let mut tail = lock(&self.tail);
        tail.publish(entries);
        self.set_flush_mark(&tail);
        Ok(())
    }

    /// The oldest `count` published entries were committed with fsync.
    pub(in crate::storage) fn published_committed(&self, count: usize) {
        let mut tail = lock(&self.tail);
        tail.unpin(count);
        self.set_flush_mark(&tail);
        drop(tail);
        self.published_settled.notify_waiters();
    }

    /// Published entries not committed yet (the pinned tail) are lost: a write holding them
    /// failed, or the StorageActor that held them ended.
    pub(in crate::storage) fn lose_published(&self, why: &str) {
        let mut tail = lock(&self.tail);
        let Some(first) = tail.first_pinned() else {
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
        tail.unpin(usize::MAX);
        self.set_flush_mark(&tail);
        drop(tail);
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
    pub fn flush_mark(&self) -> crate::flush::FlushMark {
        self.flush_mark.clone()
    }

    /// Called before a Raft core starts on this store, once the old core stopped: waits (at
    /// most `wait`) for published appends still queued to commit, since the new core reads
    /// the log from the file, and fails if they have not by then (the core must not start
    /// while an append it does not know of may still land; its start is retried). Appends
    /// whose StorageActor ended are lost already (its next incarnation says so at its start).
    /// Then a lost published append is forgotten, its entries leave the tail, and `committed`
    /// is read again from the file (the old core may have saved one past what the file holds).
    pub async fn restart_published(&self, wait: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let settled = self.published_settled.notified();
            let Some(first) = lock(&self.tail).first_pinned() else {
                break;
            };
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return Err(Error::Refused(format!(
                    "log entries from index {first} published by the previous Raft core still \
                     wait for their commit after {} ms; Raft starts once they are written",
                    wait.as_millis()
                )));
            }
        }
        let Some(lost) = lock(&self.published_lost).take() else {
            return Ok(());
        };
        let txn = self.begin_read()?;
        *lock(&self.committed) =
            crate::storage::codec::read_meta(&txn, crate::storage::schema::COMMITTED)?;
        let mut tail = lock(&self.tail);
        tail.truncate(lost.first);
        self.set_flush_mark(&tail);
        tracing::info!(
            first = lost.first,
            "storage: Raft restarts without the lost published entries"
        );
        Ok(())
    }

    /// Sets the flush mark from `tail` (the locked log tail: every change to what is pinned
    /// happens under that lock, so marks are set in the order of the changes) and the lost
    /// append, if any.
    fn set_flush_mark(&self, tail: &crate::storage::tail::LogTail) {
        let pinned = tail.first_pinned();
        let lost = lock(&self.published_lost).as_ref().map(|lost| lost.first);
        let first = match (pinned, lost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.flush_mark.set(first);
    }
}
