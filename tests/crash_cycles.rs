//! Whole-node crash cycles: `aspen-node` processes SIGKILLed again and again under client
//! load, in a 3-node cluster (the leader every other time) and as a single node. After each
//! kill the offline integrity check (which includes the cross-storage validation) passes on
//! the killed node's files; once it is restarted every acknowledged write is present and the
//! nodes converge on the same revision and the same keys and values.
//!
//! 30 kills per test here; `ASPEN_TEST_LONG=1` runs 300.

#[allow(dead_code)]
#[path = "cluster/util.rs"]
mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aspen::api::{KeyRange, NodeId};
use aspen::client::{Client, RangeOptions};
use aspen::net::endpoint::NodeAddress;

use util::{NodeProcess, eventually, start_process_cluster};

const WRITERS: u64 = 4;
/// Acknowledged writes between two kills, and after a kill before the next check.
const WRITES_PER_PHASE: u64 = 20;

fn kills() -> usize {
    if std::env::var_os("ASPEN_TEST_LONG").is_some_and(|v| v == "1") {
        300
    } else {
        30
    }
}

/// What the writers had acknowledged.
#[derive(Default)]
struct Acked {
    /// Keys written once: `u/W/I` -> value.
    unique: BTreeMap<String, String>,
    /// Keys overwritten by one writer, `hot/W` -> the highest counter acknowledged (the key
    /// may hold a higher one: a write whose answer was lost can still have been applied).
    hot: BTreeMap<String, u64>,
    count: u64,
}

/// Writers that put keys through a client knowing every node until stopped. `gate` pauses
/// them: each write holds a read guard, a check holds the write guard.
struct Load {
    gate: Arc<tokio::sync::RwLock<()>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(addresses: &[NodeAddress]) -> Load {
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let client = aspen::testing::root_client(addresses)
                .await
                .unwrap()
                .prefer(w as usize % addresses.len())
                .with_retry_budget(Duration::from_secs(2))
                // A write in flight to a killed node waits this long (no answer comes).
                .with_request_timeout(Duration::from_secs(1));
            let (gate, stop, acked) = (gate.clone(), stop.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _running = gate.read().await;
                    i += 1;
                    let (key, value) = if i.is_multiple_of(2) {
                        (format!("u/{w}/{i:08}"), format!("{w}-{i}"))
                    } else {
                        (format!("hot/{w}"), format!("{i:020}"))
                    };
                    // An error leaves the outcome unknown: only acknowledged writes count.
                    if client.put(key.as_str(), value.as_str()).await.is_ok() {
                        let mut acked = acked.lock().unwrap();
                        acked.count += 1;
                        if i.is_multiple_of(2) {
                            acked.unique.insert(key, value);
                        } else {
                            acked.hot.insert(key, i);
                        }
                    }
                }
            }));
        }
        Load {
            gate,
            stop,
            acked,
            tasks,
        }
    }

    fn count(&self) -> u64 {
        self.acked.lock().unwrap().count
    }

    /// Waits until `n` more writes than `from` are acknowledged.
    async fn wait_progress(&self, from: u64, n: u64) {
        eventually("writes are acknowledged", || {
            std::future::ready(self.count() >= from + n)
        })
        .await;
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// Every key with its value and mod revision, as node `address` holds them (a stale read of
/// that node alone), and the node's revision.
async fn contents(address: NodeAddress) -> (u64, BTreeMap<Vec<u8>, (Vec<u8>, u64)>) {
    let client = aspen::testing::root_client(&[address]).await.unwrap();
    let page = client
        .range(KeyRange::prefix(b""), &RangeOptions::stale())
        .await
        .unwrap();
    let kvs = page
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect();
    (page.revision, kvs)
}

/// Asserts every acknowledged write is in `kvs`.
fn assert_acknowledged_present(acked: &Acked, kvs: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>, at: &str) {
    for (key, value) in &acked.unique {
        let stored = kvs.get(key.as_bytes()).map(|(v, _)| v.as_slice());
        assert_eq!(
            stored,
            Some(value.as_bytes()),
            "{at}: acknowledged write {key} = {value} is missing or changed"
        );
    }
    for (key, counter) in &acked.hot {
        let stored = kvs
            .get(key.as_bytes())
            .map(|(v, _)| String::from_utf8_lossy(v).parse::<u64>().unwrap());
        assert!(
            stored.is_some_and(|s| s >= *counter),
            "{at}: {key} holds {stored:?}, older than the acknowledged write {counter}"
        );
    }
}

/// The offline integrity check (cross-storage validation included) on a killed node's dir.
fn assert_check_passes(dir: &Path, at: &str) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aspen-node"))
        .args(["check", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{at}: aspen-node check failed on {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn leader_of(client: &Client) -> NodeId {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(aspen::testing::WAIT_MS);
    loop {
        if let Some(leader) = client.status().await.ok().and_then(|s| s.leader) {
            return leader;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether every node answers its status with the same applied index.
async fn converged(members: &BTreeMap<NodeId, NodeAddress>) -> bool {
    let mut seen = Vec::new();
    for address in members.values() {
        let Ok(client) = aspen::testing::root_client(&[*address]).await else {
            return false;
        };
        match client.status_of(address).await {
            Ok(status) => seen.push(status.last_applied),
            Err(_) => return false,
        }
    }
    seen[0].is_some() && seen.iter().all(|s| *s == seen[0])
}

// Proves: in a 3-node cluster under write load, 30 SIGKILLs (leader every other time, a
// follower otherwise) lose no acknowledged write, leave files that pass the integrity check,
// and after each restart all three nodes converge on the same revision and contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_repeated_sigkills() {
    let root = tempfile::tempdir().unwrap();
    // Every kill makes openraft log the unreachable peer as an error.
    let quiet = [("RUST_LOG", "error,openraft=off")];
    let (mut nodes, members) = start_process_cluster(root.path(), 1..=3, &quiet).await;
    let addresses: Vec<NodeAddress> = members.values().copied().collect();
    let admin = aspen::testing::root_client(&addresses).await.unwrap();
    let load = Load::start(&addresses).await;
    for kill in 0..kills() {
        let at = format!("kill {kill}");
        load.wait_progress(load.count(), WRITES_PER_PHASE).await;
        let leader = leader_of(&admin).await;
        let victim = if kill % 2 == 0 {
            leader
        } else {
            *members.keys().find(|id| **id != leader).unwrap()
        };
        let node: &mut NodeProcess = nodes.get_mut(&victim).unwrap();
        node.kill();
        let killed_at = load.count();
        assert_check_passes(&node.dir, &at);
        // The other two go on serving writes (after an election when the leader died).
        load.wait_progress(killed_at, WRITES_PER_PHASE).await;
        node.restart();
        node.address().await;

        let _paused = load.gate.write().await;
        eventually("the three nodes converge", || converged(&members)).await;
        let mut views = Vec::new();
        for address in members.values() {
            views.push(contents(*address).await);
        }
        for (i, view) in views.iter().enumerate().skip(1) {
            assert_eq!(view.0, views[0].0, "{at}: revisions differ");
            assert!(
                view.1 == views[0].1,
                "{at}: node {} differs from node 1",
                i + 1
            );
        }
        assert_acknowledged_present(&load.acked.lock().unwrap(), &views[0].1, &at);
    }
    load.stop().await;
}

// Proves: a single node SIGKILLed 30 times under write load restarts every time with files
// that pass the integrity check and with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_survives_repeated_sigkills() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(9, &root.path().join("n9"), "single");
    let address = node.address().await;
    let load = Load::start(&[address]).await;
    for kill in 0..kills() {
        let at = format!("kill {kill}");
        load.wait_progress(load.count(), WRITES_PER_PHASE).await;
        node.kill();
        let killed_at = load.count();
        assert_check_passes(&node.dir, &at);
        node.restart();
        node.address().await;
        load.wait_progress(killed_at, WRITES_PER_PHASE).await;
        let _paused = load.gate.write().await;
        let (_, kvs) = contents(address).await;
        assert_acknowledged_present(&load.acked.lock().unwrap(), &kvs, &at);
    }
    load.stop().await;
}
