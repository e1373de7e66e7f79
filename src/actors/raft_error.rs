//! Why a write, a read barrier or a snapshot through the `RaftHandle` failed, and how
//! openraft's write errors map onto it. Shared by the handle and its proposer.

use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError as OpenraftError};

use crate::api::NodeId;

/// Why a write, a read barrier or a snapshot failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    #[error("raft: not leader (leader is {})", leader.map_or("unknown".to_string(), |id| format!("node {id}")))]
    NotLeader { leader: Option<NodeId> },
    /// Raft is starting or restarting: nothing was proposed.
    #[error("raft: not running (it is starting or restarting)")]
    NotRunning,
    /// The outcome is unknown: the proposal may still commit.
    #[error("raft: no answer within {0} ms")]
    Timeout(u64),
    #[error("raft: {0}")]
    Unavailable(String),
}

/// `stopped_because`: why the node stopped this Raft instance, if it did (openraft itself
/// only says "stopped").
pub(super) fn write_error(
    error: OpenraftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    stopped_because: Option<String>,
) -> RaftError {
    match (error, stopped_because) {
        (OpenraftError::APIError(ClientWriteError::ForwardToLeader(forward)), _) => {
            RaftError::NotLeader {
                leader: forward.leader_id,
            }
        }
        (OpenraftError::Fatal(openraft::error::Fatal::Stopped), Some(because)) => {
            RaftError::Unavailable(format!("raft stopped because {because}"))
        }
        (other, _) => RaftError::Unavailable(other.to_string()),
    }
}
