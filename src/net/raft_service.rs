//! The receiving side of the Raft transport (ALPN `aspen/raft/1`, messages in
//! `crate::net::raft`): serves openraft's RPCs, one frame each way, each in turn on its stream,
//! to this node's Raft (and the leader's request for this node's hash at a hash check), reached
//! through the [`RaftPort`] this module declares (never the node or the actors). Connections
//! are accepted only from endpoint ids in the membership or in `net.peers`; anything else is
//! closed and logged. Every RPC is checked again, against the membership of that moment: the
//! node id it claims (the vote's leader or candidate) must be recorded with the connection's
//! endpoint id, so a member cannot speak for another node and a removed member's open
//! connection stops being served.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use openraft::Raft;

use crate::api::{HashKvError, KvHash, NodeId};
use crate::command::TypeConfig;
use crate::fault::NetFaults;
use crate::limits::{FRAME_BYTES_MAX, HASH_CHECK_WAIT_MS};
use crate::net::endpoint::NodeAddress;
use crate::net::frame::{FrameError, read_frame, write_frame};
use crate::net::raft::{RaftReply, RaftRpc};

/// QUIC application error code when a connection is refused.
const REFUSED: u32 = 1;

/// What the receiving side needs from the node: this node's running Raft instance.
pub trait RaftPort: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// The running instance; `None` while Raft starts or restarts.
    fn raft(&self) -> Option<Raft<TypeConfig>>;
    /// This node's hash at hash check `check`, waiting at most `wait` for it.
    fn kv_hash(
        &self,
        check: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<KvHash, HashKvError>> + Send;
}

/// The receiving side: serves RPCs from allowed peers to this node's Raft.
pub struct RaftService<P> {
    pub port: Arc<P>,
    /// Endpoint ids from `net.peers`, trusted before they appear in the membership.
    pub peers: HashSet<EndpointId>,
    pub faults: NetFaults,
    /// A snapshot received may grow to at most this many bytes (`storage.quota_bytes`: a
    /// state that fits the quota fits it); a chunk past it is refused.
    pub snapshot_bytes_max: u64,
}

impl<P> Clone for RaftService<P> {
    fn clone(&self) -> Self {
        RaftService {
            port: Arc::clone(&self.port),
            peers: self.peers.clone(),
            faults: self.faults.clone(),
            snapshot_bytes_max: self.snapshot_bytes_max,
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

    async fn serve(&self, remote: &EndpointId, rpc: RaftRpc) -> RaftReply {
        // A node isolated by fault injection (a process in a test) hears nothing either.
        if self.faults.is_isolated(self.port.node_id()) {
            return RaftReply::Refused("this node is isolated (fault injected)".into());
        }
        let Some(raft) = self.port.raft() else {
            return RaftReply::Refused("raft is not running on this node".into());
        };
        let claimed = rpc.sender();
        let verdict = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let members = || {
                membership
                    .nodes()
                    .map(|(id, node)| (*id, node.addr.as_str()))
            };
            sender_allowed(claimed, remote, members, &self.peers)
        };
        if let Err(reason) = verdict {
            tracing::warn!(node_id = self.port.node_id(), %remote, %reason, "net: refused a raft rpc");
            return RaftReply::Refused(reason.to_string());
        }
        match rpc {
            RaftRpc::AppendEntries(rpc) => RaftReply::AppendEntries(raft.append_entries(rpc).await),
            RaftRpc::Vote(rpc) => RaftReply::Vote(raft.vote(rpc).await),
            RaftRpc::InstallSnapshot(rpc) => {
                let (offset, len) = (rpc.offset, rpc.data.len() as u64);
                if let Err(reason) = snapshot_chunk_fits(offset, len, self.snapshot_bytes_max) {
                    tracing::warn!(node_id = self.port.node_id(), %remote, %reason, "net: refused a snapshot chunk");
                    return RaftReply::Refused(reason.to_string());
                }
                RaftReply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            RaftRpc::HashKv { check, wait_ms, .. } => {
                let wait = Duration::from_millis(wait_ms.min(HASH_CHECK_WAIT_MS));
                RaftReply::HashKv(self.port.kv_hash(check, wait).await)
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
            // A stream carries one RPC after another (a sender's `Session`), each answered
            // before the next is read, until the sender finishes it.
            tokio::spawn(async move {
                let mut first = true;
                loop {
                    let reply = match read_frame::<_, RaftRpc>(&mut recv, FRAME_BYTES_MAX).await {
                        Ok(rpc) => service.serve(&remote, rpc).await,
                        // The sender finished the stream after its last RPC (or dropped it:
                        // its caller gave up).
                        Err(FrameError::Truncated | FrameError::Io(_)) if !first => break,
                        Err(error) => {
                            tracing::warn!(%remote, %error, "net: bad raft frame");
                            let refused = RaftReply::Refused(error.to_string());
                            let _ = write_frame(&mut send, &refused, FRAME_BYTES_MAX).await;
                            break;
                        }
                    };
                    first = false;
                    if write_frame(&mut send, &reply, FRAME_BYTES_MAX)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = send.finish();
            });
        }
        Ok(())
    }
}

/// Whether the connection of endpoint `remote` may send an RPC as node `claimed`, given the
/// members (node id and address; `members` lists them anew on each call) and the `net.peers`
/// endpoints: a member's id only from its own endpoint; an id outside the membership only
/// from a configured peer that is not a member under another id (a node joining a cluster
/// hears from its leader before it learns the membership). Runs on every RPC, so the usual
/// case (a member speaking for itself) parses one address. The error names what did not match.
pub(crate) fn sender_allowed<'a, I: Iterator<Item = (NodeId, &'a str)>>(
    claimed: NodeId,
    remote: &EndpointId,
    members: impl Fn() -> I,
    peers: &HashSet<EndpointId>,
) -> Result<(), SenderRefused> {
    let endpoint_of = |address: &str| address.parse::<NodeAddress>().ok().map(|a| a.id);
    if let Some((_, address)) = members().find(|(id, _)| *id == claimed) {
        return match endpoint_of(address) {
            Some(endpoint) if endpoint == *remote => Ok(()),
            Some(recorded) => Err(SenderRefused::NotTheRecordedEndpoint {
                remote: *remote,
                claimed,
                recorded,
            }),
            None => Err(SenderRefused::NoValidAddress { claimed }),
        };
    }
    let remote_is = members()
        .filter(|(_, address)| endpoint_of(address) == Some(*remote))
        .map(|(id, _)| id)
        .next();
    match remote_is {
        Some(member) => Err(SenderRefused::OtherMember {
            remote: *remote,
            member,
            claimed,
        }),
        None if peers.contains(remote) => Ok(()),
        None => Err(SenderRefused::Stranger {
            remote: *remote,
            claimed,
        }),
    }
}

/// A snapshot chunk at `offset` of `len` bytes is refused when the snapshot would grow past
/// `max` bytes.
fn snapshot_chunk_fits(offset: u64, len: u64, max: u64) -> Result<(), SnapshotTooLarge> {
    match offset.checked_add(len) {
        Some(end) if end <= max => Ok(()),
        _ => Err(SnapshotTooLarge { offset, len, max }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a snapshot chunk of {len} bytes at offset {offset} would make the snapshot larger than {max} bytes (storage.quota_bytes)"
)]
struct SnapshotTooLarge {
    offset: u64,
    len: u64,
    max: u64,
}

/// Why a Raft RPC's sender may not speak for the node id it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SenderRefused {
    #[error(
        "endpoint {remote} sent an rpc as node {claimed}, which the membership records with endpoint {recorded}"
    )]
    NotTheRecordedEndpoint {
        remote: EndpointId,
        claimed: NodeId,
        recorded: EndpointId,
    },
    #[error("node {claimed} has no valid address in the membership; its rpcs are refused")]
    NoValidAddress { claimed: NodeId },
    #[error("endpoint {remote} is member node {member} but sent an rpc as node {claimed}")]
    OtherMember {
        remote: EndpointId,
        member: NodeId,
        claimed: NodeId,
    },
    #[error(
        "endpoint {remote} sent an rpc as node {claimed}, which is not a member, and is not in net.peers"
    )]
    Stranger { remote: EndpointId, claimed: NodeId },
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a received snapshot is capped: chunks up to the limit pass, one that would pass
    // it (or overflow the offset) is refused naming the sizes.
    #[test]
    fn snapshot_chunks_past_the_cap_are_refused() {
        assert_eq!(snapshot_chunk_fits(0, 100, 100), Ok(()));
        assert_eq!(snapshot_chunk_fits(90, 10, 100), Ok(()));
        let refused = snapshot_chunk_fits(95, 10, 100).unwrap_err();
        assert!(refused.to_string().contains("larger than 100 bytes"));
        assert!(snapshot_chunk_fits(u64::MAX, 1, u64::MAX).is_err());
    }

    fn endpoint(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    // Proves the binding of node ids to endpoint ids: a member speaks only for itself, a peer
    // from `net.peers` only for ids outside the membership, anyone else for nobody.
    #[test]
    fn a_sender_speaks_only_for_the_node_its_endpoint_is_recorded_for() {
        let (a, b, peer, outsider) = (endpoint(1), endpoint(2), endpoint(3), endpoint(4));
        let (a_address, b_address) = (format!("{a}@127.0.0.1:1"), format!("{b}@127.0.0.1:2"));
        let members = [
            (1, a_address.as_str()),
            (2, b_address.as_str()),
            (3, "not an address"),
        ];
        let peers = HashSet::from([peer, b]);
        let check =
            |claimed, remote| sender_allowed(claimed, &remote, || members.iter().copied(), &peers);
        assert_eq!(check(1, a), Ok(()));
        assert_eq!(check(2, b), Ok(()));
        // A member forging another member's id, or an id outside the membership.
        let forged = check(2, a).unwrap_err();
        assert!(
            matches!(forged, SenderRefused::NotTheRecordedEndpoint { recorded, .. } if recorded == b)
        );
        assert!(forged.to_string().contains("records with endpoint"));
        assert!(matches!(
            check(9, a),
            Err(SenderRefused::OtherMember { member: 1, .. })
        ));
        // In net.peers but a member under another id: the membership binding wins.
        assert!(matches!(
            check(9, b),
            Err(SenderRefused::OtherMember { member: 2, .. })
        ));
        // A configured peer may speak for a node the membership does not hold yet...
        assert_eq!(check(9, peer), Ok(()));
        // ...but not for a member.
        assert!(matches!(
            check(1, peer),
            Err(SenderRefused::NotTheRecordedEndpoint { .. })
        ));
        // A member whose address does not parse is refused, whoever claims it.
        assert_eq!(
            check(3, peer),
            Err(SenderRefused::NoValidAddress { claimed: 3 })
        );
        let stranger = check(9, outsider).unwrap_err();
        assert!(stranger.to_string().contains("not in net.peers"));
        assert!(check(1, outsider).is_err());
    }
}
