//! NodeSupervisor: starts the children in dependency order (storage → raft → ttl, health; storage →
//! sql), restarts a failed child after an exponential backoff (one-for-one; a storage failure
//! restarts its dependents too), fails the node when the restart budget is spent, refuses to start
//! storage when the cross-storage validation fails, and restarts a child whose health check is
//! critical K times in a row; on stop, closes the store with one fsync'd commit. A full or
//! failing disk under storage or Raft is retried without spending the budget, the database
//! opened again before storage restarts; a failed fsync fails the node. Every supervision
//! decision lives here, and the health board (`board`) where its results are published. Never names
//! the node or the net servers.
//!
//! Long because every supervision decision (start order, validation gate, restarts, escalation,
//! health enforcement) lives here on purpose.

pub mod board;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::actors::health::{CheckReport, HealthActor, HealthArgs};
use crate::actors::raft::{RaftActor, RaftArgs, RaftHandle};
use crate::actors::sql::{SqlActor, SqlArgs, SqlHandle};
use crate::actors::storage::{StorageActor, StorageArgs, StorageWriter};
use crate::actors::ttl::{TtlActor, TtlArgs};
use crate::actors::{ActorKind, Children};
use crate::api::{Check, CheckStatus};
use crate::command::VaultLimits;
use crate::config::{Bootstrap, NodeConfig};
use crate::fault::Faults;
use crate::net::raft::RaftTransport;
use crate::sql::SqlLimits;
use crate::storage::{Store, StoreWrite};
pub use board::HealthBoard;
use policy::{Decision, RestartPolicy};

pub struct NodeSupervisor;

pub struct SupervisorArgs {
    pub config: NodeConfig,
    /// The store the node opened, or why it could not (the node then fails, and says why).
    pub store: Result<Arc<Store>, crate::storage::Error>,
    /// This node's address, recorded in the membership when it initializes a cluster alone.
    pub address: String,
    pub board: Arc<HealthBoard>,
    pub raft: RaftHandle,
    pub sql: SqlHandle,
    pub storage: StorageWriter,
    pub faults: Faults,
    pub transport: RaftTransport,
    pub roots: crate::actors::ttl::RootCandidates,
    /// The running children: the supervisor keeps it, the health checks and the test harness
    /// reach the actors through it.
    pub children: Children,
}

pub struct SupervisorState {
    config: NodeConfig,
    address: String,
    board: Arc<HealthBoard>,
    raft: RaftHandle,
    sql: SqlHandle,
    storage: StorageWriter,
    faults: Faults,
    transport: RaftTransport,
    roots: crate::actors::ttl::RootCandidates,
    store: Option<Arc<Store>>,
    children: Children,
    policy: RestartPolicy,
    /// Consecutive critical health reports per child.
    critical_streaks: BTreeMap<ActorKind, u32>,
}

pub enum SupervisorMsg {
    /// Start a child (storage: after the validation; then its dependents).
    Start(ActorKind),
    HealthReport(Vec<CheckReport>),
    /// Stop a child and its dependents without counting a failure (operator or test).
    StopChild(ActorKind, RpcReplyPort<()>),
    /// Kill a child as a failure: it is restarted per policy.
    KillChild(ActorKind),
    /// Whether a child is running now.
    IsRunning(ActorKind, RpcReplyPort<bool>),
}

/// Children that depend on `kind` and must stop when it stops.
fn dependents(kind: ActorKind) -> &'static [ActorKind] {
    match kind {
        ActorKind::Storage => &[
            ActorKind::Sql,
            ActorKind::Health,
            ActorKind::Ttl,
            ActorKind::Raft,
        ],
        ActorKind::Raft | ActorKind::Ttl | ActorKind::Health | ActorKind::Sql => &[],
    }
}

/// Children started once `kind` is up.
fn started_after(kind: ActorKind) -> &'static [ActorKind] {
    match kind {
        ActorKind::Storage => &[ActorKind::Raft, ActorKind::Sql],
        ActorKind::Raft => &[ActorKind::Ttl, ActorKind::Health],
        ActorKind::Ttl | ActorKind::Health | ActorKind::Sql => &[],
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let policy = RestartPolicy::new(&args.config.supervisor);
        let mut state = SupervisorState {
            config: args.config,
            address: args.address,
            board: args.board,
            raft: args.raft,
            sql: args.sql,
            storage: args.storage,
            faults: args.faults,
            transport: args.transport,
            roots: args.roots,
            store: None,
            children: args.children,
            policy,
            critical_streaks: BTreeMap::new(),
        };
        match args.store {
            Ok(store) => {
                state.store = Some(store);
                myself.cast(SupervisorMsg::Start(ActorKind::Storage))?;
            }
            Err(error) => refuse_storage(&state, format!("storage: cannot open: {error}")),
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        stop_child(state, ActorKind::Storage).await;
        withdraw_raft(state).await;
        if let Some(store) = state.store.take() {
            // A clean stop ends with one fsync'd commit: a restart replays nothing.
            tokio::task::spawn_blocking(move || store.close())
                .await
                .map_err(|e| format!("storage: close: {e}"))??;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start(kind) => on_start(&myself, state, kind).await,
            SupervisorMsg::HealthReport(reports) => on_health_report(state, reports),
            SupervisorMsg::StopChild(kind, reply) => {
                stop_child(state, kind).await;
                let _ = reply.send(());
            }
            SupervisorMsg::KillChild(kind) => {
                if let Some(cell) = state.children.cell(kind) {
                    cell.kill();
                }
            }
            SupervisorMsg::IsRunning(kind, reply) => {
                let _ = reply.send(state.children.contains(kind));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        // Children stopped on purpose were removed first: only failures are still listed.
        let Some(kind) = state.children.kind_of(&cell) else {
            return Ok(());
        };
        state.children.remove(kind);
        on_child_failed(&myself, state, kind, reason).await;
        Ok(())
    }
}

/// Storage may not start: nothing is served from this state, and nothing repairs it.
fn refuse_storage(state: &SupervisorState, message: String) {
    tracing::error!(node_id = state.board.node_id(), "{message}");
    state
        .board
        .set_check("storage", Check::new(CheckStatus::Failed, message.clone()));
    state.board.fail(message);
}

async fn on_start(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, kind: ActorKind) {
    if state.board.failure().is_some() || state.children.contains(kind) {
        return;
    }
    let Some(store) = state.store.clone() else {
        return;
    };
    if kind == ActorKind::Storage && store.io_failed() && !store.sync_failed() {
        // A write failed with an I/O error, and redb takes no write until the database is
        // opened again: reopened here, then validated like any start.
        let reopened = tokio::task::spawn_blocking({
            let store = Arc::clone(&store);
            move || store.reopen()
        })
        .await;
        let failed = match reopened {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(join) => Some(join.to_string()),
        };
        if let Some(error) = failed {
            let reason = format!("storage: opening the database again: {error}");
            return on_child_failed(myself, state, kind, reason).await;
        }
        tracing::info!(
            node_id = state.board.node_id(),
            "storage: database opened again after an I/O error"
        );
    }
    if kind == ActorKind::Storage {
        let validation = tokio::task::spawn_blocking({
            let store = Arc::clone(&store);
            move || store.validate()
        })
        .await;
        match validation {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                let message = error.to_string();
                let rule = message.strip_prefix("storage: ").unwrap_or(&message);
                return refuse_storage(state, format!("storage: refusing to start: {rule}"));
            }
            Err(join) => {
                return refuse_storage(state, format!("storage: validation panicked: {join}"));
            }
        }
    }
    if kind != ActorKind::Storage && !state.children.contains(ActorKind::Storage) {
        return;
    }
    match spawn_child(myself, state, kind, store).await {
        Ok(cell) => {
            state.children.insert(kind, cell);
            if kind == ActorKind::Storage {
                state.board.set_check("storage", Check::ok());
            }
            for next in started_after(kind) {
                let _ = myself.cast(SupervisorMsg::Start(*next));
            }
        }
        Err(error) => on_child_failed(myself, state, kind, error.to_string()).await,
    }
}

async fn spawn_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &SupervisorState,
    kind: ActorKind,
    store: Arc<Store>,
) -> Result<ActorCell, StartError> {
    let node_id = state.board.node_id();
    let name = Some(kind.name(node_id));
    let faults = state.faults.clone();
    let supervisor = myself.get_cell();
    let spawned = match kind {
        ActorKind::Storage => {
            let args = StorageArgs {
                store,
                faults,
                writer: state.storage.clone(),
                node_id,
            };
            Actor::spawn_linked(name, StorageActor, args, supervisor)
                .await
                .map(|(actor, _)| actor.get_cell())
        }
        ActorKind::Raft => {
            if !state.children.contains(ActorKind::Storage) {
                return Err(StartError::StorageNotRunning);
            }
            let writer = state.storage.clone();
            let args = RaftArgs {
                node_id,
                address: state.address.clone(),
                bootstrap_single: state.config.raft.bootstrap == Bootstrap::Single,
                transport: state.transport.clone(),
                config: Arc::new(raft_config(&state.config)?),
                store,
                writer,
                faults,
                handle: state.raft.clone(),
            };
            Actor::spawn_linked(name, RaftActor, args, supervisor)
                .await
                .map(|(actor, _)| actor.get_cell())
        }
        ActorKind::Ttl => {
            let args = TtlArgs {
                node_id,
                store,
                interval: Duration::from_millis(state.config.ttl.interval_ms),
                batch_max: state.config.ttl.batch_max as usize,
                vault_limits: VaultLimits::from(&state.config.storage),
                faults,
                raft: state.raft.clone(),
                roots: Arc::clone(&state.roots),
                history_retention: state.config.storage.history_retention,
            };
            Actor::spawn_linked(name, TtlActor, args, supervisor)
                .await
                .map(|(actor, _)| actor.get_cell())
        }
        ActorKind::Health => {
            let args = HealthArgs {
                node_id,
                store,
                config: state.config.clone(),
                faults,
                report: {
                    let supervisor = myself.clone();
                    Arc::new(move |reports| {
                        supervisor
                            .cast(SupervisorMsg::HealthReport(reports))
                            .map_err(Into::into)
                    })
                },
                raft: state.raft.clone(),
                children: state.children.clone(),
            };
            Actor::spawn_linked(name, HealthActor, args, supervisor)
                .await
                .map(|(actor, _)| actor.get_cell())
        }
        ActorKind::Sql => {
            let args = SqlArgs {
                node_id,
                store,
                limits: SqlLimits::from(&state.config.sql),
                faults,
                handle: state.sql.clone(),
            };
            Actor::spawn_linked(name, SqlActor, args, supervisor)
                .await
                .map(|(actor, _)| actor.get_cell())
        }
    };
    spawned.map_err(|e| StartError::Spawn {
        kind,
        reason: e.to_string(),
    })
}

/// Why a child did not start (its reason in logs and on the health board).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("raft: storage is not running")]
    StorageNotRunning,
    #[error("raft: invalid config: {0}")]
    RaftConfig(#[from] Box<openraft::ConfigError>),
    #[error("{kind}: failed to start: {reason}")]
    Spawn { kind: ActorKind, reason: String },
}

/// openraft's config from the node's `[raft]` section.
pub fn raft_config(config: &NodeConfig) -> Result<openraft::Config, Box<openraft::ConfigError>> {
    openraft::Config {
        cluster_name: "aspen".into(),
        heartbeat_interval: config.raft.heartbeat_interval_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            config.raft.snapshot_after_entries,
        ),
        max_in_snapshot_log_to_keep: config.raft.log_entries_kept,
        snapshot_max_chunk_size: config.raft.snapshot_chunk_bytes,
        ..Default::default()
    }
    .validate()
    .map_err(Box::new)
}

/// Withdraws the published Raft instance and shuts it down, so no stale instance keeps
/// running on the store once its actor is gone.
async fn withdraw_raft(state: &SupervisorState) {
    if let Some(raft) = state.raft.withdraw() {
        let _ = raft.shutdown().await;
    }
}

async fn on_child_failed(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    kind: ActorKind,
    reason: String,
) {
    tracing::warn!(node_id = state.board.node_id(), actor = %kind, %reason, "supervisor: child failed");
    state.board.record_restart(kind);
    if kind == ActorKind::Raft {
        withdraw_raft(state).await;
    }
    if kind == ActorKind::Storage {
        state
            .raft
            .stopping_because(format!("storage failed: {reason}"));
    }
    for dependent in dependents(kind) {
        stop_child(state, *dependent).await;
    }
    if state
        .store
        .as_ref()
        .is_some_and(|store| store.sync_failed())
    {
        // Not retried: pages the node reported written may never reach the disk.
        let reason = format!(
            "storage: a sync of the database file failed ({reason}); what this node reported \
             written may not be on disk, so it stops rather than retry: check the disk, then \
             restart the node"
        );
        state
            .board
            .set_check("storage", Check::new(CheckStatus::Failed, reason.clone()));
        return fail_node(state, reason).await;
    }
    let disk = matches!(kind, ActorKind::Storage | ActorKind::Raft)
        && state.store.as_ref().is_some_and(|store| store.io_failed());
    if disk {
        // The disk failed (full, or failing) under storage, or under Raft's storage calls:
        // restarts go on, backed off, until it works again; `/health` says why meanwhile.
        // Other children's failures spend the budget as always.
        let after = state.policy.on_disk_failure(kind, Instant::now());
        state.board.set_check(
            "storage",
            Check::new(
                CheckStatus::Critical,
                format!(
                    "disk: {reason}; retrying in {} ms (writes fail until the disk works again)",
                    after.as_millis()
                ),
            ),
        );
        tracing::warn!(actor = %kind, delay_ms = after.as_millis() as u64, "supervisor: restarting after a disk error");
        myself.send_after(after, move || SupervisorMsg::Start(kind));
        return;
    }
    match state.policy.on_failure(kind, Instant::now()) {
        Decision::Restart { after } => {
            tracing::info!(actor = %kind, delay_ms = after.as_millis() as u64, "supervisor: restarting");
            myself.send_after(after, move || SupervisorMsg::Start(kind));
        }
        Decision::Escalate { restarts, window } => {
            let reason = format!(
                "supervisor: {restarts} restarts within {} ms (last: {kind}: {reason}); node failed",
                window.as_millis()
            );
            fail_node(state, reason).await;
        }
    }
}

/// Stops every child (storage last: its dependents first) and fails the node with `reason`.
async fn fail_node(state: &mut SupervisorState, reason: String) {
    stop_child(state, ActorKind::Storage).await;
    state.board.fail(reason);
}

/// Stops a child and what depends on it, dependents first, without counting failures.
async fn stop_child(state: &mut SupervisorState, kind: ActorKind) {
    for dependent in dependents(kind) {
        Box::pin(stop_child(state, *dependent)).await;
    }
    if let Some(cell) = state.children.remove(kind) {
        if kind == ActorKind::Raft {
            withdraw_raft(state).await;
        }
        if let Err(error) = cell
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await
        {
            tracing::warn!(actor = %kind, %error, "supervisor: child did not stop in time");
        }
    }
}

fn on_health_report(state: &mut SupervisorState, reports: Vec<CheckReport>) {
    let threshold = state.config.health.critical_restarts_after;
    for report in reports {
        let critical = report.check.status >= CheckStatus::Critical;
        state.board.set_check(report.name, report.check);
        let Some(actor) = report.actor else {
            continue;
        };
        let streak = state.critical_streaks.entry(actor).or_default();
        *streak = if critical { *streak + 1 } else { 0 };
        if *streak >= threshold {
            *streak = 0;
            tracing::warn!(%actor, check = report.name, "supervisor: check critical {threshold} times in a row; restarting");
            if let Some(cell) = state.children.cell(actor) {
                cell.kill();
            }
        }
    }
}
