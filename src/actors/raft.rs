//! RaftActor: owns `openraft::Raft` (creates it, initializes a fresh node with no peers as a
//! one-member cluster, shuts it down) and publishes it in a [`RaftHandle`], through which
//! everyone else proposes writes, waits for read barriers, reads metrics and builds
//! snapshots. When openraft's core stops with a fatal error (a storage error, a panic), the
//! actor fails with it, so the supervisor restarts Raft as it would any failed child. Never
//! names the node, the supervisor or the net servers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, Raft, RaftMetrics};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot, watch};

use crate::actors::ActorKind;
use crate::actors::proposer::{Proposal, Proposer, Queued};
pub use crate::actors::raft_error::RaftError;
use crate::actors::raft_storage::{LogStore, StateMachineStore};
use crate::actors::read_barrier::ReadRounds;
use crate::actors::storage::StorageWriter;
use crate::api::NodeId;
use crate::command::{BatchItem, Command, Request, Response, TypeConfig};
use crate::fault::Faults;
use crate::net::raft::RaftTransport;
use crate::storage::Store;
use crate::sync::lock;

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
    /// Where the actor publishes its Raft instance once it runs.
    pub handle: RaftHandle,
}

pub struct RaftState {
    raft: Raft<TypeConfig>,
    handle: RaftHandle,
    /// Announces commits the transport held back once they are durable here.
    announcer: tokio::task::JoinHandle<()>,
}

pub type Metrics = RaftMetrics<NodeId, BasicNode>;

pub enum RaftMsg {
    Ping(RpcReplyPort<()>),
    /// openraft's core stopped with this fatal error: the actor fails with it.
    Fatal(String),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

impl Actor for RaftActor {
    type Msg = RaftMsg;
    type State = RaftState;
    type Arguments = RaftArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RaftMsg>,
        args: RaftArgs,
    ) -> Result<RaftState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Raft)?;
        // The core reads the log from the file: appends an earlier core published and queued
        // commit (or count as lost) first.
        args.store
            .restart_published(crate::limits::PUBLISHED_SETTLE_WAIT)
            .await?;
        let log = LogStore::new(
            Arc::clone(&args.store),
            args.writer.clone(),
            args.node_id,
            args.faults.clone(),
        );
        let flush_mark = args.store.flush_mark();
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
        // A lone voter restarts as a follower (`LogStore::read_vote`): it elects itself at
        // once rather than after an election timeout.
        let alone = raft.with_raft_state(move |state| {
            let membership = state.membership_state.effective().membership();
            membership.voter_ids().eq([args.node_id]) && membership.learner_ids().next().is_none()
        });
        if alone.await.unwrap_or(false) && raft.current_leader().await != Some(args.node_id) {
            let _ = raft.trigger().elect().await;
        }
        let announcer = tokio::spawn(announce_withheld_commits(raft.clone(), flush_mark));
        tokio::spawn(count_leader_changes(args.node_id, raft.metrics()));
        tokio::spawn(report_fatal(myself, raft.metrics()));
        args.handle.publish(raft.clone());
        Ok(RaftState {
            raft,
            handle: args.handle,
            announcer,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RaftMsg>,
        state: &mut RaftState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.withdraw();
        state.announcer.abort();
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
        _state: &mut RaftState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RaftMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            RaftMsg::Panic(reason) => panic!("raft: injected panic: {reason}"),
            RaftMsg::Fatal(error) => {
                return Err(format!("raft: the core stopped: {error}").into());
            }
        }
        Ok(())
    }
}

/// The way to this node's Raft for everyone but the transport's internals: writes, read
/// barriers, metrics, snapshots, and the instance itself for membership changes and the RPCs
/// it receives. Cheap to clone; always reaches the current incarnation (the RaftActor
/// publishes its instance when it starts; the actor or the supervisor withdraws it when it
/// stops or fails).
///
/// Writes go through a proposer (group commit): while one log entry is in flight, the writes
/// that arrive queue up, and the next entry carries all of them (`Command::Batch`, bounded by
/// `PROPOSAL_BATCH_MAX` requests and `PROPOSAL_BATCH_BYTES_MAX` bytes), so they share one
/// append and one fsync on every node. A write alone in the queue is proposed as itself.
#[derive(Clone)]
pub struct RaftHandle {
    node_id: NodeId,
    published: Arc<Mutex<Option<Published>>>,
    /// Linearizable reads waiting for a quorum round (coalesced).
    reads: Arc<ReadRounds>,
    /// How long a write or a read barrier waits for its answer.
    timeout: Duration,
}

/// The running instance and the queue of its proposer.
struct Published {
    raft: Raft<TypeConfig>,
    proposals: mpsc::UnboundedSender<Proposal>,
    /// Set when the instance is withdrawn: the proposer answers what is still queued
    /// `NotRunning` instead of proposing it.
    withdrawn: Arc<AtomicBool>,
    /// Why the node is stopping the instance, for the writes it leaves unanswered.
    stopped_because: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle")
            .field("node_id", &self.node_id)
            .field("running", &self.is_running())
            .finish()
    }
}

impl RaftHandle {
    /// A handle with no Raft published yet; writes and reads wait at most `timeout`.
    pub fn new(node_id: NodeId, timeout: Duration) -> Self {
        RaftHandle {
            node_id,
            published: Arc::default(),
            reads: Arc::default(),
            timeout,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Publishes `raft` and starts its proposer (which ends once the instance is withdrawn
    /// and its queue is empty).
    fn publish(&self, raft: Raft<TypeConfig>) {
        let (proposals, queue) = mpsc::unbounded_channel();
        let withdrawn = Arc::new(AtomicBool::new(false));
        let stopped_because = Arc::default();
        let proposer = Proposer {
            raft: raft.clone(),
            withdrawn: Arc::clone(&withdrawn),
            stopped_because: Arc::clone(&stopped_because),
            node_label: self.node_id.to_string(),
        };
        tokio::spawn(proposer.run(queue));
        *lock(&self.published) = Some(Published {
            raft,
            proposals,
            withdrawn,
            stopped_because,
        });
    }

    /// Records why the node is about to stop the running instance (a failure under it): the
    /// writes it leaves in flight fail naming that, not only "raft stopped".
    pub fn stopping_because(&self, reason: String) {
        if let Some(published) = lock(&self.published).as_ref() {
            *lock(&published.stopped_because) = Some(reason);
        }
    }

    /// Withdraws the published instance and returns it (to be shut down). Writes still queued
    /// are answered `NotRunning` (never proposed); an entry already proposed gets the answer
    /// Raft gives it.
    pub fn withdraw(&self) -> Option<Raft<TypeConfig>> {
        let published = lock(&self.published).take()?;
        published.withdrawn.store(true, Ordering::SeqCst);
        Some(published.raft)
    }

    /// The running instance: for the transport's RPCs and membership changes.
    pub fn raft(&self) -> Option<Raft<TypeConfig>> {
        lock(&self.published).as_ref().map(|p| p.raft.clone())
    }

    pub fn is_running(&self) -> bool {
        lock(&self.published).is_some()
    }

    /// A copy of the current metrics.
    pub fn metrics(&self) -> Option<Metrics> {
        self.with_metrics(Metrics::clone)
    }

    /// Reads the current metrics in place (no copy of the membership): for per-request paths.
    pub fn with_metrics<R>(&self, read: impl FnOnce(&Metrics) -> R) -> Option<R> {
        lock(&self.published)
            .as_ref()
            .map(|p| read(&p.raft.metrics().borrow()))
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.with_metrics(|m| m.current_leader).flatten()
    }

    /// Proposes `request` (through the proposer, batched with the writes queued with it) and
    /// returns the state machine's response once it is applied here.
    pub async fn write(&self, request: Request) -> Result<Response, RaftError> {
        let write = match request.command {
            Command::Write(op) => Queued::Write(BatchItem {
                now_ms: request.now_ms,
                op,
            }),
            command => Queued::Alone(Request {
                now_ms: request.now_ms,
                command,
            }),
        };
        let (reply, answer) = oneshot::channel();
        let queued = match lock(&self.published).as_ref() {
            Some(published) => published.proposals.send(Proposal { write, reply }).is_ok(),
            None => false,
        };
        if !queued {
            return Err(RaftError::NotRunning);
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            // The proposer ended before it answered: it stops only once withdrawn.
            Ok(Err(_)) => Err(RaftError::Unavailable(
                "raft: the proposer stopped before answering".into(),
            )),
            Err(_) => Err(RaftError::Timeout(self.timeout.as_millis() as u64)),
        }
    }

    /// Confirms leadership with a quorum and waits until the state machine caught up: a read
    /// of the local store after this is linearizable.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        let handle = self.clone();
        self.reads
            .barrier(move || handle.raft(), self.node_id, self.timeout)
            .await
    }

    /// Quorum rounds the read barriers ran so far (each answers every read queued when it
    /// started).
    pub fn read_rounds(&self) -> u64 {
        self.reads.rounds()
    }

    /// Builds a snapshot of everything applied now and waits (at most `timeout`) until it
    /// exists; with `purge_all`, then purges the whole log behind it (ignoring
    /// `raft.log_entries_kept`) and waits for that too. Returns the metrics once done.
    pub async fn snapshot(&self, purge_all: bool, timeout: Duration) -> Result<Metrics, RaftError> {
        let raft = self.raft().ok_or(RaftError::NotRunning)?;
        let unavailable =
            |what: &str, e: &dyn std::fmt::Display| RaftError::Unavailable(format!("{what}: {e}"));
        let applied = raft.metrics().borrow().last_applied.map(|id| id.index);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| unavailable("snapshot not started", &e))?;
        let built = raft
            .wait(Some(timeout))
            .metrics(
                |m| m.snapshot.map(|id| id.index) >= applied,
                "snapshot built",
            )
            .await
            .map_err(|e| unavailable("snapshot not built", &e))?;
        let Some(snapshot) = built.snapshot.filter(|_| purge_all) else {
            return Ok(built);
        };
        raft.trigger()
            .purge_log(snapshot.index)
            .await
            .map_err(|e| unavailable("purge not started", &e))?;
        raft.wait(Some(timeout))
            .metrics(
                |m| m.purged.map(|id| id.index) >= Some(snapshot.index),
                "log purged",
            )
            .await
            .map_err(|e| unavailable("log not purged", &e))
    }
}

/// Tells `actor` when its Raft core stops with a fatal error (a clean shutdown is not one);
/// ends when the core stops.
async fn report_fatal(actor: ActorRef<RaftMsg>, mut metrics: watch::Receiver<Metrics>) {
    loop {
        let fatal = match &metrics.borrow_and_update().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(fatal) => Some(fatal.to_string()),
        };
        if let Some(fatal) = fatal {
            let _ = actor.cast(RaftMsg::Fatal(fatal));
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
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

/// Has the leader send a heartbeat each time its flush mark moves on after an AppendEntries
/// held a commit back (`storage::published`): followers learn the commit as soon as it is
/// durable here, not with the next periodic heartbeat.
async fn announce_withheld_commits(raft: Raft<TypeConfig>, mark: crate::flush::FlushMark) {
    loop {
        mark.lifted().await;
        if raft.trigger().heartbeat().await.is_err() {
            return;
        }
    }
}
