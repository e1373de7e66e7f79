//! Node runtime tests: the supervision tree in-process (actor harness) and the `aspen-node`
//! binary as a real process. One binary, one file per concern.

mod ops;
mod process;
mod supervision;
mod ttl;
