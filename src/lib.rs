//! # Aspen
//!
//! A node runtime for a strongly consistent, Raft-replicated key-value store with read-only
//! SQL, built as actors under a supervision tree. See `DESIGN.md` in the shared folder for the
//! architecture.
//!
//! # Layout
//!
//! - [`config`]: the node's TOML configuration, environment overrides and validation.
//! - [`limits`]: every named limit (key and value sizes, batch sizes, frame size) in one place.
//! - [`storage`]: the redb file: Raft log, vote, committed, KV state machine, indexes,
//!   snapshots, the openraft storage traits and the FoundationDB tuple layer.

pub mod config;
pub mod limits;
pub mod storage;
