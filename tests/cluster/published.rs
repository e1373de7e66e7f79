//! A leader's fsync overlaps its followers' (`storage::published`), and nothing acts on an
//! entry's commit before the leader's own fsync of it returned.

use aspen::api::WriteOp;
use aspen::command::Command;

use crate::util::{Cluster, eventually};

struct Resume(aspen::fault::StorageFaults);

impl Drop for Resume {
    fn drop(&mut self) {
        self.0.resume_disk();
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

/// The members, the leader, its followers, a client of the leader, and the index every
/// member applied once a first put went through.
async fn settled(cluster: &Cluster) -> (Vec<u64>, u64, Vec<u64>, aspen::client::Client, u64) {
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let followers: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    let client = cluster.client_of(leader).await;
    client.put("before", "the test").await.unwrap();
    cluster.wait_converged(leader, &ids).await;
    let applied = cluster.last_applied(leader).unwrap();
    (ids, leader, followers, client, applied)
}

/// The log id of the put of "during" in node `id`'s log after index `applied`, if it is there.
fn put_after(cluster: &Cluster, id: u64, applied: u64) -> Option<aspen::command::LogId> {
    let store = cluster.nodes[&id].node.store().expect("store");
    store
        .log_entries(applied + 1..applied + 4)
        .expect("log")
        .into_iter()
        .find(puts_during_entry)
        .map(|entry| entry.log_id)
}

/// The value of counter `name` for `node` on the metrics page (0 when absent).
fn counter(name: &str, node: u64) -> f64 {
    let series = format!("{name}{{node_id=\"{node}\"}}");
    aspen::testing::metric_value(&aspen::metrics::render(), &series)
}

// Proves the overlap and its guard: with every write and sync of the leader's file stalled, a
// put's entry still reaches both followers' logs (openraft replicates it before the leader's
// fsync returned), the leader commits it with their acknowledgements and says so in
// AppendEntries only up to what it holds durably (commits withheld), so no follower applies
// it and the client hears nothing; once the leader's disk resumes, the put is answered and
// every member applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_the_entry_while_the_leaders_fsync_runs() {
    let cluster = Cluster::start(109, 3, |_| {}).await;
    let (ids, leader, followers, client, applied) = settled(&cluster).await;
    let holds_the_put = |id: u64| put_after(&cluster, id, applied).is_some();
    let withheld = counter(aspen::metrics::RAFT_COMMITS_WITHHELD, leader);

    let storage = cluster.nodes[&leader].faults().storage.clone();
    storage.stall_disk();
    // Resumed however the test ends: a stalled disk holds a thread the runtime waits for.
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

    storage.resume_disk();
    put.await
        .unwrap()
        .expect("the put once the leader's fsync returned");
    cluster.wait_converged(leader, &ids).await;
    assert!(cluster.last_applied(leader).unwrap() > applied);
    cluster.shutdown().await;
}

// Proves a leader that lost an entry it had published (its commit failed after the followers
// stored the entry) does not lead the same term again once its Raft core restarts: it comes back as a
// follower, a new term repairs the logs, and every member ends with the same entry at that
// index and the same key space. (Leading the old term again, its next entry would take the
// lost one's index and log id, and the followers would keep and apply theirs.) Election
// timeouts are long, so the followers still follow the old term while the node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_a_published_entry_does_not_lead_its_term_again() {
    let cluster = Cluster::start(112, 3, |config| {
        config.raft.election_timeout_min_ms = 2_000;
        config.raft.election_timeout_max_ms = 3_000;
    })
    .await;
    let (ids, leader, followers, client, applied) = settled(&cluster).await;
    let lost_at = |cluster: &Cluster, id: u64| put_after(cluster, id, applied);

    let storage = cluster.nodes[&leader].faults().storage.clone();
    storage.stall_disk();
    let _resume = Resume(storage.clone());
    let put = tokio::spawn(async move { client.put("during", "the loss").await });
    eventually("both followers hold the published entry", || {
        std::future::ready(followers.iter().all(|id| lost_at(&cluster, *id).is_some()))
    })
    .await;
    let lost = lost_at(&cluster, followers[0]).unwrap();
    // The leader's commit of it fails before it wrote anything: storage and Raft restart
    // there (once the disk works again) with the entry gone from its log.
    storage.fail_writes(aspen::fault::DiskFault::Failing);
    storage.resume_disk();
    // Refused naming the disk's error: as the lost append its apply was refused for, or as
    // the storage failure Raft was stopped for, whichever came first.
    let refused = put.await.unwrap().expect_err("a put whose commit failed");
    assert!(
        refused.to_string().contains("Input/output error"),
        "{refused}"
    );
    storage.heal();

    let new_leader = cluster.wait_leader(&ids).await;
    let client = cluster.client().await;
    client.put("after", "the restart").await.unwrap();
    cluster.wait_converged(new_leader, &ids).await;
    for id in &ids {
        let store = cluster.nodes[id].node.store().expect("store");
        let at = store.log_entries(lost.index..=lost.index).expect("log");
        assert_eq!(at.len(), 1, "node {id} has no entry at {}", lost.index);
        assert_eq!(
            (at[0].log_id, puts_during_entry(&at[0])),
            (lost, true),
            "node {id} holds another entry at the lost one's index"
        );
    }
    let report = client.hash_kv().await.unwrap();
    assert!(report.all_agree(), "{report:?}");
    cluster.shutdown().await;
}

fn puts_during_entry(entry: &aspen::command::Entry) -> bool {
    matches!(&entry.payload, openraft::EntryPayload::Normal(request) if puts_during(&request.command))
}
