//! Storage integration tests: openraft's Suite, the KV conformance suite on both stores, the
//! model test, validation, and the SIGKILL crash test. One binary, one file per concern.

mod backup;
mod check;
mod conformance;
mod crash;
mod fuzz_inputs;
mod hashkv;
mod history;
mod model;
mod published;
mod reference;
mod suite;
mod tail;
mod util;
