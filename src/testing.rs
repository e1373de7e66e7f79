//! Actor-level test harness: a whole node (supervision tree, storage on a real redb file,
//! HTTP on a free loopback port) started in-process on a temporary directory, with fault
//! injection (panic, kill or fail the start of a named actor; force a health check critical;
//! stop and start storage; corrupt the durable meta) and bounded waits on observable state.

use crate::api::WriteOp;
use std::time::Duration;

use crate::actors::health::HealthMsg;
use crate::actors::raft::RaftMsg;
use crate::actors::sql::SqlMsg;
use crate::actors::storage::StorageMsg;
use crate::actors::ttl::TtlMsg;
use crate::actors::{ActorKind, Children};
use crate::api::Put;
use crate::command::{Command, LogId, Request, Response};
use crate::config::NodeConfig;
use crate::fault::Faults;
use crate::node::{Node, NodeError, start_node};
use crate::storage::StoreWrite;
use crate::supervisor::SupervisorMsg;

/// Default bound of every wait in the harness.
pub const WAIT_MS: u64 = 10_000;

/// The tests' root client key: fixed, so every harness node and process names it in
/// `auth.root_clients`.
/// The value of the series `series` (name and labels, as the page prints them) on a
/// Prometheus text page; 0 when absent.
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub fn root_key() -> iroh::SecretKey {
    iroh::SecretKey::from_bytes(&[0x5a; 32])
}

/// The tests' root client key's id, as `auth.root_clients` takes it.
pub fn root_id() -> String {
    root_key().public().to_string()
}

/// A client with the tests' root key.
pub async fn root_client(
    nodes: &[crate::api::NodeAddress],
) -> crate::client::Result<crate::client::Client> {
    crate::client::Client::connect_with_key(root_key(), nodes).await
}

/// Writes the tests' root key to `dir/root.key` (mode 0600), for `aspen --key` or
/// `ASPEN_KEY`; returns its path.
pub fn write_root_key(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("root.key");
    crate::files::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| file.write_all(&root_key().to_bytes()))
        .expect("write the test root key");
    path
}

/// A config for tests: a temporary data dir, a free loopback HTTP port, fast ticks, a quick
/// restart backoff, and the tests' root client.
pub fn test_config(node_id: u64, data_dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.node.id = node_id;
    config.node.data_dir = data_dir.to_path_buf();
    config.http.address = "127.0.0.1:0".parse().expect("loopback address");
    config.net.address = "127.0.0.1:0".parse().expect("loopback address");
    // Off unless a test turns it on (`etcd.address = "127.0.0.1:0"`).
    config.etcd.address = String::new();
    config.storage.cache_bytes = 8 << 20;
    config.raft.heartbeat_interval_ms = 50;
    config.raft.election_timeout_min_ms = 150;
    config.raft.election_timeout_max_ms = 300;
    config.ttl.interval_ms = 50;
    config.health.interval_ms = 100;
    config.health.ping_timeout_ms = 100;
    // The host's free disk space is not what a test checks (under 5% free, as a CI disk can
    // be, every node would be unhealthy): no free space is too little here. The thresholds
    // have their own test in actors/health.rs.
    config.health.disk_free_warning_percent = 0;
    config.health.disk_free_critical_percent = 0;
    config.supervisor.backoff_initial_ms = 10;
    config.supervisor.backoff_max_ms = 100;
    config.auth.root_clients = vec![root_id()];
    config
}

/// A node running in this process on its own temporary directory.
pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
    pub config: NodeConfig,
}

impl TestNode {
    /// Starts a node with `test_config`, adjusted by `configure`, and waits until it has a
    /// leader (itself) and every child is running.
    pub async fn start(node_id: u64, configure: impl FnOnce(&mut NodeConfig)) -> TestNode {
        // Warnings and errors, captured per test by the test harness.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(node_id, dir.path());
        configure(&mut config);
        config.validate().expect("test config");
        Self::run(config, dir).await
    }

    /// Like [`TestNode::start`], on `dir` (which may already hold a store, e.g. a restore).
    pub async fn start_in(
        node_id: u64,
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let mut config = test_config(node_id, dir.path());
        configure(&mut config);
        config.validate().expect("test config");
        Self::run(config, dir).await
    }

    /// Starts a node that waits to be made a cluster member (`raft.bootstrap = none`), with
    /// `net` shared with its peers for link faults; returns once every child runs.
    pub async fn start_member(
        node_id: u64,
        net: crate::fault::NetFaults,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(node_id, dir.path());
        config.raft.bootstrap = crate::config::Bootstrap::None;
        configure(&mut config);
        config.validate().expect("test config");
        let node = start_node(config.clone(), Faults::with_net(net))
            .await
            .expect("start node");
        let test = TestNode { node, dir, config };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        while !test.all_running().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node_id} did not start its actors"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        test
    }

    async fn run(config: NodeConfig, dir: tempfile::TempDir) -> TestNode {
        let node = start_node(config.clone(), Faults::default())
            .await
            .expect("start node");
        let test = TestNode { node, dir, config };
        let id = test.config.node.id;
        assert!(test.wait_serving().await, "node {id} did not start serving");
        test
    }

    /// Stops the node cleanly and starts it again on the same data dir.
    pub async fn restart(self) -> TestNode {
        let TestNode { node, dir, config } = self;
        node.shutdown().await;
        Self::run(config, dir).await
    }

    pub fn faults(&self) -> &Faults {
        &self.node.faults
    }

    /// Whether writes go through: a leader is known and every child runs.
    pub async fn wait_serving(&self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        while tokio::time::Instant::now() < deadline {
            if self.node.board.failure().is_none() && self.all_running().await && self.has_leader()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    fn has_leader(&self) -> bool {
        self.node
            .raft
            .leader()
            .is_some_and(|leader| leader == self.node.node_id())
    }

    pub async fn is_running(&self, kind: ActorKind) -> bool {
        ractor::call_t!(self.node.supervisor, SupervisorMsg::IsRunning, 1_000, kind)
            .unwrap_or(false)
    }

    async fn all_running(&self) -> bool {
        for kind in ActorKind::ALL {
            if !self.is_running(kind).await {
                return false;
            }
        }
        true
    }

    /// Makes `kind` panic inside its message handler.
    pub fn panic_actor(&self, kind: ActorKind) {
        let reason = format!("injected into {kind}");
        fn send<M: ractor::Message>(children: &Children, kind: ActorKind, message: M) -> bool {
            children
                .get::<M>(kind)
                .is_some_and(|actor| actor.cast(message).is_ok())
        }
        let children = &self.node.children;
        let sent = match kind {
            ActorKind::Storage => send(children, kind, StorageMsg::Panic(reason)),
            ActorKind::Raft => send(children, kind, RaftMsg::Panic(reason)),
            ActorKind::Ttl => send(children, kind, TtlMsg::Panic(reason)),
            ActorKind::Health => send(children, kind, HealthMsg::Panic(reason)),
            ActorKind::Sql => send(children, kind, SqlMsg::Panic(reason)),
        };
        assert!(sent, "{kind} is not running");
    }

    /// Kills `kind` as a failure (the supervisor restarts it per policy).
    pub fn kill_actor(&self, kind: ActorKind) {
        self.node
            .supervisor
            .cast(SupervisorMsg::KillChild(kind))
            .expect("supervisor running");
    }

    /// Stops storage (and everything depending on it) without counting a failure.
    pub async fn stop_storage(&self) {
        ractor::call_t!(
            self.node.supervisor,
            SupervisorMsg::StopChild,
            WAIT_MS,
            ActorKind::Storage
        )
        .expect("supervisor answers");
    }

    /// Starts storage again (the validation runs first), then its dependents.
    pub fn start_storage(&self) {
        self.node
            .supervisor
            .cast(SupervisorMsg::Start(ActorKind::Storage))
            .expect("supervisor running");
    }

    /// Writes `committed = last_applied - 1` into the file, which the validation must refuse.
    /// Stop storage first: this writes around the StorageActor, as a foreign process would.
    pub fn corrupt_committed_below_applied(&self) -> (u64, u64) {
        let store = self.node.store().expect("store open");
        let (applied, _) = store.applied_state().expect("applied state");
        let applied = applied.expect("something applied");
        let lower = LogId::new(applied.leader_id, applied.index - 1);
        store.save_committed(Some(&lower)).expect("save committed");
        // The saved value reaches the file with the next commit that writes it: the close.
        store.close().expect("write committed");
        (applied.index, lower.index)
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<Response, NodeError> {
        self.write(Command::Write(WriteOp::Put(Put::new(key, value))))
            .await
    }

    pub async fn write(&self, command: Command) -> Result<Response, NodeError> {
        self.node
            .write(Request {
                now_ms: crate::clock::now_ms(),
                command,
            })
            .await
    }

    /// Waits until `condition` holds, for at most `WAIT_MS`.
    pub async fn wait_until(&self, mut condition: impl FnMut(&TestNode) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        while tokio::time::Instant::now() < deadline {
            if condition(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}
