//! The client protocol on ALPN `aspen/client/1`: one [`ClientRequest`] frame and one
//! [`ClientResponse`] frame per stream (framing in `crate::net::frame`). Requests carry
//! [`PROTOCOL_VERSION`]; a node refuses other versions with [`ClientError::Version`].
//!
//! Compatibility: postcard encodes enum variants by position; add variants and fields at the
//! end only, and bump the version for anything else.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::auth::{AuthOp, AuthState, ClientId, Need, Perm, single_key};
use crate::api::error::CommandError;
use crate::api::hashkv::HashKvReport;
use crate::api::kv::{KeyRange, KeyValue, NodeId, Output, TxnOp, VaultInfo};
use crate::api::sql::SqlResult;
use crate::api::write::WriteOp;
use crate::limits::{HASH_CHECK_WAIT_MS, MEMBERS_MAX, SQL_TIMEOUT_MS_MAX};

pub const CLIENT_ALPN: &[u8] = b"aspen/client/1";
/// 2: requests carry `on_behalf_of`; the auth operations.
pub const PROTOCOL_VERSION: u16 = 2;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// Confirmed with a quorum by the leader first: sees every write acknowledged before it.
    #[default]
    Linearizable,
    /// This node's state machine as it is now: fast, possibly behind.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub version: u16,
    /// Set by a node forwarding to the leader: the receiver does not forward again.
    pub forwarded: bool,
    pub op: ClientOp,
    /// Set by a node forwarding to the leader: the client it forwards for. The receiver
    /// believes it only from a member's endpoint.
    pub on_behalf_of: Option<ClientId>,
}

impl ClientRequest {
    pub fn new(op: ClientOp) -> Self {
        ClientRequest {
            version: PROTOCOL_VERSION,
            forwarded: false,
            op,
            on_behalf_of: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    /// A write (put, delete, delete range, txn, lease grant, revoke and keepalive), proposed
    /// by the leader with its clock. The leader's housekeeping commands cannot be sent.
    Write(WriteOp),
    /// Keys in `range`, in key order, at most `limit` per page (0: the server's page limit).
    Range {
        range: KeyRange,
        limit: u32,
        keys_only: bool,
        /// Only count the keys; no entries come back.
        count_only: bool,
        consistency: Consistency,
    },
    LeaseList {
        consistency: Consistency,
    },
    /// Initialize this node as a member of a new cluster of `members` (id -> address). Sent to
    /// every member with the same list.
    ClusterInit {
        #[serde(deserialize_with = "crate::api::bounded::map::<_, _, _, MEMBERS_MAX>")]
        members: BTreeMap<NodeId, String>,
    },
    /// Add a non-voting member that receives the log (or a snapshot) until promoted.
    AddLearner {
        id: NodeId,
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        id: NodeId,
    },
    /// Remove a voter or a learner from the cluster.
    Remove {
        id: NodeId,
    },
    Status,
    /// A read-only SQL query over one snapshot of the state (`crate::sql`).
    Sql {
        query: String,
        consistency: Consistency,
    },
    /// Every vault with its metadata (read from the `vaults` table, no key scan).
    VaultList {
        consistency: Consistency,
    },
    /// Change the auth state (root only).
    Auth(AuthOp),
    /// The whole auth state (root only).
    AuthList {
        consistency: Consistency,
    },
    /// Who the node takes this client for, and its roles.
    WhoAmI,
    /// Compare the members' key spaces (root only; run by the leader): every member hashes
    /// its key space at one point of the log (`crate::api::hashkv`).
    HashKv,
    /// As `Range`, with the state as of `revision` (from the history: refused below the
    /// oldest revision kept and past the current one).
    RangeAt {
        range: KeyRange,
        limit: u32,
        keys_only: bool,
        count_only: bool,
        revision: u64,
        consistency: Consistency,
    },
    /// Stream the changes of `range` from revision `start_revision` (0: the next one) on this
    /// node, in revision order: the answer is a sequence of frames (`ClientOutput::Watch`)
    /// until the client closes the stream or the watch fails. Served by the node it reaches
    /// (never forwarded), from its applied state.
    Watch {
        range: KeyRange,
        start_revision: u64,
        options: crate::api::watch::WatchOptions,
    },
}

/// The keys a transaction reads and writes (both branches, nested transactions included).
fn txn_needs(txn: &crate::api::Txn, needs: &mut Vec<(KeyRange, Perm)>) {
    needs.extend(txn.compares.iter().map(|c| (c.keys(), Perm::Read)));
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put(put) => needs.push((single_key(&put.key), Perm::ReadWrite)),
            TxnOp::Delete { key, .. } => needs.push((single_key(key), Perm::ReadWrite)),
            TxnOp::Get { key } => needs.push((single_key(key), Perm::Read)),
            TxnOp::Range { range, .. } => needs.push((range.clone(), Perm::Read)),
            TxnOp::DeleteRange(range) | TxnOp::DeleteRangePrev(range) => {
                needs.push((range.clone(), Perm::ReadWrite));
            }
            TxnOp::Txn(inner) => txn_needs(inner, needs),
        }
    }
}

impl ClientOp {
    /// Whether the leader serves the operation (a follower would forward it): writes,
    /// linearizable reads and membership changes. A client sends these to the leader it knows.
    pub fn wants_leader(&self) -> bool {
        match self {
            ClientOp::Write(_)
            | ClientOp::Auth(_)
            | ClientOp::AddLearner { .. }
            | ClientOp::Promote { .. }
            | ClientOp::Remove { .. }
            | ClientOp::HashKv => true,
            ClientOp::Range { consistency, .. }
            | ClientOp::RangeAt { consistency, .. }
            | ClientOp::LeaseList { consistency }
            | ClientOp::Sql { consistency, .. }
            | ClientOp::VaultList { consistency }
            | ClientOp::AuthList { consistency } => *consistency == Consistency::Linearizable,
            ClientOp::ClusterInit { .. }
            | ClientOp::Status
            | ClientOp::WhoAmI
            | ClientOp::Watch { .. } => false,
        }
    }

    /// The consistency a read asks for (`None` for what is not a read of the state).
    pub fn consistency(&self) -> Option<Consistency> {
        match self {
            ClientOp::Range { consistency, .. }
            | ClientOp::RangeAt { consistency, .. }
            | ClientOp::LeaseList { consistency }
            | ClientOp::Sql { consistency, .. }
            | ClientOp::VaultList { consistency }
            | ClientOp::AuthList { consistency } => Some(*consistency),
            _ => None,
        }
    }

    /// Whether the operation changes nothing, so sending it twice is harmless.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            ClientOp::Range { .. }
                | ClientOp::RangeAt { .. }
                | ClientOp::LeaseList { .. }
                | ClientOp::Status
                | ClientOp::Sql { .. }
                | ClientOp::VaultList { .. }
                | ClientOp::AuthList { .. }
                | ClientOp::WhoAmI
                | ClientOp::HashKv
        )
    }

    /// What the operation needs of its client ([`crate::api::auth`]). Revoking a lease
    /// needs more than this says: the node also checks the keys attached to the lease.
    pub fn need(&self) -> Need {
        let keys = |ranges: Vec<(KeyRange, Perm)>| Need::Keys(ranges);
        match self {
            ClientOp::Write(WriteOp::Put(put)) => {
                keys(vec![(single_key(&put.key), Perm::ReadWrite)])
            }
            ClientOp::Write(WriteOp::Delete { key, .. }) => {
                keys(vec![(single_key(key), Perm::ReadWrite)])
            }
            ClientOp::Write(WriteOp::DeleteRange(range)) => {
                keys(vec![(range.clone(), Perm::ReadWrite)])
            }
            ClientOp::Write(WriteOp::Txn(txn)) => {
                let mut needs = Vec::new();
                txn_needs(txn, &mut needs);
                keys(needs)
            }
            ClientOp::Write(
                WriteOp::LeaseGrant { .. }
                | WriteOp::LeaseRevoke { .. }
                | WriteOp::LeaseKeepAlive { .. },
            )
            | ClientOp::LeaseList { .. } => Need::Known,
            ClientOp::Range { range, .. }
            | ClientOp::RangeAt { range, .. }
            | ClientOp::Watch { range, .. } => keys(vec![(range.clone(), Perm::Read)]),
            // What a query may see is narrowed to the client's prefixes where it runs.
            ClientOp::Sql { .. } | ClientOp::VaultList { .. } => Need::Known,
            // Only a node in no cluster yet takes it, and its sender becomes root.
            ClientOp::Status | ClientOp::WhoAmI | ClientOp::ClusterInit { .. } => Need::Nothing,
            ClientOp::AddLearner { .. }
            | ClientOp::Promote { .. }
            | ClientOp::Remove { .. }
            | ClientOp::Auth(_)
            | ClientOp::AuthList { .. }
            | ClientOp::HashKv
            | ClientOp::Write(WriteOp::Compact { .. }) => Need::Root,
        }
    }

    /// How much longer than an ordinary request the answer may take: a query may run up to
    /// the SQL timeout's ceiling, a hash check as long as the leader waits for the members.
    pub fn response_allowance(&self) -> Duration {
        match self {
            ClientOp::Sql { .. } => Duration::from_millis(SQL_TIMEOUT_MS_MAX),
            // The members' wait, their answers' trip (a second) and a connection to a member
            // that is down (the connect timeout, 2 s by default).
            ClientOp::HashKv => Duration::from_millis(HASH_CHECK_WAIT_MS + 5_000),
            _ => Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientResponse {
    /// The node that served the request (the leader when it was forwarded).
    pub served_by: NodeId,
    /// The leader as the serving node knows it.
    pub leader: Option<NodeId>,
    /// The cluster revision the answer reflects (after the write, for writes).
    pub revision: u64,
    pub result: Result<ClientOutput, ClientError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientOutput {
    /// What the state machine answered to a write.
    Write(Output),
    Range {
        kvs: Vec<KeyValue>,
        /// Where the next page starts, when the range holds more.
        continuation: Option<Vec<u8>>,
        /// Keys counted (`count_only`), else the entries in this page.
        count: u64,
    },
    Leases(Vec<LeaseSummary>),
    Status(ClusterStatus),
    /// A cluster operation finished.
    Done,
    Sql(SqlResult),
    Vaults(Vec<VaultInfo>),
    Auth(AuthState),
    WhoAmI(WhoAmI),
    HashKv(HashKvReport),
    /// A watch's events, whole revisions in order; none: a progress notification (every
    /// event up to the response's revision was delivered).
    Watch(Vec<crate::api::watch::WatchEvent>),
}

/// Who a node takes the client for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub id: ClientId,
    /// Its roles (empty for a client the cluster does not know).
    pub roles: Vec<String>,
    /// Whether the cluster knows the client.
    pub known: bool,
    /// Whether the serving node checks permissions at all (`auth.enabled`).
    pub auth_enabled: bool,
    /// Whether the cluster has a root client (as the serving node applied it).
    pub cluster_has_root: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    pub id: u64,
    pub ttl_ms: u64,
    pub remaining_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub address: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub members: Vec<Member>,
    /// What the node's process has used so far (Linux: from `/proc/self`; `None` elsewhere).
    pub process: Option<ProcessUsage>,
}

/// A node process's resource use, as `/proc/self/stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// User plus system CPU time of all its threads, in milliseconds.
    pub cpu_ms: u64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub address: String,
    pub voter: bool,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientError {
    #[error("protocol version {got} is not supported (this node speaks {supported})")]
    Version { got: u16, supported: u16 },
    #[error("malformed request frame: {0}")]
    BadFrame(String),
    #[error("request frame of {bytes} bytes exceeds the limit of {max}")]
    FrameTooLarge { bytes: u64, max: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The state machine refused the command; nothing changed.
    #[error("{0}")]
    Command(CommandError),
    /// No leader could take the request; it was not proposed, so retrying is safe.
    #[error("not leader (leader is {})", leader.map_or("unknown".to_string(), |id| format!("node {id}")))]
    NotLeader { leader: Option<NodeId> },
    /// The request may or may not have taken effect (timeout, lost leadership, node failing).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A membership change was refused.
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("storage: {0}")]
    Storage(String),
    /// The query was refused or failed (the message starts with `sql:`).
    #[error("{0}")]
    Sql(String),
    /// The client lacks a permission; nothing was done. The message names it.
    #[error("{0}")]
    Denied(String),
    /// The cluster has no root client yet (it records one moments after it forms): nothing
    /// was done, so retrying is safe, and the client library does.
    #[error("the cluster has no root client yet (it is being bootstrapped); nothing was done")]
    NoRootYet,
    /// The node already reads or serves `net.requests_max` requests: nothing was done, so
    /// retrying is safe, and the client library does.
    #[error("node busy: {max} requests in progress (net.requests_max); nothing was done")]
    Busy { max: u64 },
}
