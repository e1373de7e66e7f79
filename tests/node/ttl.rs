//! TTL and leases on one node: expiry goes through Raft proposals made by the TtlActor.

use aspen::storage::{Command, Output, Put};
use aspen::testing::TestNode;

fn live(node: &TestNode, key: &str) -> bool {
    let store = node.node.shared.store().expect("store");
    let view = store.read(0).expect("read");
    view.get(key.as_bytes()).expect("get").is_some()
}

// Proves a key with a TTL is deleted after expiry by a Raft proposal of the TtlActor (its
// deletion has a revision and the expired-keys metric moves), that revoking a lease deletes
// its keys, and that an expired lease deletes its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_leases_expire_through_raft() {
    let node = TestNode::start(21, |_| {}).await;
    let put = node
        .write(Command::Put(Put {
            ttl_ms: Some(100),
            ..Put::new("short", "v")
        }))
        .await
        .unwrap();
    node.put("stays", "v").await.unwrap();
    let before = put.revision + 1;
    // `read(0)` sees stored keys whatever their TTL: it turns false only once deleted.
    assert!(
        node.wait_until(|n| !live(n, "short")).await,
        "ttl key not expired"
    );
    let store = node.node.shared.store().unwrap();
    assert!(
        store.read(0).unwrap().revision() > before,
        "the expiry took a revision"
    );
    assert!(live(&node, "stays"));
    let metrics = aspen::metrics::render();
    assert!(
        metrics.contains("aspen_ttl_expired_keys_total{node_id=\"21\"} 1"),
        "expired-keys counter did not move"
    );

    let grant = node
        .write(Command::LeaseGrant {
            id: 0,
            ttl_ms: 60_000,
        })
        .await
        .unwrap();
    let Ok(Output::Lease { id, .. }) = grant.result else {
        panic!("{grant:?}")
    };
    for key in ["l/a", "l/b"] {
        node.write(Command::Put(Put {
            lease: Some(id),
            ..Put::new(key, "v")
        }))
        .await
        .unwrap();
    }
    let revoked = node.write(Command::LeaseRevoke { id }).await.unwrap();
    assert_eq!(revoked.result, Ok(Output::LeaseRevoke { keys_deleted: 2 }));
    assert!(!live(&node, "l/a") && !live(&node, "l/b"));

    let grant = node
        .write(Command::LeaseGrant { id: 0, ttl_ms: 100 })
        .await
        .unwrap();
    let Ok(Output::Lease { id, .. }) = grant.result else {
        panic!("{grant:?}")
    };
    node.write(Command::Put(Put {
        lease: Some(id),
        ..Put::new("l/short", "v")
    }))
    .await
    .unwrap();
    assert!(
        node.wait_until(|n| !live(n, "l/short")).await,
        "expired lease kept its key"
    );
    node.shutdown().await;
}
