//! The Raft transport over ALPN `aspen/raft/1`: openraft's RPCs (AppendEntries, Vote and
//! InstallSnapshot, whose chunks openraft bounds by `raft.snapshot_chunk_bytes`) as one frame
//! each way on one stream. Connections are accepted only from endpoint ids in the membership
//! or in `net.peers`; anything else is closed and logged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::limits::FRAME_BYTES_MAX;
use crate::net::connections::{Connections, RequestError};
use crate::net::endpoint::NodeAddress;
use crate::net::faults::NetFaults;
use crate::net::frame::{read_frame, write_frame};
use crate::node::NodeShared;
use crate::storage::{NodeId, TypeConfig};

pub const RAFT_ALPN: &[u8] = b"aspen/raft/1";

/// QUIC application error code when a connection is refused.
const REFUSED: u32 = 1;

/// One Raft RPC as it travels (crate-visible for the fuzz glue in `crate::fuzzing`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
enum RaftReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The receiver could not serve the RPC (Raft not running, a bad frame).
    Refused(String),
}

/// openraft's network factory over iroh.
#[derive(Debug, Clone)]
pub struct RaftTransport {
    pub node_id: NodeId,
    pub connections: Connections,
    pub faults: NetFaults,
}

impl RaftNetworkFactory<TypeConfig> for RaftTransport {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> RaftPeer {
        RaftPeer {
            transport: self.clone(),
            target,
            address: node
                .addr
                .parse()
                .map_err(|e: crate::net::endpoint::AddressError| e.to_string()),
        }
    }
}

/// The client side of the transport for one target.
#[derive(Debug)]
pub struct RaftPeer {
    transport: RaftTransport,
    target: NodeId,
    address: Result<NodeAddress, String>,
}

impl RaftPeer {
    async fn call<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Result<RaftReply, RPCError<NodeId, BasicNode, E>> {
        let unreachable = |reason: String| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)))
        };
        let address = self.address.as_ref().map_err(|e| {
            unreachable(format!(
                "net: node {} has no usable address: {e}",
                self.target
            ))
        })?;
        if self
            .transport
            .faults
            .is_cut(self.transport.node_id, self.target)
        {
            return Err(unreachable(format!(
                "net: link {} -> {} is cut (fault injected)",
                self.transport.node_id, self.target
            )));
        }
        match self
            .transport
            .connections
            .request(address, RAFT_ALPN, &rpc, timeout, FRAME_BYTES_MAX)
            .await
        {
            Ok(RaftReply::Refused(reason)) => Err(unreachable(format!(
                "net: node {} refused the rpc: {reason}",
                self.target
            ))),
            Ok(reply) => Ok(reply),
            Err(error @ RequestError::Connect { .. }) => Err(unreachable(error.to_string())),
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "net: node {} answered with the wrong reply kind",
            self.target
        ))))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(RaftRpc::AppendEntries(rpc), option.hard_ttl())
            .await?
        {
            RaftReply::AppendEntries(reply) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(RaftRpc::InstallSnapshot(rpc), option.hard_ttl())
            .await?
        {
            RaftReply::InstallSnapshot(reply) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(RaftRpc::Vote(rpc), option.hard_ttl()).await? {
            RaftReply::Vote(reply) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// The receiving side: serves RPCs from allowed peers to this node's Raft.
#[derive(Debug, Clone)]
pub struct RaftService {
    pub shared: Arc<NodeShared>,
    /// Endpoint ids from `net.peers`, trusted before they appear in the membership.
    pub peers: HashSet<EndpointId>,
    pub faults: NetFaults,
}

impl RaftService {
    /// Whether `remote` may send Raft RPCs: a member (voter or learner) or a configured peer.
    fn allowed(&self, remote: &EndpointId) -> bool {
        if self.peers.contains(remote) {
            return true;
        }
        self.shared
            .with_raft_metrics(|metrics| {
                metrics
                    .membership_config
                    .membership()
                    .nodes()
                    .filter_map(|(_, node)| node.addr.parse::<NodeAddress>().ok())
                    .any(|address| address.id == *remote)
            })
            .unwrap_or(false)
    }

    async fn serve(&self, rpc: RaftRpc) -> RaftReply {
        // A node isolated by fault injection (a process in a test) hears nothing either.
        if self.faults.is_isolated(self.shared.node_id) {
            return RaftReply::Refused("this node is isolated (fault injected)".into());
        }
        let Some(raft) = self.shared.raft() else {
            return RaftReply::Refused("raft is not running on this node".into());
        };
        match rpc {
            RaftRpc::AppendEntries(rpc) => RaftReply::AppendEntries(raft.append_entries(rpc).await),
            RaftRpc::Vote(rpc) => RaftReply::Vote(raft.vote(rpc).await),
            RaftRpc::InstallSnapshot(rpc) => {
                RaftReply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
        }
    }
}

impl ProtocolHandler for RaftService {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        if !self.allowed(&remote) {
            tracing::warn!(
                node_id = self.shared.node_id,
                %remote,
                "net: refused a raft connection from an endpoint outside the membership and net.peers"
            );
            conn.close(REFUSED.into(), b"not a member of this cluster");
            return Ok(());
        }
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let service = self.clone();
            tokio::spawn(async move {
                let reply = match read_frame::<_, RaftRpc>(&mut recv, FRAME_BYTES_MAX).await {
                    Ok(rpc) => service.serve(rpc).await,
                    Err(error) => {
                        tracing::warn!(%remote, %error, "net: bad raft frame");
                        RaftReply::Refused(error.to_string())
                    }
                };
                if write_frame(&mut send, &reply, FRAME_BYTES_MAX)
                    .await
                    .is_ok()
                {
                    let _ = send.finish();
                }
            });
        }
        Ok(())
    }
}
