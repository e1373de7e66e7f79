//! Watch: history replayed then live events, filters, previous values, progress, the
//! compacted refusal, and a watch that outlives its node.

use aspen::api::NodeId;
use aspen::api::{
    ClientError, CommandError, EventKind, KeyRange, WatchEvent, WatchFilter, WatchOptions,
};
use aspen::client::{Error, WatchBatch, Watcher};

use crate::util::Cluster;

/// The watcher's next batch, or its error; it must come within 30 s.
async fn next_batch(watcher: &mut Watcher<'_>) -> Result<WatchBatch, Error> {
    tokio::time::timeout(std::time::Duration::from_secs(30), watcher.next())
        .await
        .expect("an answer within 30 s")
}

/// Reads batches until `count` events arrived (progress batches skipped).
async fn events(watcher: &mut Watcher<'_>, count: usize) -> Vec<WatchEvent> {
    let mut got = Vec::new();
    while got.len() < count {
        got.extend(next_batch(watcher).await.expect("batch").events);
    }
    got
}

/// The leader, a follower, and the follower's index in the cluster's client (`prefer`).
async fn leader_and_follower(cluster: &Cluster) -> (NodeId, NodeId, usize) {
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let index = ids.iter().position(|id| *id == follower).unwrap();
    (leader, follower, index)
}

/// An event as (revision, kind, key, value, previous value).
type Seen = (u64, EventKind, String, Option<String>, Option<String>);

fn summary(events: &[WatchEvent]) -> Vec<Seen> {
    let text = |v: &Vec<u8>| String::from_utf8_lossy(v).into_owned();
    events
        .iter()
        .map(|e| {
            (
                e.revision,
                e.kind,
                text(&e.key),
                e.kv.as_ref().map(|kv| text(&kv.value)),
                e.prev.as_ref().map(|kv| text(&kv.value)),
            )
        })
        .collect()
}

// Proves a watch from a past revision replays the history of its range in revision order
// (previous values included when asked), then streams live changes; a delete filter keeps
// only deletes; an idle watch gets progress at the current revision; and a watch from a
// compacted revision is refused naming the oldest one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_replays_history_then_streams_live_events() {
    let cluster = Cluster::start(115, 3, |_| {}).await;
    let client = cluster.client().await;
    client.put("other", "x").await.unwrap();
    let r1 = client.put("w/a", "1").await.unwrap().revision;
    let r2 = client.put("w/b", "1").await.unwrap().revision;
    let r3 = client.put("w/a", "2").await.unwrap().revision;
    let r4 = client.delete("w/a").await.unwrap().revision;

    let with_prev = WatchOptions {
        prev_kv: true,
        ..WatchOptions::default()
    };
    let mut watcher = client
        .watch(KeyRange::prefix(b"w/"), r1, with_prev)
        .await
        .unwrap();
    use EventKind::{Delete, Put};
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        summary(&events(&mut watcher, 4).await),
        vec![
            (r1, Put, "w/a".into(), s("1"), None),
            (r2, Put, "w/b".into(), s("1"), None),
            (r3, Put, "w/a".into(), s("2"), s("1")),
            (r4, Delete, "w/a".into(), None, s("2")),
        ]
    );
    let r5 = client.put("w/c", "live").await.unwrap().revision;
    client.put("other", "y").await.unwrap();
    assert_eq!(
        summary(&events(&mut watcher, 1).await),
        vec![(r5, Put, "w/c".into(), s("live"), None)]
    );

    let deletes = WatchOptions {
        filter: WatchFilter::DeletesOnly,
        ..WatchOptions::default()
    };
    let mut only_deletes = client
        .watch(KeyRange::prefix(b"w/"), r1, deletes)
        .await
        .unwrap();
    assert_eq!(
        summary(&events(&mut only_deletes, 1).await),
        vec![(r4, Delete, "w/a".into(), None, None)]
    );

    let progress = WatchOptions {
        progress_ms: 50,
        ..WatchOptions::default()
    };
    let mut idle = client
        .watch(KeyRange::prefix(b"idle/"), 0, progress)
        .await
        .unwrap();
    let first = idle.next().await.unwrap();
    let second = idle.next().await.unwrap();
    assert!(first.events.is_empty() && second.events.is_empty());
    assert!(second.revision >= r5, "{second:?}");

    client.compact(r3).await.unwrap();
    let refused = client
        .watch(KeyRange::prefix(b"w/"), r2, WatchOptions::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused,
        Error::Server(ClientError::Command(CommandError::Compacted {
            revision: r2,
            oldest: r3
        }))
    );
    cluster.shutdown().await;
}

// Proves a watch survives the loss of the node serving it: watching through a follower while
// 150 puts commit one after another, the follower is shut down part way; the watch goes on on
// another node and delivers every put exactly once, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_node_without_losing_or_repeating_an_event() {
    let cluster = Cluster::start(118, 3, |_| {}).await;
    let (leader, follower, index) = leader_and_follower(&cluster).await;
    let watching = cluster.client().await.prefer(index);
    let mut watcher = watching
        .watch(KeyRange::prefix(b"w/"), 0, WatchOptions::default())
        .await
        .unwrap();
    let writer = cluster.client_of(leader).await;
    let writes = tokio::spawn(async move {
        let mut revisions = Vec::new();
        for i in 0..150 {
            let written = writer.put(format!("w/{i:03}"), "v").await.expect("put");
            revisions.push(written.revision);
        }
        revisions
    });
    let mut got = Vec::new();
    let mut served_by = std::collections::BTreeSet::new();
    let mut cluster = cluster;
    let mut stopped = false;
    while got.len() < 150 {
        let batch = next_batch(&mut watcher).await.expect("batch");
        served_by.insert(batch.served_by);
        got.extend(batch.events);
        if !stopped && got.len() >= 40 {
            stopped = true;
            cluster.nodes.remove(&follower).unwrap().shutdown().await;
        }
    }
    let revisions = writes.await.unwrap();
    let keys: Vec<String> = got
        .iter()
        .map(|e| String::from_utf8_lossy(&e.key).into_owned())
        .collect();
    let expected: Vec<String> = (0..150).map(|i| format!("w/{i:03}")).collect();
    assert_eq!(keys, expected, "every put once, in order");
    assert_eq!(
        got.iter().map(|e| e.revision).collect::<Vec<_>>(),
        revisions
    );
    assert!(
        served_by.contains(&follower) && served_by.len() >= 2,
        "{served_by:?}"
    );
    cluster.shutdown().await;
}

// Proves a watcher that reads nothing does not make its node hold the events it has not
// read: while 1,000 puts of 16 KiB (16 MB) commit, the node reads ahead only a few batches;
// once the history is compacted past the watcher, it gets the events held for it and then
// the compacted refusal, not all 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reads_nothing_is_held_back_not_buffered() {
    let cluster = Cluster::start(121, 1, |_| {}).await;
    let client = cluster.client().await;
    // Progress notifications let the loop below see a watch that got everything.
    let progress = WatchOptions {
        progress_ms: 100,
        ..WatchOptions::default()
    };
    let mut watcher = client
        .watch(KeyRange::prefix(b"s/"), 0, progress)
        .await
        .unwrap();
    let value = vec![b'x'; 16 << 10];
    let mut last = 0;
    for i in 0..1000 {
        last = client
            .put(format!("s/{i:04}"), value.clone())
            .await
            .unwrap()
            .revision;
    }
    client.compact(last).await.unwrap();
    let mut delivered = 0;
    let refused = loop {
        match next_batch(&mut watcher).await {
            Ok(batch) if batch.events.is_empty() && delivered == 1000 => {
                panic!("all 1000 events were held for the watcher")
            }
            Ok(batch) => delivered += batch.events.len(),
            Err(error) => break error,
        }
    };
    assert!(
        delivered < 1000,
        "all {delivered} events were held for the watcher"
    );
    assert!(
        matches!(
            refused,
            Error::Server(ClientError::Command(CommandError::Compacted { oldest, .. })) if oldest == last
        ),
        "{refused:?}"
    );
    cluster.shutdown().await;
}

// Proves a watch with a linearizable start, served by a follower that is behind, starts
// after every write acknowledged before it: with the follower cut off, a put commits on the
// others; a watch "from the next change" through that follower then delivers only the put
// after it, while one started from the follower's own revision delivers the earlier put too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_start_on_a_lagging_follower_skips_acknowledged_writes() {
    let cluster = Cluster::start(124, 3, |_| {}).await;
    let ids = cluster.ids();
    let (leader, follower, index) = leader_and_follower(&cluster).await;
    let writer = cluster.client_of(leader).await;
    writer.put("lw/before", "0").await.unwrap();
    cluster.wait_converged(leader, &ids).await;

    cluster.faults.isolate(follower);
    let acknowledged = writer.put("lw/a", "1").await.unwrap().revision;
    let watching = cluster.client().await.prefer(index);
    let range = KeyRange::prefix(b"lw/");
    let mut stale = watching
        .watch(range.clone(), 0, WatchOptions::default())
        .await
        .unwrap();
    let mut linearizable = watching
        .watch_linearizable(range, WatchOptions::default())
        .await
        .unwrap();
    assert!(linearizable.next_revision() > acknowledged);
    cluster.faults.heal();
    let next = writer.put("lw/b", "2").await.unwrap().revision;

    let s = |v: &str| Some(v.to_string());
    let mut first = Vec::new();
    while first.is_empty() {
        let batch = next_batch(&mut linearizable).await.expect("batch");
        assert_eq!(batch.served_by, follower, "served through the follower");
        first.extend(batch.events);
    }
    assert_eq!(
        summary(&first),
        vec![(next, EventKind::Put, "lw/b".into(), s("2"), None)]
    );
    let from_follower = events(&mut stale, 2).await;
    assert_eq!(
        summary(&from_follower),
        vec![
            (acknowledged, EventKind::Put, "lw/a".into(), s("1"), None),
            (next, EventKind::Put, "lw/b".into(), s("2"), None),
        ]
    );
    cluster.shutdown().await;
}
