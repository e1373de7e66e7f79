use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aspen::api::{KeyRange, NodeId};
use aspen::client::{Client, RangeOptions};
use aspen::net::endpoint::NodeAddress;
use aspen::testing::WAIT_MS;
use tokio::sync::Mutex;

use crate::util::{eventually, start_process_cluster};

const WRITERS: usize = 4;
/// Acknowledged writes per writer before the kill, and again after it.
const ACKED_PHASE: usize = 15;

type Acked = Arc<Mutex<Vec<Vec<(String, String)>>>>;

async fn acked_by_each(acked: &Acked) -> usize {
    acked.lock().await.iter().map(Vec::len).min().unwrap_or(0)
}

// Proves that when the leader's process is SIGKILLed while 4 clients write, the other two
// elect a new leader and keep acknowledging writes; every acknowledged write is present
// afterwards exactly once (version 1: no write was applied twice); and the killed node,
// restarted on its data dir, catches up with the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_write_load_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, members) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let addresses: Vec<NodeAddress> = members.values().copied().collect();
    let admin = aspen::testing::root_client(&addresses).await.unwrap();
    let leader = eventually_leader(&admin).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::new(Mutex::new(vec![Vec::new(); WRITERS]));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (stop, acked, addresses) = (stop.clone(), acked.clone(), addresses.clone());
        writers.push(tokio::spawn(async move {
            let client = aspen::testing::root_client(&addresses).await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("w{w}/{i:05}"), format!("{w}-{i}"));
                // An error means the outcome is unknown; only acknowledged writes count.
                if client.put(key.as_str(), value.as_str()).await.is_ok() {
                    acked.lock().await[w].push((key, value));
                }
                i += 1;
            }
        }));
    }
    eventually("every writer got writes acknowledged", || async {
        acked_by_each(&acked).await >= ACKED_PHASE
    })
    .await;
    let before_kill = acked_by_each(&acked).await;
    nodes.get_mut(&leader).unwrap().kill();
    eventually("writes are acknowledged again after the kill", || async {
        acked_by_each(&acked).await >= before_kill + ACKED_PHASE
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let new_leader = eventually_leader(&admin).await;
    assert_ne!(new_leader, leader);

    let acked = acked.lock().await.concat();
    let all = admin
        .range(KeyRange::prefix(b"w"), &RangeOptions::default())
        .await
        .unwrap();
    let stored: BTreeMap<Vec<u8>, _> = all.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    for (key, value) in &acked {
        let kv = stored
            .get(key.as_bytes())
            .unwrap_or_else(|| panic!("acknowledged write {key} is missing"));
        assert_eq!(kv.value, value.as_bytes());
    }
    assert!(
        stored.values().all(|kv| kv.version == 1),
        "a write was applied twice"
    );

    nodes.get_mut(&leader).unwrap().restart();
    let killed = aspen::testing::root_client(&[members[&leader]])
        .await
        .unwrap();
    let target = admin.status().await.unwrap().last_applied;
    eventually("the restarted node catches up", || async {
        killed
            .status_of(&members[&leader])
            .await
            .is_ok_and(|s| s.last_applied >= target)
    })
    .await;
    let local = killed
        .range(KeyRange::prefix(b"w"), &RangeOptions::stale())
        .await
        .unwrap();
    assert_eq!(local.kvs.len(), stored.len());
}

async fn eventually_leader(client: &Client) -> NodeId {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(WAIT_MS);
    loop {
        if let Some(leader) = client.status().await.ok().and_then(|s| s.leader) {
            return leader;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
