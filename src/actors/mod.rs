//! The node's actors (ractor), one per file: `storage` (every write transaction Raft drives),
//! `raft` (owns `openraft::Raft`, reached through its `RaftHandle`, whose group-commit
//! proposer is `proposer`), `ttl` (leader-only expiry through Raft), `health` (periodic
//! checks), `sql` (read-only queries); and `raft_storage`,
//! openraft's storage traits as handles that send typed messages to the StorageActor
//! (`StorageWriter`). This file owns `ActorKind` (the children and their registered names)
//! and `Children` (the running children, kept by the supervisor). Actors talk through messages and those typed handles; they never name the
//! node, the supervisor or the net servers, and supervision decisions live in
//! `crate::supervisor`.

pub mod health;
mod proposer;
pub mod raft;
mod raft_error;
pub mod raft_storage;
mod read_barrier;
pub mod sql;
pub mod storage;
pub mod ttl;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ractor::{ActorCell, ActorRef};
use serde::Serialize;

/// The supervised children, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Storage,
    Raft,
    Ttl,
    Health,
    Sql,
}

impl ActorKind {
    pub const ALL: [ActorKind; 5] = [
        ActorKind::Storage,
        ActorKind::Raft,
        ActorKind::Ttl,
        ActorKind::Health,
        ActorKind::Sql,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Storage => "storage",
            ActorKind::Raft => "raft",
            ActorKind::Ttl => "ttl",
            ActorKind::Health => "health",
            ActorKind::Sql => "sql",
        }
    }

    /// The process-wide registered name of this actor on node `node_id` (ractor names are
    /// global, so several in-process nodes need the node id in them).
    pub fn name(self, node_id: u64) -> String {
        format!("aspen-{node_id}-{}", self.as_str())
    }
}

impl AsRef<str> for ActorKind {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node's running children, by kind: the supervisor inserts each child it starts and
/// removes each that stops, so a holder reaches the current incarnation after a restart
/// (the health checks ping through it). Cheap to clone; every clone sees the same map.
#[derive(Clone, Default)]
pub struct Children(Arc<Mutex<BTreeMap<ActorKind, ActorCell>>>);

impl Children {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ActorKind, ActorCell>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, kind: ActorKind, cell: ActorCell) {
        self.map().insert(kind, cell);
    }

    pub(crate) fn remove(&self, kind: ActorKind) -> Option<ActorCell> {
        self.map().remove(&kind)
    }

    pub fn contains(&self, kind: ActorKind) -> bool {
        self.map().contains_key(&kind)
    }

    /// The running child of `kind`, as a cell (kill, stop, identity).
    pub fn cell(&self, kind: ActorKind) -> Option<ActorCell> {
        self.map().get(&kind).cloned()
    }

    /// Which child `cell` is, if it is one of them.
    pub fn kind_of(&self, cell: &ActorCell) -> Option<ActorKind> {
        let id = cell.get_id();
        self.map()
            .iter()
            .find(|(_, child)| child.get_id() == id)
            .map(|(kind, _)| *kind)
    }

    /// The running child of `kind` typed by its message, if `M` is that actor's message type
    /// (`ActorKind::Raft` → `RaftMsg`, ...). A typed `ActorRef` sends without ractor's type
    /// check, so a wrong `M` gives `None` here rather than a reference that would misdeliver.
    pub fn get<M: ractor::Message>(&self, kind: ActorKind) -> Option<ActorRef<M>> {
        self.cell(kind)
            .filter(|cell| cell.is_message_type_of::<M>() == Some(true))
            .map(ActorRef::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl ractor::Actor for Echo {
        type Msg = u32;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<u32>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    // Proves a child is found by kind only with its own message type (a typed reference
    // skips ractor's check, so a wrong type must give nothing), and is gone once removed.
    #[tokio::test]
    async fn children_are_found_by_kind_and_message_type() {
        let (actor, handle) = ractor::Actor::spawn(None, Echo, ()).await.expect("spawn");
        let children = Children::default();
        children.insert(ActorKind::Ttl, actor.get_cell());
        assert!(children.get::<u32>(ActorKind::Ttl).is_some());
        assert!(children.get::<String>(ActorKind::Ttl).is_none());
        assert!(children.get::<u32>(ActorKind::Raft).is_none());
        assert_eq!(children.kind_of(&actor.get_cell()), Some(ActorKind::Ttl));
        assert!(children.clone().remove(ActorKind::Ttl).is_some());
        assert!(!children.contains(ActorKind::Ttl));
        actor.stop(None);
        handle.await.expect("stopped");
    }
}
