//! Harnesses: an in-process cluster of `TestNode`s sharing one `NetFaults`, and real
//! `aspen-node` processes on fixed loopback ports (so a restarted node keeps its address).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aspen::api::NodeId;
use aspen::client::Client;
use aspen::config::NodeConfig;
use aspen::fault::NetFaults;
use aspen::net::endpoint::{NodeAddress, read_addr_file};
use aspen::testing::{TestNode, WAIT_MS};

/// Polls `condition` every 10 ms until it holds or `WAIT_MS` passes.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// In-process nodes on real iroh endpoints, formed into one cluster.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, TestNode>,
    pub faults: NetFaults,
}

impl Cluster {
    /// Starts `n` nodes (ids `first..first + n`), initializes them as one cluster and waits
    /// for a leader every node agrees on. Actor names are process-wide, so tests running in
    /// parallel in this binary use disjoint ids.
    pub async fn start(first: NodeId, n: u64, configure: impl Fn(&mut NodeConfig)) -> Cluster {
        let faults = NetFaults::default();
        let mut nodes = BTreeMap::new();
        for id in first..first + n {
            nodes.insert(
                id,
                TestNode::start_member(id, faults.clone(), &configure).await,
            );
        }
        let cluster = Cluster { nodes, faults };
        let members: BTreeMap<NodeId, NodeAddress> = cluster
            .nodes
            .iter()
            .map(|(id, node)| (*id, node.node.address()))
            .collect();
        cluster
            .client()
            .await
            .cluster_init(&members)
            .await
            .expect("cluster init");
        cluster.wait_leader(&cluster.ids()).await;
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn address(&self, id: NodeId) -> NodeAddress {
        self.nodes[&id].node.address()
    }

    /// A client that knows every node.
    pub async fn client(&self) -> Client {
        let addresses: Vec<NodeAddress> = self.nodes.values().map(|n| n.node.address()).collect();
        aspen::testing::root_client(&addresses)
            .await
            .expect("client")
    }

    /// A client that talks to node `id` only.
    pub async fn client_of(&self, id: NodeId) -> Client {
        aspen::testing::root_client(&[self.address(id)])
            .await
            .expect("client")
    }

    pub fn leader_seen_by(&self, id: NodeId) -> Option<NodeId> {
        self.nodes[&id]
            .node
            .raft
            .metrics()
            .and_then(|m| m.current_leader)
    }

    /// Waits until every node in `ids` names the same leader, itself one of `ids`.
    pub async fn wait_leader(&self, ids: &[NodeId]) -> NodeId {
        let mut agreed = None;
        eventually("a leader all nodes agree on", || {
            let seen: Vec<Option<NodeId>> = ids.iter().map(|id| self.leader_seen_by(*id)).collect();
            agreed = seen[0].filter(|l| ids.contains(l) && seen.iter().all(|s| *s == Some(*l)));
            std::future::ready(agreed.is_some())
        })
        .await;
        agreed.expect("leader")
    }

    pub fn last_applied(&self, id: NodeId) -> Option<u64> {
        self.nodes[&id]
            .node
            .raft
            .metrics()
            .and_then(|m| m.last_applied.map(|l| l.index))
    }

    /// Waits until every node in `ids` applied as far as `leader`.
    pub async fn wait_converged(&self, leader: NodeId, ids: &[NodeId]) {
        eventually("followers applied as far as the leader", || {
            let target = self.last_applied(leader);
            std::future::ready(
                target.is_some() && ids.iter().all(|id| self.last_applied(*id) == target),
            )
        })
        .await;
    }

    pub async fn shutdown(self) {
        for (_, node) in self.nodes {
            node.shutdown().await;
        }
    }
}

/// A free loopback UDP port (bound once, then released for the node to take).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
        .port()
}

/// A real `aspen-node` process on a fixed loopback port and its own data dir.
pub struct NodeProcess {
    pub id: NodeId,
    pub dir: PathBuf,
    pub port: u16,
    pub bootstrap: &'static str,
    /// Extra environment (config overrides) for every start.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts node `id` in `dir`; `bootstrap` is `single` or `none`.
    pub fn start(id: NodeId, dir: &Path, bootstrap: &'static str) -> NodeProcess {
        Self::start_with(id, dir, bootstrap, &[])
    }

    /// Starts node `id` with extra config overrides (`ASPEN_SECTION__KEY`, value).
    pub fn start_with(
        id: NodeId,
        dir: &Path,
        bootstrap: &'static str,
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let mut node = NodeProcess {
            id,
            dir: dir.to_path_buf(),
            port: free_udp_port(),
            bootstrap,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("node.addr"));
        let _ = std::fs::remove_file(self.dir.join(aspen::node::HTTP_ADDR_FILE));
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/node.toml");
        // etcd's clients act as the tests' root client (beside the data dir, which the node
        // makes private itself).
        let root_key = aspen::testing::write_root_key(self.dir.parent().expect("a parent dir"));
        let _ = std::fs::remove_file(self.dir.join(aspen::node::ETCD_ADDR_FILE));
        let child = Command::new(env!("CARGO_BIN_EXE_aspen-node"))
            .args(["--config", config])
            .env("ASPEN_NODE__ID", self.id.to_string())
            .env("ASPEN_NODE__DATA_DIR", &self.dir)
            .env("ASPEN_HTTP__ADDRESS", "127.0.0.1:0")
            .env("ASPEN_ETCD__ADDRESS", "127.0.0.1:0")
            .env("ASPEN_ETCD__CLIENT_KEY", &root_key)
            .env("ASPEN_NET__ADDRESS", format!("127.0.0.1:{}", self.port))
            .env("ASPEN_RAFT__BOOTSTRAP", self.bootstrap)
            .env("ASPEN_RAFT__HEARTBEAT_INTERVAL_MS", "50")
            .env("ASPEN_RAFT__ELECTION_TIMEOUT_MIN_MS", "200")
            .env("ASPEN_RAFT__ELECTION_TIMEOUT_MAX_MS", "400")
            .env("ASPEN_STORAGE__CACHE_BYTES", (8 << 20).to_string())
            .env("ASPEN_AUTH__ROOT_CLIENTS", aspen::testing::root_id())
            .env("RUST_LOG", "error")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn aspen-node");
        self.child = Some(child);
    }

    /// Waits for the node to write its address, and returns it.
    pub async fn address(&self) -> NodeAddress {
        let mut address = None;
        eventually("the node wrote node.addr", || {
            address = read_addr_file(&self.dir).ok();
            std::future::ready(address.is_some())
        })
        .await;
        address.expect("address")
    }

    /// The HTTP address the running process wrote to DIR/http.addr.
    #[allow(dead_code)] // used by tests/linearizability.rs, which shares this file
    pub async fn http_address(&self) -> String {
        let mut address = None;
        eventually("the node wrote http.addr", || {
            address = std::fs::read_to_string(self.dir.join(aspen::node::HTTP_ADDR_FILE)).ok();
            std::future::ready(address.is_some())
        })
        .await;
        address.expect("http address").trim().to_string()
    }

    /// The etcd API address the running process wrote to DIR/etcd.addr.
    #[allow(dead_code)] // used by tests/cluster only
    pub async fn etcd_address(&self) -> String {
        let mut address = None;
        eventually("the node wrote etcd.addr", || {
            address = std::fs::read_to_string(self.dir.join(aspen::node::ETCD_ADDR_FILE)).ok();
            std::future::ready(address.is_some())
        })
        .await;
        address.expect("etcd address").trim().to_string()
    }

    /// The running process's id.
    #[allow(dead_code)] // used by tests/cluster only
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no clean shutdown, no final commit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// Each node's etcd API address (`HOST:PORT`), by node id.
pub async fn etcd_addresses(nodes: &BTreeMap<NodeId, NodeProcess>) -> BTreeMap<NodeId, String> {
    let mut addresses = BTreeMap::new();
    for (id, node) in nodes {
        addresses.insert(*id, node.etcd_address().await);
    }
    addresses
}

/// Starts processes `ids` (each in `root/n{id}`, with `env`), forms them into one cluster and
/// returns them with their addresses once a leader is elected.
pub async fn start_process_cluster(
    root: &Path,
    ids: std::ops::RangeInclusive<NodeId>,
    env: &[(&str, &str)],
) -> (BTreeMap<NodeId, NodeProcess>, BTreeMap<NodeId, NodeAddress>) {
    let nodes: BTreeMap<NodeId, NodeProcess> = ids
        .map(|id| {
            let dir = root.join(format!("n{id}"));
            (id, NodeProcess::start_with(id, &dir, "none", env))
        })
        .collect();
    let mut members = BTreeMap::new();
    for (id, node) in &nodes {
        members.insert(*id, node.address().await);
    }
    let addresses: Vec<NodeAddress> = members.values().copied().collect();
    let client = aspen::testing::root_client(&addresses)
        .await
        .expect("client");
    client.cluster_init(&members).await.expect("cluster init");
    eventually("a leader is elected", || async {
        client.status().await.is_ok_and(|s| s.leader.is_some())
    })
    .await;
    (nodes, members)
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
