//! Network: the HTTP endpoints (`http`) and the Raft transport. Never opens redb: it reads the
//! node through `crate::node::NodeShared` and reaches actors through messages.
//!
//! The iroh QUIC transport (Raft between nodes, the client protocol) arrives with the cluster
//! issue; until then `LocalOnly` is the Raft network of a single-member cluster.

pub mod http;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::storage::{NodeId, TypeConfig};

/// The Raft network of a node without a peer transport: a single-member cluster never sends an
/// RPC; if membership ever names another node, every RPC to it fails as unreachable.
#[derive(Debug, Clone, Default)]
pub struct LocalOnly;

/// The client of [`LocalOnly`] for one target.
#[derive(Debug)]
pub struct LocalOnlyClient {
    target: NodeId,
}

impl LocalOnlyClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
            "net: node {} is unreachable: this node has no peer transport",
            self.target
        ))))
    }
}

impl RaftNetworkFactory<TypeConfig> for LocalOnly {
    type Network = LocalOnlyClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> LocalOnlyClient {
        LocalOnlyClient { target }
    }
}

impl RaftNetwork<TypeConfig> for LocalOnlyClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
