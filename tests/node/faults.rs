//! Storage faults: a full disk, a failing disk and a Raft core stopped by a storage error, each
//! injected through the fault module; writes fail with a clear error, nothing acknowledged is
//! lost, and the node serves again once the fault is gone.

use aspen::actors::ActorKind;
use aspen::api::CheckStatus;
use aspen::fault::DiskFault;
use aspen::testing::TestNode;

/// The value of `key` on the node's own store, if it holds it.
fn value_of(node: &TestNode, key: &str) -> Option<Vec<u8>> {
    let store = node.node.store().expect("store");
    let view = store.read(aspen::clock::now_ms()).expect("read");
    view.get(key.as_bytes()).expect("get").map(|kv| kv.value)
}

/// Writes `acked/0..count` and returns once each is acknowledged.
async fn write_acked(node: &TestNode, count: usize) {
    for i in 0..count {
        node.put(&format!("acked/{i}"), "v").await.expect("write");
    }
}

fn assert_all_acked(node: &TestNode, count: usize) {
    for i in 0..count {
        assert_eq!(
            value_of(node, &format!("acked/{i}")).as_deref(),
            Some(&b"v"[..]),
            "acknowledged key acked/{i} lost"
        );
    }
}

/// Runs the disk-fault scenario with `fault` on node `id`.
async fn disk_fault_scenario(id: u64, fault: DiskFault, os_message: &str) {
    let node = TestNode::start(id, |_| {}).await;
    write_acked(&node, 5).await;
    node.faults().storage.fail_writes(fault);
    let refused = node.put("during", "the fault").await;
    let text = format!("{:?}", refused.as_ref().map(drop));
    assert!(
        refused.is_err() && text.contains(os_message),
        "a write on a {fault:?} disk: {text}"
    );
    // Storage keeps being restarted (more often than the restart budget allows for other
    // failures) without failing the node, and /health names the disk error.
    let budget = u64::from(node.config.supervisor.restarts_max);
    assert!(
        node.wait_until(|n| n.node.board.restarts(ActorKind::Storage) > budget + 1)
            .await,
        "storage was not restarted while the disk failed"
    );
    assert_eq!(node.node.board.failure(), None);
    let storage = node.node.board.checks()["storage"].clone();
    assert_eq!(storage.status, CheckStatus::Critical, "{storage:?}");
    assert!(
        storage
            .message
            .as_deref()
            .unwrap_or("")
            .contains(os_message),
        "{storage:?}"
    );

    node.faults().storage.heal();
    assert!(node.wait_serving().await, "the node did not serve again");
    node.put("after", "the fault")
        .await
        .expect("write after heal");
    assert_all_acked(&node, 5);
    let node = node.restart().await;
    assert_all_acked(&node, 5);
    assert!(value_of(&node, "after").is_some());
    node.shutdown().await;
}

// Proves a full disk (ENOSPC on every write of the database file, through redb's own error
// path) refuses writes with the operating system's message, restarts storage (reopening the
// database, as redb requires after an I/O error) for as long as it lasts without failing the
// node, and that once space returns the node serves again with every acknowledged write,
// before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_the_node_recovers_when_space_returns() {
    disk_fault_scenario(51, DiskFault::Full, "No space left on device").await;
}

// Proves the same for a failing disk (EIO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_refuses_writes_and_the_node_recovers() {
    disk_fault_scenario(52, DiskFault::Failing, "Input/output error").await;
}

// Proves a failed fsync is not retried (the kernel may have dropped pages that never reached
// the disk, so a reopened file could show them as durable): the write fails, the node fails
// naming the sync, and a restart on the same files (the disk healthy again) serves every
// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_the_node_and_keeps_what_was_acknowledged() {
    let node = TestNode::start(54, |_| {}).await;
    write_acked(&node, 5).await;
    node.faults().storage.fail_writes(DiskFault::SyncFails);
    assert!(node.put("during", "the fault").await.is_err());
    assert!(
        node.wait_until(|n| n.node.board.failure().is_some()).await,
        "the node did not fail after a failed sync"
    );
    let failure = node.node.board.failure().unwrap();
    assert!(
        failure.contains("a sync of the database file failed"),
        "{failure}"
    );
    assert!(failure.contains("Input/output error"), "{failure}");
    let node = node.restart().await;
    assert!(node.wait_serving().await);
    assert_all_acked(&node, 5);
    node.put("after", "the restart")
        .await
        .expect("write after restart");
    node.shutdown().await;
}

// Proves openraft's fatal error is an actor failure: when the log store's append fails (the
// storage writer stays well), the core stops, the RaftActor fails with the error, the
// supervisor restarts Raft, and the node serves again with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_core_stopped_by_a_storage_error_is_restarted() {
    let node = TestNode::start(53, |_| {}).await;
    write_acked(&node, 3).await;
    node.faults().fail_next_log_append();
    assert!(node.put("during", "the fault").await.is_err());
    assert!(
        node.wait_until(|n| n.node.board.restarts(ActorKind::Raft) >= 1)
            .await,
        "the stopped Raft core was not restarted"
    );
    assert_eq!(node.node.board.restarts(ActorKind::Storage), 0);
    assert!(node.wait_serving().await, "the node did not serve again");
    node.put("after", "the fault")
        .await
        .expect("write after restart");
    assert_all_acked(&node, 3);
    node.shutdown().await;
}
