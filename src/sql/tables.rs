//! The tables a query sees, all over one redb read snapshot ([`ReadView`]):
//! - `kv` (key, value, version, create_revision, mod_revision, lease_id, expires_at): key and
//!   value as UTF-8 text, NULL where the bytes are not valid UTF-8;
//! - `kv_bytes`: the same rows with key and value as binary;
//! - `leases` (id, ttl_ms, remaining_ms, key_count);
//! - `vaults` (name, key_count, total_bytes, created_revision, updated_revision): the vault
//!   metadata (at most `storage.vaults_max` rows, read whole when the query is planned);
//! - `history` (`super::history`).
//!
//! Rows are produced on the blocking pool in batches of the session's batch size and handed to
//! DataFusion through a bounded channel, so a scan never holds the table in memory. Filters on
//! `key` become range scans ([`super::keys`]), `LIMIT` stops the scan, and only the projected
//! columns are built: a query that does not select `value` copies no value, and `COUNT(*)` builds
//! no column at all. Expired keys and leases are invisible, as in ordinary reads.
//!
//! Long because the four tables share one scan machinery (projection, batching, the blocking scan
//! thread and its cancellation); split per table they would repeat it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int64Builder, RecordBatch, RecordBatchOptions, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use tokio::sync::mpsc::Sender;

use crate::sql::keys::{KeySet, key_filter, narrowed};
use crate::storage::codec::{decode_kv_entry_ref, decode_lease};
use crate::storage::schema::{IDX_LEASE, LEASES};
use crate::storage::{KvEntryRef, ReadView};

/// Batches a scan may produce ahead of the query.
const CHANNEL_BATCHES: usize = 2;

/// What the scans of one query did, for tests, EXPLAIN-like reporting and metrics.
#[derive(Debug, Default)]
pub struct ScanStats {
    rows_scanned: AtomicU64,
    values_read: AtomicU64,
}

impl ScanStats {
    /// Stored entries visited (live or not), over every scan of the query.
    pub fn rows_scanned(&self) -> u64 {
        self.rows_scanned.load(Ordering::Relaxed)
    }

    /// Values copied into result columns.
    pub fn values_read(&self) -> u64 {
        self.values_read.load(Ordering::Relaxed)
    }
}

/// How `kv` hands out keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 text; NULL where the bytes are not valid UTF-8.
    Text,
    Binary,
}

/// The columns of `kv`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KvColumn {
    Key,
    Value,
    Version,
    CreateRevision,
    ModRevision,
    LeaseId,
    ExpiresAt,
}

const KV_COLUMNS: [KvColumn; 7] = [
    KvColumn::Key,
    KvColumn::Value,
    KvColumn::Version,
    KvColumn::CreateRevision,
    KvColumn::ModRevision,
    KvColumn::LeaseId,
    KvColumn::ExpiresAt,
];

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn kv_schema(encoding: Encoding) -> SchemaRef {
    let bytes = match encoding {
        Encoding::Text => DataType::Utf8,
        Encoding::Binary => DataType::Binary,
    };
    let text_nullable = encoding == Encoding::Text;
    Arc::new(Schema::new(vec![
        Field::new("key", bytes.clone(), text_nullable),
        Field::new("value", bytes, text_nullable),
        Field::new("version", DataType::Int64, false),
        Field::new("create_revision", DataType::Int64, false),
        Field::new("mod_revision", DataType::Int64, false),
        Field::new("lease_id", DataType::Int64, true),
        Field::new("expires_at", timestamp_type(), true),
    ]))
}

/// The `kv` (or `kv_bytes`) table of one snapshot.
pub struct KvTable {
    view: Arc<ReadView>,
    encoding: Encoding,
    schema: SchemaRef,
    stats: Arc<ScanStats>,
    /// The keys the table holds for this query (all, unless the client may read only some).
    visible: KeySet,
}

impl KvTable {
    pub fn new(view: Arc<ReadView>, encoding: Encoding, stats: Arc<ScanStats>) -> Self {
        KvTable {
            view,
            encoding,
            schema: kv_schema(encoding),
            stats,
            visible: KeySet::all(),
        }
    }

    /// The table as a client that may read only `visible` sees it.
    pub fn visible(mut self, visible: KeySet) -> Self {
        self.visible = visible;
        self
    }
}

impl fmt::Debug for KvTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvTable")
            .field("revision", &self.view.revision())
            .field("encoding", &self.encoding)
            .finish()
    }
}

#[async_trait]
impl TableProvider for KvTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| match key_filter(filter, "key") {
                Some(f) if f.exact => TableProviderFilterPushDown::Exact,
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (keys, key_filtered) = narrowed(&self.visible, filters);
        let Projected {
            indices,
            schema,
            batch_rows,
        } = Projected::new(&self.schema, projection, state)?;
        // Keys come out in byte order; as text that is the column's order unless a NULL (a
        // key that is not UTF-8) can appear, which a key filter rules out.
        let sorted = self.encoding == Encoding::Binary || key_filtered;
        let ordering = indices
            .iter()
            .position(|&i| KV_COLUMNS[i] == KvColumn::Key)
            .filter(|_| sorted)
            .and_then(|at| {
                LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(Column::new(
                    "key", at,
                )))])
            });
        let scan = KvScan {
            view: Arc::clone(&self.view),
            keys,
            columns: indices.iter().map(|&i| KV_COLUMNS[i]).collect(),
            encoding: self.encoding,
            skip_non_text_keys: self.encoding == Encoding::Text && key_filtered,
            limit,
            batch_rows,
            schema: Arc::clone(&schema),
            stats: Arc::clone(&self.stats),
        };
        blocking_scan(schema, ordering, limit, move |tx| scan.run(tx))
    }
}

/// What a scan builds: the projected columns (indices into the table's schema), their
/// schema, and the session's batch size.
pub(super) struct Projected {
    pub(super) indices: Vec<usize>,
    pub(super) schema: SchemaRef,
    pub(super) batch_rows: usize,
}

impl Projected {
    pub(super) fn new(
        table: &SchemaRef,
        projection: Option<&Vec<usize>>,
        state: &dyn Session,
    ) -> Result<Self> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..table.fields().len()).collect(),
        };
        Ok(Projected {
            schema: Arc::new(table.project(&indices)?),
            indices,
            batch_rows: usize::from(state.config_options().execution.batch_size).max(1),
        })
    }
}

/// A plan of one partition whose batches `produce` makes on the blocking pool.
pub(super) fn blocking_scan(
    schema: SchemaRef,
    ordering: Option<LexOrdering>,
    limit: Option<usize>,
    produce: impl Fn(&Sender<Result<RecordBatch>>) -> Result<()> + Send + Sync + 'static,
) -> Result<Arc<dyn ExecutionPlan>> {
    let partition = BlockingPartition::new(Arc::clone(&schema), produce);
    Ok(Arc::new(StreamingTableExec::try_new(
        schema,
        vec![Arc::new(partition)],
        None,
        ordering,
        false,
        limit,
    )?))
}

/// One scan of `kv`: the ranges, the columns to build, when to stop.
struct KvScan {
    view: Arc<ReadView>,
    keys: KeySet,
    columns: Vec<KvColumn>,
    encoding: Encoding,
    /// A key filter was pushed: rows whose key is not text cannot match it.
    skip_non_text_keys: bool,
    limit: Option<usize>,
    batch_rows: usize,
    schema: SchemaRef,
    stats: Arc<ScanStats>,
}

impl KvScan {
    fn run(&self, tx: &Sender<Result<RecordBatch>>) -> Result<()> {
        let now_ms = self.view.now_ms();
        let mut batch = KvBatch::new(&self.columns, self.encoding, self.batch_rows);
        let mut emitted = 0usize;
        let mut scanned = 0u64;
        for range in self.keys.ranges() {
            for item in self.view.kv_range(range).map_err(external)? {
                let (key, bytes) = item.map_err(external)?;
                scanned += 1;
                let key = key.value();
                let entry = decode_kv_entry_ref(key, bytes.value()).map_err(external)?;
                if !entry.is_live(now_ms)
                    || (self.skip_non_text_keys && std::str::from_utf8(key).is_err())
                {
                    continue;
                }
                batch.push(key, &entry);
                emitted += 1;
                let done = self.limit.is_some_and(|limit| emitted >= limit);
                if batch.rows == self.batch_rows || done {
                    self.count(&mut scanned, &batch);
                    if !send(tx, batch.finish(&self.schema)) || done {
                        return Ok(());
                    }
                }
            }
        }
        self.count(&mut scanned, &batch);
        if batch.rows > 0 {
            send(tx, batch.finish(&self.schema));
        }
        Ok(())
    }

    fn count(&self, scanned: &mut u64, batch: &KvBatch) {
        self.stats
            .rows_scanned
            .fetch_add(std::mem::take(scanned), Ordering::Relaxed);
        if self.columns.contains(&KvColumn::Value) {
            self.stats
                .values_read
                .fetch_add(batch.rows as u64, Ordering::Relaxed);
        }
    }
}

/// Sends a batch (or its error) to the query; `false` when the scan should stop: the batch
/// failed, or the query is gone (finished early or cancelled).
pub(super) fn send(tx: &Sender<Result<RecordBatch>>, batch: Result<RecordBatch>) -> bool {
    let failed = batch.is_err();
    tx.blocking_send(batch).is_ok() && !failed
}

pub(super) fn external(error: impl Into<crate::storage::Error>) -> DataFusionError {
    DataFusionError::External(Box::new(error.into()))
}

/// Column builders for the projected columns of `kv`.
struct KvBatch<'c> {
    columns: &'c [KvColumn],
    builders: Vec<Builder>,
    rows: usize,
}

enum Builder {
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Int(Int64Builder),
    Time(TimestampMillisecondBuilder),
}

impl Builder {
    fn bytes(&mut self, bytes: &[u8]) {
        match self {
            Builder::Text(b) => match std::str::from_utf8(bytes) {
                Ok(text) => b.append_value(text),
                Err(_) => b.append_null(),
            },
            Builder::Binary(b) => b.append_value(bytes),
            Builder::Int(_) | Builder::Time(_) => unreachable!("byte columns use byte builders"),
        }
    }

    fn int(&mut self, value: Option<u64>) {
        let value = value.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        match self {
            Builder::Int(b) => b.append_option(value),
            Builder::Time(b) => b.append_option(value),
            Builder::Text(_) | Builder::Binary(_) => unreachable!("integer columns use Int64"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

impl<'c> KvBatch<'c> {
    fn new(columns: &'c [KvColumn], encoding: Encoding, rows: usize) -> Self {
        let builders = columns
            .iter()
            .map(|column| match (column, encoding) {
                (KvColumn::Key | KvColumn::Value, Encoding::Text) => {
                    Builder::Text(StringBuilder::with_capacity(rows, rows * 32))
                }
                (KvColumn::Key | KvColumn::Value, Encoding::Binary) => {
                    Builder::Binary(BinaryBuilder::with_capacity(rows, rows * 32))
                }
                (KvColumn::ExpiresAt, _) => {
                    Builder::Time(TimestampMillisecondBuilder::with_capacity(rows))
                }
                _ => Builder::Int(Int64Builder::with_capacity(rows)),
            })
            .collect();
        KvBatch {
            columns,
            builders,
            rows: 0,
        }
    }

    fn push(&mut self, key: &[u8], entry: &KvEntryRef<'_>) {
        for (column, builder) in self.columns.iter().zip(&mut self.builders) {
            match column {
                KvColumn::Key => builder.bytes(key),
                KvColumn::Value => builder.bytes(entry.value),
                KvColumn::Version => builder.int(Some(entry.version)),
                KvColumn::CreateRevision => builder.int(Some(entry.create_revision)),
                KvColumn::ModRevision => builder.int(Some(entry.mod_revision)),
                KvColumn::LeaseId => builder.int(entry.lease),
                KvColumn::ExpiresAt => builder.int(entry.expires_at_ms),
            }
        }
        self.rows += 1;
    }

    /// The rows pushed so far as one batch; the builders start over.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let columns = self.builders.iter_mut().map(Builder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &options,
        )?)
    }
}

/// The `leases` table of one snapshot: live leases with the number of keys attached.
pub struct LeasesTable {
    view: Arc<ReadView>,
    schema: SchemaRef,
    stats: Arc<ScanStats>,
}

impl LeasesTable {
    pub fn new(view: Arc<ReadView>, stats: Arc<ScanStats>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ttl_ms", DataType::Int64, false),
            Field::new("remaining_ms", DataType::Int64, false),
            Field::new("key_count", DataType::Int64, false),
        ]));
        LeasesTable {
            view,
            schema,
            stats,
        }
    }
}

impl fmt::Debug for LeasesTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasesTable")
            .field("revision", &self.view.revision())
            .finish()
    }
}

#[async_trait]
impl TableProvider for LeasesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Projected {
            indices,
            schema,
            batch_rows,
        } = Projected::new(&self.schema, projection, state)?;
        let (view, full, stats) = (
            Arc::clone(&self.view),
            Arc::clone(&self.schema),
            Arc::clone(&self.stats),
        );
        blocking_scan(schema, None, limit, move |tx| {
            scan_leases(&view, &full, &indices, batch_rows, &stats, tx)
        })
    }
}

fn scan_leases(
    view: &ReadView,
    schema: &SchemaRef,
    indices: &[usize],
    batch_rows: usize,
    stats: &ScanStats,
    tx: &Sender<Result<RecordBatch>>,
) -> Result<()> {
    let now_ms = view.now_ms();
    let txn = view.transaction();
    let leases = txn.open_table(LEASES).map_err(external)?;
    let index = txn.open_table(IDX_LEASE).map_err(external)?;
    let mut columns: [Vec<i64>; 4] = Default::default();
    let flush = |columns: &mut [Vec<i64>; 4]| -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = columns
            .iter_mut()
            .map(|c| {
                Arc::new(datafusion::arrow::array::Int64Array::from(std::mem::take(
                    c,
                ))) as ArrayRef
            })
            .collect();
        Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?.project(indices)?)
    };
    for item in leases.range::<u64>(..).map_err(external)? {
        let (id, bytes) = item.map_err(external)?;
        let id = id.value();
        stats.rows_scanned.fetch_add(1, Ordering::Relaxed);
        let lease = decode_lease(id, bytes.value()).map_err(external)?;
        if !lease.is_live(now_ms) {
            continue;
        }
        let start: (u64, &[u8]) = (id, &[]);
        let mut keys = 0i64;
        for row in index.range(start..).map_err(external)? {
            let (row, _) = row.map_err(external)?;
            if row.value().0 != id {
                break;
            }
            keys += 1;
        }
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (column, value) in columns.iter_mut().zip([
            as_i64(id),
            as_i64(lease.ttl_ms),
            as_i64(lease.deadline_ms.saturating_sub(now_ms)),
            keys,
        ]) {
            column.push(value);
        }
        if columns[0].len() == batch_rows && !send(tx, flush(&mut columns)) {
            return Ok(());
        }
    }
    if !columns[0].is_empty() {
        send(tx, flush(&mut columns));
    }
    Ok(())
}

/// The `vaults` table of one snapshot, from the vault metadata (no key scan).
pub struct VaultsTable {
    view: Arc<ReadView>,
    schema: SchemaRef,
}

impl VaultsTable {
    pub fn new(view: Arc<ReadView>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("key_count", DataType::Int64, false),
            Field::new("total_bytes", DataType::Int64, false),
            Field::new("created_revision", DataType::Int64, false),
            Field::new("updated_revision", DataType::Int64, false),
        ]));
        VaultsTable { view, schema }
    }
}

impl fmt::Debug for VaultsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultsTable")
            .field("revision", &self.view.revision())
            .finish()
    }
}

#[async_trait]
impl TableProvider for VaultsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Bounded by the vault limit: read whole, then served from memory.
        let vaults = self.view.vaults().map_err(external)?;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let ints = |field: fn(&crate::api::VaultMeta) -> u64| -> ArrayRef {
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                vaults.iter().map(|v| as_i64(field(&v.meta))),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(datafusion::arrow::array::StringArray::from_iter_values(
                vaults.iter().map(|v| v.name.as_str()),
            )),
            ints(|m| m.key_count),
            ints(|m| m.total_bytes),
            ints(|m| m.created_revision),
            ints(|m| m.updated_revision),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let table =
            datafusion::datasource::MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// A partition whose rows come from a blocking producer (a redb scan) through a bounded
/// channel; dropping the stream makes the producer's next send fail, which ends it.
struct BlockingPartition {
    schema: SchemaRef,
    produce: Arc<Producer>,
}

/// Fills a channel with the batches of a partition, on the blocking pool.
type Producer = dyn Fn(&Sender<Result<RecordBatch>>) -> Result<()> + Send + Sync;

impl BlockingPartition {
    fn new(
        schema: SchemaRef,
        produce: impl Fn(&Sender<Result<RecordBatch>>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        BlockingPartition {
            schema,
            produce: Arc::new(produce),
        }
    }
}

impl fmt::Debug for BlockingPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPartition")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PartitionStream for BlockingPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder =
            RecordBatchReceiverStream::builder(Arc::clone(&self.schema), CHANNEL_BATCHES);
        let tx = builder.tx();
        let produce = Arc::clone(&self.produce);
        builder.spawn_blocking(move || produce(&tx));
        builder.build()
    }
}
