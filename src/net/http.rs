//! HTTP endpoints (axum): `GET /health` (200 when healthy or degraded, 503 when unhealthy),
//! `GET /metrics` (Prometheus text), `GET /status` (Raft and state machine figures), and the
//! `/admin/*` routes of `crate::net::admin`. Reads only what the node publishes in
//! `NodeShared`; never writes.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::metrics as m;
use crate::node::{NodeHealth, NodeShared};
use crate::storage::KeyRange;

/// Serves the endpoints on `listener` until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<NodeShared>,
    admin_token: String,
    fault_injection: Option<crate::net::faults::NetFaults>,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(Arc::clone(&shared))
        .merge(crate::net::admin::router(
            shared,
            &admin_token,
            fault_injection,
        ));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "http: server stopped");
    }
}

async fn health(State(shared): State<Arc<NodeShared>>) -> Response {
    let report = shared.health();
    let code = match report.status {
        NodeHealth::Healthy | NodeHealth::Degraded => StatusCode::OK,
        NodeHealth::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(report)).into_response()
}

/// The body of `GET /status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub node_id: u64,
    pub failure: Option<String>,
    pub term: Option<u64>,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub membership: Option<serde_json::Value>,
    pub revision: Option<u64>,
    pub keys: Option<u64>,
    pub db_size_bytes: Option<u64>,
}

async fn status(State(shared): State<Arc<NodeShared>>) -> Response {
    match tokio::task::spawn_blocking(move || collect_status(&shared)).await {
        Ok(status) => Json(status).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Reads the figures (a redb read transaction and a key count: blocking work).
pub fn collect_status(shared: &NodeShared) -> Status {
    let raft = shared.raft_metrics();
    let store = shared.store();
    let view = store
        .as_ref()
        .and_then(|s| s.read(crate::clock::now_ms()).ok());
    Status {
        node_id: shared.node_id,
        failure: shared.failure(),
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
        db_size_bytes: store.as_ref().and_then(|s| s.file_size()),
    }
}

async fn metrics(State(shared): State<Arc<NodeShared>>) -> Response {
    let status = match tokio::task::spawn_blocking({
        let shared = Arc::clone(&shared);
        move || collect_status(&shared)
    })
    .await
    {
        Ok(status) => status,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    record_gauges(&shared, &status);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m::render(),
    )
        .into_response()
}

/// Gauges are sampled when scraped: they describe the node at that moment.
fn record_gauges(shared: &NodeShared, status: &Status) {
    let node = shared.node_id.to_string();
    let set = |name: &'static str, value: Option<u64>| {
        if let Some(value) = value {
            metrics::gauge!(name, "node_id" => node.clone()).set(value as f64);
        }
    };
    set(m::RAFT_TERM, status.term);
    set(m::RAFT_LEADER_ID, Some(status.leader.unwrap_or(0)));
    set(m::RAFT_HAS_LEADER, Some(u64::from(status.leader.is_some())));
    set(m::RAFT_LAST_LOG_INDEX, status.last_log_index);
    set(m::RAFT_APPLIED_INDEX, status.applied_index);
    set(m::KV_KEYS, status.keys);
    set(m::STORAGE_DB_SIZE_BYTES, status.db_size_bytes);
}
