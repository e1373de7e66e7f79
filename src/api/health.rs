//! The shapes of `GET /health`: each check's status and message, the node's overall health
//! and the report that carries them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::kv::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Warning,
    Critical,
    /// The component is down and will not be retried (storage refused by validation).
    Failed,
}

impl CheckStatus {
    /// Value of the `aspen_health_check_status` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            CheckStatus::Ok => 0.0,
            CheckStatus::Warning => 1.0,
            CheckStatus::Critical => 2.0,
            CheckStatus::Failed => 3.0,
        }
    }
}

/// One health check's latest result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Check {
    pub fn ok() -> Self {
        Check {
            status: CheckStatus::Ok,
            message: None,
        }
    }

    pub fn new(status: CheckStatus, message: impl Into<String>) -> Self {
        Check {
            status,
            message: Some(message.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeHealth {
    Healthy,
    Degraded,
    Unhealthy,
}

/// The body of `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: NodeHealth,
    pub checks: BTreeMap<String, Check>,
    pub node_id: NodeId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
