use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Mutex;

use crate::util::{NodeProcess, eventually};

// Proves a single aspen-node process SIGKILLed while a client writes keeps every write it
// acknowledged: after a restart on the same data dir each acknowledged key is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_keeps_every_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(1, root.path(), "single");
    let address = node.address().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (acked, count) = (acked.clone(), count.clone());
        tokio::spawn(async move {
            let client = aspen::testing::root_client(&[address])
                .await
                .unwrap()
                .with_retry_budget(std::time::Duration::from_secs(2));
            for i in 0.. {
                let key = format!("d/{i:06}");
                match client.put(key.as_str(), "v").await {
                    Ok(_) => {
                        acked.lock().await.push(key);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        })
    };
    eventually("writes are acknowledged", || {
        std::future::ready(count.load(Ordering::Relaxed) >= 200)
    })
    .await;
    node.kill();
    writer.await.unwrap();

    node.restart();
    let client = aspen::testing::root_client(&[node.address().await])
        .await
        .unwrap();
    let acked = acked.lock().await;
    for key in acked.iter() {
        assert!(
            client.get(key.as_str()).await.unwrap().is_some(),
            "acknowledged key {key} is missing after restart"
        );
    }
}

// Proves a follower that was down while 64 puts of 1 MB each committed catches up once it
// restarts, in a cluster of real processes: an AppendEntries over the replication byte budget
// (`APPEND_ENTRIES_BYTES_MAX`) is refused before it is sent (`PayloadTooLarge`), so openraft
// retries with fewer entries instead of resending the same 64 MB range forever. openraft 0.9
// gives each AppendEntries one heartbeat interval; the harness's 50 ms is too short for a
// 1 MB entry in a debug build, so this cluster uses the default 100 ms scaled by five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_after_64_puts_of_1_mb() {
    use aspen::api::KeyRange;
    use aspen::client::RangeOptions;

    let root = tempfile::tempdir().unwrap();
    let slow = [
        ("ASPEN_RAFT__HEARTBEAT_INTERVAL_MS", "500"),
        ("ASPEN_RAFT__ELECTION_TIMEOUT_MIN_MS", "1500"),
        ("ASPEN_RAFT__ELECTION_TIMEOUT_MAX_MS", "3000"),
    ];
    let (mut nodes, members) = crate::util::start_process_cluster(root.path(), 1..=3, &slow).await;
    let addresses: Vec<_> = members.values().copied().collect();
    let client = aspen::testing::root_client(&addresses).await.unwrap();
    let leader = std::sync::Mutex::new(None);
    eventually("the node asked knows the leader", || async {
        let known = client.status().await.ok().and_then(|s| s.leader);
        *leader.lock().unwrap() = known;
        known.is_some()
    })
    .await;
    let leader = leader.into_inner().unwrap().unwrap();
    let follower = *members.keys().find(|id| **id != leader).unwrap();
    nodes.get_mut(&follower).unwrap().kill();
    let client = aspen::testing::root_client(&[members[&leader]])
        .await
        .unwrap();
    let value = vec![b'x'; 1_000_000];
    for i in 0..64 {
        client
            .put(format!("big/{i:02}"), value.clone())
            .await
            .unwrap();
    }
    nodes.get_mut(&follower).unwrap().restart();
    let on_follower = aspen::testing::root_client(&[members[&follower]])
        .await
        .unwrap()
        .with_retry_budget(std::time::Duration::ZERO);
    let options = RangeOptions {
        count_only: true,
        ..RangeOptions::stale()
    };
    eventually("the restarted follower holds all 64 values", || async {
        on_follower
            .range(KeyRange::prefix(b"big/"), &options)
            .await
            .is_ok_and(|page| page.count == 64)
    })
    .await;
}
