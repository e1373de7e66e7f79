//! StorageActor: the only writer of the node's redb file. Every write is a typed job
//! ([`WriteJob`]: append, apply, vote, committed, truncate, purge, install a snapshot,
//! compact) queued in order on the actor's queue, followed by a `StorageMsg::Drain`; the actor
//! runs what is queued on the blocking pool, one transaction at a time, merging each run of
//! appends and applies into one (split after a hash check entry), and sends each result on
//! the job's own channel once its transaction committed. Reads do not come here: they open redb read transactions on the
//! shared store. [`StorageWriter`] is the typed handle the rest of the node uses to send them:
//! the actor publishes itself in it when it starts. A write that fails with an I/O error (a
//! full or failing disk) ends the incarnation once every caller has its error; the supervisor
//! opens the database again before it starts the next one (redb refuses writes until then).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;

use crate::actors::ActorKind;
use crate::command::{Entry, LogId, Response, SnapshotMeta, Vote};
use crate::fault::Faults;
use crate::storage::{Compaction, Error, MergedStep, SnapshotSummary, Store, StoreWrite};
use crate::sync::lock;

pub struct StorageActor;

pub struct StorageArgs {
    pub store: Arc<Store>,
    pub faults: Faults,
    /// Where the actor publishes itself once it runs.
    pub writer: StorageWriter,
    /// The `node_id` metric label.
    pub node_id: u64,
}

pub struct StorageState {
    store: Arc<Store>,
    writer: StorageWriter,
    queue: Queue,
    /// Why this incarnation ended, set before it ends on an I/O error: the writes still
    /// queued, dropped with it, fail naming it.
    ended: Ended,
    node_label: String,
}

/// Why an incarnation ended (`None`: it has not, or it was stopped, killed or panicked).
type Ended = Arc<Mutex<Option<String>>>;

/// Where a write's result goes.
type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Every write the store accepts, queued in the writer's queue. Alone, each commits one
/// transaction: `Append`, `SaveVote`, `Truncate`, `Purge` and `InstallSnapshot` with fsync,
/// `Apply` without (durable with the next fsync'd commit); `Compact` rewrites the file in
/// place. Appends and applies queued one after the other share one transaction (see
/// [`StorageMsg::Drain`]). The committed log id is not a job: [`StorageWriter::save_committed`]
/// keeps it in memory and the next apply writes it.
pub enum WriteJob {
    /// Append Raft log entries; `true`: published first (`StorageWriter::append_published`).
    Append(Vec<Entry>, Reply<()>, bool),
    /// Apply committed entries to the state machine; one response per entry.
    Apply(Vec<Entry>, Reply<Vec<Response>>),
    SaveVote(Vote, Reply<()>),
    /// Delete the log from this index on (a conflicting suffix).
    Truncate(u64, Reply<()>),
    /// Delete the log up to and including this id (covered by a snapshot).
    Purge(LogId, Reply<()>),
    /// Replace the state machine with the snapshot in the file.
    InstallSnapshot(SnapshotMeta, std::fs::File, Reply<SnapshotSummary>),
    /// Reclaim the file's free space, waiting at most this long for open transactions.
    Compact(Duration, Reply<Compaction>),
}

pub enum StorageMsg {
    /// Run every write queued now, in order: each run of appends and applies commits as one
    /// transaction, fsync'd when it holds an append, and none of them is answered before that commit returns; any other write
    /// commits alone. Sent once per queued write; a drain that finds the queue empty does
    /// nothing.
    Drain,
    Ping(RpcReplyPort<()>),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

/// The writes queued for one incarnation of the actor. Its state holds the only strong
/// reference, so when the actor ends in any way (stopped, failed, killed: ractor runs no
/// `post_stop` for the last two) the queued writes are dropped with it and their callers get
/// "stopped"; the writer holds a weak one.
type Queue = Arc<Mutex<Vec<WriteJob>>>;

impl Actor for StorageActor {
    type Msg = StorageMsg;
    type State = StorageState;
    type Arguments = StorageArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StorageMsg>,
        args: StorageArgs,
    ) -> Result<StorageState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Storage)?;
        // Published entries still pinned belong to appends queued on an incarnation that
        // ended before running them: they will never commit.
        args.store
            .lose_published("the storage actor holding their append ended before it ran");
        let queue = Queue::default();
        let ended = Ended::default();
        *lock(&args.writer.actor) = Some((
            myself,
            Arc::downgrade(&queue),
            Arc::clone(&args.store),
            Arc::clone(&ended),
        ));
        Ok(StorageState {
            ended,
            store: args.store,
            writer: args.writer,
            queue,
            node_label: args.node_id.to_string(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StorageMsg>,
        state: &mut StorageState,
    ) -> Result<(), ActorProcessingErr> {
        // Withdraw only this incarnation (a newer one may have published itself already).
        let mut published = lock(&state.writer.actor);
        if published
            .as_ref()
            .is_some_and(|(_, queue, _, _)| queue.as_ptr() == Arc::as_ptr(&state.queue))
        {
            published.take();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<StorageMsg>,
        message: StorageMsg,
        state: &mut StorageState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StorageMsg::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            StorageMsg::Panic(reason) => panic!("storage: injected panic: {reason}"),
            StorageMsg::Drain => {
                let jobs = std::mem::take(&mut *lock(&state.queue));
                if jobs.is_empty() {
                    return Ok(());
                }
                // redb commits wait on fsync and must not hold a tokio worker. A write that
                // panics fails the actor, and the supervisor restarts storage.
                let store = Arc::clone(&state.store);
                let label = state.node_label.clone();
                let metrics = RunMetrics {
                    merged: metrics::histogram!(crate::metrics::STORAGE_MERGED_WRITES, "node_id" => label.clone()),
                    fsync: metrics::histogram!(crate::metrics::STORAGE_FSYNC_SECONDS, "node_id" => label),
                };
                let written = Arc::clone(&store);
                // Only while this incarnation lives: one killed (ractor runs nothing of it
                // then) must not write on behind its successor's back.
                let alive = Arc::downgrade(&state.queue);
                tokio::task::spawn_blocking(move || run(&written, jobs, &metrics, &alive))
                    .await
                    .map_err(|e| format!("storage: write failed: {e}"))?;
                if let Some(error) = store.io_error() {
                    // Every caller got its error. redb takes no write until the database is
                    // opened again: this incarnation ends, and the next reopens it.
                    *lock(&state.ended) = Some(error.clone());
                    return Err(format!(
                        "{error} (the database is opened again before storage restarts)"
                    )
                    .into());
                }
                Ok(())
            }
        }
    }
}

/// Commits `jobs` in order, merging each run of appends and applies, and sends each its
/// result (a caller that went away does not stop the commit). Stops once the incarnation
/// whose queue `alive` points to ended: the jobs left are dropped, and their callers hear
/// "stopped" (a transaction under way finishes first, holding redb's write lock, so nothing
/// of a successor's commits before it).
fn run(
    store: &Store,
    jobs: Vec<WriteJob>,
    metrics: &RunMetrics,
    alive: &std::sync::Weak<Mutex<Vec<WriteJob>>>,
) {
    let mut run: Vec<WriteJob> = Vec::new();
    for job in jobs {
        match job {
            WriteJob::Append(..) | WriteJob::Apply(..) => {
                run.push(job);
            }
            alone => {
                if alive.strong_count() == 0 {
                    return;
                }
                run_merged(store, std::mem::take(&mut run), metrics);
                if alive.strong_count() == 0 {
                    return;
                }
                run_alone(store, alone);
            }
        }
    }
    if alive.strong_count() > 0 {
        run_merged(store, run, metrics);
    }
}

/// What a drain records: jobs per merged run, and how long each run holding an append took to
/// commit (its fsync, for published appends and others alike).
struct RunMetrics {
    merged: metrics::Histogram,
    fsync: metrics::Histogram,
}

/// One transaction for a run of appends and applies (one more after each hash check entry).
fn run_merged(store: &Store, run: Vec<WriteJob>, metrics: &RunMetrics) {
    if run.is_empty() {
        return;
    }
    metrics.merged.record(run.len() as f64);
    let mut steps = Vec::with_capacity(run.len());
    for job in &run {
        steps.push(match job {
            WriteJob::Append(entries, _, false) => MergedStep::Append(entries),
            WriteJob::Append(entries, _, true) => MergedStep::AppendPublished(entries),
            WriteJob::Apply(entries, _) => MergedStep::Apply(entries),
            _ => unreachable!("only appends and applies are merged"),
        });
    }
    let appends = steps
        .iter()
        .any(|step| matches!(step, MergedStep::Append(_) | MergedStep::AppendPublished(_)));
    let started = std::time::Instant::now();
    let written = store.write_merged(&steps);
    if appends {
        metrics.fsync.record(started.elapsed().as_secs_f64());
    }
    let outputs: Vec<Result<Option<Vec<Response>>, Error>> = match written {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        Err(error) => {
            // Nothing was written, or (a hash check split the run) what came before the check
            // was: either way the node treats it as a storage failure and recovery reads the
            // file. The first caller gets the error itself, the others its text.
            let text = error.to_string();
            std::iter::once(Err(error))
                .chain(std::iter::repeat_with(|| {
                    Err(Error::io(
                        "a merged write",
                        std::io::Error::other(text.clone()),
                    ))
                }))
                .take(run.len())
                .collect()
        }
    };
    for (job, output) in run.into_iter().zip(outputs) {
        match job {
            WriteJob::Apply(_, reply) => {
                let _ = reply.send(output.map(Option::unwrap_or_default));
            }
            WriteJob::Append(_, reply, _) => {
                let _ = reply.send(output.map(drop));
            }
            _ => unreachable!("only appends and applies are merged"),
        }
    }
}

fn run_alone(store: &Store, job: WriteJob) {
    match job {
        WriteJob::SaveVote(vote, reply) => {
            let _ = reply.send(store.save_vote(&vote));
        }
        WriteJob::Truncate(index, reply) => {
            let _ = reply.send(store.truncate(index));
        }
        WriteJob::Purge(log_id, reply) => {
            let _ = reply.send(store.purge(&log_id));
        }
        WriteJob::InstallSnapshot(meta, mut file, reply) => {
            let _ = reply.send(store.install_snapshot(&meta, &mut file));
        }
        WriteJob::Compact(wait_for_open, reply) => {
            let _ = reply.send(store.compact(wait_for_open));
        }
        WriteJob::Append(..) | WriteJob::Apply(..) => {
            unreachable!("merged")
        }
    }
}

/// The typed way to the StorageActor: each method queues its write behind every earlier one
/// and returns its result. Cheap to clone; reaches the current incarnation (the actor
/// publishes itself when it starts and withdraws when it stops; a failed one answers nothing,
/// so its writes fail, until its restart publishes the new one).
#[derive(Clone, Default)]
pub struct StorageWriter {
    actor: Arc<Mutex<Option<Incarnation>>>,
}

/// The running actor, its queue (gone once the actor ended), its store, and why it ended.
type Incarnation = (
    ActorRef<StorageMsg>,
    std::sync::Weak<Mutex<Vec<WriteJob>>>,
    Arc<Store>,
    Ended,
);

impl std::fmt::Debug for StorageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageWriter")
            .field("running", &lock(&self.actor).is_some())
            .finish()
    }
}

impl StorageWriter {
    pub async fn append(&self, entries: Vec<Entry>) -> Result<(), Error> {
        self.send(|reply| WriteJob::Append(entries, reply, false))
            .await
    }

    /// Publishes a leader's entries (readable from now on: `storage::published`) and queues
    /// their append; returns once both are done. Nobody waits for the commit: a failed one
    /// marks the entries lost. Published and queued under the queue's lock, so entries
    /// publish in queue order.
    pub fn append_published(&self, entries: Vec<Entry>) -> Result<(), Error> {
        let (tx, _) = oneshot::channel();
        let published = lock(&self.actor);
        let (actor, queue, store, ended) = published.as_ref().ok_or_else(stopped)?;
        let queue = queue
            .upgrade()
            .ok_or_else(|| stopped_after_failure(store, ended))?;
        store.publish(&entries)?;
        lock(&queue).push(WriteJob::Append(entries, tx, true));
        if actor.cast(StorageMsg::Drain).is_err() {
            // Queued on an incarnation that is gone: its next one loses them at its start.
            return Err(stopped());
        }
        Ok(())
    }

    pub async fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Response>, Error> {
        self.send(|reply| WriteJob::Apply(entries, reply)).await
    }

    pub async fn save_vote(&self, vote: Vote) -> Result<(), Error> {
        self.send(|reply| WriteJob::SaveVote(vote, reply)).await
    }

    /// Records the committed log id, in memory: no commit and no trip through the queue (it
    /// lies on the path of every write's answer). The next apply writes it. Safe in any order
    /// against the applies still queued: openraft saves an id only after the entries up to it
    /// were appended with fsync on this node, so whichever commit writes it next, `committed
    /// <= last log index` holds there; and `last_applied <= committed` because ids only rise.
    pub fn save_committed(&self, committed: Option<LogId>) -> Result<(), Error> {
        let published = lock(&self.actor);
        let (_, queue, store, ended) = published.as_ref().ok_or_else(stopped)?;
        queue
            .upgrade()
            .ok_or_else(|| stopped_after_failure(store, ended))?;
        StoreWrite::save_committed(&**store, committed.as_ref())
    }

    pub async fn truncate(&self, index: u64) -> Result<(), Error> {
        self.send(|reply| WriteJob::Truncate(index, reply)).await
    }

    pub async fn purge(&self, log_id: LogId) -> Result<(), Error> {
        self.send(|reply| WriteJob::Purge(log_id, reply)).await
    }

    pub async fn install_snapshot(
        &self,
        meta: SnapshotMeta,
        file: std::fs::File,
    ) -> Result<SnapshotSummary, Error> {
        self.send(|reply| WriteJob::InstallSnapshot(meta, file, reply))
            .await
    }

    /// Reclaims the file's free space (see `Store`'s compaction); reads and writes stall
    /// while it runs.
    pub async fn compact(&self, wait_for_open: Duration) -> Result<Compaction, Error> {
        self.send(|reply| WriteJob::Compact(wait_for_open, reply))
            .await
    }

    /// Queues the write and wakes the actor; the write's result comes back on its channel.
    async fn send<T>(&self, job: impl FnOnce(Reply<T>) -> WriteJob) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let (store, ended) = {
            // Queued and woken under the lock, so writes queue in the order they were sent.
            let published = lock(&self.actor);
            let (actor, queue, store, ended) = published.as_ref().ok_or_else(stopped)?;
            let queue = queue
                .upgrade()
                .ok_or_else(|| stopped_after_failure(store, ended))?;
            lock(&queue).push(job(tx));
            actor.cast(StorageMsg::Drain).map_err(|_| stopped())?;
            (Arc::clone(store), Arc::clone(ended))
        };
        rx.await
            .map_err(|_| stopped_after_failure(&store, &ended))?
    }
}

/// A queued write dropped with its incarnation: names the failure that ended it, when known
/// (a lost published append, or the I/O error the incarnation ended on).
fn stopped_after_failure(store: &Store, ended: &Ended) -> Error {
    if let Err(lost) = store.refuse_if_published_lost() {
        return lost;
    }
    match lock(ended).clone().or_else(|| store.io_error()) {
        Some(failure) => Error::io(
            "the storage actor",
            std::io::Error::other(format!(
                "stopped before the write ran, after a write failed: {failure}"
            )),
        ),
        None => stopped(),
    }
}

fn stopped() -> Error {
    Error::io(
        "the storage actor",
        std::io::Error::other("stopped before the write ran (it is restarting)"),
    )
}
