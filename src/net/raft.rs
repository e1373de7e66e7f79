//! The Raft transport over ALPN `aspen/raft/1`, sending side: openraft's RPCs (AppendEntries,
//! Vote and InstallSnapshot, whose chunks openraft bounds by `raft.snapshot_chunk_bytes`) as
//! one frame each way, one RPC after another on a stream each openraft client keeps, and the
//! messages both sides speak; also the leader's
//! request for a member's hash at a hash check (`request_kv_hash`). The receiving side is
//! `crate::net::raft_service`.

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::api::{HashKvError, KvHash, NodeId};
use crate::command::{Entry, LogId, TypeConfig};
use crate::fault::NetFaults;
use crate::limits::{APPEND_ENTRIES_BYTES_MAX, FRAME_BYTES_MAX};
use crate::net::connections::{Connections, RequestError, Session};
use crate::net::endpoint::{AddressError, NodeAddress};
use crate::net::frame::FrameError;

pub const RAFT_ALPN: &[u8] = b"aspen/raft/1";

/// One Raft RPC as it travels (crate-visible for the server and the fuzz glue).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// The leader collecting a hash check (`crate::api::hashkv`): this member's hash at
    /// `check`, waiting at most `wait_ms` (capped at `HASH_CHECK_WAIT_MS`) for it.
    HashKv {
        from: NodeId,
        check: u64,
        wait_ms: u64,
    },
}

impl RaftRpc {
    /// The node the RPC speaks for: the leader of its vote (the candidate, for a vote), or
    /// the node collecting a hash check.
    pub(crate) fn sender(&self) -> NodeId {
        let vote = match self {
            RaftRpc::AppendEntries(rpc) => &rpc.vote,
            RaftRpc::Vote(rpc) => &rpc.vote,
            RaftRpc::InstallSnapshot(rpc) => &rpc.vote,
            RaftRpc::HashKv { from, .. } => return *from,
        };
        vote.leader_id().node_id
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The receiver could not serve the RPC (Raft not running, a bad frame).
    Refused(String),
    HashKv(Result<KvHash, HashKvError>),
}

/// Asks the member at `address` for its hash at `check` (sent as node `from`), waiting at
/// most `wait` for it to apply and hash the check.
pub async fn request_kv_hash(
    connections: &Connections,
    address: &NodeAddress,
    from: NodeId,
    check: u64,
    wait: Duration,
) -> Result<KvHash, HashKvError> {
    let rpc = RaftRpc::HashKv {
        from,
        check,
        wait_ms: wait.as_millis() as u64,
    };
    // The member answers "not applied" once `wait` passed; the extra second is the trip.
    let timeout = wait + Duration::from_secs(1);
    let reply = connections
        .request(address, RAFT_ALPN, &rpc, timeout, FRAME_BYTES_MAX)
        .await;
    match reply {
        Ok(RaftReply::HashKv(result)) => result,
        Ok(RaftReply::Refused(reason)) => Err(HashKvError::Unreachable(format!(
            "the member refused: {reason}"
        ))),
        Ok(_) => Err(HashKvError::Unreachable(
            "the member answered something else".into(),
        )),
        Err(error) => Err(HashKvError::Unreachable(error.to_string())),
    }
}

/// openraft's network factory over iroh.
#[derive(Debug, Clone)]
pub struct RaftTransport {
    pub node_id: NodeId,
    pub connections: Connections,
    pub faults: NetFaults,
    /// Where this node's log stops being known durable: no AppendEntries announces a commit
    /// at or past it (`storage::published`).
    pub flush_mark: crate::flush::FlushMark,
}

impl RaftNetworkFactory<TypeConfig> for RaftTransport {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> RaftPeer {
        RaftPeer {
            transport: self.clone(),
            target,
            address: node.addr.parse(),
            session: None,
        }
    }
}

/// The client side of the transport for one target.
#[derive(Debug)]
pub struct RaftPeer {
    transport: RaftTransport,
    target: NodeId,
    address: Result<NodeAddress, AddressError>,
    /// The stream this client's RPCs share: openraft never calls one client concurrently
    /// (replication, snapshots and each vote have a client of their own).
    session: Option<Session>,
}

impl RaftPeer {
    /// Sends `rpc` and reads its reply. `entries` is the number of log entries an
    /// AppendEntries carries: one that does not fit a frame is reported as `PayloadTooLarge`
    /// with half as many entries as the hint, so openraft retries with fewer.
    async fn call<E: std::error::Error>(
        &mut self,
        rpc: RaftRpc,
        entries: usize,
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
        let connections = &self.transport.connections;
        let reused = self.session.is_some();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent = connections
            .request_on(
                &mut self.session,
                address,
                RAFT_ALPN,
                &rpc,
                timeout,
                FRAME_BYTES_MAX,
            )
            .await;
        // A kept stream the receiver ended (it restarted, or answers one RPC per stream as
        // nodes before sessions did) fails the next RPC on it: Raft's RPCs may be sent twice,
        // so it goes once more on a new stream, within what is left of the timeout.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if reused && !left.is_zero() && matches!(sent, Err(RequestError::Stream { .. })) {
            sent = connections
                .request_on(
                    &mut self.session,
                    address,
                    RAFT_ALPN,
                    &rpc,
                    left,
                    FRAME_BYTES_MAX,
                )
                .await;
        }
        match sent {
            Ok(RaftReply::Refused(reason)) => Err(unreachable(format!(
                "net: node {} refused the rpc: {reason}",
                self.target
            ))),
            Ok(reply) => Ok(reply),
            Err(error @ RequestError::Connect { .. }) => Err(unreachable(error.to_string())),
            Err(RequestError::Frame(FrameError::TooLarge { .. })) if entries > 1 => {
                let hint = (entries / 2) as u64;
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ))
            }
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

/// The commit an AppendEntries may announce: `leader_commit`, or when that reaches entries
/// from `first_unflushed` on (this leader's published entries, not durable here yet), the last
/// id before them that the request names (its entries or `prev_log_id`), else none (followers
/// keep what they know; the next request announces the rest).
fn durable_commit(
    rpc: &AppendEntriesRequest<TypeConfig>,
    first_unflushed: Option<u64>,
) -> Option<LogId> {
    let first_unflushed = match (rpc.leader_commit, first_unflushed) {
        (Some(commit), Some(first)) if commit.index >= first => first,
        (commit, _) => return commit,
    };
    rpc.entries
        .iter()
        .rev()
        .map(|entry| entry.log_id)
        .chain(rpc.prev_log_id)
        .find(|id| id.index < first_unflushed)
}

/// How many leading entries fit in `budget` bytes of keys and values (at least one).
fn entries_within(entries: &[Entry], budget: usize) -> usize {
    let mut bytes = 0;
    for (count, entry) in entries.iter().enumerate() {
        if let openraft::EntryPayload::Normal(request) = &entry.payload {
            bytes += request.payload_bytes();
        }
        if bytes > budget {
            return count.max(1);
        }
    }
    entries.len()
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let commit = durable_commit(&rpc, self.transport.flush_mark.first_unflushed());
        if commit != rpc.leader_commit {
            self.transport.flush_mark.note_withheld();
            metrics::counter!(crate::metrics::RAFT_COMMITS_WITHHELD, "node_id" => self.transport.node_id.to_string())
                .increment(1);
            rpc.leader_commit = commit;
        }
        let entries = rpc.entries.len();
        let fitting = entries_within(&rpc.entries, APPEND_ENTRIES_BYTES_MAX);
        if fitting < entries {
            // Nothing sent: openraft retries at once with at most `fitting` entries (and keeps
            // the hint for the next few calls).
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting as u64),
            ));
        }
        match self
            .call(RaftRpc::AppendEntries(rpc), entries, option.hard_ttl())
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
            .call(RaftRpc::InstallSnapshot(rpc), 0, option.hard_ttl())
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
        match self.call(RaftRpc::Vote(rpc), 0, option.hard_ttl()).await? {
            RaftReply::Vote(reply) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}
