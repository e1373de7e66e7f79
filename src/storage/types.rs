//! The data the storage layer speaks: the Raft type configuration, the commands carried in the
//! log, their responses, and the key-value records kept on disk. Everything here is plain data
//! with serde derives; nothing here touches redb or the network.
//!
//! Wire and disk compatibility: these types are encoded with postcard, which encodes enum
//! variants by position. Add new variants and fields only at the end.

use serde::{Deserialize, Serialize};

use crate::limits::{
    COMMAND_BYTES_MAX, EXPIRE_BATCH_MAX, KEY_BYTES_MAX, TTL_MS_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX,
    VAULT_NAME_BYTES_MAX,
};
use crate::storage::error::{CommandError, TxnList};

/// A node's id in the Raft cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Aspen's openraft type configuration: the log carries [`Request`]s, the state machine
    /// answers with [`Response`]s, and snapshots travel as files.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// One Raft log payload: a command and the leader's clock when it was proposed. Every
/// time-dependent decision in the state machine uses `now_ms`, never the applying node's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Milliseconds since the Unix epoch on the proposing leader.
    pub now_ms: u64,
    pub command: Command,
}

/// A half-open key range `[start, end)`; `end: None` reaches past the last key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key that starts with `prefix` (all keys for an empty prefix).
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: prefix.to_vec(),
            end: crate::storage::tuple::strinc(prefix),
        }
    }

    /// Exactly one key.
    pub fn single(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Whether `key` falls inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    fn validate(&self) -> Result<(), CommandError> {
        check_key_len(&self.start, true)?;
        if let Some(end) = &self.end {
            check_key_len(end, true)?;
            if end.as_slice() < self.start.as_slice() {
                return Err(CommandError::RangeReversed);
            }
        }
        Ok(())
    }

    fn payload_bytes(&self) -> usize {
        self.start.len() + self.end.as_ref().map_or(0, Vec::len)
    }
}

/// Write `value` at `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Attach the key to this lease: it is deleted when the lease is revoked or expires.
    pub lease: Option<u64>,
    /// Expire the key this many milliseconds after the command's `now_ms`.
    pub ttl_ms: Option<u64>,
    /// Return the entry this put replaced.
    pub prev_kv: bool,
}

impl Put {
    /// A plain put: no lease, no TTL, no previous entry returned.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Put {
            key: key.into(),
            value: value.into(),
            lease: None,
            ttl_ms: None,
            prev_kv: false,
        }
    }

    fn validate(&self) -> Result<(), CommandError> {
        check_key_len(&self.key, false)?;
        check_vault_key(&self.key)?;
        if self.value.len() > VALUE_BYTES_MAX {
            return Err(CommandError::ValueTooLarge {
                bytes: self.value.len() as u64,
                max: VALUE_BYTES_MAX as u64,
            });
        }
        if self.lease.is_some() && self.ttl_ms.is_some() {
            return Err(CommandError::LeaseAndTtl);
        }
        if let Some(ttl_ms) = self.ttl_ms {
            check_ttl(ttl_ms)?;
        }
        if self.lease == Some(0) {
            return Err(CommandError::LeaseIdZero);
        }
        Ok(())
    }
}

/// What a [`Compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value; a missing key never matches.
    Value(Vec<u8>),
    /// Number of writes since the key was created; 0 when missing.
    Version(u64),
    /// Revision of the key's creation; 0 when missing.
    CreateRevision(u64),
    /// Revision of the key's last write; 0 when missing.
    ModRevision(u64),
    /// Whether the key exists (and has not expired).
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// A condition of a transaction: `actual(key) op target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put(Put),
    Delete { key: Vec<u8>, prev_kv: bool },
    DeleteRange(KeyRange),
    Get { key: Vec<u8> },
}

impl TxnOp {
    fn validate(&self) -> Result<(), CommandError> {
        match self {
            TxnOp::Put(put) => put.validate(),
            TxnOp::Delete { key, .. } | TxnOp::Get { key } => check_key_len(key, false),
            TxnOp::DeleteRange(range) => range.validate(),
        }
    }

    fn payload_bytes(&self) -> usize {
        match self {
            TxnOp::Put(put) => put.key.len() + put.value.len(),
            TxnOp::Delete { key, .. } | TxnOp::Get { key } => key.len(),
            TxnOp::DeleteRange(range) => range.payload_bytes(),
        }
    }
}

/// If every compare holds, run `success`, else `failure`; atomically, as one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// A state machine command: the payload of one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
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
    /// Delete these keys and revoke these leases if they have expired at the request's `now_ms`
    /// (re-checked on apply: a key refreshed since the proposal survives).
    Expire {
        keys: Vec<Vec<u8>>,
        leases: Vec<u64>,
    },
    /// Set the vault limits every node enforces (the leader proposes its configured ones).
    /// Housekeeping like `Expire`: refused from clients.
    SetVaultLimits(VaultLimits),
}

impl Command {
    /// Whether the command can make the database bigger: refused while the quota alarm is on
    /// (as etcd refuses puts, transactions that put and lease grants). Deletes, revokes,
    /// keepalives and expiry always pass: they are how usage comes down.
    pub fn adds_data(&self) -> bool {
        match self {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .any(|op| matches!(op, TxnOp::Put(_))),
            Command::Delete { .. }
            | Command::DeleteRange(_)
            | Command::LeaseRevoke { .. }
            | Command::LeaseKeepAlive { .. }
            | Command::Expire { .. }
            | Command::SetVaultLimits(_) => false,
        }
    }

    /// Checks every limit that does not depend on the stored state. The state machine runs it
    /// again on apply, so an invalid command in the log is refused there and changes nothing.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Command::Put(put) => put.validate(),
            Command::Delete { key, .. } => check_key_len(key, false),
            Command::DeleteRange(range) => range.validate(),
            Command::Txn(txn) => validate_txn(txn),
            Command::LeaseGrant { ttl_ms, .. } => check_ttl(*ttl_ms),
            Command::LeaseRevoke { id } | Command::LeaseKeepAlive { id } => {
                if *id == 0 {
                    return Err(CommandError::LeaseIdZero);
                }
                Ok(())
            }
            Command::Expire { keys, leases } => {
                let count = keys.len() + leases.len();
                if count > EXPIRE_BATCH_MAX {
                    return Err(CommandError::ExpireBatchTooLarge {
                        count: count as u64,
                        max: EXPIRE_BATCH_MAX as u64,
                    });
                }
                keys.iter().try_for_each(|key| check_key_len(key, false))
            }
            Command::SetVaultLimits(limits) => {
                if limits.vaults_max == 0 || limits.keys_per_vault_max == 0 {
                    return Err(CommandError::BadVaultLimits);
                }
                Ok(())
            }
        }
    }
}

fn validate_txn(txn: &Txn) -> Result<(), CommandError> {
    for (list, count) in [
        (TxnList::Compares, txn.compares.len()),
        (TxnList::Success, txn.success.len()),
        (TxnList::Failure, txn.failure.len()),
    ] {
        if count > TXN_OPS_MAX {
            return Err(CommandError::TooManyTxnOps {
                list,
                count: count as u64,
                max: TXN_OPS_MAX as u64,
            });
        }
    }
    let mut bytes = 0usize;
    for compare in &txn.compares {
        check_key_len(&compare.key, false)?;
        bytes += compare.key.len();
        if let CompareTarget::Value(value) = &compare.target {
            bytes += value.len();
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        op.validate()?;
        bytes += op.payload_bytes();
    }
    if bytes > COMMAND_BYTES_MAX {
        return Err(CommandError::CommandTooLarge {
            bytes: bytes as u64,
            max: COMMAND_BYTES_MAX as u64,
        });
    }
    Ok(())
}

/// Keys under this prefix belong to a vault: `vault/NAME/REST`.
pub const VAULT_PREFIX: &[u8] = b"vault/";

/// The vault `key` belongs to: NAME for `vault/NAME/...` (NAME not empty, no `/`).
pub fn vault_of(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(VAULT_PREFIX)?;
    let end = rest.iter().position(|b| *b == b'/')?;
    (end > 0).then(|| &rest[..end])
}

/// A key written under `vault/` must name a vault: `vault/NAME/...` with NAME of 1 to
/// `VAULT_NAME_BYTES_MAX` bytes of `[A-Za-z0-9_.-]`.
fn check_vault_key(key: &[u8]) -> Result<(), CommandError> {
    let Some(rest) = key.strip_prefix(VAULT_PREFIX) else {
        return Ok(());
    };
    let refuse = |reason: &str| {
        Err(CommandError::BadVaultKey {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        })
    };
    let Some(end) = rest.iter().position(|b| *b == b'/') else {
        return refuse("keys under vault/ are vault/NAME/...");
    };
    let name = &rest[..end];
    if name.is_empty() || name.len() > VAULT_NAME_BYTES_MAX {
        return refuse(&format!(
            "a vault name is 1 to {VAULT_NAME_BYTES_MAX} bytes"
        ));
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return refuse("a vault name uses only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// What a vault holds, kept in the `vaults` table in the same transaction as its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VaultMeta {
    /// Stored keys (a key whose TTL passed counts until the TTL actor deletes it).
    pub key_count: u64,
    /// Bytes of those keys and their values.
    pub total_bytes: u64,
    /// The revision at which the vault got its first key (since it was last empty).
    pub created_revision: u64,
    /// The revision of the last change to its keys.
    pub updated_revision: u64,
}

/// A vault and its metadata, as listed to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultInfo {
    pub name: String,
    pub meta: VaultMeta,
}

/// The cluster's vault limits: part of the replicated state (set through Raft by the leader
/// from its config), so every node enforces the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultLimits {
    pub vaults_max: u64,
    pub keys_per_vault_max: u64,
}

impl From<&crate::config::StorageSection> for VaultLimits {
    /// The vault limits a node proposes when it leads.
    fn from(section: &crate::config::StorageSection) -> Self {
        VaultLimits {
            vaults_max: section.vaults_max,
            keys_per_vault_max: section.vault_keys_max,
        }
    }
}

impl Default for VaultLimits {
    fn default() -> Self {
        VaultLimits {
            vaults_max: crate::limits::VAULTS_MAX_DEFAULT,
            keys_per_vault_max: crate::limits::VAULT_KEYS_MAX_DEFAULT,
        }
    }
}

fn check_key_len(key: &[u8], empty_allowed: bool) -> Result<(), CommandError> {
    if key.is_empty() && !empty_allowed {
        return Err(CommandError::KeyEmpty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(CommandError::KeyTooLarge {
            bytes: key.len() as u64,
            max: KEY_BYTES_MAX as u64,
        });
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<(), CommandError> {
    if ttl_ms == 0 || ttl_ms > TTL_MS_MAX {
        return Err(CommandError::TtlOutOfRange {
            ttl_ms,
            max: TTL_MS_MAX,
        });
    }
    Ok(())
}

/// A key's record as stored in the `kv` table (the key is the table key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
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
}

/// A key and its record, as returned to readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub lease: Option<u64>,
    pub expires_at_ms: Option<u64>,
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

/// The state machine's answer to one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The cluster revision after this entry was applied.
    pub revision: u64,
    pub result: Result<Output, CommandError>,
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// A blank or membership entry.
    None,
    Put {
        prev: Option<KeyValue>,
    },
    Delete {
        deleted: u64,
        prev: Option<KeyValue>,
    },
    DeleteRange {
        deleted: u64,
    },
    /// `results` holds one output per operation of the branch that ran, in order.
    Txn {
        succeeded: bool,
        results: Vec<Output>,
    },
    /// A get inside a transaction.
    Get {
        kv: Option<KeyValue>,
    },
    Lease {
        id: u64,
        ttl_ms: u64,
        deadline_ms: u64,
    },
    LeaseRevoke {
        keys_deleted: u64,
    },
    Expire {
        keys_deleted: u64,
        leases_revoked: u64,
    },
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
