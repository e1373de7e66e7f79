//! # Aspen
//!
//! A node runtime for a strongly consistent, Raft-replicated key-value store with read-only
//! SQL, built as actors under a supervision tree. The layers modules keep to, and the imports
//! that still break them, are in `tests/architecture.rs`.
//!
//! # Layout
//!
//! - [`api`]: the types a client sees (the node address so far).
//! - [`node`]: starting a node; what its parts publish for `/health`, `/status` and tests.
//! - [`supervisor`]: the NodeSupervisor: start order, restarts, backoff, intensity limit,
//!   the storage validation gate and health enforcement.
//! - [`actors`]: StorageActor, RaftActor, TtlActor, HealthActor, SqlActor, and openraft's storage
//!   handles that message the StorageActor.
//! - [`net`]: the iroh endpoint and identity, the Raft transport (`aspen/raft/1`), the client
//!   protocol and its server (`aspen/client/1`), network fault injection, HTTP endpoints.
//! - [`client`]: the Rust client library.
//! - [`cli`]: the `aspen` command line; [`bench`](mod@bench): `aspen bench`, the load tool; [`admin`]:
//!   the client of the HTTP admin API; [`local_cluster`]: `aspen-node cluster`; [`offline`]:
//!   `aspen-node restore` and `check`.
//! - [`sql`]: read-only SQL (DataFusion) over one snapshot of the state machine: the `kv`,
//!   `kv_bytes`, `leases` and `vaults` tables, key-range pushdown, the engine, its limits and
//!   the guard that bounds what a query may ask of the planner.
//! - [`metrics`]: the Prometheus recorder and every metric name.
//! - [`testing`]: the actor-level harness: a node in-process on a temp dir, fault injection,
//!   bounded waits; [`fuzzing`]: what the fuzz targets in `fuzz/` run, and their seeds. Only
//!   tests, benches and `fuzz/` use these two.
//! - [`clock`]: the wall clock, used only to stamp proposals and judge expiry on reads.
//! - [`config`]: the node's TOML configuration, environment overrides and validation.
//! - [`limits`]: every named limit (key and value sizes, batch sizes, frame size) in one place.
//! - [`storage`]: the redb file: Raft log, vote, committed, KV state machine, indexes,
//!   snapshots, the openraft storage traits and the FoundationDB tuple layer.

pub mod actors;
pub mod admin;
pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod command;
pub mod config;
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
pub mod testing;
