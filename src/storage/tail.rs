//! The in-memory tail of the Raft log: copies of the most recent entries the file holds, so
//! replication and apply read them without a read transaction or a trip to the blocking pool.
//! Never the source of truth: a range it does not fully hold is read from redb.
//!
//! Kept equal to a suffix of the file's log by the write paths of `Store`: appended entries
//! join it after their commit, truncated and purged entries leave it before theirs (a reader
//! that misses them in the tail reads the file, which still has them until that commit).
//! The one exception is a leader's published append (`storage::published`): its entries join
//! the tail when queued, pinned (never dropped for room) until their commit, so replication
//! reads them while the leader's fsync runs.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

use openraft::EntryPayload;

use crate::command::Entry;
use crate::limits::{LOG_TAIL_BYTES_MAX, LOG_TAIL_ENTRIES_MAX};

/// Bytes counted for an entry besides its keys and values.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Consecutive log entries, oldest first, bounded by count and bytes.
#[derive(Debug, Default)]
pub(crate) struct LogTail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    /// How many of the last entries are published but not committed: only the tail holds
    /// them, so they are never dropped for room.
    pinned: usize,
}

impl LogTail {
    /// Adds entries just committed to the log. Entries at or after the first one's index are
    /// replaced (as the file's insert does); a gap before them starts the tail afresh.
    pub(crate) fn extend(&mut self, appended: &[Entry]) {
        self.push(appended, false);
    }

    /// `extend`, pinning the entries when `pin`.
    fn push(&mut self, appended: &[Entry], pin: bool) {
        let Some(first) = appended.first() else {
            return;
        };
        self.truncate(first.log_id.index);
        if self
            .last_index()
            .is_some_and(|last| last + 1 != first.log_id.index)
        {
            self.clear();
        }
        for entry in appended {
            let bytes = ENTRY_OVERHEAD_BYTES
                + match &entry.payload {
                    EntryPayload::Normal(request) => request.payload_bytes(),
                    EntryPayload::Blank | EntryPayload::Membership(_) => 0,
                };
            self.bytes += bytes;
            self.entries.push_back((entry.clone(), bytes));
        }
        if pin {
            self.pinned = (self.pinned + appended.len()).min(self.entries.len());
        }
        while (self.entries.len() > LOG_TAIL_ENTRIES_MAX || self.bytes > LOG_TAIL_BYTES_MAX)
            && self.entries.len() > self.pinned
        {
            self.pop_front();
        }
    }

    /// Adds a leader's published entries, pinned until `unpin` (their commit). They must
    /// follow the tail's last entry (or start it afresh, when nothing pinned precedes them).
    pub(crate) fn publish(&mut self, entries: &[Entry]) {
        if self.pinned > 0 {
            debug_assert_eq!(
                entries.first().map(|e| e.log_id.index),
                self.last_index().map(|last| last + 1),
                "published entries follow the pinned ones"
            );
        }
        self.push(entries, true);
    }

    /// The oldest `count` pinned entries were committed to the file.
    pub(crate) fn unpin(&mut self, count: usize) {
        self.pinned = self.pinned.saturating_sub(count);
    }

    /// Index of the oldest pinned entry: the first one the file may not hold yet.
    pub(crate) fn first_pinned(&self) -> Option<u64> {
        let first = self.entries.len().checked_sub(self.pinned)?;
        self.entries.get(first).map(|(entry, _)| entry.log_id.index)
    }

    /// Copies of the pinned entries, oldest first.
    pub(crate) fn pinned_entries(&self) -> Vec<Entry> {
        let first = self.entries.len() - self.pinned;
        self.entries
            .range(first..)
            .map(|(entry, _)| entry.clone())
            .collect()
    }

    /// Drops the entries from `index` on.
    pub(crate) fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            let (_, bytes) = self.entries.pop_back().expect("a last entry");
            self.bytes -= bytes;
        }
        self.pinned = self.pinned.min(self.entries.len());
    }

    /// Drops the entries up to and including `index`.
    pub(crate) fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.pinned = 0;
    }

    /// The entries of `range` when the tail holds all of them (`None`: read the file). An
    /// open-ended range is never served: the file may hold entries committed after the tail
    /// last changed.
    pub(crate) fn get(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => *end,
            Bound::Excluded(end) => end.checked_sub(1)?,
            Bound::Unbounded => return None,
        };
        if end < start {
            return Some(Vec::new());
        }
        if start < first || end > last {
            return None;
        }
        let offset = (start - first) as usize;
        let count = (end - start + 1) as usize;
        Some(
            self.entries
                .range(offset..offset + count)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, bytes)) = self.entries.pop_front() {
            self.bytes -= bytes;
        }
        self.pinned = self.pinned.min(self.entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Put, WriteOp};
    use crate::command::{Command, LogId, Request};
    use openraft::CommittedLeaderId;

    fn entry(term: u64, index: u64, value_bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 0), index),
            payload: EntryPayload::Normal(Request {
                now_ms: 0,
                command: Command::Write(WriteOp::Put(Put::new(
                    format!("k{index}"),
                    vec![b'v'; value_bytes],
                ))),
            }),
        }
    }

    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    /// Proves the tail serves only ranges it fully holds, and follows appends, truncation
    /// (a conflicting suffix replaced by another term's entries), purges and gaps.
    #[test]
    fn serves_what_it_holds_and_follows_the_log() {
        let mut tail = LogTail::default();
        assert!(tail.get(&(1..2)).is_none(), "an empty tail serves nothing");
        tail.extend(&(1..=5).map(|i| entry(1, i, 8)).collect::<Vec<_>>());
        assert_eq!(ids(&tail.get(&(2..4)).unwrap()), vec![(1, 2), (1, 3)]);
        assert_eq!(tail.get(&(1..=5)).unwrap().len(), 5);
        assert!(tail.get(&(0..3)).is_none(), "index 0 is not held");
        assert!(tail.get(&(4..7)).is_none(), "index 6 is not held");
        assert!(tail.get(&(3..)).is_none(), "open ranges go to the file");
        assert_eq!(tail.get(&(3..3)).unwrap().len(), 0);

        // A follower replaces a conflicting suffix: truncate, then append the new term's.
        tail.truncate(4);
        assert!(tail.get(&(3..5)).is_none());
        tail.extend(&[entry(2, 4, 8), entry(2, 5, 8)]);
        assert_eq!(
            ids(&tail.get(&(3..6)).unwrap()),
            vec![(1, 3), (2, 4), (2, 5)]
        );
        // An append over held indexes replaces them, as the file's insert does.
        tail.extend(&[entry(3, 5, 8)]);
        assert_eq!(ids(&tail.get(&(4..6)).unwrap()), vec![(2, 4), (3, 5)]);

        tail.purge(2);
        assert!(tail.get(&(2..4)).is_none());
        assert_eq!(ids(&tail.get(&(3..4)).unwrap()), vec![(1, 3)]);

        // A gap (entries the tail never saw, e.g. after a snapshot) starts it afresh.
        tail.extend(&[entry(3, 9, 8)]);
        assert!(tail.get(&(5..6)).is_none());
        assert_eq!(ids(&tail.get(&(9..10)).unwrap()), vec![(3, 9)]);
    }

    /// Proves published entries stay pinned past the bounds until unpinned (only the tail
    /// holds them), are served like the others, and leave with a truncation or a clear.
    #[test]
    fn keeps_pinned_entries_until_their_commit() {
        let mut tail = LogTail::default();
        tail.extend(&[entry(1, 1, 8), entry(1, 2, 8)]);
        assert_eq!(tail.first_pinned(), None);
        let big = LOG_TAIL_BYTES_MAX / 2;
        tail.publish(&[entry(1, 3, big), entry(1, 4, big), entry(1, 5, big)]);
        assert_eq!(tail.first_pinned(), Some(3));
        assert!(
            tail.bytes > LOG_TAIL_BYTES_MAX,
            "pinned entries are never dropped"
        );
        assert_eq!(tail.first_index(), Some(3), "unpinned ones make room");
        assert_eq!(ids(&tail.pinned_entries()), vec![(1, 3), (1, 4), (1, 5)]);
        tail.unpin(1);
        assert_eq!(tail.first_pinned(), Some(4));
        tail.extend(&[]);
        tail.publish(&[entry(1, 6, 8)]);
        assert_eq!(tail.first_index(), Some(4), "the unpinned entry made room");
        assert_eq!(tail.first_pinned(), Some(4));
        tail.truncate(5);
        assert_eq!(ids(&tail.pinned_entries()), vec![(1, 4)]);
        tail.unpin(usize::MAX);
        assert_eq!(tail.first_pinned(), None);
        tail.publish(&[entry(1, 5, 8)]);
        tail.clear();
        assert_eq!(tail.first_pinned(), None);
    }

    /// Proves the tail stays within its entry and byte bounds, dropping the oldest entries.
    #[test]
    fn stays_within_its_bounds() {
        let mut tail = LogTail::default();
        let count = LOG_TAIL_ENTRIES_MAX as u64 + 10;
        tail.extend(&(1..=count).map(|i| entry(1, i, 1)).collect::<Vec<_>>());
        assert_eq!(tail.entries.len(), LOG_TAIL_ENTRIES_MAX);
        assert_eq!(tail.first_index(), Some(11));
        let big = LOG_TAIL_BYTES_MAX / 3;
        tail.extend(
            &(count + 1..=count + 4)
                .map(|i| entry(1, i, big))
                .collect::<Vec<_>>(),
        );
        assert!(tail.bytes <= LOG_TAIL_BYTES_MAX);
        // Three entries of a third of the bound each, plus their overhead, exceed it: two stay.
        assert_eq!(
            tail.first_index(),
            Some(count + 3),
            "only the last entries fit"
        );
        assert_eq!(
            tail.bytes,
            tail.entries.iter().map(|(_, bytes)| bytes).sum::<usize>()
        );
    }
}
