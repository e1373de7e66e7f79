//! TtlActor, the leader's housekeeping: on the leader only, first (once it becomes leader)
//! gives every lease its TTL back (`RenewLeases`); then at each tick finds at most
//! `batch_max` expired keys and leases through the expiry indexes and proposes one `Expire`
//! through Raft; and when the vault limits in force differ from its configured ones, proposes
//! `SetVaultLimits`, so every node enforces the same limits; and while no client is root,
//! proposes `AuthBootstrap` with the [`RootCandidates`] this node holds; and compacts the
//! history past `storage.history_retention` (`WriteOp::Compact`). It never writes redb:
//! every one is a Raft command like any other.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::ActorKind;
use crate::actors::raft::RaftHandle;
use crate::api::{ClientId, NodeId, Output, WriteOp};
use crate::command::{Command, Request, VaultLimits};
use crate::config::HistoryRetention;
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
    /// `storage.history_retention`.
    pub history_retention: HistoryRetention,
}

pub struct TtlState {
    args: TtlArgs,
    /// Whether this leader already said that the cluster has no root client and it has none
    /// to propose (said once per actor start).
    told_no_root: bool,
    /// Whether this node has led since its leases were renewed (set once `RenewLeases` of
    /// this term of leadership committed).
    renewed: bool,
    /// What the history retention needs to remember while this node leads.
    retention: Retention,
}

/// The leader's record for a retention by duration: the revision at each tick, oldest first,
/// and when it last proposed a compaction.
#[derive(Default)]
struct Retention {
    samples: VecDeque<(std::time::Instant, u64)>,
    last_proposed: Option<std::time::Instant>,
}

impl Retention {
    /// The revision to compact the history to, if one is due at `now`: `revision` is the
    /// current one, `floor` the oldest kept.
    fn due(
        &mut self,
        policy: HistoryRetention,
        revision: u64,
        floor: u64,
        now: std::time::Instant,
    ) -> Option<u64> {
        let target = match policy {
            HistoryRetention::All => return None,
            HistoryRetention::Revisions(kept) => {
                let target = revision.saturating_sub(kept);
                // Compacted in steps of a tenth of what is kept, not at every revision.
                (target >= floor.saturating_add((kept / 10).max(1))).then_some(target)?
            }
            HistoryRetention::Duration(kept) => {
                if self
                    .samples
                    .back()
                    .is_none_or(|&(_, last)| last != revision)
                {
                    self.samples.push_back((now, revision));
                }
                // At most one proposal per tenth of `kept` (at least a second).
                let step = (kept / 10).max(Duration::from_secs(1));
                if self
                    .last_proposed
                    .is_some_and(|last| now.duration_since(last) < step)
                {
                    return None;
                }
                let mut target = None;
                while let Some(&(at, sampled)) = self.samples.front()
                    && now.duration_since(at) >= kept
                {
                    target = Some(sampled);
                    self.samples.pop_front();
                }
                target.filter(|&target| target > floor)?
            }
        };
        self.last_proposed = Some(now);
        Some(target)
    }
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
            retention: Retention::default(),
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
        state.retention = Retention::default();
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
    let (limits, (keys, leases), bootstrapped, (revision, floor)) =
        tokio::task::spawn_blocking(move || {
            let view = store.read(now_ms)?;
            let limits = view.vault_limits()?;
            let history = (view.revision(), view.history_floor()?);
            let bootstrapped = store.auth()?.has_root();
            let expired = expired_batch(&store, now_ms, batch_max)?;
            Ok::<_, crate::storage::Error>((limits, expired, bootstrapped, history))
        })
        .await??;
    if let Some(to) = state.retention.due(
        args.history_retention,
        revision,
        floor,
        std::time::Instant::now(),
    ) {
        let request = Request {
            now_ms,
            command: Command::Write(WriteOp::Compact { revision: to }),
        };
        match args.raft.write(request).await {
            Ok(response) => match response.result {
                Ok(_) => tracing::debug!(revision = to, "ttl: history compacted"),
                // Compacted further meanwhile (`aspen compact`): nothing to do.
                Err(refused) => tracing::debug!(%refused, "ttl: history compaction refused"),
            },
            Err(error) => tracing::debug!(%error, "ttl: history compaction not accepted"),
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    // Proves a retention by revisions compacts to `revision - kept` once that is a tenth of
    // `kept` past the floor, and not before.
    #[test]
    fn retention_by_revisions_compacts_in_steps() {
        let mut retention = Retention::default();
        let policy = HistoryRetention::Revisions(100);
        let now = Instant::now();
        assert_eq!(retention.due(policy, 50, 0, now), None);
        assert_eq!(retention.due(policy, 109, 0, now), None);
        assert_eq!(retention.due(policy, 110, 0, now), Some(10));
        assert_eq!(retention.due(policy, 115, 10, now), None);
        assert_eq!(retention.due(policy, 120, 10, now), Some(20));
        assert_eq!(retention.due(HistoryRetention::All, 10_000, 0, now), None);
    }

    // Proves a retention by duration compacts to the revision current `kept` ago, and waits a
    // tenth of `kept` (at least a second) between proposals.
    #[test]
    fn retention_by_duration_compacts_what_is_older() {
        let mut retention = Retention::default();
        let policy = HistoryRetention::Duration(Duration::from_secs(60));
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(retention.due(policy, 5, 0, at(0)), None);
        assert_eq!(retention.due(policy, 6, 0, at(1)), None);
        assert_eq!(retention.due(policy, 9, 0, at(59)), None);
        assert_eq!(retention.due(policy, 12, 0, at(60)), Some(5));
        assert_eq!(
            retention.due(policy, 13, 5, at(61)),
            None,
            "too soon after the last"
        );
        assert_eq!(retention.due(policy, 14, 5, at(66)), Some(6));
        assert_eq!(retention.due(policy, 14, 6, at(130)), Some(14));
        assert_eq!(
            retention.due(policy, 14, 14, at(200)),
            None,
            "nothing older left"
        );
    }
}
