//! HTTP endpoints (axum): `GET /health` (200 when healthy or degraded, 503 when unhealthy),
//! `GET /metrics` (Prometheus text), `GET /status` (Raft and state machine figures), and the
//! `/admin/*` routes of `crate::net::admin`. Reaches the node only through the [`HttpPort`]
//! it declares.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::api::{HealthReport, NodeHealth, NodeId};
use crate::metrics as m;
use crate::net::admin::AdminPort;

/// What the HTTP endpoints need from the node, on top of the admin routes' port. Declared
/// here, implemented by the node.
pub trait HttpPort: AdminPort {
    /// The body of `GET /health`.
    fn health(&self) -> HealthReport;
    /// The figures of `GET /status`. Blocking: opens a read transaction and counts keys.
    fn status(&self) -> Status;
}

/// Serves the endpoints on `listener` until the task is aborted.
pub async fn serve<P: HttpPort>(
    listener: tokio::net::TcpListener,
    port: Arc<P>,
    admin_token: String,
    fault_injection: Option<crate::fault::NetFaults>,
) {
    let app = Router::new()
        .route("/health", get(health::<P>))
        .route("/metrics", get(metrics::<P>))
        .route("/status", get(status::<P>))
        .with_state(Arc::clone(&port))
        .merge(crate::net::admin::router(
            port,
            &admin_token,
            fault_injection,
        ));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "http: server stopped");
    }
}

async fn health<P: HttpPort>(State(port): State<Arc<P>>) -> Response {
    let report = port.health();
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

async fn status<P: HttpPort>(State(port): State<Arc<P>>) -> Response {
    match tokio::task::spawn_blocking(move || port.status()).await {
        Ok(status) => Json(status).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn metrics<P: HttpPort>(State(port): State<Arc<P>>) -> Response {
    let status = match tokio::task::spawn_blocking({
        let port = Arc::clone(&port);
        move || port.status()
    })
    .await
    {
        Ok(status) => status,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    record_gauges(port.node_id(), &status);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m::render(),
    )
        .into_response()
}

/// Gauges are sampled when scraped: they describe the node at that moment.
fn record_gauges(node_id: NodeId, status: &Status) {
    let node = node_id.to_string();
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
