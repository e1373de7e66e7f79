//! Node runtime tests: the supervision tree in-process (actor harness), storage faults, and the `aspen-node`
//! binary as a real process. One binary, one file per concern.

mod faults;
mod ops;
mod process;
mod supervision;
mod ttl;
