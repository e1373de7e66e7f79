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

async fn foreign_connections() -> Connections {
    let endpoint = aspen::net::endpoint::bind(
        iroh::SecretKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::new(),
    )
    .await
    .unwrap();
    Connections::new(endpoint, Duration::from_secs(2))
}

// Proves an endpoint outside the membership cannot send Raft RPCs (a vote with a huge term is
// refused and the term does not move), and that a malformed and an oversized client frame
// each get an error response, as do a request of another protocol version and an internal
// command sent by a client, while the node keeps serving other clients.
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
    let ask = |request: ClientRequest| {
        let raw = &raw;
        async move {
            raw.request::<_, ClientResponse>(
                &address,
                CLIENT_ALPN,
                &request,
                Duration::from_secs(5),
                FRAME_BYTES_MAX,
            )
            .await
            .unwrap()
            .result
        }
    };
    let future = ClientRequest {
        version: PROTOCOL_VERSION + 1,
        ..ClientRequest::new(ClientOp::Status)
    };
    assert_eq!(
        ask(future).await,
        Err(ClientError::Version {
            got: PROTOCOL_VERSION + 1,
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
    }
    let expire = RawRequest {
        version: PROTOCOL_VERSION,
        forwarded: false,
        op: RawOp::Write(aspen::command::Command::Expire {
            keys: vec![b"after".to_vec()],
            leases: vec![],
        }),
    };
    let refused = raw
        .request::<_, ClientResponse>(
            &address,
            CLIENT_ALPN,
            &expire,
            Duration::from_secs(5),
            FRAME_BYTES_MAX,
        )
        .await
        .unwrap()
        .result;
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
