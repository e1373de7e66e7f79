//! Compaction and leadership: a compaction holds a node's database for its whole run, so it
//! must never run on the leader of a cluster.

use std::time::{Duration, Instant};

use aspen::net::admin::{AdminError, AdminPort};

use crate::util::Cluster;

// Proves compaction never stalls the cluster: a compaction asked of the leader of 3 voters is
// refused, naming why, and nothing waits for it; while a follower's compaction holds that
// follower's database (waiting 1.5 s for a read transaction to end, as a long compaction
// would hold it), the leader keeps acknowledging writes with the other follower, and the
// follower catches up once its database is free and compacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_never_stalls_the_cluster() {
    let cluster = Cluster::start(95, 3, |_| {}).await;
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let client = cluster.client_of(leader).await;
    client.put("before", "v").await.unwrap();

    let refused = cluster.nodes[&leader]
        .node
        .core
        .compact(Duration::from_secs(1))
        .await;
    match &refused {
        Err(AdminError::Refused(message)) => {
            assert!(message.contains("is the leader of 3 voters"), "{message}")
        }
        other => panic!("a compaction of the leader was not refused: {other:?}"),
    }

    let store = cluster.nodes[&follower].node.store().unwrap();
    let held = store.begin_read().unwrap();
    let compaction = cluster.nodes[&follower]
        .node
        .core
        .compact(Duration::from_millis(1_500));
    let writes = async {
        let started = Instant::now();
        let mut acked = 0u64;
        while started.elapsed() < Duration::from_secs(1) {
            client.put(format!("during/{acked}"), "v").await.unwrap();
            acked += 1;
        }
        acked
    };
    let (held_compaction, acked) = tokio::join!(compaction, writes);
    assert!(
        matches!(&held_compaction, Err(AdminError::Refused(m)) if m.contains("still open")),
        "{held_compaction:?}"
    );
    assert!(
        acked >= 5,
        "only {acked} writes acknowledged during the compaction"
    );
    assert_eq!(
        cluster.leader_seen_by(leader),
        Some(leader),
        "leadership moved"
    );

    drop(held);
    cluster.nodes[&follower]
        .node
        .core
        .compact(Duration::from_secs(5))
        .await
        .expect("the follower's compaction");
    cluster.wait_converged(leader, &ids).await;
    cluster.shutdown().await;
}
