//! The hash check (`crate::api::hashkv`), run by the leader for `aspen cluster hashkv` and,
//! when `health.hash_check_interval_ms` is set, periodically: the leader proposes a
//! `Command::HashCheck`, then asks every member (itself included) for its hash at that entry,
//! all at once. A member whose hash differs raises the corrupt alarm on this node (`/health`
//! check `corrupt`, metric `aspen_corrupt_alarm`) until a later check finds every member
//! agreeing. Members answer over the Raft transport (`net::raft::request_kv_hash`), which
//! only members and `net.peers` may use.

use std::time::Duration;

use crate::api::{HashKvReport, MemberHash, NodeAddress, NodeId};
use crate::command::{Command, Request};
use crate::limits::HASH_CHECK_WAIT_MS;
use crate::net::service::Failure;
use crate::node::NodeCore;

impl NodeCore {
    /// Runs a hash check as the leader (redirects elsewhere) and records what it found.
    pub async fn hash_check(&self) -> Result<HashKvReport, Failure> {
        if self.raft.leader() != Some(self.node_id) {
            return Err(Failure::Redirect(self.raft.leader()));
        }
        let result = self.run_hash_check().await;
        let outcome = match &result {
            Ok(report) if !report.mismatched.is_empty() => "mismatch",
            Ok(report) if report.all_agree() => "agree",
            Ok(_) => "incomplete",
            Err(_) => "error",
        };
        metrics::counter!(crate::metrics::HASH_CHECKS, "node_id" => self.node_id.to_string(),
            "outcome" => outcome)
        .increment(1);
        let report = result?;
        if let Some(store) = &self.store {
            store.hash_checks().record_check(&report);
        }
        if !report.mismatched.is_empty() {
            tracing::error!(node_id = self.node_id, check = report.check,
                mismatched = ?report.mismatched, "hash check: members' key spaces differ");
        }
        Ok(report)
    }

    async fn run_hash_check(&self) -> Result<HashKvReport, Failure> {
        let check = check_id();
        self.write(Request {
            now_ms: crate::clock::now_ms(),
            command: Command::HashCheck { check },
        })
        .await?;
        let members: Vec<(NodeId, Option<NodeAddress>)> = self
            .raft
            .with_metrics(|m| {
                let membership = m.membership_config.membership();
                membership
                    .nodes()
                    .map(|(id, node)| (*id, node.addr.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        if members.is_empty() {
            // Raft stopped between the proposal and now: nothing to compare.
            return Err(Failure::Redirect(None));
        }
        let wait = Duration::from_millis(HASH_CHECK_WAIT_MS);
        let answers = members.into_iter().map(|(id, address)| async move {
            let result = self.member_hash(id, address, check, wait).await;
            MemberHash { id, result }
        });
        let answers = futures::future::join_all(answers).await;
        Ok(HashKvReport::new(self.node_id, check, answers))
    }

    /// Member `id`'s hash at `check`: this node's own from its store, another's over the
    /// Raft transport.
    async fn member_hash(
        &self,
        id: NodeId,
        address: Option<NodeAddress>,
        check: u64,
        wait: Duration,
    ) -> Result<crate::api::KvHash, crate::api::HashKvError> {
        use crate::api::HashKvError::{Failed, Unreachable};
        if id == self.node_id {
            let store = self
                .store
                .as_ref()
                .ok_or_else(|| Failed("storage is not open".into()))?;
            return store.hash_checks().wait(check, wait).await;
        }
        let address = address.ok_or_else(|| Unreachable("no usable address".into()))?;
        if self.net_faults.is_cut(self.node_id, id) {
            return Err(Unreachable("link cut (fault injected)".into()));
        }
        crate::net::raft::request_kv_hash(&self.peers, &address, self.node_id, check, wait).await
    }
}

/// A fresh id for a hash check: random, so checks by different leaders never share one.
fn check_id() -> u64 {
    let mut bytes = [0u8; 8];
    // The kernel's generator does not fail for 8 bytes; on an error the clock stands in
    // (ids only need to differ between checks run close together).
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_le_bytes(bytes),
        _ => crate::clock::now_ms(),
    }
}

/// As the leader, runs a hash check every `interval` (the other members skip their turn).
pub(super) async fn check_periodically(core: std::sync::Arc<NodeCore>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if core.is_stopping() || core.raft.leader() != Some(core.node_id) {
            continue;
        }
        if let Err(error) = core.hash_check().await {
            let error = match error {
                Failure::Redirect(leader) => format!("leadership moved (to {leader:?})"),
                Failure::Error(error) => error.to_string(),
            };
            tracing::warn!(node_id = core.node_id, %error, "periodic hash check failed");
        }
    }
}
