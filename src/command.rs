//! The Raft log payload: what the leader proposes ([`Request`]: a [`Command`] and its clock),
//! what the state machine answers ([`Response`]), and openraft's type configuration. Built
//! from `api` types; the housekeeping commands (`Expire`, `SetVaultLimits`) exist only here,
//! so a client request cannot express them ([`crate::api::WriteOp`] has no such variant).
//! Also owns `VaultLimits` (replicated state) and openraft's type aliases (`LogId`, `Entry`,
//! ...). Plain data: no redb, no network.
//!
//! Disk compatibility: log entries are postcard, which encodes enum variants by position. Add
//! new variants and fields only at the end.

use serde::{Deserialize, Serialize};

use crate::api::WriteOp;
use crate::api::error::CommandError;
use crate::api::kv::{
    KeyRange, NodeId, Output, Put, Txn, check_key_len, check_lease_id, check_ttl, txn_puts,
    validate_txn,
};
use crate::limits::{EXPIRE_BATCH_MAX, PROPOSAL_BATCH_MAX};

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
    /// Group commit: clients' writes proposed together in one log entry (so they share one
    /// append and one fsync). Applied in order in one transaction, each with its own revision
    /// and its own response ([`Response::batch`]); the entry commits or fails whole. Holds
    /// client writes only, so a batch cannot nest (nor a decoder recurse).
    Batch(Vec<BatchItem>),
}

/// One write of a [`Command::Batch`]: a client's write and the leader's clock for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub now_ms: u64,
    pub op: WriteOp,
}

impl TryFrom<Command> for WriteOp {
    /// The command back when it is not a client's write (housekeeping, a batch).
    type Error = Command;

    fn try_from(command: Command) -> Result<Self, Command> {
        Ok(match command {
            Command::Put(put) => WriteOp::Put(put),
            Command::Delete { key, prev_kv } => WriteOp::Delete { key, prev_kv },
            Command::DeleteRange(range) => WriteOp::DeleteRange(range),
            Command::Txn(txn) => WriteOp::Txn(txn),
            Command::LeaseGrant { id, ttl_ms } => WriteOp::LeaseGrant { id, ttl_ms },
            Command::LeaseRevoke { id } => WriteOp::LeaseRevoke { id },
            Command::LeaseKeepAlive { id } => WriteOp::LeaseKeepAlive { id },
            other @ (Command::Expire { .. } | Command::SetVaultLimits(_) | Command::Batch(_)) => {
                return Err(other);
            }
        })
    }
}

impl Command {
    /// Whether the command can make the database bigger: refused while the quota alarm is on
    /// (as etcd refuses puts, transactions that put and lease grants). Deletes, revokes,
    /// keepalives and expiry always pass: they are how usage comes down.
    pub fn adds_data(&self) -> bool {
        match self {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(txn) => txn_puts(txn),
            Command::Delete { .. }
            | Command::DeleteRange(_)
            | Command::LeaseRevoke { .. }
            | Command::LeaseKeepAlive { .. }
            | Command::Expire { .. }
            | Command::SetVaultLimits(_) => false,
            Command::Batch(items) => items.iter().any(|item| item.op.adds_data()),
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
            Command::LeaseRevoke { id } | Command::LeaseKeepAlive { id } => check_lease_id(*id),
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
            // Each write of a batch is checked on its own when it is applied (one refused write
            // does not refuse the others); here only the batch's size.
            Command::Batch(items) => {
                if items.len() > PROPOSAL_BATCH_MAX {
                    return Err(CommandError::BadBatch {
                        count: items.len() as u64,
                        max: PROPOSAL_BATCH_MAX as u64,
                    });
                }
                Ok(())
            }
        }
    }
}

impl From<WriteOp> for Command {
    /// The log payload of a client's write (same variant, same shape).
    fn from(op: WriteOp) -> Self {
        match op {
            WriteOp::Put(put) => Command::Put(put),
            WriteOp::Delete { key, prev_kv } => Command::Delete { key, prev_kv },
            WriteOp::DeleteRange(range) => Command::DeleteRange(range),
            WriteOp::Txn(txn) => Command::Txn(txn),
            WriteOp::LeaseGrant { id, ttl_ms } => Command::LeaseGrant { id, ttl_ms },
            WriteOp::LeaseRevoke { id } => Command::LeaseRevoke { id },
            WriteOp::LeaseKeepAlive { id } => Command::LeaseKeepAlive { id },
        }
    }
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

/// The state machine's answer to one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The cluster revision after this entry was applied.
    pub revision: u64,
    pub result: Result<Output, CommandError>,
    /// For a `Command::Batch`: one response per request, in order (empty otherwise).
    pub batch: Vec<Response>,
}
