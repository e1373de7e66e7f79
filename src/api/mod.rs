//! The types a client sees, apart from the node's internals: today the node address. Never
//! names redb, openraft, DataFusion or any other module of this crate (layer 0 of
//! `tests/architecture.rs`).

mod address;

pub use address::{AddressError, NodeAddress};
