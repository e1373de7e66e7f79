//! Every redb table and meta key of an Aspen data file, in one place.
//!
//! CHANGING A NAME BREAKS EXISTING DATA FILES: redb finds tables by name, and meta values by
//! key. Add new tables and keys; never rename or reuse one. Values are postcard-encoded types
//! from `types.rs` unless noted.

use redb::TableDefinition;

/// Raft log: log index → `LOG_ENTRY_FORMAT` byte + postcard `Entry`.
pub const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft meta: `META_VOTE`, `META_COMMITTED`, `META_LAST_PURGED`, `META_SNAPSHOT_INSTALLED`.
pub const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Key-value state: key → `KvEntry`.
pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// State machine meta: `META_LAST_APPLIED`, `META_MEMBERSHIP`, `META_REVISION`,
/// `META_NEXT_LEASE_ID`. Written in the same transaction as the state they describe.
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
/// File identity: `META_FORMAT` → u32 little endian.
pub const FILE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("file_meta");

pub const META_VOTE: &str = "vote";
pub const META_COMMITTED: &str = "committed";
pub const META_LAST_PURGED: &str = "last_purged";
/// Log id of the last snapshot installed from a leader: it stands in for log entries this node
/// never received, in the cross-storage validation.
pub const META_SNAPSHOT_INSTALLED: &str = "snapshot_installed";
pub const META_LAST_APPLIED: &str = "last_applied";
pub const META_MEMBERSHIP: &str = "membership";
pub const META_REVISION: &str = "revision";
pub const META_NEXT_LEASE_ID: &str = "next_lease_id";
pub const META_FORMAT: &str = "format";

/// Version of this schema, stored under `META_FORMAT`; a file with another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// First byte of every stored log entry: the encoding of the rest.
pub const LOG_ENTRY_FORMAT: u8 = 1;
