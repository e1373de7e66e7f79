use std::time::Duration;

use aspen::api::{
    AuthOp, CLIENT_ALPN, ClientError, ClientOp, ClientRequest, ClientResponse, Compare, CompareOp,
    CompareTarget, Grant, KeyRange, Perm, Put, ROOT_ROLE, Txn, TxnOp,
};
use aspen::client::{Client, Error, RangeOptions};
use aspen::limits::FRAME_BYTES_MAX;
use aspen::net::connections::Connections;

use crate::util::Cluster;

/// A client with a fresh key of its own.
async fn new_client(cluster: &Cluster, id: u64) -> Client {
    Client::connect_with_key(iroh::SecretKey::generate(), &[cluster.address(id)])
        .await
        .unwrap()
}

/// Asserts a permission refusal that names `what`.
fn denied<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::Server(ClientError::Denied(message))) => {
            assert!(message.contains(what), "{message} (expected {what:?})");
            assert!(message.starts_with("permission denied: "), "{message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
        other => panic!("expected a refusal naming {what:?}, got {other:?}"),
    }
}

// Proves, on a 3-node cluster, what a client without the needed role gets, for every
// operation family: a reader granted read on `app/` (talking to a follower, so its requests
// are forwarded and checked again by the leader) gets, ranges and queries its prefix (SQL sees
// only those keys) and nothing else; its puts, deletes, txns, a lease revoke, membership and
// auth changes are refused with one line naming the missing permission, and the state is
// unchanged (asserted by reads as root); a writer on `vault/team/` writes there and lists only
// that vault; an unknown client (an outside endpoint that learned the nodes' ids) gets
// nothing but status and whoami, and cannot change the membership; and revoking the role
// takes effect on the next request, and ends a running watch at its next frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_does_what_its_roles_grant_and_nothing_more() {
    let cluster = Cluster::start(80, 3, |_| {}).await;
    let leader = cluster.wait_leader(&cluster.ids()).await;
    let follower = *cluster.ids().iter().find(|id| **id != leader).unwrap();
    let root = cluster.client().await;
    let me = root.whoami().await.unwrap();
    assert_eq!(me.roles, vec![ROOT_ROLE.to_string()]);

    let reader = new_client(&cluster, follower).await;
    let writer = new_client(&cluster, follower).await;
    let stranger = new_client(&cluster, follower).await;
    for (role, prefix, perm) in [
        ("app", "app/", Perm::Read),
        ("team", "vault/team/", Perm::ReadWrite),
    ] {
        root.auth(AuthOp::RoleAdd { name: role.into() })
            .await
            .unwrap();
        root.auth(AuthOp::RoleGrant {
            name: role.into(),
            grant: Grant {
                prefix: prefix.as_bytes().to_vec(),
                perm,
            },
        })
        .await
        .unwrap();
    }
    for (client, role) in [(&reader, "app"), (&writer, "team")] {
        root.auth(AuthOp::ClientAdd {
            id: client.id(),
            roles: vec![role.into()],
        })
        .await
        .unwrap();
    }
    for key in ["app/1", "app/2", "other/1", "vault/team/a", "vault/else/a"] {
        root.put(key, "v").await.unwrap();
    }
    let lease = root.lease_grant(0, 60_000).await.unwrap();
    root.put_with(Put {
        lease: Some(lease.id),
        ..Put::new("other/leased", "v")
    })
    .await
    .unwrap();

    // Reads inside the prefix, through the follower.
    assert_eq!(reader.get("app/1").await.unwrap().unwrap().value, b"v");
    let page = reader
        .range(KeyRange::prefix(b"app/"), &RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 2);
    let sql = reader.sql("SELECT key FROM kv ORDER BY key").await.unwrap();
    let keys: Vec<String> = sql.rows.iter().map(|row| format!("{:?}", row[0])).collect();
    assert_eq!(keys.len(), 2, "SQL saw more than app/: {keys:?}");
    assert!(keys.iter().all(|k| k.contains("app/")), "{keys:?}");
    let leases = reader.sql("SELECT id FROM leases").await;
    assert!(
        matches!(&leases, Err(Error::Server(ClientError::Sql(m))) if m.contains("leases")),
        "{leases:?}"
    );

    // Everything else is refused, and nothing changed.
    denied(
        reader.get("other/1").await,
        "no read permission on the key \"other/1\"",
    );
    denied(
        reader
            .range(KeyRange::prefix(b"app"), &RangeOptions::default())
            .await,
        "no read permission",
    );
    denied(
        reader.put("app/3", "x").await,
        "no readwrite permission on the key \"app/3\"",
    );
    denied(reader.delete("app/1").await, "no readwrite permission");
    denied(
        reader.delete_range(KeyRange::prefix(b"app/")).await,
        "no readwrite permission",
    );
    let txn = Txn {
        compares: vec![Compare {
            key: b"app/1".to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Value(b"v".to_vec()),
        }],
        success: vec![TxnOp::Put(Put::new("app/9", "x"))],
        failure: vec![TxnOp::Get {
            key: b"other/1".to_vec(),
        }],
    };
    denied(
        reader.txn(txn).await,
        "no readwrite permission on the key \"app/9\"",
    );
    denied(
        reader.lease_revoke(lease.id).await,
        "no readwrite permission on the key \"other/leased\"",
    );
    denied(
        reader.add_learner(99, &cluster.address(leader)).await,
        "needs the root role",
    );
    denied(reader.remove(follower).await, "needs the root role");
    denied(
        reader
            .auth(AuthOp::ClientAdd {
                id: reader.id(),
                roles: vec![ROOT_ROLE.into()],
            })
            .await,
        "needs the root role",
    );
    denied(reader.auth_list().await, "needs the root role");
    assert!(
        reader.lease_grant(0, 1_000).await.is_ok(),
        "a known client may hold leases"
    );
    for key in ["app/1", "other/1", "other/leased"] {
        assert!(root.get(key).await.unwrap().is_some(), "{key} was deleted");
    }
    for key in ["app/3", "app/9"] {
        assert!(root.get(key).await.unwrap().is_none(), "{key} was written");
    }
    assert_eq!(root.status().await.unwrap().members.len(), 3);
    let me = reader.whoami().await.unwrap();
    assert_eq!(
        (me.known, me.roles.clone()),
        (true, vec!["app".to_string()])
    );

    // A readwrite role on a vault.
    writer.put("vault/team/b", "w").await.unwrap();
    assert_eq!(root.get("vault/team/b").await.unwrap().unwrap().value, b"w");
    denied(
        writer.put("vault/else/b", "w").await,
        "no readwrite permission",
    );
    let vaults: Vec<String> = writer
        .vault_list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(vaults, vec!["team".to_string()]);

    // A client the cluster does not know.
    denied(stranger.get("app/1").await, "is not known to the cluster");
    denied(
        stranger.put("app/1", "x").await,
        "is not known to the cluster",
    );
    denied(
        stranger.sql("SELECT key FROM kv").await,
        "is not known to the cluster",
    );
    denied(
        stranger.add_learner(99, &cluster.address(leader)).await,
        "is not known",
    );
    denied(stranger.remove(follower).await, "is not known");
    // `cluster init` of a formed cluster changes nothing and makes no one root.
    let members = std::collections::BTreeMap::from([(leader, cluster.address(leader))]);
    assert!(stranger.cluster_init(&members).await.is_err());
    assert_eq!(root.status().await.unwrap().members.len(), 3);
    assert!(stranger.status().await.is_ok());
    assert!(!stranger.whoami().await.unwrap().known);
    // Waiting to become root says at once that the cluster already has one.
    let refused = stranger.wait_root().await;
    assert!(
        matches!(&refused, Err(Error::Setup(m)) if m.contains("already has a root client")),
        "{refused:?}"
    );

    // A watch the reader runs (served by the follower) delivers while it may read...
    let mut watch = reader
        .watch(
            KeyRange::prefix(b"app/"),
            0,
            aspen::api::WatchOptions::default(),
        )
        .await
        .unwrap();
    root.put("app/watched", "1").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // The first frame (the watch is set up) has no events.
            if let Some(event) = watch.next().await.unwrap().events.pop() {
                return event;
            }
        }
    })
    .await
    .expect("an event within 10 s");
    assert_eq!(event.key, b"app/watched");

    // Taking the role away takes effect at once, on the follower and through it.
    root.auth(AuthOp::ClientRevoke {
        id: reader.id(),
        role: "app".into(),
    })
    .await
    .unwrap();
    denied(reader.get("app/1").await, "no read permission");
    // ...and ends at its next frame once it may not, without delivering it.
    root.put("app/watched", "2").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends within 10 s");
    denied(ended, "no read permission");
    drop(watch);
    let state = root.auth_list().await.unwrap();
    assert!(state.clients[&reader.id()].is_empty());
    cluster.shutdown().await;
}

// Proves an endpoint outside the membership that claims to forward for the root client is
// refused (as not proposed, so a client asks the leader itself) and nothing is written, while a member may forward (the follower path above); and
// that the last root client cannot be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_member_forwards_for_a_client() {
    let cluster = Cluster::start(85, 3, |_| {}).await;
    let leader = cluster.wait_leader(&cluster.ids()).await;
    let address = cluster.address(leader);
    let root = cluster.client().await;

    let outsider = Connections::new(
        aspen::net::endpoint::bind(
            iroh::SecretKey::generate(),
            "127.0.0.1:0".parse().unwrap(),
            Vec::new(),
        )
        .await
        .unwrap(),
        Duration::from_secs(2),
    );
    let forged = ClientRequest {
        forwarded: true,
        on_behalf_of: Some(root.id()),
        ..ClientRequest::new(ClientOp::Write(aspen::api::WriteOp::Put(Put::new(
            "forged", "x",
        ))))
    };
    let response: ClientResponse = outsider
        .request(
            &address,
            CLIENT_ALPN,
            &forged,
            Duration::from_secs(5),
            FRAME_BYTES_MAX,
        )
        .await
        .unwrap();
    // Refused as not proposed: the client is sent to the leader, to ask as itself.
    assert_eq!(
        response.result,
        Err(ClientError::NotLeader {
            leader: Some(leader)
        })
    );
    assert!(root.get("forged").await.unwrap().is_none());

    let last_root = root.auth(AuthOp::ClientRemove { id: root.id() }).await;
    assert!(
        matches!(&last_root, Err(Error::Server(ClientError::Command(e))) if e.to_string().contains("last root")),
        "{last_root:?}"
    );
    assert_eq!(
        root.whoami().await.unwrap().roles,
        vec![ROOT_ROLE.to_string()]
    );
    cluster.shutdown().await;
}

// Proves `auth.enabled = false` (a throwaway local node) serves a client no one added, and
// says so in whoami.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_any_client_is_served() {
    let node = aspen::testing::TestNode::start(89, |config| config.auth.enabled = false).await;
    let anyone = Client::connect_with_key(iroh::SecretKey::generate(), &[node.node.address()])
        .await
        .unwrap();
    anyone.put("open", "door").await.unwrap();
    assert_eq!(anyone.get("open").await.unwrap().unwrap().value, b"door");
    let me = anyone.whoami().await.unwrap();
    assert!(!me.auth_enabled && !me.known, "{me:?}");
    node.shutdown().await;
}
