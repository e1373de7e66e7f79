//! The node's actors (ractor), one per file: `storage` (every write transaction Raft drives),
//! `raft` (owns `openraft::Raft`, reached through its `RaftHandle`, whose group-commit
//! proposer is `proposer`), `ttl` (leader-only expiry through Raft), `health` (periodic
//! checks), `sql` (read-only queries); and `raft_storage`,
//! openraft's storage traits as handles that send typed messages to the StorageActor
//! (`StorageWriter`). This file owns `ActorKind` (the children and their registered names)
//! and `lookup`. Actors talk through messages and those typed handles; they never name the
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

/// The running actor of `kind` on node `node_id`, found by its registered name (so callers
/// always reach the current incarnation after a restart).
pub fn lookup<M: ractor::Message>(kind: ActorKind, node_id: u64) -> Option<ractor::ActorRef<M>> {
    ractor::registry::where_is(kind.name(node_id)).map(ractor::ActorRef::from)
}
