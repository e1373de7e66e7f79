//! The node's side of the client protocol: `net::service` declares [`ClientPort`] and this
//! implements it with the node's parts: writes through the Raft handle
//! (`crate::actors::raft::RaftHandle`), reads from a fresh read transaction of the store
//! (pages cut to fit a frame), queries on the SqlActor, status and membership changes from
//! Raft. Every request is first checked against the replicated auth state for the client
//! that sent it (`node::auth`).

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ClientWriteError, RaftError as OpenraftError};
use openraft::{BasicNode, ChangeMembers};

use crate::actors::raft::RaftError;
use crate::api::auth::Need;
use crate::api::*;
use crate::command::Request;
use crate::limits::SCAN_ENTRIES_MAX;
use crate::net::service::{ClientPort, Failure, Served};
use crate::node::{NodeCore, NodeError};
use crate::storage::{ScanOptions, Store};

impl From<NodeError> for Failure {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Raft(RaftError::NotLeader { leader }) => Failure::Redirect(leader),
            NodeError::Raft(RaftError::NotRunning) => Failure::Redirect(None),
            NodeError::Command(error) => Failure::Error(ClientError::Command(error)),
            other => Failure::Error(ClientError::Unavailable(other.to_string())),
        }
    }
}

impl ClientPort for NodeCore {
    fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft.leader()
    }

    fn term(&self) -> u64 {
        self.raft.with_metrics(|m| m.current_term).unwrap_or(0)
    }

    fn member_address(&self, id: NodeId) -> Option<NodeAddress> {
        self.raft
            .with_metrics(|m| {
                let node = m.membership_config.membership().get_node(&id)?;
                node.addr.parse().ok()
            })
            .flatten()
    }

    fn is_stopping(&self) -> bool {
        NodeCore::is_stopping(self)
    }

    fn is_member_endpoint(&self, id: &ClientId) -> bool {
        self.raft
            .with_metrics(|m| {
                m.membership_config.membership().nodes().any(|(_, node)| {
                    node.addr
                        .parse::<NodeAddress>()
                        .is_ok_and(|address| address.id == *id)
                })
            })
            .unwrap_or(false)
    }

    async fn execute(&self, client: ClientId, op: &ClientOp) -> Served {
        // A read's barrier comes first: a linearizable read is then checked against every
        // permission change committed before it (a new leader may not have applied them yet).
        if let Some(consistency) = op.consistency() {
            self.barrier(consistency).await?;
        }
        let auth = match self.authorize(client, op).await {
            // A follower's copy may lag (a grant not yet applied here): what only the leader
            // serves goes there, and the leader's state decides.
            Err(Failure::Error(ClientError::Denied(_) | ClientError::NoRootYet))
                if op.wants_leader() && self.raft.leader() != Some(self.node_id) =>
            {
                return Err(Failure::Redirect(self.raft.leader()));
            }
            auth => auth?,
        };
        self.run(client, auth.as_deref(), op).await
    }

    async fn watch(
        &self,
        client: ClientId,
        op: &ClientOp,
    ) -> Result<tokio::sync::mpsc::Receiver<crate::node::watcher::WatchFrame>, ClientError> {
        let ClientOp::Watch {
            range,
            start_revision,
            options,
        } = op
        else {
            return Err(ClientError::BadRequest("not a watch".into()));
        };
        range
            .validate()
            .map_err(|e| ClientError::BadRequest(e.to_string()))?;
        match self.authorize(client, op).await {
            Ok(_) => {}
            Err(Failure::Error(error)) => return Err(error),
            Err(Failure::Redirect(_)) => {
                return Err(ClientError::Unavailable(
                    "this node cannot check the watch".into(),
                ));
            }
        }
        let hub = self
            .watch_hub
            .clone()
            .ok_or_else(|| ClientError::Unavailable("storage is not open".into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(crate::node::watcher::WATCH_BATCHES_QUEUED);
        tokio::spawn(crate::node::watcher::feed(
            hub,
            range.clone(),
            *start_revision,
            *options,
            tx,
            self.still_allowed(client, op),
        ));
        Ok(rx)
    }
}

impl NodeCore {
    /// Runs an authorized `op` (its read barrier already passed in `execute`).
    async fn run(&self, client: ClientId, auth: Option<&AuthState>, op: &ClientOp) -> Served {
        match op {
            ClientOp::Write(op) => self.write_op(op.clone()).await,
            ClientOp::Range {
                range,
                limit,
                keys_only,
                count_only,
                consistency: _,
            } => {
                let (range, limit, keys_only, count_only) =
                    (range.clone(), *limit, *keys_only, *count_only);
                self.read(move |store| read_range(store, range, limit, keys_only, count_only, None))
                    .await
            }
            ClientOp::RangeAt {
                range,
                limit,
                keys_only,
                count_only,
                revision,
                consistency: _,
            } => {
                let (range, limit, keys_only, count_only, revision) =
                    (range.clone(), *limit, *keys_only, *count_only, *revision);
                self.read(move |store| {
                    read_range(store, range, limit, keys_only, count_only, Some(revision))
                })
                .await
            }
            ClientOp::LeaseList { .. } => self.read(list_leases).await,
            // The client service runs a watch on its own stream (`ClientPort::watch`).
            ClientOp::Watch { .. } => Err(ClientError::BadRequest(
                "a watch is served on a stream of its own, not as one request".into(),
            )
            .into()),
            ClientOp::VaultList { .. } => {
                let readable = auth.map(|auth| (auth.clone(), client));
                self.read(move |store| {
                    let view = store.read(crate::clock::now_ms()).map_err(storage_error)?;
                    let mut vaults = view.vaults().map_err(storage_error)?;
                    // A client sees the vaults it may read.
                    if let Some((auth, client)) = readable {
                        vaults.retain(|vault| {
                            let mut prefix = crate::api::VAULT_PREFIX.to_vec();
                            prefix.extend_from_slice(vault.name.as_bytes());
                            prefix.push(b'/');
                            let need = Need::Keys(vec![(KeyRange::prefix(&prefix), Perm::Read)]);
                            auth.check(&client, &need).is_ok()
                        });
                    }
                    Ok((ClientOutput::Vaults(vaults), view.revision()))
                })
                .await
            }
            ClientOp::Status => Ok((ClientOutput::Status(self.cluster_status()?), 0)),
            ClientOp::Sql { query, .. } => {
                let readable = auth.and_then(|auth| auth.readable(&client));
                self.sql(query.clone(), readable).await
            }
            ClientOp::ClusterInit { members } => self.cluster_init(client, members).await,
            ClientOp::Auth(change) => {
                let response = self
                    .write(Request {
                        now_ms: crate::clock::now_ms(),
                        command: crate::command::Command::Auth(change.clone()),
                    })
                    .await?;
                match response.result {
                    Ok(_) => Ok((ClientOutput::Done, response.revision)),
                    Err(error) => Err(ClientError::Command(error).into()),
                }
            }
            ClientOp::AuthList { .. } => {
                let state = self.auth_state()?;
                Ok((ClientOutput::Auth((*state).clone()), 0))
            }
            ClientOp::WhoAmI => {
                let state = self.auth_state()?;
                let roles = state.clients.get(&client);
                Ok((
                    ClientOutput::WhoAmI(WhoAmI {
                        id: client,
                        roles: roles.into_iter().flatten().cloned().collect(),
                        known: roles.is_some(),
                        auth_enabled: self.auth_enabled,
                        cluster_has_root: state.has_root(),
                    }),
                    0,
                ))
            }
            ClientOp::HashKv => {
                let report = self.hash_check().await?;
                let revision = report.revision();
                Ok((ClientOutput::HashKv(report), revision))
            }
            ClientOp::AddLearner { id, address } => {
                let address: NodeAddress =
                    address.parse().map_err(|e: crate::api::AddressError| {
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
                    .raft
                    .with_metrics(|m| {
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

    async fn write_op(&self, op: WriteOp) -> Served {
        op.validate().map_err(ClientError::Command)?;
        let response = self
            .write(Request {
                now_ms: crate::clock::now_ms(),
                command: op.into(),
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
            Consistency::Linearizable => Ok(self.read_barrier().await?),
        }
    }

    /// Runs a read on the blocking pool against a fresh snapshot of the local store.
    async fn read(
        &self,
        read: impl FnOnce(&Store) -> Result<(ClientOutput, u64), ClientError> + Send + 'static,
    ) -> Served {
        let store = self
            .store
            .clone()
            .ok_or_else(|| ClientError::Unavailable("storage is not open".into()))?;
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| ClientError::Storage(format!("read task: {e}")))?
            .map_err(Failure::Error)
    }

    /// Runs a query on the SqlActor (it answers within the SQL timeout), seeing only the keys
    /// under `readable` when given.
    async fn sql(&self, sql: String, readable: Option<Vec<Vec<u8>>>) -> Served {
        let answer = self
            .sql
            .query(sql, readable)
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let result = answer.map_err(|e| ClientError::Sql(e.to_string()))?;
        let revision = result.revision;
        Ok((ClientOutput::Sql(result), revision))
    }

    fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let metrics = self
            .raft
            .metrics()
            .ok_or_else(|| ClientError::Unavailable("raft is not running".into()))?;
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        Ok(ClusterStatus {
            node_id: self.node_id,
            address: self.address.to_string(),
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
            process: process_usage(),
        })
    }

    /// Forms a new cluster; `client`, who asked, becomes root once the leader records it
    /// (only when this node was initialized by this request: a node that was already part of
    /// a cluster takes no root candidate from anyone).
    async fn cluster_init(&self, client: ClientId, members: &BTreeMap<NodeId, String>) -> Served {
        if !members.contains_key(&self.node_id) {
            return Err(ClientError::BadRequest(format!(
                "the member list does not include this node (node {})",
                self.node_id
            ))
            .into());
        }
        let mut nodes = BTreeMap::new();
        for (id, address) in members {
            let address: NodeAddress = address.parse().map_err(|e: crate::api::AddressError| {
                ClientError::BadRequest(format!("node {id}: {e}"))
            })?;
            nodes.insert(*id, BasicNode::new(address.to_string()));
        }
        let raft = self
            .raft
            .raft()
            .ok_or_else(|| ClientError::Unavailable("raft is not running".into()))?;
        let wanted: BTreeSet<NodeId> = nodes.keys().copied().collect();
        match raft.initialize(nodes).await {
            Ok(()) => {
                crate::sync::lock(&self.roots).insert(client);
                Ok((ClientOutput::Done, 0))
            }
            // Another member of the same list was initialized first and reached this node
            // (a vote or the log): the cluster is formed as asked.
            Err(error)
                if self
                    .raft
                    .with_metrics(|m| {
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
        F: FnOnce(openraft::Raft<crate::command::TypeConfig>) -> Fut,
        Fut: std::future::Future<
                Output = Result<(), OpenraftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
            >,
    {
        let raft = self.raft.raft().ok_or(Failure::Redirect(None))?;
        if self.leader() != Some(self.node_id) {
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
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        if self.leader() != Some(self.node_id) {
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
            self.raft
                .snapshot(true, self.request_timeout)
                .await
                .map_err(|e| ClientError::Cluster(e.to_string()))?;
        }
        Ok(())
    }
}

pub(super) fn storage_error(error: crate::storage::Error) -> ClientError {
    ClientError::Storage(error.to_string())
}

/// A page of `range` (or only its count), as of `revision` when given (from the history),
/// else as it is now.
fn read_range(
    store: &Store,
    range: KeyRange,
    limit: u32,
    keys_only: bool,
    count_only: bool,
    revision: Option<u64>,
) -> Result<(ClientOutput, u64), ClientError> {
    let view = store.read(crate::clock::now_ms()).map_err(storage_error)?;
    let page_of = |range: &KeyRange, options: ScanOptions| match revision {
        None => view.range(range, options).map_err(storage_error),
        Some(at) => view
            .range_at(range, options, at)
            .map_err(storage_error)?
            .map_err(ClientError::Command),
    };
    if count_only {
        let count = match revision {
            None => view.count(&range).map_err(storage_error)?,
            // Counted page by page: the history has no count of its own.
            Some(_) => {
                let (mut count, mut range) = (0u64, range);
                loop {
                    let options = ScanOptions {
                        limit: SCAN_ENTRIES_MAX,
                        keys_only: true,
                        bytes_max: usize::MAX,
                    };
                    let page = page_of(&range, options)?;
                    count += page.kvs.len() as u64;
                    match page.continuation {
                        Some(next) => range.start = next,
                        None => break count,
                    }
                }
            }
        };
        let output = ClientOutput::Range {
            kvs: Vec::new(),
            continuation: None,
            count,
        };
        return Ok((output, revision.unwrap_or(view.revision())));
    }
    let limit = match limit as usize {
        0 => SCAN_ENTRIES_MAX,
        n => n.min(SCAN_ENTRIES_MAX),
    };
    let options = ScanOptions {
        limit,
        keys_only,
        ..ScanOptions::default()
    };
    let page = page_of(&range, options)?;
    let output = ClientOutput::Range {
        count: page.kvs.len() as u64,
        kvs: page.kvs,
        continuation: page.continuation,
    };
    Ok((output, page.revision))
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

/// This process's CPU time and resident memory, from `/proc/self/stat` and `/proc/self/status`
/// (`None` where they cannot be read). Times in `stat` are in clock ticks of `USER_HZ`, which
/// Linux fixes at 100 per second on every architecture it reports them on.
fn process_usage() -> Option<ProcessUsage> {
    const TICK_MS: u64 = 10;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers,
    // counted here from field 3 (state): utime is field 14, stime 15.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(ProcessUsage {
        cpu_ms: (field(14)? + field(15)?) * TICK_MS,
        rss_bytes: rss_kib * 1024,
    })
}
