use std::time::Duration;

use crate::util::{Cluster, eventually};

// Proves that with the leader isolated (every link to and from it cut on the real Raft
// transport), the majority elects a new leader and keeps serving, a write sent to the
// isolated node is never acknowledged and never appears, and after healing the old leader
// rejoins as a follower and converges to the majority's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_rejoins() {
    let cluster = Cluster::start(20, 3, |_| {}).await;
    let ids = cluster.ids();
    let old = cluster.wait_leader(&ids).await;
    cluster.client().await.put("before", "1").await.unwrap();

    cluster.faults.isolate(old);
    let majority: Vec<_> = ids.iter().copied().filter(|id| *id != old).collect();
    let new = cluster.wait_leader(&majority).await;
    assert_ne!(new, old);

    // The isolated node cannot commit: its answer is an error, never an acknowledgement.
    let isolated = cluster
        .client_of(old)
        .await
        .with_retry_budget(Duration::ZERO);
    let lost = isolated.put("lost", "x").await;
    assert!(
        lost.is_err(),
        "a write to the isolated node was acknowledged: {lost:?}"
    );

    let majority_client = cluster.client_of(majority[0]).await;
    for i in 0..10 {
        majority_client
            .put(format!("during/{i}"), "v")
            .await
            .unwrap();
    }

    cluster.faults.heal();
    eventually("the old leader follows the new one", || {
        std::future::ready(cluster.leader_seen_by(old) == cluster.leader_seen_by(new))
    })
    .await;
    let leader = cluster.wait_leader(&ids).await;
    cluster.wait_converged(leader, &ids).await;
    let rejoined = cluster.client_of(old).await;
    let stale = aspen::client::RangeOptions::stale();
    let during = rejoined
        .range(aspen::api::KeyRange::prefix(b"during/"), &stale)
        .await
        .unwrap();
    assert_eq!(during.kvs.len(), 10);
    assert!(rejoined.get("lost").await.unwrap().is_none());
    assert!(rejoined.get("before").await.unwrap().is_some());
    cluster.shutdown().await;
}
