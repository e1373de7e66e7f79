use std::time::Duration;

use aspen::api::KeyRange;
use aspen::client::RangeOptions;

use crate::util::Cluster;

// Proves a graceful shutdown of the leader right after a burst of writes hands over the whole
// log: when `shutdown` returns, both followers hold (durably) every entry the leader had, so
// whichever is elected next has every acknowledged write; the two elect a leader and serve
// all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_shutdown_hands_over_the_whole_log() {
    let mut cluster = Cluster::start(50, 3, |_| {}).await;
    let leader = cluster.wait_leader(&cluster.ids()).await;
    let client = cluster.client_of(leader).await;
    let puts = (0..40).map(|i| client.put(format!("burst/{i:02}"), "v"));
    let acked = futures::future::join_all(puts)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(acked, 40);

    let node = cluster.nodes.remove(&leader).expect("leader");
    let last = node
        .node
        .raft
        .metrics()
        .and_then(|m| m.last_log_index)
        .expect("leader log");
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .expect("shutdown finished");
    for (id, follower) in &cluster.nodes {
        let store = follower.node.store().expect("store");
        let held = store.log_state().unwrap().1.map(|id| id.index);
        assert!(
            held >= Some(last),
            "follower {id} holds the log up to {held:?}, the leader had {last}"
        );
    }

    let remaining = cluster.ids();
    let new_leader = cluster.wait_leader(&remaining).await;
    let page = cluster
        .client_of(new_leader)
        .await
        .range_page(
            KeyRange::prefix(b"burst/".as_slice()),
            &RangeOptions {
                count_only: true,
                ..RangeOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.count, 40);
    cluster.shutdown().await;
}

// Proves a new leader gives every lease its whole TTL back before it expires anything (the
// robustness issue's item 4, as etcd does on a leader change): after the leader stops and
// another takes over, the lease's deadline on the new leader is later than the one granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_gives_leases_their_ttl_back() {
    let mut cluster = Cluster::start(75, 3, |_| {}).await;
    let leader = cluster.wait_leader(&cluster.ids()).await;
    let lease = cluster
        .client_of(leader)
        .await
        .lease_grant(0, 60_000)
        .await
        .unwrap();
    let node = cluster.nodes.remove(&leader).expect("leader");
    node.shutdown().await;
    let next = cluster.wait_leader(&cluster.ids()).await;
    let store = cluster.nodes[&next].node.store().expect("store");
    crate::util::eventually("the new leader renewed the lease", || {
        let record = store
            .read(aspen::clock::now_ms())
            .unwrap()
            .lease(lease.id)
            .unwrap();
        std::future::ready(record.is_some_and(|r| r.deadline_ms > lease.deadline_ms))
    })
    .await;
    cluster.shutdown().await;
}
