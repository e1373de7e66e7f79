//! The node's actors (ractor), one per file: `storage` (the only redb writer), `raft` (owns
//! `openraft::Raft`), `ttl` (leader-only expiry through Raft), `health` (periodic checks),
//! `sql` (read-only queries);
//! and `raft_storage`, openraft's storage traits as handles that message the StorageActor.
//! Actors talk to each other only through messages; supervision decisions live in
//! `crate::supervisor`, not here.

pub mod health;
pub mod raft;
pub mod raft_storage;
pub mod sql;
pub mod storage;
pub mod ttl;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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

/// Faults armed by an operator or a test (`crate::testing`): the next start of an actor fails
/// in `pre_start`, or a health check reports critical. Empty in normal operation.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultSet>>,
    /// Link cuts between nodes, shared by every node of an in-process test cluster.
    pub net: crate::net::faults::NetFaults,
}

#[derive(Debug, Default)]
struct FaultSet {
    fail_next_start: HashSet<ActorKind>,
    critical_checks: HashSet<String>,
}

impl Faults {
    /// Faults of one node whose network faults are `net` (shared with its peers).
    pub fn with_net(net: crate::net::faults::NetFaults) -> Self {
        Faults {
            inner: Arc::default(),
            net,
        }
    }

    /// The next `pre_start` of `actor` returns an error (once).
    pub fn fail_next_start(&self, actor: ActorKind) {
        self.lock().fail_next_start.insert(actor);
    }

    /// Called by each actor's `pre_start`: consumes an armed start failure.
    pub fn take_start_failure(&self, actor: ActorKind) -> Result<(), ractor::ActorProcessingErr> {
        if self.lock().fail_next_start.remove(&actor) {
            return Err(format!("{actor}: start failure injected").into());
        }
        Ok(())
    }

    /// Health check `check` reports critical until cleared.
    pub fn force_critical(&self, check: &str, on: bool) {
        let mut set = self.lock();
        if on {
            set.critical_checks.insert(check.to_string());
        } else {
            set.critical_checks.remove(check);
        }
    }

    pub fn is_forced_critical(&self, check: &str) -> bool {
        self.lock().critical_checks.contains(check)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultSet> {
        // A panic while holding this lock cannot leave the sets half-updated.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
