use crate::util::{Cluster, eventually};

// Proves a write through any node (a follower forwards it to the leader) is readable from
// every node, and that a linearizable read on a follower sees a write acknowledged just
// before through another node, with no wait in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_are_read_everywhere() {
    let cluster = Cluster::start(10, 3, |_| {}).await;
    let ids = cluster.ids();
    for id in &ids {
        let client = cluster.client_of(*id).await;
        let written = client
            .put(format!("from/{id}"), format!("v{id}"))
            .await
            .unwrap();
        assert!(written.revision > 0);
    }
    for reader in &ids {
        let client = cluster.client_of(*reader).await;
        for writer in &ids {
            let kv = client.get(format!("from/{writer}")).await.unwrap();
            assert_eq!(
                kv.expect("key present").value,
                format!("v{writer}").into_bytes()
            );
        }
        // Stale reads are served locally; they converge once the node applied the writes.
        eventually("stale read sees every write", || async {
            let kvs = client
                .range(
                    aspen::api::KeyRange::prefix(b"from/"),
                    &aspen::client::RangeOptions::stale(),
                )
                .await
                .unwrap()
                .kvs;
            kvs.len() == ids.len()
        })
        .await;
    }

    let leader = cluster.wait_leader(&ids).await;
    let followers: Vec<_> = ids.iter().copied().filter(|id| *id != leader).collect();
    let (writer, reader) = (
        cluster.client_of(followers[0]).await,
        cluster.client_of(followers[1]).await,
    );
    for i in 0..20 {
        let value = format!("value-{i}");
        let written = writer.put("linearizable", value.as_str()).await.unwrap();
        let kv = reader.get("linearizable").await.unwrap().expect("present");
        assert_eq!(kv.value, value.into_bytes());
        assert!(kv.mod_revision >= written.revision);
    }
    cluster.shutdown().await;
}

// Proves what the leader's load and a client's first request depend on: 64 linearizable
// reads that ask together share quorum rounds (a round answers every read queued when it
// starts, so they cost one or two rounds, not 64); a client that knows every node sends to
// the leader once an answer named it, even when told to try a follower first; and a client
// whose first node never answers (its connect would wait 60 s) is served by another at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_share_rounds_and_clients_find_the_leader() {
    let cluster = Cluster::start(70, 3, |_| {}).await;
    let leader = cluster.wait_leader(&cluster.ids()).await;
    let raft = cluster.nodes[&leader].node.raft.clone();
    let before = raft.read_rounds();
    let reads = futures::future::join_all((0..64).map(|_| raft.read_barrier())).await;
    assert!(reads.iter().all(Result::is_ok), "{reads:?}");
    let rounds = raft.read_rounds() - before;
    // One round may start before the 64 are queued; the rest wait for the next. A few more
    // only if this thread stalls for whole rounds between two of them.
    assert!(
        (1..=4).contains(&rounds),
        "64 concurrent reads ran {rounds} rounds"
    );

    let ids = cluster.ids();
    let follower = ids.iter().position(|id| *id != leader).unwrap();
    let addresses: Vec<_> = ids.iter().map(|id| cluster.address(*id)).collect();
    let client = aspen::testing::root_client(&addresses)
        .await
        .unwrap()
        .prefer(follower);
    assert_eq!(client.preferred_node(), addresses[follower]);
    client.put("routed", "v").await.unwrap();
    assert_eq!(client.preferred_node(), cluster.address(leader));
    // The next requests dial the leader (served meanwhile by the first node that answers) and
    // then go to it over that connection.
    let to_leader = cluster.address(leader);
    crate::util::eventually("the client holds a connection to the leader", || async {
        client.put("routed", "v").await.unwrap();
        client.is_connected(&to_leader) && client.preferred_node() == to_leader
    })
    .await;

    // An endpoint id no node has: with a live node's id, iroh may reach that node over the
    // path it already knows, and the "dead" address answers (seen in a CI run).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = aspen::net::endpoint::NodeAddress {
        id: iroh::SecretKey::generate().public(),
        socket: silent.local_addr().unwrap(),
    };
    let client = aspen::testing::root_client(&[dead, addresses[0], addresses[1]])
        .await
        .unwrap()
        .with_connect_timeout(std::time::Duration::from_secs(60));
    let put = tokio::time::timeout(
        std::time::Duration::from_millis(aspen::testing::WAIT_MS),
        client.put("past-the-dead-node", "v"),
    )
    .await;
    assert!(matches!(put, Ok(Ok(_))), "{put:?}");
    assert_ne!(client.preferred_node(), dead);
    cluster.shutdown().await;
}
