//! The admin endpoints under `/admin/*` (all `POST`), always guarded by a bearer token:
//! `http.admin_token` when set, else the one in `DATA_DIR/admin.token` (mode 0600, generated
//! on first start: [`load_or_create_token`]). The token is never logged.
//! - `/admin/backup`: streams a backup file (`crate::storage::backup`) taken from one read
//!   transaction while writes go on.
//! - `/admin/snapshot`: builds a Raft snapshot now; the log behind it is purged as configured
//!   (`raft.log_entries_kept`). Answers once the snapshot exists.
//! - `/admin/defrag`: reclaims the free space in the database file; answers the sizes before
//!   and after and how long reads and writes waited.
//! - `/admin/shutdown`: stops the node gracefully (see `crate::node::Node::shutdown`).
//! - `/admin/faults` (only with `net.fault_injection`, for tests): `{"isolate": true}` cuts
//!   the node off from its peers (it neither sends nor serves Raft RPCs, nor forwards client
//!   requests); `{"isolate": false}` heals.
//!
//! Errors come back as JSON `{"error": "..."}` with a status naming the kind of failure
//! ([`AdminError`]). The work is the node's, behind the [`AdminPort`] this module declares.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::api::NodeId;
use crate::fault::NetFaults;

/// What the admin routes need from the node. Declared here, implemented by the node.
pub trait AdminPort: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// A backup ready to run: refused now when it cannot start (storage not open); the job
    /// writes the backup file to its `out` (blocking; `out` failing stops it).
    fn backup(&self) -> Result<BackupJob, AdminError>;
    /// Builds a Raft snapshot now (the log behind it is purged as configured).
    fn snapshot(
        &self,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<SnapshotDone, AdminError>> + Send;
    /// Reclaims the free space in the database file (through the store's writer).
    fn compact(
        &self,
        wait_for_open: std::time::Duration,
    ) -> impl Future<Output = Result<CompactDone, AdminError>> + Send;
    /// Asks the process running this node to stop it gracefully.
    fn request_shutdown(&self);
}

/// Writes a backup file to its argument and says what it held.
pub type BackupJob =
    Box<dyn FnOnce(&mut dyn std::io::Write) -> Result<BackupDone, AdminError> + Send>;

/// A backup that was sent whole.
#[derive(Debug, Clone, Copy)]
pub struct BackupDone {
    pub keys: u64,
    pub revision: u64,
}

/// Where the log stands after `/admin/snapshot`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SnapshotDone {
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub last_log_index: Option<u64>,
}

/// What `/admin/defrag` did.
#[derive(Debug, Clone, Copy)]
pub struct CompactDone {
    /// File sizes (`None` for the in-memory store).
    pub bytes_before: Option<u64>,
    pub bytes_after: Option<u64>,
    pub stalled: std::time::Duration,
    pub passes: u32,
}

/// Why an admin request failed, as the node's port reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The part it needs is not running (storage not open, Raft restarting): 503.
    #[error("{0}")]
    Unavailable(String),
    /// Refused as asked, nothing changed (a compaction of the in-memory store): 409.
    #[error("{0}")]
    Refused(String),
    /// Did not finish in time: 504.
    #[error("{0}")]
    Timeout(String),
    /// Failed: 500.
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Refused(_) => StatusCode::CONFLICT,
            AdminError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AdminError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The generated admin token's file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// Random bytes in a generated token (written as hex).
const TOKEN_BYTES: usize = 32;

/// A new token: `TOKEN_BYTES` bytes from the kernel's random source, as hex.
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    let mut filled = 0;
    while filled < TOKEN_BYTES {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `dir/admin.token`, created (mode 0600) with a generated one on first use.
pub fn load_or_create_token(dir: &std::path::Path) -> std::io::Result<String> {
    match read_token(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_token()?;
            crate::files::create_private_dir(dir)?;
            let mut file = crate::files::private_file()
                .write(true)
                .create_new(true)
                .open(dir.join(TOKEN_FILE))?;
            std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
            file.sync_all()?;
            Ok(token)
        }
        other => other,
    }
}

/// The token in `dir/admin.token` (what the CLI sends with `--data-dir`).
pub fn read_token(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join(TOKEN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(token.to_string())
}

/// How long `/admin/snapshot` waits for the snapshot to be built.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);
/// A compaction waits this long for transactions already open to end.
const COMPACTION_WAIT_FOR_OPEN: Duration = Duration::from_secs(5);
/// A backup travels in chunks of this size.
const BACKUP_CHUNK_BYTES: usize = 256 << 10;

struct AdminState<P> {
    port: Arc<P>,
    /// Never empty: every admin route needs it.
    token: Arc<str>,
    /// This node's network faults (used only with `net.fault_injection`).
    net: NetFaults,
}

impl<P> Clone for AdminState<P> {
    fn clone(&self) -> Self {
        AdminState {
            port: Arc::clone(&self.port),
            token: Arc::clone(&self.token),
            net: self.net.clone(),
        }
    }
}

/// The `/admin/*` routes, behind `admin_token` (an empty one refuses every call).
pub fn router<P: AdminPort>(
    port: Arc<P>,
    admin_token: &str,
    fault_injection: Option<NetFaults>,
) -> Router {
    let state = AdminState {
        port,
        token: Arc::from(admin_token),
        net: fault_injection.clone().unwrap_or_default(),
    };
    let mut router = Router::new();
    if fault_injection.is_some() {
        router = router.route("/admin/faults", post(faults::<P>));
    }
    router
        .route("/admin/backup", post(backup::<P>))
        .route("/admin/snapshot", post(snapshot::<P>))
        .route("/admin/defrag", post(compact::<P>))
        .route("/admin/shutdown", post(shutdown::<P>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token::<P>,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn require_token<P: AdminPort>(
    State(state): State<AdminState<P>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.token.is_empty() && bearer_matches(request.headers(), &state.token) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "admin: missing or wrong bearer token (Authorization: Bearer TOKEN)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Whether the request carries `Authorization: Bearer <token>`; compares in constant time.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn backup<P: AdminPort>(State(state): State<AdminState<P>>) -> Response {
    let job = match state.port.backup() {
        Ok(job) => job,
        Err(e) => return error(e.status(), format!("admin: {e}")),
    };
    let rx = backup_chunks(job, state.port.node_id());
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Runs a backup job off the async runtime, sending the file in chunks (at most 4 waiting)
/// to the receiver: the job stops when the receiver is dropped, and a failure ends the chunks
/// with an error, so a reader sees a cut stream, never a short file that looks whole (the End
/// record and checksum are missing). Used by `/admin/backup` and etcd's snapshot.
pub(crate) fn backup_chunks(
    job: BackupJob,
    node_id: NodeId,
) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkSender {
            tx: tx.clone(),
            chunk: Vec::with_capacity(BACKUP_CHUNK_BYTES),
        };
        let result = job(&mut writer).and_then(|done| {
            std::io::Write::flush(&mut writer)
                .map_err(|e| AdminError::Failed(format!("sending the backup: {e}")))?;
            Ok(done)
        });
        match result {
            Ok(done) => tracing::info!(
                node_id,
                keys = done.keys,
                revision = done.revision,
                "admin: backup sent"
            ),
            Err(error) => {
                tracing::warn!(node_id, %error, "admin: backup failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(error.to_string())));
            }
        }
    });
    rx
}

/// A `Write` that sends what it is given to the response body in chunks; fails once the
/// client has gone away, which stops the backup.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    chunk: Vec<u8>,
}

impl ChunkSender {
    fn send_chunk(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(BACKUP_CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunk.extend_from_slice(buf);
        if self.chunk.len() >= BACKUP_CHUNK_BYTES {
            self.send_chunk()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_chunk()
    }
}

async fn snapshot<P: AdminPort>(State(state): State<AdminState<P>>) -> Response {
    match state.port.snapshot(SNAPSHOT_WAIT).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => error(e.status(), format!("admin: {e}")),
    }
}

/// Compacts the node's database file (`aspen admin defrag`, etcd's Defragment), recording
/// the stall in the metrics and the log.
pub(crate) async fn compact_recorded<P: AdminPort>(port: &P) -> Result<CompactDone, AdminError> {
    let compaction = port.compact(COMPACTION_WAIT_FOR_OPEN).await?;
    let node_id = port.node_id();
    metrics::histogram!(crate::metrics::STORAGE_COMPACTION_SECONDS, "node_id" => node_id.to_string())
        .record(compaction.stalled.as_secs_f64());
    tracing::info!(
        node_id,
        before = compaction.bytes_before,
        after = compaction.bytes_after,
        stalled_ms = compaction.stalled.as_millis() as u64,
        "admin: compacted the database file"
    );
    Ok(compaction)
}

async fn compact<P: AdminPort>(State(state): State<AdminState<P>>) -> Response {
    match compact_recorded(&*state.port).await {
        Ok(compaction) => Json(json!({
            "bytes_before": compaction.bytes_before,
            "bytes_after": compaction.bytes_after,
            "stalled_ms": compaction.stalled.as_secs_f64() * 1000.0,
            "passes": compaction.passes,
        }))
        .into_response(),
        Err(e) => error(e.status(), format!("admin: {e}")),
    }
}

#[derive(serde::Deserialize)]
struct FaultsRequest {
    isolate: bool,
}

async fn faults<P: AdminPort>(
    State(state): State<AdminState<P>>,
    Json(request): Json<FaultsRequest>,
) -> Response {
    let net = &state.net;
    let node_id = state.port.node_id();
    if request.isolate {
        net.isolate(node_id);
    } else {
        net.heal();
    }
    tracing::warn!(node_id, isolated = request.isolate, "fault injection");
    Json(json!({ "node_id": node_id, "isolated": request.isolate })).into_response()
}

async fn shutdown<P: AdminPort>(State(state): State<AdminState<P>>) -> Response {
    state.port.request_shutdown();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "status": "shutting down", "node_id": state.port.node_id() })),
    )
        .into_response()
}
