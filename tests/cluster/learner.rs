use aspen::testing::TestNode;

use crate::util::{Cluster, eventually};

const KEYS: usize = 200;
const LEARNER: u64 = 33;

// Proves a node added after the leader purged its log catches up through a snapshot
// (streamed over the Raft transport in small chunks), can be promoted to voter, and serves
// every key to the root client (the clients and roles came in the snapshot: the entry that
// recorded the root was purged); the purge policy is the configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_through_a_snapshot_and_is_promoted() {
    let small_log = |config: &mut aspen::config::NodeConfig| {
        config.raft.snapshot_after_entries = 50;
        config.raft.log_entries_kept = 0;
        config.raft.snapshot_chunk_bytes = 4096;
    };
    let cluster = Cluster::start(30, 3, small_log).await;
    let client = cluster.client().await;
    for i in 0..KEYS {
        client
            .put(format!("k/{i:04}"), vec![b'v'; 100])
            .await
            .unwrap();
    }
    let leader = cluster.wait_leader(&cluster.ids()).await;
    eventually("the leader purged its log", || {
        let purged = cluster.nodes[&leader]
            .node
            .raft
            .metrics()
            .and_then(|m| m.purged);
        std::future::ready(purged.is_some_and(|p| p.index > 1))
    })
    .await;

    let peers: Vec<String> = cluster
        .ids()
        .iter()
        .map(|id| cluster.address(*id).to_string())
        .collect();
    let learner = TestNode::start_member(LEARNER, cluster.faults.clone(), |config| {
        small_log(config);
        config.net.peers = peers;
    })
    .await;
    let address = learner.node.address();
    client.add_learner(LEARNER, &address).await.unwrap();
    let target = cluster.last_applied(leader);
    eventually("the learner applied as far as the leader", || {
        let applied = learner
            .node
            .raft
            .metrics()
            .and_then(|m| m.last_applied.map(|l| l.index));
        std::future::ready(applied >= target)
    })
    .await;
    let metrics = learner.node.raft.metrics().unwrap();
    assert!(
        metrics.snapshot.is_some(),
        "the learner caught up without a snapshot: {metrics:?}"
    );
    client.promote(LEARNER).await.unwrap();
    let status = client.status().await.unwrap();
    let member = status
        .members
        .iter()
        .find(|m| m.id == LEARNER)
        .expect("the learner is a member");
    assert!(member.voter);
    assert_eq!(member.address, address.to_string());

    let own = aspen::testing::root_client(&[address]).await.unwrap();
    let auth = learner.node.store().unwrap().auth().unwrap();
    assert!(auth.is_root(&own.id()), "{auth:?}");
    let page = own
        .range(
            aspen::api::KeyRange::prefix(b"k/"),
            &aspen::client::RangeOptions::stale(),
        )
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), KEYS);
    learner.shutdown().await;
    cluster.shutdown().await;
}

// Proves a learner added to a node restored from a backup gets the restored state: the
// restored keys came from no log entry, so the leader sends them as a snapshot (it builds one
// and purges the log behind it before the first learner joins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_of_a_restored_node_gets_the_restored_keys() {
    let source = TestNode::start(35, |_| {}).await;
    for i in 0..50 {
        source.put(&format!("restored/{i:02}"), "v").await.unwrap();
    }
    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("b.backup");
    let store = source.node.store().unwrap();
    let file = std::fs::File::create(&backup).unwrap();
    store
        .write_backup(std::io::BufWriter::new(file), 0, |_, _| {})
        .unwrap();
    drop(store);
    source.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    aspen::storage::restore_backup(&backup, dir.path(), 8 << 20, aspen::clock::now_ms()).unwrap();
    let restored = TestNode::start_in(36, dir, |_| {}).await;
    let address = restored.node.address().to_string();
    let learner = TestNode::start_member(37, Default::default(), |config| {
        config.net.peers = vec![address];
    })
    .await;
    let client = aspen::testing::root_client(&[restored.node.address()])
        .await
        .unwrap();
    client
        .add_learner(37, &learner.node.address())
        .await
        .unwrap();
    let count = || {
        learner
            .node
            .store()
            .and_then(|s| s.read(0).ok())
            .and_then(|v| v.count(&aspen::api::KeyRange::prefix(b"restored/")).ok())
    };
    eventually("the learner holds the restored keys", || {
        std::future::ready(count() == Some(50))
    })
    .await;
    learner.shutdown().await;
    restored.shutdown().await;
}
