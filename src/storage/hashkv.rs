//! Hash checks (`crate::api::hashkv`): when this node applies a `Command::HashCheck`, the
//! write that applied it commits there (`state_machine::write_merged`), and a read
//! transaction begun right after that commit holds the key space exactly as it stands after
//! the check. A thread of its own hashes it, so applying goes on meanwhile; the result waits
//! here (the last [`HASH_RESULTS_KEPT`]) for the leader to collect it. Also kept here, in
//! memory: the corrupt alarm a check run by this node raised (`HashChecks::alarm`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{ReadTransaction, ReadableTable};

use crate::api::{HashKvError, HashKvReport, KvHash};
use crate::limits::{HASH_RESULTS_KEPT, HASH_RUNNING_MAX};
use crate::storage::codec::read_meta;
use crate::storage::error::Result;
use crate::storage::schema::{KV, LAST_APPLIED, REVISION};

/// The hash checks this node applied: results kept, hashes running.
#[derive(Debug, Default)]
pub struct HashChecks {
    state: Mutex<Checks>,
    /// Woken when a result arrives.
    finished: tokio::sync::Notify,
    /// The last check this node ran, while it found members whose hashes differ.
    alarm: Mutex<Option<HashKvReport>>,
}

#[derive(Debug, Default)]
struct Checks {
    results: VecDeque<(u64, std::result::Result<KvHash, HashKvError>)>,
    running: usize,
}

impl HashChecks {
    /// Hashes `txn` for `check` on a thread of its own (a check past [`HASH_RUNNING_MAX`]
    /// running at once is answered "busy" at once).
    pub(in crate::storage) fn start(self: &Arc<Self>, check: u64, txn: ReadTransaction) {
        {
            let mut state = crate::sync::lock(&self.state);
            if state.running >= HASH_RUNNING_MAX {
                drop(state);
                let busy = format!("{HASH_RUNNING_MAX} hash checks are already running");
                return self.finish(check, Err(HashKvError::Failed(busy)));
            }
            state.running += 1;
        }
        // Counts the hash as running until the thread ends, however it ends.
        let running = Running(Arc::clone(self));
        let spawned = std::thread::Builder::new()
            .name("aspen-hashkv".into())
            .spawn(move || {
                let result = hash_kv(&txn).map_err(|e| HashKvError::Failed(e.to_string()));
                drop(txn);
                running.0.finish(check, result);
                drop(running);
            });
        if let Err(error) = spawned {
            let failed = HashKvError::Failed(format!("starting the hash thread: {error}"));
            self.finish(check, Err(failed));
        }
    }

    /// Records the result of `check` (the oldest kept is dropped past [`HASH_RESULTS_KEPT`]).
    pub(in crate::storage) fn finish(
        &self,
        check: u64,
        result: std::result::Result<KvHash, HashKvError>,
    ) {
        let mut state = crate::sync::lock(&self.state);
        if state.results.len() >= HASH_RESULTS_KEPT {
            state.results.pop_front();
        }
        state.results.push_back((check, result));
        drop(state);
        self.finished.notify_waiters();
    }

    /// The result of `check`, if this node hashed it (and still keeps it).
    pub fn result(&self, check: u64) -> Option<std::result::Result<KvHash, HashKvError>> {
        let state = crate::sync::lock(&self.state);
        let found = state.results.iter().rev().find(|(c, _)| *c == check);
        found.map(|(_, result)| result.clone())
    }

    /// The corrupt alarm: the report of the last hash check this node ran, while that check
    /// found members whose key space differs (cleared by a check where every member agrees).
    pub fn alarm(&self) -> Option<HashKvReport> {
        crate::sync::lock(&self.alarm).clone()
    }

    /// Drops the alarm (this node no longer leads: its checks say nothing of the cluster now).
    pub fn clear_alarm(&self) {
        crate::sync::lock(&self.alarm).take();
    }

    /// Records what the last check this node ran found: raises the alarm when a member's
    /// hash differed, clears it when every member agreed, keeps it otherwise (some members
    /// did not answer: nothing is known of them).
    pub fn record_check(&self, report: &HashKvReport) {
        let mut alarm = crate::sync::lock(&self.alarm);
        if !report.mismatched.is_empty() {
            *alarm = Some(report.clone());
        } else if report.all_agree() {
            *alarm = None;
        }
    }

    /// Waits at most `wait` for the result of `check` (the check may not be applied here
    /// yet, or still hashing).
    pub async fn wait(
        &self,
        check: u64,
        wait: Duration,
    ) -> std::result::Result<KvHash, HashKvError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if let Some(result) = self.result(check) {
                return result;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return Err(HashKvError::NotApplied {
                    check,
                    waited_ms: wait.as_millis() as u64,
                });
            }
        }
    }
}

/// A hash counted as running; uncounted when dropped (also when the hash panicked, so a
/// panic never leaves later checks "busy").
struct Running(Arc<HashChecks>);

impl Drop for Running {
    fn drop(&mut self) {
        crate::sync::lock(&self.0.state).running -= 1;
    }
}

/// Hashes the key space `txn` sees: CRC-32 of every key and stored record (length-prefixed,
/// in key order), with the revision and the last applied index it is at.
pub(crate) fn hash_kv(txn: &ReadTransaction) -> Result<KvHash> {
    let mut hasher = crc32fast::Hasher::new();
    let mut keys = 0u64;
    for row in txn.open_table(KV)?.iter()? {
        let (key, record) = row?;
        for bytes in [key.value(), record.value()] {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        keys += 1;
    }
    Ok(KvHash {
        revision: read_meta(txn, REVISION)?.unwrap_or(0),
        applied_index: read_meta(txn, LAST_APPLIED)?.map_or(0, |id| id.index),
        keys,
        hash: hasher.finalize(),
    })
}
