//! etcd's `Cluster` (member list, promote, remove) and `Maintenance` (status, hash)
//! services from the node's cluster status and hash check. Member ids are Raft node ids; a
//! member's peer URL is its Aspen address.

use tonic::{Request, Response, Status};

use crate::api::{ClientOp, ClientOutput, ClusterStatus};
use crate::etcd::proto::etcdserverpb::{
    self as pb, cluster_server::Cluster, maintenance_server::Maintenance,
};
use crate::etcd::{Gateway, unsupported};
use crate::net::service::ClientPort;

/// The etcd API version Aspen answers as (`etcdctl endpoint status` prints it).
pub const ETCD_VERSION: &str = "3.4.0";

impl<P: ClientPort> Gateway<P> {
    async fn status_of_node(&self) -> Result<(ClusterStatus, u64), Status> {
        let answer = self.run(ClientOp::Status).await?;
        match answer.output {
            ClientOutput::Status(status) => Ok((status, answer.revision)),
            _ => Err(Status::internal("a status answered something else")),
        }
    }

    /// The members as etcd lists them, with the header of the status read.
    async fn members(&self) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
        let (status, revision) = self.status_of_node().await?;
        let members = status
            .members
            .into_iter()
            .map(|member| pb::Member {
                id: member.id,
                name: format!("node{}", member.id),
                peer_ur_ls: vec![member.address],
                client_ur_ls: Vec::new(),
                is_learner: !member.voter,
            })
            .collect();
        Ok((members, self.local_header(revision)))
    }

    /// Runs a membership change (forwarded to the leader), then lists the members.
    async fn change_members(
        &self,
        op: ClientOp,
    ) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
        self.run(op).await?;
        self.members().await
    }
}

#[tonic::async_trait]
impl<P: ClientPort> Cluster for Gateway<P> {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let (members, header) = self.members().await?;
        Ok(Response::new(pb::MemberListResponse { header, members }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        if !self.members().await?.0.iter().any(|member| member.id == id) {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        let (members, header) = self.change_members(ClientOp::Remove { id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let (members, _) = self.members().await?;
        // As etcd: only a learner is promoted.
        match members.iter().find(|member| member.id == id) {
            None => return Err(Status::not_found("etcdserver: member not found")),
            Some(member) if !member.is_learner => {
                return Err(Status::failed_precondition(
                    "etcdserver: can only promote a learner member",
                ));
            }
            Some(_) => {}
        }
        let (members, header) = self.change_members(ClientOp::Promote { id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}

#[tonic::async_trait]
impl<P: ClientPort> Maintenance for Gateway<P> {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (status, revision) = self.status_of_node().await?;
        let learner = status
            .members
            .iter()
            .any(|member| member.id == status.node_id && !member.voter);
        Ok(Response::new(pb::StatusResponse {
            header: self.header(revision, status.node_id),
            version: ETCD_VERSION.into(),
            db_size: 0,
            leader: status.leader.unwrap_or(0),
            raft_index: status.last_log_index.unwrap_or(0),
            raft_term: status.term,
            raft_applied_index: status.last_applied.unwrap_or(0),
            errors: Vec::new(),
            db_size_in_use: 0,
            is_learner: learner,
        }))
    }

    /// Aspen's hash check (`aspen cluster hashkv`: every member hashes its key space at one
    /// point of the log) answered with this member's hash, at the check's revision.
    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        if request.into_inner().revision > 0 {
            return Err(unsupported(
                "HashKV at a given revision (the hash is of the current state)",
            ));
        }
        let answer = self.run(ClientOp::HashKv).await?;
        let ClientOutput::HashKv(report) = answer.output else {
            return Err(Status::internal("a hash check answered something else"));
        };
        let me = self.port().node_id();
        let mine = report.members.into_iter().find(|member| member.id == me);
        match mine.map(|member| member.result) {
            Some(Ok(hash)) => Ok(Response::new(pb::HashKvResponse {
                header: self.header(hash.revision, me),
                hash: hash.hash,
                compact_revision: 0,
            })),
            Some(Err(error)) => Err(Status::unavailable(format!("hash check: {error}"))),
            None => Err(Status::unavailable(
                "hash check: this member was not part of it",
            )),
        }
    }
}
