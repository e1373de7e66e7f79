//! Storage: one redb database per node holding the Raft log, the Raft meta and the key-value
//! state machine with its indexes; one fsync per appended batch and none in apply.
//!
//! Owns: the file format (`schema`), how records are encoded (`codec`), the durability rules
//! (`store`), command semantics (`state_machine`), consistent reads (`reads`), snapshot files
//! (`snapshot`), hash checks of the key space (`hashkv`), the in-memory tail of the log (`tail`), backups and restore (`backup`), the
//! offline check (`check`), upgrades of old files (`upgrade`), the on-disk records (`types`),
//! errors (`error`), the tuple layer (`tuple`, `subspace`) and `StoreWrite` (`write`), the
//! trait outside code must import to write: the write methods themselves are private to
//! `storage`. openraft's storage traits are thin handles in `actors::raft_storage` that send
//! writes to the StorageActor.
//! Does not touch: the network, actors, or the clock for any state (time arrives in the
//! commands; only snapshot file ids, and whether a hash check came too late to hash, read it).
//!
//! Invariants, asserted where they are written and checked by `Store::validate` on start:
//! 1. `last_purged <= last_applied <= committed <= last log index` in the durable state.
//! 2. `last_applied`, membership and the revision change in the same transaction as the state.
//! 3. Every acknowledged `append()` is durable before openraft hears of it.
//! 4. Only committed entries reach `apply()`; `append()` never applies.

mod backend;
pub mod backup;
pub mod check;
pub mod codec;
pub mod error;
pub mod hashkv;
pub mod history;
pub(crate) mod published;
pub mod reads;
pub mod schema;
pub mod snapshot;
pub mod state_machine;
pub mod store;
pub mod subspace;
mod tail;
pub mod tuple;
pub mod types;
pub mod upgrade;
pub mod write;

pub use backup::{BackupSummary, EtcdSnapshotTrailer, restore_backup, verify_backup};
pub use error::{Error, ValidationError};
pub use reads::{Page, ReadView, ScanOptions};
pub use snapshot::{SnapshotSummary, verify_snapshot_file};
pub use store::{Compaction, DurableMeta, StorageMode, Store, StoreOptions, validate};
pub use types::*;
pub use write::StoreWrite;
