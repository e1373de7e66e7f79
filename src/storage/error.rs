//! Storage errors: operating errors of the store (`Error`), refusals of a command that breaks a
//! rule (`CommandError`, carried in Raft responses, so serializable), and violations of the
//! cross-storage invariant (`ValidationError`).

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
         delete keys, then run `aspen admin compact`"
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
}

/// The three lists of a transaction, named in [`CommandError::TooManyTxnOps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnList {
    Compares,
    Success,
    Failure,
}

impl std::fmt::Display for TxnList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxnList::Compares => "compare",
            TxnList::Success => "success",
            TxnList::Failure => "failure",
        })
    }
}

/// The durable meta breaks `last_purged <= last_applied <= committed <= last log index`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("storage: last_purged ({last_purged}) exceeds last_applied ({last_applied})")]
    PurgedBeyondApplied {
        last_purged: IndexText,
        last_applied: IndexText,
    },
    #[error("storage: last_applied ({last_applied}) exceeds committed ({committed})")]
    AppliedBeyondCommitted {
        last_applied: IndexText,
        committed: IndexText,
    },
    #[error("storage: committed ({committed}) exceeds last log index ({last_log_index})")]
    CommittedBeyondLog {
        committed: IndexText,
        last_log_index: IndexText,
    },
}

/// A log index as shown in messages: the number, or `none` when nothing is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexText(pub Option<u64>);

impl std::fmt::Display for IndexText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(index) => write!(f, "{index}"),
            None => f.write_str("none"),
        }
    }
}

/// An operating error of the store: the disk, the file, or data that does not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("storage: redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("storage: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    /// The operation does not apply to this store or place (nothing was changed).
    #[error("storage: {0}")]
    Refused(String),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(error: $ty) -> Self {
                Error::Redb(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
