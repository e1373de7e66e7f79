//! Coalesced read barriers: one quorum round (openraft's `ensure_linearizable`: the leader
//! confirms it still leads with a heartbeat to a quorum, then waits until it has applied up to
//! the commit index it saw) answers every linearizable read that asked before the round
//! started. A read that asks while a round runs waits for the next one, which starts as soon
//! as the running one ends: it cannot use the running round, whose heartbeats may have left
//! before the read arrived. So N concurrent reads cost two rounds, not N.
//!
//! Owns the queue of waiting reads and the count of rounds; never proposes or reads data.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError as OpenraftError};
use tokio::sync::oneshot;

use crate::actors::raft_error::RaftError;
use crate::api::NodeId;
use crate::command::TypeConfig;
use crate::sync::lock;

/// The reads waiting for a round, and whether a round is running.
#[derive(Default)]
pub(crate) struct ReadRounds {
    queue: Mutex<Queue>,
    /// Rounds run since the node started.
    rounds: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<oneshot::Sender<Result<(), RaftError>>>,
    running: bool,
}

impl ReadRounds {
    /// Waits (at most `timeout`) for a round that started after this call, run on the
    /// instance `raft` returns when the round starts.
    pub(crate) async fn barrier(
        self: &Arc<Self>,
        raft: impl Fn() -> Option<Raft<TypeConfig>> + Send + 'static,
        node_id: NodeId,
        timeout: Duration,
    ) -> Result<(), RaftError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            queue.waiting.push(reply);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).run(raft, node_id.to_string(), timeout));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RaftError::NotRunning),
            Err(_) => Err(RaftError::Timeout(timeout.as_millis() as u64)),
        }
    }

    /// Rounds run so far.
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Runs rounds while reads wait: each takes every read queued when it starts.
    async fn run(
        self: Arc<Self>,
        raft: impl Fn() -> Option<Raft<TypeConfig>>,
        node_label: String,
        timeout: Duration,
    ) {
        loop {
            let readers = {
                let mut queue = lock(&self.queue);
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            self.rounds.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::READ_BARRIER_ROUNDS, "node_id" => node_label.clone())
                .increment(1);
            metrics::histogram!(crate::metrics::READ_BARRIER_READS, "node_id" => node_label.clone())
                .record(readers.len() as f64);
            let result = match raft() {
                Some(raft) => round(&raft, timeout).await,
                None => Err(RaftError::NotRunning),
            };
            for reader in readers {
                let _ = reader.send(result.clone());
            }
        }
    }
}

/// One quorum round.
async fn round(raft: &Raft<TypeConfig>, timeout: Duration) -> Result<(), RaftError> {
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(OpenraftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
            Err(RaftError::NotLeader {
                leader: forward.leader_id,
            })
        }
        Ok(Err(error)) => Err(RaftError::Unavailable(error.to_string())),
        Err(_) => Err(RaftError::Timeout(timeout.as_millis() as u64)),
    }
}
