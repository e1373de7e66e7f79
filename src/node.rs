//! The running node: starting it (`start_node`), and what its parts share for observation
//! (`NodeShared`): health checks, the failed state, restart counts, the store and Raft
//! metrics, read by the HTTP endpoints and the test harness. Writes go through actors only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::Raft;
use ractor::{Actor, ActorRef};
use serde::Serialize;
use tokio::sync::watch;

use crate::actors::raft::{Metrics, RaftError, RaftMsg};
use crate::actors::{ActorKind, Faults, lookup};
use crate::config::{NodeConfig, StorageKind};
use crate::net::endpoint::NodeAddress;
use crate::storage::{CommandError, NodeId, Request, Response, Store, TypeConfig};
use crate::supervisor::{NodeSupervisor, SupervisorArgs, SupervisorMsg};

/// `DATA_DIR/http.addr`: the HTTP address the node serves on (`aspen admin --data-dir`).
pub const HTTP_ADDR_FILE: &str = "http.addr";

/// How long a client call waits for the Raft actor before giving up.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

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

/// What the node's parts publish for observers.
pub struct NodeShared {
    pub node_id: NodeId,
    /// `storage.quota_bytes`.
    pub quota_bytes: u64,
    checks: Mutex<BTreeMap<String, Check>>,
    restarts: Mutex<BTreeMap<ActorKind, u64>>,
    store: Mutex<Option<Arc<Store>>>,
    raft: Mutex<Option<Raft<TypeConfig>>>,
    address: OnceLock<NodeAddress>,
    failure: watch::Sender<Option<String>>,
    shutdown: watch::Sender<bool>,
    /// Set when the node starts stopping: client requests are refused from then on.
    stopping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeShared")
            .field("node_id", &self.node_id)
            .field("address", &self.address())
            .field("failure", &self.failure())
            .finish_non_exhaustive()
    }
}

impl NodeShared {
    pub fn new(node_id: NodeId, quota_bytes: u64) -> Self {
        NodeShared {
            node_id,
            quota_bytes,
            checks: Mutex::default(),
            restarts: Mutex::default(),
            store: Mutex::default(),
            raft: Mutex::default(),
            address: OnceLock::new(),
            failure: watch::channel(None).0,
            shutdown: watch::channel(false).0,
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
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

    pub fn set_store(&self, store: Option<Arc<Store>>) {
        *lock(&self.store) = store;
    }

    pub fn store(&self) -> Option<Arc<Store>> {
        lock(&self.store).clone()
    }

    /// Publishes (or withdraws) the running Raft instance, for the Raft transport and
    /// membership changes.
    pub fn set_raft(&self, raft: Option<Raft<TypeConfig>>) -> Option<Raft<TypeConfig>> {
        std::mem::replace(&mut *lock(&self.raft), raft)
    }

    pub fn raft(&self) -> Option<Raft<TypeConfig>> {
        lock(&self.raft).clone()
    }

    /// A copy of the current Raft metrics.
    pub fn raft_metrics(&self) -> Option<Metrics> {
        self.with_raft_metrics(Metrics::clone)
    }

    /// Reads the current Raft metrics in place (no copy of the membership): for per-request
    /// paths.
    pub fn with_raft_metrics<R>(&self, read: impl FnOnce(&Metrics) -> R) -> Option<R> {
        lock(&self.raft)
            .as_ref()
            .map(|raft| read(&raft.metrics().borrow()))
    }

    /// This node's address on the network, once its endpoint is bound.
    pub fn address(&self) -> Option<NodeAddress> {
        self.address.get().copied()
    }

    pub fn set_address(&self, address: NodeAddress) {
        let _ = self.address.set(address);
    }

    /// The quota alarm: `Some((file bytes, quota))` while the database file is at or over
    /// `storage.quota_bytes`. Measured now, so it clears by itself once a compaction shrinks
    /// the file. Never on for the in-memory store (no file).
    pub fn quota_alarm(&self) -> Option<(u64, u64)> {
        let store = self.store()?;
        quota_alarm(&store, self.quota_bytes)
    }

    /// Proposes a request through Raft and returns the state machine's response. As the
    /// leader, refuses a command that adds data while the quota alarm is on.
    pub async fn write(&self, request: Request) -> Result<Response, NodeError> {
        let raft = self.raft_actor()?;
        if request.command.adds_data()
            && self.with_raft_metrics(|m| m.current_leader) == Some(Some(self.node_id))
            && let Some((bytes, quota)) = self.quota_alarm()
        {
            return Err(NodeError::Command(CommandError::QuotaExceeded {
                bytes,
                quota,
            }));
        }
        ractor::call_t!(raft, RaftMsg::Write, REQUEST_TIMEOUT_MS, request)
            .map_err(|e| NodeError::Call(e.to_string()))?
            .map_err(NodeError::from)
    }

    /// Waits until a read of the local store is linearizable.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let raft = self.raft_actor()?;
        ractor::call_t!(raft, RaftMsg::ReadBarrier, REQUEST_TIMEOUT_MS)
            .map_err(|e| NodeError::Call(e.to_string()))?
            .map_err(NodeError::from)
    }

    fn raft_actor(&self) -> Result<ActorRef<RaftMsg>, NodeError> {
        if let Some(reason) = self.failure() {
            return Err(NodeError::Failed(reason));
        }
        lookup(ActorKind::Raft, self.node_id).ok_or(NodeError::NotRunning)
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

    /// Asks the process running this node to stop it gracefully (`POST /admin/shutdown`).
    pub fn request_shutdown(&self) {
        tracing::info!(node_id = self.node_id, "shutdown requested");
        self.shutdown.send_replace(true);
    }

    /// Whether the node is stopping (client requests are refused, as not proposed).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once a shutdown was requested.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }

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

/// Builds a snapshot of everything applied now and waits (at most `timeout`) until it exists;
/// with `purge_all`, then purges the whole log behind it (ignoring `raft.log_entries_kept`)
/// and waits for that too. Returns the metrics once done.
pub async fn snapshot_now(
    raft: &Raft<TypeConfig>,
    purge_all: bool,
    timeout: Duration,
) -> Result<Metrics, String> {
    let applied = raft.metrics().borrow().last_applied.map(|id| id.index);
    raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
    let built = raft
        .wait(Some(timeout))
        .metrics(
            |m| m.snapshot.map(|id| id.index) >= applied,
            "snapshot built",
        )
        .await
        .map_err(|e| format!("snapshot not built: {e}"))?;
    let Some(snapshot) = built.snapshot.filter(|_| purge_all) else {
        return Ok(built);
    };
    raft.trigger()
        .purge_log(snapshot.index)
        .await
        .map_err(|e| e.to_string())?;
    raft.wait(Some(timeout))
        .metrics(
            |m| m.purged.map(|id| id.index) >= Some(snapshot.index),
            "log purged",
        )
        .await
        .map_err(|e| format!("log not purged: {e}"))
}

/// `Some((file bytes, quota))` when `store`'s file is at or over `quota` bytes.
pub fn quota_alarm(store: &Store, quota: u64) -> Option<(u64, u64)> {
    let bytes = store.file_size()?;
    (bytes >= quota).then_some((bytes, quota))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a plain read or assignment: a poisoned lock holds whole data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a client request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("node: failed, not serving: {0}")]
    Failed(String),
    #[error("node: raft is not running (it is starting or restarting)")]
    NotRunning,
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error("node: {0}")]
    Call(String),
    /// Refused before proposing: nothing changed.
    #[error(transparent)]
    Command(CommandError),
}

/// A running node: its supervisor, what it shares, its network address and its HTTP address.
pub struct Node {
    pub shared: Arc<NodeShared>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub faults: Faults,
    pub http_address: SocketAddr,
    address: NodeAddress,
    router: iroh::protocol::Router,
    supervisor_task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
}

impl Node {
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Proposes a request through Raft and returns the state machine's response.
    pub async fn write(&self, request: Request) -> Result<Response, NodeError> {
        self.shared.write(request).await
    }

    /// Waits until a read of the local store is linearizable.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        self.shared.read_barrier().await
    }

    /// This node's address: `ENDPOINT_ID@IP:PORT`.
    pub fn address(&self) -> NodeAddress {
        self.address
    }

    /// Stops taking requests; as the leader, waits (at most `HANDOVER_WAIT`) until every voter
    /// still replicating holds the whole log, so the next leader has every acknowledged write
    /// and nothing is left to resend; then stops every actor and the HTTP server. Storage ends
    /// with one fsync'd commit, so a restart replays nothing.
    pub async fn shutdown(self) {
        // Refuse new client requests first, but keep the endpoint (closed with the router)
        // until the followers have the log: replication needs it.
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wait_followers_caught_up().await;
        let _ = self.router.shutdown().await;
        self.supervisor.stop(Some("shutdown".into()));
        let _ = self.supervisor_task.await;
        self.http_task.abort();
        let _ = self.http_task.await;
    }
}

/// How long a leader that is shutting down waits, at most, for its followers to hold its
/// whole log.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// A follower still behind whose replication made no progress for this long is not waited
/// for (it is down or cut off).
const HANDOVER_STALLED: Duration = Duration::from_millis(250);

impl Node {
    /// As the leader, waits until every voter that is still replicating holds the whole log.
    async fn wait_followers_caught_up(&self) {
        let Some(raft) = self.shared.raft() else {
            return;
        };
        let id = self.node_id();
        let started = tokio::time::Instant::now();
        // Follower -> (matched index, when it last moved).
        let mut progress: BTreeMap<NodeId, (Option<u64>, tokio::time::Instant)> = BTreeMap::new();
        loop {
            let now = tokio::time::Instant::now();
            let waiting = {
                let metrics = raft.metrics().borrow().clone();
                if metrics.current_leader != Some(id) {
                    return;
                }
                let last = metrics.last_log_index;
                let Some(replication) = metrics.replication.as_ref() else {
                    return;
                };
                metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != id)
                    .filter(|v| {
                        let matched = replication.get(v).copied().flatten().map(|l| l.index);
                        if matched >= last {
                            return false;
                        }
                        let seen = progress.entry(*v).or_insert((matched, now));
                        if seen.0 != matched {
                            *seen = (matched, now);
                        }
                        now.duration_since(seen.1) < HANDOVER_STALLED
                    })
                    .count()
            };
            if waiting == 0 {
                return;
            }
            if started.elapsed() >= HANDOVER_WAIT {
                tracing::warn!(
                    node_id = id,
                    "shutdown: followers did not catch up within {HANDOVER_WAIT:?}"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The node's secret key: from `DATA_DIR/node.key` (created on first start); a fresh one for an
/// in-memory node without a data dir.
fn node_key(config: &NodeConfig) -> std::io::Result<iroh::SecretKey> {
    if config.node.storage == StorageKind::Inmemory && config.node.data_dir.as_os_str().is_empty() {
        return Ok(iroh::SecretKey::generate());
    }
    crate::net::endpoint::load_or_create_key(&config.node.data_dir)
}

/// Longest `start_node` waits for Raft to be published before it writes `node.addr` anyway
/// (replaying a long log can take a while; the address is still written).
const RAFT_START_WAIT_MS: u64 = 30_000;

/// Waits until the supervisor has published Raft, the node has failed (it then says why on
/// `/health`), or [`RAFT_START_WAIT_MS`] passed.
async fn wait_for_raft(shared: &NodeShared) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(RAFT_START_WAIT_MS);
    while shared.raft().is_none()
        && shared.failure().is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts a node: its iroh endpoint (Raft and client protocols), the supervision tree
/// (storage, raft, ttl, health) and the HTTP endpoints. Writes `DATA_DIR/node.addr`.
pub async fn start_node(config: NodeConfig, faults: Faults) -> std::io::Result<Node> {
    use crate::net::{endpoint, proto::CLIENT_ALPN, raft::RAFT_ALPN};

    let actors = ActorKind::ALL.map(ActorKind::as_str);
    crate::metrics::register_node(config.node.id, &actors);
    let shared = Arc::new(NodeShared::new(config.node.id, config.storage.quota_bytes));
    let key = node_key(&config)?;
    let alpns = vec![RAFT_ALPN.to_vec(), CLIENT_ALPN.to_vec()];
    let ep = endpoint::bind(key, config.net.address, alpns).await?;
    let address = endpoint::local_address(&ep)?;
    shared.set_address(address);
    let connections = crate::net::connections::Connections::new(
        ep.clone(),
        Duration::from_millis(config.net.connect_timeout_ms),
    );
    let transport = crate::net::raft::RaftTransport {
        node_id: config.node.id,
        connections: connections.clone(),
        faults: faults.net.clone(),
    };
    let raft_service = crate::net::raft::RaftService {
        shared: Arc::clone(&shared),
        peers: config.net.peer_ids(),
        faults: faults.net.clone(),
    };
    let client_service = crate::net::service::ClientService {
        shared: Arc::clone(&shared),
        connections,
        faults: faults.net.clone(),
        request_timeout: Duration::from_millis(config.net.request_timeout_ms),
        slow_request: Duration::from_millis(config.net.slow_request_ms),
        vault_labels: Arc::default(),
        vault_labels_max: usize::try_from(config.storage.vaults_max).unwrap_or(usize::MAX),
    };

    let listener = tokio::net::TcpListener::bind(config.http.address).await?;
    let http_address = listener.local_addr()?;
    if !config.node.data_dir.as_os_str().is_empty() {
        endpoint::write_text_file(
            &config.node.data_dir,
            HTTP_ADDR_FILE,
            &http_address.to_string(),
        )?;
    }
    let http_task = tokio::spawn(crate::net::http::serve(
        listener,
        Arc::clone(&shared),
        config.http.admin_token.clone(),
        config.net.fault_injection.then(|| faults.net.clone()),
    ));
    let data_dir = config.node.data_dir.clone();
    let args = SupervisorArgs {
        config,
        shared: Arc::clone(&shared),
        faults: faults.clone(),
        transport,
    };
    let (supervisor, supervisor_task) = Actor::spawn(None, NodeSupervisor, args)
        .await
        .map_err(|e| std::io::Error::other(format!("node: supervisor failed to start: {e}")))?;
    let router = iroh::protocol::Router::builder(ep)
        .accept(RAFT_ALPN, raft_service)
        .accept(CLIENT_ALPN, client_service)
        .spawn();
    // Written once the node serves: a tool that finds the address can use it. The supervisor
    // starts Raft after this function's `spawn` returns; until it is published a client would
    // be told "raft is not running" (`cluster init` failed so in a CI run).
    wait_for_raft(&shared).await;
    if !data_dir.as_os_str().is_empty() {
        endpoint::write_addr_file(&data_dir, &address)?;
    }
    tracing::info!(node_id = shared.node_id, %address, %http_address, "node started");
    Ok(Node {
        shared,
        supervisor,
        faults,
        http_address,
        address,
        router,
        supervisor_task,
        http_task,
    })
}

/// Logs to stderr with `tracing`: `RUST_LOG` when set, else `level` from the config.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a node until Ctrl-C / SIGTERM (a clean stop: exit 0) or until it fails (exit 1 when
/// `exit_on_failure` is set; otherwise it keeps answering `/health` with 503).
pub async fn run_until_stopped(config: NodeConfig) -> std::process::ExitCode {
    let exit_on_failure = config.node.exit_on_failure;
    let node = match start_node(config, Faults::default()).await {
        Ok(node) => node,
        Err(error) => {
            tracing::error!(%error, "cannot start the node");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "aspen-node {} at {} serving http on {}",
        node.node_id(),
        node.address(),
        node.http_address
    );
    let shared = Arc::clone(&node.shared);
    let failed = async {
        let reason = shared.failed().await;
        if exit_on_failure {
            reason
        } else {
            std::future::pending().await
        }
    };
    let code = tokio::select! {
        _ = shutdown_signal() => std::process::ExitCode::SUCCESS,
        _ = shared.shutdown_requested() => std::process::ExitCode::SUCCESS,
        reason = failed => {
            tracing::error!(%reason, "exiting: node failed and exit_on_failure is set");
            std::process::ExitCode::FAILURE
        }
    };
    node.shutdown().await;
    code
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
