//! Why a write was refused: [`CommandError`] names the rule a command broke (checked before
//! proposing and again on apply; a refused command changes nothing). Carried in Raft responses
//! and client responses, so serializable.

use serde::{Deserialize, Serialize};

/// A command the state machine refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandError {
    #[error("storage: key is empty")]
    KeyEmpty,
    #[error("storage: key is {bytes} bytes, more than the limit of {max}")]
    KeyTooLarge { bytes: u64, max: u64 },
    #[error("storage: value is {bytes} bytes, more than the limit of {max}")]
    ValueTooLarge { bytes: u64, max: u64 },
    #[error(
        "storage: command carries {bytes} bytes of keys and values, more than the limit of {max}"
    )]
    CommandTooLarge { bytes: u64, max: u64 },
    #[error("storage: transaction has {count} {list} operations, more than the limit of {max}")]
    TooManyTxnOps { list: TxnList, count: u64, max: u64 },
    #[error("storage: expire names {count} keys and leases, more than the limit of {max}")]
    ExpireBatchTooLarge { count: u64, max: u64 },
    #[error("storage: range end sorts before its start")]
    RangeReversed,
    #[error("storage: a put takes a lease or a ttl, not both")]
    LeaseAndTtl,
    #[error("storage: ttl of {ttl_ms} ms is out of range (1 ms to {max} ms)")]
    TtlOutOfRange { ttl_ms: u64, max: u64 },
    #[error("storage: lease id 0 is reserved (it means no lease)")]
    LeaseIdZero,
    #[error("storage: lease {id} not found (never granted, revoked or expired)")]
    LeaseNotFound { id: u64 },
    #[error("storage: lease {id} already exists")]
    LeaseExists { id: u64 },
    /// The database file reached its quota: the leader refuses what would add data until
    /// deletes and a compaction bring the file under it.
    #[error(
        "quota exceeded: the database file is {bytes} bytes, at or over the quota of {quota}; \
         delete keys, then run `aspen admin defrag`"
    )]
    QuotaExceeded { bytes: u64, quota: u64 },
    #[error("storage: key {key:?} is not a vault key: {reason}")]
    BadVaultKey { key: String, reason: String },
    #[error("storage: vault limit reached: {max} vaults exist; vault {vault:?} was not created")]
    TooManyVaults { vault: String, max: u64 },
    #[error("storage: vault {vault:?} is full (its limit is {max} keys); the put was refused")]
    VaultFull { vault: String, max: u64 },
    #[error("storage: vault limits must be at least 1")]
    BadVaultLimits,
    /// A group-commit entry over the limit (only a faulty or foreign leader proposes one).
    #[error("storage: batch of {count} writes is over the limit of {max}")]
    BadBatch { count: u64, max: u64 },
    /// An auth change the state refused (a missing role, the last root client, ...).
    #[error("auth: {0}")]
    Auth(String),
    /// A counter of the state machine has no value left (every lease id taken, the
    /// revision at its maximum): the command was refused.
    #[error("storage: {what}; the command was refused")]
    Exhausted { what: String },
    /// A read or a compaction at a revision whose history is gone.
    #[error("revision {revision} is compacted: the oldest revision kept is {oldest}")]
    Compacted { revision: u64, oldest: u64 },
    /// A read or a compaction at a revision not reached yet.
    #[error("revision {revision} is a future revision: the current revision is {current}")]
    FutureRevision { revision: u64, current: u64 },
    /// A range delete answering its entries, inside a transaction, over a range that may hold
    /// more keys than its answer may (checked before anything is written).
    #[error(
        "storage: a range delete answering its deleted entries may delete at most {max} keys, \
         and this one may delete {keys}; delete without them (no prev_kv), or in parts"
    )]
    TxnDeleteTooLarge { keys: u64, max: u64 },
    /// A range compare whose target is itself a range.
    #[error("storage: a range compare's target is itself a range compare")]
    NestedRangeCompare,
    #[error("storage: transactions nest more than {max} deep")]
    TxnNestedTooDeep { max: u64 },
}

/// The three lists of a transaction, named in [`CommandError::TooManyTxnOps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnList {
    Compares,
    Success,
    Failure,
    /// Compares and operations of a transaction and those nested in it, together.
    Nested,
}

impl std::fmt::Display for TxnList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxnList::Compares => "compare",
            TxnList::Success => "success",
            TxnList::Failure => "failure",
            TxnList::Nested => "compare and operation (nested transactions included)",
        })
    }
}
