//! etcd's `Maintenance` service: status and hashes from the node's cluster status and hash
//! check; alarms from the node's quota and corrupt alarms; defragment and snapshot on the
//! member that serves them, through its admin port (`aspen admin defrag` and `aspen admin
//! backup`). Leadership cannot be moved: openraft 0.9 has no leader transfer.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::{ClientOp, ClientOutput};
use crate::etcd::proto::etcdserverpb::{
    self as pb, alarm_request::AlarmAction, maintenance_server::Maintenance,
};
use crate::etcd::{Alarm, EtcdPort, Gateway, signed, unsupported};
use crate::net::admin::{AdminError, backup_chunks, compact_recorded};
use crate::storage::EtcdSnapshotTrailer;

/// The etcd API version Aspen answers as (`etcdctl endpoint status` prints it).
pub const ETCD_VERSION: &str = "3.4.0";

impl<P: EtcdPort> Gateway<P> {
    /// This member's hash from Aspen's hash check (run by the leader: every member hashes its
    /// key space at one point of the log), with the revision it was taken at.
    async fn my_hash(&self) -> Result<(u32, u64), Status> {
        let answer = self.run(ClientOp::HashKv).await?;
        let ClientOutput::HashKv(report) = answer.output else {
            return Err(Status::internal("a hash check answered something else"));
        };
        let me = self.node_id();
        let mine = report.members.into_iter().find(|member| member.id == me);
        match mine.map(|member| member.result) {
            Some(Ok(hash)) => Ok((hash.hash, hash.revision)),
            Some(Err(error)) => Err(Status::unavailable(format!("hash check: {error}"))),
            None => Err(Status::unavailable(
                "hash check: this member was not part of it",
            )),
        }
    }

    /// The alarms this node knows of, as etcd lists them.
    fn alarm_members(&self) -> Vec<pb::AlarmMember> {
        self.port()
            .alarms()
            .into_iter()
            .map(|(member_id, alarm)| pb::AlarmMember {
                member_id,
                alarm: match alarm {
                    Alarm::NoSpace => pb::AlarmType::Nospace,
                    Alarm::Corrupt => pb::AlarmType::Corrupt,
                } as i32,
            })
            .collect()
    }
}

/// etcd's error for an admin port's refusal.
fn admin_status(what: &str, error: AdminError) -> Status {
    match error {
        AdminError::Unavailable(why) => Status::unavailable(format!("{what}: {why}")),
        AdminError::Refused(why) => Status::failed_precondition(format!("{what}: {why}")),
        AdminError::Timeout(why) => Status::deadline_exceeded(format!("{what}: {why}")),
        AdminError::Failed(why) => Status::internal(format!("{what}: {why}")),
    }
}

#[tonic::async_trait]
impl<P: EtcdPort> Maintenance for Gateway<P> {
    /// Lists the alarms this node knows of. Aspen's alarms are not disarmed by hand: each
    /// lifts when its cause is gone (the file back under the quota; a hash check where every
    /// member agrees), so a disarm of an active alarm is refused saying what lifts it.
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let request = request.into_inner();
        let alarms = self.alarm_members();
        let header = self.local_header(0);
        match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => Ok(Response::new(pb::AlarmResponse { header, alarms })),
            Ok(AlarmAction::Deactivate) => {
                let asked = |alarm: &pb::AlarmMember| {
                    (request.member_id == 0 || alarm.member_id == request.member_id)
                        && (request.alarm == pb::AlarmType::None as i32
                            || alarm.alarm == request.alarm)
                };
                match alarms.iter().find(|alarm| asked(alarm)) {
                    None => Ok(Response::new(pb::AlarmResponse {
                        header,
                        alarms: Vec::new(),
                    })),
                    Some(alarm) => Err(Status::failed_precondition(
                        if alarm.alarm == pb::AlarmType::Nospace as i32 {
                            format!(
                                "the NOSPACE alarm of member {} lifts by itself once its \
                                 database file is under storage.quota_bytes: drop old history \
                                 (etcdctl compaction) and give the space back (etcdctl defrag)",
                                alarm.member_id
                            )
                        } else {
                            format!(
                                "the CORRUPT alarm of member {} lifts by itself after a hash \
                                 check where every member agrees (etcdctl endpoint hashkv); \
                                 rebuild the member first (docs/operations.md)",
                                alarm.member_id
                            )
                        },
                    )),
                }
            }
            Ok(AlarmAction::Activate) => Err(Status::invalid_argument(
                "alarms are raised by the nodes themselves, not by clients",
            )),
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown alarm action {}",
                request.action
            ))),
        }
    }

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
            db_size: self.port().db_size().map_or(0, signed),
            leader: status.leader.unwrap_or(0),
            raft_index: status.last_log_index.unwrap_or(0),
            raft_term: status.term,
            raft_applied_index: status.last_applied.unwrap_or(0),
            errors: Vec::new(),
            db_size_in_use: 0,
            is_learner: learner,
        }))
    }

    /// Gives the free space of this member's database file back (`aspen admin defrag`; root
    /// only). Reads and writes on this member wait meanwhile, so a leader of several voters
    /// refuses (it would stall the cluster; openraft 0.9 cannot hand leadership over first).
    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.require_root("defragment").await?;
        compact_recorded(self.port().as_ref())
            .await
            .map_err(|error| admin_status("defragment", error))?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.local_header(0),
        }))
    }

    /// etcd hashes its whole backend; Aspen answers the key space's hash, as HashKV does.
    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision) = self.my_hash().await?;
        Ok(Response::new(pb::HashResponse {
            header: self.local_header(revision),
            hash,
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
        let (hash, revision) = self.my_hash().await?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.local_header(revision),
            hash,
            compact_revision: 0,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    /// Streams a backup of this member's state (`aspen admin backup`; root only), taken from
    /// one read transaction while writes go on, in etcd's snapshot form (padded, with a
    /// SHA-256, which `etcdctl snapshot save` checks): the file is an Aspen backup, which
    /// `aspen-node restore` turns into a new cluster's data directory. Its size is known only
    /// at its end: `remaining_bytes` is 0 on the last message, and before it the size of the
    /// chunk read ahead (a lower bound).
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.require_root("snapshot").await?;
        let job = self
            .port()
            .backup()
            .map_err(|error| admin_status("snapshot", error))?;
        let mut chunks = backup_chunks(job, self.node_id());
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let header = self.local_header(0);
        tokio::spawn(async move {
            // One chunk is held back until the next arrives, so the last one is known and
            // ends with etcd's trailer.
            let mut trailer = EtcdSnapshotTrailer::default();
            let mut held: Option<Vec<u8>> = None;
            loop {
                let next = chunks.recv().await;
                let message = match (held.take(), next) {
                    (held_blob, Some(Ok(chunk))) => {
                        trailer.update(&chunk);
                        held = Some(chunk.to_vec());
                        let Some(blob) = held_blob else {
                            continue;
                        };
                        Ok(pb::SnapshotResponse {
                            header,
                            remaining_bytes: held.as_ref().map_or(0, |c| c.len() as u64),
                            blob,
                        })
                    }
                    (Some(mut blob), None) => {
                        blob.extend_from_slice(&std::mem::take(&mut trailer).finish());
                        Ok(pb::SnapshotResponse {
                            header,
                            remaining_bytes: 0,
                            blob,
                        })
                    }
                    (None, None) => break,
                    (_, Some(Err(error))) => Err(Status::internal(format!("snapshot: {error}"))),
                };
                let end = message.is_err() || held.is_none();
                if tx.send(message).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// openraft 0.9 cannot hand leadership over: moving it to the leader itself succeeds (as
    /// etcd's does), any other member is refused.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let (status, revision) = self.status_of_node().await?;
        if !status.members.iter().any(|member| member.id == target) {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        if status.leader == Some(target) {
            return Ok(Response::new(pb::MoveLeaderResponse {
                header: self.local_header(revision),
            }));
        }
        Err(unsupported(
            "MoveLeader: openraft 0.9 has no leader transfer; restart the leader to hand \
             leadership over",
        ))
    }
}
