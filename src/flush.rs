//! The flush mark: where this node's Raft log stops being known durable, shared by the store
//! (which sets it) and the Raft transport (which reads it). Names no other module.

/// Where this node's Raft log stops being known durable: entries from this index on may still
/// wait for their fsync (a leader's published append, `storage::published`), so no commit of
/// them may be announced. Set by the store, read by the Raft transport for every AppendEntries
/// it sends. When the transport held a commit back and the mark then moves on, `lifted` wakes
/// a waiter (the RaftActor's, which has openraft announce the commit at once rather than with
/// its next heartbeat). Cheap to clone; every clone shares one value.
#[derive(Debug, Clone, Default)]
pub struct FlushMark(std::sync::Arc<Mark>);

#[derive(Debug)]
struct Mark {
    /// The first index not known durable (`u64::MAX`: none).
    first_unflushed: std::sync::atomic::AtomicU64,
    /// Set when an AppendEntries announced less than the leader committed.
    withheld: std::sync::atomic::AtomicBool,
    lifted: tokio::sync::Notify,
}

impl Default for Mark {
    fn default() -> Self {
        Mark {
            first_unflushed: std::sync::atomic::AtomicU64::new(u64::MAX),
            withheld: Default::default(),
            lifted: Default::default(),
        }
    }
}

impl FlushMark {
    /// The first index that may not be durable yet (`None`: every entry held is durable).
    pub fn first_unflushed(&self) -> Option<u64> {
        match self
            .0
            .first_unflushed
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            u64::MAX => None,
            index => Some(index),
        }
    }

    pub(crate) fn set(&self, first_unflushed: Option<u64>) {
        let new = first_unflushed.unwrap_or(u64::MAX);
        let old = self
            .0
            .first_unflushed
            .swap(new, std::sync::atomic::Ordering::SeqCst);
        if new > old
            && self
                .0
                .withheld
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.0.lifted.notify_one();
        }
    }

    /// An AppendEntries announced less than the leader committed, because of this mark.
    pub fn note_withheld(&self) {
        self.0
            .withheld
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Returns once the mark moved on after a commit was held back.
    pub async fn lifted(&self) {
        self.0.lifted.notified().await;
    }
}
