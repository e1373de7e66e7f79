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
