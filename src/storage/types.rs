//! The records the state machine keeps on disk: a key's entry (owned and borrowed forms) and
//! a lease, and the steps of a merged write. Plain data with serde derives; the tables that
//! hold them are in `schema`.
//!
//! Disk compatibility: postcard encodes by position. Add new fields only at the end.

use serde::{Deserialize, Serialize};

use crate::api::KeyValue;
use crate::command::Entry;

/// A key's record as stored in the `kv` table (the key is the table key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Writes since creation: 1 for a new key.
    pub version: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub lease: Option<u64>,
    /// Set from a TTL: the key is invisible from this instant on (leader clock, from the command).
    pub expires_at_ms: Option<u64>,
}

impl KvEntry {
    /// Whether the key is visible at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }

    pub fn into_key_value(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            version: self.version,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// A stored record decoded in place: `value` borrows the table's bytes. Same encoding as
/// [`KvEntry`] (postcard writes a `Vec<u8>` and a `&[u8]` alike), for scans that may not need
/// the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct KvEntryRef<'a> {
    pub value: &'a [u8],
    pub version: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub lease: Option<u64>,
    pub expires_at_ms: Option<u64>,
}

impl KvEntryRef<'_> {
    /// Whether the key is visible at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }

    /// The key and this record as returned to readers; the value copied only `with_value`.
    pub fn to_key_value(&self, key: &[u8], with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: if with_value {
                self.value.to_vec()
            } else {
                Vec::new()
            },
            version: self.version,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// A lease as stored in the `leases` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl_ms: u64,
    pub granted_at_ms: u64,
    /// The lease expires at this instant unless kept alive (leader clock, from the command).
    pub deadline_ms: u64,
}

impl LeaseRecord {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.deadline_ms > now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a stored record decodes in place as `KvEntryRef` with the same fields, the value
    // borrowed from the stored bytes.
    #[test]
    fn entry_ref_reads_the_stored_encoding() {
        let entry = KvEntry {
            value: b"some value".to_vec(),
            version: 3,
            create_revision: 7,
            mod_revision: 9,
            lease: Some(11),
            expires_at_ms: Some(1_234),
        };
        let bytes = postcard::to_allocvec(&entry).unwrap();
        let view: KvEntryRef<'_> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(view.value, entry.value.as_slice());
        assert_eq!(
            (view.version, view.create_revision, view.mod_revision),
            (3, 7, 9)
        );
        assert_eq!((view.lease, view.expires_at_ms), (Some(11), Some(1_234)));
        assert!(view.is_live(1_233) && !view.is_live(1_234));
    }
}

/// One step of a merged write (`StoreWrite::write_merged`).
#[derive(Debug, Clone, Copy)]
pub enum MergedStep<'a> {
    Append(&'a [Entry]),
    /// An append whose entries were published first (`Store::publish`): they are in the log
    /// tail already, pinned until this commit.
    AppendPublished(&'a [Entry]),
    Apply(&'a [Entry]),
}

/// One change readers saw, as `HISTORY` keeps it: the key's record after it (`None`: deleted)
/// and the live record it replaced (`None`: the key was absent or expired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub entry: Option<KvEntry>,
    pub prev: Option<KvEntry>,
}

/// What the history holds (`schema::HISTORY_BOUNDS`): the state can be read at every
/// revision from `floor` on, and every event from revision `events_from` on is kept (a watch
/// can start there). After a compaction to C both are C; where history started (a new file,
/// an upgraded one, a state loaded from a file without history) at revision R, the state at R
/// is the current one but its events are not kept: `events_from` is R + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryBounds {
    pub floor: u64,
    pub events_from: u64,
}

impl HistoryBounds {
    /// History starting at `revision`: its state readable, its events not kept.
    pub fn starting_at(revision: u64) -> Self {
        HistoryBounds {
            floor: revision,
            events_from: revision.saturating_add(1),
        }
    }
}
