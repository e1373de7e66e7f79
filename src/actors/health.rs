//! HealthActor: every `health.interval_ms` runs the node's checks and hands them to its report
//! sink (the supervisor, which publishes them on `/health` and restarts a child whose check
//! stays critical). It never acts on them itself. Checks: `raft_actor`, `storage`, `ttl_actor`, `sql_actor` (each answers a ping in
//! time; storage also opens a read transaction), `leader` (a leader is known), `apply_lag`,
//! `disk_space`, `db_file` (a warning as the file nears the quota), `quota` (the quota alarm:
//! degraded while the file is at or over the quota), `corrupt` (the corrupt alarm: degraded
//! while the last hash check this node ran found members whose key spaces differ). Each is ok / warning / critical with a
//! message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::raft::{Metrics, RaftHandle, RaftMsg};
use crate::actors::sql::SqlMsg;
use crate::actors::storage::StorageMsg;
use crate::actors::ttl::TtlMsg;
use crate::actors::{ActorKind, Children};
use crate::api::{Check, CheckStatus, NodeId};
use crate::config::{HealthSection, NodeConfig, StorageKind};
use crate::fault::Faults;
use crate::storage::Store;

pub struct HealthActor;

pub struct HealthArgs {
    pub node_id: NodeId,
    pub store: Arc<Store>,
    pub config: NodeConfig,
    pub faults: Faults,
    /// Where each round of results goes (the supervisor acts on them).
    pub report: ReportSink,
    pub raft: RaftHandle,
    /// The running children, to ping (kept by the supervisor).
    pub children: Children,
}

/// Receives each round of check results.
pub type ReportSink = Arc<dyn Fn(Vec<CheckReport>) -> Result<(), ActorProcessingErr> + Send + Sync>;

/// One check's result, with the child it is about (if any).
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub name: &'static str,
    pub check: Check,
    pub actor: Option<ActorKind>,
}

pub struct HealthState {
    args: HealthArgs,
}

pub enum HealthMsg {
    Tick,
    Ping(RpcReplyPort<()>),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Health)?;
        myself.cast(HealthMsg::Tick)?;
        Ok(HealthState { args })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        message: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HealthMsg::Tick => {
                let reports = run_checks(&state.args).await;
                (state.args.report)(reports)?;
                let interval = Duration::from_millis(state.args.config.health.interval_ms);
                myself.send_after(interval, || HealthMsg::Tick);
            }
            HealthMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            HealthMsg::Panic(reason) => panic!("health: injected panic: {reason}"),
        }
        Ok(())
    }
}

async fn run_checks(args: &HealthArgs) -> Vec<CheckReport> {
    let health = &args.config.health;
    let node_id = args.node_id;
    let timeout = health.ping_timeout_ms;
    let metrics = args.raft.metrics();
    let raft_ping = match args.children.get::<RaftMsg>(ActorKind::Raft) {
        Some(r) => ping(Some(ractor::call_t!(r, RaftMsg::Ping, timeout)), timeout),
        None => ping::<String>(None, timeout),
    };
    let storage_ping = match args.children.get::<StorageMsg>(ActorKind::Storage) {
        Some(r) => ping(Some(ractor::call_t!(r, StorageMsg::Ping, timeout)), timeout),
        None => ping::<String>(None, timeout),
    };
    let ttl_ping = match args.children.get::<TtlMsg>(ActorKind::Ttl) {
        Some(r) => ping(Some(ractor::call_t!(r, TtlMsg::Ping, timeout)), timeout),
        None => ping::<String>(None, timeout),
    };
    let sql_ping = match args.children.get::<SqlMsg>(ActorKind::Sql) {
        Some(r) => ping(Some(ractor::call_t!(r, SqlMsg::Ping, timeout)), timeout),
        None => ping::<String>(None, timeout),
    };
    // A compaction holds the database: the storage actor and every read wait for it by
    // design, which must not count as a failure (nor block this actor on the read below).
    let storage = if args.store.is_compacting() {
        Check::new(
            CheckStatus::Warning,
            "compaction in progress: reads and writes wait for it",
        )
    } else {
        // A read transaction waits while a compaction holds the file: off the async threads.
        let store = Arc::clone(&args.store);
        let read = tokio::task::spawn_blocking(move || store.read(0).map(drop))
            .await
            .unwrap_or_else(|e| Err(crate::storage::Error::Refused(e.to_string())));
        match (storage_ping, read) {
            (check, _) if check.status != CheckStatus::Ok => check,
            (_, Err(error)) => Check::new(
                CheckStatus::Critical,
                format!("read transaction failed: {error}"),
            ),
            (ok, Ok(_)) => ok,
        }
    };
    let mut reports = vec![
        report("raft_actor", raft_ping, Some(ActorKind::Raft)),
        report("storage", storage, Some(ActorKind::Storage)),
        report("ttl_actor", ttl_ping, Some(ActorKind::Ttl)),
        report("sql_actor", sql_ping, Some(ActorKind::Sql)),
        report("leader", leader_check(metrics.as_ref()), None),
        report("apply_lag", apply_lag_check(metrics.as_ref(), health), None),
    ];
    if args.config.node.storage == StorageKind::File {
        let dir = args.config.node.data_dir.clone();
        reports.push(report("disk_space", disk_space_check(&dir, health), None));
        let quota = args.config.storage.quota_bytes;
        reports.push(report("db_file", db_file_check(&dir, quota, health), None));
    }
    let alarm = args.store.quota_alarm(args.config.storage.quota_bytes);
    metrics::gauge!(crate::metrics::QUOTA_ALARM, "node_id" => node_id.to_string())
        .set(if alarm.is_some() { 1.0 } else { 0.0 });
    reports.push(report("quota", quota_check(alarm), None));
    // The alarm is the leader's finding: a node that no longer leads drops it (the new
    // leader's checks speak for the cluster now).
    if metrics.as_ref().and_then(|m| m.current_leader) != Some(node_id) {
        args.store.hash_checks().clear_alarm();
    }
    let corrupt = args.store.hash_checks().alarm();
    metrics::gauge!(crate::metrics::CORRUPT_ALARM, "node_id" => node_id.to_string())
        .set(if corrupt.is_some() { 1.0 } else { 0.0 });
    reports.push(report("corrupt", corrupt_check(corrupt.as_ref()), None));
    for r in &mut reports {
        if args.faults.is_forced_critical(r.name) {
            r.check = Check::new(CheckStatus::Critical, "forced critical by fault injection");
        }
    }
    reports
}

fn report(name: &'static str, check: Check, actor: Option<ActorKind>) -> CheckReport {
    CheckReport { name, check, actor }
}

fn ping<E: std::fmt::Display>(answer: Option<Result<(), E>>, timeout_ms: u64) -> Check {
    match answer {
        Some(Ok(())) => Check::ok(),
        Some(Err(error)) => Check::new(
            CheckStatus::Critical,
            format!("no answer to a ping within {timeout_ms} ms: {error}"),
        ),
        None => Check::new(CheckStatus::Critical, "not running"),
    }
}

fn leader_check(metrics: Option<&Metrics>) -> Check {
    match metrics.and_then(|m| m.current_leader) {
        Some(_) => Check::ok(),
        None => Check::new(CheckStatus::Warning, "no leader known"),
    }
}

fn apply_lag_check(metrics: Option<&Metrics>, health: &HealthSection) -> Check {
    let Some(metrics) = metrics else {
        return Check::new(CheckStatus::Warning, "raft metrics unavailable");
    };
    let last = metrics.last_log_index.unwrap_or(0);
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let lag = last.saturating_sub(applied);
    let message = || format!("{lag} log entries not yet applied");
    if lag > health.apply_lag_critical {
        Check::new(CheckStatus::Critical, message())
    } else if lag > health.apply_lag_warning {
        Check::new(CheckStatus::Warning, message())
    } else {
        Check::ok()
    }
}

fn disk_space_check(dir: &PathBuf, health: &HealthSection) -> Check {
    let stat = match rustix::fs::statvfs(dir) {
        Ok(stat) => stat,
        Err(error) => {
            return Check::new(
                CheckStatus::Critical,
                format!("statvfs {}: {error}", dir.display()),
            );
        }
    };
    let total = stat.f_blocks.max(1);
    let free_percent = stat.f_bavail.saturating_mul(100) / total;
    let message = || format!("{free_percent}% free on the data directory's disk");
    if free_percent < u64::from(health.disk_free_critical_percent) {
        Check::new(CheckStatus::Critical, message())
    } else if free_percent < u64::from(health.disk_free_warning_percent) {
        Check::new(CheckStatus::Warning, message())
    } else {
        Check::ok()
    }
}

/// Degraded, not unhealthy, while the alarm is on: the node serves reads, deletes and
/// compaction; only what adds data is refused.
fn quota_check(alarm: Option<(u64, u64)>) -> Check {
    match alarm {
        None => Check::ok(),
        Some((bytes, quota)) => Check::new(
            CheckStatus::Warning,
            format!(
                "quota alarm: the database file is {bytes} bytes, at or over the quota of {quota}: \
                 writes that add data are refused until deletes and `aspen admin defrag` bring it under"
            ),
        ),
    }
}

/// Degraded while the corrupt alarm is on: this node (the leader that ran the check) serves
/// as before; the message names the members whose key space differs, for the operator to
/// rebuild them (`docs/operations.md`).
fn corrupt_check(alarm: Option<&crate::api::HashKvReport>) -> Check {
    let Some(report) = alarm else {
        return Check::ok();
    };
    let revision = report.revision();
    let nodes: Vec<String> = report.mismatched.iter().map(|id| id.to_string()).collect();
    Check::new(
        CheckStatus::Warning,
        format!(
            "corrupt alarm: at hash check {} (revision {revision}) the key space of node {} \
             differs from the other members'; `aspen cluster hashkv` checks again",
            report.check,
            nodes.join(", node ")
        ),
    )
}

fn db_file_check(dir: &std::path::Path, quota: u64, health: &HealthSection) -> Check {
    let path = dir.join(crate::storage::store::DB_FILE_NAME);
    let size = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(error) => {
            return Check::new(
                CheckStatus::Critical,
                format!("{}: {error}", path.display()),
            );
        }
    };
    let percent = size.saturating_mul(100) / quota.max(1);
    let message = || format!("database file is {size} bytes, {percent}% of the {quota}-byte quota");
    if percent >= u64::from(health.db_size_warning_percent) {
        Check::new(CheckStatus::Warning, message())
    } else {
        Check::ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The disk_space check is decided by its two thresholds, not by the host: a disk is
    // never under 0% free and, holding this test's files, always under 100% free; an
    // unreadable data dir is critical and named.
    #[test]
    fn disk_space_follows_its_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let check = |path: &std::path::Path, warning, critical| {
            let health = HealthSection {
                disk_free_warning_percent: warning,
                disk_free_critical_percent: critical,
                ..HealthSection::default()
            };
            disk_space_check(&path.to_path_buf(), &health)
        };
        assert_eq!(check(dir.path(), 0, 0).status, CheckStatus::Ok);
        let warned = check(dir.path(), 100, 0);
        assert_eq!(warned.status, CheckStatus::Warning);
        assert!(warned.message.as_deref().unwrap_or("").contains("% free"));
        assert_eq!(check(dir.path(), 100, 100).status, CheckStatus::Critical);
        let gone = dir.path().join("gone");
        let missing = check(&gone, 0, 0);
        assert_eq!(missing.status, CheckStatus::Critical);
        assert!(missing.message.as_deref().unwrap_or("").contains("gone"));
    }
}
