//! Storage errors: operating errors of the store (`Error`) and violations of the
//! cross-storage invariant (`ValidationError`). A refused command is `crate::api::CommandError`.

use crate::api::CommandError;

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
    /// Whether redb itself met an I/O error (or refuses after one): redb then takes no write
    /// until the database is opened again. Errors of the store's own files (snapshot files)
    /// do not count: redb never saw them.
    pub fn poisons_redb(&self) -> bool {
        matches!(
            self,
            Error::Redb(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }

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
