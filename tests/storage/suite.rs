//! openraft's own storage test suite, on the file store and on the in-memory store.

use aspen::storage::{LogStore, RaftStorageError, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

use crate::util::{Kind, TestStore, open};

struct Builder(Kind);

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TestStore> for Builder {
    async fn build(&self) -> Result<(TestStore, LogStore, StateMachineStore), RaftStorageError> {
        let test_store = open(self.0);
        let log = LogStore::new(test_store.store.clone());
        let sm = StateMachineStore::new(test_store.store.clone());
        Ok((test_store, log, sm))
    }
}

// Proves the file store meets every contract openraft's Suite checks (log, vote, committed,
// apply responses, snapshot build/transfer/install).
#[test]
fn openraft_suite_on_file_store() {
    Suite::test_all(Builder(Kind::File)).expect("suite");
}

// Proves the same for redb's in-memory backend: same code, other backend.
#[test]
fn openraft_suite_on_in_memory_store() {
    Suite::test_all(Builder(Kind::InMemory)).expect("suite");
}
