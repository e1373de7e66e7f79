//! Watch: the events a watch delivers and the options it takes (etcd's watch). Plain data.

use serde::{Deserialize, Serialize};

use crate::api::kv::KeyValue;

/// What changed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key, at its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub revision: u64,
    pub kind: EventKind,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The record after a put (`None` for a delete).
    pub kv: Option<KeyValue>,
    /// The live record the change replaced, when the watch asked for it (`prev_kv`).
    pub prev: Option<KeyValue>,
}

/// Which events a watch delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchFilter {
    #[default]
    All,
    PutsOnly,
    DeletesOnly,
}

impl WatchFilter {
    pub fn admits(self, kind: EventKind) -> bool {
        match self {
            WatchFilter::All => true,
            WatchFilter::PutsOnly => kind == EventKind::Put,
            WatchFilter::DeletesOnly => kind == EventKind::Delete,
        }
    }
}

/// How a watch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOptions {
    pub filter: WatchFilter,
    /// Deliver each event's previous record.
    pub prev_kv: bool,
    /// While nothing in the range changes, say how far the watch got (an empty batch at the
    /// node's revision) at least this often; 0: never.
    pub progress_ms: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            filter: WatchFilter::All,
            prev_kv: false,
            progress_ms: 0,
        }
    }
}
