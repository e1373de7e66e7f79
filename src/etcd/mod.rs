//! etcd v3's gRPC API over Aspen (docs/etcd.md): a tonic server on `etcd.address` whose
//! services (`kv`, `watch`, `lease`, `cluster`, `maintenance`, `auth`) turn each etcd call
//! into Aspen client operations and run them through the node's client service, as the
//! client protocol does (authorized as one Aspen client, forwarded to the leader where only it
//! can serve); the maintenance calls that act on one member (defragment, snapshot) use the
//! node's admin port, as `aspen admin` does. The messages and service traits are generated
//! from `proto/etcd/` (`scripts/etcd-proto.sh`).

pub mod auth;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod proto;
pub mod txn;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Status;

use crate::api::auth::ROOT_ROLE;
use crate::api::error::CommandError;
use crate::api::{ClientError, ClientId, ClientOp, ClientOutput, ClientRequest, KeyRange, NodeId};
use crate::net::admin::AdminPort;
use crate::net::service::{ClientPort, ClientService};
use proto::etcdserverpb::ResponseHeader;

/// What the etcd API needs of its node: the client service's port, the admin port (defragment
/// and snapshot act on the member that serves them, as etcd's do), and the alarms it knows of.
pub trait EtcdPort: ClientPort + AdminPort {
    /// The alarms this node knows of, as (member, alarm): its own quota alarm, and the
    /// members a hash check it ran (as the leader) found corrupt.
    fn alarms(&self) -> Vec<(NodeId, Alarm)>;
    /// The size of this node's database file in bytes (`None`: in memory, or not open).
    fn db_size(&self) -> Option<u64>;
}

/// etcd's alarm kinds that Aspen raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// The database file is at or over `storage.quota_bytes`: writes that add data are refused.
    NoSpace,
    /// A hash check found the member's key space differs from the other members'.
    Corrupt,
}

/// What every etcd service shares: the node's client service and whom it acts as.
pub struct Gateway<P> {
    service: ClientService<P>,
    /// The Aspen client etcd requests act as (`etcd.client_key`).
    client: ClientId,
    /// Becomes true when the node stops: streams (watch, keep-alive) end.
    stop: tokio::sync::watch::Receiver<bool>,
    /// How often an idle watch created with `progress_notify` hears its revision.
    progress_notify_ms: u64,
}

impl<P> Clone for Gateway<P> {
    fn clone(&self) -> Self {
        Gateway {
            service: self.service.clone(),
            client: self.client,
            stop: self.stop.clone(),
            progress_notify_ms: self.progress_notify_ms,
        }
    }
}

/// An answer of the node: output, the revision it reflects, and the member that served it.
pub(crate) struct Answer {
    pub(crate) output: ClientOutput,
    pub(crate) revision: u64,
    pub(crate) served_by: u64,
}

impl<P: EtcdPort> Gateway<P> {
    /// Resolves once the node stops.
    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// Runs `op` as the gateway's client (forwarded to the leader when only it can serve).
    pub(crate) async fn run(&self, op: ClientOp) -> Result<Answer, Status> {
        match self.serve(op).await {
            Ok(answer) => Ok(answer),
            Err(error) => Err(status(&error)),
        }
    }

    /// Serves `op`, waiting out (within the request timeout) what says it was not proposed
    /// and may pass: no leader yet (an election), a busy node, no root yet. etcd's server
    /// waits for a leader likewise instead of failing at once, and etcd's clients do not all
    /// retry. Anything else (an answer that may have been applied included) is returned.
    pub(crate) async fn serve(&self, op: ClientOp) -> Result<Answer, ClientError> {
        let deadline = tokio::time::Instant::now() + self.service.request_timeout;
        let mut delay = std::time::Duration::from_millis(10);
        loop {
            let response = self
                .service
                .serve(self.client, ClientRequest::new(op.clone()))
                .await;
            match response.result {
                Ok(output) => {
                    return Ok(Answer {
                        output,
                        revision: response.revision,
                        served_by: response.served_by,
                    });
                }
                Err(
                    ClientError::NotLeader { .. }
                    | ClientError::Busy { .. }
                    | ClientError::NoRootYet,
                ) if tokio::time::Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_millis(200));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Runs a write: the state machine's output, the revision after it and the member that
    /// served it; refusals as Aspen's errors (the lease calls answer some of them their own
    /// way).
    pub(crate) async fn write_op(
        &self,
        op: crate::api::WriteOp,
    ) -> Result<(crate::api::Output, u64, u64), ClientError> {
        let answer = self.serve(ClientOp::Write(op)).await?;
        match answer.output {
            ClientOutput::Write(output) => Ok((output, answer.revision, answer.served_by)),
            _ => Err(ClientError::Storage(
                "a write answered something else".into(),
            )),
        }
    }

    /// etcd's response header: Aspen has one cluster-wide revision, and member ids are
    /// Raft node ids. Aspen keeps no cluster id: 0.
    pub(crate) fn header(&self, revision: u64, member: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 0,
            member_id: member,
            revision: signed(revision),
            raft_term: self.service.port.term(),
        })
    }

    /// The header of an answer that reflects no revision of its own (cluster calls).
    pub(crate) fn local_header(&self, revision: u64) -> Option<ResponseHeader> {
        self.header(revision, self.node_id())
    }

    /// Who the node takes the etcd API's client for (its roles, whether auth is on).
    pub(crate) async fn whoami(&self) -> Result<(crate::api::WhoAmI, u64), Status> {
        let answer = self.run(ClientOp::WhoAmI).await?;
        match answer.output {
            ClientOutput::WhoAmI(me) => Ok((me, answer.revision)),
            _ => Err(Status::internal("whoami answered something else")),
        }
    }

    /// Refuses, as etcd's permission error, unless the etcd API's client holds the root role
    /// (or auth is off): for what the node does outside the client protocol's checks.
    pub(crate) async fn require_root(&self, what: &str) -> Result<(), Status> {
        let (me, _) = self.whoami().await?;
        if me.auth_enabled && !me.roles.iter().any(|role| role == ROOT_ROLE) {
            return Err(Status::permission_denied(format!(
                "etcdserver: permission denied ({what} needs the {ROOT_ROLE} role, which the \
                 etcd API's client {} does not hold)",
                me.id
            )));
        }
        Ok(())
    }

    /// The node serving the etcd API.
    pub(crate) fn node_id(&self) -> NodeId {
        ClientPort::node_id(self.service.port.as_ref())
    }

    pub(crate) fn port(&self) -> &Arc<P> {
        &self.service.port
    }

    pub(crate) fn client(&self) -> ClientId {
        self.client
    }
}

/// etcd's revisions and ids are signed on the wire.
pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A wire revision or id as Aspen's: negatives are 0.
pub(crate) fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// etcd's key range: `range_end` empty is the key alone, `"\0"` every key from `key` on
/// (every key when `key` is `"\0"` too), else `[key, range_end)`.
pub(crate) fn key_range(key: &[u8], range_end: &[u8]) -> KeyRange {
    match range_end {
        [] => KeyRange::single(key),
        [0] => KeyRange {
            start: if key == [0] { Vec::new() } else { key.to_vec() },
            end: None,
        },
        end => KeyRange {
            start: key.to_vec(),
            end: Some(end.to_vec()),
        },
    }
}

/// etcd's error for an Aspen refusal: the gRPC code and the message etcd's clients match on
/// where etcd has one (`etcdserver: ...`), else Aspen's own message.
pub(crate) fn status(error: &ClientError) -> Status {
    match error {
        ClientError::Command(command) => match command {
            CommandError::Compacted { .. } => {
                Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
            }
            CommandError::FutureRevision { .. } => {
                Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
            }
            CommandError::KeyEmpty => Status::invalid_argument("etcdserver: key is not provided"),
            CommandError::LeaseNotFound { .. } => {
                Status::not_found("etcdserver: requested lease not found")
            }
            CommandError::LeaseExists { .. } => {
                Status::failed_precondition("etcdserver: lease already exists")
            }
            CommandError::TooManyTxnOps { .. } => {
                Status::invalid_argument("etcdserver: too many operations in txn request")
            }
            CommandError::CommandTooLarge { .. }
            | CommandError::KeyTooLarge { .. }
            | CommandError::ValueTooLarge { .. } => {
                Status::invalid_argument(format!("etcdserver: request is too large ({command})"))
            }
            CommandError::QuotaExceeded { .. } => {
                Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
            }
            CommandError::Auth(_) => Status::failed_precondition(command.to_string()),
            other => Status::invalid_argument(other.to_string()),
        },
        ClientError::Denied(reason) => {
            Status::permission_denied(format!("etcdserver: permission denied ({reason})"))
        }
        ClientError::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        ClientError::NotLeader { .. }
        | ClientError::Unavailable(_)
        | ClientError::Busy { .. }
        | ClientError::NoRootYet => Status::unavailable(error.to_string()),
        ClientError::FrameTooLarge { .. } => {
            Status::invalid_argument(format!("etcdserver: request is too large ({error})"))
        }
        ClientError::BadRequest(_) | ClientError::BadFrame(_) | ClientError::Version { .. } => {
            Status::invalid_argument(error.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

/// A call Aspen does not serve (yet): etcd's clients see gRPC's `Unimplemented`.
pub(crate) fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!(
        "aspen's etcd API does not support {what} (docs/etcd.md)"
    ))
}

/// A running etcd API server (see [`start`]).
pub struct EtcdServer {
    pub address: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a stopping node waits for the etcd API's connections to close.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl EtcdServer {
    /// Ends every stream and connection, then the server.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(STOP_WAIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = self.task.await;
        }
    }
}

/// Serves the etcd API on `address` through `service`, acting as `client`; idle watches that
/// ask for progress notifications get one every `progress_notify_ms`.
pub async fn start<P: EtcdPort>(
    address: SocketAddr,
    service: ClientService<P>,
    client: ClientId,
    progress_notify_ms: u64,
) -> std::io::Result<EtcdServer> {
    use proto::etcdserverpb::{
        auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
        lease_server::LeaseServer, maintenance_server::MaintenanceServer,
        watch_server::WatchServer,
    };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let gateway = Gateway {
        service,
        client,
        stop: stopping,
        progress_notify_ms,
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let shutdown = {
        let gateway = gateway.clone();
        async move { gateway.stopped().await }
    };
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::new(gateway.clone()))
        .add_service(WatchServer::new(gateway.clone()))
        .add_service(LeaseServer::new(gateway.clone()))
        .add_service(ClusterServer::new(gateway.clone()))
        .add_service(MaintenanceServer::new(gateway.clone()))
        .add_service(AuthServer::new(gateway))
        .serve_with_incoming_shutdown(incoming, shutdown);
    let task = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "etcd API: the server stopped");
        }
    });
    Ok(EtcdServer {
        address,
        stop,
        task,
    })
}
