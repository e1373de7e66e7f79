//! Every type a client sees: node addresses, keys, ranges, puts and transactions and what
//! they answer (`kv`), a client's write (`write`), the refusals of a write (`error`), the
//! request and response frames of the client protocol (`client`), SQL results (`sql`), the
//! `/health` report (`health`), replica hashes (`hashkv`), who may do what (`auth`), watch
//! events and options (`watch`), and the bounded decoders of the
//! lists a request carries (`bounded`). Plain data with serde derives.
//!
//! Never names redb, openraft, DataFusion or any module of this crate but `limits` (layer 0
//! of `tests/architecture.rs`).

mod address;
pub mod auth;
pub(crate) mod bounded;
pub mod client;
pub mod error;
pub mod hashkv;
pub mod health;
pub mod kv;
pub mod sql;
pub mod watch;
pub mod write;

pub use address::{AddressError, NodeAddress};
pub use auth::{AuthOp, AuthState, ClientId, Grant, Perm, ROOT_ROLE};
pub use client::*;
pub use error::{CommandError, TxnList};
pub use hashkv::{HashKvError, HashKvReport, KvHash, MemberHash};
pub use health::{Check, CheckStatus, HealthReport, NodeHealth};
pub use kv::{
    Compare, CompareOp, CompareTarget, KeyRange, KeyValue, NodeId, Output, Put, RangeSort, SortBy,
    Txn, TxnOp, VAULT_PREFIX, VaultInfo, VaultMeta, strinc, vault_of,
};
pub use sql::{SqlColumn, SqlResult, SqlValue};
pub use watch::{EventKind, WatchEvent, WatchFilter, WatchOptions};
pub use write::WriteOp;
