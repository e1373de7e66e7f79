//! The receiving side of the Raft transport (ALPN `aspen/raft/1`, messages in
//! `crate::net::raft`): serves openraft's RPCs, one frame each way on one stream, to this
//! node's Raft, reached through the [`RaftPort`] this module declares (never the node or the
//! actors). Connections are accepted only from endpoint ids in the membership or in
//! `net.peers`; anything else is closed and logged.

use std::collections::HashSet;
use std::sync::Arc;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use openraft::Raft;

use crate::api::NodeId;
use crate::command::TypeConfig;
use crate::fault::NetFaults;
use crate::limits::FRAME_BYTES_MAX;
use crate::net::endpoint::NodeAddress;
use crate::net::frame::{read_frame, write_frame};
use crate::net::raft::{RaftReply, RaftRpc};

/// QUIC application error code when a connection is refused.
const REFUSED: u32 = 1;

/// What the receiving side needs from the node: this node's running Raft instance.
pub trait RaftPort: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// The running instance; `None` while Raft starts or restarts.
    fn raft(&self) -> Option<Raft<TypeConfig>>;
}

/// The receiving side: serves RPCs from allowed peers to this node's Raft.
pub struct RaftService<P> {
    pub port: Arc<P>,
    /// Endpoint ids from `net.peers`, trusted before they appear in the membership.
    pub peers: HashSet<EndpointId>,
    pub faults: NetFaults,
}

impl<P> Clone for RaftService<P> {
    fn clone(&self) -> Self {
        RaftService {
            port: Arc::clone(&self.port),
            peers: self.peers.clone(),
            faults: self.faults.clone(),
        }
    }
}

impl<P> std::fmt::Debug for RaftService<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService")
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl<P: RaftPort> RaftService<P> {
    /// Whether `remote` may send Raft RPCs: a member (voter or learner) or a configured peer.
    fn allowed(&self, remote: &EndpointId) -> bool {
        if self.peers.contains(remote) {
            return true;
        }
        self.port.raft().is_some_and(|raft| {
            raft.metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .filter_map(|(_, node)| node.addr.parse::<NodeAddress>().ok())
                .any(|address| address.id == *remote)
        })
    }

    async fn serve(&self, rpc: RaftRpc) -> RaftReply {
        // A node isolated by fault injection (a process in a test) hears nothing either.
        if self.faults.is_isolated(self.port.node_id()) {
            return RaftReply::Refused("this node is isolated (fault injected)".into());
        }
        let Some(raft) = self.port.raft() else {
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

impl<P: RaftPort> ProtocolHandler for RaftService<P> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        if !self.allowed(&remote) {
            tracing::warn!(
                node_id = self.port.node_id(),
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
