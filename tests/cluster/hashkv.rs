//! Replica comparison: the hash check names a member whose key space was damaged behind
//! Raft's back, and the corrupt alarm it raises on the leader.

use aspen::api::{CheckStatus, NodeHealth};

use crate::util::{Cluster, eventually};

// Proves the hash check finds a damaged replica and only it: on a healthy 3-node cluster
// every member answers the same hash at the same revision; after one follower's stored value
// is changed without Raft (the fault module's replica damage), the periodic check raises the
// corrupt alarm on the leader (`/health` degraded naming that follower, `aspen_corrupt_alarm`
// 1, the checks counted by outcome), and `hashkv` names that follower alone; once a write
// through Raft gives the key the same value everywhere again, a check finds every member
// agreeing and the alarm clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_the_damaged_replica() {
    let cluster = Cluster::start(100, 3, |config| {
        config.health.hash_check_interval_ms = 1_000;
    })
    .await;
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let client = cluster.client().await;
    for i in 0..20 {
        client.put(format!("k/{i}"), "value").await.unwrap();
    }

    let report = client.hash_kv().await.unwrap();
    assert!(report.all_agree(), "{report:?}");
    assert_eq!((report.leader, report.members.len()), (leader, 3));
    let first = report.members[0].result.clone().unwrap();
    assert_eq!(first.keys, 20);
    assert!(
        report
            .members
            .iter()
            .all(|m| m.result.as_ref().ok() == Some(&first))
    );

    cluster.nodes[&follower]
        .faults()
        .storage
        .damage_value("k/3");
    let board = &cluster.nodes[&leader].node.board;
    // Degraded by the alarm: awaited as one condition, since a ping that misses its 100 ms
    // under a loaded machine makes one health round critical on its own.
    eventually("the corrupt alarm degrading the leader", || async {
        let health = board.health();
        health.status == NodeHealth::Degraded
            && health
                .checks
                .get("corrupt")
                .is_some_and(|c| c.status == CheckStatus::Warning)
    })
    .await;
    let health = board.health();
    let message = health.checks["corrupt"].message.clone().unwrap();
    assert!(
        message.contains(&format!("the key space of node {follower} differs")),
        "{message}"
    );
    let page = aspen::metrics::render();
    assert!(
        page.contains(&format!("aspen_corrupt_alarm{{node_id=\"{leader}\"}} 1")),
        "{page}"
    );
    let report = client.hash_kv().await.unwrap();
    assert_eq!(report.mismatched, vec![follower], "{report:?}");
    let counted = |outcome: &str| {
        let series =
            format!("aspen_hash_checks_total{{node_id=\"{leader}\",outcome=\"{outcome}\"}}");
        aspen::testing::metric_value(&aspen::metrics::render(), &series)
    };
    assert!(counted("agree") >= 1.0 && counted("mismatch") >= 1.0);

    client.put("k/3", "value").await.unwrap();
    let report = client.hash_kv().await.unwrap();
    assert!(report.all_agree(), "{report:?}");
    eventually("the corrupt alarm cleared", || async {
        board
            .checks()
            .get("corrupt")
            .is_some_and(|c| c.status == CheckStatus::Ok)
    })
    .await;
    cluster.shutdown().await;
}
