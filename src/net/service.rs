//! The client protocol's server side: any node takes any request. Writes and linearizable
//! reads are served by the leader (a follower forwards them once, over the client protocol);
//! stale reads and status are served locally. A malformed, oversized or wrong-version frame
//! gets an error response and ends that stream only.
//!
//! Owns: framing, the version check, admission (`net.requests_max`, `net.connections_max`,
//! counted by `admission`), the deadline for reading a request and for the client taking its answer
//! (`net.request_timeout_ms`), forwarding, per-vault counters and the slow-request log.
//! The work itself is the node's, behind the [`ClientPort`] this module declares: it never
//! names storage, the actors or the node.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};

use crate::api::auth::AUTH_ENTRIES_MAX;
use crate::api::*;
use crate::fault::NetFaults;
use crate::limits::{FRAME_BYTES_MAX, MEMBERS_MAX, TXN_OPS_MAX};
use crate::net::admission::Admission;
use crate::net::connections::Connections;
use crate::net::frame::{FrameError, read_frame_payload, write_frame};

/// Keys in slow-request log lines are cut to this many bytes.
const SLOW_LOG_KEY_BYTES: usize = 256;

/// QUIC stream error code sent when a request frame is refused unread.
const FRAME_REFUSED: u32 = 1;
/// QUIC stream error code sent when the client did not read its answer in time.
const ANSWER_NOT_READ: u32 = 3;
/// QUIC connection error code sent when `net.connections_max` connections are open.
const CONNECTIONS_FULL: u32 = 2;
/// What forwarding adds to a client's request frame, at most: `on_behalf_of` grows from one
/// byte to 33 (a 32-byte client id); `forwarded` stays one byte.
const FORWARD_ENVELOPE_BYTES_MAX: usize = 64;

/// The frames of a running watch: output and revision, or why it ended.
pub type WatchFrames = tokio::sync::mpsc::Receiver<Result<(ClientOutput, u64), ClientError>>;

/// What the client server needs from the node. Declared here, implemented by the node with
/// its actors' handles.
pub trait ClientPort: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// The leader as this node knows it.
    fn leader(&self) -> Option<NodeId>;
    /// The Raft term as this node knows it.
    fn term(&self) -> u64;
    /// Where member `id` is reached, from the membership.
    fn member_address(&self, id: NodeId) -> Option<NodeAddress>;
    /// Whether the node is stopping: requests are refused (as not proposed) from then on.
    fn is_stopping(&self) -> bool;
    /// Whether `id` is the endpoint of a member (voter or learner): only a member may
    /// forward a request on behalf of a client.
    fn is_member_endpoint(&self, id: &ClientId) -> bool;
    /// Runs `op` for `client` on this node (checking what it may do): the answer and the
    /// revision it reflects, or why not.
    fn execute(&self, client: ClientId, op: &ClientOp) -> impl Future<Output = Served> + Send;
    /// Starts the watch `op` (a `ClientOp::Watch`) for `client` on this node (checked like a
    /// read of its range): the frames it sends (output and revision, or why it ended), until
    /// the receiver is dropped.
    fn watch(
        &self,
        client: ClientId,
        op: &ClientOp,
    ) -> impl Future<Output = Result<WatchFrames, ClientError>> + Send;
}

pub struct ClientService<P> {
    pub port: Arc<P>,
    pub connections: Connections,
    pub faults: NetFaults,
    pub request_timeout: Duration,
    /// Requests that take longer are logged (`net.slow_request_ms`).
    pub slow_request: Duration,
    /// Vault names used as metric labels so far; bounded (see `vault_label`).
    pub vault_labels: Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>,
    /// At most this many distinct vault labels (`storage.vaults_max`); others count as `_other`.
    pub vault_labels_max: usize,
    /// Largest request frame (`net.request_bytes_max`).
    pub request_bytes_max: usize,
    /// What may be in progress at once.
    pub admission: Admission,
}

impl<P> Clone for ClientService<P> {
    fn clone(&self) -> Self {
        ClientService {
            port: Arc::clone(&self.port),
            connections: self.connections.clone(),
            faults: self.faults.clone(),
            request_timeout: self.request_timeout,
            slow_request: self.slow_request,
            vault_labels: Arc::clone(&self.vault_labels),
            vault_labels_max: self.vault_labels_max,
            request_bytes_max: self.request_bytes_max,
            admission: self.admission.clone(),
        }
    }
}

impl<P> std::fmt::Debug for ClientService<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientService").finish_non_exhaustive()
    }
}

/// A request this node cannot finish itself.
#[derive(Debug)]
pub enum Failure {
    /// Only the leader can serve it; `None` when no leader is known.
    Redirect(Option<NodeId>),
    Error(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Error(error)
    }
}

/// What [`ClientPort::execute`] answers: the output and the revision it reflects.
pub type Served = Result<(ClientOutput, u64), Failure>;

impl<P: ClientPort> ClientService<P> {
    fn node_id(&self) -> NodeId {
        self.port.node_id()
    }

    fn leader(&self) -> Option<NodeId> {
        self.port.leader()
    }

    /// Serves one request that arrived from the endpoint `remote`, forwarding it to the
    /// leader once when only the leader can. The client is `remote`, or the client a member
    /// forwards for.
    pub async fn serve(&self, remote: ClientId, request: ClientRequest) -> ClientResponse {
        if request.version != PROTOCOL_VERSION {
            return self.respond(Err(ClientError::Version {
                got: request.version,
                supported: PROTOCOL_VERSION,
            }));
        }
        let client = match request.on_behalf_of {
            None => remote,
            Some(client) if self.port.is_member_endpoint(&remote) => client,
            // Not believed: nothing is done, and the answer sends the client to this node
            // directly, where it is checked as itself (a removed member that still forwards
            // gets its clients through this way too).
            Some(_) => {
                tracing::warn!(node_id = self.node_id(), %remote,
                    "net: refused a request forwarded by an endpoint that is not a member");
                return self.respond(Err(ClientError::NotLeader {
                    leader: self.leader(),
                }));
            }
        };
        if self.port.is_stopping() {
            // Not proposed: the client may retry on another node.
            return self.respond(Err(ClientError::NotLeader { leader: None }));
        }
        let started = std::time::Instant::now();
        let served = self.port.execute(client, &request.op).await;
        if !matches!(served, Err(Failure::Redirect(_))) {
            let revision = served.as_ref().map_or(0, |(_, revision)| *revision);
            self.observe(&request.op, started.elapsed(), revision);
        }
        match served {
            Ok((output, revision)) => ClientResponse {
                revision,
                ..self.respond(Ok(output))
            },
            Err(Failure::Error(error)) => self.respond(Err(error)),
            Err(Failure::Redirect(Some(leader)))
                if !request.forwarded && leader != self.node_id() =>
            {
                self.forward(leader, client, request).await
            }
            Err(Failure::Redirect(leader)) => self.respond(Err(ClientError::NotLeader { leader })),
        }
    }

    /// Counts the request per vault it touches and logs it when slow. Runs where the request
    /// was executed (not on a node that only forwarded it).
    fn observe(&self, op: &ClientOp, elapsed: Duration, revision: u64) {
        let (name, key) = op_subject(op);
        let node = self.node_id().to_string();
        for vault in vaults_touched(op) {
            metrics::counter!(crate::metrics::VAULT_OPERATIONS, "node_id" => node.clone(),
                "vault" => self.vault_label(vault), "op" => name)
            .increment(1);
        }
        if elapsed >= self.slow_request {
            let key = key.map_or(String::new(), |k| {
                String::from_utf8_lossy(&k[..k.len().min(SLOW_LOG_KEY_BYTES)]).into_owned()
            });
            let vault = op_subject(op)
                .1
                .and_then(vault_of)
                .map_or(String::new(), |v| String::from_utf8_lossy(v).into_owned());
            tracing::warn!(
                node_id = self.node_id(),
                op = name,
                key,
                vault,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                revision,
                "slow operation"
            );
        }
    }

    /// The metric label of a vault: its name, for the first `vault_labels_max` names this
    /// node saw; `_other` after that, so requests naming ever new vaults (refused ones
    /// included) cannot grow `/metrics` without bound.
    fn vault_label(&self, vault: &[u8]) -> String {
        let mut labels = self
            .vault_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if labels.contains(vault) || labels.len() < self.vault_labels_max {
            labels.insert(vault.to_vec());
            String::from_utf8_lossy(vault).into_owned()
        } else {
            "_other".into()
        }
    }

    fn respond(&self, result: Result<ClientOutput, ClientError>) -> ClientResponse {
        ClientResponse {
            served_by: self.node_id(),
            leader: self.leader(),
            revision: 0,
            result,
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        client: ClientId,
        mut request: ClientRequest,
    ) -> ClientResponse {
        let not_leader = || {
            self.respond(Err(ClientError::NotLeader {
                leader: Some(leader),
            }))
        };
        let Some(address) = self.port.member_address(leader) else {
            return not_leader();
        };
        if self.faults.is_cut(self.node_id(), leader) {
            return not_leader();
        }
        request.forwarded = true;
        request.on_behalf_of = Some(client);
        match self
            .connections
            .request::<_, ClientResponse>(
                &address,
                CLIENT_ALPN,
                &request,
                self.request_timeout + request.op.response_allowance(),
                // A request at the largest `net.request_bytes_max` fits with the envelope.
                FRAME_BYTES_MAX + FORWARD_ENVELOPE_BYTES_MAX,
            )
            .await
        {
            Ok(response) => response,
            Err(error) if error.not_sent() => not_leader(),
            Err(error) => self.respond(Err(ClientError::Unavailable(format!(
                "forwarding to the leader (node {leader}): {error}"
            )))),
        }
    }

    async fn serve_stream(
        &self,
        remote: ClientId,
        mut send: iroh::endpoint::SendStream,
        mut recv: iroh::endpoint::RecvStream,
    ) {
        // Held until the response is written: reading, serving and answering count.
        let permit = self.admission.try_request();
        let response = match permit {
            None => {
                let _ = recv.stop(FRAME_REFUSED.into());
                refused(self.node_id(), "busy");
                self.respond(Err(ClientError::Busy {
                    max: u64::from(self.admission.requests_max()),
                }))
            }
            Some(_) => match self.read_request(remote, &mut recv).await {
                Ok(request) if matches!(request.op, ClientOp::Watch { .. }) => {
                    // A watch lasts: it holds no request slot once it runs.
                    drop(permit);
                    return self.serve_watch(remote, request, send).await;
                }
                Ok(request) => self.serve(remote, request).await,
                Err(refused) => refused,
            },
        };
        // The answer must be taken within the request timeout too: a client that never reads
        // would otherwise hold its permit, the page and QUIC's send buffer for good.
        let answered = tokio::time::timeout(self.request_timeout, async {
            match write_frame(&mut send, &response, FRAME_BYTES_MAX).await {
                Ok(()) => {}
                Err(FrameError::TooLarge { bytes, max }) => {
                    let too_large = self.respond(Err(ClientError::Storage(format!(
                        "response of {bytes} bytes exceeds the frame limit of {max}"
                    ))));
                    let _ = write_frame(&mut send, &too_large, FRAME_BYTES_MAX).await;
                }
                Err(_) => return,
            }
            let _ = send.finish();
            drop(response);
            drop(permit);
            // Keep the stream until the peer has read the response (or gone away).
            let _ = send.stopped().await;
        })
        .await;
        if answered.is_err() {
            refused(self.node_id(), "deadline");
            let _ = send.reset(ANSWER_NOT_READ.into());
        }
    }

    /// Runs a watch on `send`: one frame per batch of events (or progress), until the client
    /// stops reading or the watch ends (its last frame then says why).
    async fn serve_watch(
        &self,
        remote: ClientId,
        request: ClientRequest,
        mut send: iroh::endpoint::SendStream,
    ) {
        let started = if request.version != PROTOCOL_VERSION {
            Err(ClientError::Version {
                got: request.version,
                supported: PROTOCOL_VERSION,
            })
        } else if request.on_behalf_of.is_some() {
            Err(ClientError::BadRequest(
                "a watch is served by the node the client reaches, never forwarded".into(),
            ))
        } else {
            self.port.watch(remote, &request.op).await
        };
        let mut frames = match started {
            Ok(frames) => frames,
            Err(error) => {
                let refused = self.respond(Err(error));
                let _ = tokio::time::timeout(self.request_timeout, async {
                    let _ = write_frame(&mut send, &refused, FRAME_BYTES_MAX).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                })
                .await;
                return;
            }
        };
        loop {
            let frame = tokio::select! {
                frame = frames.recv() => frame,
                // The client went away: the feed stops when `frames` is dropped.
                _ = send.stopped() => return,
            };
            let Some(frame) = frame else {
                let _ = send.finish();
                return;
            };
            let last = frame.is_err();
            let response = match frame {
                Ok((output, revision)) => ClientResponse {
                    revision,
                    ..self.respond(Ok(output))
                },
                Err(error) => self.respond(Err(error)),
            };
            if write_frame(&mut send, &response, FRAME_BYTES_MAX)
                .await
                .is_err()
            {
                return;
            }
            if last {
                let _ = send.finish();
                let _ = tokio::time::timeout(self.request_timeout, send.stopped()).await;
                return;
            }
        }
    }

    /// Reads one request frame (whole within the request timeout): the request, or the
    /// answer refusing it.
    async fn read_request(
        &self,
        remote: ClientId,
        recv: &mut iroh::endpoint::RecvStream,
    ) -> Result<ClientRequest, ClientResponse> {
        // A member forwarding a client's request adds its envelope (`forwarded`, the client's
        // id) to a frame the client kept within the limit: it may pass the limit by that much.
        let member_max = self.request_bytes_max + FORWARD_ENVELOPE_BYTES_MAX;
        let read =
            tokio::time::timeout(self.request_timeout, read_frame_payload(recv, member_max)).await;
        let max = self.request_bytes_max as u64;
        let error = match read {
            Ok(Ok(payload))
                if payload.len() > self.request_bytes_max
                    && !self.port.is_member_endpoint(&remote) =>
            {
                refused(self.node_id(), "too_large");
                ClientError::FrameTooLarge {
                    bytes: payload.len() as u64,
                    max,
                }
            }
            Ok(Ok(payload)) => {
                return decode_request(&payload).map_err(|error| self.respond(Err(error)));
            }
            Ok(Err(FrameError::TooLarge { bytes, .. })) => {
                refused(self.node_id(), "too_large");
                ClientError::FrameTooLarge { bytes, max }
            }
            Ok(Err(error)) => ClientError::BadFrame(error.to_string()),
            Err(_) => {
                refused(self.node_id(), "deadline");
                ClientError::BadFrame(format!(
                    "the request frame did not arrive whole within {} ms (net.request_timeout_ms)",
                    self.request_timeout.as_millis()
                ))
            }
        };
        let _ = recv.stop(FRAME_REFUSED.into());
        Err(self.respond(Err(error)))
    }
}

/// Counts a request or connection refused for `reason` (busy, too_large, deadline,
/// connections).
fn refused(node_id: NodeId, reason: &'static str) {
    metrics::counter!(crate::metrics::CLIENT_REFUSED, "node_id" => node_id.to_string(),
        "reason" => reason)
    .increment(1);
}

impl<P: ClientPort> ProtocolHandler for ClientService<P> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        // The client is the endpoint its QUIC handshake proved.
        let remote = conn.remote_id();
        // A member's connection (forwarding its clients' requests) is never refused nor
        // counted: clients filling `net.connections_max` must not cut the members off.
        let member = self.port.is_member_endpoint(&remote);
        let slot = if member {
            None
        } else {
            self.admission.try_connection()
        };
        let _slot = match slot {
            Some(slot) => Some(slot),
            None if member => None,
            None => {
                refused(self.node_id(), "connections");
                let reason = format!(
                    "too many connections: {} open (net.connections_max)",
                    self.admission.connections_max()
                );
                conn.close(CONNECTIONS_FULL.into(), reason.as_bytes());
                return Ok(());
            }
        };
        while let Ok((send, recv)) = conn.accept_bi().await {
            let service = self.clone();
            tokio::spawn(async move { service.serve_stream(remote, send, recv).await });
        }
        Ok(())
    }
}

/// Decodes a request frame. One of another protocol version is refused as such even when it
/// does not decode as this version's (its version comes first).
fn decode_request(payload: &[u8]) -> Result<ClientRequest, ClientError> {
    postcard::from_bytes::<ClientRequest>(payload).map_err(
        |error| match postcard::take_from_bytes::<u16>(payload) {
            Ok((got, _)) if got != PROTOCOL_VERSION => ClientError::Version {
                got,
                supported: PROTOCOL_VERSION,
            },
            // The bounded lists (`api::bounded`) refuse through serde's custom error,
            // which postcard reports without its text.
            _ if error == postcard::Error::SerdeDeCustom => ClientError::BadFrame(format!(
                "a list is longer than its limit ({TXN_OPS_MAX} per transaction list, {MEMBERS_MAX} members, {AUTH_ENTRIES_MAX} roles) or a value is invalid"
            )),
            _ => ClientError::BadFrame(FrameError::Malformed(error.to_string()).to_string()),
        },
    )
}

/// The operation's name (a metric label and a log field) and the key it is about, if one.
fn op_subject(op: &ClientOp) -> (&'static str, Option<&[u8]>) {
    match op {
        ClientOp::Write(write) => (
            write.name(),
            match write {
                WriteOp::Put(put) => Some(put.key.as_slice()),
                WriteOp::Delete { key, .. } => Some(key.as_slice()),
                WriteOp::DeleteRange(range) => Some(range.start.as_slice()),
                WriteOp::Txn(txn) => txn_keys(txn).next(),
                WriteOp::LeaseGrant { .. }
                | WriteOp::LeaseRevoke { .. }
                | WriteOp::LeaseKeepAlive { .. }
                | WriteOp::Compact { .. } => None,
            },
        ),
        ClientOp::Range { range, .. } => ("range", Some(&range.start)),
        ClientOp::RangeAt { range, .. } => ("range_at", Some(&range.start)),
        ClientOp::Watch { range, .. } => ("watch", Some(&range.start)),
        ClientOp::LeaseList { .. } => ("lease_list", None),
        ClientOp::ClusterInit { .. } => ("cluster_init", None),
        ClientOp::AddLearner { .. } => ("add_learner", None),
        ClientOp::Promote { .. } => ("promote", None),
        ClientOp::Remove { .. } => ("remove", None),
        ClientOp::Status => ("status", None),
        ClientOp::Sql { .. } => ("sql", None),
        ClientOp::VaultList { .. } => ("vault_list", None),
        ClientOp::Auth(_) => ("auth", None),
        ClientOp::AuthList { .. } => ("auth_list", None),
        ClientOp::WhoAmI => ("whoami", None),
        ClientOp::HashKv => ("hashkv", None),
    }
}

/// Every key a transaction names (a range by its start): compares, then its operations,
/// nested transactions' in place.
fn txn_keys(txn: &Txn) -> std::vec::IntoIter<&[u8]> {
    let mut keys: Vec<&[u8]> = txn.compares.iter().map(|c| c.key.as_slice()).collect();
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put(put) => keys.push(&put.key),
            TxnOp::Delete { key, .. } | TxnOp::Get { key } => keys.push(key),
            TxnOp::DeleteRange(range)
            | TxnOp::DeleteRangePrev(range)
            | TxnOp::Range { range, .. } => keys.push(&range.start),
            TxnOp::Txn(inner) => keys.extend(txn_keys(inner)),
        }
    }
    keys.into_iter()
}

/// The vaults a request touches (a range counts for the vault its start is in).
fn vaults_touched(op: &ClientOp) -> BTreeSet<&[u8]> {
    match op {
        ClientOp::Write(WriteOp::Txn(txn)) => txn_keys(txn).filter_map(vault_of).collect(),
        other => op_subject(other).1.and_then(vault_of).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves forwarding (the flag and the client's id) grows a request frame by no more than
    // FORWARD_ENVELOPE_BYTES_MAX, so a frame a client kept within the limit reaches the leader.
    #[test]
    fn the_forward_envelope_fits_its_allowance() {
        let request = ClientRequest::new(ClientOp::Status);
        let mut forwarded = request.clone();
        forwarded.forwarded = true;
        forwarded.on_behalf_of = Some(iroh::SecretKey::from_bytes(&[7; 32]).public());
        let size = |r: &ClientRequest| postcard::to_allocvec(r).unwrap().len();
        assert!(size(&forwarded) - size(&request) <= FORWARD_ENVELOPE_BYTES_MAX);
    }
}
