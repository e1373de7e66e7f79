//! SQL tests: the engine over a real redb store (answers checked against SQLite, pushdown,
//! limits, snapshot reads) and the SqlActor of a node over the client protocol. The CLI
//! against a local cluster is in `tests/cluster/cli.rs`.

mod history;
mod limits;
mod node;
mod oracle;
mod pushdown;
mod util;
