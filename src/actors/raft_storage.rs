//! openraft 0.9 storage-v2 traits over the [`Store`]: thin handles. Every write is a typed
//! message to the StorageActor (the only writer, in order, through its `StorageWriter`); reads
//! open redb read transactions on a blocking thread, so neither a commit waiting on fsync nor
//! a read stalls a tokio worker.
//!
//! `append()` commits once with fsync and only then signals openraft's flush callback, except a
//! leader's own entries: they are published (readable at once) and the callback signalled as
//! soon as their append is queued, so replication overlaps the leader's fsync
//! (`storage::published` says why that is safe). It never applies anything (applying
//! uncommitted entries would expose writes a new leader may truncate). `apply()` commits
//! without fsync; `save_committed()` is kept in memory (no trip to the StorageActor) and
//! written by the next apply.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};

use crate::actors::storage::StorageWriter;
use crate::command::{
    Entry, LogId, RaftStorageError, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
    Vote,
};
use crate::storage::{Error, Store};

/// Runs a store read on tokio's blocking pool and maps errors for openraft.
async fn blocking<T, F>(
    store: &Arc<Store>,
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    call: F,
) -> Result<T, RaftStorageError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
{
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StorageIOError::new(subject, verb, &error).into()),
        Err(join) => Err(StorageIOError::new(subject, verb, &join).into()),
    }
}

/// Awaits a write sent to the StorageActor and maps its error for openraft.
async fn write<T>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    written: impl Future<Output = Result<T, Error>>,
) -> Result<T, RaftStorageError> {
    written
        .await
        .map_err(|error| StorageIOError::new(subject, verb, &error).into())
}

/// Awaits `work` and records how long it took in histogram `name`.
async fn timed<T>(name: &'static str, node_id: &str, work: impl Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let output = work.await;
    metrics::histogram!(name, "node_id" => node_id.to_string())
        .record(started.elapsed().as_secs_f64());
    output
}

/// The Raft log half of the store (log entries, vote, committed).
#[derive(Debug, Clone)]
pub struct LogStore {
    store: Arc<Store>,
    writer: StorageWriter,
    id: u64,
    faults: crate::fault::Faults,
    /// The vote saved (or read at start) last: it tells which appends are this leader's own.
    vote: Option<Vote>,
}

impl LogStore {
    pub fn new(
        store: Arc<Store>,
        writer: StorageWriter,
        node_id: u64,
        faults: crate::fault::Faults,
    ) -> Self {
        LogStore {
            store,
            writer,
            id: node_id,
            faults,
            vote: None,
        }
    }

    /// Whether `entries` are this node's own as the leader of the vote saved last: proposed in
    /// that term by this node, with the vote committed (a quorum granted it). Only such an
    /// append is published before its fsync. A follower never appends them: another leader's
    /// entries carry its id, and this node's entries of an earlier term another term.
    fn leader_own(&self, entries: &[Entry]) -> bool {
        let Some(vote) = self.vote.filter(|vote| vote.is_committed()) else {
            return false;
        };
        vote.leader_id.node_id == self.id
            && !entries.is_empty()
            && entries
                .iter()
                .all(|entry| entry.log_id.leader_id == vote.leader_id)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        // Recent entries (what replication and apply mostly ask for) come from memory,
        // without a trip to the blocking pool.
        if let Some(entries) = self.store.recent_log_entries(&range) {
            return Ok(entries);
        }
        blocking(&self.store, ErrorSubject::Logs, ErrorVerb::Read, move |s| {
            s.log_entries_in_file(range)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let (last_purged_log_id, last_log_id) =
            blocking(&self.store, ErrorSubject::Logs, ErrorVerb::Read, |s| {
                s.log_state()
            })
            .await?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        // Forgotten first: if the save fails, no append counts as this leader's own.
        self.vote = None;
        write(
            ErrorSubject::Vote,
            ErrorVerb::Write,
            self.writer.save_vote(*vote),
        )
        .await?;
        self.vote = Some(*vote);
        Ok(())
    }

    /// Read once, as a core starts. This node's own committed vote is handed back as not
    /// committed, so the core starts as a follower and wins a new term instead of leading the
    /// old one again: followers may hold entries of the old term this node published and then
    /// lost (`storage::published`: a crash or a failed commit before its fsync returned), and a
    /// new entry proposed at the same index in the same term would carry the same log id, so
    /// they would keep theirs and apply something else. A new term's entries conflict with
    /// theirs, and Raft's usual repair follows.
    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        let stored = blocking(&self.store, ErrorSubject::Vote, ErrorVerb::Read, |s| {
            s.read_vote()
        })
        .await?;
        let vote = stored.map(|vote| match vote.leader_id.node_id == self.id {
            true => Vote {
                committed: false,
                ..vote
            },
            false => vote,
        });
        self.vote = vote;
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        self.writer.save_committed(committed).map_err(|error| {
            StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, &error).into()
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        blocking(&self.store, ErrorSubject::Store, ErrorVerb::Read, |s| {
            s.read_committed()
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if self.faults.take_log_append_failure() {
            let error = std::io::Error::other("injected log append failure");
            callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(openraft::StorageError::from_io_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                error,
            ));
        }
        if self.leader_own(&entries) {
            self.writer.append_published(entries).map_err(|error| {
                StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Write, &error)
            })?;
            // Readable now, and durable before anyone acts on their commit: openraft may
            // replicate them while the fsync runs. A failed commit is handled where it
            // happens (the entries are lost, and writes are refused until Raft restarts).
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // The StorageActor times the commit (`STORAGE_FSYNC_SECONDS`).
        let result = write(
            ErrorSubject::Logs,
            ErrorVerb::Write,
            self.writer.append(entries),
        )
        .await;
        // Signal only after the commit above returned: the entries are on disk.
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(error) => callback.log_io_completed(Err(std::io::Error::other(error.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        write(
            ErrorSubject::Logs,
            ErrorVerb::Delete,
            self.writer.truncate(log_id.index),
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        write(
            ErrorSubject::Logs,
            ErrorVerb::Delete,
            self.writer.purge(log_id),
        )
        .await
    }
}

/// The state machine half of the store.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    store: Arc<Store>,
    writer: StorageWriter,
    /// The `node_id` metric label.
    node_id: String,
}

impl StateMachineStore {
    pub fn new(store: Arc<Store>, writer: StorageWriter, node_id: u64) -> Self {
        StateMachineStore {
            store,
            writer,
            node_id: node_id.to_string(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, RaftStorageError> {
        let (meta, file) = blocking(
            &self.store,
            ErrorSubject::Snapshot(None),
            ErrorVerb::Write,
            |s| s.build_snapshot(),
        )
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        blocking(
            &self.store,
            ErrorSubject::StateMachine,
            ErrorVerb::Read,
            |s| s.applied_state(),
        )
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        timed(
            crate::metrics::STORAGE_APPLY_SECONDS,
            &self.node_id,
            write(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                self.writer.apply(entries),
            ),
        )
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, RaftStorageError> {
        let file = blocking(
            &self.store,
            ErrorSubject::Snapshot(None),
            ErrorVerb::Write,
            |s| s.snapshot_receive_file(),
        )
        .await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), RaftStorageError> {
        let file = snapshot.into_std().await;
        write(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
            self.writer.install_snapshot(meta.clone(), file),
        )
        .await
        .map(|_summary| ())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, RaftStorageError> {
        let current = blocking(
            &self.store,
            ErrorSubject::Snapshot(None),
            ErrorVerb::Read,
            |s| s.current_snapshot(),
        )
        .await?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
