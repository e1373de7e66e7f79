//! The health board: what the supervision tree knows about this node, published for
//! `/health`, `/status` and tests: each check's latest result, restart counts per child, and
//! the failed state (the node stops serving and says why). Written only by the supervisor;
//! read by the node, `/health`, `/status` and tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::actors::ActorKind;
use crate::api::{Check, CheckStatus, HealthReport, NodeHealth, NodeId};
use crate::sync::lock;

#[derive(Debug)]
pub struct HealthBoard {
    node_id: NodeId,
    checks: Mutex<BTreeMap<String, Check>>,
    restarts: Mutex<BTreeMap<ActorKind, u64>>,
    failure: watch::Sender<Option<String>>,
}

impl HealthBoard {
    pub fn new(node_id: NodeId) -> Self {
        HealthBoard {
            node_id,
            checks: Mutex::default(),
            restarts: Mutex::default(),
            failure: watch::channel(None).0,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn set_check(&self, name: &str, check: Check) {
        metrics::gauge!(crate::metrics::HEALTH_CHECK_STATUS, "node_id" => self.node_id.to_string(), "check" => name.to_string())
            .set(check.status.gauge());
        lock(&self.checks).insert(name.to_string(), check);
    }

    pub fn checks(&self) -> BTreeMap<String, Check> {
        lock(&self.checks).clone()
    }

    pub fn record_restart(&self, actor: ActorKind) {
        metrics::counter!(crate::metrics::SUPERVISOR_RESTARTS, "node_id" => self.node_id.to_string(), "actor" => actor.as_str())
            .increment(1);
        *lock(&self.restarts).entry(actor).or_default() += 1;
    }

    pub fn restarts(&self, actor: ActorKind) -> u64 {
        lock(&self.restarts).get(&actor).copied().unwrap_or(0)
    }

    /// Marks the node failed: it stops serving and `/health` answers 503 with `reason`.
    pub fn fail(&self, reason: String) {
        tracing::error!(node_id = self.node_id, %reason, "node failed");
        self.failure.send_replace(Some(reason));
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Resolves when the node has failed, with the reason.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "node dropped".into();
            }
        }
    }

    /// The body of `GET /health`: unhealthy when failed or any check is critical, degraded
    /// when one warns.
    pub fn health(&self) -> HealthReport {
        let checks = self.checks();
        let failure = self.failure();
        let worst = checks
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(CheckStatus::Ok);
        let status = match (failure.is_some(), worst) {
            (true, _) | (_, CheckStatus::Critical | CheckStatus::Failed) => NodeHealth::Unhealthy,
            (false, CheckStatus::Warning) => NodeHealth::Degraded,
            (false, CheckStatus::Ok) => NodeHealth::Healthy,
        };
        HealthReport {
            status,
            checks,
            node_id: self.node_id,
            failure,
        }
    }
}
