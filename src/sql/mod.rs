//! Read-only SQL over the live key-value state, with DataFusion.
//!
//! Every query reads one redb snapshot ([`ReadView`]) through the tables in [`tables`]
//! (`kv`, `kv_bytes`, `leases`, `vaults`); filters on `key` become range scans ([`keys`]). The engine
//! refuses anything but a query (DDL, DML, COPY, SET, ...), runs at most
//! `max_concurrent` queries at once, gives each a deadline (waiting for a slot included), caps
//! the rows returned (and their bytes, so an answer fits one frame) and the memory of
//! DataFusion's operators. Consistency (a read barrier first) is the caller's: see
//! `node::client`.

mod functions;
mod guard;
pub mod history;
pub mod keys;
pub mod result;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use tokio::sync::Semaphore;

pub use crate::api::{SqlColumn, SqlResult, SqlValue};
use crate::limits::{SQL_RESULT_BYTES_MAX, SQL_THREAD_STACK_BYTES};
use crate::storage::{ReadView, Store};
use keys::KeySet;
use tables::{Encoding, KvTable, LeasesTable, ScanStats, VaultsTable};

/// How much one node lets SQL take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Queries running at once; more wait for a slot (within their timeout).
    pub max_concurrent: usize,
    /// From arrival to the last row, waiting for a slot included.
    pub timeout: Duration,
    /// Rows returned; a longer answer is truncated and says so.
    pub row_limit: usize,
    /// Memory DataFusion's operators (sorts, joins, aggregates) may hold, per node.
    pub memory_bytes: usize,
}

impl From<&crate::config::SqlSection> for SqlLimits {
    fn from(section: &crate::config::SqlSection) -> Self {
        SqlLimits {
            max_concurrent: section.max_concurrent as usize,
            timeout: Duration::from_millis(section.timeout_ms),
            row_limit: section.row_limit as usize,
            memory_bytes: section.memory_limit_bytes as usize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// Not a query: SQL here only reads.
    #[error("sql: only queries are allowed (SQL is read-only here): {0}")]
    ReadOnly(String),
    /// DataFusion refused or failed the query (syntax, unknown column, type error, memory).
    #[error("sql: {0}")]
    Query(String),
    #[error("sql: query exceeded its timeout of {ms} ms")]
    Timeout { ms: u64 },
    /// The query is over a limit checked before it runs (its text, its nesting, its plan's
    /// depth: see `guard`).
    #[error("sql: {0}")]
    Limit(String),
    #[error("sql: {0}")]
    Storage(String),
}

impl From<DataFusionError> for SqlError {
    fn from(error: DataFusionError) -> Self {
        // DataFusion's messages may span lines; an answer is one line.
        let message = error
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        const REFUSED: [&str; 3] = [
            "DDL not supported",
            "DML not supported",
            "Statement not supported",
        ];
        if REFUSED.iter().any(|r| message.contains(r)) {
            SqlError::ReadOnly(message)
        } else {
            SqlError::Query(message)
        }
    }
}

/// Plans and runs queries; one per node, shared by every query.
///
/// Queries run on a runtime of their own, one worker thread per slot: a query that computes
/// for long stretches without yielding (see `YieldBetweenBatches`) takes a SQL thread, never
/// one of the threads that serve Raft and clients.
pub struct SqlEngine {
    state: SessionState,
    limits: SqlLimits,
    slots: Arc<Semaphore>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        // Dropping a runtime blocks; the engine may be dropped inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("limits", &self.limits)
            .finish()
    }
}

impl SqlEngine {
    pub fn new(limits: SqlLimits) -> Result<SqlEngine, SqlError> {
        // Over the memory limit a query fails with a clear error; it never spills to disk.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        // One partition per query: queries run side by side instead of fanning out.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldBetweenBatches))
            .build();
        functions::bound_string_functions(&mut state, limits.memory_bytes as u64)?;
        // Planning runs on these threads too (see `query_within`), so they hold the stack.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.max_concurrent.max(1))
            .thread_stack_size(SQL_THREAD_STACK_BYTES)
            .thread_name("aspen-sql")
            .enable_time()
            .build()
            .map_err(|e| SqlError::Query(format!("cannot start the SQL runtime: {e}")))?;
        Ok(SqlEngine {
            state,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            runtime: Some(runtime),
        })
    }

    /// Queries holding a slot now.
    pub fn running(&self) -> usize {
        self.limits.max_concurrent.max(1) - self.slots.available_permits()
    }

    /// Runs `sql` on a snapshot of `store` taken now.
    pub async fn query(&self, store: &Arc<Store>, sql: &str) -> Result<SqlResult, SqlError> {
        self.query_as(store, sql, None).await
    }

    /// Runs `sql` for a client that may read only the keys under `readable` (`None`: every
    /// key): `kv`, `kv_bytes` and `history` hold only those, and `leases` and `vaults` do not
    /// exist.
    pub async fn query_as(
        &self,
        store: &Arc<Store>,
        sql: &str,
        readable: Option<&[Vec<u8>]>,
    ) -> Result<SqlResult, SqlError> {
        // Opening the snapshot waits while a compaction holds the file: off the async threads.
        let store = Arc::clone(store);
        let view = tokio::task::spawn_blocking(move || store.read(crate::clock::now_ms()))
            .await
            .map_err(|e| SqlError::Storage(e.to_string()))?
            .map_err(|e| SqlError::Storage(e.to_string()))?;
        let visible = readable.map(KeySet::prefixes);
        self.run(view, sql, self.limits.timeout, visible).await
    }

    /// Runs `sql` on `view` within the limits and a deadline of `timeout` (capped by the
    /// configured one).
    pub async fn query_within(
        &self,
        view: ReadView,
        sql: &str,
        timeout: Duration,
    ) -> Result<SqlResult, SqlError> {
        self.run(view, sql, timeout, None).await
    }

    async fn run(
        &self,
        view: ReadView,
        sql: &str,
        timeout: Duration,
        visible: Option<KeySet>,
    ) -> Result<SqlResult, SqlError> {
        let timeout = timeout.min(self.limits.timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || SqlError::Timeout {
            ms: timeout.as_millis() as u64,
        };
        let slot = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| SqlError::Query(e.to_string()))?;
        // The query runs as its own task so the deadline fires even while it computes;
        // aborting the task drops its streams, which stops the scans.
        let revision = view.revision();
        let (context, stats) = self.context(view, visible)?;
        let sql = sql.to_string();
        let row_limit = self.limits.row_limit;
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the engine");
        let mut task = runtime.spawn(async move {
            let _slot = slot;
            let stream = plan(&context, &sql).await?;
            collect(stream, row_limit).await
        });
        let (columns, rows, truncated) = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(join)) => return Err(SqlError::Query(format!("query task failed: {join}"))),
            Err(_) => {
                task.abort();
                return Err(timed_out());
            }
        };
        Ok(SqlResult {
            columns,
            rows,
            truncated,
            revision,
            rows_scanned: stats.rows_scanned(),
        })
    }

    /// The batches of `sql` over `view` as a stream, with no row limit or deadline, and the
    /// counters of its scans: for tests and benchmarks that look inside a query.
    pub async fn stream(
        &self,
        view: ReadView,
        sql: &str,
    ) -> Result<(SendableRecordBatchStream, Arc<ScanStats>), SqlError> {
        let (context, stats) = self.context(view, None)?;
        Ok((plan(&context, sql).await?, stats))
    }

    /// A session over `view`'s tables; with `visible`, only `kv`, `kv_bytes` and `history`,
    /// holding only those keys.
    fn context(
        &self,
        view: ReadView,
        visible: Option<KeySet>,
    ) -> Result<(SessionContext, Arc<ScanStats>), SqlError> {
        let view = Arc::new(view);
        let stats = Arc::new(ScanStats::default());
        // The tables live in a catalog of this query's own: they belong to its snapshot.
        let schema = MemorySchemaProvider::new();
        let kv = |encoding| {
            let table = KvTable::new(Arc::clone(&view), encoding, Arc::clone(&stats));
            Arc::new(match &visible {
                Some(keys) => table.visible(keys.clone()),
                None => table,
            })
        };
        schema.register_table("kv".into(), kv(Encoding::Text))?;
        schema.register_table("kv_bytes".into(), kv(Encoding::Binary))?;
        let mut history = history::HistoryTable::new(Arc::clone(&view));
        if let Some(keys) = &visible {
            history = history.visible(keys.clone());
        }
        schema.register_table("history".into(), Arc::new(history))?;
        if visible.is_none() {
            schema.register_table(
                "leases".into(),
                Arc::new(LeasesTable::new(Arc::clone(&view), Arc::clone(&stats))),
            )?;
            schema.register_table(
                "vaults".into(),
                Arc::new(VaultsTable::new(Arc::clone(&view))),
            )?;
        }
        let names = &self.state.config_options().catalog;
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(&names.default_schema, Arc::new(schema))?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(names.default_catalog.clone(), Arc::new(catalog));
        let state = SessionStateBuilder::new_from_existing(self.state.clone())
            .with_catalog_list(Arc::new(catalogs))
            .build();
        Ok((SessionContext::new_with_state(state), stats))
    }
}

/// Plans `sql` as a read-only query within the limits of [`guard`], and starts it.
async fn plan(context: &SessionContext, sql: &str) -> Result<SendableRecordBatchStream, SqlError> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    // `SessionContext::sql_with_options`, with the guard's checks between its steps.
    let state = context.state();
    let statement = guard::parse(&state, sql)?;
    let plan = state.statement_to_plan(statement).await?;
    options.verify_plan(&plan)?;
    guard::check_plan_depth(&plan)?;
    let frame = context.execute_logical_plan(plan).await?;
    let task = Arc::new(frame.task_ctx());
    let physical = frame.create_physical_plan().await?;
    guard::check_yield_points(&physical)?;
    Ok(datafusion::physical_plan::execute_stream(physical, task)?)
}

type Collected = (Vec<SqlColumn>, Vec<Vec<SqlValue>>, Option<String>);

/// Reads rows until the stream ends or a limit (rows, bytes) is reached; stops the query there.
async fn collect(
    mut stream: SendableRecordBatchStream,
    row_limit: usize,
) -> Result<Collected, SqlError> {
    let columns = stream
        .schema()
        .fields()
        .iter()
        .map(|field| SqlColumn {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
        })
        .collect();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for row in result::batch_rows(&batch).map_err(|e| SqlError::Query(e.to_string()))? {
            if rows.len() == row_limit {
                return Ok((
                    columns,
                    rows,
                    Some(format!("row limit of {row_limit} reached")),
                ));
            }
            bytes += row.iter().map(SqlValue::size).sum::<usize>();
            if bytes > SQL_RESULT_BYTES_MAX && !rows.is_empty() {
                return Ok((
                    columns,
                    rows,
                    Some(format!(
                        "result size limit of {SQL_RESULT_BYTES_MAX} bytes reached"
                    )),
                ));
            }
            rows.push(row);
        }
    }
    Ok((columns, rows, None))
}

/// Makes every operator give the runtime a chance to stop the query between the batches it
/// produces. DataFusion's own yield points sit in the scans; an operator that makes many
/// batches out of few (a cross join) would otherwise compute for as long as it likes within
/// one poll, and a timed-out query could not be stopped until it finished.
///
/// Left: an operator that computes long without producing any batch (a nested-loop join
/// whose filter rejects every pair) still stops only at its next batch or at its end. The
/// caller gets its timeout on time and the query keeps its slot (and one SQL thread) until
/// then; Raft and clients run on other threads.
#[derive(Debug)]
struct YieldBetweenBatches;

impl PhysicalOptimizerRule for YieldBetweenBatches {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.children().is_empty() || node.name() == CooperativeExec::static_name() {
                return Ok(Transformed::no(node));
            }
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        })
        .data()
    }

    fn name(&self) -> &str {
        "aspen_yield_between_batches"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
