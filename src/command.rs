//! The Raft log payload: what the leader proposes ([`Request`]: a [`Command`] and its clock),
//! what the state machine answers ([`Response`]), and openraft's type configuration. Built
//! from `api` types; the housekeeping commands (`Expire`, `SetVaultLimits`, `AuthBootstrap`,
//! `RenewLeases`, `HashCheck`) exist only here, so a client request cannot express them
//! ([`crate::api::WriteOp`] has no such variant). Also owns `VaultLimits` (replicated state)
//! and openraft's type aliases (`LogId`, `Entry`, ...). Plain data: no redb, no network.
//!
//! Disk compatibility: log entries are postcard, which encodes enum variants by position. Add
//! new variants and fields only at the end. Entries written before `Command::Write` wrapped a
//! client's write (log entry format 1, when the seven client writes were `Command`'s own first
//! variants) are translated when read: `storage::codec::decode_log_entry`.

use serde::{Deserialize, Serialize};

use crate::api::WriteOp;
use crate::api::error::CommandError;
use crate::api::kv::{NodeId, Output, check_key_len};
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
    /// One client's write.
    Write(WriteOp),
    /// Delete these keys and revoke these leases if they have expired at the request's `now_ms`
    /// (re-checked on apply: a key refreshed since the proposal survives).
    Expire {
        keys: Vec<Vec<u8>>,
        leases: Vec<u64>,
    },
    /// Set the vault limits every node enforces (the leader proposes its configured ones).
    /// Housekeeping like `Expire`: a client cannot send it.
    SetVaultLimits(VaultLimits),
    /// Group commit: clients' writes proposed together in one log entry (so they share one
    /// append and one fsync). Applied in order in one transaction, each with its own revision
    /// and its own response ([`Response::batch`]); the entry commits or fails whole. Holds
    /// client writes only, so a batch cannot nest (nor a decoder recurse).
    Batch(Vec<BatchItem>),
    /// A root client's change to the auth state (`crate::api::auth`).
    Auth(crate::api::AuthOp),
    /// Makes `roots` root clients if no client is root yet (the bootstrap: the client that
    /// formed the cluster, or `auth.root_clients`); otherwise changes nothing. Housekeeping:
    /// a client cannot send it.
    AuthBootstrap { roots: Vec<crate::api::ClientId> },
    /// Gives every lease its whole TTL from `now_ms` (never shortening one), as etcd does when
    /// a leader takes over: time without a leader does not count against a lease.
    /// Housekeeping: a new leader proposes it first.
    RenewLeases,
    /// A hash check (`crate::api::hashkv`): changes nothing; every member hashes its key space
    /// as it stands right after applying it, and keeps the result under `check` for the
    /// leader to collect. Housekeeping: a client asks for one with `ClientOp::HashKv`.
    HashCheck { check: u64 },
}

/// One write of a [`Command::Batch`]: a client's write and the leader's clock for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub now_ms: u64,
    pub op: WriteOp,
}

impl Command {
    /// Whether the command can make the database bigger: refused while the quota alarm is on
    /// (as etcd refuses puts, transactions that put and lease grants). Deletes, revokes,
    /// keepalives and expiry always pass: they are how usage comes down.
    pub fn adds_data(&self) -> bool {
        match self {
            Command::Write(op) => op.adds_data(),
            Command::Expire { .. }
            | Command::SetVaultLimits(_)
            | Command::Auth(_)
            | Command::AuthBootstrap { .. }
            | Command::RenewLeases
            | Command::HashCheck { .. } => false,
            Command::Batch(items) => items.iter().any(|item| item.op.adds_data()),
        }
    }

    /// Checks every limit that does not depend on the stored state. The state machine runs it
    /// again on apply, so an invalid command in the log is refused there and changes nothing.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Command::Write(op) => op.validate(),
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
            Command::Auth(op) => op.validate().map_err(|e| CommandError::Auth(e.to_string())),
            Command::RenewLeases | Command::HashCheck { .. } => Ok(()),
            Command::AuthBootstrap { roots } => {
                if roots.is_empty() || roots.len() > crate::api::auth::AUTH_ENTRIES_MAX {
                    return Err(CommandError::Auth(format!(
                        "a bootstrap names 1 to {} root clients",
                        crate::api::auth::AUTH_ENTRIES_MAX
                    )));
                }
                Ok(())
            }
        }
    }
}

impl Request {
    /// Bytes of keys and values the request carries, roughly: what bounds a replication step.
    pub fn payload_bytes(&self) -> usize {
        match &self.command {
            Command::Write(op) => op.payload_bytes(),
            Command::Expire { keys, .. } => keys.iter().map(Vec::len).sum(),
            Command::SetVaultLimits(_)
            | Command::Auth(_)
            | Command::AuthBootstrap { .. }
            | Command::RenewLeases
            | Command::HashCheck { .. } => 0,
            Command::Batch(items) => items.iter().map(|item| item.op.payload_bytes()).sum(),
        }
    }
}

impl From<WriteOp> for Command {
    fn from(op: WriteOp) -> Self {
        Command::Write(op)
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
