//! The client protocol's server side: any node takes any request. Writes and linearizable
//! reads are served by the leader (a follower forwards them once, over the client protocol);
//! stale reads and status are served locally. A malformed, oversized or wrong-version frame
//! gets an error response and ends that stream only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use openraft::error::{ClientWriteError, RaftError as OpenraftError};
use openraft::{BasicNode, ChangeMembers};

use crate::actors::raft::RaftError;
use crate::actors::sql::SqlMsg;
use crate::actors::{ActorKind, lookup};
use crate::limits::{FRAME_BYTES_MAX, SCAN_ENTRIES_MAX};
use crate::net::connections::Connections;
use crate::net::endpoint::NodeAddress;
use crate::net::faults::NetFaults;
use crate::net::frame::{FrameError, read_frame, write_frame};
use crate::net::proto::*;
use crate::node::{NodeError, NodeShared};
use crate::storage::{Command, KeyRange, NodeId, Request, ScanOptions, Store, vault_of};

/// A page of a range stops growing past this many bytes of keys and values (it always holds
/// at least one entry), so a response frame stays under `FRAME_BYTES_MAX`.
pub const PAGE_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;

/// Keys in slow-request log lines are cut to this many bytes.
const SLOW_LOG_KEY_BYTES: usize = 256;

/// QUIC stream error code sent when a request frame is refused unread.
const FRAME_REFUSED: u32 = 1;

#[derive(Debug, Clone)]
pub struct ClientService {
    pub shared: Arc<NodeShared>,
    pub connections: Connections,
    pub faults: NetFaults,
    pub request_timeout: Duration,
    /// Requests that take longer are logged (`net.slow_request_ms`).
    pub slow_request: Duration,
    /// Vault names used as metric labels so far; bounded (see `vault_label`).
    pub vault_labels: Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>,
    /// At most this many distinct vault labels (`storage.vaults_max`); others count as `_other`.
    pub vault_labels_max: usize,
}

/// A request this node cannot finish itself.
enum Failure {
    /// Only the leader can serve it; `None` when no leader is known.
    Redirect(Option<NodeId>),
    Error(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Error(error)
    }
}

impl From<NodeError> for Failure {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Raft(RaftError::NotLeader { leader }) => Failure::Redirect(leader),
            NodeError::NotRunning => Failure::Redirect(None),
            NodeError::Command(error) => Failure::Error(ClientError::Command(error)),
            other => Failure::Error(ClientError::Unavailable(other.to_string())),
        }
    }
}

type Served = Result<(ClientOutput, u64), Failure>;

impl ClientService {
    fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    fn leader(&self) -> Option<NodeId> {
        self.shared
            .with_raft_metrics(|m| m.current_leader)
            .flatten()
    }

    /// Serves one request, forwarding it to the leader once when only the leader can.
    pub async fn serve(&self, request: ClientRequest) -> ClientResponse {
        if request.version != PROTOCOL_VERSION {
            return self.respond(Err(ClientError::Version {
                got: request.version,
                supported: PROTOCOL_VERSION,
            }));
        }
        if self.shared.is_stopping() {
            // Not proposed: the client may retry on another node.
            return self.respond(Err(ClientError::NotLeader { leader: None }));
        }
        let started = std::time::Instant::now();
        let served = self.execute(&request.op).await;
        if !matches!(served, Err(Failure::Redirect(_))) {
            let revision = served.as_ref().map_or(0, |(_, revision)| *revision);
            self.observe(&request.op, started.elapsed(), revision);
        }
        match served {
            Ok((output, revision)) => ClientResponse {
                revision,
                ..self.respond(Ok(output))
            },
            Err(Failure::Error(error)) => self.respond(Err(error)),
            Err(Failure::Redirect(Some(leader)))
                if !request.forwarded && leader != self.node_id() =>
            {
                self.forward(leader, request).await
            }
            Err(Failure::Redirect(leader)) => self.respond(Err(ClientError::NotLeader { leader })),
        }
    }

    /// Counts the request per vault it touches and logs it when slow. Runs where the request
    /// was executed (not on a node that only forwarded it).
    fn observe(&self, op: &ClientOp, elapsed: Duration, revision: u64) {
        let (name, key) = op_subject(op);
        let node = self.node_id().to_string();
        for vault in vaults_touched(op) {
            metrics::counter!(crate::metrics::VAULT_OPERATIONS, "node_id" => node.clone(),
                "vault" => self.vault_label(vault), "op" => name)
            .increment(1);
        }
        if elapsed >= self.slow_request {
            let key = key.map_or(String::new(), |k| {
                String::from_utf8_lossy(&k[..k.len().min(SLOW_LOG_KEY_BYTES)]).into_owned()
            });
            let vault = op_subject(op)
                .1
                .and_then(vault_of)
                .map_or(String::new(), |v| String::from_utf8_lossy(v).into_owned());
            tracing::warn!(
                node_id = self.node_id(),
                op = name,
                key,
                vault,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                revision,
                "slow operation"
            );
        }
    }

    /// The metric label of a vault: its name, for the first `vault_labels_max` names this
    /// node saw; `_other` after that, so requests naming ever new vaults (refused ones
    /// included) cannot grow `/metrics` without bound.
    fn vault_label(&self, vault: &[u8]) -> String {
        let mut labels = self
            .vault_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if labels.contains(vault) || labels.len() < self.vault_labels_max {
            labels.insert(vault.to_vec());
            String::from_utf8_lossy(vault).into_owned()
        } else {
            "_other".into()
        }
    }

    fn respond(&self, result: Result<ClientOutput, ClientError>) -> ClientResponse {
        ClientResponse {
            served_by: self.node_id(),
            leader: self.leader(),
            revision: 0,
            result,
        }
    }

    async fn forward(&self, leader: NodeId, mut request: ClientRequest) -> ClientResponse {
        let not_leader = || {
            self.respond(Err(ClientError::NotLeader {
                leader: Some(leader),
            }))
        };
        let Some(address) = self.member_address(leader) else {
            return not_leader();
        };
        if self.faults.is_cut(self.node_id(), leader) {
            return not_leader();
        }
        request.forwarded = true;
        match self
            .connections
            .request::<_, ClientResponse>(
                &address,
                CLIENT_ALPN,
                &request,
                self.request_timeout + request.op.response_allowance(),
                FRAME_BYTES_MAX,
            )
            .await
        {
            Ok(response) => response,
            Err(error) if error.not_sent() => not_leader(),
            Err(error) => self.respond(Err(ClientError::Unavailable(format!(
                "forwarding to the leader (node {leader}): {error}"
            )))),
        }
    }

    fn member_address(&self, id: NodeId) -> Option<NodeAddress> {
        self.shared
            .with_raft_metrics(|m| {
                let node = m.membership_config.membership().get_node(&id)?;
                node.addr.parse().ok()
            })
            .flatten()
    }

    async fn execute(&self, op: &ClientOp) -> Served {
        match op {
            ClientOp::Write(Command::Expire { .. } | Command::SetVaultLimits(_)) => {
                Err(ClientError::BadRequest(
                    "Expire and SetVaultLimits are proposed by the leader's housekeeping (the TTL \
                     actor), not by clients"
                        .into(),
                )
                .into())
            }
            ClientOp::Write(command) => self.write(command.clone()).await,
            ClientOp::Range {
                range,
                limit,
                keys_only,
                count_only,
                consistency,
            } => {
                self.barrier(*consistency).await?;
                let (range, limit, keys_only, count_only) =
                    (range.clone(), *limit, *keys_only, *count_only);
                self.read(move |store| read_range(store, range, limit, keys_only, count_only))
                    .await
            }
            ClientOp::LeaseList { consistency } => {
                self.barrier(*consistency).await?;
                self.read(list_leases).await
            }
            ClientOp::VaultList { consistency } => {
                self.barrier(*consistency).await?;
                self.read(|store| {
                    let view = store.read(crate::clock::now_ms()).map_err(storage_error)?;
                    let vaults = view.vaults().map_err(storage_error)?;
                    Ok((ClientOutput::Vaults(vaults), view.revision()))
                })
                .await
            }
            ClientOp::Status => Ok((ClientOutput::Status(self.status()?), 0)),
            ClientOp::Sql { query, consistency } => {
                self.barrier(*consistency).await?;
                self.sql(query.clone()).await
            }
            ClientOp::ClusterInit { members } => self.cluster_init(members).await,
            ClientOp::AddLearner { id, address } => {
                let address: NodeAddress =
                    address
                        .parse()
                        .map_err(|e: crate::net::endpoint::AddressError| {
                            ClientError::BadRequest(e.to_string())
                        })?;
                let node = BasicNode::new(address.to_string());
                self.snapshot_restored_state().await?;
                self.change(
                    |raft| async move { raft.add_learner(*id, node, true).await.map(|_| ()) },
                )
                .await
            }
            ClientOp::Promote { id } => {
                let change = ChangeMembers::AddVoterIds(BTreeSet::from([*id]));
                self.change(|raft| async move {
                    raft.change_membership(change, false).await.map(|_| ())
                })
                .await
            }
            ClientOp::Remove { id } => {
                let voter = self
                    .shared
                    .with_raft_metrics(|m| {
                        m.membership_config
                            .membership()
                            .voter_ids()
                            .any(|v| v == *id)
                    })
                    .unwrap_or(false);
                let change = if voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([*id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
                };
                self.change(|raft| async move {
                    raft.change_membership(change, false).await.map(|_| ())
                })
                .await
            }
        }
    }

    async fn write(&self, command: Command) -> Served {
        command.validate().map_err(ClientError::Command)?;
        let response = self
            .shared
            .write(Request {
                now_ms: crate::clock::now_ms(),
                command,
            })
            .await?;
        match response.result {
            Ok(output) => Ok((ClientOutput::Write(output), response.revision)),
            Err(error) => Err(ClientError::Command(error).into()),
        }
    }

    async fn barrier(&self, consistency: Consistency) -> Result<(), Failure> {
        match consistency {
            Consistency::Stale => Ok(()),
            Consistency::Linearizable => Ok(self.shared.read_barrier().await?),
        }
    }

    /// Runs a read on the blocking pool against a fresh snapshot of the local store.
    async fn read(
        &self,
        read: impl FnOnce(&Store) -> Result<(ClientOutput, u64), ClientError> + Send + 'static,
    ) -> Served {
        let store = self
            .shared
            .store()
            .ok_or_else(|| ClientError::Unavailable("storage is not open".into()))?;
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| ClientError::Storage(format!("read task: {e}")))?
            .map_err(Failure::Error)
    }

    /// Runs a query on the SqlActor (it answers within the SQL timeout).
    async fn sql(&self, sql: String) -> Served {
        let actor = lookup::<SqlMsg>(ActorKind::Sql, self.node_id())
            .ok_or_else(|| ClientError::Unavailable("the sql actor is not running".into()))?;
        let answer = ractor::call!(actor, |reply| SqlMsg::Query { sql, reply })
            .map_err(|e| ClientError::Unavailable(format!("sql actor: {e}")))?;
        let result = answer.map_err(|e| ClientError::Sql(e.to_string()))?;
        let revision = result.revision;
        Ok((ClientOutput::Sql(result), revision))
    }

    fn status(&self) -> Result<ClusterStatus, ClientError> {
        let metrics = self
            .shared
            .raft_metrics()
            .ok_or_else(|| ClientError::Unavailable("raft is not running".into()))?;
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        Ok(ClusterStatus {
            node_id: self.node_id(),
            address: self
                .shared
                .address()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            members: membership
                .nodes()
                .map(|(id, node)| Member {
                    id: *id,
                    address: node.addr.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
        })
    }

    async fn cluster_init(&self, members: &BTreeMap<NodeId, String>) -> Served {
        if !members.contains_key(&self.node_id()) {
            return Err(ClientError::BadRequest(format!(
                "the member list does not include this node (node {})",
                self.node_id()
            ))
            .into());
        }
        let mut nodes = BTreeMap::new();
        for (id, address) in members {
            let address: NodeAddress =
                address
                    .parse()
                    .map_err(|e: crate::net::endpoint::AddressError| {
                        ClientError::BadRequest(format!("node {id}: {e}"))
                    })?;
            nodes.insert(*id, BasicNode::new(address.to_string()));
        }
        let raft = self
            .shared
            .raft()
            .ok_or_else(|| ClientError::Unavailable("raft is not running".into()))?;
        let wanted: BTreeSet<NodeId> = nodes.keys().copied().collect();
        match raft.initialize(nodes).await {
            Ok(()) => Ok((ClientOutput::Done, 0)),
            // Another member of the same list was initialized first and reached this node
            // (a vote or the log): the cluster is formed as asked.
            Err(error)
                if self
                    .shared
                    .with_raft_metrics(|m| {
                        let voters: BTreeSet<NodeId> =
                            m.membership_config.membership().voter_ids().collect();
                        // No log yet but a vote request from a trusted peer (members and
                        // net.peers only) counts too: its log follows.
                        voters == wanted || (voters.is_empty() && m.vote.leader_id().term > 0)
                    })
                    .unwrap_or(false) =>
            {
                tracing::info!(%error, "cluster init: already joined by another member");
                Ok((ClientOutput::Done, 0))
            }
            Err(error) => Err(ClientError::Cluster(error.to_string()).into()),
        }
    }

    /// Runs a membership change on this node's Raft; only the leader can.
    async fn change<F, Fut>(&self, change: F) -> Served
    where
        F: FnOnce(openraft::Raft<crate::storage::TypeConfig>) -> Fut,
        Fut: std::future::Future<
                Output = Result<(), OpenraftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
            >,
    {
        let raft = self.shared.raft().ok_or(Failure::Redirect(None))?;
        if self.leader() != Some(self.node_id()) {
            return Err(Failure::Redirect(self.leader()));
        }
        match change(raft).await {
            Ok(()) => Ok((ClientOutput::Done, 0)),
            Err(OpenraftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(Failure::Redirect(forward.leader_id))
            }
            Err(error) => Err(ClientError::Cluster(error.to_string()).into()),
        }
    }

    /// On a leader restored from a backup whose log was never purged: the state holds keys no
    /// log entry produced, so a learner replaying the log would miss them. Builds a snapshot
    /// and purges the whole log behind it, so the learner gets the state as a snapshot.
    async fn snapshot_restored_state(&self) -> Result<(), Failure> {
        let (Some(raft), Some(store)) = (self.shared.raft(), self.shared.store()) else {
            return Ok(());
        };
        if self.leader() != Some(self.node_id()) {
            return Ok(());
        }
        let fresh_restore = tokio::task::spawn_blocking(move || {
            let restored = store.read(0)?.restored_from()?;
            Ok::<_, crate::storage::Error>(restored.is_some() && store.log_state()?.0.is_none())
        })
        .await
        .map_err(|e| ClientError::Storage(e.to_string()))?
        .map_err(storage_error)?;
        if fresh_restore {
            crate::node::snapshot_now(&raft, true, self.request_timeout)
                .await
                .map_err(ClientError::Cluster)?;
        }
        Ok(())
    }

    async fn serve_stream(
        &self,
        mut send: iroh::endpoint::SendStream,
        mut recv: iroh::endpoint::RecvStream,
    ) {
        let response = match read_frame::<_, ClientRequest>(&mut recv, FRAME_BYTES_MAX).await {
            Ok(request) => self.serve(request).await,
            Err(FrameError::TooLarge { bytes, max }) => {
                let _ = recv.stop(FRAME_REFUSED.into());
                self.respond(Err(ClientError::FrameTooLarge { bytes, max }))
            }
            Err(error) => {
                let _ = recv.stop(FRAME_REFUSED.into());
                self.respond(Err(ClientError::BadFrame(error.to_string())))
            }
        };
        match write_frame(&mut send, &response, FRAME_BYTES_MAX).await {
            Ok(()) => {}
            Err(FrameError::TooLarge { bytes, max }) => {
                let too_large = self.respond(Err(ClientError::Storage(format!(
                    "response of {bytes} bytes exceeds the frame limit of {max}"
                ))));
                let _ = write_frame(&mut send, &too_large, FRAME_BYTES_MAX).await;
            }
            Err(_) => return,
        }
        let _ = send.finish();
        // Keep the stream until the peer has read the response (or gone away).
        let _ = send.stopped().await;
    }
}

impl ProtocolHandler for ClientService {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let service = self.clone();
            tokio::spawn(async move { service.serve_stream(send, recv).await });
        }
        Ok(())
    }
}

fn storage_error(error: crate::storage::Error) -> ClientError {
    ClientError::Storage(error.to_string())
}

fn read_range(
    store: &Store,
    range: KeyRange,
    limit: u32,
    keys_only: bool,
    count_only: bool,
) -> Result<(ClientOutput, u64), ClientError> {
    let view = store.read(crate::clock::now_ms()).map_err(storage_error)?;
    if count_only {
        let count = view.count(&range).map_err(storage_error)?;
        let output = ClientOutput::Range {
            kvs: Vec::new(),
            continuation: None,
            count,
        };
        return Ok((output, view.revision()));
    }
    let limit = match limit as usize {
        0 => SCAN_ENTRIES_MAX,
        n => n.min(SCAN_ENTRIES_MAX),
    };
    let mut page = view
        .range(&range, ScanOptions { limit, keys_only })
        .map_err(storage_error)?;
    let mut bytes = 0;
    if let Some(cut) = page.kvs.iter().position(|kv| {
        bytes += kv.key.len() + kv.value.len();
        bytes > PAGE_BYTES_MAX
    }) {
        let cut = cut.max(1);
        if cut < page.kvs.len() {
            page.continuation = Some(page.kvs[cut].key.clone());
            page.kvs.truncate(cut);
        }
    }
    let output = ClientOutput::Range {
        count: page.kvs.len() as u64,
        kvs: page.kvs,
        continuation: page.continuation,
    };
    Ok((output, page.revision))
}

/// The operation's name (a metric label and a log field) and the key it is about, if one.
fn op_subject(op: &ClientOp) -> (&'static str, Option<&[u8]>) {
    match op {
        ClientOp::Write(command) => match command {
            Command::Put(put) => ("put", Some(&put.key)),
            Command::Delete { key, .. } => ("delete", Some(key)),
            Command::DeleteRange(range) => ("delete_range", Some(&range.start)),
            Command::Txn(txn) => ("txn", txn_keys(txn).next()),
            Command::LeaseGrant { .. } => ("lease_grant", None),
            Command::LeaseRevoke { .. } => ("lease_revoke", None),
            Command::LeaseKeepAlive { .. } => ("lease_keepalive", None),
            Command::Expire { .. } => ("expire", None),
            Command::SetVaultLimits(_) => ("set_vault_limits", None),
        },
        ClientOp::Range { range, .. } => ("range", Some(&range.start)),
        ClientOp::LeaseList { .. } => ("lease_list", None),
        ClientOp::ClusterInit { .. } => ("cluster_init", None),
        ClientOp::AddLearner { .. } => ("add_learner", None),
        ClientOp::Promote { .. } => ("promote", None),
        ClientOp::Remove { .. } => ("remove", None),
        ClientOp::Status => ("status", None),
        ClientOp::Sql { .. } => ("sql", None),
        ClientOp::VaultList { .. } => ("vault_list", None),
    }
}

/// Every key a transaction names: compares, then its operations.
fn txn_keys(txn: &crate::storage::Txn) -> impl Iterator<Item = &[u8]> {
    use crate::storage::TxnOp;
    let compares = txn.compares.iter().map(|c| c.key.as_slice());
    let ops = txn.success.iter().chain(&txn.failure).map(|op| match op {
        TxnOp::Put(put) => put.key.as_slice(),
        TxnOp::Delete { key, .. } | TxnOp::Get { key } => key.as_slice(),
        TxnOp::DeleteRange(range) => range.start.as_slice(),
    });
    compares.chain(ops)
}

/// The vaults a request touches (a range counts for the vault its start is in).
fn vaults_touched(op: &ClientOp) -> BTreeSet<&[u8]> {
    match op {
        ClientOp::Write(Command::Txn(txn)) => txn_keys(txn).filter_map(vault_of).collect(),
        other => op_subject(other).1.and_then(vault_of).into_iter().collect(),
    }
}

fn list_leases(store: &Store) -> Result<(ClientOutput, u64), ClientError> {
    let now_ms = crate::clock::now_ms();
    let view = store.read(now_ms).map_err(storage_error)?;
    let leases = view
        .leases(0, SCAN_ENTRIES_MAX)
        .map_err(storage_error)?
        .into_iter()
        .map(|lease| LeaseSummary {
            id: lease.id,
            ttl_ms: lease.record.ttl_ms,
            remaining_ms: lease.record.deadline_ms.saturating_sub(now_ms),
        })
        .collect();
    Ok((ClientOutput::Leases(leases), view.revision()))
}
