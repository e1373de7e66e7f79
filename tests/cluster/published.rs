//! A leader's fsync overlaps its followers' (`storage::published`), and nothing acts on an
//! entry's commit before the leader's own fsync of it returned.

use aspen::api::WriteOp;
use aspen::command::Command;

use crate::util::{Cluster, eventually};

struct Resume(aspen::fault::StorageFaults);

impl Drop for Resume {
    fn drop(&mut self) {
        self.0.resume_syncs();
    }
}

/// Whether `command` is (or holds, in a batch) the put of key "during".
fn puts_during(command: &Command) -> bool {
    let is_it = |op: &WriteOp| matches!(op, WriteOp::Put(put) if put.key == b"during");
    match command {
        Command::Write(op) => is_it(op),
        Command::Batch(items) => items.iter().any(|item| is_it(&item.op)),
        _ => false,
    }
}

/// The value of counter `name` for `node` on the metrics page (0 when absent).
fn counter(name: &str, node: u64) -> f64 {
    let series = format!("{name}{{node_id=\"{node}\"}} ");
    aspen::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()).map(str::to_owned))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

// Proves the overlap and its guard: with every sync of the leader's file stalled, a put's
// entry still reaches both followers' logs (openraft replicates it before the leader's fsync
// returned), the leader commits it with their acknowledgements and says so in AppendEntries
// only up to what it holds durably (commits withheld), so no follower applies it and the
// client hears nothing; once the leader's syncs resume, the put is answered and every member
// applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_the_entry_while_the_leaders_fsync_runs() {
    let cluster = Cluster::start(109, 3, |_| {}).await;
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let followers: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    let client = cluster.client_of(leader).await;
    client.put("before", "the stall").await.unwrap();
    cluster.wait_converged(leader, &ids).await;
    let applied = cluster.last_applied(leader).unwrap();
    // Whether node `id`'s log holds the put of "during" after index `applied`.
    let holds_the_put = |id: u64| {
        let store = cluster.nodes[&id].node.store().expect("store");
        store
            .log_entries(applied + 1..applied + 4)
            .expect("log")
            .iter()
            .any(|entry| {
                matches!(&entry.payload, openraft::EntryPayload::Normal(request)
                if puts_during(&request.command))
            })
    };
    let withheld = counter(aspen::metrics::RAFT_COMMITS_WITHHELD, leader);

    let storage = cluster.nodes[&leader].faults().storage.clone();
    storage.stall_syncs();
    // Resumed however the test ends: a stalled sync holds a thread the runtime waits for.
    let _resume = Resume(storage.clone());
    let put = tokio::spawn(async move { client.put("during", "the stall").await });
    eventually("both followers hold the new entry", || {
        std::future::ready(followers.iter().all(|id| holds_the_put(*id)))
    })
    .await;
    eventually("the leader withholding the entry's commit", || {
        std::future::ready(counter(aspen::metrics::RAFT_COMMITS_WITHHELD, leader) >= withheld + 2.0)
    })
    .await;
    for id in &ids {
        assert_eq!(
            cluster.last_applied(*id),
            Some(applied),
            "node {id} applied an entry its leader had not made durable"
        );
    }
    assert!(
        !put.is_finished(),
        "a put was answered before the leader's fsync returned"
    );

    storage.resume_syncs();
    put.await
        .unwrap()
        .expect("the put once the leader's fsync returned");
    cluster.wait_converged(leader, &ids).await;
    assert!(cluster.last_applied(leader).unwrap() > applied);
    cluster.shutdown().await;
}
