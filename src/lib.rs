//! # Aspen
//!
//! A node runtime for a strongly consistent, Raft-replicated key-value store with read-only
//! SQL, built as actors under a supervision tree. The layers modules keep to, and the path of
//! a put and of a read, are in `ARCHITECTURE.md`; `tests/architecture.rs` enforces the layers.
//!
//! # Layout
//!
//! - [`api`]: every type a client sees: addresses, keys, ranges, puts, transactions, outputs,
//!   write refusals, the client protocol's frames, SQL results, the `/health` report.
//! - [`command`]: the Raft log payload (`Request`, `Command`, `Response`), `VaultLimits` and
//!   openraft's type configuration; the housekeeping commands exist only here.
//! - [`node`]: the only wiring: `start_node`, `NodeCore` (implements `net`'s ports),
//!   `run_until_stopped`, graceful shutdown with leader handover.
//! - [`supervisor`]: the NodeSupervisor: start order, restarts, backoff, intensity limit,
//!   the storage validation gate, health enforcement, closing the store on stop, and the
//!   health board behind `/health` and `/status`.
//! - [`actors`]: StorageActor, RaftActor, TtlActor, HealthActor, SqlActor, their typed handles
//!   (`RaftHandle`, `StorageWriter`), and openraft's storage traits as handles on the
//!   StorageActor.
//! - [`net`]: the iroh endpoint and identity, framing, pooled connections, the Raft transport
//!   (`aspen/raft/1`), the client protocol's server (`aspen/client/1`), the HTTP endpoints;
//!   each server calls a port it declares.
//! - [`client`]: the Rust client library.
//! - [`cli`]: the `aspen` command line; [`bench`](mod@bench): `aspen bench`, the load tool; [`admin`]:
//!   the client of the HTTP admin API; [`local_cluster`]: `aspen-node cluster`; [`offline`]:
//!   `aspen-node restore` and `check`.
//! - [`sql`]: read-only SQL (DataFusion) over one snapshot of the state machine: the `kv`,
//!   `kv_bytes`, `leases` and `vaults` tables, key-range pushdown, the engine, its limits and
//!   the guard that bounds what a query may ask of the planner.
//! - [`metrics`]: the Prometheus recorder and every metric name.
//! - [`fault`]: fault injection (actor start failures, forced critical checks, network cuts),
//!   empty in normal operation.
//! - `testing` and `fuzzing` (cargo feature `testing`, on for tests, benches and `fuzz/`
//!   only): the actor-level harness (a node in-process on a temp dir, bounded waits) and what
//!   the fuzz targets run, with their seeds.
//! - [`clock`]: the wall clock: stamps proposals, judges expiry on reads, dates backups.
//! - [`config`]: the node's TOML configuration, environment overrides and validation.
//! - `sync`: one lock helper for short critical sections.
//! - [`files`]: the data directory's modes (0700 directories, 0600 files) and the sweep that
//!   tightens wider ones at start.
//! - [`limits`]: the limits shared across layers (key and value sizes, batches, frame, SQL
//!   bounds, storage defaults); a limit used by one module stays in it.
//! - [`storage`]: the redb file: Raft log, vote, committed, KV state machine, indexes,
//!   snapshots, backups and restore, the offline check, format upgrades, the FoundationDB
//!   tuple layer.

pub mod actors;
pub mod admin;
pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod command;
pub mod config;
pub mod etcd;
pub mod fault;
pub mod files;
pub mod flush;
#[cfg(feature = "testing")]
pub mod fuzzing;
pub mod limits;
pub mod local_cluster;
pub mod metrics;
pub mod net;
pub mod node;
pub mod offline;
pub mod sql;
pub mod storage;
pub mod supervisor;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
