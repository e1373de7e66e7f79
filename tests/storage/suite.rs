//! openraft's own storage test suite, on the file store and on the in-memory store, through
//! the real path: handles that send every write to a StorageActor.

use aspen::actors::raft_storage::{LogStore, StateMachineStore};
use aspen::actors::storage::{StorageActor, StorageArgs, StorageMsg, StorageWriter};
use aspen::command::{RaftStorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use ractor::{Actor, ActorRef};

use crate::util::{Kind, TestStore, open};

struct Builder(Kind);

/// Keeps the store and its actor alive for one suite case; stops the actor after it.
struct Guard {
    _store: TestStore,
    actor: ActorRef<StorageMsg>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachineStore), RaftStorageError> {
        let test_store = open(self.0);
        let writer = StorageWriter::default();
        let args = StorageArgs {
            store: test_store.store.clone(),
            faults: Default::default(),
            writer: writer.clone(),
            node_id: 1,
        };
        let (actor, _) = Actor::spawn(None, StorageActor, args)
            .await
            .expect("storage actor");
        let log = LogStore::new(
            test_store.store.clone(),
            writer.clone(),
            1,
            Default::default(),
        );
        let sm = StateMachineStore::new(test_store.store.clone(), writer, 1);
        let guard = Guard {
            _store: test_store,
            actor,
        };
        Ok((guard, log, sm))
    }
}

// Proves the file store meets every contract openraft's Suite checks (log, vote, committed,
// apply responses, snapshot build/transfer/install), with writes through the StorageActor.
#[test]
fn openraft_suite_on_file_store() {
    Suite::test_all(Builder(Kind::File)).expect("suite");
}

// Proves the same for redb's in-memory backend: same code, other backend.
#[test]
fn openraft_suite_on_in_memory_store() {
    Suite::test_all(Builder(Kind::InMemory)).expect("suite");
}
