//! etcd's `Cluster` (member list) and `Maintenance` (status) services from the node's
//! cluster status. Member ids are Raft node ids; a member's peer URL is its Aspen address.

use tonic::{Request, Response, Status};

use crate::api::{ClientOp, ClientOutput, ClusterStatus};
use crate::etcd::Gateway;
use crate::etcd::proto::etcdserverpb::{
    self as pb, cluster_server::Cluster, maintenance_server::Maintenance,
};
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
}

#[tonic::async_trait]
impl<P: ClientPort> Cluster for Gateway<P> {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
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
        Ok(Response::new(pb::MemberListResponse {
            header: self.local_header(revision),
            members,
        }))
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
}
