//! StorageActor: the only writer of the node's redb file. Every write transaction (log
//! appends, vote, committed, truncate, purge, apply, snapshot install) arrives as a job in its
//! mailbox and runs on the blocking pool, one at a time, in order. Reads do not come here: they
//! open redb read transactions on the shared store.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;

use crate::actors::{ActorKind, Faults};
use crate::storage::{Error, Store};

pub struct StorageActor;

pub struct StorageArgs {
    pub store: Arc<Store>,
    pub faults: Faults,
}

pub struct StorageState {
    store: Arc<Store>,
}

/// A write transaction to run against the store; it answers through its own channel.
pub type WriteJob = Box<dyn FnOnce(&Store) + Send>;

pub enum StorageMsg {
    Write(WriteJob),
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
        _myself: ActorRef<StorageMsg>,
        args: StorageArgs,
    ) -> Result<StorageState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Storage)?;
        Ok(StorageState { store: args.store })
    }

    async fn handle(
        &self,
        _myself: ActorRef<StorageMsg>,
        message: StorageMsg,
        state: &mut StorageState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StorageMsg::Write(job) => on_write(state, job).await,
            StorageMsg::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            StorageMsg::Panic(reason) => panic!("storage: injected panic: {reason}"),
        }
    }
}

/// Runs one job on the blocking pool: redb commits wait on fsync and must not hold a tokio
/// worker. A job that panics fails the actor, and the supervisor restarts storage.
async fn on_write(state: &StorageState, job: WriteJob) -> Result<(), ActorProcessingErr> {
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || job(&store))
        .await
        .map_err(|e| format!("storage: write job failed: {e}").into())
}

/// A cheap, cloneable way to run writes through the StorageActor and await their result.
#[derive(Debug, Clone)]
pub struct StorageWriter {
    actor: ActorRef<StorageMsg>,
}

impl StorageWriter {
    pub fn new(actor: ActorRef<StorageMsg>) -> Self {
        StorageWriter { actor }
    }

    /// Queues `write` behind every earlier write and returns its result.
    pub async fn run<T, F>(&self, write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |store| {
            let _ = tx.send(write(store));
        });
        self.actor
            .cast(StorageMsg::Write(job))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::io(
        "the storage actor",
        std::io::Error::other("stopped before the write ran (it is restarting)"),
    )
}
