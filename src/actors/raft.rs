//! RaftActor: owns `openraft::Raft`. Client writes become proposals (their responses come back
//! from the state machine), read barriers serve linearizable reads, and a fresh node with no
//! peers initializes itself as a one-member cluster. Proposals are awaited off the mailbox, so
//! concurrent writers share one append (and one fsync).

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError as OpenraftError};
use openraft::{BasicNode, Raft, RaftMetrics};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::actors::raft_storage::{LogStore, StateMachineStore};
use crate::actors::storage::StorageWriter;
use crate::actors::{ActorKind, Faults};
use crate::net::raft::RaftTransport;
use crate::storage::{NodeId, Request, Response, Store, TypeConfig};

pub struct RaftActor;

pub struct RaftArgs {
    pub node_id: NodeId,
    /// This node's address, recorded in the membership when it initializes a cluster alone.
    pub address: String,
    /// Initialize a one-member cluster when the store holds none.
    pub bootstrap_single: bool,
    pub transport: RaftTransport,
    pub config: Arc<openraft::Config>,
    pub store: Arc<Store>,
    pub writer: StorageWriter,
    pub faults: Faults,
}

pub struct RaftState {
    raft: Raft<TypeConfig>,
    /// The `node_id` metric label.
    node_label: String,
}

/// Why a write or a read barrier failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    #[error("raft: not leader (leader is {})", leader.map_or("unknown".to_string(), |id| format!("node {id}")))]
    NotLeader { leader: Option<NodeId> },
    #[error("raft: {0}")]
    Unavailable(String),
}

pub type Metrics = RaftMetrics<NodeId, BasicNode>;

pub enum RaftMsg {
    /// Propose a request; answers with the state machine's response once applied.
    Write(Request, RpcReplyPort<Result<Response, RaftError>>),
    /// Confirm leadership with a quorum and wait until the state machine caught up: a read
    /// of the local store after this is linearizable.
    ReadBarrier(RpcReplyPort<Result<(), RaftError>>),
    /// The metrics channel (term, leader, log and applied indexes, membership).
    Metrics(RpcReplyPort<watch::Receiver<Metrics>>),
    /// The Raft instance (the transport's RPCs, membership changes).
    Handle(RpcReplyPort<Raft<TypeConfig>>),
    Ping(RpcReplyPort<()>),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

impl Actor for RaftActor {
    type Msg = RaftMsg;
    type State = RaftState;
    type Arguments = RaftArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RaftMsg>,
        args: RaftArgs,
    ) -> Result<RaftState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Raft)?;
        let log = LogStore::new(Arc::clone(&args.store), args.writer.clone(), args.node_id);
        let sm = StateMachineStore::new(args.store, args.writer, args.node_id);
        let raft = Raft::new(args.node_id, args.config, args.transport, log, sm).await?;
        if args.bootstrap_single && !raft.is_initialized().await? {
            let members = BTreeMap::from([(args.node_id, BasicNode::new(args.address))]);
            raft.initialize(members).await?;
            tracing::info!(
                node_id = args.node_id,
                "raft: initialized a one-member cluster"
            );
        }
        tokio::spawn(count_leader_changes(args.node_id, raft.metrics()));
        Ok(RaftState {
            raft,
            node_label: args.node_id.to_string(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RaftMsg>,
        state: &mut RaftState,
    ) -> Result<(), ActorProcessingErr> {
        state
            .raft
            .shutdown()
            .await
            .map_err(|e| format!("raft: shutdown: {e}").into())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RaftMsg>,
        message: RaftMsg,
        state: &mut RaftState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RaftMsg::Write(request, reply) => on_write(state, request, reply),
            RaftMsg::ReadBarrier(reply) => on_read_barrier(state, reply),
            RaftMsg::Metrics(reply) => {
                let _ = reply.send(state.raft.metrics());
            }
            RaftMsg::Handle(reply) => {
                let _ = reply.send(state.raft.clone());
            }
            RaftMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            RaftMsg::Panic(reason) => panic!("raft: injected panic: {reason}"),
        }
        Ok(())
    }
}

fn on_write(state: &RaftState, request: Request, reply: RpcReplyPort<Result<Response, RaftError>>) {
    let raft = state.raft.clone();
    let node_label = state.node_label.clone();
    tokio::spawn(async move {
        let result = match raft.client_write(request).await {
            Ok(written) => Ok(written.data),
            Err(error) => Err(write_error(error)),
        };
        let counter = if result.is_ok() {
            crate::metrics::RAFT_PROPOSALS_COMMITTED
        } else {
            crate::metrics::RAFT_PROPOSALS_FAILED
        };
        metrics::counter!(counter, "node_id" => node_label).increment(1);
        let _ = reply.send(result);
    });
}

fn on_read_barrier(state: &RaftState, reply: RpcReplyPort<Result<(), RaftError>>) {
    let raft = state.raft.clone();
    tokio::spawn(async move {
        let result = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(OpenraftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                forward,
            ))) => Err(RaftError::NotLeader {
                leader: forward.leader_id,
            }),
            Err(error) => Err(RaftError::Unavailable(error.to_string())),
        };
        let _ = reply.send(result);
    });
}

fn write_error(error: OpenraftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> RaftError {
    match error {
        OpenraftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            RaftError::NotLeader {
                leader: forward.leader_id,
            }
        }
        other => RaftError::Unavailable(other.to_string()),
    }
}

/// Counts leader changes as Raft reports them; ends when this Raft instance shuts down.
async fn count_leader_changes(node_id: NodeId, mut metrics: watch::Receiver<Metrics>) {
    let mut leader = metrics.borrow_and_update().current_leader;
    while metrics.changed().await.is_ok() {
        let (now, term) = {
            let current = metrics.borrow_and_update();
            (current.current_leader, current.current_term)
        };
        if now != leader {
            leader = now;
            tracing::info!(node_id, term, leader = ?now, "raft: leader changed");
            metrics::counter!(crate::metrics::RAFT_LEADER_CHANGES, "node_id" => node_id.to_string())
                .increment(1);
        }
    }
}
