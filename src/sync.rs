//! Locking the crate's short critical sections. Owns nothing else; names no other module.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data of a poisoned lock as it is. Only for critical sections
/// that are plain reads, assignments or single collection operations, which a panic cannot
/// leave half-done.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where this node's Raft log stops being known durable: entries from this index on may still
/// wait for their fsync (a leader's published append, `storage::published`), so no commit of
/// them may be announced. Set by the store, read by the Raft transport for every AppendEntries
/// it sends. Cheap to clone; every clone shares one value.
#[derive(Debug, Clone)]
pub struct FlushMark(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Default for FlushMark {
    fn default() -> Self {
        FlushMark(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            u64::MAX,
        )))
    }
}

impl FlushMark {
    /// The first index that may not be durable yet (`None`: every entry held is durable).
    pub fn first_unflushed(&self) -> Option<u64> {
        match self.0.load(std::sync::atomic::Ordering::SeqCst) {
            u64::MAX => None,
            index => Some(index),
        }
    }

    pub(crate) fn set(&self, first_unflushed: Option<u64>) {
        self.0.store(
            first_unflushed.unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}
