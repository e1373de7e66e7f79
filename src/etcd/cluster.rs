//! etcd's `Cluster` service (member list, add, promote, remove) from the node's cluster
//! status and membership changes. Member ids are Raft node ids; a member's peer URL is its
//! Aspen address in URL form (`http://ENDPOINT_ID@IP:PORT`).

use tonic::{Request, Response, Status};

use crate::api::{
    CLIENT_ALPN, ClientOp, ClientOutput, ClientRequest, ClientResponse, ClusterStatus, NodeAddress,
    NodeId,
};
use crate::etcd::proto::etcdserverpb::{self as pb, cluster_server::Cluster};
use crate::etcd::{EtcdPort, Gateway, unsupported};
use crate::limits::FRAME_BYTES_MAX;

impl<P: EtcdPort> Gateway<P> {
    pub(crate) async fn status_of_node(&self) -> Result<(ClusterStatus, u64), Status> {
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
                peer_ur_ls: vec![peer_url(&member.address)],
                client_ur_ls: Vec::new(),
                is_learner: !member.voter,
            })
            .collect();
        Ok((members, self.local_header(revision)))
    }

    /// Runs a membership change (forwarded to the leader), then lists the members once this
    /// node applied it (`applied` holds for the list): a follower learns the change after the
    /// leader, and etcd's clients read the new member from the answer.
    async fn change_members(
        &self,
        op: ClientOp,
        applied: impl Fn(&[pb::Member]) -> bool,
    ) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
        self.run(op).await?;
        let deadline = tokio::time::Instant::now() + self.service.request_timeout;
        loop {
            let (members, header) = self.members().await?;
            if applied(&members) {
                return Ok((members, header));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(
                    "the membership change was made, but this member did not apply it within \
                     the request timeout; list the members again",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The node id of the Aspen node listening at `address`, from its own status: etcd's
    /// MemberAdd names a member by its peer URLs only, and an Aspen node's id is in its config.
    async fn node_id_at(&self, address: &NodeAddress) -> Result<NodeId, Status> {
        let unreachable = |why: String| {
            Status::unavailable(format!(
                "cannot learn the node id of the new member at {address} (start it first, \
                 with its node id in its config): {why}"
            ))
        };
        let response: ClientResponse = self
            .service
            .connections
            .request(
                address,
                CLIENT_ALPN,
                &ClientRequest::new(ClientOp::Status),
                self.service.request_timeout,
                FRAME_BYTES_MAX,
            )
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        match response.result {
            Ok(ClientOutput::Status(status)) => Ok(status.node_id),
            Ok(_) => Err(unreachable("its status answered something else".into())),
            Err(error) => Err(unreachable(error.to_string())),
        }
    }
}

/// etcd's tools take only http(s) URLs: a member's peer URL is its Aspen address as one,
/// `http://ENDPOINT_ID@IP:PORT` (the traffic is QUIC all the same).
const PEER_URL_SCHEME: &str = "http://";

/// A member's Aspen address as its peer URL.
fn peer_url(address: &str) -> String {
    format!("{PEER_URL_SCHEME}{address}")
}

/// The Aspen address a MemberAdd's peer URL names: `http://ENDPOINT_ID@IP:PORT` (as
/// `etcdctl member list` shows it) or the bare address (as `aspen-node` prints it).
fn peer_address(peer_urls: &[String]) -> Result<NodeAddress, Status> {
    let invalid = |why: String| {
        Status::invalid_argument(format!("etcdserver: given member URLs are invalid ({why})"))
    };
    match peer_urls {
        [url] => {
            let address = [PEER_URL_SCHEME, "https://"]
                .iter()
                .find_map(|scheme| url.strip_prefix(scheme))
                .unwrap_or(url);
            address.trim_end_matches('/').parse().map_err(|error| {
                invalid(format!(
                    "{url:?}: an Aspen member's peer URL is its address as \
                     http://ENDPOINT_ID@IP:PORT: {error}"
                ))
            })
        }
        _ => Err(invalid(format!(
            "{} peer URLs: an Aspen member has one address",
            peer_urls.len()
        ))),
    }
}

#[tonic::async_trait]
impl<P: EtcdPort> Cluster for Gateway<P> {
    /// Adds the node listening at the peer URL, as a learner (`aspen cluster add-learner`,
    /// which returns once it has caught up), then promotes it unless a learner was asked for.
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let address = peer_address(&request.peer_ur_ls)?;
        // Membership changes are root's; checked before this node dials the address given.
        self.require_root("member add").await?;
        let (members, _) = self.members().await?;
        let text = address.to_string();
        let url = peer_url(&text);
        if members
            .iter()
            .any(|member| member.peer_ur_ls.contains(&url))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        let id = self.node_id_at(&address).await?;
        if members.iter().any(|member| member.id == id) {
            return Err(Status::failed_precondition(
                "etcdserver: member ID already exist",
            ));
        }
        let is = |learner: bool| {
            move |members: &[pb::Member]| {
                members
                    .iter()
                    .any(|m| m.id == id && m.is_learner == learner)
            }
        };
        let (mut members, mut header) = self
            .change_members(ClientOp::AddLearner { id, address: text }, is(true))
            .await?;
        if !request.is_learner {
            (members, header) = self
                .change_members(ClientOp::Promote { id }, is(false))
                .await?;
        }
        let member = members.iter().find(|member| member.id == id).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header,
            member,
            members,
        }))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unsupported(
            "MemberUpdate: a member's address holds its endpoint id, which its key fixes; to \
             move a member, remove it and add it back",
        ))
    }

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
        let gone = |members: &[pb::Member]| members.iter().all(|m| m.id != id);
        let (members, header) = self.change_members(ClientOp::Remove { id }, gone).await?;
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
        let voter = |members: &[pb::Member]| members.iter().any(|m| m.id == id && !m.is_learner);
        let (members, header) = self.change_members(ClientOp::Promote { id }, voter).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}
