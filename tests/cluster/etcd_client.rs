//! The Rust `etcd-client` crate (etcd's gRPC API, as its users call it) against Aspen's etcd
//! API on a 3-node cluster of real processes: the storage calls of the Kubernetes API
//! server, and a watch that outlives the leader.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchFilterType, WatchOptions,
};

use crate::util::{etcd_addresses, start_process_cluster};

/// The revision in a response's header.
fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("a response header").revision()
}

// Proves the Kubernetes API server's call pattern works through etcd-client: create if absent
// (a transaction on mod_revision = 0, the loser reading what is there), update (a transaction
// on the mod_revision read; a stale one fails), a paginated list with a limit at one fixed
// revision that a later write does not change, min/max revision filters, a watch from a
// revision with a progress request answered at the revision reached, a lease per batch of
// events, and a compaction by revision after which the old revision is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_call_pattern_works_through_etcd_client() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let endpoints: Vec<String> = etcd_addresses(&nodes).await.into_values().collect();
    let mut client = Client::connect(&endpoints, None).await.expect("connect");

    // Create if absent.
    let create = |key: &str, value: &str| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)])
    };
    let created = client.txn(create("/registry/pods/a", "v1")).await.unwrap();
    assert!(created.succeeded());
    let again = client
        .txn(create("/registry/pods/a", "other"))
        .await
        .unwrap();
    assert!(!again.succeeded());
    let existing = match &again.op_responses()[..] {
        [TxnOpResponse::Get(get)] => get.kvs()[0].clone(),
        other => panic!("the failure branch answered {other:?}"),
    };
    assert_eq!(existing.value(), b"v1");

    // Update on the mod revision read; a stale one fails.
    let update = |revision: i64, value: &str| {
        Txn::new()
            .when([Compare::mod_revision(
                "/registry/pods/a",
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put("/registry/pods/a", value, None)])
            .or_else([TxnOp::get("/registry/pods/a", None)])
    };
    let read = existing.mod_revision();
    assert!(client.txn(update(read, "v2")).await.unwrap().succeeded());
    assert!(!client.txn(update(read, "v3")).await.unwrap().succeeded());

    // A paginated list at one revision.
    for i in 0..10 {
        client
            .put(format!("/registry/nodes/{i:02}"), "n", None)
            .await
            .unwrap();
    }
    let first = client
        .get(
            "/registry/nodes/",
            Some(GetOptions::new().with_prefix().with_limit(4)),
        )
        .await
        .unwrap();
    assert!(first.more());
    assert_eq!(first.count(), 10);
    let at = revision(first.header());
    client
        .put("/registry/nodes/99", "late", None)
        .await
        .unwrap();
    let mut listed: Vec<String> = first
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    loop {
        let mut from = listed.last().unwrap().clone().into_bytes();
        from.push(0);
        let page = client
            .get(
                from,
                Some(
                    GetOptions::new()
                        .with_range("/registry/nodes0")
                        .with_limit(4)
                        .with_revision(at),
                ),
            )
            .await
            .unwrap();
        assert_eq!(revision(page.header()), at);
        listed.extend(
            page.kvs()
                .iter()
                .map(|kv| kv.key_str().unwrap().to_string()),
        );
        if !page.more() {
            break;
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("/registry/nodes/{i:02}")).collect();
    assert_eq!(listed, expected, "the list at revision {at}");
    // The revision filters: keys written from node 05 on, created before node 99.
    let from = client.get("/registry/nodes/05", None).await.unwrap().kvs()[0].mod_revision();
    let recent = client
        .get(
            "/registry/nodes/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_mod_revision(from)
                    .with_max_create_revision(at),
            ),
        )
        .await
        .unwrap();
    let recent: Vec<&str> = recent
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap())
        .collect();
    assert_eq!(recent, &expected[5..], "keys modified from revision {from}");

    // A watch from a revision, and a progress request.
    let mut watch = client
        .watch(
            "/registry/nodes/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(at + 1)
                    .with_progress_notify(),
            ),
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.is_empty() {
        let response = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("a watch response within 20 s")
            .unwrap()
            .expect("the stream is open");
        events.extend(response.events().iter().map(|e| {
            let kv = e.kv().unwrap();
            (
                e.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.mod_revision(),
            )
        }));
    }
    assert_eq!(events[0].0, EventType::Put);
    assert_eq!(events[0].1, "/registry/nodes/99");
    let late = events[0].2;
    watch.request_progress().await.unwrap();
    let progress = loop {
        let response = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("a progress response within 20 s")
            .unwrap()
            .expect("the stream is open");
        if response.events().is_empty() && !response.created() {
            break response;
        }
    };
    assert!(revision(progress.header()) >= late, "{progress:?}");

    // A lease for a batch of events.
    let lease = client.lease_grant(60, None).await.unwrap().id();
    client
        .put(
            "/registry/events/e1",
            "x",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let event = client.get("/registry/events/e1", None).await.unwrap();
    assert_eq!(event.kvs()[0].lease(), lease);

    // Compaction by revision.
    let now = revision(event.header());
    client.compact(now, None).await.unwrap();
    let old = client
        .get(
            "/registry/pods/a",
            Some(GetOptions::new().with_revision(read)),
        )
        .await
        .expect_err("a compacted revision is refused");
    assert!(
        old.to_string()
            .contains("required revision has been compacted"),
        "{old}"
    );
}

// Proves a watch through etcd-client survives the loss of its node, as a Kubernetes reflector
// resumes one: the watch runs on the leader while puts commit through another node; the
// leader is SIGKILLed part way; the watcher watches again through a live node from the
// revision after the last event it got, and every put arrives exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_etcd_client_outlives_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, members) = start_process_cluster(root.path(), 1..=3, &[]).await;
    let addresses = etcd_addresses(&nodes).await;
    let aspen = aspen::testing::root_client(&members.values().copied().collect::<Vec<_>>())
        .await
        .unwrap();
    let leader = aspen.status().await.unwrap().leader.expect("a leader");
    let others: Vec<String> = addresses
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .collect();

    let mut writer = Client::connect(&others, None).await.unwrap();
    let start = revision(writer.get("w/", None).await.unwrap().header()) + 1;
    let writes = tokio::spawn(async move {
        let mut revisions = Vec::new();
        for i in 0..60 {
            // Created only if absent, so a put tried again after its answer was lost (the
            // leader died) is not applied twice; its revision is then the key's.
            let key = format!("w/{i:03}");
            let create = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), "v", None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let revision = loop {
                match writer.txn(create.clone()).await {
                    Ok(txn) if txn.succeeded() => break revision(txn.header()),
                    Ok(txn) => match &txn.op_responses()[..] {
                        [TxnOpResponse::Get(get)] => break get.kvs()[0].mod_revision(),
                        other => panic!("the failure branch answered {other:?}"),
                    },
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            revisions.push(revision);
        }
        revisions
    });

    let watch_through = |address: String, from: i64| async move {
        let mut client = Client::connect([address], None).await?;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream = client.watch("w/", Some(options)).await?;
        Ok::<_, etcd_client::Error>((client, stream))
    };
    let (mut _watching, mut stream) = watch_through(addresses[&leader].clone(), start)
        .await
        .unwrap();
    let mut got: Vec<(String, i64)> = Vec::new();
    let mut killed = false;
    let mut next = start;
    while got.len() < 60 {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a watch response within 30 s");
        match message {
            Ok(Some(response)) => {
                assert!(!response.canceled(), "{response:?}");
                for event in response.events() {
                    let kv = event.kv().unwrap();
                    got.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
                    next = kv.mod_revision() + 1;
                }
            }
            // The stream broke: watch again through a live node, from the next revision.
            Ok(None) | Err(_) => {
                (_watching, stream) = watch_through(others[got.len() % others.len()].clone(), next)
                    .await
                    .expect("a watch through a live node");
            }
        }
        if !killed && got.len() >= 20 {
            killed = true;
            nodes.get_mut(&leader).unwrap().kill();
        }
    }
    let revisions = writes.await.unwrap();
    let keys: Vec<String> = got.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<String> = (0..60).map(|i| format!("w/{i:03}")).collect();
    assert_eq!(keys, expected, "every put once, in order");
    assert_eq!(got.iter().map(|(_, r)| *r).collect::<Vec<_>>(), revisions);
}

// Proves one etcd watch stream carries several watches, each answered under its own id:
// watch ids chosen by the client, a NODELETE filter, prev_kv, a cancel (no more events for
// that watch, the other goes on), a duplicate id refused with etcd's reason, a large
// revision split into fragments only for the watch that asked for them, progress
// notifications of an idle watch at the configured interval, and the 1,000-watch limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_watch_stream_carries_several_watches() {
    let keys = tempfile::tempdir().unwrap();
    let root_key = aspen::testing::write_root_key(keys.path());
    let cluster = crate::util::Cluster::start(128, 1, |config| {
        config.etcd.address = "127.0.0.1:0".into();
        config.etcd.client_key = root_key.display().to_string();
        config.etcd.progress_notify_ms = 200;
    })
    .await;
    let endpoint = cluster.nodes[&128].node.etcd_address().unwrap().to_string();
    let mut client = Client::connect([endpoint], None).await.unwrap();
    let mut stream = client
        .watch(
            "a",
            Some(WatchOptions::new().with_watch_id(7).with_prev_key()),
        )
        .await
        .unwrap();
    let only_puts = WatchOptions::new()
        .with_watch_id(8)
        .with_filters([WatchFilterType::NoDelete]);
    stream.watch("a", Some(only_puts)).await.unwrap();
    stream
        .watch("a", Some(WatchOptions::new().with_watch_id(8)))
        .await
        .unwrap();

    /// An event as (type, value, previous value).
    type Event = (EventType, String, Option<String>);
    // Every response, as (watch id, created, canceled, events).
    type Seen = (i64, bool, bool, Vec<Event>);
    let mut responses: Vec<Seen> = Vec::new();
    let read = async |stream: &mut etcd_client::WatchStream, count: usize| {
        let mut got = Vec::new();
        while got.len() < count {
            let response = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("a watch response within 20 s")
                .unwrap()
                .expect("the stream is open");
            let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
            let events = response
                .events()
                .iter()
                .map(|e| {
                    let value = e.kv().map(|kv| text(kv.value())).unwrap_or_default();
                    (
                        e.event_type(),
                        value,
                        e.prev_kv().map(|kv| text(kv.value())),
                    )
                })
                .collect();
            got.push((
                response.watch_id(),
                response.created(),
                response.canceled(),
                events,
            ));
        }
        got
    };
    // Two created, and the duplicate id created then canceled at once.
    responses.extend(read(&mut stream, 3).await);
    assert_eq!(responses[0], (7, true, false, vec![]));
    assert_eq!(responses[1], (8, true, false, vec![]));
    assert_eq!(responses[2].0, 8);
    assert!(responses[2].1 && responses[2].2, "{:?}", responses[2]);

    client.put("a", "1", None).await.unwrap();
    client.delete("a", None).await.unwrap();
    let mut events: Vec<Seen> = read(&mut stream, 3).await;
    events.sort_by_key(|(id, ..)| *id);
    use EventType::{Delete, Put};
    let s = |v: &str| Some(v.to_string());
    let flat: Vec<(i64, Event)> = events
        .into_iter()
        .flat_map(|(id, _, _, events)| events.into_iter().map(move |e| (id, e)))
        .collect();
    assert_eq!(
        flat,
        vec![
            (7, (Put, "1".into(), None)),
            (7, (Delete, String::new(), s("1"))),
            (8, (Put, "1".into(), None)),
        ],
        "watch 7 with previous values, watch 8 puts only"
    );

    stream.cancel(7).await.unwrap();
    let canceled = read(&mut stream, 1).await;
    assert_eq!(canceled[0].0, 7);
    assert!(canceled[0].2, "{canceled:?}");
    client.put("a", "2", None).await.unwrap();
    let after = read(&mut stream, 1).await;
    assert_eq!(
        after,
        vec![(8, false, false, vec![(Put, "2".into(), None)])]
    );

    // One revision of 2 MB of events (a range delete of four 500 KB values, with their
    // previous values): a watch asking for fragments gets it in two answers (three events
    // fit under 1.5 MiB), one that does not ask in one.
    let big = |id: i64, fragment: bool| {
        let options = WatchOptions::new()
            .with_watch_id(id)
            .with_prefix()
            .with_prev_key();
        match fragment {
            true => options.with_fragment(),
            false => options,
        }
    };
    stream.watch("big/", Some(big(9, true))).await.unwrap();
    stream.watch("big/", Some(big(10, false))).await.unwrap();
    assert_eq!(read(&mut stream, 2).await.len(), 2, "both created");
    for i in 0..4 {
        let value = vec![b'v'; 500_000];
        client.put(format!("big/{i}"), value, None).await.unwrap();
    }
    let mut answers: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (id, _, _, events) in read(&mut stream, 2 * 4).await {
        answers.entry(id).or_default().push(events.len());
    }
    assert_eq!(answers[&9], [1, 1, 1, 1], "puts: one answer each");
    client
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let mut answers: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (id, _, _, events) in read(&mut stream, 3).await {
        answers.entry(id).or_default().push(events.len());
    }
    assert_eq!(answers[&9], [3, 1], "fragmented");
    assert_eq!(answers[&10], [4], "whole");

    // An idle watch asking for progress notifications hears the revision it reached every
    // etcd.progress_notify_ms (200 ms here), as an answer without events.
    let now = client.get("nothing", None).await.unwrap();
    let now = revision(now.header());
    let notify = WatchOptions::new().with_watch_id(11).with_progress_notify();
    stream.watch("quiet", Some(notify)).await.unwrap();
    assert_eq!(read(&mut stream, 1).await[0], (11, true, false, vec![]));
    let progress = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a progress notification within 10 s")
        .unwrap()
        .expect("the stream is open");
    assert_eq!(progress.watch_id(), 11);
    assert!(progress.events().is_empty() && !progress.created() && !progress.canceled());
    assert_eq!(revision(progress.header()), now);
    // Canceled, so that its notifications (one every 200 ms) do not come between the answers
    // below on a slow machine: the answers up to its cancel may still hold some.
    stream.cancel(11).await.unwrap();
    loop {
        let (id, _, canceled, events) = read(&mut stream, 1).await.remove(0);
        assert!(id == 11 && events.is_empty(), "only watch 11 answers here");
        if canceled {
            break;
        }
    }

    // A stream runs at most 1,000 watches (three run now): the next is refused with the reason.
    for id in 0..997 {
        stream
            .watch("many", Some(WatchOptions::new().with_watch_id(1_000 + id)))
            .await
            .unwrap();
    }
    let created = read(&mut stream, 997).await;
    assert!(
        created
            .iter()
            .all(|(_, created, canceled, _)| *created && !*canceled)
    );
    stream
        .watch("many", Some(WatchOptions::new().with_watch_id(5_000)))
        .await
        .unwrap();
    let refused = stream.message().await.unwrap().expect("an answer");
    assert!(refused.created() && refused.canceled(), "{refused:?}");
    assert!(
        refused.cancel_reason().contains("at most 1000 watches"),
        "{}",
        refused.cancel_reason()
    );
    cluster.shutdown().await;
}

// Proves etcd's transaction features through etcd-client: a lease compare, a compare over a
// key range (holds only when every key does), a range read inside a transaction sorted as
// asked with its count (with a limit, the first entries in that order; and a plain range
// sorted by value, keys only), a nested transaction whose compare sees the state before the
// outer one ran, and a range delete answering the entries it deleted (a transaction's and a
// plain DeleteRange's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_transactions_use_leases_ranges_and_nesting() {
    use etcd_client::{DeleteOptions, SortOrder, SortTarget};
    let keys = tempfile::tempdir().unwrap();
    let root_key = aspen::testing::write_root_key(keys.path());
    let cluster = crate::util::Cluster::start(129, 1, |config| {
        config.etcd.address = "127.0.0.1:0".into();
        config.etcd.client_key = root_key.display().to_string();
    })
    .await;
    let endpoint = cluster.nodes[&129].node.etcd_address().unwrap().to_string();
    let mut client = Client::connect([endpoint], None).await.unwrap();
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let with_lease = PutOptions::new().with_lease(lease);
    client.put("a/1", "x", Some(with_lease)).await.unwrap();
    client.put("a/2", "x", None).await.unwrap();
    client.put("a/3", "y", None).await.unwrap();

    let by_value = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Value, SortOrder::Descend);
    let txn = Txn::new()
        .when([Compare::lease("a/1", CompareOp::Equal, lease)])
        .and_then([TxnOp::get("a/", Some(by_value))]);
    let response = client.txn(txn).await.unwrap();
    assert!(response.succeeded());
    let [TxnOpResponse::Get(range)] = &response.op_responses()[..] else {
        panic!("{response:?}");
    };
    let keys: Vec<&str> = range.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["a/3", "a/1", "a/2"]);
    assert_eq!(range.count(), 3);
    // With a limit, the first entries in the asked order: the first created (as etcd's lock
    // recipe asks for its owner), the two last modified.
    let first = |target, order, limit| {
        let options = GetOptions::new().with_prefix().with_sort(target, order);
        TxnOp::get("a/", Some(options.with_limit(limit)))
    };
    let response = client
        .txn(Txn::new().and_then([
            first(SortTarget::Create, SortOrder::Ascend, 1),
            first(SortTarget::Mod, SortOrder::Descend, 2),
        ]))
        .await
        .unwrap();
    let responses = response.op_responses();
    let firsts: Vec<(Vec<&str>, bool, i64)> = responses
        .iter()
        .map(|op| match op {
            TxnOpResponse::Get(range) => (
                range.kvs().iter().map(|kv| kv.key_str().unwrap()).collect(),
                range.more(),
                range.count(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        firsts,
        [(vec!["a/1"], true, 3), (vec!["a/3", "a/2"], true, 3)]
    );
    // Keys only, a plain range sorted by value is in value order all the same.
    let keys_by_value = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(SortTarget::Value, SortOrder::Descend);
    let range = client.get("a/", Some(keys_by_value)).await.unwrap();
    let keys: Vec<(&str, &[u8])> = range
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap(), kv.value()))
        .collect();
    assert_eq!(keys, [("a/3", &b""[..]), ("a/1", b""), ("a/2", b"")]);

    let all_x = |end: &str| Compare::value("a/1", CompareOp::Equal, "x").with_range(end);
    let holds = |c: Compare| {
        let mut client = client.clone();
        async move { client.txn(Txn::new().when([c])).await.unwrap().succeeded() }
    };
    assert!(holds(all_x("a/3")).await);
    assert!(!holds(all_x("a/4")).await);
    assert!(!holds(Compare::lease("a/2", CompareOp::Equal, lease)).await);

    let inner = Txn::new()
        .when([Compare::value("a/3", CompareOp::Equal, "y")])
        .and_then([TxnOp::put("inner", "saw the old state", None)])
        .or_else([TxnOp::put("inner", "saw the outer put", None)]);
    let response = client
        .txn(Txn::new().and_then([TxnOp::put("a/3", "z", None), TxnOp::txn(inner)]))
        .await
        .unwrap();
    assert!(matches!(&response.op_responses()[1], TxnOpResponse::Txn(t) if t.succeeded()));
    let inner = client.get("inner", None).await.unwrap();
    assert_eq!(inner.kvs()[0].value_str().unwrap(), "saw the old state");

    let deleted = client
        .delete(
            "a/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 3);
    let values: Vec<&str> = deleted
        .prev_kvs()
        .iter()
        .map(|kv| kv.value_str().unwrap())
        .collect();
    assert_eq!(values, ["x", "x", "z"]);
    client.put("b/1", "1", None).await.unwrap();
    let in_txn = Txn::new().and_then([TxnOp::delete(
        "b/",
        Some(DeleteOptions::new().with_prefix().with_prev_key()),
    )]);
    let response = client.txn(in_txn).await.unwrap();
    let [TxnOpResponse::Delete(deleted)] = &response.op_responses()[..] else {
        panic!("{response:?}");
    };
    assert_eq!(deleted.prev_kvs()[0].key_str().unwrap(), "b/1");
    cluster.shutdown().await;
}
