//! Every redb table and meta key of an Aspen data file, in one place.
//!
//! CHANGING A NAME BREAKS EXISTING DATA FILES: redb finds tables by name, and meta values by
//! key. Add new tables and keys; never rename or reuse one. Values are postcard: the records
//! of `types.rs`, `api::VaultMeta` in `vaults`, and the type named in each `Meta<T>`.

use std::marker::PhantomData;

use redb::TableDefinition;

use crate::command::{LogId, StoredMembership, VaultLimits, Vote};

/// Raft log: log index → `LOG_ENTRY_FORMAT` byte + postcard `Entry`.
pub const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft meta: `VOTE`, `COMMITTED`, `LAST_PURGED`, `SNAPSHOT_INSTALLED`.
pub const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Key-value state: key → `KvEntry`.
pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// State machine meta: `LAST_APPLIED`, `MEMBERSHIP`, `REVISION`, `NEXT_LEASE_ID`. Written in
/// the same transaction as the state they describe.
pub const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Leases: lease id → `LeaseRecord`.
pub const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// Expiry index: (expires_at_ms, key) for every key with a TTL.
pub const IDX_EXPIRES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("idx_expires");
/// Lease index: (lease id, key) for every key attached to a lease.
pub const IDX_LEASE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("idx_lease");
/// Lease deadline index: (deadline_ms, lease id) for every lease.
pub const IDX_LEASE_DEADLINE: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("idx_lease_deadline");
/// Vaults: name → `VaultMeta`, changed in the same transaction as the vault's keys.
pub const VAULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vaults");
/// History: (revision, event number within the revision) → postcard `HistoryEvent`, one row
/// per change readers saw, written in the transaction that applied it (`storage::history`).
pub const HISTORY: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("history");
/// File identity: `META_FORMAT` → u32 little endian.
pub const FILE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("file_meta");

/// A meta value: the table and key it lives under and, in its type, what it holds.
pub struct Meta<T> {
    pub table: TableDefinition<'static, &'static str, &'static [u8]>,
    pub key: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T> Meta<T> {
    const fn new(
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &'static str,
    ) -> Self {
        Meta {
            table,
            key,
            value: PhantomData,
        }
    }
}

impl<T> Clone for Meta<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Meta<T> {}

pub const VOTE: Meta<Vote> = Meta::new(RAFT_META, "vote");
/// Absent until openraft first reports a committed log id.
pub const COMMITTED: Meta<LogId> = Meta::new(RAFT_META, "committed");
pub const LAST_PURGED: Meta<LogId> = Meta::new(RAFT_META, "last_purged");
/// Log id of the last snapshot installed from a leader: it stands in for log entries this node
/// never received, in the cross-storage validation.
pub const SNAPSHOT_INSTALLED: Meta<LogId> = Meta::new(RAFT_META, "snapshot_installed");
pub const LAST_APPLIED: Meta<LogId> = Meta::new(SM_META, "last_applied");
pub const MEMBERSHIP: Meta<StoredMembership> = Meta::new(SM_META, "membership");
/// The cluster revision (etcd's): +1 per command that changed what readers see.
pub const REVISION: Meta<u64> = Meta::new(SM_META, "revision");
/// The vault limits in force (`VaultLimits`); the defaults until the leader sets its own.
pub const VAULT_LIMITS: Meta<VaultLimits> = Meta::new(SM_META, "vault_limits");
/// Set by a restore from a backup: the backup's revision. The state then holds keys no log
/// entry produced, so the first learner must get it as a snapshot (see `node::client`).
pub const RESTORED_FROM: Meta<u64> = Meta::new(SM_META, "restored_from_revision");
/// The id `LeaseGrant { id: 0 }` tries first.
pub const NEXT_LEASE_ID: Meta<u64> = Meta::new(SM_META, "next_lease_id");
/// The largest `now_ms` applied: the state machine's clock never goes back, and readers never
/// judge expiry before it.
pub const CLOCK: Meta<u64> = Meta::new(SM_META, "clock_ms");
/// Clients, roles and grants (`crate::api::auth`); absent: no client is known yet.
pub const AUTH: Meta<crate::api::AuthState> = Meta::new(SM_META, "auth");
/// What the history holds (`types::HistoryBounds`): the oldest revision whose state can be
/// read and the first whose events are kept. Absent: no history yet (only the current
/// revision can be read, a watch starts at the next one).
pub const HISTORY_BOUNDS: Meta<crate::storage::types::HistoryBounds> =
    Meta::new(SM_META, "history_bounds");
pub const META_FORMAT: &str = "format";

/// Version of this schema, stored under `META_FORMAT`. 2 added `vaults` and `vault_limits`; 3
/// added `history` and `history_bounds` (a build before them would write
/// changes without their history, so it must refuse the file). A format-1 file is upgraded
/// when opened (its vault metadata computed from its keys), a format-2 file by recording its
/// format (its history starts at its next change); any other version is refused.
pub const FORMAT_VERSION: u32 = 3;
/// The format before history.
pub const FORMAT_VERSION_BEFORE_HISTORY: u32 = 2;
/// The format before vaults.
pub const FORMAT_VERSION_BEFORE_VAULTS: u32 = 1;
/// First byte of every stored log entry: the encoding of the rest. 2 wraps a client's write in
/// `Command::Write`; format-1 entries (the client writes were `Command`'s first seven variants)
/// are still read, translated by `codec::decode_log_entry`.
pub const LOG_ENTRY_FORMAT: u8 = 2;
/// The log entry format before `Command::Write`.
pub const LOG_ENTRY_FORMAT_FLAT_COMMANDS: u8 = 1;
