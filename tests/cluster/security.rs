use std::time::Duration;

use aspen::api::{
    CLIENT_ALPN, ClientError, ClientOp, ClientRequest, ClientResponse, PROTOCOL_VERSION,
};
use aspen::fault::NetFaults;
use aspen::limits::FRAME_BYTES_MAX;
use aspen::net::connections::Connections;
use aspen::net::frame::read_frame;
use aspen::net::raft::RaftTransport;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};

use crate::util::Cluster;

/// An endpoint with a fresh key on loopback, outside every cluster.
async fn foreign_endpoint() -> iroh::Endpoint {
    aspen::net::endpoint::bind(
        iroh::SecretKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::new(),
    )
    .await
    .unwrap()
}

/// Sends `request` (any frame, well-formed or not for this version) over `raw` to the node
/// at `address`; its answer.
async fn ask_raw(
    raw: &Connections,
    address: &aspen::api::NodeAddress,
    request: &impl serde::Serialize,
) -> Result<aspen::api::ClientOutput, ClientError> {
    raw.request::<_, ClientResponse>(
        address,
        CLIENT_ALPN,
        request,
        Duration::from_secs(5),
        FRAME_BYTES_MAX,
    )
    .await
    .unwrap()
    .result
}

async fn foreign_connections() -> Connections {
    Connections::new(foreign_endpoint().await, Duration::from_secs(2))
}

// Proves an endpoint outside the membership cannot send Raft RPCs (a vote with a huge term is
// refused and the term does not move), and that a malformed and an oversized client frame
// each get an error response, as do a request of another protocol version (one of version 1,
// shorter than this version's frame, included) and an internal command sent by a client, while the node keeps serving other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_and_bad_frames_are_refused() {
    let cluster = Cluster::start(40, 3, |_| {}).await;
    let target = cluster.wait_leader(&cluster.ids()).await;
    let address = cluster.address(target);
    let term_before = cluster.nodes[&target]
        .node
        .raft
        .metrics()
        .unwrap()
        .current_term;

    let mut outsider = RaftTransport {
        node_id: 99,
        connections: foreign_connections().await,
        faults: NetFaults::default(),
    };
    let mut peer = outsider
        .new_client(target, &openraft::BasicNode::new(address.to_string()))
        .await;
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term_before + 1000, 99), None);
    let refused = peer
        .vote(vote, RPCOption::new(Duration::from_secs(2)))
        .await;
    assert!(
        refused.is_err(),
        "an outsider's vote was answered: {refused:?}"
    );
    let term_after = cluster.nodes[&target]
        .node
        .raft
        .metrics()
        .unwrap()
        .current_term;
    assert!(term_after < term_before + 1000);

    let raw = foreign_connections().await;
    let conn = raw.connection(&address, CLIENT_ALPN).await.unwrap();
    // A frame whose bytes are not a request.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    send.finish().unwrap();
    let response: ClientResponse = read_frame(&mut recv, FRAME_BYTES_MAX).await.unwrap();
    assert!(
        matches!(response.result, Err(ClientError::BadFrame(_))),
        "{response:?}"
    );
    // A header announcing more than the limit: refused before a byte of it is read.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let response: ClientResponse = read_frame(&mut recv, FRAME_BYTES_MAX).await.unwrap();
    assert_eq!(
        response.result,
        Err(ClientError::FrameTooLarge {
            bytes: u32::MAX as u64,
            max: FRAME_BYTES_MAX as u64
        })
    );

    // A request of another protocol version, and an internal command from a client.
    let future = ClientRequest {
        version: PROTOCOL_VERSION + 1,
        ..ClientRequest::new(ClientOp::Status)
    };
    assert_eq!(
        ask_raw(&raw, &address, &future).await,
        Err(ClientError::Version {
            got: PROTOCOL_VERSION + 1,
            supported: PROTOCOL_VERSION
        })
    );
    // A request of version 1 (no `on_behalf_of` at its end) is refused as that version, not
    // as a malformed frame.
    #[derive(serde::Serialize)]
    struct RequestV1 {
        version: u16,
        forwarded: bool,
        op: ClientOp,
    }
    let v1 = RequestV1 {
        version: 1,
        forwarded: false,
        op: ClientOp::Status,
    };
    let refused = ask_raw(&raw, &address, &v1).await;
    assert_eq!(
        refused,
        Err(ClientError::Version {
            got: 1,
            supported: PROTOCOL_VERSION
        })
    );
    // The bytes of a housekeeping command (`Expire`) where a client's write goes: `WriteOp` has
    // no such variant, so the frame does not decode and is refused as malformed.
    #[derive(serde::Serialize)]
    enum RawOp {
        Write(aspen::command::Command),
    }
    #[derive(serde::Serialize)]
    struct RawRequest {
        version: u16,
        forwarded: bool,
        op: RawOp,
        on_behalf_of: Option<()>,
    }
    let expire = RawRequest {
        version: PROTOCOL_VERSION,
        forwarded: false,
        op: RawOp::Write(aspen::command::Command::Expire {
            keys: vec![b"after".to_vec()],
            leases: vec![],
        }),
        on_behalf_of: None,
    };
    let refused = ask_raw(&raw, &address, &expire).await;
    assert!(
        matches!(&refused, Err(ClientError::BadFrame(_))),
        "{refused:?}"
    );

    // The node still serves, on the same connection and on others.
    let client = cluster.client_of(target).await;
    client.put("after", "ok").await.unwrap();
    assert!(client.get("after").await.unwrap().is_some());
    cluster.shutdown().await;
}

// Proves Raft RPCs are bound to the node id the membership records for the connection's
// endpoint (the attack of the security issue: a learner planted with the attacker's own
// endpoint id passes the allow-list): that learner's vote as another member is refused and
// the term does not move, while the same connection's vote as itself is answered; once the
// learner is removed, its still-open connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_speaks_only_for_itself_and_a_removed_one_not_at_all() {
    let cluster = Cluster::start(60, 3, |_| {}).await;
    let leader = cluster.wait_leader(&cluster.ids()).await;
    let target = *cluster.ids().iter().find(|id| **id != leader).unwrap();
    let impersonated = *cluster
        .ids()
        .iter()
        .find(|id| **id != leader && **id != target)
        .unwrap();
    let term = |id| cluster.nodes[&id].node.raft.metrics().unwrap().current_term;
    let members_of = |id| {
        cluster.nodes[&id]
            .node
            .raft
            .metrics()
            .unwrap()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>()
    };

    // The planted learner: an endpoint whose key the test holds.
    let planted_endpoint = foreign_endpoint().await;
    let planted_address = aspen::net::endpoint::local_address(&planted_endpoint).unwrap();
    let leader_raft = cluster.nodes[&leader].node.raft.raft().unwrap();
    leader_raft
        .add_learner(
            99,
            openraft::BasicNode::new(planted_address.to_string()),
            false,
        )
        .await
        .expect("add the planted learner");
    crate::util::eventually("the target knows the planted learner", || async {
        members_of(target).contains(&99)
    })
    .await;

    let mut planted = RaftTransport {
        node_id: 99,
        connections: Connections::new(planted_endpoint, Duration::from_secs(2)),
        faults: NetFaults::default(),
    };
    let mut peer = planted
        .new_client(
            target,
            &openraft::BasicNode::new(cluster.address(target).to_string()),
        )
        .await;
    let vote_as =
        |node, term| openraft::raft::VoteRequest::new(openraft::Vote::new(term, node), None);
    let before = term(target);
    let forged = peer
        .vote(
            vote_as(impersonated, before + 1000),
            RPCOption::new(Duration::from_secs(2)),
        )
        .await;
    assert!(
        format!("{forged:?}").contains("records with endpoint"),
        "a vote as node {impersonated} from the learner's endpoint was not refused as forged: {forged:?}"
    );
    assert!(
        term(target) < before + 1000,
        "the forged vote moved the term"
    );

    // The same connection speaking for itself is served (a vote with a stale term, so the
    // cluster is left alone): the refusal above was about the claim, not the connection.
    let own = peer
        .vote(vote_as(99, 0), RPCOption::new(Duration::from_secs(2)))
        .await;
    assert!(
        own.is_ok(),
        "the learner's vote as itself was refused: {own:?}"
    );

    // Removed, the learner's open connection is refused from the next RPC on.
    leader_raft
        .change_membership(
            openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([99])),
            false,
        )
        .await
        .expect("remove the planted learner");
    crate::util::eventually("the target forgot the planted learner", || async {
        !members_of(target).contains(&99)
    })
    .await;
    let removed = peer
        .vote(vote_as(99, 0), RPCOption::new(Duration::from_secs(2)))
        .await;
    // The per-RPC refusal (a new connection would be closed at accept with another text).
    assert!(
        format!("{removed:?}").contains("is not in net.peers"),
        "a removed learner's vote on its open connection was not refused: {removed:?}"
    );
    cluster.shutdown().await;
}
