//! The node: the only wiring. `start_node` opens the store, binds the endpoint, starts the
//! supervision tree and the servers, and hands the servers the [`NodeCore`], which implements the
//! ports `net` declares (`client`: the client protocol; `http`: the HTTP endpoints and the Raft
//! transport's receiving side) with the Raft handle, the SqlActor, read views of the store and the
//! health board. Its only redb write is opening the store; every other write goes to the
//! StorageActor (Raft's through the RaftHandle, `/admin/defrag` through the `StorageWriter`).
//!
//! Long because starting, running and stopping a node (with the leader handover) is one sequence of
//! wiring.

mod auth;
mod client;
mod data_dir;
mod hashkv;
mod http;
pub(crate) mod watcher;

pub use data_dir::CLIENT_KEY_FILE;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::actors::raft::{RaftError, RaftHandle};
use crate::actors::sql::SqlHandle;
use crate::actors::storage::StorageWriter;
use crate::actors::{ActorKind, Children};
use crate::api::{CommandError, NodeAddress, NodeId};
use crate::command::{Request, Response};
use crate::config::{NodeConfig, StorageKind};
use crate::fault::Faults;
use crate::storage::{Store, StoreOptions};
use crate::supervisor::{HealthBoard, NodeSupervisor, SupervisorArgs, SupervisorMsg};

/// `DATA_DIR/http.addr`: the HTTP address the node serves on (`aspen admin --data-dir`).
pub const HTTP_ADDR_FILE: &str = "http.addr";
/// The etcd API's address, written into the data dir once it listens (`etcd.address`).
pub const ETCD_ADDR_FILE: &str = "etcd.addr";

/// How long a write or a read barrier waits for Raft's answer before giving up.
pub const RAFT_WAIT_MS: u64 = 10_000;

/// What the node's servers reach through their ports: the health board, the Raft handle, the
/// store, and the node's own lifecycle (stopping, shutdown requested) and write policy (the
/// quota alarm). Implements `net`'s ports (in `client` and `http`).
pub struct NodeCore {
    pub node_id: NodeId,
    pub board: Arc<HealthBoard>,
    pub raft: RaftHandle,
    sql: SqlHandle,
    /// The StorageActor, for `/admin/defrag`.
    storage: StorageWriter,
    /// `None` when the file could not be opened (the node then fails and says why).
    store: Option<Arc<Store>>,
    /// The reader of live events the node's watches share (with the store).
    watch_hub: Option<Arc<crate::node::watcher::WatchHub>>,
    address: NodeAddress,
    /// `storage.quota_bytes`.
    quota_bytes: u64,
    /// How long a request waits for Raft (`net.request_timeout_ms`).
    request_timeout: Duration,
    shutdown: watch::Sender<bool>,
    /// Set when the node starts stopping: client requests are refused from then on.
    stopping: AtomicBool,
    /// `auth.enabled`: client requests are checked against the replicated roles.
    auth_enabled: bool,
    /// Whom this node would make root while the cluster has none.
    roots: crate::actors::ttl::RootCandidates,
    /// Connections to the other members (shared with the Raft transport): the hash check
    /// asks them for their hashes.
    peers: crate::net::connections::Connections,
    net_faults: crate::fault::NetFaults,
}

impl std::fmt::Debug for NodeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("node_id", &self.node_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl NodeCore {
    /// The store, when it is open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// The quota alarm: `Some((file bytes, quota))` while the database file is at or over
    /// `storage.quota_bytes`.
    pub fn quota_alarm(&self) -> Option<(u64, u64)> {
        self.store.as_ref()?.quota_alarm(self.quota_bytes)
    }

    /// Proposes a request through Raft and returns the state machine's response. As the
    /// leader, refuses a command that adds data while the quota alarm is on.
    pub async fn write(&self, request: Request) -> Result<Response, NodeError> {
        self.serving()?;
        if request.command.adds_data()
            && self.raft.leader() == Some(self.node_id)
            && let Some((bytes, quota)) = self.quota_alarm()
        {
            return Err(NodeError::Command(CommandError::QuotaExceeded {
                bytes,
                quota,
            }));
        }
        Ok(self.raft.write(request).await?)
    }

    /// Waits until a read of the local store is linearizable.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        self.serving()?;
        Ok(self.raft.read_barrier().await?)
    }

    /// Refuses when the node has failed.
    fn serving(&self) -> Result<(), NodeError> {
        match self.board.failure() {
            Some(reason) => Err(NodeError::Failed(reason)),
            None => Ok(()),
        }
    }

    /// Asks the process running this node to stop it gracefully (`POST /admin/shutdown`).
    pub fn request_shutdown(&self) {
        tracing::info!(node_id = self.node_id, "shutdown requested");
        self.shutdown.send_replace(true);
    }

    /// Whether the node is stopping (client requests are refused, as not proposed).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once a shutdown was requested.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }
}

/// Why a client request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("node: failed, not serving: {0}")]
    Failed(String),
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// Refused before proposing: nothing changed.
    #[error(transparent)]
    Command(CommandError),
}

/// Opens the node's store as configured.
fn open_store(config: &NodeConfig, faults: &Faults) -> Result<Store, crate::storage::Error> {
    let mut options = match config.node.storage {
        StorageKind::File => StoreOptions::file(&config.node.data_dir),
        StorageKind::Inmemory => StoreOptions::in_memory(),
    };
    options.quick_repair = config.storage.quick_repair;
    options.cache_bytes = config.storage.cache_bytes as usize;
    options.faults = faults.storage.clone();
    Store::open(&options)
}

/// A running node: its supervisor, its parts, its network address and its HTTP address.
pub struct Node {
    pub core: Arc<NodeCore>,
    /// Checks, restarts and the failed state, as `/health` shows them.
    pub board: Arc<HealthBoard>,
    pub raft: RaftHandle,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The supervisor's running children.
    pub children: Children,
    /// The client requests and connections in progress, and their bounds.
    pub admission: crate::net::admission::Admission,
    pub faults: Faults,
    pub http_address: SocketAddr,
    address: NodeAddress,
    router: iroh::protocol::Router,
    supervisor_task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
    /// The periodic hash check (`health.hash_check_interval_ms`), when on.
    hash_task: Option<tokio::task::JoinHandle<()>>,
    /// The etcd API (`etcd.address`), when on.
    etcd: Option<crate::etcd::EtcdServer>,
}

impl Node {
    pub fn node_id(&self) -> NodeId {
        self.core.node_id
    }

    /// Proposes a request through Raft and returns the state machine's response.
    pub async fn write(&self, request: Request) -> Result<Response, NodeError> {
        self.core.write(request).await
    }

    /// Waits until a read of the local store is linearizable.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        self.core.read_barrier().await
    }

    /// The store, when it is open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.core.store()
    }

    /// This node's address: `ENDPOINT_ID@IP:PORT`.
    pub fn address(&self) -> NodeAddress {
        self.address
    }

    /// Where the etcd API listens, when it is on.
    pub fn etcd_address(&self) -> Option<SocketAddr> {
        self.etcd.as_ref().map(|etcd| etcd.address)
    }

    /// Stops taking requests; as the leader, waits (at most `HANDOVER_WAIT`) until every voter
    /// still replicating holds the whole log, so the next leader has every acknowledged write
    /// and nothing is left to resend; then stops every actor and the HTTP server. Storage ends
    /// with one fsync'd commit, so a restart replays nothing. Returns once the database file
    /// is closed (or after `STORE_RELEASE_WAIT`, with a warning), so the same process can
    /// open it again.
    pub async fn shutdown(self) {
        let store = self.core.store.as_ref().map(Arc::downgrade);
        let node_id = self.node_id();
        self.stop().await;
        // Tasks that served the last requests (an HTTP connection the client just closed, a
        // client stream) may hold the store a moment longer; the file closes with the last.
        let Some(store) = store else {
            return;
        };
        let deadline = tokio::time::Instant::now() + STORE_RELEASE_WAIT;
        while store.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    node_id,
                    holders = store.strong_count(),
                    "node: stopped, but the store is still held open"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(mut self) {
        // Refuse new client requests first, but keep the endpoint (closed with the router)
        // until the followers have the log: replication needs it.
        self.core.stopping.store(true, Ordering::SeqCst);
        if let Some(task) = self.hash_task.take() {
            task.abort();
            let _ = task.await;
        }
        self.wait_followers_caught_up().await;
        let _ = self.router.shutdown().await;
        self.supervisor.stop(Some("shutdown".into()));
        let _ = self.supervisor_task.await;
        self.http_task.abort();
        let _ = self.http_task.await;
        if let Some(etcd) = self.etcd.take() {
            etcd.stop().await;
        }
    }
}

/// How long `Node::shutdown` waits for the last holders of the store to let it go.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(5);
/// How long a leader that is shutting down waits, at most, for its followers to hold its
/// whole log.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// A follower still behind whose replication made no progress for this long is not waited
/// for (it is down or cut off).
const HANDOVER_STALLED: Duration = Duration::from_millis(250);

impl Node {
    /// As the leader, waits until every voter that is still replicating holds the whole log.
    async fn wait_followers_caught_up(&self) {
        let Some(raft) = self.raft.raft() else {
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

/// Longest `start_node` waits for Raft to be published before it writes `node.addr` anyway
/// (replaying a long log can take a while; the address is still written).
const RAFT_START_WAIT_MS: u64 = 30_000;

/// Waits until the RaftActor has published Raft, the node has failed (it then says why on
/// `/health`), or [`RAFT_START_WAIT_MS`] passed.
async fn wait_for_raft(raft: &RaftHandle, board: &HealthBoard) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(RAFT_START_WAIT_MS);
    while !raft.is_running() && board.failure().is_none() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts a node: its iroh endpoint (Raft and client protocols), the supervision tree
/// (storage, raft, ttl, health) and the HTTP endpoints. Writes `DATA_DIR/node.addr`.
pub async fn start_node(config: NodeConfig, faults: Faults) -> std::io::Result<Node> {
    use crate::api::CLIENT_ALPN;
    use crate::net::{endpoint, raft::RAFT_ALPN};

    let node_id = config.node.id;
    let actors = ActorKind::ALL.map(ActorKind::as_str);
    crate::metrics::register_node(node_id, &actors);
    let board = Arc::new(HealthBoard::new(node_id));
    let request_timeout = Duration::from_millis(config.net.request_timeout_ms);
    let raft = RaftHandle::new(node_id, Duration::from_millis(RAFT_WAIT_MS));
    let sql = SqlHandle::default();
    let storage = StorageWriter::default();
    let children = Children::default();
    let prepared = data_dir::prepare(&config)?;
    let roots: crate::actors::ttl::RootCandidates = Arc::new(std::sync::Mutex::new(
        prepared.roots.iter().copied().collect(),
    ));
    let alpns = vec![RAFT_ALPN.to_vec(), CLIENT_ALPN.to_vec()];
    let ep = endpoint::bind(prepared.key, config.net.address, alpns).await?;
    let address = endpoint::local_address(&ep)?;
    let store = open_store(&config, &faults).map(Arc::new);
    let connections = crate::net::connections::Connections::new(
        ep.clone(),
        Duration::from_millis(config.net.connect_timeout_ms),
    );
    let core = Arc::new(NodeCore {
        node_id,
        board: Arc::clone(&board),
        raft: raft.clone(),
        sql: sql.clone(),
        storage: storage.clone(),
        store: store.as_ref().ok().cloned(),
        watch_hub: store
            .as_ref()
            .ok()
            .map(|store| Arc::new(crate::node::watcher::WatchHub::new(Arc::clone(store)))),
        address,
        quota_bytes: config.storage.quota_bytes,
        request_timeout,
        shutdown: watch::channel(false).0,
        stopping: AtomicBool::new(false),
        auth_enabled: config.auth.enabled,
        roots: Arc::clone(&roots),
        peers: connections.clone(),
        net_faults: faults.net.clone(),
    });
    let transport = crate::net::raft::RaftTransport {
        node_id,
        connections: connections.clone(),
        faults: faults.net.clone(),
        flush_mark: store
            .as_ref()
            .map(|store| store.flush_mark())
            .unwrap_or_default(),
    };
    let raft_service = crate::net::raft_service::RaftService {
        port: Arc::clone(&core),
        peers: config.net.peer_ids(),
        faults: faults.net.clone(),
        snapshot_bytes_max: config.storage.quota_bytes,
    };
    let admission =
        crate::net::admission::Admission::new(config.net.requests_max, config.net.connections_max);
    let client_service = crate::net::service::ClientService {
        port: Arc::clone(&core),
        connections,
        faults: faults.net.clone(),
        request_timeout,
        slow_request: Duration::from_millis(config.net.slow_request_ms),
        vault_labels: Arc::default(),
        vault_labels_max: usize::try_from(config.storage.vaults_max).unwrap_or(usize::MAX),
        request_bytes_max: usize::try_from(config.net.request_bytes_max).unwrap_or(usize::MAX),
        admission: admission.clone(),
    };

    let etcd = match config.etcd.socket_address() {
        None => None,
        Some(etcd_address) => {
            let client = match config.etcd.client_key.trim() {
                "" => iroh::SecretKey::generate().public(),
                path => crate::client::load_key(Path::new(path))
                    .map_err(|e| std::io::Error::other(format!("etcd.client_key: {e}")))?
                    .public(),
            };
            let server = crate::etcd::start(
                etcd_address,
                client_service.clone(),
                client,
                config.etcd.progress_notify_ms,
            )
            .await
            .map_err(|e| std::io::Error::other(format!("etcd.address {etcd_address}: {e}")))?;
            if let Some(dir) = data_dir::data_dir(&config) {
                endpoint::write_text_file(dir, ETCD_ADDR_FILE, &server.address.to_string())?;
            }
            Some(server)
        }
    };
    let listener = tokio::net::TcpListener::bind(config.http.address).await?;
    let http_address = listener.local_addr()?;
    if let Some(dir) = data_dir::data_dir(&config) {
        endpoint::write_text_file(dir, HTTP_ADDR_FILE, &http_address.to_string())?;
    }
    let http_task = tokio::spawn(crate::net::http::serve(
        listener,
        Arc::clone(&core),
        prepared.admin_token,
        config.net.fault_injection.then(|| faults.net.clone()),
    ));
    let hash_task = match config.health.hash_check_interval_ms {
        0 => None,
        ms => Some(tokio::spawn(hashkv::check_periodically(
            Arc::clone(&core),
            Duration::from_millis(ms),
        ))),
    };
    let data_dir = data_dir::data_dir(&config).map(Path::to_path_buf);
    let args = SupervisorArgs {
        config,
        store,
        address: address.to_string(),
        board: Arc::clone(&board),
        raft: raft.clone(),
        sql,
        storage,
        faults: faults.clone(),
        transport,
        roots,
        children: children.clone(),
    };
    let (supervisor, supervisor_task) = Actor::spawn(None, NodeSupervisor, args)
        .await
        .map_err(|e| std::io::Error::other(format!("node: supervisor failed to start: {e}")))?;
    let router = iroh::protocol::Router::builder(ep)
        .accept(RAFT_ALPN, raft_service)
        .accept(CLIENT_ALPN, client_service)
        .spawn();
    // Written once the node serves: a tool that finds the address can use it. The supervisor
    // starts Raft after this function's `spawn` returns; until it runs a client would be told
    // "raft is not running" (`cluster init` failed so in a CI run).
    wait_for_raft(&raft, &board).await;
    if let Some(dir) = data_dir {
        endpoint::write_addr_file(&dir, &address)?;
    }
    tracing::info!(node_id, %address, %http_address, "node started");
    Ok(Node {
        core,
        board,
        raft,
        supervisor,
        children,
        admission,
        faults,
        http_address,
        address,
        router,
        supervisor_task,
        http_task,
        hash_task,
        etcd,
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
    // The clones end with this block: `Node::shutdown` waits for the last holder of the store.
    let code = {
        let (core, board) = (Arc::clone(&node.core), Arc::clone(&node.board));
        let failed = async {
            let reason = board.failed().await;
            if exit_on_failure {
                reason
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = shutdown_signal() => std::process::ExitCode::SUCCESS,
            _ = core.shutdown_requested() => std::process::ExitCode::SUCCESS,
            reason = failed => {
                tracing::error!(%reason, "exiting: node failed and exit_on_failure is set");
                std::process::ExitCode::FAILURE
            }
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
