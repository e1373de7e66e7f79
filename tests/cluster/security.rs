use std::time::Duration;

use aspen::api::{
    CLIENT_ALPN, ClientError, ClientOp, ClientRequest, ClientResponse, PROTOCOL_VERSION,
};
use aspen::fault::NetFaults;
use aspen::limits::{FRAME_BYTES_MAX, REQUEST_BYTES_MAX_DEFAULT, TXN_OPS_MAX};
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
        flush_mark: Default::default(),
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
            max: REQUEST_BYTES_MAX_DEFAULT as u64
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
        flush_mark: Default::default(),
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

/// Opens a stream on `conn`, sends `bytes` and leaves it open; the stream halves are returned
/// so the caller holds them.
async fn open_with(
    conn: &iroh::endpoint::Connection,
    bytes: &[u8],
) -> (iroh::endpoint::SendStream, iroh::endpoint::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    (send, recv)
}

/// The kernel's figure `field` (`VmRSS`, `VmHWM`) of process `pid`, in bytes.
fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

// Proves the hostile frames of the robustness issue cost a node bounded memory and leave it
// serving: 10,000 streams that send one byte and stop, 20 headers announcing the largest
// request and then silence, 20 well-formed transactions of ~786,000 two-byte operations
// (refused from their announced length, before they inflate some forty times), and ranges
// over 1 MiB values (cut by bytes inside the scan); meanwhile a client's writes and reads
// succeed, the stalled streams are answered once `net.request_timeout_ms` passes, and the
// node process's peak RSS grows by less than 250 MB (about 130 MB in a debug build; without
// the count check before decoding it grew by 485 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_and_streams_cost_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    let env = [
        ("ASPEN_NET__REQUEST_TIMEOUT_MS", "3000"),
        // Above the streams opened below: every one of them is read, the harder case.
        ("ASPEN_NET__REQUESTS_MAX", "20000"),
        ("ASPEN_NET__CONNECTIONS_MAX", "200"),
    ];
    let node = crate::util::NodeProcess::start_with(1, &root.path().join("n1"), "single", &env);
    let address = node.address().await;
    let client = aspen::testing::root_client(&[address]).await.unwrap();
    let value = vec![b'v'; 1 << 20];
    for i in 0..12 {
        client
            .put(format!("big/{i:02}"), value.clone())
            .await
            .unwrap();
    }
    let pid = node.pid().unwrap();
    let rss_before = memory_of(pid, "VmRSS");

    let raw = foreign_endpoint().await;
    let mut connections = Vec::new();
    for _ in 0..80 {
        connections.push(
            raw.connect(address.endpoint_addr(), CLIENT_ALPN)
                .await
                .unwrap(),
        );
    }
    // 10,000 streams of one byte: a header never finished.
    let mut held = Vec::new();
    for conn in &connections {
        for _ in 0..125 {
            held.push(open_with(conn, &[0]).await);
        }
    }
    // Headers announcing the largest request, then nothing.
    let announced = (REQUEST_BYTES_MAX_DEFAULT as u32).to_be_bytes();
    let mut silent = Vec::new();
    for i in 0..20 {
        let conn = &connections[i % connections.len()];
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut send = send;
        send.write_all(&announced).await.unwrap();
        silent.push((send, recv));
    }
    // A well-formed transaction of tiny operations that fills a request frame.
    let ops = (REQUEST_BYTES_MAX_DEFAULT - 64) / 2;
    let txn = aspen::api::Txn {
        compares: Vec::new(),
        success: (0..ops)
            .map(|_| aspen::api::TxnOp::Get { key: Vec::new() })
            .collect(),
        failure: Vec::new(),
    };
    let frame = aspen::net::frame::encode_bytes(&ClientRequest::new(ClientOp::Write(
        aspen::api::WriteOp::Txn(txn),
    )))
    .unwrap();
    assert!(frame.len() <= REQUEST_BYTES_MAX_DEFAULT + 4);
    let tiny_ops = connections.iter().take(20).map(|conn| {
        let frame = &frame;
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(frame).await.unwrap();
            send.finish().unwrap();
            read_frame::<_, ClientResponse>(&mut recv, FRAME_BYTES_MAX)
                .await
                .unwrap()
                .result
        }
    });
    let options = aspen::client::RangeOptions::default();
    let ranges = (0..4).map(|_| client.range_page(aspen::api::KeyRange::prefix(b"big/"), &options));
    let (tiny_ops, ranges, put) = tokio::join!(
        futures::future::join_all(tiny_ops),
        futures::future::join_all(ranges),
        client.put("during", "the attack"),
    );
    for refused in tiny_ops {
        let Err(ClientError::BadFrame(message)) = &refused else {
            panic!("a transaction of tiny operations was not refused as too long: {refused:?}");
        };
        assert!(
            message.contains(&format!("{TXN_OPS_MAX} per transaction list")),
            "{message}"
        );
    }
    for page in ranges {
        let page = page.unwrap();
        let bytes: usize = page
            .kvs
            .iter()
            .map(|kv| kv.key.len() + kv.value.len())
            .sum();
        assert!(
            bytes <= aspen::limits::PAGE_BYTES_MAX,
            "a page of {bytes} bytes"
        );
        assert!(page.continuation.is_some() && !page.kvs.is_empty());
    }
    put.unwrap();
    assert!(client.get("during").await.unwrap().is_some());

    // The stalled streams are answered with the deadline, and nothing of them is kept.
    for (_, recv) in silent.iter_mut().take(3) {
        let response: ClientResponse = read_frame(recv, FRAME_BYTES_MAX).await.unwrap();
        let Err(ClientError::BadFrame(message)) = &response.result else {
            panic!("a silent stream got {response:?}");
        };
        assert!(
            message.contains("did not arrive whole within 3000 ms"),
            "{message}"
        );
    }
    let grown = memory_of(pid, "VmHWM").saturating_sub(rss_before);
    assert!(
        grown < 250 << 20,
        "the node's peak RSS grew by {} MB under the hostile frames",
        grown >> 20
    );
    drop(held);
    client.put("after", "the attack").await.unwrap();
}

// Proves the node-wide admission bounds: with `net.requests_max` requests being read, one more
// is refused at once as busy (nothing done) and served again once the stalled ones reach their
// deadline; a connection past `net.connections_max` is closed with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_connections_past_their_bounds_are_refused() {
    let cluster = Cluster::start(90, 1, |config| {
        config.net.requests_max = 2;
        config.net.connections_max = 3;
        config.net.request_timeout_ms = 1_000;
    })
    .await;
    let address = cluster.address(90);
    let raw = foreign_connections().await;
    let conn = raw.connection(&address, CLIENT_ALPN).await.unwrap();
    let in_progress = || cluster.nodes[&90].node.admission.requests_in_progress();
    let mut stalled = Vec::new();
    for reading in 1..=2 {
        stalled.push(open_with(&conn, &[0]).await);
        crate::util::eventually("the node reads the stalled stream", || async {
            in_progress() == reading
        })
        .await;
    }
    let status = ClientRequest::new(ClientOp::Status);
    assert_eq!(
        ask_raw(&raw, &address, &status).await,
        Err(ClientError::Busy { max: 2 })
    );
    for (_, recv) in &mut stalled {
        let response: ClientResponse = read_frame(recv, FRAME_BYTES_MAX).await.unwrap();
        assert!(
            matches!(response.result, Err(ClientError::BadFrame(_))),
            "{response:?}"
        );
    }
    assert!(ask_raw(&raw, &address, &status).await.is_ok());

    // Connections past the bound are closed with the reason: open them one at a time (each
    // answers a request, so the node counts it) until one is refused; by then the node holds
    // its maximum.
    let endpoint = foreign_endpoint().await;
    let (_open, reason) = fill_connections(&endpoint, &address, 3).await;
    assert!(
        reason.to_string().contains("too many connections: 3 open"),
        "{reason}"
    );
    let admission = &cluster.nodes[&90].node.admission;
    assert_eq!(admission.connections_open(), 3);
    cluster.shutdown().await;
}

/// Opens client connections from `endpoint` to `address` until one is refused; returns the
/// accepted ones (each answered a status request, so the node counts it) and why the last
/// was closed.
async fn fill_connections(
    endpoint: &iroh::Endpoint,
    address: &aspen::api::NodeAddress,
    max: usize,
) -> (
    Vec<iroh::endpoint::Connection>,
    iroh::endpoint::ConnectionError,
) {
    let frame = aspen::net::frame::encode_bytes(&ClientRequest::new(ClientOp::Status)).unwrap();
    let mut open = Vec::new();
    loop {
        assert!(
            open.len() <= max,
            "{} connections were accepted",
            open.len()
        );
        let conn = endpoint
            .connect(address.endpoint_addr(), CLIENT_ALPN)
            .await
            .unwrap();
        let answered = async {
            // A refused connection may close before its first stream opens.
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            send.write_all(&frame).await.ok()?;
            send.finish().ok()?;
            read_frame::<_, ClientResponse>(&mut recv, FRAME_BYTES_MAX)
                .await
                .ok()
        };
        match answered.await {
            Some(answer) => {
                assert!(answer.result.is_ok(), "{answer:?}");
                open.push(conn);
            }
            None => return (open, conn.closed().await),
        }
    }
}

// Proves clients filling the leader's `net.connections_max` do not cut the members off: a
// write sent to a follower is still forwarded to the leader and acknowledged (the member's
// connection is neither refused nor counted; before, the follower's client heard "forwarding
// to the leader ... failed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_not_refused_when_clients_fill_the_connections() {
    let cluster = Cluster::start(106, 3, |config| config.net.connections_max = 3).await;
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let client = cluster.client_of(follower).await;
    let endpoint = foreign_endpoint().await;
    let (held, _) = fill_connections(&endpoint, &cluster.address(leader), 3).await;
    client
        .put("through", "a member")
        .await
        .expect("a forwarded write");
    assert_eq!(
        cluster.nodes[&leader].node.admission.connections_open(),
        3,
        "{} held",
        held.len()
    );
    cluster.shutdown().await;
}

// Proves a client that never reads its answer does not keep the node's work: with room for
// one request at a time, a range whose 4 MiB answer is never read holds that room only until
// `net.request_timeout_ms` passes (the stream is then reset), and the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_never_read_frees_its_place() {
    let cluster = Cluster::start(91, 1, |config| {
        config.net.requests_max = 1;
        config.net.request_timeout_ms = 1_000;
    })
    .await;
    let address = cluster.address(91);
    let client = cluster.client().await;
    let value = vec![b'v'; 1 << 20];
    for i in 0..6 {
        client.put(format!("big/{i}"), value.clone()).await.unwrap();
    }
    // A known client (the root key), so the range is served rather than refused.
    let root = aspen::net::endpoint::bind(
        aspen::testing::root_key(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::new(),
    )
    .await
    .unwrap();
    let raw = Connections::new(root, Duration::from_secs(2));
    let conn = raw.connection(&address, CLIENT_ALPN).await.unwrap();
    let range = ClientRequest::new(ClientOp::Range {
        range: aspen::api::KeyRange::prefix(b"big/"),
        limit: 0,
        keys_only: false,
        count_only: false,
        consistency: aspen::api::Consistency::Stale,
    });
    let frame = aspen::net::frame::encode_bytes(&range).unwrap();
    let (mut send, _unread) = open_with(&conn, &frame).await;
    send.finish().unwrap();
    let in_progress = || cluster.nodes[&91].node.admission.requests_in_progress();
    crate::util::eventually("the node holds the unread answer", || async {
        in_progress() == 1
    })
    .await;
    crate::util::eventually("the unread answer gives its place back", || async {
        in_progress() == 0
    })
    .await;
    client.put("after", "v").await.unwrap();
    cluster.shutdown().await;
}

/// A transaction of two puts whose client request frame is exactly `bytes` long.
fn txn_of_frame_bytes(bytes: usize) -> aspen::api::Txn {
    use aspen::api::{Put, Txn, TxnOp, WriteOp};
    let txn = |second: usize| Txn {
        compares: Vec::new(),
        success: vec![
            TxnOp::Put(Put::new("big/1", vec![b'x'; 700 * 1024])),
            TxnOp::Put(Put::new("big/2", vec![b'y'; second])),
        ],
        failure: Vec::new(),
    };
    let frame = |txn: &Txn| {
        let request = ClientRequest::new(ClientOp::Write(WriteOp::Txn(txn.clone())));
        postcard::to_allocvec(&request).unwrap().len()
    };
    let mut second = 700 * 1024;
    for _ in 0..3 {
        let size = frame(&txn(second));
        second = (second + bytes).checked_sub(size).unwrap();
    }
    let txn = txn(second);
    assert_eq!(frame(&txn), bytes);
    txn
}

// Proves a request frame exactly at `net.request_bytes_max`, sent to a follower, is served:
// the follower's forwarding envelope (its flag and the client's id) may take the frame past
// the limit at the leader, which allows it from a member (before, the leader refused it as
// too large); and that a client's own frame one byte past the limit is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_at_the_limit_is_served_through_a_follower() {
    let cluster = Cluster::start(103, 3, |_| {}).await;
    let ids = cluster.ids();
    let leader = cluster.wait_leader(&ids).await;
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let client = cluster.client_of(follower).await;
    client
        .txn(txn_of_frame_bytes(REQUEST_BYTES_MAX_DEFAULT))
        .await
        .expect("a frame at the limit, forwarded");
    let refused = client
        .txn(txn_of_frame_bytes(REQUEST_BYTES_MAX_DEFAULT + 1))
        .await;
    let text = format!("{refused:?}");
    assert!(
        text.contains("FrameTooLarge")
            && text.contains(&format!("max: {REQUEST_BYTES_MAX_DEFAULT}")),
        "{text}"
    );
    cluster.shutdown().await;
}
