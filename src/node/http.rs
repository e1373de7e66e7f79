//! The node's side of the HTTP endpoints, of the Raft transport and of the etcd API:
//! `net::http` declares [`HttpPort`], `net::admin` [`AdminPort`], `net::raft_service`
//! [`RaftPort`] and `etcd` `EtcdPort`; this implements them with the node's parts (the health
//! board, the Raft handle, the store).

use std::time::Duration;

use openraft::Raft;

use crate::api::{HealthReport, KeyRange, NodeId};
use crate::command::TypeConfig;
use crate::net::admin::{AdminError, AdminPort, BackupDone, BackupJob, CompactDone, SnapshotDone};
use crate::net::http::{HttpPort, Status};
use crate::net::raft_service::RaftPort;
use crate::node::NodeCore;

impl HttpPort for NodeCore {
    fn health(&self) -> HealthReport {
        self.board.health()
    }

    fn status(&self) -> Status {
        let raft = self.raft.metrics();
        let store = self.store.as_ref();
        let view = store.and_then(|s| s.read(crate::clock::now_ms()).ok());
        Status {
            node_id: self.node_id,
            failure: self.board.failure(),
            term: raft.as_ref().map(|r| r.current_term),
            leader: raft.as_ref().and_then(|r| r.current_leader),
            last_log_index: raft.as_ref().and_then(|r| r.last_log_index),
            applied_index: raft
                .as_ref()
                .and_then(|r| r.last_applied.map(|id| id.index)),
            membership: raft
                .as_ref()
                .and_then(|r| serde_json::to_value(r.membership_config.membership()).ok()),
            revision: view.as_ref().map(|v| v.revision()),
            keys: view
                .as_ref()
                .and_then(|v| v.count(&KeyRange::prefix(b"")).ok()),
            db_size_bytes: store.and_then(|s| s.file_size()),
        }
    }
}

impl AdminPort for NodeCore {
    fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn backup(&self) -> Result<BackupJob, AdminError> {
        let store = self.open_store()?;
        Ok(Box::new(move |out: &mut dyn std::io::Write| {
            let (summary, _) = store
                .write_backup(out, crate::clock::now_ms(), |_, _| {})
                .map_err(|e| AdminError::Failed(e.to_string()))?;
            Ok(BackupDone {
                keys: summary.keys,
                revision: summary.revision,
            })
        }))
    }

    async fn snapshot(&self, timeout: Duration) -> Result<SnapshotDone, AdminError> {
        use crate::actors::raft::RaftError;
        let metrics = self
            .raft
            .snapshot(false, timeout)
            .await
            .map_err(|e| match e {
                RaftError::NotRunning => AdminError::Unavailable("raft is not running".into()),
                other => AdminError::Timeout(other.to_string()),
            })?;
        Ok(SnapshotDone {
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            last_log_index: metrics.last_log_index,
        })
    }

    async fn compact(&self, wait_for_open: Duration) -> Result<CompactDone, AdminError> {
        self.open_store()?;
        let leading = self.raft.with_metrics(|m| {
            let voters = m.membership_config.membership().voter_ids().count();
            (m.current_leader == Some(self.node_id)).then_some(voters)
        });
        if let Some(Some(voters)) = leading
            && voters > 1
        {
            // A compaction holds the database for its whole run: a leader would stop
            // appending and replicating (its heartbeats included), stalling every write
            // and, past the election timeout, forcing an election. openraft 0.9 cannot hand
            // leadership over, so the leader refuses.
            return Err(AdminError::Refused(format!(
                "compaction refused: node {} is the leader of {voters} voters, and a compaction \
                 holds its database for its whole run, stalling the cluster's writes; compact \
                 the followers, and this node once another node leads (restart it to hand \
                 leadership over)",
                self.node_id
            )));
        }
        match self.storage.compact(wait_for_open).await {
            Ok(done) => Ok(CompactDone {
                bytes_before: done.bytes_before,
                bytes_after: done.bytes_after,
                stalled: done.stalled,
                passes: done.passes,
            }),
            Err(e @ crate::storage::Error::Refused(_)) => Err(AdminError::Refused(e.to_string())),
            Err(e) => Err(AdminError::Failed(e.to_string())),
        }
    }

    fn request_shutdown(&self) {
        NodeCore::request_shutdown(self);
    }
}

impl RaftPort for NodeCore {
    fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn raft(&self) -> Option<Raft<TypeConfig>> {
        self.raft.raft()
    }

    async fn kv_hash(
        &self,
        check: u64,
        wait: std::time::Duration,
    ) -> Result<crate::api::KvHash, crate::api::HashKvError> {
        match &self.store {
            Some(store) => store.hash_checks().wait(check, wait).await,
            None => Err(crate::api::HashKvError::Failed(
                "storage is not open".into(),
            )),
        }
    }
}

impl NodeCore {
    /// The store, or `Unavailable` saying it is not open.
    fn open_store(&self) -> Result<std::sync::Arc<crate::storage::Store>, AdminError> {
        self.store()
            .ok_or_else(|| AdminError::Unavailable("storage is not open".into()))
    }
}

impl crate::etcd::EtcdPort for NodeCore {
    fn alarms(&self) -> Vec<(NodeId, crate::etcd::Alarm)> {
        let mut alarms = Vec::new();
        if self.quota_alarm().is_some() {
            alarms.push((self.node_id, crate::etcd::Alarm::NoSpace));
        }
        if let Some(report) = self.store.as_ref().and_then(|s| s.hash_checks().alarm()) {
            alarms.extend(
                report
                    .mismatched
                    .iter()
                    .map(|id| (*id, crate::etcd::Alarm::Corrupt)),
            );
        }
        alarms
    }

    fn db_size(&self) -> Option<u64> {
        self.store.as_ref().and_then(|store| store.file_size())
    }
}
