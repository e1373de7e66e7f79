//! The Rust client: talks to any node of a cluster over the client protocol (iroh QUIC, ALPN
//! `aspen/client/1`). Nodes forward writes and linearizable reads to the leader themselves; the
//! client retries only where that is safe: every read, a write never sent (the connection failed),
//! and a write the cluster answered with "not leader" (it was never proposed). A write whose
//! outcome is unknown (a timeout, a broken stream) is returned as an error, never silently sent
//! twice. Requests the leader serves (writes, linearizable reads) go to the leader the last
//! answer named, when it is among the given nodes (learned from one status answer), so they
//! are not forwarded. With no live connection to the node it would try, the client dials every
//! given node at once and goes to the first that answers, so a dead node early in the list
//! costs nothing.
//!
//! Long because every operation a client can ask is one short method on `Client`, over one retry
//! loop.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod watch;

pub use watch::{WatchBatch, Watcher};

use crate::api::*;
use crate::limits::FRAME_BYTES_MAX;
use crate::net::connections::{Connections, RequestError};
use crate::net::endpoint::{AddressError, NodeAddress};

/// How long one request waits for its response, by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a connection attempt to one node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request keeps being retried (leader elections take a few election timeouts).
pub const RETRY_BUDGET: Duration = Duration::from_secs(10);
/// The environment variable naming the client key file.
pub const KEY_ENV: &str = "ASPEN_KEY";
/// The client key's place under the home directory.
pub const KEY_PATH_IN_HOME: &str = ".config/aspen/client.key";

/// Where the client key is: `ASPEN_KEY`, else `~/.config/aspen/client.key`.
pub fn default_key_path() -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(KEY_ENV).filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::Setup(format!(
                "no {KEY_ENV} and no HOME: name the client key file with {KEY_ENV}"
            ))
        })?;
    Ok(std::path::Path::new(&home).join(KEY_PATH_IN_HOME))
}

/// Reads the client key at `path` (32 bytes, mode 0600), creating it on first use. Its
/// endpoint id is the client's identity: what `aspen auth client add` names.
pub fn load_key(path: &std::path::Path) -> Result<iroh::SecretKey> {
    crate::net::endpoint::load_or_create_key_at(path)
        .map_err(|e| Error::Setup(format!("client key {}: {e}", path.display())))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster answered with an error.
    #[error("{0}")]
    Server(#[from] ClientError),
    /// The request could not be delivered or its answer was lost.
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("{0}")]
    Address(#[from] AddressError),
    #[error("client: {0}")]
    Setup(String),
    /// The node answered with an output that does not fit the request.
    #[error("client: unexpected answer: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The answer to a write, with the revision it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub revision: u64,
    pub output: Output,
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePage {
    pub revision: u64,
    pub kvs: Vec<KeyValue>,
    pub continuation: Option<Vec<u8>>,
    pub count: u64,
}

/// How to read a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many entries in all (0: no limit).
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
    pub consistency: Consistency,
    /// Read the state as of this revision (from the history; every page at it), instead of
    /// the current one.
    pub revision: Option<u64>,
}

impl RangeOptions {
    /// Every entry, read from the serving node's state as it is (possibly behind).
    pub fn stale() -> Self {
        RangeOptions {
            consistency: Consistency::Stale,
            ..RangeOptions::default()
        }
    }

    /// The request for one page of `range` read with these options.
    pub fn op(&self, range: KeyRange) -> ClientOp {
        let limit = self.limit.min(u32::MAX as u64) as u32;
        match self.revision {
            None => ClientOp::Range {
                range,
                limit,
                keys_only: self.keys_only,
                count_only: self.count_only,
                consistency: self.consistency,
            },
            Some(revision) => ClientOp::RangeAt {
                range,
                limit,
                keys_only: self.keys_only,
                count_only: self.count_only,
                revision,
                consistency: self.consistency,
            },
        }
    }
}

impl Default for RangeOptions {
    fn default() -> Self {
        RangeOptions {
            limit: 0,
            keys_only: false,
            count_only: false,
            consistency: Consistency::Linearizable,
            revision: None,
        }
    }
}

/// A granted or refreshed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub ttl_ms: u64,
    pub deadline_ms: u64,
}

/// A connection to a cluster through one or more of its nodes.
#[derive(Debug)]
pub struct Client {
    connections: Connections,
    nodes: Vec<NodeAddress>,
    /// The node tried first: the last one that answered, or the leader it named.
    preferred: AtomicUsize,
    /// Which of `nodes` each member is, from a status answer.
    members: Mutex<Members>,
    retry_budget: Duration,
    request_timeout: Duration,
}

/// Raft node id → index in `Client::nodes`, and when it was last learned.
#[derive(Debug, Default)]
struct Members {
    index_of: BTreeMap<NodeId, usize>,
    learned: Option<Instant>,
}

/// A leader the client cannot place is looked up again (one status request) at most this
/// often: membership changes are rare, and a leader outside the given nodes stays unplaced.
const MEMBERS_RELEARN: Duration = Duration::from_secs(1);

impl Client {
    /// A client for the nodes at `nodes` (any subset of the cluster), with the client key of
    /// [`default_key_path`] (created on first use). Connections open on first use.
    pub async fn connect(nodes: &[NodeAddress]) -> Result<Client> {
        let key = load_key(&default_key_path()?)?;
        Self::connect_with_key(key, nodes).await
    }

    /// A client for the nodes at `nodes` whose identity is `key`.
    pub async fn connect_with_key(key: iroh::SecretKey, nodes: &[NodeAddress]) -> Result<Client> {
        if nodes.is_empty() {
            return Err(Error::Setup("no node address given".into()));
        }
        let bind: std::net::SocketAddr = if nodes.iter().all(|n| n.socket.ip().is_loopback()) {
            ([127, 0, 0, 1], 0).into()
        } else {
            ([0, 0, 0, 0], 0).into()
        };
        let endpoint = crate::net::endpoint::bind(key, bind, Vec::new())
            .await
            .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Client {
            connections: Connections::new(endpoint, CONNECT_TIMEOUT),
            nodes: nodes.to_vec(),
            preferred: AtomicUsize::new(0),
            members: Mutex::default(),
            retry_budget: RETRY_BUDGET,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// Parses `ENDPOINT_ID@IP:PORT` addresses, then connects.
    pub async fn connect_str(nodes: &[&str]) -> Result<Client> {
        let nodes = nodes
            .iter()
            .map(|n| n.parse())
            .collect::<std::result::Result<Vec<NodeAddress>, _>>()?;
        Self::connect(&nodes).await
    }

    /// Try the node at `index` (of the addresses given to `connect`) first.
    pub fn prefer(self, index: usize) -> Self {
        self.preferred.store(index, Ordering::Relaxed);
        self
    }

    /// The node the next request goes to first: the last that answered, or the leader it named.
    pub fn preferred_node(&self) -> NodeAddress {
        self.nodes[self.preferred.load(Ordering::Relaxed) % self.nodes.len()]
    }

    /// Wait at most this long for each response (SQL queries get their timeout's ceiling on
    /// top). A request to a node that died unnoticed fails after it, its outcome unknown.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Wait at most this long for a connection to one node (default `CONNECT_TIMEOUT`).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connections = self.connections.with_connect_timeout(timeout);
        self
    }

    /// Retry for at most this long (0: never retry).
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sends one request to one node, without retries.
    pub async fn request_to(&self, node: &NodeAddress, op: ClientOp) -> Result<ClientResponse> {
        let timeout = self.request_timeout + op.response_allowance();
        Ok(self
            .connections
            .request(
                node,
                CLIENT_ALPN,
                &ClientRequest::new(op),
                timeout,
                FRAME_BYTES_MAX,
            )
            .await?)
    }

    /// Sends a request, retrying where it is safe (see the module docs) within the budget,
    /// moving to the next node when one cannot be reached.
    pub async fn request(&self, op: ClientOp) -> Result<ClientResponse> {
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        let mut delay = Duration::from_millis(20);
        loop {
            let mut index = self.preferred.load(Ordering::Relaxed) % self.nodes.len();
            if !self.connections.is_live(&self.nodes[index], CLIENT_ALPN)
                && let Some(reachable) = self.first_reachable(index).await
            {
                index = reachable;
                self.preferred.store(index, Ordering::Relaxed);
            }
            let node = self.nodes[index];
            let answer = self.request_to(&node, op.clone()).await;
            if let Ok(response) = &answer
                && op.wants_leader()
            {
                self.follow_leader(response.leader, index).await;
            }
            let error = match answer {
                Ok(response) => match response.result {
                    Err(
                        error @ (ClientError::NotLeader { .. }
                        | ClientError::NoRootYet
                        | ClientError::Busy { .. }),
                    ) => Error::Server(error),
                    Err(error @ ClientError::Unavailable(_)) if op.is_read() => {
                        Error::Server(error)
                    }
                    _ => return Ok(response),
                },
                Err(Error::Request(error)) if error.not_sent() || op.is_read() => {
                    // This node is out of reach: try the next one.
                    self.preferred.store(index + 1, Ordering::Relaxed);
                    Error::Request(error)
                }
                Err(error) => {
                    // The outcome is unknown, so no retry; the next request tries another
                    // node (this one may be gone).
                    if matches!(error, Error::Request(_)) {
                        self.preferred.store(index + 1, Ordering::Relaxed);
                    }
                    return Err(error);
                }
            };
            if tokio::time::Instant::now() + delay > deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Dials every given node at once and returns the first that answers (its connection is
    /// pooled). The dial to `preferred` runs to its end even when another node answers first,
    /// so its connection is pooled for the next request; the other slower dials are dropped.
    /// `None` when none answers.
    async fn first_reachable(&self, preferred: usize) -> Option<usize> {
        type Dial<'a> =
            std::pin::Pin<Box<dyn Future<Output = std::result::Result<usize, ()>> + Send + 'a>>;
        let (connections, node) = (self.connections.clone(), self.nodes[preferred]);
        let own = tokio::spawn(async move {
            connections
                .connection(&node, CLIENT_ALPN)
                .await
                .map(|_| preferred)
                .map_err(drop)
        });
        let mut dials: Vec<Dial<'_>> = vec![Box::pin(async move { own.await.map_err(drop)? })];
        for (index, node) in self.nodes.iter().enumerate() {
            if index != preferred {
                dials.push(Box::pin(async move {
                    self.connections
                        .connection(node, CLIENT_ALPN)
                        .await
                        .map(|_| index)
                        .map_err(drop)
                }));
            }
        }
        futures::future::select_ok(dials)
            .await
            .ok()
            .map(|(index, _)| index)
    }

    /// Whether a live connection to `node` is pooled now.
    pub fn is_connected(&self, node: &NodeAddress) -> bool {
        self.connections.is_live(node, CLIENT_ALPN)
    }

    /// Makes `leader` the preferred node when it is one of the given nodes (`asked` just
    /// answered). Learns which node is which from `asked`'s status the first time.
    async fn follow_leader(&self, leader: Option<NodeId>, asked: usize) {
        let Some(leader) = leader else { return };
        let (known, stale) = {
            let members = crate::sync::lock(&self.members);
            let stale = members
                .learned
                .is_none_or(|at| at.elapsed() >= MEMBERS_RELEARN);
            (members.index_of.get(&leader).copied(), stale)
        };
        let index = match known {
            Some(index) => Some(index),
            None if stale => self.learn_members(asked).await.get(&leader).copied(),
            None => None,
        };
        if let Some(index) = index {
            self.preferred.store(index, Ordering::Relaxed);
        }
    }

    /// Asks node `asked` for the membership and records which given node each member is.
    async fn learn_members(&self, asked: usize) -> BTreeMap<NodeId, usize> {
        let status = self.request_to(&self.nodes[asked], ClientOp::Status).await;
        let mut index_of = BTreeMap::new();
        if let Ok(ClientResponse {
            result: Ok(ClientOutput::Status(status)),
            ..
        }) = status
        {
            for member in &status.members {
                let Ok(address) = member.address.parse::<NodeAddress>() else {
                    continue;
                };
                // The given address the membership records, else one with its endpoint id (a
                // node may be given by another socket address than the one it records).
                let index = (self.nodes.iter().position(|n| *n == address))
                    .or_else(|| self.nodes.iter().position(|n| n.id == address.id));
                if let Some(index) = index {
                    index_of.insert(member.id, index);
                }
            }
        }
        let mut members = crate::sync::lock(&self.members);
        members.index_of = index_of.clone();
        members.learned = Some(Instant::now());
        index_of
    }

    async fn write(&self, op: WriteOp) -> Result<Written> {
        // The node checks too; checked here first, a refusal names the limit rather than a
        // frame the node would not decode (it refuses over-long lists unread).
        op.validate()
            .map_err(|e| Error::Server(ClientError::Command(e)))?;
        let response = self.request(ClientOp::Write(op)).await?;
        match response.result? {
            ClientOutput::Write(output) => Ok(Written {
                revision: response.revision,
                output,
            }),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<Written> {
        self.put_with(Put::new(key, value)).await
    }

    /// A put with every option (lease, TTL, previous entry).
    pub async fn put_with(&self, put: Put) -> Result<Written> {
        self.write(WriteOp::Put(put)).await
    }

    /// One key, read linearizably.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        self.get_with(key, Consistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: impl Into<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        let options = RangeOptions {
            limit: 1,
            consistency,
            ..RangeOptions::default()
        };
        let page = self
            .range_page(KeyRange::single(&key.into()), &options)
            .await?;
        Ok(page.kvs.into_iter().next())
    }

    /// One key as of `revision` (read linearizably, from the history).
    pub async fn get_at(&self, key: impl Into<Vec<u8>>, revision: u64) -> Result<Option<KeyValue>> {
        let options = RangeOptions {
            limit: 1,
            revision: Some(revision),
            ..RangeOptions::default()
        };
        let page = self
            .range_page(KeyRange::single(&key.into()), &options)
            .await?;
        Ok(page.kvs.into_iter().next())
    }

    /// Drops the history before `revision` (etcd's compaction; root only): reads from
    /// `revision` on still work. Not the database file's compaction (`aspen admin defrag`).
    pub async fn compact(&self, revision: u64) -> Result<Written> {
        self.write(WriteOp::Compact { revision }).await
    }

    /// One page of `range` (the server caps a page at `SCAN_ENTRIES_MAX` entries).
    pub async fn range_page(&self, range: KeyRange, options: &RangeOptions) -> Result<RangePage> {
        let response = self.request(options.op(range)).await?;
        match response.result? {
            ClientOutput::Range {
                kvs,
                continuation,
                count,
            } => Ok(RangePage {
                revision: response.revision,
                kvs,
                continuation,
                count,
            }),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// Every entry of `range` up to `options.limit`, following continuations. Pages after the
    /// first are read at their own revision (the revision returned is the first page's).
    pub async fn range(&self, range: KeyRange, options: &RangeOptions) -> Result<RangePage> {
        let mut all = self.range_page(range.clone(), options).await?;
        while let Some(next) = all.continuation.take() {
            if options.limit > 0 && all.kvs.len() as u64 >= options.limit {
                all.continuation = Some(next);
                break;
            }
            let remaining = RangeOptions {
                limit: if options.limit > 0 {
                    options.limit - all.kvs.len() as u64
                } else {
                    0
                },
                ..options.clone()
            };
            let page = self
                .range_page(
                    KeyRange {
                        start: next,
                        end: range.end.clone(),
                    },
                    &remaining,
                )
                .await?;
            all.kvs.extend(page.kvs);
            all.continuation = page.continuation;
        }
        if !options.count_only {
            all.count = all.kvs.len() as u64;
        }
        Ok(all)
    }

    /// Deletes one key; the output says how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<Written> {
        self.write(WriteOp::Delete {
            key: key.into(),
            prev_kv: false,
        })
        .await
    }

    pub async fn delete_range(&self, range: KeyRange) -> Result<Written> {
        self.write(WriteOp::DeleteRange(range)).await
    }

    pub async fn txn(&self, txn: Txn) -> Result<Written> {
        self.write(WriteOp::Txn(txn)).await
    }

    /// Grants a lease of `ttl_ms`; `id: 0` lets the cluster pick the id.
    pub async fn lease_grant(&self, id: u64, ttl_ms: u64) -> Result<Lease> {
        lease(self.write(WriteOp::LeaseGrant { id, ttl_ms }).await?)
    }

    /// Revokes a lease; answers how many keys it deleted.
    pub async fn lease_revoke(&self, id: u64) -> Result<u64> {
        match self.write(WriteOp::LeaseRevoke { id }).await?.output {
            Output::LeaseRevoke { keys_deleted } => Ok(keys_deleted),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn lease_keepalive(&self, id: u64) -> Result<Lease> {
        lease(self.write(WriteOp::LeaseKeepAlive { id }).await?)
    }

    pub async fn lease_list(&self) -> Result<Vec<LeaseSummary>> {
        let response = self
            .request(ClientOp::LeaseList {
                consistency: Consistency::Linearizable,
            })
            .await?;
        match response.result? {
            ClientOutput::Leases(leases) => Ok(leases),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// Every vault with its key count, bytes and created/updated revisions (linearizable).
    pub async fn vault_list(&self) -> Result<Vec<crate::api::VaultInfo>> {
        let op = ClientOp::VaultList {
            consistency: Consistency::Linearizable,
        };
        match self.request(op).await?.result? {
            ClientOutput::Vaults(vaults) => Ok(vaults),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// Initializes a new cluster of `members`: every member is told the same list. This
    /// client becomes the cluster's first root client: returns once a node says so (within
    /// the retry budget).
    pub async fn cluster_init(&self, members: &BTreeMap<NodeId, NodeAddress>) -> Result<()> {
        let list: BTreeMap<NodeId, String> = members
            .iter()
            .map(|(id, address)| (*id, address.to_string()))
            .collect();
        for address in members.values() {
            let op = ClientOp::ClusterInit {
                members: list.clone(),
            };
            done(self.request_to(address, op).await?)?;
        }
        self.wait_root().await
    }

    /// Waits (within the retry budget) until a node answers that this client is root, or
    /// that it does not check permissions.
    pub async fn wait_root(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        loop {
            let me = self.whoami().await?;
            if !me.auth_enabled || me.roles.iter().any(|r| r == ROOT_ROLE) {
                return Ok(());
            }
            // Root went to someone else: the node was not fresh (a restored backup keeps its
            // clients), or another client's init came first.
            if me.cluster_has_root {
                return Err(Error::Setup(format!(
                    "the cluster already has a root client, and client {} is not one (a \
                     restored backup keeps its clients: use one of its root keys)",
                    me.id
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Setup(format!(
                    "the cluster did not record client {} as root within {:?}",
                    me.id, self.retry_budget
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This client's identity: the endpoint id of its key.
    pub fn id(&self) -> ClientId {
        self.connections.endpoint().id()
    }

    /// Who the serving node takes this client for, with its roles.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        match self.request(ClientOp::WhoAmI).await?.result? {
            ClientOutput::WhoAmI(me) => Ok(me),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// Changes the auth state (root only).
    pub async fn auth(&self, op: AuthOp) -> Result<()> {
        done(self.request(ClientOp::Auth(op)).await?)
    }

    /// The whole auth state (root only; linearizable).
    pub async fn auth_list(&self) -> Result<AuthState> {
        let op = ClientOp::AuthList {
            consistency: Consistency::Linearizable,
        };
        match self.request(op).await?.result? {
            ClientOutput::Auth(state) => Ok(state),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// Adds `id` at `address` as a learner; returns once it has caught up with the leader.
    pub async fn add_learner(&self, id: NodeId, address: &NodeAddress) -> Result<()> {
        let op = ClientOp::AddLearner {
            id,
            address: address.to_string(),
        };
        done(self.request(op).await?)
    }

    pub async fn promote(&self, id: NodeId) -> Result<()> {
        done(self.request(ClientOp::Promote { id }).await?)
    }

    pub async fn remove(&self, id: NodeId) -> Result<()> {
        done(self.request(ClientOp::Remove { id }).await?)
    }

    /// The status of the first node that answers.
    pub async fn status(&self) -> Result<ClusterStatus> {
        status(self.request(ClientOp::Status).await?)
    }

    /// Compares the members' key spaces (root only): the leader has every member hash its
    /// key space at one point of the log (`crate::api::hashkv`).
    pub async fn hash_kv(&self) -> Result<crate::api::HashKvReport> {
        match self.request(ClientOp::HashKv).await?.result? {
            ClientOutput::HashKv(report) => Ok(report),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    /// The status of one node.
    pub async fn status_of(&self, node: &NodeAddress) -> Result<ClusterStatus> {
        status(self.request_to(node, ClientOp::Status).await?)
    }

    /// A read-only SQL query (linearizable: it sees every write acknowledged before it).
    pub async fn sql(&self, query: &str) -> Result<SqlResult> {
        self.sql_with(query, Consistency::Linearizable).await
    }

    pub async fn sql_with(&self, query: &str, consistency: Consistency) -> Result<SqlResult> {
        let op = ClientOp::Sql {
            query: query.to_string(),
            consistency,
        };
        match self.request(op).await?.result? {
            ClientOutput::Sql(result) => Ok(result),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }
}

fn lease(written: Written) -> Result<Lease> {
    match written.output {
        Output::Lease {
            id,
            ttl_ms,
            deadline_ms,
        } => Ok(Lease {
            id,
            ttl_ms,
            deadline_ms,
        }),
        other => Err(Error::Protocol(format!("{other:?}"))),
    }
}

fn done(response: ClientResponse) -> Result<()> {
    match response.result? {
        ClientOutput::Done => Ok(()),
        other => Err(Error::Protocol(format!("{other:?}"))),
    }
}

fn status(response: ClientResponse) -> Result<ClusterStatus> {
    match response.result? {
        ClientOutput::Status(status) => Ok(status),
        other => Err(Error::Protocol(format!("{other:?}"))),
    }
}
