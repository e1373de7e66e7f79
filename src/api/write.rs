//! A client's write: the operations a client may ask the leader to propose. The leader's own
//! housekeeping (expiry, vault limits) is not among them, so a request cannot carry it.
//!
//! Wire and disk compatibility: postcard encodes variants by position, and both client frames
//! and log entries (`Command::Write`) carry this enum: add variants only at the end.

use serde::{Deserialize, Serialize};

use crate::api::error::CommandError;
use crate::api::kv::{
    KeyRange, Put, Txn, check_key_len, check_lease_id, check_ttl, txn_payload_bytes, txn_puts,
    validate_txn,
};

/// One write a client sends (`ClientOp::Write`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put(Put),
    Delete {
        key: Vec<u8>,
        prev_kv: bool,
    },
    /// Delete every key in the range (a prefix is a range: [`KeyRange::prefix`]).
    DeleteRange(KeyRange),
    Txn(Txn),
    /// Grant a lease; `id: 0` lets the state machine pick the next free id.
    LeaseGrant {
        id: u64,
        ttl_ms: u64,
    },
    /// Revoke a lease and delete every key attached to it.
    LeaseRevoke {
        id: u64,
    },
    /// Push a lease's deadline to `now_ms + ttl`.
    LeaseKeepAlive {
        id: u64,
    },
    /// Drops the history before `revision` (etcd's compaction): reads and watches from
    /// `revision` on still work, older ones are refused. Changes no key, so no new revision.
    Compact {
        revision: u64,
    },
}

impl WriteOp {
    /// Whether the write can make the database bigger: refused while the quota alarm is on
    /// (as etcd refuses puts, transactions that put and lease grants).
    pub fn adds_data(&self) -> bool {
        match self {
            WriteOp::Put(_) | WriteOp::LeaseGrant { .. } => true,
            WriteOp::Txn(txn) => txn_puts(txn),
            WriteOp::Delete { .. }
            | WriteOp::DeleteRange(_)
            | WriteOp::LeaseRevoke { .. }
            | WriteOp::LeaseKeepAlive { .. }
            | WriteOp::Compact { .. } => false,
        }
    }

    /// Checks every limit that does not depend on the stored state.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            WriteOp::Put(put) => put.validate(),
            WriteOp::Delete { key, .. } => check_key_len(key, false),
            WriteOp::DeleteRange(range) => range.validate(),
            WriteOp::Txn(txn) => validate_txn(txn),
            WriteOp::LeaseGrant { ttl_ms, .. } => check_ttl(*ttl_ms),
            WriteOp::LeaseRevoke { id } | WriteOp::LeaseKeepAlive { id } => check_lease_id(*id),
            WriteOp::Compact { .. } => Ok(()),
        }
    }

    /// Bytes of keys and values the write carries, roughly: what bounds a batch.
    pub fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Put(put) => put.key.len() + put.value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::DeleteRange(range) => range.payload_bytes(),
            WriteOp::Txn(txn) => txn_payload_bytes(txn),
            WriteOp::LeaseGrant { .. }
            | WriteOp::LeaseRevoke { .. }
            | WriteOp::LeaseKeepAlive { .. }
            | WriteOp::Compact { .. } => 0,
        }
    }

    /// The operation's name, as a metric label and a log field.
    pub fn name(&self) -> &'static str {
        match self {
            WriteOp::Put(_) => "put",
            WriteOp::Delete { .. } => "delete",
            WriteOp::DeleteRange(_) => "delete_range",
            WriteOp::Txn(_) => "txn",
            WriteOp::LeaseGrant { .. } => "lease_grant",
            WriteOp::LeaseRevoke { .. } => "lease_revoke",
            WriteOp::LeaseKeepAlive { .. } => "lease_keepalive",
            WriteOp::Compact { .. } => "compact",
        }
    }
}
