//! StorageActor: the only writer of the node's redb file. Every write transaction arrives as a
//! typed message ([`StorageMsg`]: append, apply, vote, committed, truncate, purge, install a
//! snapshot, compact) and runs on the blocking pool, one at a time, in mailbox order; its
//! result goes back on the message's own channel. Reads do not come here: they open redb read
//! transactions on the shared store. [`StorageWriter`] is the typed handle the rest of the
//! node uses to send them: the actor publishes itself in it when it starts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;

use crate::actors::ActorKind;
use crate::command::{Entry, LogId, Response, SnapshotMeta, Vote};
use crate::fault::Faults;
use crate::storage::{Compaction, Error, SnapshotSummary, Store, StoreWrite};
use crate::sync::lock;

pub struct StorageActor;

pub struct StorageArgs {
    pub store: Arc<Store>,
    pub faults: Faults,
    /// Where the actor publishes itself once it runs.
    pub writer: StorageWriter,
}

pub struct StorageState {
    store: Arc<Store>,
    writer: StorageWriter,
}

/// Where a write's result goes.
type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Every write the store accepts. Each commits one transaction: `Append`, `SaveVote`,
/// `Truncate`, `Purge` and `InstallSnapshot` with fsync, `Apply` without (durable with the
/// next fsync'd commit); `SaveCommitted` is kept in memory and written by the next `Apply`;
/// `Compact` rewrites the file in place.
pub enum StorageMsg {
    /// Append Raft log entries.
    Append(Vec<Entry>, Reply<()>),
    /// Apply committed entries to the state machine; one response per entry.
    Apply(Vec<Entry>, Reply<Vec<Response>>),
    SaveVote(Vote, Reply<()>),
    SaveCommitted(Option<LogId>, Reply<()>),
    /// Delete the log from this index on (a conflicting suffix).
    Truncate(u64, Reply<()>),
    /// Delete the log up to and including this id (covered by a snapshot).
    Purge(LogId, Reply<()>),
    /// Replace the state machine with the snapshot in the file.
    InstallSnapshot(SnapshotMeta, std::fs::File, Reply<SnapshotSummary>),
    /// Reclaim the file's free space, waiting at most this long for open transactions.
    Compact(Duration, Reply<Compaction>),
    Ping(RpcReplyPort<()>),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

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
        *lock(&args.writer.actor) = Some(myself);
        Ok(StorageState {
            store: args.store,
            writer: args.writer,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StorageMsg>,
        state: &mut StorageState,
    ) -> Result<(), ActorProcessingErr> {
        lock(&state.writer.actor).take();
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
            // Kept in memory until the next apply writes it: no I/O, so no blocking thread.
            StorageMsg::SaveCommitted(committed, reply) => {
                let _ = reply.send(state.store.save_committed(committed.as_ref()));
                Ok(())
            }
            write => on_write(state, write).await,
        }
    }
}

/// Runs one write on the blocking pool: redb commits wait on fsync and must not hold a tokio
/// worker. A write that panics fails the actor, and the supervisor restarts storage.
async fn on_write(state: &StorageState, write: StorageMsg) -> Result<(), ActorProcessingErr> {
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || run(&store, write))
        .await
        .map_err(|e| format!("storage: write failed: {e}").into())
}

/// Commits `write` and sends its result (a caller that went away does not stop the commit).
fn run(store: &Store, write: StorageMsg) {
    match write {
        StorageMsg::Append(entries, reply) => {
            let _ = reply.send(store.append(&entries));
        }
        StorageMsg::Apply(entries, reply) => {
            let _ = reply.send(store.apply(&entries));
        }
        StorageMsg::SaveVote(vote, reply) => {
            let _ = reply.send(store.save_vote(&vote));
        }
        StorageMsg::Truncate(index, reply) => {
            let _ = reply.send(store.truncate(index));
        }
        StorageMsg::Purge(log_id, reply) => {
            let _ = reply.send(store.purge(&log_id));
        }
        StorageMsg::InstallSnapshot(meta, mut file, reply) => {
            let _ = reply.send(store.install_snapshot(&meta, &mut file));
        }
        StorageMsg::Compact(wait_for_open, reply) => {
            let _ = reply.send(store.compact(wait_for_open));
        }
        StorageMsg::Ping(_) | StorageMsg::Panic(_) | StorageMsg::SaveCommitted(..) => {
            unreachable!("answered in the handler")
        }
    }
}

/// The typed way to the StorageActor: each method queues its write behind every earlier one
/// and returns its result. Cheap to clone; reaches the current incarnation (the actor
/// publishes itself when it starts and withdraws when it stops; a failed one answers nothing,
/// so its writes fail, until its restart publishes the new one).
#[derive(Debug, Clone, Default)]
pub struct StorageWriter {
    actor: Arc<Mutex<Option<ActorRef<StorageMsg>>>>,
}

impl StorageWriter {
    pub async fn append(&self, entries: Vec<Entry>) -> Result<(), Error> {
        self.send(|reply| StorageMsg::Append(entries, reply)).await
    }

    pub async fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Response>, Error> {
        self.send(|reply| StorageMsg::Apply(entries, reply)).await
    }

    pub async fn save_vote(&self, vote: Vote) -> Result<(), Error> {
        self.send(|reply| StorageMsg::SaveVote(vote, reply)).await
    }

    pub async fn save_committed(&self, committed: Option<LogId>) -> Result<(), Error> {
        self.send(|reply| StorageMsg::SaveCommitted(committed, reply))
            .await
    }

    pub async fn truncate(&self, index: u64) -> Result<(), Error> {
        self.send(|reply| StorageMsg::Truncate(index, reply)).await
    }

    pub async fn purge(&self, log_id: LogId) -> Result<(), Error> {
        self.send(|reply| StorageMsg::Purge(log_id, reply)).await
    }

    pub async fn install_snapshot(
        &self,
        meta: SnapshotMeta,
        file: std::fs::File,
    ) -> Result<SnapshotSummary, Error> {
        self.send(|reply| StorageMsg::InstallSnapshot(meta, file, reply))
            .await
    }

    /// Reclaims the file's free space (see `Store`'s compaction); reads and writes stall
    /// while it runs.
    pub async fn compact(&self, wait_for_open: Duration) -> Result<Compaction, Error> {
        self.send(|reply| StorageMsg::Compact(wait_for_open, reply))
            .await
    }

    async fn send<T>(&self, message: impl FnOnce(Reply<T>) -> StorageMsg) -> Result<T, Error> {
        let actor = lock(&self.actor).clone().ok_or_else(stopped)?;
        let (tx, rx) = oneshot::channel();
        actor.cast(message(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::io(
        "the storage actor",
        std::io::Error::other("stopped before the write ran (it is restarting)"),
    )
}
