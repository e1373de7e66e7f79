//! Supervision: failures of every actor are restarted per policy and counted, the restart
//! budget fails the node, the storage validation gate refuses a corrupt file, and a check that
//! stays critical restarts its actor.

use aspen::actors::ActorKind;
use aspen::api::{CheckStatus, NodeHealth};
use aspen::testing::TestNode;

/// The id of the running RaftActor: a new id means a new incarnation.
fn raft_incarnation(node: &TestNode) -> Option<ractor::ActorId> {
    node.node
        .children
        .cell(ActorKind::Raft)
        .map(|actor| actor.get_id())
}

/// Waits until `kind` was restarted `count` times and the node serves writes again.
async fn assert_recovers(node: &TestNode, kind: ActorKind, count: u64) {
    assert!(
        node.wait_until(|n| n.node.board.restarts(kind) >= count)
            .await,
        "{kind} restart not recorded"
    );
    assert!(
        node.wait_serving().await,
        "node did not serve again after {kind} failed"
    );
    let response = node
        .put("after", &format!("{kind}"))
        .await
        .expect("write after restart");
    assert!(response.result.is_ok());
}

// Proves a panic inside the message handler of every actor is restarted per policy, shows in
// the restart count (and so in aspen_supervisor_restarts_total), and writes succeed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_each_actor_is_restarted() {
    let node = TestNode::start(11, |_| {}).await;
    node.put("before", "v").await.expect("write");
    for (i, kind) in ActorKind::ALL.into_iter().enumerate() {
        let raft_before = raft_incarnation(&node);
        node.panic_actor(kind);
        assert_recovers(&node, kind, 1).await;
        if kind == ActorKind::Storage {
            assert_ne!(
                raft_incarnation(&node),
                raft_before,
                "a storage failure restarts raft too"
            );
        }
        assert_eq!(node.node.board.restarts(kind), 1, "{kind} after {i} others");
    }
    let metrics = aspen::metrics::render();
    for kind in ActorKind::ALL {
        let line = format!("aspen_supervisor_restarts_total{{node_id=\"11\",actor=\"{kind}\"}} 1");
        assert!(metrics.contains(&line), "missing {line}");
    }
    node.shutdown().await;
}

// Proves a storage failure while writes are queued for it does not wedge the node: 8 writers
// keep writing while the StorageActor panics (writes queued behind the panic get an error, not
// a wait that never ends, so Raft can stop), storage and raft are restarted, and writes
// succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failure_under_writes_recovers() {
    let node = std::sync::Arc::new(TestNode::start(16, |_| {}).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (node, stop) = (node.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Errors are expected while storage restarts (only recovery is checked);
                    // after one, the writer backs off instead of spinning on the same error.
                    if node.put(&format!("w{w}/{i}"), "v").await.is_err() {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    i += 1;
                }
            })
        })
        .collect();
    assert!(
        node.wait_until(|n| n.node.board.restarts(ActorKind::Storage) == 0)
            .await
    );
    node.put("warm", "v")
        .await
        .expect("write before the failure");
    node.panic_actor(ActorKind::Storage);
    assert_recovers(&node, ActorKind::Storage, 1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    std::sync::Arc::into_inner(node)
        .expect("writers ended")
        .shutdown()
        .await;
}

// Proves an error in pre_start of every actor counts as a failure and is retried until the
// actor starts, after which writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_of_each_actor_is_retried() {
    // Ten failures in all: a budget that covers them, so only the policy under test acts.
    let node = TestNode::start(12, |c| c.supervisor.restarts_max = 20).await;
    for kind in ActorKind::ALL {
        node.faults().fail_next_start(kind);
        node.kill_actor(kind);
        // One restart for the kill, one for the failed start.
        assert_recovers(&node, kind, 2).await;
    }
    node.shutdown().await;
}

// Proves R+1 failures within T fail the node: /health turns unhealthy (503 over HTTP),
// requests get a clear error, and nothing restarts any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_budget_spent_fails_the_node() {
    let node = TestNode::start(13, |c| {
        c.supervisor.restarts_max = 2;
        c.supervisor.restart_window_ms = 60_000;
    })
    .await;
    for round in 1..=3 {
        node.panic_actor(ActorKind::Ttl);
        if round < 3 {
            assert_recovers(&node, ActorKind::Ttl, round).await;
        }
    }
    assert!(node.wait_until(|n| n.node.board.failure().is_some()).await);
    let reason = node.node.board.failure().unwrap();
    assert!(reason.contains("3 restarts within 60000 ms"), "{reason}");
    assert_eq!(node.node.board.health().status, NodeHealth::Unhealthy);
    let url = format!("http://{}/health", node.node.http_address);
    let response = reqwest::get(&url).await.expect("GET /health");
    assert_eq!(response.status(), 503);
    let error = node.put("k", "v").await.unwrap_err().to_string();
    assert!(error.starts_with("node: failed, not serving"), "{error}");
    node.shutdown().await;
}

// Proves the validation gate: with last_applied > committed written into the file, starting
// storage is refused with the rule and both numbers on /health's storage check, and the node
// serves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_with_applied_beyond_committed_is_refused() {
    let node = TestNode::start(14, |_| {}).await;
    for i in 0..5 {
        node.put(&format!("k{i}"), "v").await.expect("write");
    }
    node.stop_storage().await;
    let (applied, committed) = node.corrupt_committed_below_applied();
    node.start_storage();
    assert!(node.wait_until(|n| n.node.board.failure().is_some()).await);
    let health = node.node.board.health();
    assert_eq!(health.status, NodeHealth::Unhealthy);
    let storage = &health.checks["storage"];
    assert_eq!(storage.status, CheckStatus::Failed);
    assert_eq!(
        storage.message.as_deref(),
        Some(format!("storage: refusing to start: last_applied ({applied}) exceeds committed ({committed})").as_str())
    );
    assert!(!node.is_running(ActorKind::Storage).await);
    assert!(!node.is_running(ActorKind::Raft).await);
    assert!(node.put("k", "v").await.is_err());
    node.shutdown().await;
}

// Proves health enforcement: a check forced critical K times in a row restarts its actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_check_restarts_its_actor() {
    let node = TestNode::start(15, |c| c.health.critical_restarts_after = 3).await;
    node.faults().force_critical("ttl_actor", true);
    assert!(
        node.wait_until(|n| n.node.board.restarts(ActorKind::Ttl) >= 1)
            .await
    );
    node.faults().force_critical("ttl_actor", false);
    assert!(node.wait_serving().await);
    assert_eq!(
        node.node.board.restarts(ActorKind::Raft),
        0,
        "only the ttl actor restarts"
    );
    node.shutdown().await;
}
