//! Metrics: one Prometheus recorder per process (installed once), every metric labelled with
//! `node_id` so several in-process nodes stay apart. Names are constants here so the
//! endpoints, the actors and the tests agree.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const RAFT_TERM: &str = "aspen_raft_term";
pub const RAFT_LEADER_ID: &str = "aspen_raft_leader_id";
pub const RAFT_HAS_LEADER: &str = "aspen_raft_has_leader";
pub const RAFT_LEADER_CHANGES: &str = "aspen_raft_leader_changes_total";
pub const RAFT_LAST_LOG_INDEX: &str = "aspen_raft_last_log_index";
pub const RAFT_APPLIED_INDEX: &str = "aspen_raft_applied_index";
pub const RAFT_PROPOSALS_COMMITTED: &str = "aspen_raft_proposals_committed_total";
pub const RAFT_PROPOSALS_FAILED: &str = "aspen_raft_proposals_failed_total";
/// Requests per Raft log entry the leader proposed (group commit; 1 when proposed alone).
pub const RAFT_BATCH_REQUESTS: &str = "aspen_raft_batch_requests";
/// Quorum rounds run for linearizable reads, and the reads each answered.
pub const READ_BARRIER_ROUNDS: &str = "aspen_read_barrier_rounds_total";
pub const READ_BARRIER_READS: &str = "aspen_read_barrier_reads";
/// AppendEntries a leader sent with its commit held back, because its own fsync of the entries
/// still ran (`storage::published`).
pub const RAFT_COMMITS_WITHHELD: &str = "aspen_raft_commits_withheld_total";
pub const STORAGE_FSYNC_SECONDS: &str = "aspen_storage_fsync_duration_seconds";
pub const STORAGE_APPLY_SECONDS: &str = "aspen_storage_apply_duration_seconds";
/// Writes (appends and applies) per transaction of the StorageActor.
pub const STORAGE_MERGED_WRITES: &str = "aspen_storage_merged_writes";
pub const STORAGE_DB_SIZE_BYTES: &str = "aspen_storage_db_size_bytes";
pub const KV_KEYS: &str = "aspen_kv_keys";
pub const TTL_EXPIRED_KEYS: &str = "aspen_ttl_expired_keys_total";
pub const SUPERVISOR_RESTARTS: &str = "aspen_supervisor_restarts_total";
pub const HEALTH_CHECK_STATUS: &str = "aspen_health_check_status";
/// SQL queries answered, by `outcome`: `ok`, `truncated`, `error`, `timeout`.
pub const SQL_QUERIES: &str = "aspen_sql_queries_total";
pub const SQL_QUERY_SECONDS: &str = "aspen_sql_query_duration_seconds";
pub const SQL_ROWS_SCANNED: &str = "aspen_sql_rows_scanned_total";
/// Client requests and connections refused before any work, by reason (busy, too_large,
/// deadline, connections).
pub const CLIENT_REFUSED: &str = "aspen_client_refused_total";
/// Client requests per vault they touch, by `vault` and `op` (put, delete, range, txn, ...).
pub const VAULT_OPERATIONS: &str = "aspen_vault_operations_total";
/// 1 while the quota alarm is on (the database file at or over `storage.quota_bytes`).
pub const QUOTA_ALARM: &str = "aspen_quota_alarm";
/// 1 while the corrupt alarm is on: the last hash check this node ran (as the leader) found a
/// member whose key space differs from the others'.
pub const CORRUPT_ALARM: &str = "aspen_corrupt_alarm";
/// Hash checks this node ran, by outcome: `agree`, `mismatch`, `incomplete` (a member did not
/// answer), `error` (the check could not be proposed).
pub const HASH_CHECKS: &str = "aspen_hash_checks_total";
/// How long each file compaction held the database (reads and writes waited at most this).
pub const STORAGE_COMPACTION_SECONDS: &str = "aspen_storage_compaction_duration_seconds";

/// Buckets (seconds) for compactions: 1 ms to 2 minutes.
const COMPACTION_BUCKETS: [f64; 10] = [0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 120.0];

/// Requests per proposed log entry (1 to `limits::PROPOSAL_BATCH_MAX`), and reads per read
/// barrier round.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Latency buckets (seconds) for fsync and apply: 50 µs to 1 s.
const DURATION_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. When another
/// recorder is already installed (an embedding program's), metrics go there and this handle
/// renders an empty page.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let histograms: [(&str, &[f64]); 4] = [
            (STORAGE_COMPACTION_SECONDS, &COMPACTION_BUCKETS),
            (RAFT_BATCH_REQUESTS, &BATCH_BUCKETS),
            (READ_BARRIER_READS, &BATCH_BUCKETS),
            (STORAGE_MERGED_WRITES, &BATCH_BUCKETS),
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets(&DURATION_BUCKETS)
            .and_then(|start| {
                histograms
                    .into_iter()
                    .try_fold(start, |builder, (name, buckets)| {
                        builder.set_buckets_for_metric(
                            metrics_exporter_prometheus::Matcher::Full(name.into()),
                            buckets,
                        )
                    })
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "metrics: a global recorder is already installed; /metrics renders only Aspen's own"
            );
        }
        handle
    })
}

/// Renders the Prometheus text page, after trimming stale histogram data.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Installs the recorder and creates every counter of node `node_id` at zero, so each family
/// is on `/metrics` from the start (a counter otherwise appears only at its first increment).
/// `actors` names the supervised actors, for their restart counters.
pub fn register_node(node_id: u64, actors: &[&'static str]) {
    handle();
    let node = node_id.to_string();
    for name in [
        RAFT_LEADER_CHANGES,
        RAFT_PROPOSALS_COMMITTED,
        RAFT_PROPOSALS_FAILED,
        TTL_EXPIRED_KEYS,
        SQL_ROWS_SCANNED,
    ] {
        metrics::counter!(name, "node_id" => node.clone()).increment(0);
    }
    metrics::gauge!(QUOTA_ALARM, "node_id" => node.clone()).set(0.0);
    metrics::gauge!(CORRUPT_ALARM, "node_id" => node.clone()).set(0.0);
    for outcome in ["agree", "mismatch", "incomplete", "error"] {
        metrics::counter!(HASH_CHECKS, "node_id" => node.clone(), "outcome" => outcome)
            .increment(0);
    }
    for outcome in ["ok", "truncated", "error", "timeout"] {
        metrics::counter!(SQL_QUERIES, "node_id" => node.clone(), "outcome" => outcome)
            .increment(0);
    }
    for reason in ["busy", "too_large", "deadline", "connections"] {
        metrics::counter!(CLIENT_REFUSED, "node_id" => node.clone(), "reason" => reason)
            .increment(0);
    }
    for &actor in actors {
        metrics::counter!(SUPERVISOR_RESTARTS, "node_id" => node.clone(), "actor" => actor)
            .increment(0);
    }
}
