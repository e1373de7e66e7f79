//! TtlActor, the leader's housekeeping: on the leader only, first (once it becomes leader)
//! gives every lease its TTL back (`RenewLeases`); then at each tick finds at most
//! `batch_max` expired keys and leases through the expiry indexes and proposes one `Expire`
//! through Raft; and when the vault limits in force differ from its configured ones, proposes
//! `SetVaultLimits`, so every node enforces the same limits; and while no client is root,
//! proposes `AuthBootstrap` with the [`RootCandidates`] this node holds. It never writes
//! redb: every one is a Raft command like any other.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::ActorKind;
use crate::actors::raft::RaftHandle;
use crate::api::{ClientId, NodeId, Output};
use crate::command::{Command, Request, VaultLimits};
use crate::fault::Faults;
use crate::storage::Store;

pub struct TtlActor;

/// The clients this node would make root while the cluster has none: `auth.root_clients`
/// (or the id of `DATA_DIR/client.key` on a node that forms a cluster alone) and the client
/// whose `cluster init` formed the cluster on this node.
pub type RootCandidates = Arc<Mutex<BTreeSet<ClientId>>>;

pub struct TtlArgs {
    pub node_id: NodeId,
    pub store: Arc<Store>,
    pub interval: Duration,
    pub batch_max: usize,
    /// `storage.vaults_max` and `storage.vault_keys_max`.
    pub vault_limits: VaultLimits,
    pub faults: Faults,
    pub raft: RaftHandle,
    pub roots: RootCandidates,
}

pub struct TtlState {
    args: TtlArgs,
    /// Whether this leader already said that the cluster has no root client and it has none
    /// to propose (said once per actor start).
    told_no_root: bool,
    /// Whether this node has led since its leases were renewed (set once `RenewLeases` of
    /// this term of leadership committed).
    renewed: bool,
}

pub enum TtlMsg {
    Tick,
    Ping(RpcReplyPort<()>),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

impl Actor for TtlActor {
    type Msg = TtlMsg;
    type State = TtlState;
    type Arguments = TtlArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TtlMsg>,
        args: TtlArgs,
    ) -> Result<TtlState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Ttl)?;
        myself.send_after(args.interval, || TtlMsg::Tick);
        Ok(TtlState {
            args,
            told_no_root: false,
            renewed: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TtlMsg>,
        message: TtlMsg,
        state: &mut TtlState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TtlMsg::Tick => {
                // A failed tick (raft restarting, a timeout) is retried at the next one; the
                // actor itself is healthy.
                if let Err(error) = on_tick(state).await {
                    tracing::warn!(%error, "ttl: tick failed");
                }
                // Rescheduled after the work, so ticks never pile up behind a slow proposal.
                myself.send_after(state.args.interval, || TtlMsg::Tick);
            }
            TtlMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            TtlMsg::Panic(reason) => panic!("ttl: injected panic: {reason}"),
        }
        Ok(())
    }
}

async fn on_tick(state: &mut TtlState) -> Result<(), ActorProcessingErr> {
    if state.args.raft.leader() != Some(state.args.node_id) {
        state.renewed = false;
        return Ok(());
    }
    // A new leader first gives every lease its TTL back (the time without a leader does not
    // count against them), before it expires anything.
    if !state.renewed {
        let request = Request {
            now_ms: crate::clock::now_ms(),
            command: Command::RenewLeases,
        };
        match state.args.raft.write(request).await {
            Ok(_) => state.renewed = true,
            Err(error) => {
                tracing::debug!(%error, "ttl: lease renewal not accepted");
                return Ok(());
            }
        }
    }
    let args = &state.args;
    let now_ms = crate::clock::now_ms();
    // Reads wait while a compaction holds the file: off the async threads.
    let (store, batch_max) = (Arc::clone(&args.store), args.batch_max);
    let (limits, (keys, leases), bootstrapped) = tokio::task::spawn_blocking(move || {
        let limits = store.read(now_ms)?.vault_limits()?;
        let bootstrapped = store.auth()?.has_root();
        let expired = expired_batch(&store, now_ms, batch_max)?;
        Ok::<_, crate::storage::Error>((limits, expired, bootstrapped))
    })
    .await??;
    let roots: Vec<ClientId> = crate::sync::lock(&args.roots).iter().copied().collect();
    if !bootstrapped && !roots.is_empty() {
        let request = Request {
            now_ms,
            command: Command::AuthBootstrap { roots },
        };
        if let Err(error) = args.raft.write(request).await {
            tracing::debug!(%error, "ttl: auth bootstrap proposal not accepted");
        }
    } else if !bootstrapped && !state.told_no_root {
        state.told_no_root = true;
        tracing::warn!(
            node_id = args.node_id,
            "auth: the cluster has no root client and this leader knows none: clients are \
             refused until a node with auth.root_clients leads (or one runs cluster init)"
        );
    }
    if limits != args.vault_limits {
        let request = Request {
            now_ms,
            command: Command::SetVaultLimits(args.vault_limits),
        };
        if let Err(error) = args.raft.write(request).await {
            tracing::debug!(%error, "ttl: vault limits proposal not accepted");
        }
    }
    if keys.is_empty() && leases.is_empty() {
        return Ok(());
    }
    let request = Request {
        now_ms,
        command: Command::Expire { keys, leases },
    };
    match args.raft.write(request).await {
        Ok(response) => {
            if let Ok(Output::Expire { keys_deleted, .. }) = response.result {
                metrics::counter!(crate::metrics::TTL_EXPIRED_KEYS, "node_id" => args.node_id.to_string())
                    .increment(keys_deleted);
            }
        }
        // Leadership moved between the check and the proposal: the new leader expires them.
        Err(error) => tracing::debug!(%error, "ttl: expire proposal not accepted"),
    }
    Ok(())
}

/// At most `max` expired keys and leases at `now_ms`, keys first.
pub fn expired_batch(
    store: &Store,
    now_ms: u64,
    max: usize,
) -> Result<(Vec<Vec<u8>>, Vec<u64>), crate::storage::Error> {
    let view = store.read(now_ms)?;
    // The view's instant: `now_ms`, or the state machine's clock when that is later.
    let keys = view.expired_keys(view.now_ms(), max)?;
    let leases = view.expired_leases(view.now_ms(), max - keys.len())?;
    Ok((keys, leases))
}
