//! etcd's `Lease` service on Aspen's leases: TTLs in seconds on the wire, milliseconds in
//! Aspen. A lease's keys (TimeToLive with `keys`) are found by a SQL query on `kv_bytes`.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::error::CommandError;
use crate::api::{ClientError, ClientOp, ClientOutput, Consistency, Output, SqlValue, WriteOp};
use crate::etcd::EtcdPort;
use crate::etcd::proto::etcdserverpb::{self as pb, lease_server::Lease};
use crate::etcd::{Gateway, signed, status, unsigned};

/// Keep-alive answers a stream may have waiting for its client.
const KEEPALIVES_QUEUED: usize = 16;

fn seconds(ms: u64) -> i64 {
    signed(ms.div_ceil(1000))
}

impl<P: EtcdPort> Gateway<P> {
    /// Every live lease (a linearizable read), and the header of the answer.
    async fn leases(
        &self,
    ) -> Result<(Vec<crate::api::LeaseSummary>, Option<pb::ResponseHeader>), Status> {
        let answer = self
            .run(ClientOp::LeaseList {
                consistency: Consistency::Linearizable,
            })
            .await?;
        let ClientOutput::Leases(leases) = answer.output else {
            return Err(Status::internal("a lease list answered something else"));
        };
        Ok((leases, self.header(answer.revision, answer.served_by)))
    }

    /// One keep-alive: the lease's TTL in seconds, 0 when it is gone (as etcd answers).
    async fn keep_alive(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let op = WriteOp::LeaseKeepAlive { id: unsigned(id) };
        let (ttl, revision, member) = match self.write_op(op).await {
            Ok((Output::Lease { ttl_ms, .. }, revision, member)) => {
                (seconds(ttl_ms), revision, member)
            }
            Ok((_, revision, member)) => (0, revision, member),
            Err(ClientError::Command(CommandError::LeaseNotFound { .. })) => (0, 0, self.node_id()),
            Err(error) => return Err(status(&error)),
        };
        Ok(pb::LeaseKeepAliveResponse {
            header: self.header(revision, member),
            id,
            ttl,
        })
    }
}

#[tonic::async_trait]
impl<P: EtcdPort> Lease for Gateway<P> {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        let ttl_ms = unsigned(r.ttl).saturating_mul(1000);
        let op = WriteOp::LeaseGrant {
            id: unsigned(r.id),
            ttl_ms,
        };
        let (output, revision, member) = self.write(op).await?;
        let Output::Lease { id, ttl_ms, .. } = output else {
            return Err(Status::internal("a lease grant answered something else"));
        };
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.header(revision, member),
            id: signed(id),
            ttl: seconds(ttl_ms),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = unsigned(request.into_inner().id);
        let (_, revision, member) = self.write(WriteOp::LeaseRevoke { id }).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.header(revision, member),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVES_QUEUED);
        let gateway = self.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = requests.message() => request,
                    () = gateway.stopped() => return,
                };
                let Ok(Some(request)) = request else { return };
                let answer = gateway.keep_alive(request.id).await;
                if tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        let (leases, header) = self.leases().await?;
        let Some(lease) = leases.into_iter().find(|l| l.id == unsigned(r.id)) else {
            // As etcd: a lease that is gone has a TTL of -1.
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let mut keys = Vec::new();
        if r.keys {
            let query = format!(
                "SELECT key FROM kv_bytes WHERE lease_id = {} ORDER BY key",
                lease.id
            );
            let answer = self
                .run(ClientOp::Sql {
                    query,
                    consistency: Consistency::Linearizable,
                })
                .await?;
            if let ClientOutput::Sql(result) = answer.output {
                keys = result
                    .rows
                    .into_iter()
                    .filter_map(|row| match row.into_iter().next() {
                        Some(SqlValue::Bytes(key)) => Some(key),
                        Some(SqlValue::Text(key)) => Some(key.into_bytes()),
                        _ => None,
                    })
                    .collect();
            }
        }
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            // As etcd: the whole seconds left.
            ttl: signed(lease.remaining_ms / 1000),
            granted_ttl: seconds(lease.ttl_ms),
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (leases, header) = self.leases().await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header,
            leases: leases
                .into_iter()
                .map(|l| pb::LeaseStatus { id: signed(l.id) })
                .collect(),
        }))
    }
}
